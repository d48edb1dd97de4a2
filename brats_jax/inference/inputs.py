"""The cases to predict, ready for the model: a raw dataset folder (any layout) or a prepared
store, with each case's preprocessing recorded so that it can be undone."""

import dataclasses
import functools
import os

import numpy as np

from brats_jax.data import discovery, layouts, preprocessing, raw_cases
from brats_jax.data.store import PreparedStore
from brats_jax.errors import DataError
from brats_jax.labels import CONVENTIONS, LabelConvention


@dataclasses.dataclass
class CaseInput:
  """A case ready for the model: its preprocessed image and how to undo the preprocessing."""

  case_id: str
  layout: str
  image: np.ndarray  # [x, y, z, C], preprocessed, the model's channels
  geometry: dict  # preprocessing.preprocess's: the crop box and the shape before resizing
  original_shape: tuple
  affine: np.ndarray
  convention: LabelConvention
  reference_image: str | None  # whose NIfTI header codes the prediction copies


def raw_inputs(input_dir: str, channels: tuple, options: dict, layout: str | None = None):
  """[(case_id, check, load)] of a raw dataset folder: `check` reads headers only, `load`
  applies the training preprocessing and keeps the model's channels. Labels are not read."""
  cases = [dataclasses.replace(c, label=None) for c in discovery.find_cases(input_dir, layout)]
  available = layouts.LAYOUTS[cases[0].layout].channels
  missing = [c for c in channels if c not in available]
  if missing:
    raise DataError(f"{input_dir}: a {cases[0].layout} folder has no {', '.join(missing)} "
                    f"channel (the model reads {', '.join(channels)})")
  selection = [available.index(c) for c in channels]

  def load(case):
    images, _, affine, _ = raw_cases.read_raw_case(case)
    image, _, geometry = preprocessing.preprocess(images, None, case.images[0], options)
    return CaseInput(case.case_id, case.layout, image[..., selection], geometry,
                     images.shape[:3], affine, case.convention, case.reference_image)

  return [(case.case_id, functools.partial(raw_cases.check_raw_case, case),
           functools.partial(load, case)) for case in cases]


def store_inputs(store_path: str, channels: tuple, trained_preprocessing: dict):
  """[(case_id, check, load)] of a prepared store (checked, cropped and normalised already,
  which must be the way the model's training store was), with the model's channels."""
  store = PreparedStore(store_path, channels)
  ours, trained = (preprocessing.preparation(store.preprocessing),
                   preprocessing.preparation(trained_preprocessing))
  if ours != trained:
    raise DataError(f"{store_path}: prepared with {ours}, but the model was trained on data "
                    f"prepared with {trained}")

  def load(case_id):
    entry = store.cases[case_id]
    reference = entry["images"][0] if os.path.exists(entry["images"][0]) else None
    return CaseInput(case_id, entry["layout"], store.read_case(case_id)[0],
                     {"box": entry["crop_box"], "cropped_shape": entry["cropped_shape"]},
                     tuple(entry["original_shape"]), np.array(entry["affine"]),
                     CONVENTIONS[entry["convention"]], reference)

  return [(cid, lambda: None, functools.partial(load, cid))
          for cid in store.case_ids(labelled=False)]
