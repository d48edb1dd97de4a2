"""brats-jax-sweep: every cell trained, predicted and scored with the usual commands, the
table written, and a second run does nothing again."""

import os
import subprocess
import sys

import matplotlib.image
import pytest

from brats_jax.data import prepare, synth
from brats_jax.errors import UserError
from brats_jax.experiments import sweep

from conftest import ROOT, TINY_SHAPE, optimised_env


def test_axes_cells_and_tables(tmp_path):
  field, values = sweep.parse_axis("loss.terms=(('dice', 1.0),)|(('bce', 1.0),)")
  assert field == "loss.terms" and values == ["(('dice', 1.0),)", "(('bce', 1.0),)"]
  with pytest.raises(UserError, match="not a Python literal"):
    sweep.parse_axis("data.modalities=(flair,)")
  assert sweep.cell_name({"a": "(('dice', 1.0),)", "b": "('flair',)"}) == "dice_1.0__flair"
  axes = [("loss.terms", ["A", "B"]), ("data.modalities", ["x", "y"])]
  results = {(("loss.terms", "A"), ("data.modalities", "x")):
             {"best": {"WT_dice": 0.8}, "latest": {"WT_dice": 0.7}},
             (("loss.terms", "B"), ("data.modalities", "y")):
             {"best": {"WT_dice": 0.6}, "latest": {"WT_dice": 0.5}}}
  sweep.write_tables(str(tmp_path), axes, results)
  table = (tmp_path / "sweep.md").read_text()
  assert "| A | B 0.8000 / F 0.7000 | ... |" in table
  assert "| B | ... | B 0.6000 / F 0.5000 |" in table
  assert matplotlib.image.imread(str(tmp_path / "sweep.png")).shape[1] > 300
  assert (tmp_path / "sweep.csv").read_text().count("\n") == 5  # header + 2 cells x 2


@pytest.mark.slow
def test_sweep_trains_scores_and_resumes(tmp_path):
  raw, store = str(tmp_path / "raw"), str(tmp_path / "store")
  synth.write_dataset(raw, "brats2021", num_cases=5, shape=TINY_SHAPE, seed=2)
  prepare.prepare(raw, store, progress=False)
  out = str(tmp_path / "sweep")
  command = [sys.executable, "-m", "brats_jax.cli.sweep", f"--config={ROOT}/configs/tiny.py",
             f"--out={out}", "--grid=loss.terms=(('dice', 1.0),)|(('dice', 1.0), ('bce', 1.0))",
             f"--set=data.store={store}", "--set=train.num_steps=2",
             "--set=eval.every_steps=1"]
  result = subprocess.run(command, capture_output=True, text=True, timeout=900,
                          env=optimised_env())
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.count("mean_region_dice: best") == 2
  table = open(os.path.join(out, "sweep.md")).read()
  assert table.count("B 0.") + table.count("B 1.") == 2
  logs = [os.path.join(out, "cells", c, "log.txt") for c in os.listdir(os.path.join(out,
                                                                                     "cells"))]
  sizes = [os.path.getsize(log) for log in logs]
  again = subprocess.run(command, capture_output=True, text=True, timeout=300,
                         env=optimised_env())
  assert again.returncode == 0 and again.stdout.count("mean_region_dice: best") == 2
  assert [os.path.getsize(log) for log in logs] == sizes  # nothing ran again
