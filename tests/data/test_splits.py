"""Validation splits (a separate store, a seeded held-out fraction, a fold) and early stopping."""

import json
import os
import shutil

import pytest

from brats_jax.config import checks
from brats_jax.data import prepare, splits, synth
from brats_jax.data.store import PreparedStore
from brats_jax.errors import ConfigError, DataError
from brats_jax.train import loop, validation
from brats_jax.workdir import contract
from brats_jax.workdir.checkpoints import Checkpoints

from conftest import TINY_SHAPE, tiny_config


@pytest.fixture(scope="module")
def train_and_val_stores(tmp_path_factory):
  """(training store of 6 cases, validation store of 2 other cases, a copy of the
  validation cases prepared with min-max normalisation instead)."""
  root = tmp_path_factory.mktemp("splits")
  raw, val_raw = str(root / "raw"), str(root / "val_raw")
  synth.write_dataset(raw, "brats2021", num_cases=8, shape=TINY_SHAPE, seed=5)
  os.makedirs(val_raw)
  for name in sorted(os.listdir(raw))[-2:]:
    shutil.move(os.path.join(raw, name), os.path.join(val_raw, name))
  stores = [str(root / n) for n in ("store", "val_store", "val_minmax")]
  prepare.prepare(raw, stores[0], num_workers=2, fg_per_class=200)
  prepare.prepare(val_raw, stores[1], num_workers=2, fg_per_class=200)
  prepare.prepare(val_raw, stores[2], num_workers=2, fg_per_class=200, normalisation="minmax")
  return stores


def test_folds_share_out_each_kind_of_case():
  """A rare kind of case (here 5 tumours without enhancing tumour among 30) lands in as many
  folds as it can, not in one by chance; fold sizes stay within one; the same ids give the
  same folds."""
  ids = [f"case{i:02d}" for i in range(30)]
  strata = ["edema,necrosis" if i % 6 == 0 else "edema,enhancing,necrosis" for i in range(30)]
  folds = prepare.assign_folds(ids, 5, strata)
  rare = [folds[i] for i, s in zip(ids, strata) if s == "edema,necrosis"]
  assert sorted(rare) == [0, 1, 2, 3, 4]
  assert [list(folds.values()).count(f) for f in range(5)] == [6] * 5
  assert prepare.assign_folds(ids, 5, strata) == folds
  unstratified = prepare.assign_folds(ids, 5)
  assert sorted(unstratified.values()) == sorted(folds.values())
  # Prepared stores record folds stratified by the labels each case holds.
  assert prepare.case_stratum({"has_label": True, "voxels_per_label": {
      "necrosis": 3, "edema": 9, "enhancing": 0, "other": 0}}) == "edema,necrosis"
  assert prepare.case_stratum({"has_label": False}) == "unlabelled"


def test_prepared_folds_are_stratified(tiny_store):
  """prepare deals folds by each case's stratum (in this store one case has no enhancing
  tumour, which moves the deal: the folds differ from an unstratified deal)."""
  manifest = PreparedStore(tiny_store).manifest
  ids = [case["case_id"] for case in manifest["cases"]]
  strata = [prepare.case_stratum(case) for case in manifest["cases"]]
  recorded = {case["case_id"]: case["fold"] for case in manifest["cases"]}
  assert recorded == prepare.assign_folds(ids, manifest["num_folds"], strata)
  assert recorded != prepare.assign_folds(ids, manifest["num_folds"])


def test_held_out_cases_are_a_function_of_the_seed():
  ids = [f"case{i:02d}" for i in range(20)]
  chosen = splits.held_out(ids, 0.2, seed=0)
  assert len(chosen) == 4 and set(chosen) <= set(ids)
  assert splits.held_out(list(reversed(ids)), 0.2, seed=0) == chosen  # order of listing
  assert splits.held_out(ids, 0.2, seed=1) != chosen
  assert len(splits.held_out(ids, 0.001, seed=0)) == 1  # at least one validates
  assert len(splits.held_out(ids[:2], 0.9, seed=0)) == 1  # at least one trains


