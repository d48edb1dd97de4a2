"""The one exception type for bad input, and how command lines report it."""

import functools
import sys


class DataError(ValueError):
  """Bad input data. The message is one line that starts with the offending path."""


class ConfigError(ValueError):
  """A configuration that cannot run (e.g. does not fit in device memory); one line."""


def exit_on_data_error(main):
  """Wraps an absl main: a DataError or ConfigError becomes one line on stderr, exit 2."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except (DataError, ConfigError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  return wrapped
