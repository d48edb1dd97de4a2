"""Score a folder of predictions against the reference labels of a raw dataset, BraTS-style
(brats-jax-evaluate runs this).

Per case, for the regions WT/TC/ET and the labels NCR/ED: Dice, F1, HD95 (mm), sensitivity,
specificity, precision, Jaccard (IoU) and voxel accuracy (metrics.py documents the empty-mask
conventions), over all labels the accuracy, the mean IoU of the classes and the Dice with
background that Keras projects report (metrics.dice_with_background), and with
--lesion_wise the BraTS 2023 lesion-wise Dice and HD95; and each case's mean Dice over the
regions (WT, TC, ET) and over the labels (NCR, ED, ET). Writes the CSV (one row per case), a
JSON summary next to it (mean, std, median and quartiles per column) and prints a table.
Predictions are `<case_id>.nii.gz` in the references' own label convention.
"""

import csv
import io
import os

import numpy as np

from brats_jax import files
from brats_jax.data import discovery, layouts, prediction_files
from brats_jax.data.raw_cases import read_raw_case, read_reference
from brats_jax.errors import DataError
from brats_jax.evaluation import metrics
from brats_jax.labels import REGIONS
from brats_jax.progress import progress_bar


def score_case(case: layouts.RawCase, predictions: str, lesion_wise: bool = False):
  """(CSV row with every metric of one case, predicted and reference internal labels). A
  dataset with binary labels (Kaggle LGG) is scored on the whole tumour only."""
  reference, reference_affine, spacing = read_reference(case)
  predicted_raw, predicted_affine = prediction_files.read(predictions, case, reference.shape)
  target = prediction_files.path(predictions, case.case_id, case.layout)
  if reference_affine is not None and not np.allclose(predicted_affine, reference_affine,
                                                      atol=1e-3):
    raise DataError(f"{target}: affine differs from the reference {case.label}")
  predicted = case.convention.encode(predicted_raw, target)
  regions = ("WT",) if case.convention.binary else None
  row = {"case_id": case.case_id,
         **metrics.case_metrics(predicted, reference, spacing, lesion_wise, regions)}
  return row, predicted, reference


LABELS = ("NCR", "ED", "ET")  # the labels a BraTS case is drawn with (ET is both)


def add_mean_dice(row: dict) -> dict:
  """The row with the case's mean Dice over the regions (WT, TC, ET: what BraTS ranks) and
  over the labels (NCR, ED, ET), for the scores it has."""
  for column, names in (("mean_region_dice", REGIONS), ("mean_label_dice", LABELS)):
    values = [row[f"{n}_dice"] for n in names if f"{n}_dice" in row]
    if len(values) == len(names):
      row[column] = float(np.mean(values))
  return row


def column_statistics(rows: list) -> dict:
  """Mean, std, median and quartiles of every metric column over the cases."""
  columns = [k for k in rows[0] if k != "case_id"]
  summary = {}
  for column in columns:
    values = np.array([row[column] for row in rows], np.float64)
    summary[column] = {"mean": float(values.mean()), "std": float(values.std()),
                       "median": float(np.median(values)),
                       "q25": float(np.percentile(values, 25)),
                       "q75": float(np.percentile(values, 75))}
  return summary


def format_table(summary: dict) -> str:
  """Mean of each metric (rows) per region and label (columns)."""
  names = [n for n in list(REGIONS) + ["NCR", "ED"] if f"{n}_dice" in summary]
  lines = [" " * 12 + "".join(f"{n:>10}" for n in names)]
  for metric in metrics.METRICS + ("lesion_dice", "lesion_hd95"):
    if f"WT_{metric}" in summary:
      cells = [summary[f"{n}_{metric}"]["mean"] if f"{n}_{metric}" in summary else None
               for n in names]
      lines.append(f"{metric:<12}" + "".join(f"{c:>10.4f}" if c is not None else " " * 10
                                             for c in cells))
  means = [f"{names} {summary[column]['mean']:.4f}" for column, names in (
      ("mean_region_dice", "regions (WT, TC, ET)"), ("mean_label_dice", "labels (NCR, ED, ET)"))
      if column in summary]
  if means:
    lines.append("mean Dice: " + ";  ".join(means))
  lines.append(f"all labels: accuracy {summary['accuracy']['mean']:.4f}  "
               f"mean IoU {summary['mean_iou']['mean']:.4f}  Dice with background: "
               f"pooled {summary['dice_all_classes_pooled']['mean']:.4f}, mean over classes "
               f"{summary['dice_all_classes_mean']['mean']:.4f}")
  return "\n".join(lines)


