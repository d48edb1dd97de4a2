"""Compile the train step for a TPU or NVIDIA GPU this machine does not have, and read XLA.

  pip install -e ".[tpu-aot]"       # libtpu: compile-only TPU devices
  pip install -e ".[gpu-aot]"       # jax-cuda12-plugin: compile-only NVIDIA GPUs
  python benchmarks/aot.py --config=configs/default.py --target=v5e-4 --batch_per_device=2 \
      [--find_max_batch] [--out=result.json] [--hlo=step.hlo.txt]

Targets: v4-N, v5e-N, v5p-N, v6e-N (TPU chips) and h100-N, h200-N, a100-N (GPUs; the target
descriptions are in benchmarks/gpu_targets/). Prints, per device: memory XLA plans (arguments,
temporaries, total) against the chip's HBM, FLOPs and bytes per step from XLA's cost analysis,
XLA's own step-time estimate where it gives one (TPU), and the model FLOPs utilisation that
estimate implies against the analytic count. A program that does not fit is refused by XLA in
seconds, as on the chip; --find_max_batch searches the largest batch per device that fits.

Everything here is a compiler figure, not a measurement on hardware.
"""

import os
import re
import sys
import time

os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.experimental.topologies as topologies  # noqa: E402
import throughput  # noqa: E402  (benchmarks/: the analytic FLOP count)
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from brats_jax import files, sharding  # noqa: E402
from brats_jax.config import checks  # noqa: E402
from brats_jax.train import host_input, optimizer  # noqa: E402
from brats_jax.train import step as train_step  # noqa: E402
from brats_jax.train.compile import compiled_memory_bytes  # noqa: E402
from brats_jax.workdir import train_state  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/default.py", "Config file.")
flags.DEFINE_string("target", "v5e-4", "v4-N, v5e-N, v5p-N, v6e-N, h100-N, h200-N, a100-N.")
flags.DEFINE_integer("batch_per_device", None, "Overrides data.batch_per_device.")
flags.DEFINE_bool("find_max_batch", False, "Search the largest batch per device that fits.")
flags.DEFINE_string("out", None, "Write the result as JSON here.")
flags.DEFINE_string("hlo", None, "Write the optimised HLO of the step here.")

# name: (topology name, chip config, HBM GiB per device (v5e: what XLA says is available),
#        peak bf16 TFLOP/s per device)
TPUS = {"v4": ("v4", "megacore", 32, 275), "v5e": ("v5e", "default", 15.75, 197),
        "v5p": ("v5", "megacore", 95, 459), "v6e": ("v6e", "default", 32, 918)}
# chips -> (topology suffix, chips per host bounds)
TPU_SHAPES = {1: ("1x1", (1, 1, 1)), 4: ("2x2", (2, 2, 1)), 8: ("2x4", (2, 2, 1)),
              16: ("4x4", (2, 2, 1))}
TPU_3D_SHAPES = {4: ("2x2x1", (2, 2, 1)), 8: ("2x2x2", (2, 2, 1)), 16: ("2x2x4", (2, 2, 1))}
# name: (target description, peak dense bf16 TFLOP/s)
GPUS = {"h100": ("h100_sxm.txtpb", 989), "h200": ("h200.txtpb", 989),
        "a100": ("a100_sxm_80.txtpb", 312)}


def target_devices(target: str):
  """(compile-only devices, HBM GiB per device, peak bf16 TFLOP/s per device)."""
  match = re.fullmatch(r"(v4|v5e|v5p|v6e|h100|h200|a100)-(\d+)", target)
  if not match:
    raise app.UsageError(f"--target={target}: expected e.g. v5e-4, v5p-8, h100-8")
  kind, count = match.group(1), int(match.group(2))
  if kind in GPUS:
    spec, peak = GPUS[kind]
    with open(os.path.join(HERE, "gpu_targets", spec)) as f:
      text = f.read()
    memory = int(re.search(r"device_memory_size: (\d+)", text).group(1)) / 2**30
    topology = topologies.get_topology_desc("", platform="cuda", target_config=text,
                                            topology=f"1x1x{count}")
    return topology.devices, memory, peak
  name, chip_config, memory, peak = TPUS[kind]
  shapes = TPU_3D_SHAPES if kind in ("v4", "v5p") else TPU_SHAPES
  if count not in shapes:
    raise app.UsageError(f"--target={target}: {kind} with {sorted(shapes)} chips")
  shape, bounds = shapes[count]
  topology = topologies.get_topology_desc(
      topology_name=f"{name}:{shape}", platform="tpu", chip_config_name=chip_config,
      chips_per_host_bounds=bounds, num_slices=1)
  return topology.devices, memory, peak


def compile_step(config, devices):
  """(lowered, compiled) train step for `devices`, or (lowered, the error) if XLA refuses."""
  mesh = sharding.make_mesh(devices)
  tx = optimizer.make_optimizer(config.train)
  graphdef, state = train_state.abstract_train_state(config, mesh, tx)
  batch = host_input.batch_shapes(config, config.data.batch_per_device * len(devices),
                                      mesh, "float16")
  lowered = train_step.make_train_step(graphdef, tx, mesh, config).lower(state, batch)
  try:
    return lowered, lowered.compile()
  except Exception as e:  # XLA reports what does not fit in its own words
    return lowered, e


