"""The error type for mistakes in what the user asked for, shared by every module that checks input."""


class UserError(ValueError):
  """A bad config value, dataset, workdir, checkpoint or CLI argument, reported in one line.

  `pfca_jax.main` prints the message and exits with status 2 instead of showing a traceback.
  """
