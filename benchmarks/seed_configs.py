"""Each seed config (configs/seeds/) on synthetic data in its own layout, within a CPU budget.

  python benchmarks/seed_configs.py [--train_seconds=120] [--seeds=isensee2017,...]
      [--out=benchmarks/results/seed_configs.json]

Per config, as a user would with the usual commands: synthesise 16 training and 4 held-out
cases in the config's layout (64x64x48 volumes; LGG: 24 slices of 64x64), prepare them with
the options the config's docstring gives (crop and resize scaled to these volumes), train
with the config itself, only the store, the patch size and the step count overridden (the
steps that fit --train_seconds at the step time measured first), predict the held-out cases
and score them with brats-jax-evaluate. Prints a table (mean Dice per region on the held-out
cases) and writes the JSON. Validation during training is left as the config has it and is
not counted in the budget.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from brats_jax import files  # noqa: E402  (imports neither jax nor torch)

SHAPE, LGG_SHAPE = (64, 64, 48), (64, 64, 24)
SEEDS = {  # config: (layout, patch size, prepare flags for SHAPE)
    "isensee2017": ("brats2021", (32, 32, 32), []),
    "unet3d_softmax_brats2020": ("brats2021", (32, 32, 32), [
        "--crop=centre", "--crop_shape=56,56,40", "--normalisation=minmax",
        "--smooth_sigma=1", "--sharpen=0.3"]),
    "kayalibay2017": ("brats2015", (32, 32, 32), [
        "--crop=centre", "--crop_shape=56,56,40", "--resize_shape=48,48,32",
        "--normalisation=divide", "--divide_by=255"]),
    "henry2020_dilated": ("brats2015_repacked", (32, 32, 32), [
        "--normalisation=divide", "--divide_by=255"]),
    "lgg_unet2d": ("lgg", (64, 64), ["--normalisation=divide", "--divide_by=255"]),
    "lgg_unet2d_model2": ("lgg", (64, 64), ["--normalisation=divide", "--divide_by=255"]),
    "lgg_transunet": ("lgg", (64, 64), ["--normalisation=divide", "--divide_by=255"]),
    "msd_patches": ("msd", (48, 48, 16), []),
}


def _run(module, *args) -> str:
  result = subprocess.run([sys.executable, "-m", f"brats_jax.cli.{module}", *args],
                          capture_output=True, text=True)
  if result.returncode:
    sys.exit(f"brats_jax.cli.{module} {' '.join(args)} failed:\n{result.stderr[-3000:]}")
  return result.stdout


def _step_seconds(config_path: str, patch) -> float:
  import jax
  import throughput

  from brats_jax import runtime
  from brats_jax.config import io as config_io
  runtime.configure()  # as the commands: the compilation cache, the CPU alone beside libtpu
  config = config_io.load_config_file(config_path)
  config.data.patch_size = tuple(patch)
  return throughput.measure(config, jax.devices()[:1], steps=5, warmup=2)["step_s"]


def run_seed(name: str, train_seconds: float, work: str) -> dict:
  from brats_jax.data import synth
  layout, patch, prepare_flags = SEEDS[name]
  config_path = os.path.join(ROOT, "configs", "seeds", f"{name}.py")
  raw, heldout = os.path.join(work, "raw"), os.path.join(work, "heldout")
  shape = LGG_SHAPE if layout == "lgg" else SHAPE
  synth.write_dataset(raw, layout, 16, shape, seed=0)
  synth.write_dataset(heldout, layout, 4, shape, seed=1)
  store, workdir, predictions = (os.path.join(work, n) for n in ("store", "run", "pred"))
  _run("prepare", f"--input={raw}", f"--output={store}", *prepare_flags)
  step_seconds = _step_seconds(config_path, patch)
  steps = max(int(train_seconds / step_seconds), 10)
  patch_flag = "(" + ",".join(map(str, patch)) + ")"
  train_flags = [f"--config={config_path}", f"--workdir={workdir}",
                 f"--config.data.store={store}", f"--config.train.num_steps={steps}",
                 "--config.train.num_epochs=0", "--config.data.val_store=",
                 "--config.data.val_fold=0", "--config.data.val_fraction=0.0",
                 f"--config.data.patch_size={patch_flag}"]
  started = time.time()
  _run("train", *train_flags)
  wall = time.time() - started
  _run("predict", f"--workdir={workdir}", f"--input={heldout}", f"--output={predictions}")
  scores = os.path.join(work, "scores.csv")
  _run("evaluate", f"--predictions={predictions}", f"--references={heldout}",
       f"--output={scores}")
  with open(os.path.splitext(scores)[0] + "_summary.json") as f:
    summary = json.load(f)["metrics"]
  dice = {r: summary[f"{r}_dice"]["mean"] for r in ("WT", "TC", "ET") if f"{r}_dice" in summary}
  return {"config": f"configs/seeds/{name}.py", "layout": layout, "patch_size": list(patch),
          "prepare_flags": prepare_flags, "step_seconds": step_seconds, "steps": steps,
          "train_wall_seconds": wall, "heldout_dice": dice,
          "mean_dice": sum(dice.values()) / len(dice),
          "heldout_accuracy": summary["accuracy"]["mean"],
          "heldout_mean_iou": summary["mean_iou"]["mean"]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--train_seconds", type=float, default=120.0)
  parser.add_argument("--seeds", default=",".join(SEEDS))
  parser.add_argument("--out", default=os.path.join(HERE, "results", "seed_configs.json"))
  args = parser.parse_args()
  results = []
  for name in args.seeds.split(","):
    with tempfile.TemporaryDirectory(prefix=f"seed_{name}_") as work:
      print(f"{name} ...", flush=True)
      results.append(run_seed(name, args.train_seconds, work))
      r = results[-1]
      print(f"  {r['steps']} steps of {r['step_seconds']:.3f} s; held-out Dice "
            + "  ".join(f"{k} {v:.3f}" for k, v in r["heldout_dice"].items()), flush=True)
  import jax
  record = {"date": datetime.date.today().isoformat(), "jax": jax.__version__,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "train_seconds": args.train_seconds, "results": results}
  files.write_json(args.out, record)
  print(f"\n{'config':<28}{'layout':<20}{'steps':>7}  held-out Dice (WT TC ET)")
  for r in results:
    print(f"{r['config'][14:-3]:<28}{r['layout']:<20}{r['steps']:>7}  "
          + " ".join(f"{v:.3f}" for v in r["heldout_dice"].values()))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
