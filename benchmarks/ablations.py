"""What each side's short-budget recipe gains from its patch sampling, augmentation and order.

  pip install -e ".[peer]"   # for the MONAI side; --sides=jax needs nothing more
  python benchmarks/ablations.py [--steps=800] [--seeds=2] [--synthetic=demo|brain_2mm]
      [--out=benchmarks/results/ablations.json]

One of peer.py's synthetic sets (demo: 24 BraTS 2021-layout training cases of 64x64x48, seed
0, and 10 held-out cases, seed 1). Every variant is configs/demo.py with one change, trained
on all training cases for the same --steps (the same budget up to the variant's own step
cost, which is recorded), then whole-case prediction of the held-out cases, scored per region
in Dice and HD95. Each run is a process of its own; each variant runs once per seed (the
seed draws the initial weights and the data).

  side       variant        the one change against the side's baseline
  brats_jax  baseline       demo.py: half the patches centred on tumour (a class at random,
                            then a voxel of it), our augmentation, cases drawn at random
  brats_jax  fg_1_3         a third of the patches on tumour (nnU-Net's)
  brats_jax  fg_all         every patch on tumour
  brats_jax  no_augment     no augmentation
  brats_jax  epochs         case_order "epochs": each case once per pass (MONAI's loader)
  brats_jax  any_voxel      foreground patches centred on any tumour voxel alike (MONAI's)
  brats_jax  dice_smooth    Dice smoothing 1e-5 (MONAI's DiceLoss) instead of 1
  brats_jax  no_intensity   no brightness, contrast or gamma change (drawn per channel in
                            ours; spatial augmentation and noise as the baseline)
  monai      baseline       RandCropByPosNegLabeld pos 1 neg 1 (any tumour voxel or any
                            background voxel of the brain box), MONAI's augmentation with the
                            same probabilities, a shuffling DataLoader
  monai      fg_1_3         pos 1 neg 2
  monai      no_augment     crops only
  monai      random         cases drawn with replacement (brats_jax's order)
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import peer

from brats_jax import files

HERE = os.path.dirname(os.path.abspath(__file__))

# (side, variant) -> changes to configs/demo.py
VARIANTS = {
    ("jax", "baseline"): {},
    ("jax", "fg_1_3"): {"data.foreground_fraction": 1 / 3},
    ("jax", "fg_all"): {"data.foreground_fraction": 1.0},
    ("jax", "no_augment"): {"augment.enabled": False},
    ("jax", "epochs"): {"data.case_order": "epochs"},
    ("jax", "any_voxel"): {"data.foreground_centre": "any_voxel"},
    ("jax", "dice_smooth"): {"loss.dice_smooth": 1e-5},
    ("jax", "no_intensity"): {"augment.p_brightness": 0.0, "augment.p_contrast": 0.0,
                              "augment.p_gamma": 0.0},
    ("monai", "baseline"): {},
    ("monai", "fg_1_3"): {"data.foreground_fraction": 1 / 3},
    ("monai", "no_augment"): {"augment.enabled": False},
    ("monai", "random"): {"data.case_order": "random"},
}
NAMES = {"jax": "brats_jax", "monai": "MONAI"}


def _variant_config(side: str, variant: str, seed: int, steps: int):
  config = peer._config()
  if side == "monai":
    config.data.case_order = "epochs"  # a shuffling DataLoader: MONAI's usual
  config.update_from_flattened_dict(VARIANTS[(side, variant)])
  config.seed, config.train.num_steps = seed, steps
  return config


def run_jax(config, store: str, heldout: str) -> dict:
  from brats_jax import runtime, sharding
  from brats_jax.inference import predict
  from brats_jax.train import loop

  runtime.configure()
  work = tempfile.mkdtemp(prefix="ablation_jax_")
  config.data.store, config.data.val_fold = store, -1  # all cases train, as MONAI's
  config.checkpoint.every_steps = config.train.num_steps
  started = time.time()
  loop.train_and_validate(config, os.path.join(work, "run"),
                          devices=sharding.training_devices(config))
  train_seconds = time.time() - started
  predict.predict_folder(os.path.join(work, "run"), heldout, os.path.join(work, "pred"),
                         progress=False)
  return {"train_seconds": train_seconds,
          "heldout": peer.heldout_scores(os.path.join(work, "pred"), heldout)}


def run_monai(config, data: str, heldout: str) -> dict:
  import monai
  import torch

  torch.set_num_threads(os.cpu_count())
  monai.utils.set_determinism(seed=config.seed)
  started = time.time()
  net, _ = peer.train_monai(config, data, config.train.num_steps, config.data.case_order)
  train_seconds = time.time() - started
  net.eval()
  _, per_case = peer._monai_predict(net, config, heldout)
  return {"train_seconds": train_seconds, "heldout": peer._summary(per_case)}


def _one_run(args) -> None:
  config = _variant_config(args.side, args.variant, args.seed, args.steps)
  result = (run_jax(config, args.store, args.heldout) if args.side == "jax"
            else run_monai(config, args.data, args.heldout))
  with open(args.result, "w") as f:
    json.dump(result, f)


def _table(runs: list) -> str:
  rows = ["| side | variant | mean Dice (per seed) | Dice WT / TC / ET | HD95 WT / TC / ET (mm) "
          "| vs baseline: Dice, mean HD95 | training s |", "|---|---|---|---|---|---|---|"]
  by_key = {}
  for run in runs:
    by_key.setdefault((run["side"], run["variant"]), []).append(run)

  def mean(key_runs, key):
    return float(np.mean([r["heldout"][key] for r in key_runs]))

  for (side, variant), key_runs in by_key.items():
    base = by_key.get((side, "baseline"), key_runs)
    seeds = ", ".join(f"{r['heldout']['mean']:.3f}" for r in key_runs)
    dice = " / ".join(f"{mean(key_runs, r):.3f}" for r in ("WT", "TC", "ET"))
    hd95 = " / ".join(f"{mean(key_runs, f'hd95_{r}'):.1f}" for r in ("WT", "TC", "ET"))
    delta = (f"{mean(key_runs, 'mean') - mean(base, 'mean'):+.3f}, "
             f"{mean(key_runs, 'mean_hd95') - mean(base, 'mean_hd95'):+.1f} mm")
    seconds = np.mean([r["train_seconds"] for r in key_runs])
    rows.append(f"| {NAMES[side]} | {variant} | {mean(key_runs, 'mean'):.3f} ({seeds}) | "
                f"{dice} | {hd95} | {delta} | {seconds:.0f} |")
  return "\n".join(rows)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--synthetic", choices=list(peer.SYNTHETIC), default="demo",
                      help="peer.py's synthetic set to train and score on")
  parser.add_argument("--steps", type=int, default=800)
  parser.add_argument("--seeds", type=int, default=2)
  parser.add_argument("--sides", default="jax,monai")
  parser.add_argument("--variants", default="", help="comma-separated names (default: all)")
  parser.add_argument("--out", default=os.path.join(HERE, "results", "ablations.json"))
  parser.add_argument("--add", action="store_true",
                      help="keep the runs already in --out (same data: it is synthesised "
                      "from fixed seeds) and add these")
  for hidden in ("side", "variant", "store", "data", "heldout", "result"):
    parser.add_argument(f"--{hidden}", help=argparse.SUPPRESS)
  parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.result:
    return _one_run(args)

  from brats_jax.data import prepare
  work = tempfile.mkdtemp(prefix="ablations_")
  data, heldout = peer.synthesise(work, args.synthetic)
  store = os.path.join(work, "store")
  prepare.prepare(data, store, num_workers=2)
  sides = args.sides.split(",")
  chosen = [key for key in VARIANTS if key[0] in sides
            and (not args.variants or key[1] in args.variants.split(","))]
  runs = []
  if args.add and os.path.exists(args.out):
    with open(args.out) as f:
      runs = json.load(f)["runs"]
  for seed in range(args.seeds):
    for side, variant in chosen:
      result = os.path.join(work, f"{side}_{variant}_{seed}.json")
      tick = time.time()
      subprocess.run([sys.executable, __file__, f"--side={side}", f"--variant={variant}",
                      f"--seed={seed}", f"--steps={args.steps}", f"--store={store}",
                      f"--data={data}", f"--heldout={heldout}", f"--result={result}"],
                     check=True)
      with open(result) as f:
        run = {"side": side, "variant": variant, "seed": seed, **json.load(f)}
      runs.append(run)
      print(f"{NAMES[side]} {variant} seed {seed}: mean Dice {run['heldout']['mean']:.3f}, "
            f"mean HD95 {run['heldout']['mean_hd95']:.1f} mm ({time.time() - tick:.0f} s)",
            flush=True)
      out = {"date": time.strftime("%Y-%m-%d"), "args": vars(args),
             "machine": {"cpu": platform.machine(), "cores": os.cpu_count(),
                         "python": platform.python_version()},
             "variants": {f"{s}/{v}": c for (s, v), c in VARIANTS.items()}, "runs": runs}
      files.write_json(args.out, out)  # after every run: a stop keeps those done
  print(_table(runs))


if __name__ == "__main__":
  main()
