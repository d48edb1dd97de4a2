"""brats-jax-prepare: a raw dataset folder, once, into a prepared store.

  brats-jax-prepare --input=RAW_DIR --output=STORE [--layout=brats2021|...] [--overwrite]
"""

from absl import flags

from brats_jax.cli import app
from brats_jax.data import layouts, prepare, preprocessing

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("input", None, "Raw dataset folder.")
  flags.DEFINE_string("output", None, "Store to write.")
  flags.DEFINE_enum("layout", None, list(layouts.LAYOUTS), "Source layout; detected if unset.")
  flags.DEFINE_enum("dtype", "float16", ["float16", "bfloat16"], "Stored image dtype.")
  flags.DEFINE_integer("num_workers", 4, "Cases processed in parallel.")
  flags.DEFINE_bool("skip_bad", False, "Report bad cases and go on instead of stopping.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing store.")
  flags.DEFINE_integer("num_folds", 5, "Cross-validation folds recorded in the manifest.")
  flags.DEFINE_integer("inner_chunk", 32, "Edge of the inner (read) chunks in voxels.")
  flags.DEFINE_integer("fg_per_class", 10_000, "Foreground locations kept per label and case.")
  flags.DEFINE_enum("crop", "brain", list(preprocessing.CROPS),
                    "brain: to the nonzero bounding box; centre: a --crop_shape box.")
  flags.DEFINE_list("crop_shape", None, "Box of crop=centre, e.g. 144,224,224.")
  flags.DEFINE_enum("normalisation", "zscore", list(preprocessing.NORMALISATIONS),
                    "Per channel: zscore over brain voxels, minmax, divide (by --divide_by).")
  flags.DEFINE_float("divide_by", 255.0, "The divisor of normalisation=divide.")
  flags.DEFINE_float("smooth_sigma", 0.0, "Gaussian smoothing (voxels; 0: none).")
  flags.DEFINE_float("sharpen", 0.0, "Laplacian sharpening weight (x - w * laplace(x)).")
  flags.DEFINE_list("resize_shape", None, "Resample to this shape after cropping.")
  flags.mark_flags_as_required(["input", "output"])


def main(argv):
  del argv

  def shape(values):
    return [int(v) for v in values] if values else None

  manifest = prepare.prepare(
      FLAGS.input, FLAGS.output, FLAGS.layout, FLAGS.dtype, FLAGS.num_workers, FLAGS.skip_bad,
      FLAGS.overwrite, FLAGS.num_folds, FLAGS.inner_chunk, FLAGS.fg_per_class, progress=True,
      crop=FLAGS.crop, crop_shape=shape(FLAGS.crop_shape), normalisation=FLAGS.normalisation,
      divide_by=FLAGS.divide_by, smooth_sigma=FLAGS.smooth_sigma, sharpen=FLAGS.sharpen,
      resize_shape=shape(FLAGS.resize_shape))
  print(f"prepared {len(manifest['cases'])} {manifest['layout']} cases into {FLAGS.output}"
        + (f" ({len(manifest['skipped'])} skipped)" if manifest["skipped"] else ""))


def run():
  app.run(main, define_flags, jax_command=False)


if __name__ == "__main__":
  run()
