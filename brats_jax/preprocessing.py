"""What prepare, predict and evaluate do to a raw case before the model sees it.

Reading and checking a raw case's files, cropping to the brain's bounding box, and z-scoring
each channel over brain voxels. The store's manifest records `describe()` of what was
applied, and every checkpoint's inference contract carries it, so prediction applies exactly
the preprocessing the model was trained with, or refuses.
"""

import numpy as np

from brats_jax import formats, layouts, volumes
from brats_jax.errors import DataError

# What this version applies; recorded in the store manifest and the inference contract.
CROP = "nonzero_bounding_box"  # crop to the voxels nonzero in any channel
NORMALISATION = "zscore_nonzero"  # per channel, over those voxels; background stays 0


def describe(channels=layouts.MODALITIES) -> dict:
  """The record of this preprocessing (a store made before it was recorded used it too)."""
  return {"crop": CROP, "normalisation": NORMALISATION, "channels": list(channels)}


def check_supported(recorded: dict, where: str) -> None:
  """Refuses a recorded preprocessing this version cannot apply."""
  ours = describe(recorded.get("channels", layouts.MODALITIES))
  different = [k for k in ("crop", "normalisation") if recorded.get(k, ours[k]) != ours[k]]
  if different:
    raise DataError(f"{where}: preprocessing {', '.join(f'{k}={recorded[k]!r}' for k in different)}"
                    f" is not one this version applies ({', '.join(f'{k}={ours[k]!r}' for k in different)})")


def _header(path: str, layout: layouts.Layout, what: str) -> tuple:
  """(shape [X, Y, Z], affine) of one channel or label file, from its header."""
  if layout.file_format == "mha":
    shape, affine, _ = formats.mha_header(path, what)
    return shape, affine
  image = volumes.open_nifti(path, what=what)
  return tuple(image.shape[:3]), image.affine


def check_raw_case(case: layouts.RawCase) -> None:
  """Header-level checks of a case, without reading voxels: every file present and sound,
  the layout's channels, and one geometry (shape, affine) for all its files."""
  layout = layouts.LAYOUTS[case.layout]
  if case.layout == "lgg":
    images, masks = formats.lgg_slices(case.images[0])
    shape = formats.tiff_header(images[0], "image slice")
    if len(shape) != 3 or shape[-1] != len(layout.channels):
      raise DataError(f"{images[0]}: slice shape {shape}, expected [rows, columns, "
                      f"{len(layout.channels)}] (pre-contrast, FLAIR, post-contrast)")
    if masks:
      formats.tiff_header(masks[0], "mask slice")
    return
  if case.layout == "msd":
    image = volumes.open_nifti(case.images[0], ndim=(4,))
    if image.shape[-1] != 4:
      raise DataError(f"{case.images[0]}: expected 4 channels (FLAIR, T1w, T1gd, T2w), "
                      f"found {image.shape[-1]}")
    first = (tuple(image.shape[:3]), image.affine)
  else:
    first = _header(case.images[0], layout, "modality")
    for path in case.images[1:]:
      _check_same_geometry(_header(path, layout, "modality"), first, path, case.images[0])
  if case.label:
    _check_same_geometry(_header(case.label, layout, "label"), first, case.label,
                         case.images[0])


def _check_same_geometry(geometry, reference, path: str, reference_path: str):
  (shape, affine), (reference_shape, reference_affine) = geometry, reference
  if shape != reference_shape:
    raise DataError(f"{path}: shape {shape} differs from {reference_path} {reference_shape}")
  if not np.allclose(affine, reference_affine, atol=1e-3):
    raise DataError(f"{path}: affine differs from {reference_path}")


def _load(path: str, layout: layouts.Layout, what: str):
  return formats.load_mha(path, what) if layout.file_format == "mha" else \
      volumes.load_nifti(path, what=what)


def read_raw_case(case: layouts.RawCase):
  """Loads and checks one raw case: (images [X, Y, Z, C] float32 in the layout's channel
  order, internal labels or None, affine, spacing)."""
  check_raw_case(case)
  layout = layouts.LAYOUTS[case.layout]
  if case.layout == "lgg":
    images, mask = formats.load_lgg_case(case.images[0], with_mask=case.label is not None)
    labels = None if mask is None else case.convention.encode(
        volumes.as_labels(mask, case.label), case.label)
    return images, labels, np.eye(4), (1.0, 1.0, 1.0)
  if case.layout == "msd":
    data, affine, spacing = volumes.load_nifti(case.images[0], ndim=(4,))
    images = data.astype(np.float32)
  else:
    channels = [_load(path, layout, "modality") for path in case.images]
    _, affine, spacing = channels[0]
    images = np.stack([data.astype(np.float32) for data, _, _ in channels], axis=-1)
  labels = None
  if case.label:
    raw, _, _ = _load(case.label, layout, "label")
    labels = case.convention.encode(volumes.as_labels(raw, case.label, images.shape[:3]),
                                    case.label)
  return images, labels, affine, spacing


def read_reference(case: layouts.RawCase):
  """(internal labels, affine or None, spacing) of a case's reference label file(s)."""
  layout = layouts.LAYOUTS[case.layout]
  if case.layout == "lgg":
    images, mask = formats.load_lgg_case(case.images[0])
    return (case.convention.encode(volumes.as_labels(mask, case.label), case.label), None,
            (1.0, 1.0, 1.0))
  raw, affine, spacing = _load(case.label, layout, "label")
  return (case.convention.encode(volumes.as_labels(raw, case.label), case.label), affine,
          spacing)


def brain_box(images: np.ndarray, labels, path: str):
  """Bounding box [(lo, hi)] of nonzero voxels in any channel (and of any labelled voxel)."""
  mask = np.any(images != 0, axis=-1)
  if labels is not None:
    mask |= labels > 0
  if not mask.any():
    raise DataError(f"{path}: image is empty (no nonzero voxel)")
  box = []
  for axis in range(3):
    other = tuple(a for a in range(3) if a != axis)
    nonzero = np.flatnonzero(mask.any(axis=other))
    box.append((int(nonzero[0]), int(nonzero[-1]) + 1))
  return box


def crop_slices(box) -> tuple:
  """[(lo, hi)] per axis -> the slices that crop (or, on the left side, uncrop) a volume."""
  return tuple(slice(lo, hi) for lo, hi in box)


def normalise(images: np.ndarray) -> np.ndarray:
  """z-score each channel over brain voxels (nonzero in any channel); background stays 0."""
  brain = np.any(images != 0, axis=-1)
  out = np.zeros_like(images)
  for c in range(images.shape[-1]):
    values = images[..., c][brain]
    std = values.std()
    out[..., c][brain] = (values - values.mean()) / (std if std > 1e-8 else 1.0)
  return out


def preprocess(images: np.ndarray, labels, path: str):
  """(cropped and normalised images, cropped labels or None, crop box) of a raw case."""
  box = brain_box(images, labels, path)
  crop = crop_slices(box)
  cropped_labels = None if labels is None else np.ascontiguousarray(labels[crop])
  return normalise(images[crop]), cropped_labels, box
