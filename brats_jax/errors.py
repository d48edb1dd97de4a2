"""The exception types for user mistakes.

Every mistake a user can make (bad input files, a config that cannot run, a relaunch that
would change a trained run) raises a subclass of UserError whose message is one line. Every
command (cli/app.py) turns a UserError into that line on stderr and exit status 2, before
anything is written.
"""


class UserError(Exception):
  """A user mistake. The message is one line that names the file or the config field."""


class DataError(UserError, ValueError):
  """Bad input data. The message starts with the offending path."""


class ConfigError(UserError, ValueError):
  """A config that cannot run: a bad value, a relaunch that would change the run, a
  model that does not fit in device memory. The message names the field."""

  @classmethod
  def of_field(cls, field: str, value, what: str) -> "ConfigError":
    return cls(f"config field {field}={value!r}: {what}")


class StorageError(UserError):
  """A bucket (gs://, s3://) that cannot be reached or refuses, after the retries. The
  message starts with the URL."""


class CheckpointError(UserError):
  """A workdir whose checkpoints cannot be used (unreadable, or from another version)."""


class NonFiniteError(RuntimeError):
  """The loss or gradients became NaN/Inf and the config says to stop (train.on_nonfinite)."""


class Stopped(Exception):
  """A run stopped by a signal after saving its checkpoint; `status` is the exit status a
  command ends with (128 + the signal: 130 for SIGINT, 143 for SIGTERM)."""

  def __init__(self, message: str, status: int):
    super().__init__(message)
    self.status = status
