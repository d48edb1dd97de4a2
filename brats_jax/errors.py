"""The one exception type for bad input, and how command lines report it."""

import functools
import sys


class DataError(ValueError):
  """Bad input data. The message is one line that starts with the offending path."""


def exit_on_data_error(main):
  """Wraps an absl main: a DataError becomes one line on stderr and exit status 2."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except DataError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  return wrapped
