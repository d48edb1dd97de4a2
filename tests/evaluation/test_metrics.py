"""Metrics against hand-computed values, including every empty-mask case."""

import numpy as np
import pytest

from brats_jax import labels as label_values
from brats_jax.evaluation import metrics


def _mask(shape, *boxes):
  mask = np.zeros(shape, bool)
  for box in boxes:
    mask[tuple(slice(a, b) for a, b in box)] = True
  return mask


def test_overlap_metrics_by_hand():
  reference = _mask((10, 10, 10), [(0, 4), (0, 5), (0, 1)])  # 20 voxels
  predicted = _mask((10, 10, 10), [(2, 6), (0, 5), (0, 1)])  # 20 voxels, 10 shared
  m = metrics.binary_metrics(predicted, reference, (1, 1, 1))
  assert m["dice"] == pytest.approx(2 * 10 / 40)
  assert m["jaccard"] == pytest.approx(10 / 30)
  assert m["sensitivity"] == pytest.approx(10 / 20)
  assert m["precision"] == pytest.approx(10 / 20)
  assert m["specificity"] == pytest.approx((1000 - 30) / (1000 - 20))
  assert m["f1"] == m["dice"]
  assert m["accuracy"] == pytest.approx((1000 - 20) / 1000)  # 10 + 10 voxels wrong


def test_empty_mask_conventions():
  empty, full = np.zeros((5, 5, 5), bool), _mask((5, 5, 5), [(1, 3), (1, 3), (1, 3)])
  both = metrics.binary_metrics(empty, empty, (1, 1, 1))
  assert (both["dice"], both["hd95"], both["jaccard"], both["sensitivity"],
          both["precision"], both["specificity"]) == (1.0, 0.0, 1.0, 1.0, 1.0, 1.0)
  for predicted, reference in ((full, empty), (empty, full)):
    one = metrics.binary_metrics(predicted, reference, (1, 1, 1))
    assert one["dice"] == 0.0 and one["jaccard"] == 0.0
    assert one["hd95"] == pytest.approx(373.1287, abs=1e-3)
  assert metrics.binary_metrics(full, empty, (1, 1, 1))["precision"] == 0.0
  assert metrics.binary_metrics(empty, full, (1, 1, 1))["sensitivity"] == 0.0


def test_hd95_uses_anisotropic_spacing():
  reference = _mask((12, 12, 12), [(5, 6), (5, 6), (5, 6)])
  predicted = _mask((12, 12, 12), [(5, 6), (5, 6), (8, 9)])  # 3 voxels along z
  assert metrics.hd95(predicted, reference, (1, 1, 1)) == pytest.approx(3.0)
  assert metrics.hd95(predicted, reference, (1, 1, 2.5)) == pytest.approx(7.5)
  assert metrics.hd95(predicted, reference, (0.5, 3, 1)) == pytest.approx(3.0)
  # Two 4-voxel-wide cubes shifted by 2 voxels in x with 1.5 mm voxels: every surface voxel
  # of one is within 2 voxels (3 mm) of the other's surface, and the far faces are exactly 2.
  a = _mask((16, 16, 16), [(4, 8), (4, 8), (4, 8)])
  b = _mask((16, 16, 16), [(6, 10), (4, 8), (4, 8)])
  assert metrics.hd95(a, b, (1.5, 1, 1)) == pytest.approx(3.0)