def analyse(config, target: str) -> dict:
  devices, hbm_gib, peak_tflops = target_devices(target)
  started = time.time()
  lowered, compiled = compile_step(config, devices)
  result = {"target": target, "platform": devices[0].platform, "devices": len(devices),
            "device_kind": devices[0].device_kind,
            "batch_per_device": config.data.batch_per_device,
            "patch_size": list(config.data.patch_size), "dtype": config.model.dtype,
            "hbm_gib": hbm_gib, "compile_seconds": round(time.time() - started, 1),
            "analytic_flops_per_sample": throughput.analytic_train_flops(config)}
  if isinstance(compiled, Exception):
    message = str(compiled).splitlines()[0]
    needed = re.search(r"required for HLO temporaries \(([0-9.]+)([GM])\)", str(compiled))
    result.update(fits=False, error=message[:300], flops_per_step=None,
                  xla_step_seconds=None,
                  needed_gib=(float(needed.group(1)) / (1024 if needed.group(2) == "M" else 1)
                              if needed else None))
    return result
  memory = compiled.memory_analysis()
  needed = compiled_memory_bytes(compiled)
  cost = compiled.cost_analysis() or lowered.cost_analysis() or {}
  if isinstance(cost, list):
    cost = cost[0] if cost else {}
  seconds = cost.get("optimal_seconds")
  seconds = float(seconds) if seconds and seconds > 0 else None
  result.update(
      fits=needed / 2**30 <= hbm_gib, needed_gib=needed / 2**30,
      argument_gib=memory.argument_size_in_bytes / 2**30,
      temp_gib=memory.temp_size_in_bytes / 2**30,
      flops_per_step=float(cost["flops"]) if "flops" in cost else None,
      bytes_per_step=float(cost["bytes accessed"]) if "bytes accessed" in cost else None,
      cost_source="compiled" if compiled.cost_analysis() else "lowered (HLO, before layout)",
      xla_step_seconds=seconds)
  if seconds:
    samples = config.data.batch_per_device / seconds
    result["xla_samples_per_second_per_device"] = samples
    result["analytic_mfu"] = samples * result["analytic_flops_per_sample"] / (
        peak_tflops * 1e12)
  if FLAGS.hlo:
    files.write_text(FLAGS.hlo, compiled.as_text())
  return result


def find_max_batch(config, target: str, start: dict) -> int:
  """Largest batch per device that compiles and fits (doubling, then bisection)."""
  def fits(batch):
    trial = config.copy_and_resolve_references()
    trial.data.batch_per_device = batch
    result = analyse(trial, target)
    print(f"  batch {batch}: {'fits' if result['fits'] else 'does not fit'} "
          f"({_gib(result['needed_gib'])} of {result['hbm_gib']:.2f} GiB)", flush=True)
    return result["fits"]

  low, high = 0, None
  batch = start["batch_per_device"]
  if start["fits"]:
    low, batch = batch, batch * 2
    while fits(batch):
      low, batch = batch, batch * 2
    high = batch
  else:
    high = batch
    batch = max(batch // 2, 1)
    while batch >= 1 and not fits(batch):
      high, batch = batch, batch // 2
    low = batch
  while high - low > 1:
    middle = (low + high) // 2
    low, high = (middle, high) if fits(middle) else (low, middle)
  return low


def _gib(value):
  return f"{value:.2f} GiB" if value is not None else "? GiB"


def main(argv):
  del argv
  config = FLAGS.config
  if FLAGS.batch_per_device:
    config.data.batch_per_device = FLAGS.batch_per_device
  checks.check_config(config)
  result = analyse(config, FLAGS.target)
  print(f"{result['target']}: {result['devices']} x {result['device_kind']}, batch "
        f"{result['batch_per_device']}/device, patch {tuple(result['patch_size'])}, "
        f"{result['dtype']} (compiled in {result['compile_seconds']} s)")
  print(f"  fits: {result['fits']}; needs {_gib(result['needed_gib'])} per device of "
        f"{result['hbm_gib']:.2f} GiB HBM" + (f" ({result['error']})" if "error" in result
                                              else ""))
  if result["fits"]:
    print(f"  arguments {_gib(result['argument_gib'])}, temporaries {_gib(result['temp_gib'])}")
    if result["flops_per_step"]:
      print(f"  XLA cost analysis ({result['cost_source']}): "
            f"{result['flops_per_step'] / 1e12:.3f} TFLOP and "
            f"{(result['bytes_per_step'] or 0) / 2**30:.1f} GiB accessed per device per step")
    if result["xla_step_seconds"]:
      print(f"  XLA step estimate {result['xla_step_seconds']:.4f} s: "
            f"{result['xla_samples_per_second_per_device']:.1f} samples/s per device, "
            f"{100 * result['analytic_mfu']:.1f}% of peak bf16 by the analytic FLOP count "
            f"({result['analytic_flops_per_sample'] / 1e12:.2f} TFLOP/sample)")
    else:
      print("  XLA gives no step-time estimate for this target")
  if FLAGS.find_max_batch:
    result["max_batch_per_device"] = find_max_batch(config, FLAGS.target, result)
    print(f"  largest batch per device that fits: {result['max_batch_per_device']}")
  if FLAGS.out:
    files.write_json(FLAGS.out, {"date": time.strftime("%Y-%m-%d"), "jax": jax.__version__,
                                 "config": sys.argv, **result})
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
