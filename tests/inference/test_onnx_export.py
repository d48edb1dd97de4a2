"""brats-jax-export: the network as an ONNX graph that ONNX Runtime runs as JAX does, and the
documented ONNX Runtime function (docs/inference.md) segmenting whole cases as
brats-jax-predict does."""

import glob
import json
import os
import re
import subprocess
import sys

import jax
import nibabel as nib
import numpy as np
import onnxruntime as ort
import pytest
from flax import nnx

from brats_jax import model as model_lib
from brats_jax import tasks
from brats_jax.config import io as config_io
from brats_jax.data import discovery
from brats_jax.errors import UserError
from brats_jax.inference import onnx_export, predict
from brats_jax.train import loop

from conftest import ROOT, tiny_config


def _session(graph) -> ort.InferenceSession:
  return ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])


SEEDS = sorted(os.path.relpath(p, os.path.join(ROOT, "configs"))
               for p in glob.glob(os.path.join(ROOT, "configs", "seeds", "*.py")))


@pytest.mark.parametrize("name", ["demo.py"] + [
    pytest.param(name, marks=pytest.mark.slow) for name in ["default.py"] + SEEDS])
def test_onnx_runtime_computes_what_jax_computes(name):
  """Every shipped config's network (the demo's in the fast tier), float32, random windows
  of the smallest patch it takes: the graph's probabilities equal those JAX computes on
  this machine to 1e-4 (measured: at most 1.6e-5, the default recipe's)."""
  config = config_io.load_config_file(os.path.join(ROOT, "configs", name))
  dims, model = len(config.data.patch_size), config.model
  smallest = 16 if model.architecture == "transunet" else 2**(model.depth - 1)
  config.data.patch_size = patch = (max(smallest, 16),) * dims
  net = model_lib.create_model(model_lib.model_config(config), 0)
  variables = {"params": nnx.state(net, nnx.Param),
               "model_state": nnx.state(net, nnx.Not(nnx.Param))}
  windows = np.random.default_rng(0).standard_normal(
      (2,) + patch + (len(config.data.modalities),)).astype(np.float32)
  session = _session(onnx_export.to_onnx_graph(config, variables))
  ours = session.run(None, {session.get_inputs()[0].name: windows})[0]
  theirs = np.asarray(jax.jit(onnx_export.network_function(config, variables))(windows))
  assert ours.shape == theirs.shape == (2,) + patch + (tasks.num_outputs(config.loss.kind),)
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
  assert 0.01 < theirs.std()  # the outputs vary: the comparison is not of constants
  one = session.run(None, {session.get_inputs()[0].name: windows[:1]})[0]  # N is free
  np.testing.assert_allclose(one, ours[:1], rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def trained(tiny_store, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("onnx_run"))
  config = tiny_config(tiny_store)
  config.train.num_steps = 6
  loop.train_and_validate(config, workdir)
  return workdir


def _documented_function():
  """segment_with_onnx, as docs/inference.md gives it."""
  with open(os.path.join(ROOT, "docs", "inference.md")) as f:
    text = f.read()
  code = re.search(r"```python\n(.*?def segment_with_onnx.*?)```", text, re.S).group(1)
  namespace = {}
  exec(compile(code, "docs/inference.md", "exec"), namespace)  # noqa: S102 (our own docs)
  return namespace["segment_with_onnx"]


def test_exported_model_segments_cases_as_predict_does(trained, raw_datasets, tmp_path):
  model_path = str(tmp_path / "model.onnx")
  result = subprocess.run([sys.executable, "-m", "brats_jax.cli.export", f"--workdir={trained}",
                           f"--output={model_path}"], capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert f"wrote {model_path}" in result.stdout
  session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
  meta = json.loads(session.get_modelmeta().custom_metadata_map["brats_jax"])
  assert meta["modalities"] == ["flair", "t1", "t1ce", "t2"]
  assert meta["outputs"]["names"] == ["WT", "TC", "ET"] and meta["window"]["patch"] == [16] * 3
  decision = predict.postprocessing.load_decision(trained)
  assert meta["postprocessing"] == decision.to_json()

  raw = raw_datasets["brats2021"]
  predicted = str(tmp_path / "predict")
  predict.predict_folder(trained, raw, predicted, progress=False)
  segment_with_onnx = _documented_function()
  for case in discovery.find_cases(raw):
    out = str(tmp_path / f"{case.case_id}_onnx.nii.gz")
    segment_with_onnx(model_path, case.images, out)
    ours = nib.load(out)
    theirs = nib.load(os.path.join(predicted, f"{case.case_id}.nii.gz"))
    np.testing.assert_allclose(ours.affine, theirs.affine)
    differing = int((np.asarray(ours.dataobj) != np.asarray(theirs.dataobj)).sum())
    assert differing == 0, f"{case.case_id}: {differing} voxels differ"
    assert np.asarray(theirs.dataobj).max() > 0  # the cases have predicted tumour


def test_a_folds_parent_is_exported_one_fold_at_a_time(tmp_path):
  for fold in (0, 1):
    os.makedirs(tmp_path / f"fold_{fold}" / "checkpoints")
  with pytest.raises(UserError, match="cross-validation parent; export one fold"):
    onnx_export.export(str(tmp_path), str(tmp_path / "model.onnx"))
  assert not os.path.exists(tmp_path / "model.onnx")
