"""Segment whole patients with a trained workdir, or an ensemble of them (brats-jax-predict
runs this).

Restores a checkpoint's model (latest, best or a step) onto the devices of this machine
(each member's, for an ensemble: inference/ensemble.py), applies exactly the training
preprocessing (as its contract records it: crop, normalisation, filters, resizing), predicts
each case with Gaussian-weighted sliding windows (optionally with 8-flip mirror test-time
augmentation; an ensemble averages its members' probabilities), decodes outputs into labels
(tasks.py), applies the post-processing chosen on validation (inference/postprocessing.py),
undoes resizing and crop, optionally removes tumour components smaller than
min_component_voxels, and writes each prediction in the geometry and label convention of the
case's input (data/prediction_files.py).
"""

import concurrent.futures
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from brats_jax import files, sharding, tasks
from brats_jax.data import prediction_files, preprocessing
from brats_jax.data.store import MANIFEST
from brats_jax.errors import DataError
from brats_jax.imageio import nifti
from brats_jax.inference import ensemble, postprocessing
from brats_jax.inference.case_predictor import make_case_predictor
from brats_jax.inference.inputs import CaseInput, raw_inputs, store_inputs
from brats_jax.inference.postprocessing import DECISION_FILE
from brats_jax.inference.trained_model import load_trained_model, read_contract
from brats_jax.progress import progress_bar


def segment(probabilities: np.ndarray, kind: str, case: CaseInput,
            rules: postprocessing.Rules = postprocessing.Rules(),
            min_component_voxels: int = 0) -> np.ndarray:
  """Internal labels of a case in its original geometry (resizing and crop undone) from the
  model's probabilities, after the post-processing rules (in the model's space), tumour
  components under min_component_voxels original voxels removed."""
  decoded = postprocessing.apply(tasks.decode(probabilities, kind), rules)
  decoded = preprocessing.to_original_geometry(decoded, case.geometry, case.original_shape)
  if min_component_voxels > 1:
    decoded = postprocessing.remove_components(decoded, "WT", min_component_voxels)
  return decoded


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


def refuse_overwriting_inputs(input_dir: str, layout: str | None, output_dir: str,
                              save_probabilities: bool) -> None:
  """A prediction never replaces a file of the dataset it reads: an --output that is the
  input folder, where the layout names a case's file by its id alone (Decathlon's imagesTr,
  a prediction folder given back as input), is refused before anything is written."""
  from brats_jax.data import discovery

  cases = discovery.find_cases(input_dir, layout)
  inputs = {os.path.realpath(p) for c in cases for p in (*c.images, c.label) if p}
  for case in cases:
    targets = [prediction_files.path(output_dir, case.case_id, case.layout)]
    if save_probabilities:
      targets.append(probabilities_path(output_dir, case.case_id))
    for target in targets:
      if os.path.realpath(target) in inputs:
        raise DataError(f"{target}: is a file of the input dataset; write the predictions "
                        "to another --output")


def postprocessing_rules(decision_folder, models: list, postprocess: bool) -> tuple:
  """(Rules, where they come from) for a prediction: the decision chosen on validation
  (FOLDER/postprocessing.json), else a single run's ET threshold from its contract, else
  none; none at all without `postprocess`."""
  if not postprocess:
    return postprocessing.Rules(), "off"
  decided = postprocessing.load_decision(decision_folder) if decision_folder else None
  if decided is not None:
    return decided, f"chosen on validation, {files.join(decision_folder, DECISION_FILE)}"
  if len(models) == 1 and models[0].et_threshold():
    return postprocessing.Rules(models[0].et_threshold()), "the checkpoint's ET threshold"
  return postprocessing.Rules(), "none decided"


