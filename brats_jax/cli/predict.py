"""brats-jax-predict: segment patients with a trained workdir, or an ensemble of them.

  brats-jax-predict --workdir=RUN --input=RAW_DIR --output=PRED_DIR [--checkpoint=best] \
      [--tta] [--min_component_voxels=N] [--save_probabilities] [--nopostprocessing]
  brats-jax-predict --workdir=FOLDS_PARENT --input=RAW_DIR --output=PRED_DIR  # the folds
  brats-jax-predict --workdir=RUN_A --workdir=RUN_B --input=...     # any runs as an ensemble
  brats-jax-predict --workdir=RUN --split=validation --output=PRED_DIR   # the held-out cases
"""

import numpy as np
from absl import flags

from brats_jax.cli import app
from brats_jax.config import checks
from brats_jax.data import layouts
from brats_jax.errors import UserError
from brats_jax.inference import ensemble, predict
from brats_jax.workdir import contract, split_record

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_multi_string("workdir", None, "A training workdir, or a cross-validation "
                            "parent (brats-jax-train --folds): its folds predict together. "
                            "Given more than once: those runs predict as an ensemble, their "
                            "probabilities averaged.")
  flags.DEFINE_string("input", None, "Raw dataset folder (any supported layout) or a store; "
                      "with --split, the folder to read the split's cases from (default: the "
                      "one their store was prepared from).")
  flags.DEFINE_enum("split", None, list(split_record.SPLITS),
                    "Predict exactly this part of the run's split (WORKDIR/split.json).")
  flags.DEFINE_bool("save_probabilities", False,
                    "Also write <case_id>_probabilities.nii.gz: the model's probability per "
                    "output (regions or classes), 16-bit, in the input's geometry.")
  flags.DEFINE_string("output", None, "Folder for the <case_id>.nii.gz predictions.")
  flags.DEFINE_string("checkpoint", "latest", "latest, best, or a step number.")
  flags.DEFINE_bool("tta", False, "Average over the 8 mirror flips (test-time augmentation).")
  flags.DEFINE_enum("layout", None, list(layouts.LAYOUTS), "Input layout; detected if unset.")
  flags.DEFINE_bool("skip_bad", False, "Report bad cases and go on instead of stopping.")
  flags.DEFINE_integer("min_component_voxels", 0,
                       "Remove connected tumour components smaller than this many voxels "
                       "(26-connected, in the case's own voxels); 0 keeps every one.",
                       lower_bound=0)
  flags.DEFINE_bool("postprocessing", True, "Apply the post-processing chosen on the "
                    "run's (or the folds') validation cases (WORKDIR/postprocessing.json).")
  flags.DEFINE_integer("space", 1, "Devices that split each window along its first axis "
                       "(spatial partitioning, for windows too large for one device).",
                       lower_bound=1)
  flags.mark_flags_as_required(["workdir", "output"])


def main(argv):
  del argv
  runs, _ = ensemble.members(FLAGS.workdir)
  for run in runs:  # each run's config passes today's rules (an older contract may not)
    _, run_contract = predict.read_contract(run, FLAGS.checkpoint)
    checks.check_config(contract.config_of(run_contract))
  input_dir, case_ids = FLAGS.input, None
  if FLAGS.split:
    if len(runs) > 1:
      raise UserError("--split predicts one run's own held-out cases; give one --workdir "
                      "that is a run, not an ensemble")
    input_dir, case_ids = split_record.cases_of(runs[0], FLAGS.split, input_dir)
  elif not input_dir:
    raise UserError("give --input (a dataset folder or store) or --split")
  timings, skipped = predict.predict_folder(
      FLAGS.workdir, input_dir, FLAGS.output, FLAGS.checkpoint, FLAGS.tta, FLAGS.layout,
      FLAGS.skip_bad, min_component_voxels=FLAGS.min_component_voxels, space=FLAGS.space,
      case_ids=case_ids, save_probabilities=FLAGS.save_probabilities,
      postprocess=FLAGS.postprocessing)
  seconds = [t for _, t in timings]
  print(f"wrote {len(timings)} predictions to {FLAGS.output} "
        f"({np.mean(seconds):.1f} s per case, first {seconds[0]:.1f} s including compilation)"
        + (f"; {len(skipped)} bad cases skipped" if skipped else ""))


def run():
  app.run(main, define_flags)


if __name__ == "__main__":
  run()