def test_case_metrics_regions_and_labels():
  reference = np.zeros((8, 8, 8), np.uint8)
  reference[1:7, 1:7, 1:7] = label_values.ED
  reference[2:5, 2:5, 2:5] = label_values.NCR
  reference[3:5, 3:5, 3:5] = label_values.ET
  row = metrics.case_metrics(reference, reference, (1, 1, 1))
  for name in ("WT", "TC", "ET", "NCR", "ED"):
    assert row[f"{name}_dice"] == 1.0 and row[f"{name}_hd95"] == 0.0
  predicted = reference.copy()
  predicted[predicted == label_values.ET] = label_values.NCR  # ET missed entirely
  row = metrics.case_metrics(predicted, reference, (1, 1, 1))
  assert row["ET_dice"] == 0.0 and row["TC_dice"] == 1.0 and row["WT_dice"] == 1.0
  assert row["ET_hd95"] == pytest.approx(metrics.EMPTY_HD95)
  # 8 ET voxels read as NCR: 8 of 512 voxels wrong; classes background 1, NCR 19/27,
  # ED 1, ET 0 (present in the reference only).
  assert row["accuracy"] == pytest.approx(1 - 8 / 512)
  assert row["mean_iou"] == pytest.approx((1 + 19 / 27 + 1 + 0) / 4)
  # Keras-style Dice with background: pooled over one-hot classes (= accuracy for hard
  # labels), and the mean of per-class Dice (NCR: 2*19 / (19 + 27)).
  assert row["dice_all_classes_pooled"] == pytest.approx(1 - 8 / 512)
  assert row["dice_all_classes_mean"] == pytest.approx((1 + 38 / 46 + 1 + 0) / 4)
  scores = metrics.region_dice(predicted, reference)
  assert scores["iou_TC"] == 1.0 and scores["iou_ET"] == 0.0
  assert scores["accuracy_ET"] == pytest.approx(1 - 8 / 512)
  # Binary datasets: two classes, background and tumour.
  binary = metrics.case_metrics(predicted, reference, (1, 1, 1), regions=("WT",))
  assert binary["accuracy"] == 1.0 and binary["mean_iou"] == 1.0
  assert "ET_dice" not in binary


def test_lesion_wise():
  shape = (40, 40, 40)
  big_a = _mask(shape, [(2, 8), (2, 8), (2, 8)])  # 216 voxels: scored
  big_b = _mask(shape, [(20, 26), (20, 26), (20, 26)])  # 216 voxels: scored, missed
  tiny = _mask(shape, [(33, 36), (2, 5), (2, 5)])  # 27 voxels: ignored
  false_positive = _mask(shape, [(2, 5), (30, 33), (30, 33)])
  reference = big_a | big_b | tiny
  predicted = big_a | false_positive
  scores = metrics.lesion_wise(predicted, reference, (1, 1, 1))
  # Lesions: big_a (Dice 1, HD95 0), big_b missed (0, 373.13), one false positive (0, 373.13).
  assert scores["lesion_dice"] == pytest.approx(1 / 3)
  assert scores["lesion_hd95"] == pytest.approx(2 * metrics.EMPTY_HD95 / 3)
  empty = np.zeros(shape, bool)
  assert metrics.lesion_wise(empty, tiny, (1, 1, 1)) == {"lesion_dice": 1.0, "lesion_hd95": 0.0}


def test_et_threshold_is_chosen_on_validation_cases():
  cases = [  # a non-enhancing tumour with a spurious 150-voxel ET, and two real ETs
      {"WT": 0.9, "TC": 0.9, "ET": 0.0, "predicted_ET_voxels": 150, "reference_ET_voxels": 0},
      {"WT": 0.9, "TC": 0.9, "ET": 0.8, "predicted_ET_voxels": 400, "reference_ET_voxels": 380},
      {"WT": 0.9, "TC": 0.9, "ET": 0.7, "predicted_ET_voxels": 260, "reference_ET_voxels": 300},
  ]
  for case in cases:  # region_dice's other metrics, which the summary averages as they are
    case.update({f"{m}_{r}": 0.5 for m in metrics.VALIDATION_METRICS
                 for r in ("WT", "TC", "ET")})
  cases[0]["loss"], cases[1]["loss"], cases[2]["loss"] = 0.3, 0.6, 0.9
  assert metrics.choose_et_threshold(cases) == 200  # removes the 150, keeps 260 and 400
  summary = metrics.validation_summary(cases, 200)
  assert summary["ET"] == pytest.approx((1.0 + 0.8 + 0.7) / 3)
  assert summary["ET_before_threshold"] == pytest.approx(0.5)
  assert summary["loss"] == pytest.approx(0.6) and summary["recall_TC"] == 0.5
  assert metrics.validation_summary(cases)["ET"] == pytest.approx(0.5)
  # Nothing to gain: no threshold.
  assert metrics.choose_et_threshold(cases[1:]) == 0
