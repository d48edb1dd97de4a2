"""Segment whole patients with a trained workdir.

  brats-jax-predict --workdir=RUN --input=RAW_DIR --output=PRED_DIR [--checkpoint=best]

Reads the run's config from the workdir, restores a checkpoint (latest, best or a step) onto
the devices of this machine, applies exactly the training preprocessing (brain crop, z-score),
predicts each case with Gaussian-weighted sliding windows (optionally with 8-flip mirror
test-time augmentation), turns regions back into labels, undoes the crop and writes
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

from brats_jax import config_io, inference, layouts, prepare, sharding, train_step, volumes
from brats_jax.checkpointing import Checkpoints
from brats_jax.errors import DataError, exit_on_data_error
from brats_jax.progress import progress_bar
from brats_jax.store import MANIFEST, PreparedStore
from brats_jax.writers import read_metrics


def restore_for_inference(workdir: str, checkpoint: str = "latest", mesh=None):
  """(config, graphdef, state, step) of a workdir's checkpoint, on this machine's devices."""
  if not os.path.exists(os.path.join(workdir, config_io.WORKDIR_CONFIG)):
    raise DataError(f"{workdir}: no {config_io.WORKDIR_CONFIG}; not a brats_jax workdir")
  config = config_io.load_workdir_config(workdir)
  mesh = mesh or sharding.make_mesh()
  graphdef, state, _ = train_step.create_train_state(config, mesh)
  checkpoints = Checkpoints(workdir, read_only=True)
  steps = checkpoints.all_steps()
  if checkpoint == "latest":
    step = checkpoints.latest_step()
  elif checkpoint == "best":
    step = checkpoints.best_step()
  else:
    step = int(checkpoint)
    if step not in steps:
      raise DataError(f"{checkpoints.directory}: no checkpoint at step {step} (have {steps})")
  if step is None:
    raise DataError(f"{checkpoints.directory}: no {checkpoint} checkpoint")
  state, _ = checkpoints.restore(step, state)
  checkpoints.close()
  return config, graphdef, state, step


def et_threshold(workdir: str, config, step: int) -> int:
  """The ET threshold: the config's, or (-1) the one validation chose for this checkpoint."""
  if config.eval.min_enhancing_voxels >= 0:
    return int(config.eval.min_enhancing_voxels)
  chosen = [r["val/min_enhancing_voxels"] for r in read_metrics(workdir)
            if r["step"] == step and "val/min_enhancing_voxels" in r]
  if not chosen:
    print(f"warning: no validation at step {step} chose an ET threshold; using none",
          file=sys.stderr)
    return 0
  return int(chosen[-1])


@dataclasses.dataclass
class CaseInput:
  """A case ready for the model: normalised, brain-cropped image and how to undo the crop."""

  case_id: str
  image: np.ndarray  # [x, y, z, 4], cropped, z-scored
  crop: tuple  # slices of the original volume
  original_shape: tuple
  affine: np.ndarray
  convention: layouts.LabelConvention
  reference_image: str | None  # whose NIfTI header codes the prediction copies


def raw_inputs(input_dir: str, layout: str | None = None):
  """[(case_id, check, load)] of a raw dataset folder: `check` reads headers only, `load`
  applies the training preprocessing. Labels, if present, are not read."""
  cases = [dataclasses.replace(c, label=None) for c in layouts.find_cases(input_dir, layout)]

  def load(case):
    images, _, affine, _ = prepare.read_raw_case(case)
    crop = prepare.crop_slices(prepare.brain_box(images, None, case.images[0]))
    return CaseInput(case.case_id, prepare.normalise(images[crop]), crop, images.shape[:3],
                     affine, case.convention, case.reference_image)

  return [(case.case_id, functools.partial(prepare.check_raw_case, case),
           functools.partial(load, case)) for case in cases]


def store_inputs(store_path: str):
  """[(case_id, check, load)] of a prepared store (checked, cropped and normalised already)."""
  store = PreparedStore(store_path)

  def load(case_id):
    entry = store.cases[case_id]
    reference = entry["images"][0] if os.path.exists(entry["images"][0]) else None
    return CaseInput(case_id, store.read_case(case_id)[0],
                     prepare.crop_slices(entry["crop_box"]),
                     tuple(entry["original_shape"]), np.array(entry["affine"]),
                     layouts.CONVENTIONS[entry["convention"]], reference)

  return [(cid, lambda: None, functools.partial(load, cid))
          for cid in store.case_ids(labelled=False)]


def segment(predict, state, case: CaseInput, min_enhancing_voxels: int = 0) -> np.ndarray:
  """Internal labels of a case in its original (uncropped) geometry."""
  labels = np.zeros(case.original_shape, np.uint8)
  labels[case.crop] = inference.regions_to_labels(predict(state, case.image),
                                                  min_enhancing_voxels)
  return labels


def predict_folder(workdir: str, input_dir: str, output_dir: str, checkpoint: str = "latest",
                   mirror_tta: bool = False, layout: str | None = None, skip_bad: bool = False,
                   progress: bool = True, devices=None) -> tuple:
  """Writes one prediction per case of input_dir (a raw dataset folder or a prepared store)
  on `devices` (default: all); returns ([(case_id, seconds)], [skipped case errors]).

  A bad case stops the run with a DataError naming the file (earlier cases' predictions are
  complete files; none is written for the bad case), or with skip_bad is reported and skipped.
  Every case's headers are checked before the model is loaded, so most bad inputs stop the
  run before anything is written.
  """
  is_store = os.path.exists(os.path.join(input_dir, MANIFEST))
  inputs = store_inputs(input_dir) if is_store else raw_inputs(input_dir, layout)
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
  config, graphdef, state, step = restore_for_inference(workdir, checkpoint, mesh)
  predict = inference.make_case_predictor(graphdef, mesh, config, mirror_tta)
  threshold = et_threshold(workdir, config, step)
  os.makedirs(output_dir, exist_ok=True)
  if progress:
    print(f"checkpoint step {step}; {len(usable)} cases; {mesh.devices.size} devices"
          + (" with mirror TTA" if mirror_tta else "")
          + (f"; ET under {threshold} voxels becomes necrosis" if threshold else ""),
          file=sys.stderr)
  timings = []
  for case_id, load in progress_bar(usable, unit="case", desc="predict", disable=not progress):
    start = time.perf_counter()
    try:
      case = load()
    except DataError as e:
      skip_or_raise(e)
      continue
    labels = segment(predict, state, case, threshold)
    volumes.save_label_like(os.path.join(output_dir, f"{case_id}.nii.gz"),
                            case.convention.decode(labels), case.affine, case.reference_image)
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


@exit_on_data_error
def main(argv):
  del argv
  if not (FLAGS.workdir and FLAGS.input and FLAGS.output):
    raise app.UsageError("--workdir, --input and --output are required")
  logging.set_verbosity(logging.WARNING)
  timings, skipped = predict_folder(FLAGS.workdir, FLAGS.input, FLAGS.output, FLAGS.checkpoint,
                                    FLAGS.tta, FLAGS.layout, FLAGS.skip_bad)
  seconds = [t for _, t in timings]
  print(f"wrote {len(timings)} predictions to {FLAGS.output} "
        f"({np.mean(seconds):.1f} s per case, first {seconds[0]:.1f} s including compilation)"
        + (f"; {len(skipped)} bad cases skipped" if skipped else ""))


def run():
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
