"""Post-processing rules chosen on validation predictions, the way nnU-Net chooses its own.

Each candidate is tried on top of the rules kept so far, in this order: the ET threshold
(metrics.ET_THRESHOLD_CANDIDATES), then for WT, TC and ET in turn "only the largest
component", "components under N voxels removed" (N in MIN_VOXELS) and "components more than
G voxels from the largest removed" (G in MAX_GAP_VOXELS: islands far from the lesion go, a
second piece beside it stays). A candidate is kept only where it raises the mean Dice over
the regions and raises no region's mean HD95; of those, the one with the highest mean Dice,
and where candidates tie on Dice (they often remove the same islands), the lowest mean HD95.
The validation predictions are a run's last validation, or those of every fold of a
cross-validation together (each case predicted by the fold that did not train on it):
workdir/validation_predictions.py. The rules are applied by inference/postprocessing.py.
"""

import hashlib

import numpy as np

from brats_jax import tasks
from brats_jax.errors import DataError
from brats_jax.evaluation import metrics
from brats_jax.inference import postprocessing
from brats_jax.labels import REGION_LABELS
from brats_jax.progress import progress_bar
from brats_jax.workdir import validation_predictions

MIN_VOXELS = (10, 25, 50, 100, 250, 500, 1000)
MAX_GAP_VOXELS = (2, 4, 8, 16)
# Each region's component-rule candidates, in the order tried: (kind, value).
COMPONENT_CANDIDATES = tuple([("min_voxels", v) for v in (0,) + MIN_VOXELS]
                             + [("max_gap_voxels", g) for g in MAX_GAP_VOXELS])


class _Scores:
  """Dice and HD95 of each case's region masks, computed once per distinct mask."""

  def __init__(self, references, spacings, regions):
    self.references, self.spacings, self.regions = references, spacings, regions
    self._cache = {}

  def case(self, index: int, labels: np.ndarray) -> dict:
    scores = {}
    for region in self.regions:
      mask = np.isin(labels, REGION_LABELS[region])
      key = (index, region, hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16)
             .digest())
      if key not in self._cache:
        reference = np.isin(self.references[index], REGION_LABELS[region])
        self._cache[key] = (metrics.dice(mask, reference),
                            metrics.hd95(mask, reference, self.spacings[index]))
      scores[region] = self._cache[key]
    return scores

  def mean(self, labelled: list) -> dict:
    """{region: {"dice", "hd95"}} averaged over cases, and "mean_dice" over regions."""
    per_case = [self.case(i, labels) for i, labels in enumerate(labelled)]
    summary = {r: {"dice": float(np.mean([c[r][0] for c in per_case])),
                   "hd95": float(np.mean([c[r][1] for c in per_case]))} for r in self.regions}
    summary["mean_dice"] = float(np.mean([summary[r]["dice"] for r in self.regions]))
    return summary


def _better(trial: dict, current: dict, regions) -> bool:
  """Raises the mean Dice and no region's HD95 (beyond rounding)."""
  return (trial["mean_dice"] > current["mean_dice"] + 1e-6
          and all(trial[r]["hd95"] <= current[r]["hd95"] + 1e-6 for r in regions))


def _preferred(trial: dict, best: dict, regions) -> bool:
  """A higher mean Dice than the best candidate so far, or the same and a lower mean HD95."""
  if abs(trial["mean_dice"] - best["mean_dice"]) > 1e-6:
    return trial["mean_dice"] > best["mean_dice"]
  return (sum(trial[r]["hd95"] for r in regions)
          < sum(best[r]["hd95"] for r in regions) - 1e-6)


def choose(decoded: list, references: list, spacings: list, kind: str,
           progress: bool = True) -> tuple:
  """(Rules, report) for cases given as decoded internal labels, reference labels and
  voxel spacings; the report has the scores before and after and every candidate tried."""
  regions = tasks.scored_regions(kind)
  scores = _Scores(references, spacings, regions)
  current = list(decoded)
  before = now = scores.mean(current)
  rules = postprocessing.Rules()
  tried = []
  stages = [("et_threshold", None)] if "ET" in regions else []
  stages += [("components", region) for region in regions]
  for stage, region in progress_bar(stages, unit="rule", desc="post-processing",
                                    disable=not progress):
    if stage == "et_threshold":
      candidates = [(postprocessing.Rules(threshold, rules.components),
                     lambda labels, t=threshold: tasks.relabel_small_enhancing(labels, t))
                    for threshold in metrics.ET_THRESHOLD_CANDIDATES if threshold]
    else:
      candidates = [(postprocessing.Rules(rules.et_threshold,
                                          rules.components + ((region, kind, value),)),
                     lambda labels, r=region, k=kind, v=value:
                     postprocessing.apply_component_rule(labels, r, k, v))
                    for kind, value in COMPONENT_CANDIDATES]
    best = None
    for candidate, rule in candidates:
      trial_labels = [rule(labels) for labels in current]
      trial = scores.mean(trial_labels)
      kept = _better(trial, now, regions) and (
          best is None or _preferred(trial, best[1], regions))
      tried.append({"rule": candidate.describe(), "scores": trial})
      if kept:
        best = (candidate, trial, trial_labels)
    if best is not None:
      rules, now, current = best
  report = {"num_cases": len(decoded), "before": before, "after": now, "tried": tried}
  return rules, report


def decide(workdirs: list, out_folder: str, progress: bool = True) -> tuple:
  """Chooses the rules on the kept validation predictions of these runs (the folds of a
  cross-validation, or one run) and writes the decision to out_folder; (Rules, report)."""
  decoded, references, spacings, kinds, steps = [], [], [], set(), {}
  for workdir in workdirs:
    kept = validation_predictions.record(workdir)
    if kept is None:
      raise DataError(f"{validation_predictions.folder(workdir)}: no complete validation "
                      "predictions (a run keeps its last validation's when it ends)")
    kinds.add(kept["loss_kind"])
    steps[workdir] = kept["step"]
    for case_id in kept["case_ids"]:
      probabilities, labels, spacing = validation_predictions.load(workdir, case_id)
      decoded.append(tasks.decode(probabilities, kept["loss_kind"]))
      references.append(labels)
      spacings.append(spacing)
  if len(kinds) != 1:
    raise DataError(f"{out_folder}: the runs' validation predictions are of different tasks "
                    f"({', '.join(sorted(kinds))})")
  if not decoded:
    raise DataError(f"{out_folder}: the runs kept no validation case")
  rules, report = choose(decoded, references, spacings, kinds.pop(), progress)
  report["decided_on"] = {"runs": list(workdirs), "validation_steps": steps}
  postprocessing.save_decision(out_folder, rules, report)
  return rules, report


def format_report(report: dict) -> str:
  """The before/after table of a decision: Dice and HD95 per region, mean Dice."""
  regions = [r for r in ("WT", "TC", "ET") if r in report["before"]]
  lines = [f"{'':<8}" + "".join(f"{r + ' Dice':>10}{r + ' HD95':>10}" for r in regions)
           + f"{'mean Dice':>11}"]
  for name in ("before", "after"):
    s = report[name]
    lines.append(f"{name:<8}" + "".join(f"{s[r]['dice']:>10.4f}{s[r]['hd95']:>10.2f}"
                                        for r in regions) + f"{s['mean_dice']:>11.4f}")
  return "\n".join(lines)
