"""Reading and writing NIfTI volumes, with one clear error per kind of broken file."""

import contextlib
import gzip
import os
import zlib

import nibabel as nib
import numpy as np

from brats_jax.errors import DataError
from brats_jax.files import write_atomic
from brats_jax.imageio.checks import check_declared_size, check_file


@contextlib.contextmanager
def _reading(path: str):
  """Turns whatever nibabel, gzip or the OS raise for a broken file into one DataError."""
  try:
    yield
  except DataError:
    raise
  except PermissionError:
    raise DataError(f"{path}: permission denied") from None
  except (EOFError, zlib.error, gzip.BadGzipFile) as e:
    raise DataError(f"{path}: truncated or corrupt compressed data ({e})") from None
  except MemoryError:
    raise DataError(f"{path}: declared size too large to read") from None
  except Exception as e:  # nibabel raises many types for malformed headers and data.
    raise DataError(f"{path}: unreadable NIfTI ({type(e).__name__}: {e})".splitlines()[0]) \
        from None


def open_nifti(path: str, ndim: tuple = (3,), what: str = "image") -> nib.Nifti1Image:
  """The image of a NIfTI file whose header is sound (no voxel data read yet), or DataError:
  missing, empty or unreadable file, wrong dimensionality, implausible size, truncated
  uncompressed data, non-finite affine."""
  check_file(path, what)
  with _reading(path):
    image = nib.load(path)
    shape = tuple(int(s) for s in image.shape)
    if len(shape) not in ndim:
      raise DataError(f"{path}: {what} has {len(shape)} dimensions {shape}, expected "
                      f"{' or '.join(str(n) for n in ndim)}")
    check_declared_size(path, shape)
    if not path.endswith(".gz"):  # uncompressed: the file must hold what the header declares
      declared = int(image.header["vox_offset"]) + int(np.prod(shape, dtype=np.int64)) * \
          image.header.get_data_dtype().itemsize
      if os.path.getsize(path) < declared:
        raise DataError(f"{path}: truncated: {os.path.getsize(path)} bytes, the header "
                        f"declares {declared}")
    if not np.all(np.isfinite(image.affine)):
      raise DataError(f"{path}: non-finite affine")
  return image


def load_nifti(path: str, ndim: tuple = (3,), what: str = "image"):
  """Returns (array, affine, voxel spacing) of a NIfTI file, or raises DataError naming it."""
  image = open_nifti(path, ndim, what)
  with _reading(path):
    data = np.asarray(image.dataobj)
    affine = np.asarray(image.affine, np.float64)
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
  if data.shape != image.shape:
    raise DataError(f"{path}: data shape {data.shape} does not match header {image.shape}")
  if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
    raise DataError(f"{path}: contains NaN or Inf voxels")
  return data, affine, spacing


def as_labels(data: np.ndarray, path: str, shape: tuple | None = None,
              what: str = "label") -> np.ndarray:
  """An integer label volume (of `shape`) as uint8, or DataError naming the file."""
  if shape is not None and data.shape != shape:
    raise DataError(f"{path}: {what} shape {data.shape} differs from {shape}")
  if np.issubdtype(data.dtype, np.floating):
    if not np.all(data == np.round(data)):
      raise DataError(f"{path}: {what} has non-integer values")
  if data.min() < 0 or data.max() > 255:
    raise DataError(f"{path}: {what} values outside 0..255 (min {data.min()}, max {data.max()})")
  return data.astype(np.uint8)


def load_label(path: str, shape: tuple | None = None, what: str = "label"):
  """(uint8 labels, affine, spacing) of an integer label volume (of `shape`), or DataError."""
  data, affine, spacing = load_nifti(path, what=what)
  return as_labels(data, path, shape, what), affine, spacing


def save_nifti(path: str, data: np.ndarray, affine: np.ndarray, header=None) -> None:
  """Writes atomically (write_atomic)."""
  image = nib.Nifti1Image(data, affine, header=header)
  image.set_data_dtype(data.dtype)
  write_atomic(path, lambda tmp: nib.save(image, tmp))


# NIfTI has no float16: probabilities are stored as 16-bit integers with this scl_slope,
# which every NIfTI reader applies (nibabel's get_fdata returns the float probabilities).
PROBABILITY_SCALE = 1 / 32767


def save_probabilities(path: str, probabilities: np.ndarray, affine: np.ndarray,
                       names: tuple) -> None:
  """Writes [X, Y, Z, K] probabilities in [0, 1] as a 4D NIfTI, 16 bits per value, with the
  outputs' names in the header's description."""
  header = nib.Nifti1Header()
  header.set_qform(affine, 1)
  header.set_sform(affine, 1)
  header.set_xyzt_units("mm")
  header["descrip"] = ("probabilities: " + ",".join(names))[:79].encode()
  header.set_slope_inter(PROBABILITY_SCALE, 0.0)
  quantised = np.round(np.clip(probabilities, 0, 1) / PROBABILITY_SCALE).astype(np.int16)
  image = nib.Nifti1Image(quantised, affine, header=header)
  image.set_data_dtype(np.int16)
  image.header.set_slope_inter(PROBABILITY_SCALE, 0.0)
  write_atomic(path, lambda tmp: nib.save(image, tmp))


def save_label_like(path: str, labels: np.ndarray, affine: np.ndarray,
                    reference: str | None = None) -> None:
  """Writes uint8 labels with the affine (and the qform/sform codes of a reference image;
  without one: scanner coordinates, mm)."""
  header = nib.Nifti1Header()
  if reference is None:
    header.set_qform(affine, 1)
    header.set_sform(affine, 1)
    header.set_xyzt_units("mm")
  else:
    reference_header = nib.load(reference).header
    header.set_qform(affine, int(reference_header["qform_code"]) or 1)
    header.set_sform(affine, int(reference_header["sform_code"]) or 1)
    header.set_xyzt_units(*reference_header.get_xyzt_units())
  save_nifti(path, labels.astype(np.uint8), affine, header)
