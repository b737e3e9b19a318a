"""What the commands share: one flag parser and one ending for every mistake (runner.py), absl's `--config`
flags and the join of a multi-process run (command.py), and the CPU settings they apply before JAX starts
(cpu_settings.py)."""
