"""One accelerator check, prepared ahead of a loan: brats_jax's train step and whole-case
prediction against the same network in PyTorch/MONAI, on the device this machine has.

  benchmarks/device_check.sh            # full form (GPU): writes $OUT/device_check.json
  benchmarks/device_check.sh --smoke    # the same code paths on a CPU with tiny shapes

Measured, per side, each in its own process:
- the train step of configs/default.py (128^3, bf16, 4 channels, deep supervision; ours with
  its on-device augmentation) at batch 1, 2, 4 and 8 on one device: time to the first step
  (compilation or autotuning included), step ms, samples/s, peak memory, and analytic MFU
  against the device's bf16 peak (H100/H200: 989 TFLOP/s dense);
- whole-volume prediction of one 240x240x155 case with the Gaussian sliding window: first
  call (compilation) and a second.
The MONAI side is a DynUNet of the same widths with bf16 autocast, channels_last_3d and
cudnn.benchmark, SGD Nesterov as configs/default.py. Sizes left out for the time budget are
named in the JSON. Nothing here is an estimate: every figure is a wall-clock measurement.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]
PEAK_BF16_TFLOPS = {"H100": 989, "H200": 989, "A100": 312}
CASE_SHAPE = (240, 240, 155)


def _config(smoke: bool):
  from brats_jax.config import io as config_io

  config = config_io.load_config_file(
      os.path.join(ROOT, "configs", "tiny.py" if smoke else "default.py"))
  config.data.batch_per_device, config.mesh.space = 0, 1
  return config


def _peak_tflops(kind: str):
  return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in kind), None)


def _within_budget(args, started: float, batch: int) -> bool:
  return batch == args.batches[0] or time.time() - started < args.budget_s


def _row(batch, first_s, step_s, peak_bytes, flops, peak_tflops):
  samples = batch / step_s
  return {"batch": batch, "first_step_s": first_s, "step_ms": 1e3 * step_s,
          "samples_per_s": samples,
          "peak_memory_gib": peak_bytes / 2**30 if peak_bytes else None,
          "analytic_mfu": samples * flops / (peak_tflops * 1e12) if peak_tflops else None}


def run_jax(args) -> dict:
  import jax
  import throughput

  from brats_jax import sharding
  from brats_jax.inference.case_predictor import make_case_predictor
  from brats_jax.train import optimizer
  from brats_jax.train import step as train_step
  from brats_jax.train.compile import compiled_memory_bytes
  from brats_jax.workdir import train_state

  config = _config(args.smoke)
  device = jax.devices()[0]
  mesh = sharding.make_mesh([device])
  flops = throughput.analytic_train_flops(config)
  peak = _peak_tflops(device.device_kind)
  result = {"side": "brats_jax", "jax": jax.__version__, "device": device.device_kind,
            "train": [], "skipped_batches": []}
  started = time.time()
  for batch in args.batches:
    if not _within_budget(args, started, batch):
      result["skipped_batches"].append(batch)
      continue
    config.data.global_batch = batch
    tx = optimizer.make_optimizer(config.train)
    graphdef, state = train_state.create_train_state(config, mesh, tx)
    step = train_step.make_train_step(graphdef, tx, mesh, config)
    batches = [sharding.to_global(throughput.synthetic_batch(config, batch, seed), mesh, batch)
               for seed in range(2)]
    tick = time.perf_counter()
    compiled = step.lower(state, batches[0]).compile()
    state, metrics = compiled(state, batches[0])
    jax.block_until_ready(metrics)
    first = time.perf_counter() - tick
    for i in range(2):
      state, metrics = compiled(state, batches[i % 2])
    jax.block_until_ready(metrics)
    tick = time.perf_counter()
    for i in range(args.steps):
      state, metrics = compiled(state, batches[i % 2])
    jax.block_until_ready(metrics)
    stats = device.memory_stats() or {}
    row = _row(batch, first, (time.perf_counter() - tick) / args.steps,
               stats.get("peak_bytes_in_use"), flops, peak)
    row["planned_memory_gib"] = compiled_memory_bytes(compiled) / 2**30
    result["train"].append(row)
    print(f"brats_jax train batch {batch}: {row['step_ms']:.1f} ms", flush=True)

  # Whole-case prediction with the last state's weights (the speed does not depend on them).
  predict = make_case_predictor(graphdef, mesh, config)
  image = np.random.default_rng(0).standard_normal(args.case_shape + (4,)).astype(np.float32)
  times = []
  for _ in range(2):
    tick = time.perf_counter()
    predict(state, image)
    times.append(time.perf_counter() - tick)
  result["predict"] = {"case_shape": list(args.case_shape), "first_s": times[0],
                       "second_s": times[1]}
  return result


def run_torch(args) -> dict:
  try:
    import torch
    from monai.inferers import sliding_window_inference
  except ImportError as e:
    return {"side": "monai", "skipped": f"{e.name} is not installed"}
  import peer
  import throughput

  config = _config(args.smoke)
  cuda = torch.cuda.is_available()
  device = torch.device("cuda" if cuda else "cpu")
  torch.backends.cudnn.benchmark = True
  kind = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
  flops = throughput.analytic_train_flops(config)
  result = {"side": "monai", "torch": torch.__version__, "device": kind, "train": [],
            "skipped_batches": []}
  memory_format = torch.channels_last_3d
  autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=not args.smoke)
  net = peer._monai_network(config).to(device, memory_format=memory_format)
  loss_fn = peer._monai_loss()
  optimiser = torch.optim.SGD(net.parameters(), lr=config.train.learning_rate,
                              momentum=config.train.momentum, nesterov=True)
  channels = len(config.data.modalities)
  started = time.time()

  def sync():
    if cuda:
      torch.cuda.synchronize()

  def one_step(images, labels):
    optimiser.zero_grad(set_to_none=True)
    with autocast:
      loss = loss_fn(net(images), labels)
    loss.backward()
    optimiser.step()

  for batch in args.batches:
    if not _within_budget(args, started, batch):
      result["skipped_batches"].append(batch)
      continue
    shape = (batch, channels) + tuple(config.data.patch_size)
    images = torch.randn(shape, device=device).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 4, (batch, 1) + shape[2:], device=device).float()
    if cuda:
      torch.cuda.reset_peak_memory_stats()
    net.train()
    tick = time.perf_counter()
    one_step(images, labels)
    sync()
    first = time.perf_counter() - tick
    for _ in range(2):
      one_step(images, labels)
    sync()
    tick = time.perf_counter()
    for _ in range(args.steps):
      one_step(images, labels)
    sync()
    row = _row(batch, first, (time.perf_counter() - tick) / args.steps,
               torch.cuda.max_memory_allocated() if cuda else None, flops, _peak_tflops(kind))
    result["train"].append(row)
    print(f"monai train batch {batch}: {row['step_ms']:.1f} ms", flush=True)

  net.eval()
  image = torch.randn((1, channels) + tuple(args.case_shape), device=device)
  times = []
  for _ in range(2):
    tick = time.perf_counter()
    with torch.no_grad(), autocast:
      sliding_window_inference(image, tuple(config.data.patch_size),
                               config.eval.sw_batch_per_device, net,
                               overlap=config.eval.overlap, mode="gaussian",
                               sigma_scale=config.eval.sigma_scale)
    sync()
    times.append(time.perf_counter() - tick)
  result["predict"] = {"case_shape": list(args.case_shape), "first_s": times[0],
                       "second_s": times[1]}
  return result


def _table(results: dict) -> str:
  lines = [f"{'side':<10} {'batch':>5} {'first s':>8} {'step ms':>8} {'samples/s':>9} "
           f"{'peak GiB':>8} {'MFU':>6}"]
  for side in ("brats_jax", "monai"):
    result = results[side]
    if "skipped" in result:
      lines.append(f"{side:<10} skipped: {result['skipped']}")
      continue
    for r in result["train"]:
      memory = f"{r['peak_memory_gib']:.2f}" if r["peak_memory_gib"] else "-"
      mfu = f"{100 * r['analytic_mfu']:.1f}%" if r["analytic_mfu"] else "-"
      lines.append(f"{side:<10} {r['batch']:>5} {r['first_step_s']:>8.1f} "
                   f"{r['step_ms']:>8.1f} {r['samples_per_s']:>9.2f} {memory:>8} {mfu:>6}")
    p = result["predict"]
    lines.append(f"{side:<10} predict {'x'.join(map(str, p['case_shape']))}: first "
                 f"{p['first_s']:.2f} s, then {p['second_s']:.2f} s")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true", help="tiny shapes, any machine")
  parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."),
                                                    "device_check.json"))
  parser.add_argument("--side", choices=("jax", "torch"), help=argparse.SUPPRESS)
  parser.add_argument("--budget_s", type=float, default=150,
                      help="per side: no new batch size starts after this many seconds")
  args = parser.parse_args()
  args.batches = (1, 2) if args.smoke else (1, 2, 4, 8)
  args.steps = 2 if args.smoke else 20
  args.case_shape = (40, 40, 31) if args.smoke else CASE_SHAPE
  if args.side:  # one side, in this process: its JSON on the last line of stdout
    print(json.dumps(run_jax(args) if args.side == "jax" else run_torch(args)))
    return
  results = {"date": time.strftime("%Y-%m-%d %H:%M"), "smoke": args.smoke,
             "host": platform.node(), "python": platform.python_version()}
  for side, name in (("jax", "brats_jax"), ("torch", "monai")):
    tick = time.time()
    done = subprocess.run([sys.executable, __file__, f"--side={side}",
                           f"--budget_s={args.budget_s}"] + (["--smoke"] if args.smoke else []),
                          stdout=subprocess.PIPE, text=True)
    if done.returncode:
      results[name] = {"side": name, "skipped": f"failed with exit status {done.returncode}"}
    else:
      results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    results[name]["wall_s"] = time.time() - tick
  from brats_jax import files

  files.write_json(args.out, results)
  print(_table(results))
  print(f"wrote {args.out}")
  if "skipped" in results["brats_jax"]:
    sys.exit(1)


if __name__ == "__main__":
  main()
