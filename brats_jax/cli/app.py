"""What every brats-jax-* command shares.

- Flags are defined when the command runs (importing a command module defines nothing).
- Every user mistake is one line `error: ...` on stderr and exit status 2, whether it is
  found while parsing the command line (a mistyped flag or config field) or later
  (errors.UserError); a non-finite loss with train.on_nonfinite=stop is exit status 3.
- Commands that compile JAX programs apply the process-wide settings (runtime.configure).
"""

import difflib
import functools
import os
import sys

from absl import app, flags, logging

from brats_jax import runtime
from brats_jax.config import io as config_io
from brats_jax.errors import NonFiniteError, Stopped, StorageError, UserError
from brats_jax.workdir import contract

FLAGS = flags.FLAGS


def fail(message: str, status: int = 2):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(status)


def exit_on_user_error(main):
  """Wraps an absl main: a UserError becomes one line on stderr and exit 2 (a StorageError
  at once, without waiting for background writes); a NonFiniteError, one line and exit 3;
  a run stopped by a signal (errors.Stopped), its line and 128 + the signal."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except StorageError as e:
      # The bucket is gone: background checkpoint threads would wait minutes on it at exit,
      # and nothing more can be written there. What was committed before stays readable.
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.stdout.flush()
      os._exit(2)
    except UserError as e:
      fail(str(e))
    except NonFiniteError as e:
      fail(str(e), 3)
    except Stopped as e:  # after its checkpoint was saved: a clean stop, not an error
      print(str(e), flush=True)
      sys.exit(e.status)

  return wrapped


def _config_overrides(argv) -> tuple:
  """(config file, [dotted fields]) of --config=FILE and --config.a.b=V on a command line."""
  path, fields = None, []
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith("--config="):
      path = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(argv):
      path = argv[i + 1]
    elif arg.startswith("--config."):
      fields.append(arg[len("--config."):].split("=", 1)[0])
  return path, fields


def check_config_fields(path: str, fields) -> None:
  """One line naming the first --config.FIELD the config file does not have, with the
  nearest existing name (ml_collections' did-you-mean, on the whole dotted name)."""
  try:
    config = config_io.load_config_file(path)
  except Exception:  # noqa: BLE001 (a broken config file is reported by the flag parser)
    return
  known = set(contract.flatten(config))
  sections = {f.rsplit(".", 1)[0] for f in known if "." in f}
  for field in fields:
    if field in known or field in sections:
      continue
    nearest = difflib.get_close_matches(field, sorted(known), n=1)
    fail(f"config field {field} is not a field of {path}"
         + (f"; did you mean {nearest[0]}?" if nearest else ""))


def _parse_flags(argv):
  path, fields = _config_overrides(argv)
  if path and fields:
    check_config_fields(path, fields)
  try:
    return FLAGS(argv)
  except flags.Error as e:
    fail(f"command line: {e}")


def run(main, define_flags, jax_command: bool = True) -> None:
  """Defines the command's flags and runs main(argv) as every command does."""
  define_flags()

  def main_with_settings(argv):
    if len(argv) > 1:
      raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    if jax_command:
      # Orbax logs every save at INFO, and a failed background write at ERROR with its
      # traceback; that failure is raised again in the main thread and reported in one line.
      logging.set_verbosity(logging.FATAL)
      runtime.configure()
    return main(argv)

  app.run(exit_on_user_error(main_with_settings), flags_parser=_parse_flags)
