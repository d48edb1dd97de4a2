"""MetaImage (.mha, BraTS 2015) read and written with SimpleITK; every broken file is one
DataError naming it, every write goes to a temporary name first.

Arrays are [X, Y, Z] like nibabel's: SimpleITK's [z, y, x] arrays are transposed on the way in
and back on the way out, and the image's origin, spacing and direction are copied from a
reference file when a prediction is written, so it lands in the input's exact geometry.
SimpleITK (a 52 MB wheel) is imported by the functions that use it: only BraTS 2015's cases
need it, and no command imports it for NIfTI cases.
"""

import os
import re

import numpy as np

from brats_jax.errors import DataError
from brats_jax.files import write_atomic
from brats_jax.imageio.checks import check_declared_size, check_file, reading


def _affine(origin, spacing, direction) -> np.ndarray:
  """4x4 voxel-to-world matrix (ITK's LPS world) of a MetaImage's geometry."""
  affine = np.eye(4)
  affine[:3, :3] = np.asarray(direction, np.float64).reshape(3, 3) * np.asarray(spacing)
  affine[:3, 3] = origin
  return affine


def _check_data_file(path: str) -> None:
  """A MetaImage header names where its voxels are (ElementDataFile, its last field): LOCAL
  (after the header), or a file beside it. A header that sends the reader elsewhere (an
  absolute path, a path out of its folder, a LIST or a pattern of files) is refused: a
  dataset's file must not read what lies outside the dataset."""
  with open(path, "rb") as f:
    head = f.read(1 << 16)
  found = re.search(rb"^\s*ElementDataFile\s*=\s*(.*?)\s*$", head, re.MULTILINE)
  if not found:
    return  # no header SimpleITK could read: it says so in reading()
  target = found.group(1).decode("utf-8", "replace")
  if target.upper() == "LOCAL":
    return
  folder = os.path.dirname(os.path.abspath(path))
  if (target.upper().startswith("LIST") or "%" in target or os.path.isabs(target)
      or os.path.dirname(os.path.normpath(os.path.join(folder, target))) != folder):
    raise DataError(f"{path}: its voxels are said to be in {target!r}: only LOCAL or a file "
                    "beside the header is read")


def mha_header(path: str, what: str = "image"):
  """(shape [X, Y, Z], affine, spacing) from the header only, or DataError."""
  import SimpleITK as sitk
  check_file(path, what)
  _check_data_file(path)
  with reading(path, what):
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    shape = tuple(int(s) for s in reader.GetSize())
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
      raise DataError(f"{path}: {what} has {reader.GetDimension()} dimensions and "
                      f"{reader.GetNumberOfComponents()} components, expected one 3D volume")
    check_declared_size(path, shape)
    spacing = tuple(float(s) for s in reader.GetSpacing())
    affine = _affine(reader.GetOrigin(), spacing, reader.GetDirection())
  if not np.all(np.isfinite(affine)):
    raise DataError(f"{path}: non-finite geometry")
  return shape, affine, spacing


def load_mha(path: str, what: str = "image"):
  """(array [X, Y, Z], affine, spacing) of a MetaImage file, or DataError."""
  import SimpleITK as sitk
  shape, affine, spacing = mha_header(path, what)
  with reading(path, what):
    data = sitk.GetArrayFromImage(sitk.ReadImage(path)).transpose(2, 1, 0)
  if data.shape != shape:
    raise DataError(f"{path}: data shape {data.shape} does not match header {shape}")
  if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
    raise DataError(f"{path}: contains NaN or Inf voxels")
  return data, affine, spacing


def save_mha_like(path: str, data: np.ndarray, reference: str) -> None:
  """Writes [X, Y, Z] data as MetaImage in the geometry of the reference file (atomic)."""
  import SimpleITK as sitk
  image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
  header = sitk.ImageFileReader()
  header.SetFileName(reference)
  header.ReadImageInformation()
  image.SetOrigin(header.GetOrigin())
  image.SetSpacing(header.GetSpacing())
  image.SetDirection(header.GetDirection())
  write_atomic(path, lambda tmp: sitk.WriteImage(image, tmp, True))


def save_mha(path: str, data: np.ndarray, spacing=(1.0, 1.0, 1.0),
             origin=(0.0, 0.0, 0.0)) -> None:
  """Writes [X, Y, Z] data as compressed MetaImage with the given geometry (atomic)."""
  import SimpleITK as sitk
  image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
  image.SetSpacing(tuple(float(s) for s in spacing))
  image.SetOrigin(tuple(float(o) for o in origin))
  write_atomic(path, lambda tmp: sitk.WriteImage(image, tmp, True))
