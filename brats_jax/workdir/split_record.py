"""WORKDIR/split.json: which cases a run trained on and which it validated on, with the raw
files each came from, so that its held-out cases can be predicted and scored by name:

  brats-jax-predict --workdir=RUN --split=validation --output=PRED
  brats-jax-evaluate --workdir=RUN --split=validation --predictions=PRED --output=scores.csv

The record is written when a run starts (the split is a pure function of the store and the
config: data/splits.py); the contract of every checkpoint carries both parts' case ids.
"""

import json

from brats_jax import files
from brats_jax.errors import ConfigError, DataError

SPLIT_FILE = "split.json"
SPLITS = ("train", "validation")


def _part(store, case_ids) -> dict:
  return {"store": store.path, "source": store.manifest.get("source"),
          "case_ids": list(case_ids),
          "sources": {c: {"images": store.cases[c]["images"], "label": store.cases[c]["label"]}
                      for c in case_ids}}


def record(cases, store, description: str) -> dict:
  """The split record of a run (cases: data/splits.Split)."""
  return {"description": description, "train": _part(store, cases.train_ids),
          "validation": _part(cases.val_store, cases.val_ids)}


def write(workdir: str, split: dict) -> None:
  files.write_text(files.join(workdir, SPLIT_FILE), json.dumps(split, indent=1))


def read(workdir: str, which: str) -> dict:
  """One part of a run's split: {"store", "source" (the raw folder prepared), "case_ids",
  "sources"}; a ConfigError if the run has no record or that part is empty."""
  path = files.join(workdir, SPLIT_FILE)
  if not files.exists(path):
    raise ConfigError(f"{path}: missing; --split needs a run trained by this version (it "
                      "writes the split when it starts)")
  part = json.loads(files.read_text(path))[which]
  if not part["case_ids"]:
    raise ConfigError(f"{path}: the run has no {which} cases")
  return part


def cases_of(workdir: str, which: str, folder: str | None) -> tuple:
  """(raw folder, case ids) of a part of a run's split: `folder` if given, else the one
  its store was prepared from."""
  part = read(workdir, which)
  return folder or raw_folder(part, workdir), part["case_ids"]


def raw_folder(part: dict, where: str) -> str:
  """The raw dataset folder a split part's store was prepared from."""
  source = part.get("source")
  if not source or not files.isdir(source):
    raise DataError(f"{where}: the raw folder {source} the store {part['store']} was prepared "
                    "from is gone; give it with --input / --references")
  return source
