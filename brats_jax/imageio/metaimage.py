"""Reading and writing the non-NIfTI formats: MetaImage (.mha, BraTS 2015) with SimpleITK,
and folders of 2D TIFF slices (Kaggle LGG) with tifffile. Every broken file is one DataError
naming it; every write goes to a temporary name first, then is renamed.

Arrays are [X, Y, Z(, C)] like nibabel's: SimpleITK's [z, y, x] arrays are transposed on the
way in and back on the way out, and the image's origin, spacing and direction are copied from
a reference file when a prediction is written, so it lands in the input's exact geometry.
A TIFF slice stack is [rows, columns, slice]; its geometry is 1 mm voxels, identity affine.
"""

import contextlib
import os
import re

import numpy as np
import SimpleITK as sitk
import tifffile

from brats_jax import volumes
from brats_jax.errors import DataError

# <patient>_<n>.tif and <patient>_<n>_mask.tif
LGG_SLICE = re.compile(r"^(.+)_(\d+)(_mask)?\.tiff?$", re.IGNORECASE)


@contextlib.contextmanager
def _reading(path: str, what: str):
  try:
    yield
  except DataError:
    raise
  except MemoryError:
    raise DataError(f"{path}: declared size too large to read") from None
  except Exception as e:  # SimpleITK and tifffile raise many types, with long messages
    first = " ".join(str(e).split())[:160]
    raise DataError(f"{path}: unreadable {what} ({type(e).__name__}: {first})") from None


def _affine(origin, spacing, direction) -> np.ndarray:
  """4x4 voxel-to-world matrix (ITK's LPS world) of a MetaImage's geometry."""
  affine = np.eye(4)
  affine[:3, :3] = np.asarray(direction, np.float64).reshape(3, 3) * np.asarray(spacing)
  affine[:3, 3] = origin
  return affine


# ---- MetaImage ---------------------------------------------------------------------------


def mha_header(path: str, what: str = "image"):
  """(shape [X, Y, Z], affine, spacing) from the header only, or DataError."""
  volumes.check_file(path, what)
  with _reading(path, what):
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    shape = tuple(int(s) for s in reader.GetSize())
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
      raise DataError(f"{path}: {what} has {reader.GetDimension()} dimensions and "
                      f"{reader.GetNumberOfComponents()} components, expected one 3D volume")
    volumes.check_declared_size(path, shape)
    spacing = tuple(float(s) for s in reader.GetSpacing())
    affine = _affine(reader.GetOrigin(), spacing, reader.GetDirection())
  if not np.all(np.isfinite(affine)):
    raise DataError(f"{path}: non-finite geometry")
  return shape, affine, spacing


def load_mha(path: str, what: str = "image"):
  """(array [X, Y, Z], affine, spacing) of a MetaImage file, or DataError."""
  shape, affine, spacing = mha_header(path, what)
  with _reading(path, what):
    data = sitk.GetArrayFromImage(sitk.ReadImage(path)).transpose(2, 1, 0)
  if data.shape != shape:
    raise DataError(f"{path}: data shape {data.shape} does not match header {shape}")
  if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
    raise DataError(f"{path}: contains NaN or Inf voxels")
  return data, affine, spacing


def save_mha_like(path: str, data: np.ndarray, reference: str) -> None:
  """Writes [X, Y, Z] data as MetaImage in the geometry of the reference file (atomic)."""
  image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
  header = sitk.ImageFileReader()
  header.SetFileName(reference)
  header.ReadImageInformation()
  image.SetOrigin(header.GetOrigin())
  image.SetSpacing(header.GetSpacing())
  image.SetDirection(header.GetDirection())
  volumes.write_atomic(path, lambda tmp: sitk.WriteImage(image, tmp, True))


def save_mha(path: str, data: np.ndarray, spacing=(1.0, 1.0, 1.0),
             origin=(0.0, 0.0, 0.0)) -> None:
  """Writes [X, Y, Z] data as compressed MetaImage with the given geometry (atomic)."""
  image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
  image.SetSpacing(tuple(float(s) for s in spacing))
  image.SetOrigin(tuple(float(o) for o in origin))
  volumes.write_atomic(path, lambda tmp: sitk.WriteImage(image, tmp, True))


