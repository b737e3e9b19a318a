"""Training: `train_and_evaluate(config, workdir)` and its parts, one module each.

    loop.py             train_and_evaluate as its steps: checks, restore or initialise, the start line,
                        the session, results.json
    session.py          one session's loop: train steps, and the evaluations, checkpoints and stop between them
    results.py          WORKDIR/results.json, for a completed and a diverged run alike
    train_state.py      the sharded train state (eval_shape -> shardings -> jit(init))
    steps.py            the jitted train and eval steps, and the NaN/Inf check of the state before a save
    optim.py            optimisers, schedules, durations in steps or epochs
    sharding.py         the data-parallel mesh, global batches, prefetch to devices
    checkpointing.py    orbax checkpoints: save, restore past damaged ones, failed saves, the SIGTERM stop
    run_identity.py     what may change when a run resumes, and the check that refuses the rest
    reporting.py        console lines, TensorBoard, the NaN/Inf stop, JSON records
    metrics_log.py      WORKDIR/metrics.jsonl: appended line by line, read past lines torn by a kill
    progress.py         a progress bar on a terminal, plain lines in a log
    time_breakdown.py   where a session's time goes (start-up, compilation, steps, input, evaluation, saves)
    profiling.py        config.profile_steps: a jax.profiler trace of some training steps
    watchdog.py         several processes: a lost or stuck process ends the job (job_store.py: their store)
    running_marker.py   WORKDIR/running.json: a second job on a live run's workdir is refused
    init_from.py        config.init_from: start from other weights (a run, a converted folder, a .pth)
    fault_injection.py  test-only faults: a kill or stall at a chosen moment, a slow input pipeline
    provenance.py       the code, libraries, devices and command behind a result
    config_defaults.py  every config field, commented, with its default
    validation.py       the config and workdir checks made before anything compiles (the model is built
                        by pfca_jax.models.from_config)
"""


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains and evaluates `config` in `workdir` (resuming what is there); returns the final metrics."""
  from pfca_jax.train import loop  # Imported on use: the loop imports the input pipelines and TensorFlow.
  return loop.train_and_evaluate(config, workdir)
