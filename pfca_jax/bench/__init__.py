"""The benchmark (`python -m pfca_jax.bench`): training-step time per network and attention.

A command, not part of the library: nothing else in pfca_jax imports it.

    timing.py           the trainer's steps, compiled and timed in interleaved rounds; HLO counts
    torch_reference.py  the PyTorch references timed in the same rounds
    pipelines.py        input pipeline throughput (--pipelines)
"""
