"""brats-jax-train: train a 3D U-Net on a prepared BraTS store.

  brats-jax-train --config=configs/default.py --workdir=/runs/brats2021 \
      --config.data.store=/data/brats2021_store

Running the same command again with the same --workdir resumes from the latest checkpoint.
--folds=all trains every cross-validation fold of the store into WORKDIR/fold_<K> (or
--folds=0,2: those), then chooses post-processing on all folds' validation predictions.
On a cluster add --distributed (Slurm, Open MPI, TPU pods are detected by jax.distributed);
for several processes on one machine pass --coordinator, --num_processes and --process_id.
"""

import jax
from absl import flags
from ml_collections import config_flags

from brats_jax.cli import app
from brats_jax.config import checks
from brats_jax.train import cross_validation, loop

FLAGS = flags.FLAGS


def define_flags():
  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Checkpoints, config and logs of this run (with "
                      "--folds: the parent of one workdir per fold).")
  flags.DEFINE_string("folds", None, "Cross-validation: all, or fold numbers (0,2), each "
                      "trained into WORKDIR/fold_<K> validated on its fold.")
  flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (cluster launch).")
  flags.DEFINE_string("coordinator", None, "host:port of process 0, for manual multi-process.")
  flags.DEFINE_integer("num_processes", None, "Number of processes, with --coordinator.")
  flags.DEFINE_integer("process_id", None, "This process's index, with --coordinator.")
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  checks.check_config(FLAGS.config)  # the rules against the store and devices come later
  checks.check_training_length(FLAGS.config)
  if FLAGS.coordinator:
    jax.distributed.initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
  elif FLAGS.distributed:
    jax.distributed.initialize()
  if FLAGS.folds:
    cross_validation.train_folds(FLAGS.config, FLAGS.workdir, FLAGS.folds)
  else:
    loop.train_and_validate(FLAGS.config, FLAGS.workdir)


def run():
  app.run(main, define_flags)


if __name__ == "__main__":
  run()
