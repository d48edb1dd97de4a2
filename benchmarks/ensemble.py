"""Does an ensemble of the five folds beat the best single fold on held-out cases?

  python benchmarks/ensemble.py [--synthetic=demo|brain_2mm] [--steps=800]
      [--set=checkpoint.every_steps=500 ...] [--heldout=40] [--tta] [--folds=DIR]
      [--out=benchmarks/results/ensemble_five_folds.json]

One of peer.py's synthetic sets (demo: 24 BraTS 2021-layout cases of 64x64x48 to train on,
as `make demo`, and 10 held-out cases): the training cases are prepared into one store; no
fold sees the held-out cases. `brats-jax-train --folds=all`
trains configs/demo.py on each fold (--steps steps each); then each fold alone, and the five
together (their probabilities averaged), predict the held-out cases with the post-processing
each chose on validation, and brats-jax-evaluate scores them. Printed and written: mean Dice
and HD95 per region for every fold and for the ensemble, and whether the ensemble beats the
best single fold (the fold with the highest mean region Dice) in mean Dice and in mean HD95,
with a paired bootstrap interval of the Dice gain and on how many cases it is ahead of, level
with, or behind that fold; the same against the fold with the best score on its own
validation cases (the fold a user would keep without a held-out set).

  --heldout=N   score on N held-out cases instead of the set's 10 (the first 10 are the same
                cases, so a longer set extends the shorter one);
  --tta         every prediction, the folds' and the ensemble's, averages the 8 mirror flips;
  --folds=DIR   score the folds an earlier run trained (the `folds` folder of its work
                directory) instead of training new ones.
"""

import argparse
import csv as csv_module
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import peer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REGIONS = ("WT", "TC", "ET")


def _run(*args):
  started = time.time()
  subprocess.run([sys.executable, "-m", *args], check=True, stdout=subprocess.DEVNULL)
  return time.time() - started


def _scores(work, name, runs, heldout, tta):
  """Held-out means of `runs` (one workdir, or several as an ensemble), and per case."""
  predictions, csv = f"{work}/pred_{name}", f"{work}/scores_{name}.csv"
  _run("brats_jax.cli.predict", *[f"--workdir={r}" for r in runs], f"--input={heldout}",
       f"--output={predictions}", f"--tta={tta}")
  _run("brats_jax.cli.evaluate", f"--predictions={predictions}", f"--references={heldout}",
       f"--output={csv}")
  with open(csv.replace(".csv", "_summary.json")) as f:
    summary = json.load(f)["metrics"]
  scores = {f"{r}_{m}": summary[f"{r}_{m}"]["mean"] for r in REGIONS for m in ("dice", "hd95")}
  scores["mean_dice"] = summary["mean_region_dice"]["mean"]
  scores["mean_hd95"] = sum(scores[f"{r}_hd95"] for r in REGIONS) / len(REGIONS)
  with open(csv, newline="") as f:
    scores["cases"] = {row["case_id"]: {
        "mean_dice": float(row["mean_region_dice"]),
        "mean_hd95": sum(float(row[f"{r}_hd95"]) for r in REGIONS) / len(REGIONS)}
        for row in csv_module.DictReader(f)}
  return scores


def _gain_over_fold(ensemble, fold):
  """The ensemble's gain in mean region Dice over `fold`, case by case: the mean, a paired
  bootstrap 95% interval (10,000 resamplings of the cases), and on how many cases it is
  ahead, level (within 0.001) or behind."""
  cases = sorted(ensemble["cases"])
  gains = np.array([ensemble["cases"][c]["mean_dice"] - fold["cases"][c]["mean_dice"]
                    for c in cases])
  resampled = np.random.default_rng(0).choice(gains, (10_000, len(gains))).mean(axis=1)
  return {"dice_gain": float(gains.mean()),
          "dice_gain_ci95": [float(q) for q in np.percentile(resampled, [2.5, 97.5])],
          "cases_ahead": int((gains > 1e-3).sum()), "cases_level": int((abs(gains) <= 1e-3).sum()),
          "cases_behind": int((gains < -1e-3).sum())}


