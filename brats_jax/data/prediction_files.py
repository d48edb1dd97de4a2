"""Prediction files: written by brats-jax-predict in each layout's own format and label
convention, in the geometry of the case's input, and read back by brats-jax-evaluate.

  nifti (BraTS 2018+, Decathlon)   <output>/<case_id>.nii.gz
  mha (BraTS 2015)                 <output>/<case_id>.mha
  tiff (Kaggle LGG)                <output>/<case_id>/<case_id>_<n>_mask.tif, n from 1
"""

import os

import numpy as np

from brats_jax.data import layouts
from brats_jax.errors import DataError
from brats_jax.imageio import metaimage, nifti, tiff


def path(output_dir: str, case_id: str, layout: str) -> str:
  """Where a case's prediction is (a folder for slice layouts)."""
  file_format = layouts.LAYOUTS[layout].file_format
  if file_format == "tiff":
    return os.path.join(output_dir, case_id)
  return os.path.join(output_dir, case_id + (".mha" if file_format == "mha" else ".nii.gz"))


def write(output_dir: str, case_id: str, layout: str, labels: np.ndarray, affine: np.ndarray,
          reference: str | None) -> str:
  """Writes labels (already in the layout's convention, uint8) like the case's input; the
  reference file, when it exists, gives the exact header geometry."""
  target = path(output_dir, case_id, layout)
  file_format = layouts.LAYOUTS[layout].file_format
  labels = labels.astype(np.uint8)
  if file_format == "tiff":
    tiff.save_lgg_masks(target, case_id, labels)
  elif file_format == "mha" and reference and os.path.exists(reference):
    metaimage.save_mha_like(target, labels, reference)
  elif file_format == "mha":
    metaimage.save_mha(target, labels, np.linalg.norm(affine[:3, :3], axis=0), affine[:3, 3])
  else:
    nifti.save_label_like(target, labels, affine, reference)
  return target


def read(output_dir: str, case: layouts.RawCase, shape: tuple):
  """(uint8 labels in the case's convention, affine or None) of a case's prediction."""
  target = path(output_dir, case.case_id, case.layout)
  file_format = layouts.LAYOUTS[case.layout].file_format
  if not os.path.exists(target):
    raise DataError(f"{target}: missing prediction for case {case.case_id}")
  if file_format == "tiff":
    reference_images, _ = layouts.lgg_slices(case.images[0])
    planes = [tiff.load_lgg_plane(os.path.join(target, f"{case.case_id}_{n + 1}_mask.tif"))
              for n in range(len(reference_images))]
    return nifti.as_labels(np.stack(planes, axis=2), target, shape, "prediction"), None
  if file_format == "mha":
    data, affine, _ = metaimage.load_mha(target, "prediction")
    return nifti.as_labels(data, target, shape, "prediction"), affine
  data, affine, _ = nifti.load_label(target, shape, what="prediction")
  return data, affine
