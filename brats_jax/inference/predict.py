"""Segment whole patients with a trained workdir (brats-jax-predict runs this).

Restores a checkpoint's model (latest, best or a step) onto the devices of this machine,
applies exactly the training preprocessing (as its contract records it: crop,
normalisation, filters, resizing), predicts each case with Gaussian-weighted sliding windows
(optionally with 8-flip mirror test-time augmentation), decodes outputs into labels (tasks.py),
undoes resizing and crop, optionally removes tumour components smaller than
min_component_voxels, and writes each prediction in the geometry and label convention of the
case's input (data/prediction_files.py).
"""

import os
import sys
import time

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from brats_jax import files, sharding, tasks
from brats_jax.data import prediction_files, preprocessing
from brats_jax.data.store import MANIFEST
from brats_jax.errors import DataError
from brats_jax.imageio import nifti
from brats_jax.inference.case_predictor import make_case_predictor
from brats_jax.inference.inputs import CaseInput, raw_inputs, store_inputs
from brats_jax.inference.trained_model import load_trained_model, read_contract
from brats_jax.labels import BACKGROUND
from brats_jax.progress import progress_bar


def remove_small_components(labels: np.ndarray, min_voxels: int) -> np.ndarray:
  """Labels with every connected tumour component (26-connected, any tumour label) of fewer
  than min_voxels voxels set to background: the usual clean-up of isolated false positives.
  min_voxels <= 1 changes nothing."""
  if min_voxels <= 1:
    return labels
  structure = ndimage.generate_binary_structure(labels.ndim, labels.ndim)
  components, count = ndimage.label(labels > 0, structure)
  if not count:
    return labels
  sizes = np.bincount(components.ravel())
  small = sizes < min_voxels
  small[0] = False
  return np.where(small[components], np.uint8(BACKGROUND), labels).astype(labels.dtype)


def segment(probabilities: np.ndarray, kind: str, case: CaseInput,
            min_enhancing_voxels: int = 0, min_component_voxels: int = 0) -> np.ndarray:
  """Internal labels of a case in its original geometry (resizing and crop undone) from the
  model's probabilities, tumour components under min_component_voxels original voxels
  removed."""
  decoded = tasks.relabel_small_enhancing(tasks.decode(probabilities, kind),
                                          min_enhancing_voxels)
  decoded = preprocessing.to_original_geometry(decoded, case.geometry, case.original_shape)
  return remove_small_components(decoded, min_component_voxels)


def probabilities_in_input_geometry(probabilities: np.ndarray, kind: str,
                                    case: CaseInput) -> np.ndarray:
  """The model's probabilities [X, Y, Z, K] resized back and uncropped: beyond the crop the
  model saw nothing, so background (a softmax's class 0) is certain there."""
  outside = [1.0 if tasks.TASKS[kind].activation == "softmax" and k == 0 else 0.0
             for k in range(probabilities.shape[-1])]
  return preprocessing.probabilities_to_original_geometry(
      probabilities, case.geometry, case.original_shape, outside)


def probabilities_path(output_dir: str, case_id: str) -> str:
  return os.path.join(output_dir, f"{case_id}_probabilities.nii.gz")


def predict_folder(workdir: str, input_dir: str, output_dir: str, checkpoint: str = "latest",
                   mirror_tta: bool = False, layout: str | None = None, skip_bad: bool = False,
                   progress: bool = True, devices=None, min_component_voxels: int = 0,
                   space: int = 1, case_ids=None, save_probabilities: bool = False) -> tuple:
  """Writes one prediction per case of input_dir (a raw dataset folder or a prepared store)
  on `devices` (default: all), each window split over `space` of them (as mesh.space in
  training); returns ([(case_id, seconds)], [skipped case errors]).
  Tumour components smaller than min_component_voxels voxels are removed (0: kept).
  case_ids: only these cases of input_dir (all of them must be there). save_probabilities:
  also <case_id>_probabilities.nii.gz, the model's per-output probabilities (after TTA) in
  the input's geometry (nifti.save_probabilities).

  A bad case stops the run with a DataError naming the file (earlier cases' predictions are
  complete files; none is written for the bad case), or with skip_bad is reported and skipped.
  Every case's headers are checked before the model is loaded, so most bad inputs stop the
  run before anything is written.
  """
  step, run_contract = read_contract(workdir, checkpoint)
  channels = tuple(run_contract["config"]["data"]["modalities"])
  is_store = files.exists(files.join(input_dir, MANIFEST))
  inputs = store_inputs(input_dir, channels, run_contract["preprocessing"]) if is_store \
      else raw_inputs(input_dir, channels,
                      preprocessing.resolve(run_contract["preprocessing"], workdir), layout)
  if case_ids is not None:
    wanted = set(case_ids)
    inputs = [entry for entry in inputs if entry[0] in wanted]
    missing = sorted(wanted - {entry[0] for entry in inputs})
    if missing:
      raise DataError(f"{input_dir}: no case {missing[0]} ({len(missing)} of the "
                      f"{len(wanted)} requested cases missing)")
  skipped = []

  def skip_or_raise(error: DataError):
    if not skip_bad:
      raise DataError(f"{error} (--skip_bad predicts the other cases)")
    skipped.append(str(error))
    tqdm.write(f"skipped: {error}", file=sys.stderr)

  usable = []
  for case_id, check, load in inputs:
    try:
      check()
      usable.append((case_id, load))
    except DataError as e:
      skip_or_raise(e)
  if not usable:
    raise DataError(f"{input_dir}: no usable case")

  mesh = sharding.make_mesh(devices, space)
  model = load_trained_model(workdir, str(step), mesh)
  predict = make_case_predictor(model.graphdef, mesh, model.config, mirror_tta)
  threshold = model.et_threshold()
  os.makedirs(output_dir, exist_ok=True)
  if progress:
    print(f"checkpoint step {step}; {len(usable)} cases; {mesh.devices.size} devices"
          + (f" ({space} per window)" if space > 1 else "")
          + (" with mirror TTA" if mirror_tta else "")
          + (f"; ET under {threshold} voxels becomes necrosis" if threshold else "")
          + (f"; tumour components under {min_component_voxels} voxels removed"
             if min_component_voxels > 1 else ""),
          file=sys.stderr)
  timings = []
  for case_id, load in progress_bar(usable, unit="case", desc="predict", disable=not progress):
    start = time.perf_counter()
    try:
      case = load()
    except DataError as e:
      skip_or_raise(e)
      continue
    kind = model.config.loss.kind
    probabilities = predict(model.variables, case.image)
    labels = segment(probabilities, kind, case, threshold, min_component_voxels)
    if save_probabilities:
      nifti.save_probabilities(probabilities_path(output_dir, case_id),
                               probabilities_in_input_geometry(probabilities, kind, case),
                               case.affine, tasks.TASKS[kind].outputs)
    prediction_files.write(output_dir, case_id, case.layout, case.convention.decode(labels),
                           case.affine, case.reference_image)
    timings.append((case_id, time.perf_counter() - start))
    if progress:
      tqdm.write(f"{case_id}: {timings[-1][1]:.1f} s", file=sys.stderr)
  if not timings:
    raise DataError(f"{input_dir}: no usable case")
  return timings, skipped
