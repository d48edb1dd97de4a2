"""Segment whole patients with a trained workdir.

  brats-jax-predict --workdir=RUN --input=RAW_DIR --output=PRED_DIR [--checkpoint=best]

Reads the run's config from the workdir, restores a checkpoint (latest, best or a step) onto
the devices of this machine, applies exactly the training preprocessing (as its contract
records it: crop, normalisation, filters, resizing),
predicts each case with Gaussian-weighted sliding windows (optionally with 8-flip mirror
test-time augmentation), turns regions back into labels, undoes resizing and crop, optionally
removes tumour components smaller than --min_component_voxels, writes
`<case_id>.nii.gz` in the geometry (shape, affine, orientation) and label convention of the
case's input images, as uint8.
"""

import dataclasses
import functools
import os
import sys
import time

import numpy as np
from absl import app, flags, logging
from tqdm import tqdm

from brats_jax import (config_checks, contract, discovery, inference, layouts,
                       prediction_files, preprocessing, runtime, sharding, train_state)
from brats_jax.checkpointing import Checkpoints
from brats_jax.errors import DataError, exit_on_user_error
from brats_jax.progress import progress_bar
from brats_jax.store import MANIFEST, PreparedStore


@dataclasses.dataclass
class TrainedModel:
  """A checkpoint's model, restored for inference on this machine's devices."""

  config: object  # the ConfigDict the run trained with (from the inference contract)
  contract: dict
  graphdef: object
  variables: dict  # {"params", "model_state"}, replicated on the mesh
  step: int

  def et_threshold(self) -> int:
    """The ET threshold: the config's, or (-1) the one validation chose (contract)."""
    if self.config.eval.min_enhancing_voxels >= 0:
      return int(self.config.eval.min_enhancing_voxels)
    chosen = self.contract["et_threshold"]
    return int(chosen["voxels"]) if chosen else 0


