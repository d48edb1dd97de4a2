"""The checkpoint is the contract: relaunch rules, prediction from the contract alone, and
one-line refusals that leave the workdir as it was."""

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

from brats_jax.config import checks
from brats_jax.errors import CheckpointError, ConfigError
from brats_jax.inference import predict, trained_model
from brats_jax.train import loop
from brats_jax.workdir.checkpoints import Checkpoints

from conftest import ROOT, tiny_config


def _fingerprint(folder) -> dict:
  """{relative path: md5} of every file below folder."""
  prints = {}
  for parent, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(parent, name)
      with open(path, "rb") as f:
        prints[os.path.relpath(path, folder)] = hashlib.md5(f.read()).hexdigest()
  return prints


@pytest.fixture(scope="module")
def trained(tiny_store, tmp_path_factory):
  """A 4-step run with validation (so its contract holds a chosen ET threshold)."""
  workdir = str(tmp_path_factory.mktemp("contract") / "run")
  config = tiny_config(tiny_store)
  config.train.num_steps = 4
  config.eval.max_cases = 1
  loop.train_and_validate(config, workdir)
  return workdir


def _copy(workdir, tmp_path) -> str:
  copy = str(tmp_path / "run")
  shutil.copytree(workdir, copy)
  return copy


@pytest.mark.parametrize("field,value", [("model.base_filters", 8), ("loss.kind", "labels"),
                                         ("data.patch_size", (8, 8, 8)), ("seed", 1),
                                         ("train.optimizer", "sgd"), ("augment.enabled", False)])
def test_a_relaunch_that_changes_the_run_is_refused_and_touches_nothing(
    trained, tiny_store, tmp_path, field, value):
  workdir = _copy(trained, tmp_path)
  before = _fingerprint(workdir)
  config = tiny_config(tiny_store)
  config.train.num_steps = 6
  section, name = field.rsplit(".", 1) if "." in field else (None, field)
  setattr(config.get(section) if section else config, name, value)
  with pytest.raises(ConfigError) as error:
    loop.train_and_validate(config, workdir)
  message = str(error.value)
  assert field in message and "\n" not in message and "new --workdir" in message
  assert "train.num_steps" not in message  # accepted changes are not listed as refused
  assert _fingerprint(workdir) == before


def test_the_command_line_refusal_is_one_line_exit_2_and_prediction_still_works(
    trained, tiny_store, tmp_path, raw_datasets):
  workdir = _copy(trained, tmp_path)
  before = _fingerprint(workdir)
  result = subprocess.run(
      [sys.executable, "-m", "brats_jax.cli.train", f"--config={ROOT}/configs/tiny.py",
       f"--workdir={workdir}", f"--config.data.store={tiny_store}",
       "--config.model.base_filters=8"], capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr
  assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
  assert "model.base_filters 4 -> 8" in result.stderr
  assert _fingerprint(workdir) == before
  timings, _ = predict.predict_folder(workdir, raw_datasets["brats2021"], str(tmp_path / "p"),
                                      progress=False)
  assert len(timings) == 3


def test_a_relaunch_with_more_steps_is_accepted_and_recorded(trained, tiny_store, tmp_path):
  workdir = _copy(trained, tmp_path)
  config = tiny_config(tiny_store)
  config.train.num_steps = 6
  config.eval.max_cases = 1
  config.log_every_steps = 1
  config.data.batch_per_device = 2
  loop.train_and_validate(config, workdir)
  checkpoints = Checkpoints(workdir, read_only=True)
  contract = checkpoints.contract(checkpoints.latest_step())
  assert [h["start_step"] for h in contract["history"]] == [0, 4]
  assert contract["history"][1]["changes"] == {
      "data.batch_per_device": [1, 2], "log_every_steps": [2, 1], "train.num_steps": [4, 6]}
  assert contract["config"]["train"]["num_steps"] == 6


def test_other_training_cases_are_refused(trained, tiny_store, tmp_path):
  workdir = _copy(trained, tmp_path)
  config = tiny_config(tiny_store)
  config.train.num_steps = 6
  config.data.val_fold = 1  # a validation fold is data: it is refused as a field
  with pytest.raises(ConfigError, match="data.val_fold 0 -> 1"):
    loop.train_and_validate(config, workdir)


def test_prediction_needs_only_the_model_and_the_contract(trained, raw_datasets, tmp_path):
  """No optimiser state, config.json or metrics log is read: damage them all."""
  workdir = _copy(trained, tmp_path)
  checkpoints = Checkpoints(workdir, read_only=True)
  step = checkpoints.latest_step()
  contract = checkpoints.contract(step)
  assert contract["et_threshold"]["chosen_at_step"] == step
  assert contract["preprocessing"]["normalisation"] == "zscore"
  for parent, _, files in os.walk(os.path.join(workdir, "checkpoints", str(step), "optimizer")):
    for name in files:
      with open(os.path.join(parent, name), "wb") as f:
        f.write(b"\0garbage")
  os.remove(os.path.join(workdir, "config.json"))
  os.remove(os.path.join(workdir, "metrics.jsonl"))
  model = trained_model.load_trained_model(workdir)
  assert model.step == step and model.et_threshold() == contract["et_threshold"]["voxels"]
  assert set(model.variables) == {"params", "model_state"}
  out = str(tmp_path / "pred")
  timings, _ = predict.predict_folder(workdir, raw_datasets["msd"], out, progress=False)
  assert sorted(os.listdir(out)) == ["BRATS_001.nii.gz", "BRATS_002.nii.gz", "BRATS_003.nii.gz"]


def test_a_checkpoint_of_the_previous_format_gets_one_line(trained, tiny_store, raw_datasets,
                                                          tmp_path):
  """brats_jax 0.1 checkpoints held one "state" item and no contract."""
  workdir = _copy(trained, tmp_path)
  for step in ("2", "4"):
    step_dir = os.path.join(workdir, "checkpoints", step)
    os.rename(os.path.join(step_dir, "model"), os.path.join(step_dir, "state"))
    shutil.rmtree(os.path.join(step_dir, "contract"))
  before = _fingerprint(workdir)
  with pytest.raises(CheckpointError, match="a checkpoint of brats_jax 0.1") as error:
    predict.predict_folder(workdir, raw_datasets["msd"], str(tmp_path / "p"), progress=False)
  assert "\n" not in str(error.value)
  config = tiny_config(tiny_store)
  config.train.num_steps = 6
  with pytest.raises(CheckpointError, match="a checkpoint of brats_jax 0.1"):
    loop.train_and_validate(config, workdir)
  assert _fingerprint(workdir) == before


def test_refused_configs_leave_no_workdir(tiny_store, tmp_path):
  workdir = str(tmp_path / "new")
  config = tiny_config(tiny_store)
  config.data.patch_size = (16, 16, 10)  # the command checks this before anything runs
  with pytest.raises(ConfigError, match=r"nearest valid: \(16, 16, 8\) or \(16, 16, 12\)"):
    checks.check_config(config)
  config = tiny_config(tiny_store)
  config.data.val_fold = 9
  with pytest.raises(ConfigError, match="data.val_fold=9: the store .* has folds 0-4"):
    loop.train_and_validate(config, workdir)
  config = tiny_config(tiny_store)
  config.train.device_memory_gib = 0.001  # the ahead-of-time memory check refuses too
  with pytest.raises(ConfigError, match="GiB over"):
    loop.train_and_validate(config, workdir)
  assert not os.path.exists(workdir)