# ---- TIFF slice folders (Kaggle LGG) -----------------------------------------------------


def lgg_slices(folder: str) -> tuple:
  """([image slice paths], [mask paths or None]) of a patient folder, ordered by slice
  number; anything else in the folder is ignored."""
  patient = os.path.basename(folder.rstrip("/"))
  images, masks = {}, {}
  try:
    names = os.listdir(folder)
  except OSError as e:
    raise DataError(f"{folder}: cannot list folder ({e.strerror})") from None
  for name in names:
    match = LGG_SLICE.match(name)
    if match and match.group(1) == patient and not name.startswith("."):
      (masks if match.group(3) else images)[int(match.group(2))] = os.path.join(folder, name)
  if not images:
    raise DataError(f"{folder}: no {patient}_<n>.tif slices")
  order = sorted(images)
  missing = [n for n in order if masks and n not in masks]
  if missing:
    raise DataError(f"{os.path.join(folder, f'{patient}_{missing[0]}_mask.tif')}: missing "
                    "mask file")
  return [images[n] for n in order], ([masks[n] for n in order] if masks else None)


def _read_tiff(path: str, what: str) -> np.ndarray:
  volumes.check_file(path, what)
  with _reading(path, what):
    return tifffile.imread(path)


def tiff_header(path: str, what: str = "slice") -> tuple:
  """The shape of a TIFF's first page, without reading its pixels."""
  volumes.check_file(path, what)
  with _reading(path, what):
    with tifffile.TiffFile(path) as tiff:
      return tuple(tiff.pages[0].shape)


def load_lgg_case(folder: str, with_mask: bool = True):
  """(images [rows, cols, slices, 3] float32, mask [rows, cols, slices] uint8 or None) of a
  patient folder, or DataError naming the first bad slice."""
  image_paths, mask_paths = lgg_slices(folder)
  slices, first = [], None
  for path in image_paths:
    image = _read_tiff(path, "image slice")
    if image.ndim == 2:
      image = image[..., None]
    if first is None:
      first = image.shape
    if image.shape != first or image.ndim != 3:
      raise DataError(f"{path}: slice shape {image.shape} differs from {image_paths[0]} "
                      f"{first}")
    slices.append(image)
  images = np.stack(slices, axis=2).astype(np.float32)
  mask = None
  if with_mask and mask_paths:
    planes = []
    for path in mask_paths:
      plane = load_lgg_plane(path)
      if plane.shape != first[:2]:
        raise DataError(f"{path}: mask shape {plane.shape} differs from its slice's "
                        f"{first[:2]}")
      planes.append(plane)
    mask = np.stack(planes, axis=2)
  return images, mask


def load_lgg_plane(path: str) -> np.ndarray:
  """One mask slice [rows, cols]."""
  plane = _read_tiff(path, "mask slice")
  return plane[..., 0] if plane.ndim == 3 else plane


def save_lgg_masks(folder: str, patient: str, mask: np.ndarray) -> None:
  """Writes [rows, cols, slices] uint8 masks as <folder>/<patient>_<n>_mask.tif, n from 1."""
  for index in range(mask.shape[2]):
    path = os.path.join(folder, f"{patient}_{index + 1}_mask.tif")
    volumes.write_atomic(path, lambda tmp, plane=np.ascontiguousarray(mask[:, :, index]):
                  tifffile.imwrite(tmp, plane, photometric="minisblack"))


def save_lgg_case(folder: str, patient: str, images: np.ndarray, mask: np.ndarray) -> None:
  """Writes a patient as Kaggle LGG does: RGB uint8 slices and their 0/255 masks."""
  for index in range(images.shape[2]):
    path = os.path.join(folder, f"{patient}_{index + 1}.tif")
    volumes.write_atomic(path, lambda tmp, rgb=np.ascontiguousarray(images[:, :, index]):
                  tifffile.imwrite(tmp, rgb, photometric="rgb"))
  save_lgg_masks(folder, patient, mask)
