"""brats-jax-evaluate: score a folder of predictions against a raw dataset's references.

  brats-jax-evaluate --predictions=PRED_DIR --references=RAW_DIR --output=scores.csv \
      [--lesion_wise] [--pictures=DIR --gifs]
"""

from absl import flags

from brats_jax.cli import app
from brats_jax.data import layouts
from brats_jax.evaluation import evaluate

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("predictions", None, "Folder of <case_id>.nii.gz predictions.")
  flags.DEFINE_string("references", None, "Raw dataset folder with the reference labels.")
  flags.DEFINE_string("output", None, "CSV to write (a _summary.json is written beside it).")
  flags.DEFINE_bool("lesion_wise", False, "Also compute BraTS 2023 lesion-wise Dice and HD95.")
  flags.DEFINE_enum("layout", None, list(layouts.LAYOUTS), "Reference layout; detected if unset.")
  flags.DEFINE_string("pictures", None, "Folder for case overlays and the Dice distribution.")
  flags.DEFINE_integer("max_pictures", 8, "Cases drawn (the first ones, by case id).")
  flags.DEFINE_bool("gifs", False, "Also write an animated GIF per drawn case.")
  flags.mark_flags_as_required(["predictions", "references", "output"])


def main(argv):
  del argv
  rows, summary = evaluate.evaluate_folder(
      FLAGS.predictions, FLAGS.references, FLAGS.output, FLAGS.lesion_wise, FLAGS.layout,
      FLAGS.pictures, FLAGS.max_pictures, FLAGS.gifs)
  print(f"{len(rows)} cases (mean over cases)")
  print(evaluate.format_table(summary))
  print(f"wrote {FLAGS.output}" + (f"; pictures in {FLAGS.pictures}" if FLAGS.pictures
                                    else ""))


def run():
  app.run(main, define_flags, jax_command=False)


if __name__ == "__main__":
  run()
