"""The exception types for user mistakes, and how command lines report them.

Every mistake a user can make (bad input files, a config that cannot run, a relaunch that
would change a trained run) raises a subclass of UserError whose message is one line. Every
command turns a UserError into that line on stderr and exit status 2, before anything is
written.
"""

import functools
import sys


class UserError(Exception):
  """A user mistake. The message is one line that names the file or the config field."""


class DataError(UserError, ValueError):
  """Bad input data. The message starts with the offending path."""


class ConfigError(UserError, ValueError):
  """A config that cannot run: a bad value, a relaunch that would change the run, a
  model that does not fit in device memory. The message names the field."""


class CheckpointError(UserError):
  """A workdir whose checkpoints cannot be used (unreadable, or from another version)."""


class NonFiniteError(RuntimeError):
  """The loss or gradients became NaN/Inf and the config says to stop (train.on_nonfinite)."""


def exit_on_user_error(main):
  """Wraps an absl main: a UserError becomes one line on stderr and exit 2; a
  NonFiniteError, one line and exit 3."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except UserError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    except NonFiniteError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(3)

  return wrapped
