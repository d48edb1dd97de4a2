"""The same network and recipe in brats_jax and in PyTorch/MONAI, side by side on this machine.

  pip install -e ".[peer]"          # CPU torch and MONAI (optional; never needed to train)
  python benchmarks/peer.py [--data=RAW_DIR --heldout=RAW_DIR] [--steps=250]
      [--train_seconds=300] [--repeats=3] [--out=benchmarks/results/peer.json]

Without --data, synthetic BraTS 2021-layout cases are written first: --synthetic=demo (24 to
train on, 10 held out, 64x64x48 at 1 mm, as `make demo`) or brain_2mm (30 and 10 brain-sized
heads of 70x85x70 at 2 mm, with lookalikes of tumour: white-matter hyperintensities, enhancing
choroid plexus and vessels). Each side runs in its own process, one after the other:

  step      one train step on a fixed batch (same network, float32, batch 2, config patch),
            without augmentation (MONAI augments in its loader) and, ours, with it; at the
            end again, --step_rounds times per side with the sides alternating, each step
            timed alone (the median of 20 per round, and the ratio's median over rounds)
  train     the usual pipeline of each, end to end: brats_jax prepares a store and trains
            with configs/demo.py, validating on fold --val_fold (0: a fifth of the training
            cases) where it chooses its post-processing; MONAI trains on every case: caches
            them (CacheDataset), crops patches with RandCropByPosNegLabeld and augments on
            the CPU in a DataLoader worker
  predict   whole-case Gaussian sliding-window inference of every held-out case, and of
            cases of realistic size (3 each of 140x170x140, a brain-cropped 1-mm BraTS case,
            and 70x85x70, the same at 2 mm; the first includes compilation; skip with
            --no_realistic)
            and again at the end, --predict_rounds times per side with the sides
            alternating (each a fresh process with a warm compilation cache: one untimed
            pass, then the median and fastest case of two timed passes per size)
  score     mean region Dice (WT, TC, ET) and HD95 of those predictions against their labels
  repeats   with --repeats=K, both sides train K-1 more times with seeds 1..K-1 (the same
            steps as the first run, warm caches) and predict the held-out cases again: the
            held-out scores' mean and spread over the K runs of each side, since one run
            near the ceiling differs from the next by more than the sides differ

The network is configs/demo.py's U-Net, and in MONAI a DynUNet of the same levels, filters,
kernels and strides (instance norm, leaky ReLU, 2 deep-supervision heads), trained with Dice
+ cross-entropy on softmax classes, AdamW, warm-up then cosine. With --train_seconds both
sides train for that many seconds' worth of steps (from their own measured step time)
instead of --steps: the same CPU budget, which is what decides accuracy on a laptop.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch_peers

from brats_jax import files  # noqa: E402
from brats_jax import labels as label_values  # noqa: E402
from brats_jax.data import discovery  # noqa: E402
from brats_jax.evaluation import metrics  # noqa: E402

START = time.time()
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)



def _config():
  from brats_jax.config import io as config_io
  return config_io.load_config_file(os.path.join(ROOT, "configs", "demo.py"))


def _jax_config(changes: list):
  """configs/demo.py with --jax_set's KEY=VALUE changes (values as Python literals, else
  strings)."""
  import ast
  config = _config()
  for change in changes:
    key, _, text = change.partition("=")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    config.update_from_flattened_dict({key: value})
  return config


def _batch(config) -> int:
  """The batch on one device (configs/demo.py gives data.global_batch)."""
  return config.data.global_batch or config.data.batch_per_device


def _peak_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _region_scores(predicted_internal, reference_internal, spacing) -> dict:
  """Dice and HD95 (mm) per region: BraTS ranks on both."""
  scores = {}
  for r in label_values.REGIONS:
    predicted = np.isin(predicted_internal, label_values.REGION_LABELS[r])
    reference = np.isin(reference_internal, label_values.REGION_LABELS[r])
    scores[r] = metrics.dice(predicted, reference)
    scores[f"hd95_{r}"] = metrics.hd95(predicted, reference, spacing)
  return scores


def _summary(per_case: list) -> dict:
  """Mean Dice per region and over regions ("mean"), mean HD95 per region and over them."""
  means = {key: float(np.mean([c[key] for c in per_case])) for key in per_case[0]}
  return {**means, "mean": float(np.mean([means[r] for r in label_values.REGIONS])),
          "mean_hd95": float(np.mean([means[f"hd95_{r}"] for r in label_values.REGIONS]))}


# ---- brats_jax ---------------------------------------------------------------------------


def run_jax(args) -> dict:
  import jax
  import throughput

  from brats_jax import runtime
  from brats_jax.data import prepare
  from brats_jax.inference import postprocessing, predict
  from brats_jax.train import loop

  runtime.configure()  # as every brats_jax command: the persistent compilation cache
  config = _jax_config(args.jax_set)
  from brats_jax import sharding
  # As every brats_jax command runs on this machine: its cores as CPU devices (runtime.py).
  devices = sharding.training_devices(config)
  result = {"side": "brats_jax", "jax": jax.__version__, "devices": len(devices)}
  def measure_step(augment=True):
    measured = config.copy_and_resolve_references()
    measured.augment.enabled = augment
    return throughput.measure(measured, devices, steps=10, warmup=2)["step_s"]

  if args.train_seconds:  # the budget needs the step time first
    result["step_seconds"] = measure_step()
  steps = args.steps if not args.train_seconds else max(
      int(args.train_seconds / result["step_seconds"]), 20)
  work = tempfile.mkdtemp(prefix="peer_jax_")
  started = time.time()
  prepare.prepare(args.data, os.path.join(work, "store"), num_workers=2)
  result["prepare_seconds"] = time.time() - started
  config.data.store = os.path.join(work, "store")
  config.data.val_fold = args.val_fold
  config.seed = args.seed
  config.train.num_steps = steps
  config.log_every_steps = 10  # the demo's: a read-back every step would slow the loop
  config.checkpoint.every_steps = steps
  workdir = os.path.join(work, "run")
  # A one-step launch first: process start to its step 1 logged (written at once, as the
  # last step of its launch), what a user waits for before training starts.
  one_step = config.copy_and_resolve_references()
  one_step.train.num_steps, one_step.train.warmup_steps = 1, 0
  loop.train_and_validate(one_step, os.path.join(work, "one_step"), devices=devices)
  with open(os.path.join(work, "one_step", "metrics.jsonl")) as f:
    result["first_step_after_seconds"] = json.loads(f.readline())["time"] - START
  started = time.time()
  loop.train_and_validate(config, workdir, devices=devices)
  result["train_seconds"] = time.time() - started
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  result["steps"] = steps
  steady = [r["train/samples_per_second"] for r in records  # (validation records: none)
            if r["step"] > 10 and "train/samples_per_second" in r]
  result["train_samples_per_second"] = float(np.median(steady))
  timings, _ = predict.predict_folder(workdir, args.heldout, os.path.join(work, "pred"),
                                      progress=False)
  result["predict_seconds_per_case"] = float(np.mean([t for _, t in timings[1:]]))
  result["predict_first_case_seconds"] = timings[0][1]

  result["heldout_dice"] = heldout_scores(os.path.join(work, "pred"), args.heldout)
  if args.val_fold >= 0:  # the same model without the post-processing chosen on validation
    predict.predict_folder(workdir, args.heldout, os.path.join(work, "pred_raw"),
                           progress=False, postprocess=False)
    result["heldout_dice_without_postprocessing"] = heldout_scores(
        os.path.join(work, "pred_raw"), args.heldout)
    result["postprocessing"] = postprocessing.read_decision(workdir)["description"]
  # whole-case prediction at realistic sizes
  for name, folder in _realistic_folders(args.realistic):
    timings, _ = predict.predict_folder(workdir, folder, os.path.join(work, f"pred_{name}"),
                                        progress=False)
    result[f"predict_{name}_seconds_per_case"] = float(np.mean([t for _, t in timings[1:]]))
    result[f"predict_{name}_first_case_seconds"] = timings[0][1]
  result["trained"] = workdir  # for the alternating prediction rounds
  result["peak_rss_gib"] = _peak_rss_gib()
  if not args.train_seconds:  # measured last, so the first-step figure is a fresh process's
    result["step_seconds"] = measure_step()
  # MONAI augments in its DataLoader worker, outside the step: this one is like for like.
  result["step_seconds_no_augmentation"] = measure_step(augment=False)
  return result


def heldout_scores(predictions: str, heldout: str) -> dict:
  """_summary of the predictions (CASE_ID.nii.gz) of every held-out case against its labels."""
  from brats_jax.data import raw_cases
  per_case = []
  for case in discovery.find_cases(heldout):
    reference = raw_cases.read_raw_case(case)[1]
    predicted, _, spacing = _read_prediction(
        os.path.join(predictions, f"{case.case_id}.nii.gz"), case)
    per_case.append(_region_scores(predicted, reference, spacing))
  return _summary(per_case)


def _read_prediction(path, case):
  from brats_jax.imageio import nifti
  raw, affine, spacing = nifti.load_label(path)
  return case.convention.encode(raw, path), affine, spacing


# ---- PyTorch / MONAI ---------------------------------------------------------------------


def _monai_optimizer(net, config, steps):
  import torch
  optimizer = torch.optim.AdamW(net.parameters(), lr=config.train.learning_rate,
                                weight_decay=config.train.weight_decay)
  warmup = config.train.warmup_steps

  def factor(step):  # linear warm-up, then cosine to zero: optax's schedule of the config
    if step < warmup:
      return step / warmup
    return 0.5 * (1 + np.cos(np.pi * min(step - warmup, steps - warmup) / (steps - warmup)))

  return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _monai_step_times(config, steps: int = 10) -> list:
  """Seconds of each of `steps` train steps on a fixed batch (after 2 untimed ones)."""
  import torch
  net, loss = torch_peers.monai_network(config, 4), torch_peers.monai_loss("softmax")
  optimizer, _ = _monai_optimizer(net, config, 100)
  shape = (_batch(config), len(config.data.modalities)) + tuple(
      config.data.patch_size)
  images = torch.randn(shape)
  labels = torch.randint(0, 4, (shape[0], 1) + shape[2:]).float()
  net.train()
  times = []
  for i in range(steps + 2):
    started = time.perf_counter()
    optimizer.zero_grad()
    value = loss(net(images), labels)
    value.backward()
    optimizer.step()
    if i >= 2:
      times.append(time.perf_counter() - started)
  return times


def _monai_step_seconds(config) -> float:
  return float(np.mean(_monai_step_times(config)))


def _monai_case_dicts(root):
  return [{"image": list(c.images), "label": c.label, "case_id": c.case_id}
          for c in discovery.find_cases(root)]


def _monai_base_transforms(with_label=True):
  from monai import transforms as mt
  keys = ["image", "label"] if with_label else ["image"]
  steps = [mt.LoadImaged(keys=["image"], image_only=True),
           mt.EnsureChannelFirstd(keys=["image"])]
  if with_label:  # separate loaders: one LoadImaged for both corrupted channels in MONAI 1.6.1
    steps += [mt.LoadImaged(keys=["label"], image_only=True),
              mt.EnsureChannelFirstd(keys=["label"]),
              mt.MapLabelValued(keys=["label"], orig_labels=[0, 1, 2, 4],
                                target_labels=[0, 1, 2, 3])]  # BraTS 2021 -> classes
  steps += [mt.CropForegroundd(keys=keys, source_key="image", allow_smaller=True),
            mt.NormalizeIntensityd(keys=["image"], nonzero=True, channel_wise=True),
            mt.EnsureTyped(keys=keys, track_meta=False)]
  return steps


def _monai_train_transforms(config):
  """MONAI's crops and augmentation with the config's probabilities and ranges (only the
  crops where config.augment.enabled is off)."""
  from monai import transforms as mt
  a = config.augment
  keys = ["image", "label"]
  crop = mt.RandCropByPosNegLabeld(keys=keys, label_key="label",
                                   spatial_size=tuple(config.data.patch_size),
                                   pos=config.data.foreground_fraction,
                                   neg=1 - config.data.foreground_fraction, num_samples=1)
  if not a.enabled:
    return mt.Compose(_monai_base_transforms() + [crop])
  return mt.Compose(_monai_base_transforms() + [
      crop,
      mt.RandRotated(keys=keys, range_x=np.deg2rad(a.max_rotation_deg),
                     range_y=np.deg2rad(a.max_rotation_deg),
                     range_z=np.deg2rad(a.max_rotation_deg), prob=a.p_rotation,
                     mode=("bilinear", "nearest"), keep_size=True),
      mt.RandZoomd(keys=keys, min_zoom=a.scale_range[0], max_zoom=a.scale_range[1],
                   prob=a.p_scale, mode=("trilinear", "nearest"), keep_size=True),
      *[mt.RandFlipd(keys=keys, prob=a.p_mirror, spatial_axis=axis) for axis in range(3)],
      mt.RandScaleIntensityd(keys=["image"], factors=0.25, prob=a.p_brightness),
      mt.RandAdjustContrastd(keys=["image"], gamma=tuple(a.gamma_range), prob=a.p_gamma),
      mt.RandGaussianNoised(keys=["image"], std=a.noise_std_max, prob=a.p_noise),
  ])


def _monai_predict(net, config, folder) -> tuple:
  """([seconds per case], [region Dice per case]) of MONAI's whole-case prediction: read,
  preprocess, sliding window, uncrop, write the labels, timed as brats_jax's per case."""
  import nibabel as nib
  import torch
  from monai import transforms as mt
  from monai.inferers import sliding_window_inference

  from brats_jax.data import preprocessing, raw_cases

  infer = mt.Compose(_monai_base_transforms(with_label=False))
  per_case, seconds = [], []
  output = tempfile.mkdtemp(prefix="peer_monai_pred_")
  for case, item in zip(discovery.find_cases(folder), _monai_case_dicts(folder)):
    images, reference, affine, spacing = raw_cases.read_raw_case(case)
    _, _, geometry = preprocessing.preprocess(images, None, case.images[0])
    tick = time.perf_counter()
    image = infer({"image": item["image"]})["image"][None]
    with torch.no_grad():
      probabilities = torch.softmax(sliding_window_inference(
          image, tuple(config.data.patch_size), config.eval.sw_batch_per_device, net,
          overlap=config.eval.overlap, mode="gaussian",
          sigma_scale=config.eval.sigma_scale), 1)
    predicted = preprocessing.to_original_geometry(
        probabilities[0].argmax(0).numpy().astype(np.uint8), geometry, reference.shape)
    nib.save(nib.Nifti1Image(case.convention.decode(predicted), affine),
             os.path.join(output, f"{case.case_id}.nii.gz"))
    seconds.append(time.perf_counter() - tick)
    per_case.append(_region_scores(predicted, reference, spacing))
  return seconds, per_case


