"""What the commands share: flag parsing with one-line errors and the join of a multi-process run
(command.py), and the CPU settings they apply before JAX starts (cpu_settings.py)."""
