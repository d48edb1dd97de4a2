"""Training throughput per device count, on synthetic batches (no dataset needed).

  python benchmarks/throughput.py --config=configs/demo.py --device_counts=1,2,4,8 \
      --batch_per_device=1 --processes=2 --out=scaling.json --plot=scaling.png

Weak scaling (--batch_per_device: a fixed batch per device) or strong scaling
(--global_batch: a fixed global batch, each sample split over mesh.space devices where the
batch is smaller than the devices). --processes=P adds a row of P local processes with
--local_devices each (jax.distributed over localhost, gloo collectives on CPUs).

Prints and writes, per device count: step time, samples/s, samples/s per device, scaling
efficiency, the model FLOP rate (analytic count of the U-Net's convolutions, forward x3 per
training sample), and the gradient all-reduce: its bytes per step and the time of the same
all-reduce measured alone on the same devices, as a share of the step (an upper bound: XLA
may overlap it with the backward pass). On a CPU the devices are fake
(JAX_NUM_CPU_DEVICES=8) and share the machine's cores, so
efficiency there measures overheads, not hardware scaling.
"""

import json
import os
import platform
import socket
import subprocess
import sys
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from brats_jax import files, model, runtime, sharding
from brats_jax.model import unet
from brats_jax.train import optimizer
from brats_jax.train import step as train_step
from brats_jax.workdir import train_state

FLAGS = flags.FLAGS


def _define_flags():
  """Defined when run as a script: aot.py and peer.py import this module's functions."""
  config_flags.DEFINE_config_file("config", "configs/default.py", "Config file.")
  flags.DEFINE_list("device_counts", None, "Device counts to measure (default: 1 and all).")
  flags.DEFINE_integer("batch_per_device", 0, "Weak scaling: samples per device.")
  flags.DEFINE_integer("global_batch", 0, "Strong scaling: samples per step on any count.")
  flags.DEFINE_integer("steps", 20, "Timed steps per device count.")
  flags.DEFINE_integer("warmup", 2, "Untimed steps (compilation) per device count.")
  flags.DEFINE_integer("processes", 1, "Also measure this many local processes (> 1).")
  flags.DEFINE_integer("local_devices", 4, "Fake CPU devices per process with --processes.")
  flags.DEFINE_string("out", None, "Write the results as JSON here.")
  flags.DEFINE_string("plot", None, "Write a scaling plot (PNG) here.")
  # Set by the parent for each of its --processes workers.
  flags.DEFINE_string("coordinator", None, "host:port (a worker of --processes).")
  flags.DEFINE_integer("process_id", 0, "This worker's index.")


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


def _timed(fn, args, steps: int, warmup: int) -> float:
  """Seconds per call of fn(state, *args) -> (state, out), the state carried along."""
  state, out = args[0], None
  for i in range(warmup + steps):
    if i == warmup:
      jax.block_until_ready(out)
      start = time.perf_counter()
    state, out = fn(state, *args[1][i % len(args[1])])
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps


def allreduce_seconds(shapes, mesh, steps: int) -> float:
  """The step's gradient all-reduce (a pmean of float32 arrays of the parameters' shapes
  across the data axis) timed alone on `mesh`."""
  mean = jax.jit(jax.shard_map(
      lambda g: jax.lax.pmean(jax.lax.pcast(g, sharding.DATA, to="varying"), sharding.DATA),
      mesh=mesh, in_specs=jax.P(), out_specs=jax.P(), axis_names={sharding.DATA}))
  grads = [sharding.replicate(np.zeros(shape, np.float32), mesh) for shape in shapes]
  def reduce(g):
    reduced = mean(g)
    return reduced, reduced

  return _timed(reduce, (grads, [()]), steps, 2)


