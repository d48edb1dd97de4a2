"""Post-processing of a case's decoded labels by rules chosen on validation cases.

nnU-Net's recipe: try each rule on the cross-validation predictions, keep it only where it
helps (evaluation/choose_rules.py decides; this module applies). The rules, in the order
they apply to internal labels (NCR, ED, ET nested as WT ⊇ TC ⊇ ET):

  et_threshold N       an ET prediction of fewer than N voxels in all becomes necrosis (the
                       BraTS tradition: a few enhancing voxels are more often wrong than right)
  WT largest | min N | gap G
                       whole-tumour components (26-connected): all but the largest, those
                       under N voxels, or those more than G voxels from the largest (islands
                       far from the lesion, where a second piece beside it stays), become
                       background
  TC (the same)        tumour-core components (NCR, ET): removed ones become edema, so the
                       whole tumour is unchanged
  ET (the same)        enhancing components: removed ones become necrosis, so the core is
                       unchanged

Voxels (and gaps) are counted in the model's space (the prepared store's crop and spacing),
where the rules were chosen. The decision is a small JSON file (DECISION_FILE) in a run's
workdir or in a folds parent, with the before/after scores it was kept on.
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
  """et_threshold: voxels (0: none); components: ((region, kind, value), ...) in the order
  they apply, kind one of COMPONENT_RULES (min_voxels 0 meaning "only the largest
  component"); (region, N) is short for (region, "min_voxels", N)."""

  et_threshold: int = 0
  components: tuple = ()

  def __post_init__(self):
    object.__setattr__(self, "components", tuple(
        (c[0], "min_voxels", c[1]) if len(c) == 2 else tuple(c) for c in self.components))

  def describe(self) -> str:
    parts = [f"ET under {self.et_threshold} voxels becomes necrosis"] \
        if self.et_threshold else []
    for region, kind, value in self.components:
      if not value:
        parts.append(f"{region}: only the largest component")
      elif kind == "min_voxels":
        parts.append(f"{region}: components under {value} voxels removed")
      else:
        parts.append(f"{region}: components over {value} voxels from the largest removed")
    return "; ".join(parts) or "none"

  def to_json(self) -> dict:
    return {"et_threshold": self.et_threshold,
            "components": [{"region": r, kind: v} for r, kind, v in self.components]}

  @classmethod
  def from_json(cls, data: dict) -> "Rules":
    def component(c):
      kinds = [k for k in COMPONENT_RULES if k in c]
      if len(kinds) != 1:
        raise KeyError(f"one of {', '.join(COMPONENT_RULES)}")
      return c["region"], kinds[0], int(c[kinds[0]])
    return cls(int(data["et_threshold"]), tuple(component(c) for c in data["components"]))


def _components(labels: np.ndarray, region: str) -> tuple:
  """(component index per voxel, voxels per index) of the region, 26-connected; index 0,
  outside the region, counts 0."""
  structure = ndimage.generate_binary_structure(labels.ndim, labels.ndim)
  components, _ = ndimage.label(np.isin(labels, REGION_LABELS[region]), structure)
  sizes = np.bincount(components.ravel())
  sizes[0] = 0
  return components, sizes


def _relabel(labels, region, components, removed) -> np.ndarray:
  removed[0] = False
  if not removed.any():
    return labels
  return np.where(removed[components], np.uint8(_REMOVED_BECOME[region]),
                  labels).astype(labels.dtype)


def remove_components(labels: np.ndarray, region: str, min_voxels: int) -> np.ndarray:
  """The region's connected components (26-connected) of fewer than min_voxels voxels, or
  with min_voxels 0 all but the largest, relabelled as what the region's removed voxels
  become. A region with one component or none is unchanged."""
  components, sizes = _components(labels, region)
  removed = sizes < min_voxels if min_voxels else np.arange(len(sizes)) != np.argmax(sizes)
  return _relabel(labels, region, components, removed)


def remove_far_components(labels: np.ndarray, region: str, max_gap: int) -> np.ndarray:
  """The region's components whose nearest voxel is more than max_gap voxels (Euclidean)
  from its largest component, relabelled as what the region's removed voxels become."""
  components, sizes = _components(labels, region)
  if len(sizes) < 3:  # one component or none
    return labels
  distance = ndimage.distance_transform_edt(components != np.argmax(sizes))
  gaps = ndimage.minimum(distance, components, np.arange(len(sizes)))
  return _relabel(labels, region, components, np.asarray(gaps) > max_gap)


# A component rule's kind -> what applies it (min_voxels 0: only the largest component).
_COMPONENT_RULE_FUNCTIONS = {"min_voxels": remove_components,
                             "max_gap_voxels": remove_far_components}
COMPONENT_RULES = tuple(_COMPONENT_RULE_FUNCTIONS)


def apply_component_rule(labels: np.ndarray, region: str, kind: str, value: int):
  """One component rule (Rules.components) applied to internal labels."""
  return _COMPONENT_RULE_FUNCTIONS[kind](labels, region, value)


def apply(labels: np.ndarray, rules: Rules) -> np.ndarray:
  """Internal labels after the rules, in their order (module docstring)."""
  labels = tasks.relabel_small_enhancing(labels, rules.et_threshold)
  for region, kind, value in rules.components:
    labels = apply_component_rule(labels, region, kind, value)
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