def read_contract(workdir: str, checkpoint: str = "latest") -> tuple:
  """(step, inference contract) of a workdir's checkpoint: latest, best or a step number.
  A small JSON read: nothing else of the checkpoint is opened."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise DataError(f"{workdir}: no checkpoints folder; not a brats_jax workdir")
  checkpoints = Checkpoints(workdir, read_only=True)
  try:
    steps = checkpoints.all_steps()
    step = {"latest": checkpoints.latest_step, "best": checkpoints.best_step}.get(
        checkpoint, lambda: int(checkpoint) if str(checkpoint).isdigit() else None)()
    if step is None or step not in steps:
      raise DataError(f"{checkpoints.directory}: no {checkpoint} checkpoint (have steps "
                      f"{steps}; --checkpoint takes latest, best or one of them)")
    run_contract = checkpoints.contract(step)
  finally:
    checkpoints.close()
  config = contract.config_of(run_contract)
  config_checks.validate(config)
  preprocessing.check_supported(run_contract["preprocessing"],
                                f"{checkpoints.directory}/{step}")
  return step, run_contract


def restore_for_inference(workdir: str, checkpoint: str = "latest", mesh=None) -> TrainedModel:
  """The model of a workdir's checkpoint, through its inference contract: only the
  parameters and model state are read, no optimiser is built, no log is read."""
  step, run_contract = read_contract(workdir, checkpoint)
  config = contract.config_of(run_contract)
  mesh = mesh or sharding.make_mesh()
  graphdef, target = train_state.abstract_model(config, mesh)
  checkpoints = Checkpoints(workdir, read_only=True)
  try:
    variables = checkpoints.restore_model(step, target)
  finally:
    checkpoints.close()
  return TrainedModel(config, run_contract, graphdef, variables, step)


@dataclasses.dataclass
class CaseInput:
  """A case ready for the model: its preprocessed image and how to undo the preprocessing."""

  case_id: str
  layout: str
  image: np.ndarray  # [x, y, z, C], preprocessed, the model's channels
  geometry: dict  # preprocessing.preprocess's: the crop box and the shape before resizing
  original_shape: tuple
  affine: np.ndarray
  convention: layouts.LabelConvention
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
    images, _, affine, _ = preprocessing.read_raw_case(case)
    image, _, geometry = preprocessing.preprocess(images, None, case.images[0], options)
    return CaseInput(case.case_id, case.layout, image[..., selection], geometry,
                     images.shape[:3], affine, case.convention, case.reference_image)

  return [(case.case_id, functools.partial(preprocessing.check_raw_case, case),
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
                     layouts.CONVENTIONS[entry["convention"]], reference)

  return [(cid, lambda: None, functools.partial(load, cid))
          for cid in store.case_ids(labelled=False)]


def segment(predict, model: TrainedModel, case: CaseInput, min_enhancing_voxels: int = 0,
            min_component_voxels: int = 0) -> np.ndarray:
  """Internal labels of a case in its original geometry (resizing and crop undone), tumour
  components under min_component_voxels original voxels removed."""
  labels = inference.decode(predict(model.variables, case.image), model.config.loss.kind,
                            min_enhancing_voxels)
  labels = preprocessing.restore(labels, case.geometry, case.original_shape)
  return inference.remove_small_components(labels, min_component_voxels)


def predict_folder(workdir: str, input_dir: str, output_dir: str, checkpoint: str = "latest",
                   mirror_tta: bool = False, layout: str | None = None, skip_bad: bool = False,
                   progress: bool = True, devices=None, min_component_voxels: int = 0) -> tuple:
  """Writes one prediction per case of input_dir (a raw dataset folder or a prepared store)
  on `devices` (default: all); returns ([(case_id, seconds)], [skipped case errors]).
  Tumour components smaller than min_component_voxels voxels are removed (0: kept).

  A bad case stops the run with a DataError naming the file (earlier cases' predictions are
  complete files; none is written for the bad case), or with skip_bad is reported and skipped.
  Every case's headers are checked before the model is loaded, so most bad inputs stop the
  run before anything is written.
  """
  step, run_contract = read_contract(workdir, checkpoint)
  channels = tuple(run_contract["config"]["data"]["modalities"])
  is_store = os.path.exists(os.path.join(input_dir, MANIFEST))
  inputs = store_inputs(input_dir, channels, run_contract["preprocessing"]) if is_store \
      else raw_inputs(input_dir, channels,
                      preprocessing.resolve(run_contract["preprocessing"], workdir), layout)
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

  mesh = sharding.make_mesh(devices)
  model = restore_for_inference(workdir, str(step), mesh)
  predict = inference.make_case_predictor(model.graphdef, mesh, model.config, mirror_tta)
  threshold = model.et_threshold()
  os.makedirs(output_dir, exist_ok=True)
  if progress:
    print(f"checkpoint step {step}; {len(usable)} cases; {mesh.devices.size} devices"
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
    labels = segment(predict, model, case, threshold, min_component_voxels)
    prediction_files.write(output_dir, case_id, case.layout, case.convention.decode(labels),
                           case.affine, case.reference_image)
    timings.append((case_id, time.perf_counter() - start))
    if progress:
      tqdm.write(f"{case_id}: {timings[-1][1]:.1f} s", file=sys.stderr)
  if not timings:
    raise DataError(f"{input_dir}: no usable case")
  return timings, skipped


FLAGS = flags.FLAGS


def _define_flags():
  """Defined when the command runs, so importing the module defines no flags."""
  flags.DEFINE_string("workdir", None, "A training workdir (config and checkpoints).")
  flags.DEFINE_string("input", None, "Raw dataset folder (any supported layout) or a store.")
  flags.DEFINE_string("output", None, "Folder for the <case_id>.nii.gz predictions.")
  flags.DEFINE_string("checkpoint", "latest", "latest, best, or a step number.")
  flags.DEFINE_bool("tta", False, "Average over the 8 mirror flips (test-time augmentation).")
  flags.DEFINE_enum("layout", None, list(layouts.LAYOUTS), "Input layout; detected if unset.")
  flags.DEFINE_bool("skip_bad", False, "Report bad cases and go on instead of stopping.")
  flags.DEFINE_integer("min_component_voxels", 0,
                       "Remove connected tumour components smaller than this many voxels "
                       "(26-connected, in the case's own voxels); 0 keeps every one.",
                       lower_bound=0)


@exit_on_user_error
def main(argv):
  del argv
  if not (FLAGS.workdir and FLAGS.input and FLAGS.output):
    raise app.UsageError("--workdir, --input and --output are required")
  logging.set_verbosity(logging.ERROR)
  runtime.configure()
  timings, skipped = predict_folder(FLAGS.workdir, FLAGS.input, FLAGS.output, FLAGS.checkpoint,
                                    FLAGS.tta, FLAGS.layout, FLAGS.skip_bad,
                                    min_component_voxels=FLAGS.min_component_voxels)
  seconds = [t for _, t in timings]
  print(f"wrote {len(timings)} predictions to {FLAGS.output} "
        f"({np.mean(seconds):.1f} s per case, first {seconds[0]:.1f} s including compilation)"
        + (f"; {len(skipped)} bad cases skipped" if skipped else ""))


def run():
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
