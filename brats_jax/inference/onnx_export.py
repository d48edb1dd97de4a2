"""A trained model for ONNX Runtime (brats-jax-export): a checkpoint's network as an ONNX
graph, with everything needed to use it in its metadata.

The graph maps a batch of windows [N, *patch, C] (float32, channels-last, N free) to the
model's probabilities [N, *patch, K] (its sigmoids or softmax applied). It is traced by
jax2onnx from the portable lowering of the network (lax's own convolutions: never the CPU's
depth-stacked form, the GPU's channel padding or the TPU's folded level), in float32 whatever
the run's compute dtype. The metadata (key METADATA_KEY, JSON) holds the inference contract's
part a deployment needs: the modalities in order, the preprocessing, the outputs and how they
become internal labels, the sliding window (patch, overlap, Gaussian sigma) and the
post-processing prediction would apply. docs/inference.md has a short function that segments
a case with ONNX Runtime alone from this.

jax2onnx is imported here only (the export extra): its own metadata pins an older
orbax-checkpoint than brats_jax needs, so it is installed without its dependencies. Every
shipped config exports (tests/inference/test_onnx_export.py): the layers that trip its
converters (max-pooling called positionally, jax.image.resize with a symbolic batch) are
written in forms it converts (blocks.py).
"""

import json
import logging

import jax
from flax import nnx

from brats_jax import files, platforms, tasks
from brats_jax import model as model_lib
from brats_jax.errors import UserError
from brats_jax.inference import ensemble, postprocessing
from brats_jax.inference.predict import postprocessing_rules
from brats_jax.inference.trained_model import load_trained_model

METADATA_KEY = "brats_jax"
METADATA_VERSION = 1
# The target no platform has: every per-platform form falls back to its portable default.
_PORTABLE = "onnx"


def network_function(config, variables):
  """probabilities(windows [N, *patch, C]) of a run's network (its config, and variables
  {"params", "model_state"}), in float32, as exported."""
  config = config.copy_and_resolve_references()
  config.model.dtype = "float32"
  mc = model_lib.model_config(config)
  graphdef = nnx.split(nnx.eval_shape(lambda: model_lib.create_model(mc, 0)))[0]
  net = nnx.merge(graphdef, variables["params"], variables["model_state"])
  activation = tasks.TASKS[config.loss.kind].activation

  def probabilities(windows):
    logits = net(windows, train=False)[0]
    return jax.nn.softmax(logits) if activation == "softmax" else jax.nn.sigmoid(logits)

  return probabilities


def metadata(model, rules: postprocessing.Rules) -> dict:
  config = model.config
  task = tasks.TASKS[config.loss.kind]
  return {"version": METADATA_VERSION, "checkpoint_step": model.step,
          "modalities": list(config.data.modalities),
          "preprocessing": model.contract["preprocessing"],
          "window": {"patch": list(config.data.patch_size), "overlap": config.eval.overlap,
                     "sigma_scale": config.eval.sigma_scale},
          "outputs": {"kind": config.loss.kind, "names": list(task.outputs),
                      "activation": task.activation,
                      # sigmoid tasks: painted in this order where p > 0.5 (later wins);
                      # softmax: the class index is the internal label
                      "paint": [list(p) for p in task.paint]},
          "internal_labels": {"0": "background", "1": "necrosis", "2": "edema",
                              "3": "enhancing", "5": "non-enhancing", "6": "tumour"},
          "postprocessing": rules.to_json()}


def to_onnx_graph(config, variables):
  """The ONNX graph (a ModelProto) of a run's network: windows -> probabilities."""
  from jax2onnx import to_onnx

  # jax2onnx logs every optional library it does not find (equinox, dm-pix), and onnx_ir
  # every shape value it leaves untyped: neither concerns this graph.
  for name in ("jax2onnx", "onnx_ir"):
    logging.getLogger(name).setLevel(logging.ERROR)
  patch = tuple(config.data.patch_size)
  with platforms.tracing_for(_PORTABLE):
    return to_onnx(network_function(config, variables),
                   [("N",) + patch + (len(config.data.modalities),)])


def export(workdir: str, output: str, checkpoint: str = "latest") -> dict:
  """Writes the checkpoint's network to `output` (.onnx, whole or not at all); returns its
  metadata. A folds parent or several runs cannot be one graph: export a member."""
  runs, decision_folder = ensemble.members([workdir])
  if len(runs) > 1:
    raise UserError(f"{workdir}: a cross-validation parent; export one fold "
                    f"({runs[0]}, ...), or each")
  try:
    import jax2onnx  # noqa: F401
  except ImportError:
    raise UserError("brats-jax-export needs jax2onnx, onnx and onnxruntime: pip install "
                    "'.[export]' and then pip install --no-deps jax2onnx==0.17.1") from None
  model = load_trained_model(workdir, checkpoint)
  rules, _ = postprocessing_rules(decision_folder, [model], True)
  info = metadata(model, rules)
  graph = to_onnx_graph(model.config, model.variables)
  entry = graph.metadata_props.add()
  entry.key, entry.value = METADATA_KEY, json.dumps(info)
  files.write_bytes(output, graph.SerializeToString())
  return info
