"""WORKDIR/validation_predictions/: the run's last validation, kept per case: the model's
probabilities (float16), the reference labels and the voxel spacing, in the prepared store's
space. Post-processing is chosen on them (evaluation/choose_rules.py), for the run alone or
for the folds of a cross-validation together, without predicting anything again.

Each validation that may be the run's last rewrites the folder: the completion record
(COMPLETE) goes first and comes back last, so a folder without it is not read.
"""

import io
import json

import numpy as np

from brats_jax import files

FOLDER = "validation_predictions"
COMPLETE = "complete.json"


def folder(workdir: str) -> str:
  return files.join(workdir, FOLDER)


def start(workdir: str) -> None:
  """Before a validation writes its predictions: the folder is incomplete until finish."""
  files.remove_file(files.join(folder(workdir), COMPLETE))
  files.makedirs(folder(workdir))


def save(workdir: str, case_id: str, probabilities: np.ndarray, labels: np.ndarray,
         spacing) -> None:
  buffer = io.BytesIO()
  np.savez_compressed(buffer, probabilities=probabilities.astype(np.float16),
                      labels=labels.astype(np.uint8), spacing=np.asarray(spacing, np.float64))
  files.write_bytes(files.join(folder(workdir), f"{case_id}.npz"), buffer.getvalue())


def finish(workdir: str, step: int, case_ids, kind: str) -> None:
  files.write_json(files.join(folder(workdir), COMPLETE),
                   {"step": int(step), "case_ids": list(case_ids), "loss_kind": kind})


def record(workdir: str) -> dict | None:
  """{"step", "case_ids", "loss_kind"} of the kept validation, or None if there is none."""
  marker = files.join(folder(workdir), COMPLETE)
  return json.loads(files.read_text(marker)) if files.exists(marker) else None


def load(workdir: str, case_id: str) -> tuple:
  """(probabilities [*S, K] float32, labels [*S] uint8, spacing) of one kept case."""
  with np.load(io.BytesIO(files.read_bytes(files.join(folder(workdir), f"{case_id}.npz")))) as f:
    return f["probabilities"].astype(np.float32), f["labels"], tuple(f["spacing"])
