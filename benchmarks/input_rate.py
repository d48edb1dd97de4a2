"""How fast the host streams training patches from a prepared store, and whether the train
step waits for them.

  python benchmarks/input_rate.py [--store=STORE] [--patch=128] [--threads=1,2] \
      [--out=benchmarks/results/input_rate.json]

Without --store, 8 synthetic cases of 160x192x144 (the size of a brain-cropped BraTS case)
are prepared first. Reads patches as training does (PatchSampler.batch: one TensorStore batch
of reads per step, foreground-centred samples as configured, float16) from a thread pool of
each size given, and prints patches/s, patches/s per core, and the cores a device training at
the field's fastest published rate (72 samples/s per H100, MLPerf) would need for reading
alone. Then trains configs/demo.py for 60 steps twice, streaming from the store and with the
cases held on the device, and prints the share of time each loop waited for its input.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from brats_jax import files  # noqa: E402
from brats_jax.config import io as config_io  # noqa: E402
from brats_jax.data import prepare, synth  # noqa: E402
from brats_jax.data.store import PreparedStore  # noqa: E402
from brats_jax.train import loop  # noqa: E402
from brats_jax.train.host_input import PatchSampler, Prefetcher  # noqa: E402
from brats_jax.train.metrics_log import read_metrics  # noqa: E402

H100_RECORD = 72.2  # samples/s per GPU, MLPerf 3D U-Net (NVIDIA)


def patches_per_second(store_path, patch, threads, seconds=20.0, batch=2) -> float:
  store = PreparedStore(store_path)
  sampler = PatchSampler(store, store.case_ids(), (patch,) * 3, batch, slice(0, batch),
                         1 / 3, seed=0)
  sampler.batch(0)  # open the arrays
  batches = Prefetcher(sampler.batch, 1, threads)
  count, started = 0, time.perf_counter()
  while time.perf_counter() - started < seconds:
    next(batches)
    count += batch
  rate = count / (time.perf_counter() - started)
  batches.close()
  return rate


def input_wait(store_path, placement, work) -> tuple:
  """(median input-wait fraction, samples/s) of a short demo-config run."""
  config = config_io.load_config_file(os.path.join(ROOT, "configs", "demo.py"))
  config.data.store = store_path
  config.data.val_fold = -1
  config.data.placement = placement
  config.train.num_steps = 60
  config.log_every_steps = 10
  config.checkpoint.every_steps = 60
  workdir = os.path.join(work, f"run_{placement}")
  loop.train_and_validate(config, workdir)
  records = [r for r in read_metrics(workdir) if "train/input_wait_fraction" in r][1:]
  return (float(np.median([r["train/input_wait_fraction"] for r in records])),
          float(np.median([r["train/samples_per_second"] for r in records])))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--store")
  parser.add_argument("--patch", type=int, default=128)
  parser.add_argument("--threads", default="1,2")
  parser.add_argument("--out", default=os.path.join(HERE, "results", "input_rate.json"))
  args = parser.parse_args()
  work = tempfile.mkdtemp(prefix="input_rate_")
  if not args.store:
    raw = os.path.join(work, "raw")
    synth.write_dataset(raw, "brats2021", 8, (160, 192, 144), seed=0, progress=True)
    args.store = os.path.join(work, "store")
    prepare.prepare(raw, args.store, num_workers=2)
  cores = os.cpu_count()
  result = {"date": time.strftime("%Y-%m-%d"), "cores": cores, "patch": args.patch,
            "store": args.store, "rates": {}}
  print(f"{args.patch}^3 x 4-channel patches from {args.store} ({cores} cores):")
  for threads in (int(t) for t in args.threads.split(",")):
    rate = patches_per_second(args.store, args.patch, threads)
    per_core = rate / min(threads, cores)
    result["rates"][threads] = {"patches_per_second": rate, "per_core": per_core}
    print(f"  {threads} reading threads: {rate:.1f} patches/s ({per_core:.1f} per core; "
          f"{H100_RECORD / per_core:.1f} cores per H100 at {H100_RECORD} samples/s)")
  for placement in ("host", "replicated"):
    demo_store = os.path.join(work, "demo_store")
    if not os.path.exists(demo_store):
      raw = os.path.join(work, "demo_raw")
      synth.write_dataset(raw, "brats2021", 24, (64, 64, 48), seed=0)
      prepare.prepare(raw, demo_store, num_workers=2)
    wait, rate = input_wait(demo_store, placement, work)
    result[f"demo_{placement}"] = {"input_wait_fraction": wait, "samples_per_second": rate}
    print(f"  demo training, data {placement}: waited for input {100 * wait:.1f}% of the "
          f"time at {rate:.1f} samples/s")
  files.write_json(args.out, result)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
