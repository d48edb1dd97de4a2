"""A grid of config overrides trained, predicted and scored: henry2020_dilated.py's loss x
modality table (brats-jax-sweep runs this).

Each cell of the grid (the product of every axis's values) is a run of its own in
OUT/cells/<cell>, made with the usual commands: brats-jax-train with the cell's overrides,
then brats-jax-predict --split=validation and brats-jax-evaluate --split=validation for the
best checkpoint (by validation Dice) and the final one. A cell's scores are kept in
OUT/cells/<cell>/scores.json once both are done, so a sweep run again goes on where it
stopped (a cell stopped mid-training resumes from its last checkpoint). The table is written
after every cell: OUT/sweep.csv (every score of every cell and checkpoint), OUT/sweep.md
and OUT/sweep.png (the headline score, best and final, rows the first axis, columns the
second).
"""

import ast
import csv
import io
import itertools
import json
import os
import re
import subprocess
import sys

import numpy as np

from brats_jax import files
from brats_jax.errors import UserError

CHECKPOINTS = ("best", "latest")  # the best validation Dice, and the final step
# The scores a cell reports, when the evaluation has them (binary tasks: WT only).
SCORES = ("mean_region_dice", "WT_dice", "TC_dice", "ET_dice", "WT_hd95", "TC_hd95",
          "ET_hd95", "WT_precision", "WT_sensitivity", "accuracy")


def parse_axis(text: str) -> tuple:
  """"loss.terms=(('dice', 1.0),)|(('focal', 1.0),)" -> (field, [values as text])."""
  if "=" not in text:
    raise UserError(f"--grid={text}: expected FIELD=VALUE|VALUE|...")
  field, values = text.split("=", 1)
  values = [v.strip() for v in values.split("|") if v.strip()]
  for value in values:
    try:
      ast.literal_eval(value)
    except (ValueError, SyntaxError):
      raise UserError(f"--grid={text}: {value!r} is not a Python literal") from None
  if not values:
    raise UserError(f"--grid={text}: no values")
  return field.strip(), values


def cell_name(cell: dict) -> str:
  """A folder name for a cell: its values, readable and safe."""
  parts = []
  for value in cell.values():
    text = re.sub(r"[^A-Za-z0-9.]+", "_", value).strip("_")
    parts.append(text or "x")
  return "__".join(parts)


def _command(module: str, *args) -> list:
  return [sys.executable, "-m", f"brats_jax.cli.{module}", *args]


def _run(argv: list, log: str) -> None:
  with open(log, "a") as out:
    out.write("$ " + " ".join(argv) + "\n")
    out.flush()
    result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT)
  if result.returncode:
    raise UserError(f"{' '.join(argv[2:4])} failed (exit {result.returncode}); see {log}")


def run_cell(config: str, overrides: list, cell: dict, folder: str) -> dict:
  """Trains (or resumes), predicts and scores one cell; returns its scores per checkpoint."""
  done = os.path.join(folder, "scores.json")
  if os.path.exists(done):
    with open(done) as f:
      return json.load(f)
  os.makedirs(folder, exist_ok=True)
  log, workdir = os.path.join(folder, "log.txt"), os.path.join(folder, "run")
  cell_flags = [f"--config.{field}={value}" for field, value in cell.items()]
  _run(_command("train", f"--config={config}", f"--workdir={workdir}", *overrides,
                *cell_flags), log)
  scores = {}
  for checkpoint in CHECKPOINTS:
    predictions = os.path.join(folder, f"predictions_{checkpoint}")
    csv_path = os.path.join(folder, f"scores_{checkpoint}.csv")
    _run(_command("predict", f"--workdir={workdir}", "--split=validation",
                  f"--output={predictions}", f"--checkpoint={checkpoint}"), log)
    _run(_command("evaluate", f"--workdir={workdir}", "--split=validation",
                  f"--predictions={predictions}", f"--output={csv_path}"), log)
    with open(os.path.splitext(csv_path)[0] + "_summary.json") as f:
      summary = json.load(f)["metrics"]
    scores[checkpoint] = {k: summary[k]["mean"] for k in SCORES if k in summary}
    hd95 = [scores[checkpoint][k] for k in ("WT_hd95", "TC_hd95", "ET_hd95")
            if k in scores[checkpoint]]
    scores[checkpoint]["mean_region_hd95"] = float(np.mean(hd95))
  files.write_json(done, scores)
  return scores


