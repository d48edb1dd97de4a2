"""Train a 3D U-Net on a prepared BraTS store.

  brats-jax-train --config=configs/default.py --workdir=/runs/brats2021 \
      --config.data.store=/data/brats2021_store

Running the same command again with the same --workdir resumes from the latest checkpoint.
On a cluster add --distributed (Slurm, Open MPI, TPU pods are detected by jax.distributed);
for several processes on one machine pass --coordinator, --num_processes and --process_id.
"""

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from brats_jax import config_checks, runtime, train
from brats_jax.errors import exit_on_user_error

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, config and logs of this run.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (cluster launch).")
flags.DEFINE_string("coordinator", None, "host:port of process 0, for manual multi-process.")
flags.DEFINE_integer("num_processes", None, "Number of processes, with --coordinator.")
flags.DEFINE_integer("process_id", None, "This process's index, with --coordinator.")
flags.mark_flags_as_required(["config", "workdir"])


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config_checks.validate(FLAGS.config)  # the rules against the store and devices come later
  logging.set_verbosity(logging.ERROR)  # Orbax logs every save at INFO
  runtime.configure()
  if FLAGS.coordinator:
    jax.distributed.initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
  elif FLAGS.distributed:
    jax.distributed.initialize()
  train.train_and_validate(FLAGS.config, FLAGS.workdir)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
