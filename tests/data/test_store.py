"""Synthetic data, layouts and label conventions, and preparation into the store."""

import json
import os

import nibabel as nib
import numpy as np
import pytest

from brats_jax.data import discovery, layouts, prepare, synth
from brats_jax.data.store import PreparedStore
from brats_jax.labels import CONVENTIONS, ED, ET, NCR, OTHER, regions_from_labels

from conftest import TINY_SHAPE


def _read(path):
  return np.asarray(nib.load(path).dataobj)


def test_synth_is_deterministic_int16_with_real_geometry(tmp_path):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  synth.write_dataset(a, "brats2021", 2, TINY_SHAPE, seed=7)
  synth.write_dataset(b, "brats2021", 2, TINY_SHAPE, seed=7)
  case = discovery.find_cases(a)[1]
  other = discovery.find_cases(b)[1]
  for x, y in zip(case.images + (case.label,), other.images + (other.label,)):
    assert np.array_equal(_read(x), _read(y))
  image = nib.load(case.images[0])
  assert image.get_data_dtype() == np.int16
  assert not np.allclose(image.affine, np.eye(4))
  assert image.shape == TINY_SHAPE
  # A different seed gives a different case.
  c = str(tmp_path / "c")
  synth.write_dataset(c, "brats2021", 2, TINY_SHAPE, seed=8)
  assert not np.array_equal(_read(case.images[0]), _read(discovery.find_cases(c)[1].images[0]))


def test_synth_contrasts_look_like_mri(tmp_path):
  """Edema is bright on FLAIR, the enhancing rim on T1ce, necrosis dark on T1."""
  images, labels = synth.make_case((64, 64, 48), np.random.default_rng(0), p_non_enhancing=0)
  flair, t1, t1ce = images[..., 0], images[..., 1], images[..., 2]
  brain = images[..., 0] > 0
  healthy = brain & (labels == 0)
  assert flair[labels == ED].mean() > 1.3 * flair[healthy].mean()
  assert t1ce[labels == ET].mean() > 1.3 * t1ce[healthy].mean()
  assert t1[labels == NCR].mean() < 0.8 * t1[healthy].mean()
  assert np.all(images[~brain] == 0)  # skull-stripped: background is exactly zero


def test_synth_lookalikes_look_like_tumour_and_are_labelled_background():
  """Lookalikes change images, never labels: FLAIR-bright blobs and T1ce-bright structures
  away from the tumour, as bright as edema and the enhancing rim."""
  shape = (64, 64, 48)
  plain, labels = synth.make_case(shape, np.random.default_rng(0), p_non_enhancing=0)
  images, same_labels = synth.make_case(shape, np.random.default_rng(0), p_non_enhancing=0,
                                        lookalikes_rng=np.random.default_rng(1))
  assert np.array_equal(labels, same_labels)
  changed = np.abs(images - plain).max(-1) > 0.2 * plain.max()
  background = changed & (labels == 0)
  assert background.sum() > 50 and background.sum() == changed.sum()  # none in the tumour
  brain = plain[..., 0] > 0
  healthy = brain & (labels == 0) & ~changed
  flair, t1ce = images[..., 0], images[..., 2]
  flair_like_edema = background & (flair > 1.3 * flair[healthy].mean())
  t1ce_like_rim = background & (t1ce > 1.3 * t1ce[healthy].mean())
  assert flair_like_edema.sum() > 20 and t1ce_like_rim.sum() > 20
  assert flair[flair_like_edema].mean() > 0.7 * flair[labels == ED].mean()
  assert t1ce[t1ce_like_rim].mean() > 0.7 * t1ce[labels == ET].mean()


@pytest.mark.parametrize("layout", ["brats2021", "brats2023", "msd"])
def test_layout_detection_and_label_round_trip(raw_datasets, layout, tmp_path):
  root = raw_datasets[layout]
  assert discovery.detect_layout(root) == layout
  cases = discovery.find_cases(root)
  assert len(cases) == 3
  store_path = str(tmp_path / "store")
  manifest = prepare.prepare(root, store_path, num_workers=2, fg_per_class=100)
  store = PreparedStore(store_path)
  convention = CONVENTIONS[layouts.LAYOUTS[layout].convention]
  for case, entry in zip(cases, manifest["cases"]):
    assert entry["case_id"] == case.case_id and entry["convention"] == convention.name
    source = _read(case.label)
    image, labels = store.read_case(case.case_id)
    # Labels are not images: integer internal values, unlike any z-scored channel.
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2, 3, 4}
    for c in range(image.shape[-1]):
      assert not np.array_equal(labels.astype(np.float32), image[..., c])
    assert image.dtype == np.float32 and np.unique(image).size > 50
    # Every region present in the source is present in the store.
    source_regions = regions_from_labels(convention.encode(source))
    stored_regions = regions_from_labels(labels)
    for r in range(3):
      assert source_regions[..., r].any() and stored_regions[..., r].any()
      assert source_regions[..., r].sum() == stored_regions[..., r].sum()
    # The mapping round-trips: undo the crop and the convention, get the source back.
    restored = np.zeros(entry["original_shape"], np.uint8)
    box = tuple(slice(lo, hi) for lo, hi in entry["crop_box"])
    restored[box] = convention.decode(labels)
    assert np.array_equal(restored, source)
    assert np.allclose(entry["affine"], nib.load(case.reference_image).affine)


def test_convention_values():
  """The three conventions disagree on what 2, 3 and 4 mean; pin each one down."""
  enc = {name: c.encode(np.array(c.source_values)) for name, c in CONVENTIONS.items()}
  assert enc["brats2021"].tolist() == [0, NCR, ED, ET]  # 0 1 2 4
  assert enc["brats2023"].tolist() == [0, NCR, ED, ET, OTHER]
  assert enc["msd"].tolist() == [0, ED, NCR, ET]  # 1 edema, 2 NET
  regions = regions_from_labels(np.array([NCR, ED, ET, OTHER]))
  assert regions.tolist() == [[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]]


def test_store_is_normalised_cropped_and_one_shard_per_case(tiny_store):
  store = PreparedStore(tiny_store)
  with open(os.path.join(tiny_store, "manifest.json")) as f:
    manifest = json.load(f)
  assert sorted({c["fold"] for c in manifest["cases"]}) == [0, 1, 2, 3, 4]
  case_id = store.case_ids()[0]
  image, _ = store.read_case(case_id)
  brain = np.any(image != 0, -1)
  for c in range(4):
    values = image[..., c][brain]
    assert abs(values.mean()) < 0.02 and abs(values.std() - 1) < 0.02
  assert all(brain.any(axis=tuple(a for a in range(3) if a != ax))[[0, -1]].all()
             for ax in range(3))  # cropped to the brain's bounding box
  chunks = os.path.join(tiny_store, "images", case_id, "c")
  files = [f for _, _, names in os.walk(chunks) for f in names]
  assert len(files) == 1  # one object per case
  fg = store.foreground(case_id)
  _, labels = store.read_case(case_id)
  assert len(fg) and np.all(labels[fg[:, 0], fg[:, 1], fg[:, 2]] == fg[:, 3])
