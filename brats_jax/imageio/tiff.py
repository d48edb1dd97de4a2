"""Kaggle LGG's 2D TIFF slices, read and written with tifffile.

A slice is RGB (pre-contrast, FLAIR, post-contrast), a mask 0/255; a stack is [rows, columns,
slice], with 1 mm voxels and an identity affine (which files make a patient, and their
order: data/layouts.py). Every broken file is one DataError naming it; every write
goes to a temporary name first. tifffile is imported by the functions that use it (only LGG
cases need it).
"""

import os

import numpy as np

from brats_jax.errors import DataError
from brats_jax.files import write_atomic
from brats_jax.imageio.checks import check_declared_size, check_file, reading


def _read_tiff(path: str, what: str) -> np.ndarray:
  """The first series of a TIFF, its declared size checked before any pixel is read (a few
  bytes of header can declare gigabytes)."""
  import tifffile
  check_file(path, what)
  with reading(path, what):
    with tifffile.TiffFile(path) as tiff:
      check_declared_size(path, tuple(tiff.series[0].shape) if tiff.series else (0,))
      return tiff.asarray()


def tiff_header(path: str, what: str = "slice") -> tuple:
  """The shape of a TIFF's first page, without reading its pixels."""
  import tifffile
  check_file(path, what)
  with reading(path, what):
    with tifffile.TiffFile(path) as tiff:
      return tuple(tiff.pages[0].shape)


def load_lgg_stack(image_paths, mask_paths=None):
  """(images [rows, cols, slices, 3] float32, mask [rows, cols, slices] uint8 or None) of a
  patient's slice files in slice order (data/layouts.py's lgg_slices lists them), or
  DataError naming the first bad slice."""
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
  if mask_paths:
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
  import tifffile
  for index in range(mask.shape[2]):
    path = os.path.join(folder, f"{patient}_{index + 1}_mask.tif")
    write_atomic(path, lambda tmp, plane=np.ascontiguousarray(mask[:, :, index]):
                  tifffile.imwrite(tmp, plane, photometric="minisblack"))


def save_lgg_case(folder: str, patient: str, images: np.ndarray, mask: np.ndarray) -> None:
  """Writes a patient as Kaggle LGG does: RGB uint8 slices and their 0/255 masks."""
  import tifffile
  for index in range(images.shape[2]):
    path = os.path.join(folder, f"{patient}_{index + 1}.tif")
    write_atomic(path, lambda tmp, rgb=np.ascontiguousarray(images[:, :, index]):
                  tifffile.imwrite(tmp, rgb, photometric="rgb"))
  save_lgg_masks(folder, patient, mask)
