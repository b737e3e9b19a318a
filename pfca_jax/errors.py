"""The error types a command turns into one line on stderr and a non-zero exit status, instead of a traceback."""


class UserError(ValueError):
  """A bad config value, dataset, workdir, checkpoint or CLI argument, reported in one line.

  `pfca_jax.main` prints the message and exits with status 2 instead of showing a traceback.
  """


class RunFailed(RuntimeError):
  """Training could not go on for a reason found while it ran (divergence, a failed checkpoint save).

  The message is one line saying what happened and what was kept; `pfca_jax.main` prints it and exits
  with `exit_status`, which each subclass sets so that scripts can tell the reasons apart.
  """
  exit_status = 1
