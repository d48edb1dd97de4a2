"""brats-jax-export: a trained run's network for ONNX Runtime.

  brats-jax-export --workdir=RUN --output=model.onnx [--checkpoint=best|latest|STEP]

The graph takes windows [N, *patch, C] (float32, channels-last) and returns probabilities;
its metadata holds the modalities, preprocessing, decoding, sliding window and
post-processing (docs/inference.md: segmenting a case with ONNX Runtime alone).
"""

import os

from absl import flags

from brats_jax.cli import app
from brats_jax.inference import onnx_export

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("workdir", None, "A training workdir (one run; a fold of a parent).")
  flags.DEFINE_string("output", None, "The .onnx file to write.")
  flags.DEFINE_string("checkpoint", "latest", "latest, best, or a step number.")
  flags.mark_flags_as_required(["workdir", "output"])


def main(argv):
  del argv
  info = onnx_export.export(FLAGS.workdir, FLAGS.output, FLAGS.checkpoint)
  window = "x".join(map(str, info["window"]["patch"] + [len(info["modalities"])]))
  print(f"wrote {FLAGS.output} ({os.path.getsize(FLAGS.output) / 2**20:.1f} MiB): checkpoint "
        f"step {info['checkpoint_step']}, windows N x {window} -> "
        f"{', '.join(info['outputs']['names'])} probabilities; post-processing: "
        f"{onnx_export.postprocessing.Rules.from_json(info['postprocessing']).describe()}")


def run():
  app.run(main, define_flags)


if __name__ == "__main__":
  run()