def headline(scores: dict) -> str:
  """The score the table shows: mean region Dice, or for a whole-tumour task its Dice (F1)."""
  return "mean_region_dice" if "mean_region_dice" in scores else "WT_dice"


def write_tables(out: str, axes: list, results: dict) -> None:
  """sweep.csv, sweep.md and sweep.png of the cells done so far."""
  rows = []
  for cell, scores in results.items():
    for checkpoint, values in scores.items():
      rows.append({**dict(cell), "checkpoint": checkpoint, **values})
  table = io.StringIO()
  columns = list(dict.fromkeys(k for row in rows for k in row))
  writer = csv.DictWriter(table, fieldnames=columns)
  writer.writeheader()
  writer.writerows(rows)
  files.write_text(os.path.join(out, "sweep.csv"), table.getvalue())

  (row_field, row_values) = axes[0]
  col_field, col_values = axes[1] if len(axes) > 1 else ("", [""])
  any_scores = next(iter(results.values()))["latest"]
  metric = headline(any_scores)

  def value(row, col, checkpoint, score=metric):
    for cell, scores in results.items():
      cell = dict(cell)
      if cell[row_field] == row and (not col_field or cell[col_field] == col):
        return scores[checkpoint].get(score)
    return None

  lines = []
  # BraTS ranks on both: the overlap, and the distance of the worst boundaries (mm).
  for score, what, digits in ((metric, metric, 4), ("mean_region_hd95",
                                                    "mean region HD95 (mm)", 2)):
    lines += [f"{what} of the validation cases, best (B) and final (F) checkpoint; rows "
              f"{row_field}" + (f", columns {col_field}" if col_field else ""), "",
              "| | " + " | ".join(col_values or [""]) + " |",
              "|---" * (1 + len(col_values)) + "|"]
    for row in row_values:
      cells = []
      for col in col_values:
        best, final = value(row, col, "best", score), value(row, col, "latest", score)
        cells.append("..." if best is None else f"B {best:.{digits}f} / F {final:.{digits}f}")
      lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines.append("")
  files.write_text(os.path.join(out, "sweep.md"), "\n".join(lines))

  from brats_jax.evaluation import plots  # matplotlib, for the picture alone

  fig, panels = plots.figure(1, 2, figsize=(4 + 2.2 * len(col_values), 1.5 + 0.7 *
                                            len(row_values)), squeeze=False)
  for ax, checkpoint in zip(panels[0], CHECKPOINTS):
    grid = np.array([[np.nan if value(r, c, checkpoint) is None else value(r, c, checkpoint)
                      for c in col_values] for r in row_values])
    ax.imshow(grid, cmap="viridis", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(grid):
      if not np.isnan(v):
        ax.text(j, i, f"{v:.3f}", ha="center", va="center",
                color="white" if v < 0.6 else "black", fontsize=9)
    ax.set_xticks(range(len(col_values)), col_values, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(row_values)), row_values, fontsize=8)
    ax.set_title(f"{metric}, {'best' if checkpoint == 'best' else 'final'} checkpoint",
                 fontsize=9)
    ax.set_xlabel(col_field, fontsize=8)
    ax.set_ylabel(row_field, fontsize=8)
  fig.tight_layout()
  plots.save_png(fig, os.path.join(out, "sweep.png"))


def sweep(config: str, axes: list, overrides: list, out: str, progress=print) -> dict:
  """Runs every cell not done yet; returns {cell (tuple of (field, value)): scores}."""
  results = {}
  cells = [dict(zip([f for f, _ in axes], values))
           for values in itertools.product(*[v for _, v in axes])]
  for number, cell in enumerate(cells, 1):
    folder = os.path.join(out, "cells", cell_name(cell))
    progress(f"cell {number}/{len(cells)}: " + ", ".join(f"{f}={v}" for f, v in cell.items()))
    scores = run_cell(config, overrides, cell, folder)
    results[tuple(cell.items())] = scores
    write_tables(out, axes, results)
    metric = headline(scores["latest"])
    progress(f"  {metric}: best {scores['best'][metric]:.4f}, final "
             f"{scores['latest'][metric]:.4f}")
  return results
