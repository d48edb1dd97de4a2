"""Reading a raw case of any layout (data/layouts.py) from the files discovery.py found:
header checks without reading voxels, then the images in the layout's channel order and the
labels mapped to internal values (labels.py). Every broken file is one DataError naming it."""

import numpy as np

from brats_jax.data import layouts
from brats_jax.errors import DataError
from brats_jax.imageio import metaimage, nifti, tiff


def _header(path: str, layout: layouts.Layout, what: str) -> tuple:
  """(shape [X, Y, Z], affine) of one channel or label file, from its header."""
  if layout.file_format == "mha":
    shape, affine, _ = metaimage.mha_header(path, what)
    return shape, affine
  image = nifti.open_nifti(path, what=what)
  return tuple(image.shape[:3]), image.affine


def check_raw_case(case: layouts.RawCase) -> None:
  """Header-level checks of a case, without reading voxels: every file present and sound,
  the layout's channels, and one geometry (shape, affine) for all its files."""
  layout = layouts.LAYOUTS[case.layout]
  if case.layout == "lgg":
    images, masks = layouts.lgg_slices(case.images[0])
    shape = tiff.tiff_header(images[0], "image slice")
    if len(shape) != 3 or shape[-1] != len(layout.channels):
      raise DataError(f"{images[0]}: slice shape {shape}, expected [rows, columns, "
                      f"{len(layout.channels)}] (pre-contrast, FLAIR, post-contrast)")
    if masks:
      tiff.tiff_header(masks[0], "mask slice")
    return
  if case.layout == "msd":
    image = nifti.open_nifti(case.images[0], ndim=(4,))
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
  return metaimage.load_mha(path, what) if layout.file_format == "mha" else \
      nifti.load_nifti(path, what=what)


def read_raw_case(case: layouts.RawCase):
  """Loads and checks one raw case: (images [X, Y, Z, C] float32 in the layout's channel
  order, internal labels or None, affine, spacing)."""
  check_raw_case(case)
  layout = layouts.LAYOUTS[case.layout]
  if case.layout == "lgg":
    slices, masks = layouts.lgg_slices(case.images[0])
    images, mask = tiff.load_lgg_stack(slices, masks if case.label is not None else None)
    labels = None if mask is None or case.label is None else case.convention.encode(
        nifti.as_labels(mask, case.label), case.label)
    return images, labels, np.eye(4), (1.0, 1.0, 1.0)
  if case.layout == "msd":
    data, affine, spacing = nifti.load_nifti(case.images[0], ndim=(4,))
    images = data.astype(np.float32)
  else:
    channels = [_load(path, layout, "modality") for path in case.images]
    _, affine, spacing = channels[0]
    images = np.stack([data.astype(np.float32) for data, _, _ in channels], axis=-1)
  labels = None
  if case.label is not None:
    raw, _, _ = _load(case.label, layout, "label")
    labels = case.convention.encode(nifti.as_labels(raw, case.label, images.shape[:3]),
                                    case.label)
  return images, labels, affine, spacing


def read_reference(case: layouts.RawCase):
  """(internal labels, affine or None, spacing) of a case's reference label file(s)."""
  if case.label is None:
    raise DataError(f"{case.images[0]}: case {case.case_id} has no reference label")
  layout = layouts.LAYOUTS[case.layout]
  if case.layout == "lgg":
    images, mask = tiff.load_lgg_stack(*layouts.lgg_slices(case.images[0]))
    return (case.convention.encode(nifti.as_labels(mask, case.label), case.label), None,
            (1.0, 1.0, 1.0))
  raw, affine, spacing = _load(case.label, layout, "label")
  return (case.convention.encode(nifti.as_labels(raw, case.label), case.label), affine,
          spacing)