def fold_validation_picks(folds_dir, folds):
  """The fold a user would keep without held-out cases: the highest mean region Dice at its
  last validation (metrics.jsonl), each fold scored on its own validation cases."""
  from brats_jax.train import metrics_log

  def last_validation(fold):
    records = [r for r in metrics_log.read_metrics(os.path.join(folds_dir, fold))
               if "val/mean_dice" in r]
    return records[-1]["val/mean_dice"] if records else float("-inf")
  return max(folds, key=last_validation)


def _steps_per_fold(folds_dir):
  with open(os.path.join(folds_dir, "fold_0", "config.json")) as f:
    return json.load(f)["train"]["num_steps"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--synthetic", choices=list(peer.SYNTHETIC), default="demo")
  parser.add_argument("--steps", type=int, default=800)
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="a change to configs/demo.py for every fold, e.g. "
                      "checkpoint.every_steps=500 (repeatable)")
  parser.add_argument("--heldout", type=int, default=0,
                      help="held-out cases to score on (0: the set's own count)")
  parser.add_argument("--tta", action="store_true",
                      help="every prediction averages the 8 mirror flips")
  parser.add_argument("--folds", default=None, metavar="DIR",
                      help="score the folds an earlier run trained instead of training")
  parser.add_argument("--out", default=os.path.join(HERE, "results",
                                                    "ensemble_five_folds.json"))
  args = parser.parse_args()
  if args.folds and args.set:
    parser.error("--set changes how folds train; --folds scores folds already trained")
  work = tempfile.mkdtemp(prefix="ensemble_")
  raw, heldout = peer.synthesise(work, args.synthetic, args.heldout)
  if args.folds:
    folds_dir, train_s, steps = os.path.abspath(args.folds), None, _steps_per_fold(args.folds)
  else:
    folds_dir, steps = f"{work}/folds", args.steps
    _run("brats_jax.cli.prepare", f"--input={raw}", f"--output={work}/store")
    train_s = _run("brats_jax.cli.train", f"--config={ROOT}/configs/demo.py",
                   f"--workdir={folds_dir}", f"--config.data.store={work}/store",
                   f"--config.train.num_steps={steps}", "--folds=all",
                   *[f"--config.{change}" for change in args.set])
  folds = sorted(d for d in os.listdir(folds_dir) if d.startswith("fold_"))
  results = {fold: _scores(work, fold, [f"{folds_dir}/{fold}"], heldout, args.tta)
             for fold in folds}
  results["ensemble"] = _scores(work, "ensemble", [folds_dir], heldout, args.tta)
  best = max(folds, key=lambda f: results[f]["mean_dice"])
  ensemble = results["ensemble"]
  verdict = {"best_single_fold": best,
             "dice_beats_best_fold": ensemble["mean_dice"] > results[best]["mean_dice"],
             "hd95_beats_best_fold": ensemble["mean_hd95"] < results[best]["mean_hd95"],
             **_gain_over_fold(ensemble, results[best])}
  # The best fold by held-out Dice is the strictest reading, and one no user can make; the
  # fold their own validation picks is the one a user would have kept instead.
  picked = fold_validation_picks(folds_dir, folds)
  verdict["fold_validation_picks"] = {
      "fold": picked,
      "hd95_beats_it": ensemble["mean_hd95"] < results[picked]["mean_hd95"],
      **_gain_over_fold(ensemble, results[picked])}
  header = f"{'':<10}{'mean Dice':>10}" + "".join(f"{r + ' Dice':>10}" for r in REGIONS) + \
      f"{'mean HD95':>11}" + "".join(f"{r + ' HD95':>10}" for r in REGIONS)
  print(header)
  for name, s in results.items():
    print(f"{name:<10}{s['mean_dice']:>10.4f}" + "".join(f"{s[r + '_dice']:>10.4f}"
                                                         for r in REGIONS)
          + f"{s['mean_hd95']:>11.2f}" + "".join(f"{s[r + '_hd95']:>10.2f}" for r in REGIONS))
  print(json.dumps(verdict))
  from brats_jax import files

  files.write_json(args.out, {
      "date": time.strftime("%Y-%m-%d"), "label": "measured on this machine's CPU",
      "synthetic": {"name": args.synthetic, **peer.SYNTHETIC[args.synthetic]},
      "heldout_cases": len(ensemble["cases"]), "tta": args.tta,
      "steps_per_fold": steps, "folds_from": args.folds,
      "config": "configs/demo.py", "config_changes": args.set, "train_all_folds_s": train_s,
      "results": results, "verdict": verdict})
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