ROUND_STEPS = 20  # steps timed per side and round of --step_rounds


def fixed_batch_step(side: str, steps: int = ROUND_STEPS) -> dict:
  """The fixed-batch train step without augmentation alone, each step timed by itself:
  {median_s, min_s}. Run in alternation with the other side (--step_rounds)."""
  config = _config()
  config.augment.enabled = False
  if side == "jax":
    import throughput

    from brats_jax import runtime, sharding
    runtime.configure()
    row = throughput.measure(config, sharding.training_devices(config), steps=steps,
                             warmup=3, per_step=True)
    return {"median_s": row["step_s"], "min_s": row["step_s_min"]}
  times = _monai_step_times(config, steps)
  return {"median_s": float(np.median(times)), "min_s": float(min(times))}


def prediction_round(side: str, trained: str, realistic: str) -> dict:
  """{size: {median_s, min_s}} of whole-case prediction of the realistic cases by one side's
  trained model, in a fresh process: one untimed pass over each folder (compilation, warm
  caches), then the per-case seconds of two timed passes. Run in alternation with the other
  side (--predict_rounds)."""
  config = _config()
  if side == "jax":
    from brats_jax import runtime
    runtime.configure()
    from brats_jax.inference import predict
    output = tempfile.mkdtemp(prefix="peer_jax_round_")

    def per_case(folder):
      return [t for _, t in predict.predict_folder(trained, folder, output, progress=False)[0]]
  else:
    import torch
    torch.set_num_threads(os.cpu_count())
    net = torch_peers.monai_network(config, 4)
    net.load_state_dict(torch.load(trained))
    net.eval()

    def per_case(folder):
      return _monai_predict(net, config, folder)[0]
  result = {}
  for name, folder in _realistic_folders(realistic):
    per_case(folder)
    seconds = per_case(folder) + per_case(folder)
    result[name] = {"median_s": float(np.median(seconds)), "min_s": float(min(seconds))}
  return result


