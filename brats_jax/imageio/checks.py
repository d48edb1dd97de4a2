"""Checks every image reader makes before it reads: the file is there, and its header is sane."""

import contextlib
import os

import numpy as np

from brats_jax.errors import DataError

# 2^28 voxels (e.g. 640^3): far beyond any MRI volume; a larger size is a corrupt header.
MAX_VOXELS = 1 << 28


def check_file(path: str, what: str) -> None:
  """DataError unless path is an existing, non-empty, readable regular file."""
  if not os.path.exists(path):
    raise DataError(f"{path}: missing {what} file")
  if not os.path.isfile(path):
    raise DataError(f"{path}: not a regular file")
  if os.path.getsize(path) == 0:
    raise DataError(f"{path}: empty file")
  if not os.access(path, os.R_OK):
    raise DataError(f"{path}: permission denied")


def check_declared_size(path: str, shape: tuple) -> None:
  """DataError for a header that declares an empty or implausibly large volume."""
  if min(shape) < 1 or int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
    raise DataError(f"{path}: implausible declared size {shape}")


@contextlib.contextmanager
def reading(path: str, what: str):
  """Turns whatever SimpleITK or tifffile raise for a broken file into one DataError."""
  try:
    yield
  except DataError:
    raise
  except MemoryError:
    raise DataError(f"{path}: declared size too large to read") from None
  except Exception as e:  # SimpleITK and tifffile raise many types, with long messages
    first = " ".join(str(e).split())[:160]
    raise DataError(f"{path}: unreadable {what} ({type(e).__name__}: {first})") from None
