"""Compile the train step for a TPU or NVIDIA GPU this machine does not have, and read XLA.

  pip install -e ".[tpu-aot]"       # libtpu: compile-only TPU devices
  pip install -e ".[gpu-aot]"       # jax-cuda12-plugin: compile-only NVIDIA GPUs
  python benchmarks/aot.py --config=configs/default.py --target=v5e-4 --batch_per_device=2 \
      [--find_max_batch] [--out=result.json] [--hlo=step.hlo.txt]
  python benchmarks/aot.py --target=v5p-4,v5p-8,v5p-16,v5p-32 --batch_per_device=2 \
      --out=weak.json                     # several targets: one JSON list
  python benchmarks/aot.py --target=v5p-16 --global_batch=4 --space=4   # spatial split

Targets: v4-N, v5e-N, v5p-N, v6e-N (N TPU chips; Google names v4 and v5p slices by
TensorCores, twice the chips: v5p-16 here is Google's v5p-32) and h100-N, h200-N, a100-N
(GPUs; the target descriptions are in benchmarks/gpu_targets/). Prints, per device: memory
XLA plans (arguments, temporaries, total) against the chip's HBM, FLOPs and bytes per step
from XLA's cost analysis, XLA's own step-time estimate where it gives one (TPU), and the
model FLOPs utilisation that estimate implies against the analytic count. A program that
does not fit is refused by XLA in seconds, as on the chip; --find_max_batch searches the
largest batch per device that fits. Also counted: the collectives in the compiled program
(gradient all-reduces, the halo exchanges of spatial partitioning) and the bytes they move
per device.

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
import numpy as np  # noqa: E402
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
flags.DEFINE_list("target", ["v5e-4"], "v4-N, v5e-N, v5p-N, v6e-N, h100-N, h200-N, a100-N "
                  "(N chips); several, comma-separated.")
flags.DEFINE_integer("batch_per_device", None, "Sets data.batch_per_device (weak scaling).")
flags.DEFINE_integer("global_batch", None, "Sets data.global_batch (strong scaling).")
flags.DEFINE_integer("space", None, "Sets mesh.space (0: auto).")
flags.DEFINE_bool("find_max_batch", False, "Search the largest batch per device that fits.")
flags.DEFINE_string("out", None, "Write the result as JSON here.")
flags.DEFINE_string("hlo", None, "Write the optimised HLO of the step here.")
flags.DEFINE_bool("fusions", False, "Print the top 20 operations of the optimised program by "
                  "bytes and by FLOPs, each with the op it came from.")

# name: (topology name, chip config, HBM GiB per device (v5e: what XLA says is available),
#        peak bf16 TFLOP/s per device)
TPUS = {"v4": ("v4", "megacore", 32, 275), "v5e": ("v5e", "default", 15.75, 197),
        "v5p": ("v5", "megacore", 95, 459), "v6e": ("v6e", "default", 32, 918)}
# chips -> (topology suffix, chips per host bounds)
TPU_SHAPES = {1: ("1x1", (1, 1, 1)), 4: ("2x2", (2, 2, 1)), 8: ("2x4", (2, 2, 1)),
              16: ("4x4", (2, 2, 1))}
TPU_3D_SHAPES = {4: ("2x2x1", (2, 2, 1)), 8: ("2x2x2", (2, 2, 1)), 16: ("2x2x4", (2, 2, 1)),
                 32: ("2x4x4", (2, 2, 1)), 64: ("4x4x4", (2, 2, 1))}
COLLECTIVES = ("all-reduce", "collective-permute", "all-gather", "reduce-scatter", "all-to-all")
_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "pred": 1, "u8": 1, "s8": 1,
          "f64": 8, "s64": 8, "u64": 8}
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


_SHAPE = re.compile(r"(\w+)\[([\d,]*)\]")
_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = (.+?) ([\w\-]+)\((.*)$")
# Not counted as operations: plumbing, and control flow (its bodies' operations are counted).
_PLUMBING = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "conditional",
             "while", "call"}


def _shape_bytes(text: str) -> int:
  return sum(_BYTES.get(dtype, 4) * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
             for dtype, dims in _SHAPE.findall(text))


def collectives(hlo: str) -> dict:
  """{collective: [ops, bytes of their results per device]} in an optimised HLO text."""
  found = {name: [0, 0] for name in COLLECTIVES}
  for line in hlo.splitlines():
    match = re.search(r"= (.*?) (" + "|".join(COLLECTIVES) + r")(-start)?\(", line)
    if match:
      found[match.group(2)][0] += 1
      found[match.group(2)][1] += _shape_bytes(match.group(1))
  return {name: {"ops": ops, "bytes": size} for name, (ops, size) in found.items() if ops}


def _convolution_flops(line: str, result: str, kernel: str) -> float:
  """2 x output elements x multiply-adds per output (the kernel's elements per output
  feature, from dim_labels)."""
  labels = re.search(r"dim_labels=[^_]+_([^-]+)->", line)
  kernel_dims = [int(d) for d in (_SHAPE.findall(kernel) or [("", "")])[0][1].split(",") if d]
  if not labels or len(kernel_dims) != len(labels.group(1)):
    return 0.0
  per_output = np.prod(kernel_dims) / kernel_dims[labels.group(1).index("o")]
  return 2.0 * _shape_bytes(result) / _BYTES.get(_SHAPE.findall(result)[0][0], 4) * per_output


def cudnn_convolutions(hlo: str) -> list:
  """The optimised program's cuDNN convolution calls, each {"target", "dim_labels",
  "kernel_in", "kernel_out"}: the layout XLA gave it (bf012 is channels-first, b012f
  channels-last) and its kernel's input and output channels (cuDNN's tensor cores want
  multiples of 8)."""
  shapes, found = {}, []
  for line in hlo.splitlines():
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, result, _, rest = match.groups()
    shapes[name] = result
    target = re.search(r'custom_call_target="__cudnn\$(conv\w*)"', line)
    labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", line)
    if not target or not labels:
      continue
    operands = re.findall(r"%([\w.\-]+)", rest.split(")")[0])
    # The kernel is the second operand, except for the weight gradient, which returns it.
    kernel = result if target.group(1) == "convBackwardFilter" else shapes.get(operands[1], "")
    dims = [int(d) for d in (_SHAPE.findall(kernel) or [("", "")])[0][1].split(",") if d]
    kernel_labels = labels.group(2)
    found.append({"target": target.group(1), "dim_labels": labels.group(0)[len("dim_labels="):],
                  "kernel_in": dims[kernel_labels.index("i")] if dims else None,
                  "kernel_out": dims[kernel_labels.index("o")] if dims else None})
  return found


def convolution_summary(hlo: str) -> dict:
  """How many cuDNN convolutions the program calls, how many of them are laid out
  channels-first, and how many have a channel count that is not a multiple of 8."""
  convolutions = cudnn_convolutions(hlo)
  return {"count": len(convolutions),
          "channels_first": sum(c["dim_labels"].startswith("bf") for c in convolutions),
          "channels_not_multiple_of_8": sum(
              bool(c["kernel_in"] % 8 or c["kernel_out"] % 8) for c in convolutions
              if c["kernel_in"] is not None)}


def fusion_report(hlo: str) -> list:
  """The optimised program's top-level operations (fusions, convolutions, copies, ...), each
  with the bytes it reads and writes (operands + result, per device), the convolution FLOPs
  inside it, and the op it came from (jax's op_name)."""
  shapes, flops, rows, fused, current = {}, {}, [], set(), None
  for line in hlo.splitlines():
    header = re.match(r"(?:ENTRY )?%([\w.\-]+) .*\{$", line)
    if header and not line.startswith(" "):
      current = header.group(1)
      shapes[current], flops[current] = {}, 0.0
      continue
    match = _INSTRUCTION.match(line)
    if not match or current is None:
      continue
    name, result, op, rest = match.groups()
    shapes[current][name] = result
    operands = re.findall(r"%([\w.\-]+)", rest.split(")")[0])
    convolution = _convolution_flops(line, result, shapes[current].get(operands[1], "")) \
        if op == "convolution" and len(operands) == 2 else 0.0
    flops[current] += convolution
    calls = re.search(r"calls=%([\w.\-]+)", line)
    if op == "fusion" and calls:
      fused.add(calls.group(1))
    if op.endswith("-done"):  # an asynchronous op is counted once, at its start
      continue
    if op not in _PLUMBING:
      source = re.search(r'op_name="([^"]+)"', line)
      kind = re.search(r"kind=(\w+)", line)
      rows.append({"computation": current, "name": name,
                   "op": op + (f" {kind.group(1)}" if kind else ""),
                   "bytes": (_shape_bytes(result) if not op.endswith("-start") else 0) + (
                       1 + op.endswith("-start")) * sum(
                       _shape_bytes(shapes[current].get(o, "")) for o in operands),
                   "calls": calls.group(1) if calls else None,
                   "flops": convolution,
                   "from": source.group(1).split("/", 2)[-1] if source else ""})
  top = [r for r in rows if r["computation"] not in fused]
  for r in top:
    r["flops"] = flops.get(r["calls"], 0.0) if r["calls"] else r["flops"]
  return top


def print_fusions(rows: list, count: int = 20) -> None:
  total_bytes, total_flops = sum(r["bytes"] for r in rows), sum(r["flops"] for r in rows)
  for key, unit, scale in (("bytes", "GB", 1e9), ("flops", "GFLOP", 1e9)):
    total = total_bytes if key == "bytes" else total_flops
    print(f"  top {count} by {key} (of {total / scale:.1f} {unit} per device per step, "
          f"counted from the HLO's shapes):")
    print(f"    {unit:>8} {'share':>6} {'GB' if key == 'flops' else 'GFLOP':>8}  op, from")
    for r in sorted(rows, key=lambda r: -r[key])[:count]:
      other = r["flops"] if key == "bytes" else r["bytes"]
      print(f"    {r[key] / scale:>8.2f} {100 * r[key] / max(total, 1):>5.1f}% "
            f"{other / 1e9:>8.2f}  {r['op']}, {r['from'][:90]}")


def compile_step(config, devices):
  """(lowered, compiled, mesh, global batch) of the train step for `devices`; compiled is
  the error if XLA refuses."""
  mesh, global_batch = sharding.training_mesh(config, devices)
  tx = optimizer.make_optimizer(config.train)
  graphdef, state = train_state.abstract_train_state(config, mesh, tx)
  batch = host_input.batch_shapes(config, global_batch, mesh, "float16")
  lowered = train_step.make_train_step(graphdef, tx, mesh, config).lower(state, batch)
  try:
    return lowered, lowered.compile(), mesh, global_batch
  except Exception as e:  # XLA reports what does not fit in its own words
    return lowered, e, mesh, global_batch


def _lowered_cost(lowered) -> dict:
  """XLA's cost analysis of the lowered program, where the compiled one gave none. jax 0.12
  gives neither for a deviceless GPU target (only a PjRt backend may run it): no estimate."""
  try:
    return lowered.cost_analysis() or {}
  except jax.errors.JaxRuntimeError:
    return {}


def analyse(config, target: str) -> dict:
  devices, hbm_gib, peak_tflops = target_devices(target)
  started = time.time()
  lowered, compiled, mesh, global_batch = compile_step(config, devices)
  result = {"target": target, "platform": devices[0].platform, "devices": len(devices),
            "device_kind": devices[0].device_kind,
            "batch_per_device": global_batch / len(devices), "global_batch": global_batch,
            "space": int(mesh.shape[sharding.SPACE]),
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
  cost = compiled.cost_analysis() or _lowered_cost(lowered)
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
      xla_step_seconds=seconds, collectives=collectives(compiled.as_text()))
  if result["platform"] == "gpu":
    result["cudnn_convolutions"] = convolution_summary(compiled.as_text())
  if seconds:
    samples = global_batch / len(devices) / seconds
    result["xla_samples_per_second_per_device"] = samples
    result["analytic_mfu"] = samples * result["analytic_flops_per_sample"] / (
        peak_tflops * 1e12)
  if FLAGS.hlo:
    files.write_text(FLAGS.hlo, compiled.as_text())
  if FLAGS.fusions:
    result["fusions"] = fusion_report(compiled.as_text())
  return result


def find_max_batch(config, target: str, start: dict) -> int:
  """Largest batch per device that compiles and fits (doubling, then bisection)."""
  def fits(batch):
    trial = config.copy_and_resolve_references()
    trial.data.batch_per_device, trial.data.global_batch = batch, 0
    result = analyse(trial, target)
    print(f"  batch {batch}: {'fits' if result['fits'] else 'does not fit'} "
          f"({_gib(result['needed_gib'])} of {result['hbm_gib']:.2f} GiB)", flush=True)
    return result["fits"]

  low, high = 0, None
  batch = max(int(start["batch_per_device"]), 1)
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
    config.data.batch_per_device, config.data.global_batch = FLAGS.batch_per_device, 0
  if FLAGS.global_batch:
    config.data.batch_per_device, config.data.global_batch = 0, FLAGS.global_batch
  if FLAGS.space is not None:
    config.mesh.space = FLAGS.space
  checks.check_config(config)
  results = [report(config, target) for target in FLAGS.target]
  if FLAGS.out:
    header = {"date": time.strftime("%Y-%m-%d"), "jax": jax.__version__,
              "label": "XLA's estimate, compiled deviceless; not measured", "config": sys.argv}
    files.write_json(FLAGS.out, [{**header, **r} for r in results] if len(results) > 1
                     else {**header, **results[0]})
    print(f"wrote {FLAGS.out}")


def report(config, target: str) -> dict:
  result = analyse(config, target)
  print(f"{result['target']}: {result['devices']} x {result['device_kind']}, global batch "
        f"{result['global_batch']} ({result['batch_per_device']:g}/device, each sample over "
        f"{result['space']}), patch {tuple(result['patch_size'])}, "
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
    if result.get("cudnn_convolutions"):
      c = result["cudnn_convolutions"]
      print(f"  cuDNN convolutions: {c['count']}, of which channels-first "
            f"{c['channels_first']}, with channels not a multiple of 8 "
            f"{c['channels_not_multiple_of_8']}")
    if result["collectives"]:
      print("  collectives per step: " + ", ".join(
          f"{name} {c['ops']} ops, {c['bytes'] / 2**20:.1f} MiB"
          for name, c in result["collectives"].items()))
  if result.get("fusions"):
    print_fusions(result["fusions"])
    result["fusions"] = sorted(result["fusions"], key=lambda r: -r["bytes"])[:50]
  if FLAGS.find_max_batch:
    result["max_batch_per_device"] = find_max_batch(config, target, result)
    print(f"  largest batch per device that fits: {result['max_batch_per_device']}")
  return result


if __name__ == "__main__":
  app.run(main)