def _alternating(rounds: list, key=lambda r: r) -> dict:
  """Ratios ours / MONAI of rounds [{"jax": .., "monai": ..}] of {median_s, min_s}."""
  ratios = [key(r["jax"])["median_s"] / key(r["monai"])["median_s"] for r in rounds]
  fastest = {side: min(key(r[side])["min_s"] for r in rounds) for side in ("jax", "monai")}
  return {"ratio_median": float(np.median(ratios)), "ratio_range": [min(ratios), max(ratios)],
          # the least disturbed run of each side: the least noisy ratio
          "ratio_of_fastest": fastest["jax"] / fastest["monai"]}


def train_monai(config, data: str, steps: int, case_order: str = "epochs") -> tuple:
  """(net, {prepare_seconds, first_step_after_seconds}) of MONAI's usual training: cached
  cases, RandCropByPosNegLabeld and augmentation in a DataLoader worker. case_order
  "epochs": a shuffling loader (each case once per pass, MONAI's usual); "random": cases
  drawn with replacement, as brats_jax's "random"."""
  import torch
  from monai.data import CacheDataset, DataLoader

  net, loss = torch_peers.monai_network(config, 4), torch_peers.monai_loss("softmax")
  optimizer, scheduler = _monai_optimizer(net, config, steps)
  caching = time.time()
  dataset = CacheDataset(_monai_case_dicts(data), _monai_train_transforms(config),
                         num_workers=1, progress=False)
  timing = {"prepare_seconds": time.time() - caching}  # MONAI's counterpart: the cache
  sampler = (torch.utils.data.RandomSampler(dataset, replacement=True,
                                            num_samples=steps * _batch(config))
             if case_order == "random" else None)
  loader = DataLoader(dataset, batch_size=_batch(config), shuffle=sampler is None,
                      sampler=sampler, num_workers=1, persistent_workers=True, drop_last=True)
  net.train()
  step = 0
  while step < steps:
    for batch in loader:
      optimizer.zero_grad()
      value = loss(net(batch["image"]), batch["label"])
      value.backward()
      optimizer.step()
      scheduler.step()
      step += 1
      if step == 1:
        timing["first_step_after_seconds"] = time.time() - START
      if step == steps:
        break
  return net, timing