def test_fraction_store_and_fold_splits(tiny_store, train_and_val_stores):
  store = PreparedStore(tiny_store)
  config = tiny_config(tiny_store)
  config.data.val_fraction = 0.3
  split = splits.split(config, store)
  assert len(split.val_ids) == 3 and len(split.train_ids) == 7
  assert not set(split.val_ids) & set(split.train_ids)
  config.data.split_seed = 1
  assert splits.split(config, store).val_ids != split.val_ids

  config = tiny_config(tiny_store)  # fold 0: two of the ten cases
  split = splits.split(config, store)
  assert len(split.val_ids) == 2 and split.val_store is store

  train_store, val_store, val_minmax = train_and_val_stores
  config = tiny_config(train_store)
  config.data.val_store = val_store
  split = splits.split(config, PreparedStore(train_store))
  assert len(split.train_ids) == 6 and len(split.val_ids) == 2  # folds ignored
  assert split.val_store.path.rstrip("/") == val_store.rstrip("/")
  config.data.val_store = val_minmax
  with pytest.raises(DataError, match="val_minmax: prepared with .*minmax.* prepare both"):
    splits.split(config, PreparedStore(train_store))
  config.data.val_store = train_store  # the training cases themselves
  with pytest.raises(DataError, match="is also a training case"):
    splits.split(config, PreparedStore(train_store))
  config.data.val_fraction = 0.2  # and a fraction as well: which one?
  with pytest.raises(ConfigError, match="data.val_fraction=0.2: validation comes from "
                                        "data.val_store"):
    checks.check_config(config)


def test_early_stop_reason():
  history = [{"step": 2, "mean_dice": 0.5}, {"step": 4, "mean_dice": 0.7},
             {"step": 6, "mean_dice": 0.7}, {"step": 8, "mean_dice": 0.6}]
  assert validation.early_stop_reason(history[:2], 1) is None
  assert "2 validations without beating mean Dice 0.7000 of step 4" in \
      validation.early_stop_reason(history, 2)  # a tie is not an improvement
  assert validation.early_stop_reason(history, 3) is None
  assert validation.early_stop_reason(history, 0) is None


@pytest.mark.slow  # three training launches with a validation every step
def test_early_stopping_on_a_validation_store_stays_stopped(train_and_val_stores, tmp_path):
  train_store, val_store, _ = train_and_val_stores
  config = tiny_config(train_store)
  config.data.val_store = val_store
  config.train.learning_rate = 1e-12  # nothing changes, so no validation improves on the first
  config.eval.every_steps = 1
  config.train.early_stopping_patience = 2
  workdir = str(tmp_path / "run")
  loop.train_and_validate(config, workdir)
  checkpoints = Checkpoints(workdir, read_only=True)
  assert checkpoints.latest_step() == 3  # validations at 1, 2, 3: two without improvement
  assert [v["step"] for v in checkpoints.contract(3)["validations"]] == [1, 2, 3]
  checkpoints.close()
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert max(r["step"] for r in records) == 3 and "val/iou_WT" in records[-1]
  assert {"val/loss", "val/precision_WT", "val/recall_ET"} <= set(records[-1])
  train_records = [r for r in records if "train/loss" in r]
  assert {"train/precision_TC", "train/recall_WT", "train/epoch"} <= set(train_records[-1])
  # The split names the validation store's cases and where they came from.
  with open(os.path.join(workdir, "split.json")) as f:
    split = json.load(f)
  assert split["validation"]["store"] == val_store
  assert split["validation"]["case_ids"] == PreparedStore(val_store).case_ids()
  assert all(os.path.exists(split["validation"]["sources"][c]["label"])
             for c in split["validation"]["case_ids"])

  loop.train_and_validate(config, workdir)  # the same command: still stopped
  checkpoints = Checkpoints(workdir, read_only=True)
  assert checkpoints.latest_step() == 3
  checkpoints.close()

  config.train.early_stopping_patience = 10  # more patience: training goes on
  config.train.num_steps = 5
  loop.train_and_validate(config, workdir)
  checkpoints = Checkpoints(workdir, read_only=True)
  assert checkpoints.latest_step() == 5
  checkpoints.close()


def test_a_contract_saved_before_the_split_fields_still_reads():
  config = tiny_config("store")
  saved = config.to_dict()
  for field in contract.ADDED_FIELDS:
    group, name = field.split(".")
    del saved[group][name]
  restored = contract.config_of({"config": saved})
  assert restored.to_dict() == config.to_dict()
  saved_run = {"config": saved, "training_data": {"train_cases_crc32": 7, "num_train_cases": 1}}
  assert contract.check_relaunch(saved_run, config, 7, "run") == {}  # a relaunch accepts it
