"""brats-jax-synth: a synthetic BraTS-like raw dataset in any supported layout.

  brats-jax-synth --output=/tmp/raw --layout=brats2021 --num_cases=8 --shape=240,240,155
"""

from absl import flags

from brats_jax.cli import app
from brats_jax.data import layouts, synth

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("output", None, "Folder to write the raw dataset to (replaced if present).")
  flags.DEFINE_enum("layout", "brats2021", list(layouts.LAYOUTS), "Layout and label convention.")
  flags.DEFINE_integer("num_cases", 8, "Number of cases.")
  flags.DEFINE_list("shape", ["240", "240", "155"], "Volume shape in voxels.")
  flags.DEFINE_list("spacing", ["1", "1", "1"], "Voxel spacing in mm.")
  flags.DEFINE_integer("seed", 0, "Case i depends only on (seed, i).")
  flags.DEFINE_float("p_non_enhancing", 0.1, "Fraction of tumours without an enhancing rim.")
  flags.DEFINE_bool("lookalikes", False, "Add what real scans hold and is not tumour: "
                    "white-matter hyperintensities, enhancing choroid plexus and vessels.")
  flags.DEFINE_integer("num_workers", 2, "Cases written in parallel.")
  flags.mark_flags_as_required(["output"])


def main(argv):
  del argv
  synth.write_dataset(FLAGS.output, FLAGS.layout, FLAGS.num_cases,
                      [int(s) for s in FLAGS.shape], FLAGS.seed,
                      tuple(float(s) for s in FLAGS.spacing), FLAGS.p_non_enhancing,
                      FLAGS.num_workers, progress=True, lookalikes=FLAGS.lookalikes)
  print(f"wrote {FLAGS.num_cases} {FLAGS.layout} cases to {FLAGS.output}")


def run():
  app.run(main, define_flags, jax_command=False)


if __name__ == "__main__":
  run()