def step_times(fn, args, steps: int, warmup: int) -> list:
  """Seconds of each of `steps` calls of fn(state, *args) -> (state, out), each waited for:
  their median and minimum hold up where a noisy machine skews a mean."""
  state, times = args[0], []
  for i in range(warmup + steps):
    started = time.perf_counter()
    state, out = fn(state, *args[1][i % len(args[1])])
    jax.block_until_ready(out)
    times.append(time.perf_counter() - started)
  return times[warmup:]


def measure(config, devices, steps: int, warmup: int, per_step: bool = False) -> dict:
  """One row: the step on `devices` over batches that differ in their augmentation draws (so
  on-device augmentation costs what it costs on average), and its all-reduce. per_step:
  each step timed alone (step_s is then their median; step_s_min their minimum)."""
  mesh, global_batch = sharding.training_mesh(config, devices)
  tx = optimizer.make_optimizer(config.train)
  graphdef, state = train_state.create_train_state(config, mesh, tx)
  step = train_step.make_train_step(graphdef, tx, mesh, config)
  rows = sharding.process_batch_slice(mesh, global_batch)
  batches = [(sharding.to_global({k: v[rows] for k, v in synthetic_batch(
      config, global_batch, seed).items()}, mesh, global_batch),) for seed in range(4)]
  shapes = [x.shape for x in jax.tree.leaves(state["params"])]
  param_bytes = sum(4 * int(np.prod(shape)) for shape in shapes)
  if per_step:  # donates the state
    times = step_times(step, (state, batches), steps, warmup)
    seconds, fastest = float(np.median(times)), {"step_s_min": min(times)}
  else:
    seconds, fastest = _timed(step, (state, batches), steps, warmup), {}
  reduce_s = allreduce_seconds(shapes, mesh, steps) if mesh.shape["data"] > 1 else 0.0
  return {**fastest, "devices": len(devices), "processes": jax.process_count(),
          "space": int(mesh.shape[sharding.SPACE]),
          "global_batch": global_batch, "step_s": seconds,
          "samples_per_s": global_batch / seconds,
          "allreduce_bytes": param_bytes if mesh.shape["data"] > 1 else 0,
          "allreduce_s": reduce_s, "allreduce_share": reduce_s / seconds}


def machine_name() -> str:
  """The CPU's model name (Linux), else what platform knows."""
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor() or platform.machine()


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _in_processes(argv) -> dict:
  """Runs this script as FLAGS.processes workers of FLAGS.local_devices devices each; returns
  process 0's row."""
  coordinator = f"127.0.0.1:{_free_port()}"
  env = dict(runtime.cpu_devices_env(FLAGS.local_devices), JAX_PLATFORMS="cpu")
  passed = [a for a in argv[1:] if not a.startswith(("--processes", "--out", "--plot",
                                                     "--device_counts"))]
  workers = [subprocess.Popen(
      [sys.executable, os.path.abspath(__file__), *passed, f"--processes={FLAGS.processes}",
       f"--coordinator={coordinator}", f"--process_id={i}"], env=env,
      stdout=subprocess.PIPE, text=True) for i in range(FLAGS.processes)]
  outputs = [w.communicate(timeout=3600)[0] for w in workers]
  if any(w.returncode for w in workers):
    raise RuntimeError(f"a worker failed: {[w.returncode for w in workers]}")
  return json.loads(outputs[0].strip().splitlines()[-1])


def _configured(config):
  config = config.copy_and_resolve_references()
  if FLAGS.batch_per_device or FLAGS.global_batch:
    config.data.batch_per_device, config.data.global_batch = (FLAGS.batch_per_device,
                                                              FLAGS.global_batch)
    config.mesh.space = 0
  return config