def run_monai(args) -> dict:
  import monai
  import torch

  torch.set_num_threads(os.cpu_count())
  monai.utils.set_determinism(seed=args.seed)
  config = _config()
  result = {"side": "monai", "torch": torch.__version__, "monai": monai.__version__}
  if args.train_seconds:
    result["step_seconds"] = _monai_step_seconds(config)
  steps = args.steps if not args.train_seconds else max(
      int(args.train_seconds / result["step_seconds"]), 20)
  started = time.time()
  net, timing = train_monai(config, args.data, steps)
  result.update(timing)
  result["train_seconds"] = time.time() - started
  result["steps"] = steps
  wall = result["train_seconds"] - (result["first_step_after_seconds"] - (started - START))
  result["train_samples_per_second"] = (steps - 1) * _batch(config) / wall

  net.eval()
  seconds, per_case = _monai_predict(net, config, args.heldout)
  result["predict_seconds_per_case"] = float(np.mean(seconds[1:]))
  result["predict_first_case_seconds"] = seconds[0]
  result["heldout_dice"] = _summary(per_case)
  for name, folder in _realistic_folders(args.realistic):
    seconds, _ = _monai_predict(net, config, folder)
    result[f"predict_{name}_seconds_per_case"] = float(np.mean(seconds[1:]))
    result[f"predict_{name}_first_case_seconds"] = seconds[0]
  result["trained"] = os.path.join(tempfile.mkdtemp(prefix="peer_monai_"), "net.pt")
  torch.save(net.state_dict(), result["trained"])  # for the alternating prediction rounds
  result["peak_rss_gib"] = _peak_rss_gib()
  if not args.train_seconds:
    result["step_seconds"] = _monai_step_seconds(config)
  result["step_seconds_no_augmentation"] = result["step_seconds"]  # augments in its loader
  return result


