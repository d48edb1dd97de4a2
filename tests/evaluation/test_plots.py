"""Pictures are written atomically and show something (not blank)."""

import os

import matplotlib.image
import numpy as np

from brats_jax import labels as label_values
from brats_jax.data import synth
from brats_jax.evaluation import plots


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