def predict_folder(workdir, input_dir: str, output_dir: str, checkpoint: str = "latest",
                   mirror_tta: bool = False, layout: str | None = None, skip_bad: bool = False,
                   progress: bool = True, devices=None, min_component_voxels: int = 0,
                   space: int = 1, case_ids=None, save_probabilities: bool = False,
                   postprocess: bool = True) -> tuple:
  """Writes one prediction per case of input_dir (a raw dataset folder or a prepared store)
  on `devices` (default: all), each window split over `space` of them (as mesh.space in
  training); returns ([(case_id, seconds)], [skipped case errors]).

  workdir: a run, a cross-validation parent (its folds predict as an ensemble), or a list
  of runs (an ensemble). With `postprocess`, the rules chosen on validation apply
  (postprocessing_rules). Tumour components smaller than min_component_voxels voxels are
  also removed (0: kept).
  case_ids: only these cases of input_dir (all of them must be there). save_probabilities:
  also <case_id>_probabilities.nii.gz, the model's per-output probabilities (after TTA) in
  the input's geometry (nifti.save_probabilities).

  A bad case stops the run with a DataError naming the file (earlier cases' predictions are
  complete files; none is written for the bad case), or with skip_bad is reported and skipped.
  Every case's headers are checked before the model is loaded, so most bad inputs stop the
  run before anything is written.
  """
  runs, decision_folder = ensemble.members([workdir] if isinstance(workdir, str)
                                           else list(workdir))
  contracts = {run: read_contract(run, checkpoint) for run in runs}
  ensemble.check_agreement({run: c for run, (_, c) in contracts.items()})
  run_contract = contracts[runs[0]][1]
  channels = tuple(run_contract["config"]["data"]["modalities"])
  is_store = files.exists(files.join(input_dir, MANIFEST))
  if not is_store:
    refuse_overwriting_inputs(input_dir, layout, output_dir, save_probabilities)
  inputs = store_inputs(input_dir, channels, run_contract["preprocessing"]) if is_store \
      else raw_inputs(input_dir, channels,
                      preprocessing.resolve(run_contract["preprocessing"], runs[0]), layout)
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
  # Every member's parameters are read once; each case then runs through all of them.
  models = [load_trained_model(run, str(step), mesh) for run, (step, _) in contracts.items()]
  predictors = [make_case_predictor(m.graphdef, mesh, m.config, mirror_tta) for m in models]
  rules, source = postprocessing_rules(decision_folder, models, postprocess)
  kind = models[0].config.loss.kind
  os.makedirs(output_dir, exist_ok=True)
  if progress:
    steps = ", ".join(str(m.step) for m in models)
    print((f"checkpoint step {steps}" if len(models) == 1 else
           f"an ensemble of {len(models)} runs (checkpoint steps {steps})")
          + f"; {len(usable)} cases; {mesh.devices.size} devices"
          + (f" ({space} per window)" if space > 1 else "")
          + (" with mirror TTA" if mirror_tta else "")
          + (f"; tumour components under {min_component_voxels} voxels removed"
             if min_component_voxels > 1 else ""), file=sys.stderr)
    print(f"post-processing ({source}): {rules.describe()}"
          + ("; --nopostprocessing turns it off" if postprocess else ""), file=sys.stderr)
  def write(case_id, case, labels, probabilities):
    if save_probabilities:
      nifti.save_probabilities(probabilities_path(output_dir, case_id),
                               probabilities_in_input_geometry(probabilities, kind, case),
                               case.affine, tasks.TASKS[kind].outputs)
    prediction_files.write(output_dir, case_id, case.layout, case.convention.decode(labels),
                           case.affine, case.reference_image)

  # The next case is read and the previous one written while the devices predict this one:
  # they wait for no file. Each case's time is the wall time its turn took.
  timings, writing = [], None
  with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="predict_io") as io:
    reading = [io.submit(load) for _, load in usable[:1]]
    for i, (case_id, _) in enumerate(progress_bar(usable, unit="case", desc="predict",
                                                   disable=not progress)):
      start = time.perf_counter()
      if i + 1 < len(usable):
        reading.append(io.submit(usable[i + 1][1]))
      try:
        case = reading[i].result()
      except DataError as e:
        skip_or_raise(e)
        continue
      reading[i] = None  # the case's arrays are not kept past its turn
      probabilities = sum(predict(m.variables, case.image) for m, predict in
                          zip(models, predictors)) / len(models)
      labels = segment(probabilities, kind, case, rules, min_component_voxels)
      if writing is not None:
        writing.result()  # the previous case's files are whole before this one's start
      writing = io.submit(write, case_id, case, labels, probabilities)
      timings.append((case_id, time.perf_counter() - start))
      if progress:
        tqdm.write(f"{case_id}: {timings[-1][1]:.1f} s", file=sys.stderr)
    if writing is not None:
      writing.result()
  if not timings:
    raise DataError(f"{input_dir}: no usable case")
  return timings, skipped
