"""Preprocessing options: recorded by prepare, applied identically by predict, undone."""

import json
import os

import numpy as np
import pytest
from scipy import ndimage

from brats_jax.data import discovery, prepare, preprocessing
from brats_jax.data.store import PreparedStore
from brats_jax.errors import DataError
from brats_jax.inference import inputs


def _volume(shape=(20, 18, 12), channels=2, seed=0):
  rng = np.random.default_rng(seed)
  images = np.zeros(shape + (channels,), np.float32)
  images[3:17, 2:16, 2:10] = rng.uniform(10, 200, (14, 14, 8, channels))
  labels = np.zeros(shape, np.uint8)
  labels[6:12, 6:12, 4:8] = 2
  labels[8:10, 8:10, 5:7] = 3
  return images, labels


@pytest.mark.parametrize("how", ["zscore", "minmax", "divide", "none"])
def test_normalisations(how):
  images, labels = _volume()
  out, _, _ = preprocessing.preprocess(images, labels, "x", {"normalisation": how})
  brain = np.any(out != 0, -1)
  crop = images[3:17, 2:16, 2:10]
  if how == "zscore":
    for c in range(2):
      assert abs(out[..., c][brain].mean()) < 1e-4 and abs(out[..., c][brain].std() - 1) < 1e-3
  elif how == "minmax":
    assert out.min() == 0 and out.max() == pytest.approx(1)
  elif how == "divide":
    np.testing.assert_allclose(out, crop / 255, rtol=1e-6)
  else:
    np.testing.assert_array_equal(out, crop)


def test_filters_are_gaussian_then_laplacian():
  images, _ = _volume(channels=1)
  out, _, _ = preprocessing.preprocess(images, None, "x", {"normalisation": "none",
                                                           "smooth_sigma": 1.0,
                                                           "sharpen": 0.3})
  smooth = ndimage.gaussian_filter(images[3:17, 2:16, 2:10, 0], 1.0)
  np.testing.assert_allclose(out[..., 0], smooth - 0.3 * ndimage.laplace(smooth), rtol=1e-5,
                             atol=1e-3)


def test_centre_crop_pads_and_restore_puts_labels_back():
  images, labels = _volume()
  options = {"crop": "centre", "crop_shape": [16, 24, 8], "normalisation": "none"}
  out, cropped, geometry = preprocessing.preprocess(images, labels, "x", options)
  assert out.shape == (16, 24, 8, 2) and cropped.shape == (16, 24, 8)
  assert geometry["box"] == [[2, 18], [-3, 21], [2, 10]]  # y is padded: 24 > 18
  np.testing.assert_array_equal(out[:, 3:21], images[2:18, :, 2:10])
  assert np.all(out[:, :3] == 0) and np.all(out[:, 21:] == 0)
  back = preprocessing.to_original_geometry(cropped, geometry, labels.shape)
  np.testing.assert_array_equal(back, labels)  # nothing of the tumour was cropped away


def test_resize_and_its_restore():
  images, labels = _volume()
  options = {"resize_shape": [28, 28, 16], "normalisation": "none"}
  out, resized, geometry = preprocessing.preprocess(images, labels, "x", options)
  assert out.shape == (28, 28, 16, 2) and resized.shape == (28, 28, 16)
  assert set(np.unique(resized)) == {0, 2, 3}  # nearest: no new label values
  back = preprocessing.to_original_geometry(resized, geometry, labels.shape)
  assert back.shape == labels.shape
  assert (back == labels).mean() > 0.98


def test_unknown_preprocessing_is_refused():
  with pytest.raises(DataError, match="normalisation='histogram'"):
    preprocessing.resolve({"normalisation": "histogram"}, "store")
  with pytest.raises(DataError, match="crop=centre needs a crop_shape"):
    preprocessing.resolve({"crop": "centre"}, "store")
  # Stores written before the options were recorded read as the defaults.
  old = preprocessing.resolve({"crop": "nonzero_bounding_box",
                               "normalisation": "zscore_nonzero"}, "store")
  assert old["crop"] == "brain" and old["normalisation"] == "zscore"


def test_prepare_records_and_predict_applies_the_same(raw_datasets, tmp_path):
  options = {"crop": "centre", "crop_shape": [24, 24, 16], "normalisation": "minmax",
             "smooth_sigma": 1.0, "sharpen": 0.3, "resize_shape": [16, 16, 16]}
  store_path = str(tmp_path / "store")
  prepare.prepare(raw_datasets["brats2021"], store_path, num_workers=1, fg_per_class=50,
                  **options)
  with open(os.path.join(store_path, "manifest.json")) as f:
    recorded = json.load(f)["preprocessing"]
  assert all(recorded[k] == v for k, v in options.items())
  store = PreparedStore(store_path)
  resolved = preprocessing.resolve(recorded, store_path)
  channels = tuple(recorded["channels"])
  for case_id, _, load in inputs.raw_inputs(raw_datasets["brats2021"], channels, resolved):
    case = load()
    stored, _ = store.read_case(case_id)
    assert case.image.shape == stored.shape == (16, 16, 16, 4)
    np.testing.assert_allclose(case.image, stored, atol=2e-3)  # the store holds float16
    case_entry = store.cases[case_id]
    assert case.geometry == {"box": case_entry["crop_box"],
                             "cropped_shape": case_entry["cropped_shape"]}
  raw = discovery.find_cases(raw_datasets["brats2021"])[0]
  assert store.shape(raw.case_id) == (16, 16, 16)
