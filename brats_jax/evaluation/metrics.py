"""Segmentation metrics with the BraTS legacy empty-mask conventions.

Empty masks (BraTS legacy scoring, as in the challenge's CaPTk-era evaluation):
- reference and prediction both empty: Dice 1, Jaccard 1, HD95 0 mm;
- exactly one empty: Dice 0, Jaccard 0, HD95 373.13 mm (the diagonal of the 240x240x155 box).
Sensitivity with an empty reference and precision with an empty prediction follow the same
rule (1 if both are empty, else 0). HD95 is max(95th percentile of the distances from the
prediction's surface to the reference's, and the other way round), in mm from the voxel
spacing. Lesion-wise scores follow BraTS 2023: connected components (26-connectivity) of the
reference, dilated by 3 voxels to merge nearby lesions; reference lesions of 50 voxels or
fewer are ignored; every unmatched predicted component counts as a false positive lesion.
"""

import numpy as np
from scipy import ndimage

from brats_jax import tasks
from brats_jax.labels import ET, LABEL_GROUPS, REGION_LABELS, REGIONS

EMPTY_HD95 = float(np.sqrt(240**2 + 240**2 + 155**2))  # 373.13 mm
# f1 is the voxel F1 score, equal to Dice for binary masks; listed because many projects
# report it under that name. accuracy is the share of voxels classified right.
METRICS = ("dice", "f1", "hd95", "sensitivity", "specificity", "precision", "jaccard",
           "accuracy")


def dice(predicted: np.ndarray, reference: np.ndarray) -> float:
  predicted, reference = predicted.astype(bool), reference.astype(bool)
  return tasks.dice_from_counts(np.logical_and(predicted, reference).sum(), predicted.sum(),
                                reference.sum())


def _surface(mask: np.ndarray) -> np.ndarray:
  return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(
      mask.ndim, 1), border_value=0)


def hd95(predicted: np.ndarray, reference: np.ndarray, spacing) -> float:
  predicted, reference = predicted.astype(bool), reference.astype(bool)
  if not predicted.any() and not reference.any():
    return 0.0
  if not predicted.any() or not reference.any():
    return EMPTY_HD95
  predicted_surface, reference_surface = _surface(predicted), _surface(reference)
  to_reference = ndimage.distance_transform_edt(~reference_surface, sampling=spacing)
  to_predicted = ndimage.distance_transform_edt(~predicted_surface, sampling=spacing)
  return float(max(np.percentile(to_reference[predicted_surface], 95),
                   np.percentile(to_predicted[reference_surface], 95)))


def overlap_metrics(predicted: np.ndarray, reference: np.ndarray) -> dict:
  """Every METRICS entry but hd95 for one pair of binary masks (voxel counts only)."""
  predicted, reference = predicted.astype(bool), reference.astype(bool)
  tp = np.logical_and(predicted, reference).sum()
  fp = np.logical_and(predicted, ~reference).sum()
  fn = np.logical_and(~predicted, reference).sum()
  tn = predicted.size - tp - fp - fn
  both_empty = tp + fp + fn == 0
  overlap = tasks.dice_from_counts(tp, tp + fp, tp + fn)
  return {
      "dice": overlap,
      "f1": overlap,
      "sensitivity": tasks.share_from_counts(tp, tp + fn, both_empty),
      "specificity": tasks.share_from_counts(tn, tn + fp, True),
      "precision": tasks.share_from_counts(tp, tp + fp, both_empty),
      "jaccard": tasks.iou_from_counts(tp, tp + fp, tp + fn),
      "accuracy": float((tp + tn) / predicted.size),
  }


def binary_metrics(predicted: np.ndarray, reference: np.ndarray, spacing) -> dict:
  """All METRICS for one pair of binary masks, in METRICS order."""
  scores = overlap_metrics(predicted, reference)
  scores["hd95"] = hd95(predicted, reference, spacing)
  return {metric: scores[metric] for metric in METRICS}


