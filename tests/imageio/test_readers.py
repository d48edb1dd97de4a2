"""The image readers and writers: NIfTI, MetaImage and LGG's TIFF slices, round trip with
their geometry, and every broken file one DataError naming it."""

import os

import numpy as np
import pytest

from brats_jax.data import layouts
from brats_jax.errors import DataError
from brats_jax.imageio import metaimage, nifti, tiff


def test_nifti_round_trip_keeps_values_and_affine(tmp_path):
  data = np.random.default_rng(0).standard_normal((6, 5, 4)).astype(np.float32)
  affine = np.diag([1.5, 1.0, 2.0, 1.0])
  affine[:3, 3] = (10, -4, 3)
  path = str(tmp_path / "image.nii.gz")
  nifti.save_nifti(path, data, affine)
  loaded, loaded_affine, spacing = nifti.load_nifti(path)
  np.testing.assert_array_equal(loaded, data)
  np.testing.assert_allclose(loaded_affine, affine)
  assert tuple(spacing) == (1.5, 1.0, 2.0)
  with pytest.raises(DataError, match="image.nii.gz"):
    nifti.load_nifti(path, ndim=(4,))


def test_metaimage_round_trip_keeps_values_spacing_and_origin(tmp_path):
  data = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
  path = str(tmp_path / "case.mha")
  metaimage.save_mha(path, data, spacing=(1.0, 0.5, 2.0), origin=(3.0, -1.0, 0.0))
  loaded, affine, spacing = metaimage.load_mha(path)
  np.testing.assert_array_equal(loaded, data)
  assert spacing == (1.0, 0.5, 2.0) and tuple(affine[:3, 3]) == (3.0, -1.0, 0.0)
  with open(path, "r+b") as f:  # a header that promises more data than the file has
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(DataError, match="case.mha"):
    metaimage.load_mha(path)


def test_lgg_slices_in_number_order_masks_paired_and_stray_files_ignored(tmp_path):
  """(Which files make an LGG patient is a layout fact, data/layouts.py; the reader reads
  the stack they list.)"""
  folder = tmp_path / "TCGA_CS_0001"
  folder.mkdir()
  images = np.random.default_rng(1).integers(0, 255, (8, 8, 12, 3), dtype=np.uint8)
  mask = np.zeros((8, 8, 12), np.uint8)
  mask[2:5, 2:5, 3] = 255
  tiff.save_lgg_case(str(folder), folder.name, images, mask)
  (folder / "notes.txt").write_text("not a slice")
  slices, masks = layouts.lgg_slices(str(folder))
  numbers = [int(os.path.basename(p).split("_")[-1].split(".")[0]) for p in slices]
  assert numbers == list(range(1, 13))  # 10 after 9, not after 1
  assert [p.replace("_mask", "") for p in masks] == slices
  loaded, loaded_mask = tiff.load_lgg_stack(slices, masks)
  np.testing.assert_array_equal(loaded, images.astype(np.float32))
  np.testing.assert_array_equal(loaded_mask, mask)
  os.remove(folder / "TCGA_CS_0001_7_mask.tif")
  with pytest.raises(DataError, match="TCGA_CS_0001_7_mask.tif: missing mask file"):
    layouts.lgg_slices(str(folder))