def draw_views(images, reference, predicted, stem: str, title: str, slices, per_slice: bool,
               rotating: bool) -> None:
  """The optional views of one case, as <stem>_slices.png, _per_slice.png, _rotating.gif."""
  from brats_jax.evaluation import views  # matplotlib, where pictures are asked for

  if slices:
    try:
      indices = views.parse_slices(slices, reference.shape[2])
    except ValueError as e:
      raise DataError(f"{stem}: {e}") from None
    views.slice_grid(images, reference, predicted, f"{stem}_slices.png", indices, title)
  if per_slice:
    views.per_slice_view(images, reference, predicted, f"{stem}_per_slice.png", title)
  if rotating:
    views.rotating_projection_gif(reference, predicted, f"{stem}_rotating.gif")


def evaluate_folder(predictions: str, references: str, output_csv: str,
                    lesion_wise: bool = False, layout: str | None = None,
                    pictures: str | None = None, max_pictures: int = 8, gifs: bool = False,
                    case_ids=None, slices: str | None = None, per_slice: bool = False,
                    rotating: bool = False):
  """Scores every reference case (or those of case_ids, which must all be there); returns
  (rows, summary). With `pictures`, also draws the first max_pictures cases and the Dice
  distribution into that folder; slices ("70:75"): a grid of those axial slices per drawn
  case; per_slice: every case's slices with false positives marked; rotating: a rotating
  projection GIF of reference and prediction (views.py)."""
  cases = [c for c in discovery.find_cases(references, layout) if c.label is not None]
  if case_ids is not None:
    missing = sorted(set(case_ids) - {c.case_id for c in cases})
    if missing:
      raise DataError(f"{references}: no labelled case {missing[0]} ({len(missing)} of the "
                      f"{len(case_ids)} requested cases missing)")
    cases = [c for c in cases if c.case_id in set(case_ids)]
  if not cases:
    raise DataError(f"{references}: no case with a reference label")
  if pictures:
    from brats_jax.evaluation import plots  # matplotlib, where pictures are asked for
  rows = []
  for i, case in enumerate(progress_bar(cases, unit="case", desc="evaluate", leave=False)):
    row, predicted, reference = score_case(case, predictions, lesion_wise)
    rows.append(add_mean_dice(row))
    if pictures and i < max_pictures:
      images = read_raw_case(case)[0]
      title = f"{case.case_id}   Dice " + "  ".join(
          f"{r} {row[f'{r}_dice']:.3f}" for r in REGIONS if f"{r}_dice" in row)
      plots.case_overlay(images, reference, predicted,
                         os.path.join(pictures, f"{case.case_id}.png"), title,
                         layouts.LAYOUTS[case.layout].channels)
      if gifs:
        plots.case_sweep_gif(images, reference, predicted,
                             os.path.join(pictures, f"{case.case_id}.gif"))
      draw_views(images, reference, predicted, os.path.join(pictures, case.case_id), title,
                 slices, per_slice, rotating)
  if pictures:
    plots.dice_distribution(rows, os.path.join(pictures, "dice_distribution.png"))
  summary = column_statistics(rows)
  table = io.StringIO()
  writer = csv.DictWriter(table, fieldnames=list(rows[0]))
  writer.writeheader()
  writer.writerows(rows)
  files.write_text(output_csv, table.getvalue())
  files.write_json(os.path.splitext(output_csv)[0] + "_summary.json",
                   {"num_cases": len(rows), "metrics": summary})
  return rows, summary
