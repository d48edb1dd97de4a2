"""Training throughput per device count, on synthetic batches (no dataset needed).

  python benchmarks/throughput.py --config=configs/default.py --device_counts=1,2,4,8 \
      --steps=50 [--plot=scaling.png] [--config.data.batch_per_device=4]

Prints, per device count: step time, samples/s, samples/s per device, scaling efficiency,
and the model FLOP rate against an analytic count of the U-Net's convolutions (forward x3
for a training step), not XLA's cost analysis, which counts padded channels.
On a CPU, fake devices: XLA_FLAGS=--xla_force_host_platform_device_count=8.
"""

import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from brats_jax import model, sharding  # noqa: E402
from brats_jax.model import unet  # noqa: E402
from brats_jax.train import optimizer  # noqa: E402
from brats_jax.train import step as train_step  # noqa: E402
from brats_jax.workdir import train_state  # noqa: E402

FLAGS = flags.FLAGS


def _define_flags():
  """Defined when run as a script: aot.py and peer.py import this module's functions."""
  config_flags.DEFINE_config_file("config", "configs/default.py", "Config file.")
  flags.DEFINE_list("device_counts", None, "Device counts to measure (default: 1 and all).")
  flags.DEFINE_integer("steps", 30, "Timed steps per device count.")
  flags.DEFINE_integer("warmup", 3, "Untimed steps (compilation) per device count.")
  flags.DEFINE_string("plot", None, "Write a scaling plot (PNG) here.")


def analytic_train_flops(config) -> float:
  """FLOPs of one training sample (unet.training_flops_per_sample)."""
  return unet.training_flops_per_sample(model.model_config(config),
                                         config.data.patch_size)


def synthetic_batch(config, global_batch: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  shape = (global_batch,) + tuple(config.data.patch_size)
  labels = np.zeros(shape, np.uint8)
  centre = tuple(s // 2 for s in shape[1:])
  labels[(slice(None),) + tuple(slice(c - c // 2, c + c // 2) for c in centre)] = 2
  labels[(slice(None),) + tuple(slice(c - c // 4, c + c // 4) for c in centre)] = 3
  channels = len(config.data.modalities)
  return {"image": rng.standard_normal(shape + (channels,)).astype(np.float16),
          "label": labels,
          "aug_seed": rng.integers(0, 1 << 32, global_batch, dtype=np.uint32)}


def measure(config, devices, steps: int, warmup: int) -> float:
  """Seconds per training step on `devices`, over batches that differ in their augmentation
  draws (so on-device augmentation costs what it costs on average)."""
  mesh = sharding.make_mesh(devices)
  global_batch = config.data.batch_per_device * len(devices)
  tx = optimizer.make_optimizer(config.train)
  graphdef, state = train_state.create_train_state(config, mesh, tx)
  step = train_step.make_train_step(graphdef, tx, mesh, config)
  batches = [sharding.to_global(synthetic_batch(config, global_batch, seed), mesh,
                                global_batch) for seed in range(8)]
  for i in range(warmup):
    state, metrics = step(state, batches[i % len(batches)])
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for i in range(steps):
    state, metrics = step(state, batches[i % len(batches)])
  jax.block_until_ready(metrics)
  return (time.perf_counter() - start) / steps


def main(argv):
  del argv
  config = FLAGS.config
  counts = [int(c) for c in FLAGS.device_counts] if FLAGS.device_counts else sorted(
      {1, jax.device_count()})
  flops = analytic_train_flops(config)
  print(f"device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform}); patch "
        f"{tuple(config.data.patch_size)}, batch {config.data.batch_per_device}/device, "
        f"dtype {config.model.dtype}; {flops / 1e12:.3f} TFLOP per training sample")
  print(f"{'devices':>7} {'step ms':>9} {'samples/s':>10} {'per device':>10} {'scaling':>8} "
        f"{'TFLOP/s/dev':>11}")
  rows = []
  for n in counts:
    seconds = measure(config, jax.devices()[:n], FLAGS.steps, FLAGS.warmup)
    samples = config.data.batch_per_device * n / seconds
    rows.append((n, samples))
    efficiency = samples / (rows[0][1] * n / rows[0][0])
    print(f"{n:>7} {seconds * 1e3:>9.1f} {samples:>10.2f} {samples / n:>10.2f} "
          f"{efficiency:>8.2f} {samples / n * flops / 1e12:>11.3f}", flush=True)
  if FLAGS.plot:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n, s = zip(*rows)
    plt.figure(figsize=(5, 4))
    plt.plot(n, s, "o-", label="measured")
    plt.plot(n, [rows[0][1] * x / rows[0][0] for x in n], "--", label="linear")
    plt.xlabel("devices")
    plt.ylabel("samples / s")
    plt.title(f"{jax.devices()[0].device_kind}, patch {tuple(config.data.patch_size)}")
    plt.legend()
    plt.grid(alpha=0.3)
    plt.savefig(FLAGS.plot, dpi=120, bbox_inches="tight")
    print(f"wrote {FLAGS.plot}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