def lesion_wise(predicted: np.ndarray, reference: np.ndarray, spacing, min_voxels: int = 50,
                dilation: int = 3) -> dict:
  """BraTS 2023 lesion-wise Dice and HD95 for one region (see the module docstring)."""
  predicted, reference = predicted.astype(bool), reference.astype(bool)
  structure = ndimage.generate_binary_structure(3, 3)
  dilated = ndimage.binary_dilation(reference, structure, iterations=dilation)
  merged, _ = ndimage.label(dilated, structure)
  reference_lesions = merged * reference  # original voxels, grouped by merged component
  predicted_components, num_predicted = ndimage.label(predicted, structure)
  dices, hd95s, matched_predictions = [], [], set()
  for lesion in np.unique(reference_lesions)[1:]:
    lesion_mask = reference_lesions == lesion
    if lesion_mask.sum() <= min_voxels:
      continue
    region = ndimage.binary_dilation(lesion_mask, structure, iterations=dilation)
    touching = set(np.unique(predicted_components[region])) - {0}
    matched_predictions |= touching
    predicted_lesion = np.isin(predicted_components, list(touching))
    dices.append(dice(predicted_lesion, lesion_mask))
    hd95s.append(hd95(predicted_lesion, lesion_mask, spacing))
  false_positives = [c for c in range(1, num_predicted + 1) if c not in matched_predictions]
  dices += [0.0] * len(false_positives)
  hd95s += [EMPTY_HD95] * len(false_positives)
  if not dices:  # no scored lesion and no false positive: both empty
    return {"lesion_dice": 1.0, "lesion_hd95": 0.0}
  return {"lesion_dice": float(np.mean(dices)), "lesion_hd95": float(np.mean(hd95s))}


def case_metrics(predicted_labels: np.ndarray, reference_labels: np.ndarray, spacing,
                 lesion_wise_scores: bool = False, regions=None) -> dict:
  """{"WT_dice": ..., "NCR_hd95": ...} for the regions and labels of one case (internal).
  regions=("WT",) scores the whole tumour alone (binary datasets)."""
  masks = {r: (np.isin(predicted_labels, REGION_LABELS[r]),
               np.isin(reference_labels, REGION_LABELS[r]))
           for r in (regions or REGIONS)}
  # Per label: the enhancing label is the ET region already; necrosis (with BraTS 2015's
  # non-enhancing tumour) and edema are not regions.
  for name in (("NCR", "ED") if regions is None else ()):
    masks[name] = (np.isin(predicted_labels, LABEL_GROUPS[name]),
                   np.isin(reference_labels, LABEL_GROUPS[name]))
  predicted_classes = _classes(predicted_labels, regions)
  reference_classes = _classes(reference_labels, regions)
  row = {"accuracy": float(np.mean(predicted_classes == reference_classes)),
         "mean_iou": mean_iou(predicted_classes, reference_classes),
         **dice_with_background(predicted_classes, reference_classes)}
  for name, (predicted, reference) in masks.items():
    for metric, value in binary_metrics(predicted, reference, spacing).items():
      row[f"{name}_{metric}"] = value
    if lesion_wise_scores and name in REGIONS:
      for metric, value in lesion_wise(predicted, reference, spacing).items():
        row[f"{name}_{metric}"] = value
  return row


def _classes(labels: np.ndarray, regions=None) -> np.ndarray:
  """Internal labels as class indices: 0 background, then NCR (with non-enhancing), ED, ET;
  for binary datasets (regions=("WT",)) 0 background, 1 tumour."""
  if regions == ("WT",):
    return (labels > 0).astype(np.int8)
  classes = np.zeros(labels.shape, np.int8)
  for index, members in enumerate(LABEL_GROUPS.values(), start=1):
    classes[np.isin(labels, members)] = index
  return classes


