"""The one exception type for bad input, and how command lines report it."""

import functools
import sys


class DataError(ValueError):
  """Bad input data. The message is one line that starts with the offending path."""


class ConfigError(ValueError):
  """A configuration that cannot run (e.g. does not fit in device memory); one line."""


class NonFiniteError(RuntimeError):
  """The loss or gradients became NaN/Inf and the config says to stop (train.on_nonfinite)."""


def exit_on_data_error(main):
  """Wraps an absl main: a DataError or ConfigError becomes one line on stderr and exit 2;
  a NonFiniteError, one line and exit 3."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except (DataError, ConfigError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    except NonFiniteError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(3)

  return wrapped