def _plot(result: dict, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = result["rows"]
  single = [r for r in rows if r["processes"] == 1]
  base = single[0]["samples_per_s"] / single[0]["devices"]
  fig, ax = plt.subplots(figsize=(5.5, 4))
  ax.plot([r["devices"] for r in single], [r["samples_per_s"] for r in single], "o-",
          label="1 process (measured)")
  for r in rows:
    if r["processes"] > 1:
      ax.plot(r["devices"], r["samples_per_s"], "s", ms=8,
              label=f"{r['processes']} processes x {r['devices'] // r['processes']} "
                    "(measured)")
  counts = sorted({r["devices"] for r in rows})
  ax.plot(counts, [base * n for n in counts], "--", color="grey", label="linear")
  ax.set(xlabel="devices", ylabel="samples / s", xticks=counts,
         title=f"{result['label']}" + (f" ({result['cpu_count']} cores, fake devices)"
                                       if result["device_kind"] == "cpu" else "")
         + f"\n{result['config']}, {result['scaling']} scaling")
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  files.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight",
                                                   format="png"))


def main(argv):
  runtime.configure()
  config = _configured(FLAGS.config)
  if FLAGS.coordinator:  # a worker of --processes: one row, as JSON, from process 0
    jax.distributed.initialize(FLAGS.coordinator, FLAGS.processes,
                               FLAGS.process_id)
    row = measure(config, jax.devices(), FLAGS.steps, FLAGS.warmup)
    if jax.process_index() == 0:
      print(json.dumps(row), flush=True)
    return
  counts = [int(c) for c in FLAGS.device_counts] if FLAGS.device_counts else sorted(
      {1, jax.device_count()})
  flops = analytic_train_flops(config)
  device = jax.devices()[0]
  result = {"label": f"measured on {device.platform}", "device_kind": device.device_kind,
            "machine": machine_name(),
            "cpu_count": os.cpu_count(),
            "config": config_flags.get_config_filename(FLAGS["config"]),
            "patch_size": list(config.data.patch_size), "dtype": config.model.dtype,
            "scaling": "strong" if config.data.global_batch else "weak",
            "train_tflop_per_sample": flops / 1e12, "jax": jax.__version__, "rows": []}
  print(f"device: {device.device_kind} ({device.platform}); patch "
        f"{tuple(config.data.patch_size)}, {result['scaling']} scaling, dtype "
        f"{config.model.dtype}; {flops / 1e12:.4f} TFLOP per training sample")
  print(f"{'devices':>9} {'space':>5} {'batch':>5} {'step ms':>9} {'samples/s':>10} "
        f"{'per dev':>8} {'scaling':>7} {'TFLOP/s/dev':>11} {'all-reduce':>16}")

  def report(row):
    first = result["rows"][0] if result["rows"] else row
    per_device = row["samples_per_s"] / row["devices"]
    row["efficiency"] = per_device / (first["samples_per_s"] / first["devices"])
    if config.data.global_batch:  # strong scaling: the same batch over more devices
      row["efficiency"] = row["samples_per_s"] / first["samples_per_s"] * first["devices"] \
          / row["devices"]
    row["tflops_per_device"] = per_device * flops / 1e12
    result["rows"].append(row)
    name = f"{row['processes']}x{row['devices'] // row['processes']}" \
        if row["processes"] > 1 else str(row["devices"])
    reduce = (f"{row['allreduce_bytes'] / 2**20:.1f} MiB {100 * row['allreduce_share']:.0f}%"
              if row["allreduce_bytes"] else "-")
    print(f"{name:>9} {row['space']:>5} {row['global_batch']:>5} {row['step_s'] * 1e3:>9.1f} "
          f"{row['samples_per_s']:>10.2f} {per_device:>8.2f} {row['efficiency']:>7.2f} "
          f"{row['tflops_per_device']:>11.4f} {reduce:>16}", flush=True)

  for n in counts:
    report(measure(config, jax.devices()[:n], FLAGS.steps, FLAGS.warmup))
  if FLAGS.processes > 1:
    report(_in_processes(sys.argv))
  if FLAGS.out:
    files.write_json(FLAGS.out, result)
    print(f"wrote {FLAGS.out}")
  if FLAGS.plot:
    _plot(result, FLAGS.plot)
    print(f"wrote {FLAGS.plot}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