# ---- the comparison ----------------------------------------------------------------------


# Whole cases of realistic size for the prediction timing (3 each: the first includes
# compilation): a brain-cropped 1-mm BraTS case, and the same brain at 2 mm.
REALISTIC = {"1mm": (140, 170, 140), "2mm": (70, 85, 70)}


def _realistic_folders(realistic: str | None) -> list:
  return [(name, os.path.join(realistic, name)) for name in REALISTIC] if realistic else []


def _synthesise_realistic(folder: str) -> str:
  from brats_jax.data import synth
  for name, shape in REALISTIC.items():
    synth.write_dataset(os.path.join(folder, name), "brats2021", 3, shape, seed=2)
  return folder


# The synthetic sets (BraTS 2021 layout; training cases seed 0, held-out cases seed 1):
# "demo" is `make demo`'s, "brain_2mm" a brain-sized head at 2 mm holding lookalikes
# (white-matter hyperintensities, enhancing choroid plexus and vessels), harder and further
# from the ceiling.
SYNTHETIC = {
    "demo": {"train": 24, "heldout": 10, "shape": (64, 64, 48), "spacing": (1.0, 1.0, 1.0),
             "lookalikes": False},
    "brain_2mm": {"train": 30, "heldout": 10, "shape": (70, 85, 70),
                  "spacing": (2.0, 2.0, 2.0), "lookalikes": True},
}


