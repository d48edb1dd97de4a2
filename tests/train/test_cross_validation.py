"""Cross-validation end to end: every fold of a store trained into its own workdir, their
validation predictions kept, post-processing chosen on all of them, and the folds predicting
as one ensemble whose probabilities are the mean of its members'."""

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from brats_jax.data import discovery, prepare, synth
from brats_jax.errors import ConfigError
from brats_jax.inference import ensemble, postprocessing, predict
from brats_jax.train import cross_validation
from brats_jax.workdir import folds, validation_predictions

from conftest import TINY_SHAPE, tiny_config


@pytest.fixture(scope="module")
def two_fold_run(tmp_path_factory):
  """(parent, raw held-out folder, config) of a 2-fold cross-validation of 6 tiny cases."""
  root = tmp_path_factory.mktemp("cv")
  synth.write_dataset(str(root / "raw"), "brats2021", num_cases=6, shape=TINY_SHAPE, seed=4)
  synth.write_dataset(str(root / "heldout"), "brats2021", num_cases=2, shape=TINY_SHAPE,
                      seed=5)
  prepare.prepare(str(root / "raw"), str(root / "store"), num_workers=2, num_folds=2,
                  fg_per_class=500)
  config = tiny_config(str(root / "store"))
  config.train.num_steps = 4
  summaries = cross_validation.train_folds(config, str(root / "cv"), "all")
  assert sorted(summaries) == [0, 1] and all(s["mean_dice"] >= 0 for s in summaries.values())
  return str(root / "cv"), str(root / "heldout"), config


def test_every_fold_keeps_its_validation_and_the_parent_chooses_on_all(two_fold_run):
  parent, _, _ = two_fold_run
  runs = folds.fold_workdirs(parent)
  assert runs == [folds.fold_workdir(parent, 0), folds.fold_workdir(parent, 1)]
  kept = [validation_predictions.record(run) for run in runs]
  assert [k["step"] for k in kept] == [4, 4]
  validated = sorted(c for k in kept for c in k["case_ids"])
  assert len(validated) == 6 == len(set(validated))  # each case validated by one fold
  probabilities, labels, spacing = validation_predictions.load(runs[0], kept[0]["case_ids"][0])
  assert probabilities.shape == labels.shape + (3,) and len(spacing) == 3
  decision = postprocessing.read_decision(parent)
  assert decision["num_cases"] == 6 and set(decision["decided_on"]["runs"]) == set(runs)
  assert postprocessing.read_decision(runs[0])["num_cases"] == len(kept[0]["case_ids"])
  assert decision["after"]["mean_dice"] >= decision["before"]["mean_dice"]


def test_the_folds_predict_as_one_ensemble(two_fold_run, tmp_path):
  """The parent's prediction averages the folds' probabilities (16-bit files: 1e-3)."""
  parent, heldout, _ = two_fold_run
  members = folds.fold_workdirs(parent)
  outputs = {}
  for name, workdir in [("ensemble", parent), ("explicit", members)] + [
      (f"fold{i}", [run]) for i, run in enumerate(members)]:
    outputs[name] = str(tmp_path / name)
    predict.predict_folder(workdir, heldout, outputs[name], progress=False,
                           save_probabilities=True, postprocess=False)
  for case in discovery.find_cases(heldout):
    def probabilities(name, case_id=case.case_id):
      path = predict.probabilities_path(outputs[name], case_id)
      return np.asarray(nib.load(path).dataobj, np.float32)

    mean = (probabilities("fold0") + probabilities("fold1")) / 2
    np.testing.assert_allclose(probabilities("ensemble"), mean, atol=1e-3)
    np.testing.assert_array_equal(probabilities("explicit"), probabilities("ensemble"))


def test_the_ensemble_command_applies_the_folds_decision_and_says_so(two_fold_run, tmp_path):
  parent, heldout, _ = two_fold_run
  result = subprocess.run(
      [sys.executable, "-m", "brats_jax.cli.predict", f"--workdir={parent}",
       f"--input={heldout}", f"--output={tmp_path / 'out'}"],
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "an ensemble of 2 runs" in result.stderr
  assert (f"post-processing (chosen on validation, "
          f"{os.path.join(parent, postprocessing.DECISION_FILE)})") in result.stderr
  assert len(os.listdir(tmp_path / "out")) == 2


def test_members_that_disagree_are_refused_in_one_line(two_fold_run):
  parent, _, _ = two_fold_run
  runs = folds.fold_workdirs(parent)
  contracts = {run: predict.read_contract(run)[1] for run in runs}
  ensemble.check_agreement(contracts)  # the folds agree
  for field, value in (("modalities", ["flair"]), ("kind", "softmax")):
    other = json.loads(json.dumps(contracts[runs[1]]))
    other["config"]["data" if field == "modalities" else "loss"][field] = value
    with pytest.raises(ConfigError, match=f"{runs[1]}: .*{field} is .*must agree"):
      ensemble.check_agreement({runs[0]: contracts[runs[0]], runs[1]: other})
  other = {**contracts[runs[1]], "preprocessing": {"crop": "none"}}
  with pytest.raises(ConfigError, match="prepared differently"):
    ensemble.check_agreement({runs[0]: contracts[runs[0]], runs[1]: other})


def test_each_fold_has_its_own_seed_and_older_folds_keep_theirs(two_fold_run, tmp_path):
  parent, _, config = two_fold_run
  runs = folds.fold_workdirs(parent)
  seeds = [predict.read_contract(run)[1]["config"]["seed"] for run in runs]
  assert seeds == [config.seed, config.seed + 1]
  assert [json.load(open(os.path.join(run, "config.json")))["seed"] for run in runs] == seeds
  older = runs[0]  # checkpoints saved with the shared seed, as every fold's were before
  assert cross_validation.fold_seed(config.seed, older, 1) == config.seed
  assert cross_validation.fold_seed(config.seed + 7, older, 1) == config.seed + 8
  assert cross_validation.fold_seed(config.seed, str(tmp_path / "new"), 1) == config.seed + 1
  other = config.copy_and_resolve_references()
  other.seed = config.seed + 7
  with pytest.raises(ConfigError, match="seed"):  # a relaunch cannot change a fold's seed
    cross_validation.train_folds(other, parent, "1")


def test_folds_refuse_another_validation_and_unknown_folds(two_fold_run):
  parent, _, config = two_fold_run
  other = config.copy_and_resolve_references()
  other.data.val_fraction = 0.2
  with pytest.raises(ConfigError, match="data.val_fraction is set"):
    cross_validation.train_folds(other, parent, "all")
  with pytest.raises(ConfigError, match="folds 0-1"):
    cross_validation.train_folds(config, parent, "2")
  with pytest.raises(ConfigError, match="expected all or fold numbers"):
    cross_validation.parse_folds("first", 2)
