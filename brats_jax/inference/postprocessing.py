"""Post-processing of a case's decoded labels by rules chosen on validation cases.

nnU-Net's recipe: try each rule on the cross-validation predictions, keep it only where it
helps (evaluation/choose_rules.py decides; this module applies). The rules, in the order
they apply to internal labels (NCR, ED, ET nested as WT ⊇ TC ⊇ ET):

  et_threshold N       an ET prediction of fewer than N voxels in all becomes necrosis (the
                       BraTS tradition: a few enhancing voxels are more often wrong than right)
  WT largest | min N   whole-tumour components (26-connected): all but the largest, or those
                       under N voxels, become background
  TC largest | min N   tumour-core components (NCR, ET): removed ones become edema, so the
                       whole tumour is unchanged
  ET largest | min N   enhancing components: removed ones become necrosis, so the core is
                       unchanged

Voxels are counted in the model's space (the prepared store's crop and spacing), where the
rules were chosen. The decision is a small JSON file (DECISION_FILE) in a run's workdir or in
a folds parent, with the before/after scores it was kept on.
"""

import dataclasses
import json

import numpy as np
from scipy import ndimage

from brats_jax import files, tasks
from brats_jax.errors import DataError
from brats_jax.labels import BACKGROUND, ED, NCR, REGION_LABELS

DECISION_FILE = "postprocessing.json"
# What a region's removed components become (see the module docstring).
_REMOVED_BECOME = {"WT": BACKGROUND, "TC": ED, "ET": NCR}


@dataclasses.dataclass(frozen=True)
class Rules:
  """et_threshold: voxels (0: none); components: ((region, voxels), ...) in the order they
  apply, voxels 0 meaning "only the largest component"."""

  et_threshold: int = 0
  components: tuple = ()

  def describe(self) -> str:
    parts = [f"ET under {self.et_threshold} voxels becomes necrosis"] \
        if self.et_threshold else []
    for region, voxels in self.components:
      parts.append(f"{region}: only the largest component" if not voxels
                   else f"{region}: components under {voxels} voxels removed")
    return "; ".join(parts) or "none"

  def to_json(self) -> dict:
    return {"et_threshold": self.et_threshold,
            "components": [{"region": r, "min_voxels": v} for r, v in self.components]}

  @classmethod
  def from_json(cls, data: dict) -> "Rules":
    return cls(int(data["et_threshold"]),
               tuple((c["region"], int(c["min_voxels"])) for c in data["components"]))


def remove_components(labels: np.ndarray, region: str, min_voxels: int) -> np.ndarray:
  """The region's connected components (26-connected) of fewer than min_voxels voxels, or
  with min_voxels 0 all but the largest, relabelled as what the region's removed voxels
  become. A region with one component or none is unchanged."""
  mask = np.isin(labels, REGION_LABELS[region])
  structure = ndimage.generate_binary_structure(labels.ndim, labels.ndim)
  components, count = ndimage.label(mask, structure)
  if count == 0 or (count == 1 and not min_voxels):
    return labels
  sizes = np.bincount(components.ravel())
  sizes[0] = 0
  removed = sizes < min_voxels if min_voxels else np.arange(len(sizes)) != np.argmax(sizes)
  removed[0] = False
  if not removed.any():
    return labels
  return np.where(removed[components], np.uint8(_REMOVED_BECOME[region]),
                  labels).astype(labels.dtype)


def apply(labels: np.ndarray, rules: Rules) -> np.ndarray:
  """Internal labels after the rules, in their order (module docstring)."""
  labels = tasks.relabel_small_enhancing(labels, rules.et_threshold)
  for region, voxels in rules.components:
    labels = remove_components(labels, region, voxels)
  return labels


def save_decision(folder: str, rules: Rules, evidence: dict) -> str:
  """Writes the decision, with what it was decided on, to FOLDER/postprocessing.json."""
  path = files.join(folder, DECISION_FILE)
  files.write_json(path, {"rules": rules.to_json(), "description": rules.describe(),
                          **evidence})
  return path


def read_decision(folder: str) -> dict | None:
  """The decision file of a run or an ensemble (rules and evidence), or None."""
  path = files.join(folder, DECISION_FILE)
  if not files.exists(path):
    return None
  try:
    return json.loads(files.read_text(path))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: unreadable post-processing decision ({e})") from None


def load_decision(folder: str) -> Rules | None:
  """The rules decided for a run or an ensemble, or None where none were."""
  decision = read_decision(folder)
  if decision is None:
    return None
  try:
    return Rules.from_json(decision["rules"])
  except (KeyError, TypeError, ValueError) as e:
    raise DataError(f"{files.join(folder, DECISION_FILE)}: not a post-processing decision "
                    f"({type(e).__name__}: {e})") from None