def synthesise(folder: str, name: str = "demo", heldout_cases: int = 0) -> tuple:
  """(training folder, held-out folder) of SYNTHETIC[name] written under `folder`.

  heldout_cases > 0 writes that many held-out cases instead of the set's own count; case i
  is the same case whatever the count (each case's seed is (1, i)), so a longer held-out set
  extends the shorter one.
  """
  from brats_jax.data import synth
  spec = SYNTHETIC[name]
  data, heldout = os.path.join(folder, "train"), os.path.join(folder, "heldout")
  for path, count, seed in ((data, spec["train"], 0),
                            (heldout, heldout_cases or spec["heldout"], 1)):
    synth.write_dataset(path, "brats2021", count, spec["shape"], seed=seed,
                        spacing=spec["spacing"], lookalikes=spec["lookalikes"])
  return data, heldout


ROWS = [("step_seconds_no_augmentation", "train step, fixed batch, no augmentation (s)",
         False),
        ("step_seconds", "train step incl. our on-device augmentation (s)", False),
        ("first_step_after_seconds", "process start to first step done (s)", False),
        ("prepare_seconds", "of which preparing the store / cache (s)", False),
        ("train_samples_per_second", "training samples/s, steady", True),
        ("train_seconds", "training, end to end (s)", False),
        ("predict_seconds_per_case", "sliding-window prediction per case (s)", False),
        ("predict_1mm_seconds_per_case", "  a 140x170x140 case (1 mm) (s)", False),
        ("predict_2mm_seconds_per_case", "  a 70x85x70 case (2 mm) (s)", False),
        ("peak_rss_gib", "peak memory (GiB)", False)]


def _over_seeds(scores: list) -> dict:
  """{metric: {mean, sd, runs}} of the held-out scores of several runs of one side."""
  return {key: {"mean": float(np.mean([s[key] for s in scores])),
                "sd": float(np.std([s[key] for s in scores], ddof=1)),
                "runs": [s[key] for s in scores]} for key in scores[0]}