def dice_with_background(predicted: np.ndarray, reference: np.ndarray) -> dict:
  """The "all classes, background included" Dice that Keras projects report, both ways:
  pooled (one-hot masks of every class flattened together, as seed-style dice_coeff
  functions do: for hard labels both masks hold one 1 per voxel, so this is the voxel
  accuracy) and the mean of each class's Dice (classes of _classes, background included)."""
  classes = np.union1d(np.unique(predicted), np.unique(reference))
  both = sum(int(np.logical_and(predicted == c, reference == c).sum()) for c in classes)
  pooled = tasks.dice_from_counts(both, predicted.size, reference.size)
  per_class = [dice(predicted == c, reference == c) for c in classes]
  return {"dice_all_classes_pooled": pooled,
          "dice_all_classes_mean": float(np.mean(per_class))}


def mean_iou(predicted: np.ndarray, reference: np.ndarray) -> float:
  """IoU averaged over the classes (background included) present in either class map
  (_classes)."""
  scores = []
  for index in np.union1d(np.unique(predicted), np.unique(reference)):
    both = np.logical_and(predicted == index, reference == index).sum()
    either = np.logical_or(predicted == index, reference == index).sum()
    scores.append(both / either)
  return float(np.mean(scores))


# Candidate thresholds (voxels) for relabelling a small enhancing-tumour prediction as
# necrosis, the usual BraTS post-processing; the one to use is chosen on validation cases.
ET_THRESHOLD_CANDIDATES = (0, 25, 50, 100, 200, 300, 500, 750, 1000)


# Per region besides Dice in validation summaries: name -> overlap_metrics key.
VALIDATION_METRICS = {"iou": "jaccard", "accuracy": "accuracy", "precision": "precision",
                      "recall": "sensitivity"}


def region_dice(predicted_labels: np.ndarray, labels: np.ndarray,
                regions=REGIONS) -> dict:
  """Internal predicted and reference labels [*S] -> {region: Dice} for the given regions,
  their IoU, voxel accuracy, precision and recall ({"iou_WT": ...}, ...), and the predicted
  and reference ET voxel counts (for the ET threshold)."""
  scores = {}
  for r in regions:
    overlap = overlap_metrics(np.isin(predicted_labels, REGION_LABELS[r]),
                              np.isin(labels, REGION_LABELS[r]))
    scores[r] = overlap["dice"]
    for metric, key in VALIDATION_METRICS.items():
      scores[f"{metric}_{r}"] = overlap[key]
  scores["predicted_ET_voxels"] = int((predicted_labels == ET).sum())
  scores["reference_ET_voxels"] = int((labels == ET).sum())
  return scores


def et_dice_after_threshold(case: dict, threshold: int) -> float:
  """ET Dice once an ET prediction smaller than `threshold` voxels becomes necrosis."""
  if 0 < case["predicted_ET_voxels"] < threshold:
    return 1.0 if case["reference_ET_voxels"] == 0 else 0.0
  return case["ET"]


def choose_et_threshold(per_case: list) -> int:
  """The candidate threshold with the best mean ET Dice over these cases (smallest on ties)."""
  means = [np.mean([et_dice_after_threshold(c, t) for c in per_case])
           for t in ET_THRESHOLD_CANDIDATES]
  return ET_THRESHOLD_CANDIDATES[int(np.argmax(means))]


def validation_summary(per_case: list, et_threshold: int = 0) -> dict:
  """Mean Dice per region over cases (ET after the threshold), the mean over regions, the
  mean IoU, accuracy, precision and recall per region (before any threshold), and the mean
  loss when the cases have one."""
  regions = [r for r in REGIONS if r in per_case[0]]
  summary = {r: float(np.mean([c[r] for c in per_case])) for r in regions if r != "ET"}
  if "loss" in per_case[0]:
    summary["loss"] = float(np.mean([c["loss"] for c in per_case]))
  for r in regions:
    for metric in VALIDATION_METRICS:
      summary[f"{metric}_{r}"] = float(np.mean([c[f"{metric}_{r}"] for c in per_case]))
  if "ET" in regions:
    summary["ET"] = float(np.mean([et_dice_after_threshold(c, et_threshold)
                                   for c in per_case]))
    if et_threshold:
      summary["ET_before_threshold"] = float(np.mean([c["ET"] for c in per_case]))
  summary["mean_dice"] = float(np.mean([summary[r] for r in regions]))
  summary["min_enhancing_voxels"] = et_threshold
  return summary
