"""brats-jax-evaluate: score a folder of predictions against a raw dataset's references.

  brats-jax-evaluate --predictions=PRED_DIR --references=RAW_DIR --output=scores.csv \
      [--lesion_wise] [--pictures=DIR --gifs --slices=70:75 --per_slice --rotating]
  brats-jax-evaluate --workdir=RUN --split=validation --predictions=PRED_DIR --output=...
"""

from absl import flags

from brats_jax.cli import app
from brats_jax.data import layouts
from brats_jax.errors import UserError
from brats_jax.evaluation import evaluate
from brats_jax.workdir import split_record

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
  flags.DEFINE_string("slices", None, "With --pictures: a grid of these axial slices per "
                      "drawn case (image, reference, prediction), e.g. 70:75 or 70,72.")
  flags.DEFINE_bool("per_slice", False, "With --pictures: each drawn case's slices, "
                    "tumour-free ones included, with false-positive slices marked.")
  flags.DEFINE_bool("rotating", False, "With --pictures: a rotating projection GIF of the "
                    "reference and predicted tumour per drawn case.")
  flags.DEFINE_string("workdir", None, "A training run, with --split: score that part of "
                      "its split against the references of the folder it was prepared from.")
  flags.DEFINE_enum("split", None, list(split_record.SPLITS),
                    "Score exactly this part of --workdir's split (WORKDIR/split.json).")
  flags.mark_flags_as_required(["predictions", "output"])


def main(argv):
  del argv
  references, case_ids = FLAGS.references, None
  if FLAGS.split:
    if not FLAGS.workdir:
      raise UserError("--split needs --workdir")
    references, case_ids = split_record.cases_of(FLAGS.workdir, FLAGS.split, references)
  elif not references:
    raise UserError("give --references (a raw dataset folder) or --workdir and --split")
  rows, summary = evaluate.evaluate_folder(
      FLAGS.predictions, references, FLAGS.output, FLAGS.lesion_wise, FLAGS.layout,
      FLAGS.pictures, FLAGS.max_pictures, FLAGS.gifs, case_ids=case_ids, slices=FLAGS.slices,
      per_slice=FLAGS.per_slice, rotating=FLAGS.rotating)
  print(f"{len(rows)} cases (mean over cases)")
  print(evaluate.format_table(summary))
  print(f"wrote {FLAGS.output}" + (f"; pictures in {FLAGS.pictures}" if FLAGS.pictures
                                    else ""))


def run():
  app.run(main, define_flags, jax_command=False)


if __name__ == "__main__":
  run()