def _print_over_seeds(repeats: dict, count: int) -> None:
  keys = ["mean", *label_values.REGIONS, *[f"hd95_{r}" for r in label_values.REGIONS]]
  print(f"\nheld-out scores over {count} runs per side (mean ± sd; Dice, then HD95 in mm)")
  print(f"{'':10s}" + "".join(f"{k.replace('hd95_', 'HD95 '):>16s}" for k in keys))
  for side, metrics_ in repeats.items():
    print(f"{side:10s}" + "".join(
        f"{metrics_[k]['mean']:>9.3f} ± {metrics_[k]['sd']:<4.3f}" if "hd95" not in k else
        f"{metrics_[k]['mean']:>10.2f} ± {metrics_[k]['sd']:<3.2f}" for k in keys))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", help="raw training cases (default: synthetic)")
  parser.add_argument("--heldout", help="raw held-out cases with labels")
  parser.add_argument("--synthetic", choices=list(SYNTHETIC), default="demo",
                      help="the synthetic set written without --data")
  parser.add_argument("--steps", type=int, default=250)
  parser.add_argument("--train_seconds", type=float, default=0,
                      help="train each side this long (its steps from its step time)")
  parser.add_argument("--out", default=os.path.join(HERE, "results", "peer.json"))
  parser.add_argument("--val_fold", type=int, default=0,
                      help="brats_jax validates on this fold of the training cases and "
                           "predicts with the post-processing chosen there, scored also "
                           "without it, as configs/demo.py trains (-1: every case trains, "
                           "no post-processing)")
  parser.add_argument("--jax_set", action="append", default=[], metavar="KEY=VALUE",
                      help="a change to configs/demo.py on the brats_jax side, e.g. "
                      "data.foreground_centre=any_voxel (repeatable)")
  parser.add_argument("--repeats", type=int, default=1,
                      help="train and score each side this many times in all (seeds 0..K-1, "
                           "the first run's steps) and report the held-out scores' spread")
  parser.add_argument("--no_realistic", action="store_true",
                      help="skip the prediction timing on realistic case sizes")
  parser.add_argument("--step_rounds", type=int, default=3,
                      help="then time the fixed-batch step this many times per side, "
                           "alternating the sides (a noisy machine moves both alike)")
  parser.add_argument("--predict_rounds", type=int, default=3,
                      help="then time the prediction of the realistic cases this many times "
                           "per side, alternating the sides")
  parser.add_argument("--side", choices=["jax", "monai", "jax_step", "monai_step",
                                         "jax_predict", "monai_predict"],
                      help=argparse.SUPPRESS)
  parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument("--realistic", help=argparse.SUPPRESS)
  parser.add_argument("--trained", help=argparse.SUPPRESS)
  parser.add_argument("--result", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.side:
    side, _, part = args.side.partition("_")
    result = fixed_batch_step(side) if part == "step" else \
        prediction_round(side, args.trained, args.realistic) if part == "predict" else \
        (run_jax if side == "jax" else run_monai)(args)
    files.write_json(args.result, result)
    return
  work = tempfile.mkdtemp(prefix="peer_")
  if not args.data:
    args.data, args.heldout = synthesise(work, args.synthetic)
  elif not args.heldout:
    parser.error("--heldout is required with --data")
  args.realistic = None if args.no_realistic else _synthesise_realistic(
      os.path.join(work, "realistic"))
  sides = {}
  # brats_jax runs twice with a compilation cache of its own, empty at first: the first run
  # fills it, as any user's first run does; the table shows the second.
  env = dict(os.environ, PYTHONPATH=HERE,
             JAX_COMPILATION_CACHE_DIR=os.path.join(work, "compilation_cache"))

  def run_side(side, path, steps, train_seconds, seed=0, realistic=None):
    command = [sys.executable, os.path.abspath(__file__), f"--side={side}",
               f"--data={args.data}", f"--heldout={args.heldout}", f"--steps={steps}",
               f"--train_seconds={train_seconds}", f"--result={path}",
               f"--val_fold={args.val_fold}", f"--seed={seed}"] + [
                   f"--jax_set={change}" for change in args.jax_set] + (
                   [f"--realistic={realistic}"] if realistic else [])
    print(f"running {side} (seed {seed}) ...", flush=True)
    subprocess.run(command, check=True, env=env)
    with open(path) as f:
      return json.load(f)

  for run, side in enumerate(("jax", "jax", "monai")):
    sides.setdefault(side, []).append(run_side(
        side, os.path.join(work, f"{side}{run}.json"), args.steps, args.train_seconds,
        realistic=args.realistic))
  rounds = []
  for _ in range(args.step_rounds):
    rounds.append({})
    for side in ("jax", "monai"):
      path = os.path.join(work, f"{side}_step.json")
      subprocess.run([sys.executable, os.path.abspath(__file__), f"--side={side}_step",
                      f"--result={path}"], check=True, env=env)
      with open(path) as f:
        rounds[-1][side] = json.load(f)
  jax_side, monai_side = sides["jax"][1], sides["monai"][0]
  trained = {"jax": jax_side.pop("trained"), "monai": monai_side.pop("trained")}
  prediction_rounds = []
  for _ in range(args.predict_rounds if args.realistic else 0):
    prediction_rounds.append({})
    for side in ("jax", "monai"):
      path = os.path.join(work, f"{side}_predict.json")
      subprocess.run([sys.executable, os.path.abspath(__file__), f"--side={side}_predict",
                      f"--trained={trained[side]}", f"--realistic={args.realistic}",
                      f"--result={path}"], check=True, env=env)
      with open(path) as f:
        prediction_rounds[-1][side] = json.load(f)
  jax_side["first_run_first_step_after_seconds"] = sides["jax"][0]["first_step_after_seconds"]
  print(f"\n{'':42s}{'brats_jax':>12s}{'MONAI':>12s}{'MONAI/ours':>12s}")
  for key, name, higher_is_better in ROWS:
    if key not in jax_side:
      continue
    ours, theirs = jax_side[key], monai_side[key]
    print(f"{name:42s}{ours:12.3f}{theirs:12.3f}{theirs / ours:12.2f}"
          + ("  (higher is better)" if higher_is_better else ""))
  print(f"brats_jax's first run (empty compilation cache): first step after "
        f"{jax_side['first_run_first_step_after_seconds']:.1f} s")
  alternating = None
  if rounds:
    alternating = {"rounds": rounds, **_alternating(rounds)}
    print(f"fixed-batch step, {len(rounds)} alternating rounds (median of {ROUND_STEPS} "
          "steps each): "
          + ", ".join(f"{r['jax']['median_s']:.3f} vs {r['monai']['median_s']:.3f} s"
                      for r in rounds)
          + f"; ours / MONAI {alternating['ratio_median']:.2f}x (median of rounds), "
          f"{alternating['ratio_of_fastest']:.2f}x (fastest step of each)")
  prediction_alternating = None
  if prediction_rounds:
    prediction_alternating = {"rounds": prediction_rounds}
    for name in REALISTIC:
      ratios = _alternating(prediction_rounds, lambda r: r[name])
      prediction_alternating[name] = ratios
      print(f"prediction of a {'x'.join(map(str, REALISTIC[name]))} case, "
            f"{len(prediction_rounds)} alternating rounds (median case of each): "
            + ", ".join(f"{r['jax'][name]['median_s']:.3f} vs "
                        f"{r['monai'][name]['median_s']:.3f} s" for r in prediction_rounds)
            + f"; ours / MONAI {ratios['ratio_median']:.2f}x (median of rounds), "
            f"{ratios['ratio_of_fastest']:.2f}x (fastest case of each)")
  for side in (jax_side, monai_side):
    d = side["heldout_dice"]
    print(f"{side['side']:>9s}: {side['steps']} steps; held-out Dice WT {d['WT']:.3f} "
          f"TC {d['TC']:.3f} ET {d['ET']:.3f} mean {d['mean']:.3f}; HD95 WT "
          f"{d['hd95_WT']:.1f} TC {d['hd95_TC']:.1f} ET {d['hd95_ET']:.1f} mm")
  repeats = None
  if args.repeats > 1:  # the same steps as the first run of each side, other seeds
    runs = {"jax": [jax_side], "monai": [monai_side]}
    for seed in range(1, args.repeats):
      for side in runs:
        runs[side].append(run_side(side, os.path.join(work, f"{side}_seed{seed}.json"),
                                   runs[side][0]["steps"], 0, seed=seed))
    repeats = {name: _over_seeds([r["heldout_dice"] for r in runs[side]])
               for side, name in (("jax", "brats_jax"), ("monai", "monai"))}
    _print_over_seeds(repeats, args.repeats)
  record = {"date": time.strftime("%Y-%m-%d"), "machine": {
      "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
      "python": platform.python_version()}, "args": {k: v for k, v in vars(args).items()
                                                      if k not in ("side", "result")},
      "brats_jax": jax_side, "monai": monai_side, "realistic_shapes": REALISTIC,
      "fixed_batch_step_alternating": alternating,
      "prediction_alternating": prediction_alternating, "over_seeds": repeats}
  files.write_json(args.out, record)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
