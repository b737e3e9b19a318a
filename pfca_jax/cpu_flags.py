"""XLA flags that make JAX training fast on this project's CPUs, set before JAX initialises its backend.

XLA's own CPU convolutions instead of the YNNPACK path: ResNet-50 train steps 7.4 -> 5.0 s at batch 16
on a 2-core AVX-512 host (measured; ../shared/notes/cpu-performance.md has 1.45x). Only the CPU
backend reads the flag, and it must be set before the first computation initialises that backend;
a user's own setting of it wins.
"""

import os

CPU_CONV_FLAG = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'


def apply() -> None:
  if 'xla_cpu_experimental_ynn_fusion_type' not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {CPU_CONV_FLAG}'.strip()
