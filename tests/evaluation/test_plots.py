"""Pictures are written atomically and show something (not blank)."""

import os

import matplotlib.image
import numpy as np
import pytest
from PIL import Image

from brats_jax import labels as label_values
from brats_jax.data import synth
from brats_jax.evaluation import plots, views


def test_case_pictures_and_curves(tmp_path):
  images, labels = synth.make_case((48, 48, 36), np.random.default_rng(0), p_non_enhancing=0)
  predicted = labels.copy()
  predicted[predicted == label_values.ET] = label_values.NCR
  png = str(tmp_path / "case.png")
  plots.case_overlay(images, labels, predicted, png, "case")
  picture = matplotlib.image.imread(png)
  assert picture.shape[0] > 300 and picture.shape[1] > 600
  # The overlay colours are there: yellow enhancing tumour (reference) and green edema.
  rgb = picture[..., :3]
  assert (np.abs(rgb - plots.LABEL_COLOURS[label_values.ET]).max(-1) < 0.25).sum() > 20
  assert (np.abs(rgb - plots.LABEL_COLOURS[label_values.ED]).max(-1) < 0.25).sum() > 20
  gif = str(tmp_path / "case.gif")
  plots.case_sweep_gif(images, labels, predicted, gif)
  assert os.path.getsize(gif) > 1000
  rows = [{"WT_dice": 0.9, "TC_dice": 0.8, "ET_dice": 0.7}, {"WT_dice": 1, "TC_dice": 0.5,
                                                             "ET_dice": 0.0}]
  plots.dice_distribution(rows, str(tmp_path / "dice.png"))
  records = [{"step": s, "train/loss": 1 / s, "train/samples_per_second": 2.0,
              **{f"train/{m}_{r}": 0.5 for r in label_values.REGIONS for m in ("dice", "iou")}}
             for s in range(1, 5)]
  records.append({"step": 4, **{f"val/{r}": 0.6 for r in label_values.REGIONS},
                  **{f"val/iou_{r}": 0.4 for r in label_values.REGIONS}, "val/mean_dice": 0.6})
  plots.training_curves(records, str(tmp_path / "curves.png"))
  assert sorted(os.listdir(tmp_path)) == ["case.gif", "case.png", "curves.png", "dice.png"]


def test_chosen_slices_per_slice_view_and_rotating_projection(tmp_path):
  """Seed 001's slice grid, seed 003's per-slice view with a false positive marked, and
  seed 000's rotating view; each a real picture."""
  rng = np.random.default_rng(0)
  images = rng.random((32, 32, 20, 2)).astype(np.float32)
  reference = np.zeros((32, 32, 20), np.uint8)
  reference[10:20, 10:20, 5:12] = label_values.ED
  reference[13:17, 13:17, 7:10] = label_values.ET
  predicted = reference.copy()
  predicted[2:5, 2:5, 16:18] = label_values.ED  # a false positive on tumour-free slices
  assert views.parse_slices("6:9", 20) == [6, 7, 8] and views.parse_slices("3,30", 20) == [3]
  with pytest.raises(ValueError, match="no slice inside"):
    views.parse_slices("40:45", 20)
  views.slice_grid(images, reference, predicted, str(tmp_path / "grid.png"), [6, 7, 8])
  grid = matplotlib.image.imread(str(tmp_path / "grid.png"))
  assert grid.shape[0] > grid.shape[1]  # three rows of three
  marked = views.per_slice_view(images, reference, predicted, str(tmp_path / "slices.png"))
  assert marked == 2  # slices 16 and 17 are shown and have no reference tumour
  picture = matplotlib.image.imread(str(tmp_path / "slices.png"))[..., :3]
  assert (np.abs(picture - (1.0, 0.0, 0.0)).max(-1) < 0.1).sum() > 100  # red frames
  views.rotating_projection_gif(reference, predicted, str(tmp_path / "turn.gif"), frames=6)
  with Image.open(tmp_path / "turn.gif") as gif:
    assert gif.n_frames == 6
  # The projection puts enhancing tumour in front of the edema around it.
  projection = views.label_projection(reference, axis=1)
  assert projection[15, 8] == label_values.ET and projection[11, 6] == label_values.ED
