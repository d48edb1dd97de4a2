"""brats-jax-sweep: train, predict and score a grid of config overrides
(henry2020_dilated.py's loss x modality table), resuming where it stopped.

  brats-jax-sweep --config=configs/seeds/henry2020_dilated.py --out=/runs/sweep \\
      --grid="loss.terms=(('bce', 1.0),)|(('focal', 1.0),)|(('iou', 1.0),)|(('dice', 1.0),)" \\
      --grid="data.modalities=('t1ce',)|('t1',)|('t2',)|('flair',)" \\
      --set=data.store=/data/brats2015 --set=data.val_store=/data/brats2015_val
"""

import os

from absl import flags

from brats_jax.cli import app
from brats_jax.errors import UserError
from brats_jax.experiments import sweep

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("config", None, "The config file every cell starts from.")
  flags.DEFINE_string("out", None, "Folder of the sweep: one run per cell, and the tables.")
  flags.DEFINE_multi_string("grid", None, "An axis: FIELD=VALUE|VALUE|... (Python literals); "
                            "give one or two.")
  flags.DEFINE_multi_string("set", [], "FIELD=VALUE for every cell (the store, the epochs).")
  flags.mark_flags_as_required(["config", "out", "grid"])


def main(argv):
  del argv
  axes = [sweep.parse_axis(text) for text in FLAGS.grid]
  if len(axes) > 2:
    raise UserError("--grid: give one or two axes (the table has rows and columns)")
  overrides = []
  for text in FLAGS.set:
    if "=" not in text:
      raise UserError(f"--set={text}: expected FIELD=VALUE")
    overrides.append(f"--config.{text}")
  sweep.sweep(os.path.abspath(FLAGS.config), axes, overrides, FLAGS.out)
  print(f"wrote {os.path.join(FLAGS.out, 'sweep.md')}, sweep.csv and sweep.png")


def run():
  app.run(main, define_flags, jax_command=False)


if __name__ == "__main__":
  run()
