"""The whole prepared accelerator lease in one command: brats_jax on the device of this
machine, each speed lever on its own, the strongest PyTorch peers, a kernel profile, and the
demo end to end; one JSON, and the table printed last.

  benchmarks/device_check.sh                  # a GPU box: at most ~8.5 minutes (--budget_s)
  benchmarks/device_check.sh --runs=a,b       # only these runs (a rerun of what was skipped)
  benchmarks/device_check.sh --smoke          # the same code paths on a CPU, tiny shapes

Every run is a process of its own, started in the order of RUNS until the budget is spent
(a run starts only if its expected time still fits; each is cut at its own limit); what did
not run is named in the JSON. The train step is configs/default.py's (128^3, 4 channels,
bf16, deep supervision, on-device augmentation) on one device, timed after its warm-up:

  jax_b2_cold     as shipped, batch 2, an empty compilation cache: process start to the
                  first step, the step; whole-case prediction of a 240x240x155 case, first
                  call and warm
  jax_b2_warm     the same from a second process with that cache (the warm start)
  monai, nnunet   the peers at batch 2 and 8, eager: MONAI's DynUNet (bf16 autocast,
                  channels_last_3d, cudnn.benchmark; MONAI also predicts the case), and nnU-Net
                  as nnUNetTrainer trains BraTS regions (PlainConvUNet, DC_and_BCE_loss in its
                  DeepSupervisionWrapper, fp16 autocast with GradScaler, clipping at 12, the
                  loss read back each step); *_compiled: each in torch.compile, as nnU-Net
                  compiles (network and Dice)
  jax_b8          as shipped, batch 8
  lever_*         one lever each (LEVERS), batch 2, then batch 8: what a GPU default is
                  decided by (docs/benchmarks.md)
  profile_b2/_b8  jax.profiler over 5 steps: GPU time per step by kernel group (convolution
                  forward, data and weight gradients, layout, GEMMs, reductions, element-wise)
  demo            the README demo's commands (synth, prepare, train, predict, evaluate)

Every figure is a wall-clock measurement on this machine; nothing here is an estimate.
"""

import argparse
import collections
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

START = time.time()
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]
PEAK_BF16_TFLOPS = {"H100": 989, "H200": 989, "B200": 2250, "A100": 312}
CASE_SHAPE = (240, 240, 155)

# One lever each, on top of what ships: XLA flags or config overrides. A lever becomes a GPU
# default once a device has measured that it helps.
LEVERS = {
    "no_nhwc": {"xla_flags": "--xla_gpu_force_conv_nhwc=false"},  # as shipped before 2026-12
    "pad8": {"overrides": {"model.gpu_channel_multiple": 8}},
    "conv_fusion": {"xla_flags": "--xla_gpu_experimental_enable_conv_fusion=true"},
    "autotune_1": {"xla_flags": "--xla_gpu_autotune_level=1"},  # no buffer checks: compile
    "autotune_0": {"xla_flags": "--xla_gpu_autotune_level=0"},  # cuDNN's heuristics alone
    "remat": {"overrides": {"model.remat": "convolutions"}},
}


def _config(smoke: bool, overrides: dict | None = None):
  from brats_jax.config import io as config_io

  config = config_io.load_config_file(
      os.path.join(ROOT, "configs", "tiny.py" if smoke else "default.py"))
  config.data.batch_per_device, config.mesh.space = 0, 1
  for field, value in (overrides or {}).items():
    group, name = field.split(".")
    config[group][name] = value
  return config


def _peak_tflops(kind: str):
  return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in kind), None)


def _row(batch, first_s, step_s, peak_bytes, flops, peak_tflops) -> dict:
  samples = batch / step_s
  return {"batch": batch, "first_step_s": first_s, "step_ms": 1e3 * step_s,
          "samples_per_s": samples,
          "peak_memory_gib": peak_bytes / 2**30 if peak_bytes else None,
          "analytic_mfu": samples * flops / (peak_tflops * 1e12) if peak_tflops else None}


# ---- brats_jax ---------------------------------------------------------------------------


def run_jax(spec: dict) -> dict:
  """One train step configuration: first step (compilation included) and steady steps;
  optionally whole-case prediction and a kernel profile."""
  from brats_jax import runtime

  runtime.configure()  # as every command: the persistent compilation cache
  import jax
  import numpy as np
  import throughput

  from brats_jax import sharding
  from brats_jax.inference.case_predictor import make_case_predictor
  from brats_jax.train import optimizer
  from brats_jax.train import step as train_step
  from brats_jax.train.compile import compiled_memory_bytes
  from brats_jax.workdir import train_state

  config = _config(spec["smoke"], spec.get("overrides"))
  config.data.global_batch = batch = spec["batch"]
  device = jax.devices()[0]
  mesh = sharding.make_mesh([device])
  tx = optimizer.make_optimizer(config.train)
  graphdef, state = train_state.create_train_state(config, mesh, tx)
  step = train_step.make_train_step(graphdef, tx, mesh, config)
  batches = [sharding.to_global(throughput.synthetic_batch(config, batch, seed), mesh, batch)
             for seed in range(2)]
  tick = time.perf_counter()
  compiled = step.lower(state, batches[0]).compile()
  compile_s = time.perf_counter() - tick
  state, metrics = compiled(state, batches[0])
  jax.block_until_ready(metrics)
  first = time.perf_counter() - tick
  process_to_first = time.time() - START
  for i in range(3):
    state, metrics = compiled(state, batches[i % 2])
  jax.block_until_ready(metrics)
  tick = time.perf_counter()
  for i in range(spec["steps"]):
    state, metrics = compiled(state, batches[i % 2])
  jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - tick) / spec["steps"]
  stats = device.memory_stats() or {}
  row = _row(batch, first, step_s, stats.get("peak_bytes_in_use"),
             throughput.analytic_train_flops(config), _peak_tflops(device.device_kind))
  row.update(compile_s=compile_s, process_to_first_step_s=process_to_first,
             planned_memory_gib=compiled_memory_bytes(compiled) / 2**30,
             finite=bool(np.asarray(metrics["finite_steps"]) > 0))
  result = {"side": "brats_jax", "jax": jax.__version__, "device": device.device_kind,
            "train": row}
  if spec.get("profile_steps"):
    held = {"state": state}  # each step donates the state it is given

    def one_step():
      held["state"], step_metrics = compiled(held["state"], batches[0])
      return step_metrics

    result["profile"] = _profile(one_step, spec["profile_steps"])
    state = held["state"]
  if spec.get("predict"):
    predict = make_case_predictor(graphdef, mesh, config)
    image = np.random.default_rng(0).standard_normal(
        tuple(spec["case_shape"]) + (4,)).astype(np.float32)
    times = []
    for _ in range(2):
      tick = time.perf_counter()
      predict(state, image)
      times.append(time.perf_counter() - tick)
    result["predict"] = {"case_shape": spec["case_shape"], "first_s": times[0],
                         "warm_s": times[1]}
  return result


# Kernel groups, by the first pattern a kernel's name holds (cuDNN's, cuBLAS's and XLA's
# names; on a CPU, XLA's operation names).
KERNEL_GROUPS = (
    ("layout", ("nchwToNhwc", "nhwcToNchw", "AddPadding", "transpose", "copy")),
    ("convolution wgrad", ("wgrad", "BackwardFilter", "bwd_filter")),
    ("convolution dgrad", ("dgrad", "BackwardInput", "bwd_data")),
    ("convolution forward", ("fprop", "conv", "Forward")),
    ("GEMM", ("gemm", "nvjet", "cutlass", "dot", "matmul")),
    ("reduction", ("reduce",)),
    ("element-wise", ("fusion", "loop_", "input_", "select", "add", "multiply")),
)


def kernel_group(name: str) -> str:
  lowered = name.lower()
  return next((group for group, patterns in KERNEL_GROUPS
               if any(p.lower() in lowered for p in patterns)), "other")


def _profile(run_step, steps: int) -> dict:
  """Device time per step by kernel group and the top kernels, from a jax.profiler trace of
  `steps` steps (GPU: the device's stream lines; a CPU: XLA's operations on its threads)."""
  import jax
  from jax.profiler import ProfileData

  folder = tempfile.mkdtemp(prefix="brats_jax_profile_")
  with jax.profiler.trace(folder):
    for _ in range(steps):
      out = run_step()
    jax.block_until_ready(out)
  path = glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True)[0]
  kernels = collections.defaultdict(lambda: [0.0, 0])
  for plane in ProfileData.from_file(path).planes:
    if plane.name.startswith("/device:"):  # the kernels on its streams ("XLA Ops" repeats
      lines = [line for line in plane.lines if line.name.startswith("Stream")]  # them)
      lines = lines or [line for line in plane.lines if line.name == "XLA Ops"]
    elif plane.name == "/host:CPU":  # XLA:CPU's operations on its threads
      lines = [line for line in plane.lines if line.name.startswith("tf_XLA")]
    else:
      continue
    for line in lines:
      for event in line.events:
        if event.name.startswith("ThunkExecutor"):  # XLA:CPU's wrapper around operations
          continue
        kernels[event.name][0] += event.duration_ns / 1e6 / steps
        kernels[event.name][1] += 1 / steps
  shutil.rmtree(folder, ignore_errors=True)
  groups = collections.defaultdict(float)
  for name, (ms, _) in kernels.items():
    groups[kernel_group(name)] += ms
  top = sorted(kernels.items(), key=lambda item: -item[1][0])[:25]
  return {"steps": steps, "ms_per_step": dict(sorted(groups.items(), key=lambda g: -g[1])),
          "total_ms_per_step": sum(groups.values()),
          "top_kernels": [{"name": n[:160], "ms_per_step": ms, "calls_per_step": calls,
                           "group": kernel_group(n)} for n, (ms, calls) in top]}


# ---- PyTorch peers -----------------------------------------------------------------------


def run_torch(spec: dict) -> dict:
  """A PyTorch peer's train step at each batch (eager or in torch.compile), and for MONAI
  whole-case prediction."""
  peer = spec["peer"]
  try:
    import torch
    if peer == "monai":
      from monai.inferers import sliding_window_inference
    else:
      import dynamic_network_architectures  # noqa: F401
      import nnunetv2  # noqa: F401
  except ImportError as e:
    return {"side": peer, "skipped": f"{e.name} is not installed"}
  import throughput
  import torch_peers

  config = _config(spec["smoke"])
  cuda = torch.cuda.is_available()
  device = torch.device("cuda" if cuda else "cpu")
  torch.backends.cudnn.benchmark = True
  kind = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
  flops = throughput.analytic_train_flops(config)
  outputs = 1 + config.model.deep_supervision
  if peer == "monai":
    net = torch_peers.monai_network(config, 3)
    loss_fn = torch_peers.monai_loss("region")
    memory_format, dtype, scaler = torch.channels_last_3d, torch.bfloat16, None
  else:  # nnU-Net as nnUNetTrainer: every decoder level supervised, fp16 with a GradScaler
    net = torch_peers.nnunet_network(config, 3)
    outputs = config.model.depth - 1
    loss_fn = torch_peers.nnunet_region_loss(outputs, compile_dice=spec["compile"])
    memory_format, dtype = torch.contiguous_format, torch.float16
    scaler = torch.amp.GradScaler("cuda") if cuda else None
  net = net.to(device, memory_format=memory_format)
  optimiser = torch.optim.SGD(net.parameters(), lr=config.train.learning_rate,
                              momentum=config.train.momentum, nesterov=True,
                              weight_decay=config.train.weight_decay)
  model = torch.compile(net) if spec["compile"] else net
  autocast = torch.autocast(device.type, dtype=dtype, enabled=cuda)

  def sync():
    if cuda:
      torch.cuda.synchronize()

  def one_step(images, labels):
    optimiser.zero_grad(set_to_none=True)
    with autocast:
      loss = loss_fn(model(images), labels)
    if scaler is not None:
      scaler.scale(loss).backward()
      scaler.unscale_(optimiser)
      torch.nn.utils.clip_grad_norm_(net.parameters(), config.train.grad_clip_norm)
      scaler.step(optimiser)
      scaler.update()
    else:
      loss.backward()
      torch.nn.utils.clip_grad_norm_(net.parameters(), config.train.grad_clip_norm)
      optimiser.step()
    if peer == "nnunet":
      loss.detach().cpu().numpy()  # nnUNetTrainer.train_step returns the loss on the host

  result = {"side": peer + ("_compiled" if spec["compile"] else ""),
            "torch": torch.__version__, "device": kind, "train": []}
  channels = len(config.data.modalities)
  for batch in spec["batches"]:
    shape = (batch, channels) + tuple(config.data.patch_size)
    images = torch.randn(shape, device=device).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 4, (batch, 1) + shape[2:], device=device)
    targets = torch_peers.nnunet_targets(labels, outputs) if peer == "nnunet" else labels
    if cuda:
      torch.cuda.reset_peak_memory_stats()
    net.train()
    tick = time.perf_counter()
    one_step(images, targets)
    sync()
    first = time.perf_counter() - tick
    for _ in range(3):
      one_step(images, targets)
    sync()
    tick = time.perf_counter()
    for _ in range(spec["steps"]):
      one_step(images, targets)
    sync()
    row = _row(batch, first, (time.perf_counter() - tick) / spec["steps"],
               torch.cuda.max_memory_allocated() if cuda else None, flops, _peak_tflops(kind))
    result["train"].append(row)
    print(f"{result['side']} batch {batch}: {row['step_ms']:.1f} ms", file=sys.stderr)
  if spec.get("predict") and peer == "monai":
    net.eval()
    image = torch.randn((1, channels) + tuple(spec["case_shape"]), device=device)
    times = []
    for _ in range(2):
      tick = time.perf_counter()
      with torch.no_grad(), autocast:
        sliding_window_inference(image, tuple(config.data.patch_size),
                                 config.eval.sw_batch_per_device, model,
                                 overlap=config.eval.overlap, mode="gaussian",
                                 sigma_scale=config.eval.sigma_scale)
      sync()
      times.append(time.perf_counter() - tick)
    result["predict"] = {"case_shape": spec["case_shape"], "first_s": times[0],
                         "warm_s": times[1]}
  return result


# ---- the demo ----------------------------------------------------------------------------


def run_demo(spec: dict) -> dict:
  """The README demo's commands on this machine's device (the Makefile's, one by one)."""
  folder = tempfile.mkdtemp(prefix="brats_jax_demo_")
  shape, cases, steps = ("32,32,24", 6, 4) if spec["smoke"] else ("64,64,48", 24, 250)
  config = "configs/tiny.py" if spec["smoke"] else "configs/demo.py"
  commands = [
      ("synth", ["synth", f"--output={folder}/raw", "--layout=brats2021",
                 f"--num_cases={cases}", f"--shape={shape}", "--seed=0"]),
      ("synth held-out", ["synth", f"--output={folder}/heldout", "--layout=brats2021",
                          "--num_cases=5", f"--shape={shape}", "--seed=1"]),
      ("prepare", ["prepare", f"--input={folder}/raw", f"--output={folder}/store"]),
      ("train", ["train", f"--config={config}", f"--workdir={folder}/workdir",
                 f"--config.data.store={folder}/store", f"--config.train.num_steps={steps}"]),
      ("predict", ["predict", f"--workdir={folder}/workdir", f"--input={folder}/heldout",
                   f"--output={folder}/predictions", "--checkpoint=best"]),
      ("evaluate", ["evaluate", f"--predictions={folder}/predictions",
                    f"--references={folder}/heldout", f"--output={folder}/scores.csv"]),
  ]
  result = {"side": "demo", "commands": []}
  for name, command in commands:
    tick = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", f"brats_jax.cli.{command[0]}", *command[1:]],
                          cwd=ROOT, capture_output=True, text=True)
    result["commands"].append({"command": name, "seconds": time.perf_counter() - tick,
                               "exit": done.returncode})
    if done.returncode:
      result["error"] = f"{name}: " + (done.stderr.strip().splitlines() or ["?"])[-1][:300]
      break
  else:
    with open(f"{folder}/scores_summary.json") as f:
      summary = json.load(f)
    result["heldout_mean_region_dice"] = summary["metrics"]["mean_region_dice"]["mean"]
  shutil.rmtree(folder, ignore_errors=True)
  return result


# ---- the plan and the report -------------------------------------------------------------


def plan(args) -> list:
  """[(name, worker, spec, environment changes, expected seconds, limit seconds)] in the
  order they run."""
  smoke = args.smoke
  big, small = (2, 1) if smoke else (8, 2)
  steps = 2 if smoke else 20
  case = [40, 40, 31] if smoke else list(CASE_SHAPE)
  # One compilation cache for every brats_jax run, empty at the first: the second finds its
  # program there (the warm start); the levers find the autotuning of unchanged convolutions.
  cold = warm = {"JAX_COMPILATION_CACHE_DIR": args.cache}
  common = {"smoke": smoke, "steps": steps, "case_shape": case}
  runs = [
      ("jax_b2_cold", "jax", {**common, "batch": small, "predict": True}, cold, 60, 150),
      ("jax_b2_warm", "jax", {**common, "batch": small}, cold, 20, 90),
      ("monai", "torch", {**common, "peer": "monai", "batches": [small, big],
                          "compile": False, "predict": True}, {}, 35, 120),
      ("nnunet", "torch", {**common, "peer": "nnunet", "batches": [small, big],
                           "compile": False}, {}, 30, 120),
      ("jax_b8", "jax", {**common, "batch": big}, warm, 50, 120),
      ("monai_compiled", "torch", {**common, "peer": "monai", "batches": [small],
                                   "compile": True}, {}, 75, 150),
      ("nnunet_compiled", "torch", {**common, "peer": "nnunet", "batches": [small],
                                    "compile": True}, {}, 75, 150),
      ("profile_b2", "jax", {**common, "batch": small, "profile_steps": 5}, cold, 25, 90),
      ("lever_pad8_b2", "jax", {**common, "batch": small, **_lever("pad8")}, warm, 35, 90),
      ("lever_conv_fusion_b2", "jax", {**common, "batch": small, **_lever("conv_fusion")},
       {**warm, **_xla("conv_fusion")}, 35, 90),
      ("demo", "demo", {"smoke": smoke}, warm, 60, 150),
      ("lever_no_nhwc_b2", "jax", {**common, "batch": small}, {**warm, **_xla("no_nhwc")},
       35, 90),
      ("lever_autotune_1_b2", "jax", {**common, "batch": small},
       {**warm, **_xla("autotune_1")}, 35, 90),
      ("profile_b8", "jax", {**common, "batch": big, "profile_steps": 3}, warm, 25, 90),
      ("lever_remat_b2", "jax", {**common, "batch": small, **_lever("remat")}, warm, 35, 90),
      ("lever_pad8_b8", "jax", {**common, "batch": big, **_lever("pad8")}, warm, 45, 90),
      ("lever_conv_fusion_b8", "jax", {**common, "batch": big, **_lever("conv_fusion")},
       {**warm, **_xla("conv_fusion")}, 45, 90),
      ("lever_autotune_0_b2", "jax", {**common, "batch": small},
       {**warm, **_xla("autotune_0")}, 35, 60),
      ("nnunet_compiled_b8", "torch", {**common, "peer": "nnunet", "batches": [big],
                                       "compile": True}, {}, 75, 150),
  ]
  if smoke and not args.runs:  # every kind of run once: the code paths, not the figures
    args.runs = ",".join(SMOKE_RUNS)
  if args.runs:
    chosen = set(args.runs.split(","))
    unknown = chosen - {r[0] for r in runs}
    if unknown:
      sys.exit(f"--runs: unknown {sorted(unknown)}; known: {[r[0] for r in runs]}")
    runs = [r for r in runs if r[0] in chosen]
  return runs


SMOKE_RUNS = ("jax_b2_cold", "jax_b2_warm", "monai", "nnunet", "jax_b8", "profile_b2",
              "lever_pad8_b2", "lever_no_nhwc_b2", "demo")


def _lever(name: str) -> dict:
  return {"lever": name, "overrides": LEVERS[name].get("overrides", {})}


def _xla(name: str) -> dict:
  flags = os.environ.get("XLA_FLAGS", "")
  return {"XLA_FLAGS": (flags + " " + LEVERS[name]["xla_flags"]).strip()}


def run_all(args) -> dict:
  results = {"date": time.strftime("%Y-%m-%d %H:%M"), "smoke": args.smoke,
             "host": platform.node(), "python": platform.python_version(),
             "budget_s": args.budget_s, "runs": {}, "not_run": []}
  deadline = START + args.budget_s
  for name, worker, spec, env, expected_s, limit_s in plan(args):
    left = deadline - time.time()
    if left < expected_s:
      results["not_run"].append(name)
      continue
    tick = time.time()
    try:
      done = subprocess.run([sys.executable, __file__, "--worker", worker, json.dumps(spec)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, **env},
                            timeout=min(limit_s, left))
      outcome = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 \
          else {"error": f"exit status {done.returncode}"}
    except subprocess.TimeoutExpired:
      outcome = {"error": f"cut at {min(limit_s, left):.0f} s"}
    except (ValueError, IndexError):
      outcome = {"error": "no result printed"}
    outcome.update(wall_s=time.time() - tick, lever=spec.get("lever"),
                   xla_flags=env.get("XLA_FLAGS"))
    results["runs"][name] = outcome
    print(f"[{time.time() - START:5.0f} s] {name}: {_summary_line(outcome)}", flush=True)
  results["targets"] = {} if args.smoke else targets(results["runs"], args.smoke)
  return results


def _summary_line(outcome: dict) -> str:
  if "error" in outcome or "skipped" in outcome:
    return outcome.get("error") or outcome["skipped"]
  rows = outcome.get("train")
  rows = rows if isinstance(rows, list) else [rows] if rows else []
  parts = [f"batch {r['batch']} {r['samples_per_s']:.1f} samples/s" for r in rows]
  if outcome.get("heldout_mean_region_dice") is not None:
    parts.append(f"held-out Dice {outcome['heldout_mean_region_dice']:.3f}")
  return ", ".join(parts) or "done"


def _train_rows(runs: dict) -> list:
  rows = []
  for name, outcome in runs.items():
    train = outcome.get("train")
    for row in train if isinstance(train, list) else [train] if train else []:
      rows.append({"run": name, "side": outcome.get("side"), **row})
  return rows


def targets(runs: dict, smoke: bool) -> dict:
  """The GPU issue's targets against this run's figures (None where a figure is missing)."""
  rows = _train_rows(runs)
  small, big = (1, 2) if smoke else (2, 8)

  def best(condition):
    found = [r["samples_per_s"] for r in rows if condition(r)]
    return max(found) if found else None

  ours_b2 = best(lambda r: r["side"] == "brats_jax" and r["batch"] == small
                 and r["run"] in ("jax_b2_cold", "jax_b2_warm"))
  ours_b8 = best(lambda r: r["run"] == "jax_b8")
  peer = best(lambda r: r["side"] not in ("brats_jax", None) and r["batch"] == small)
  cold, warm = runs.get("jax_b2_cold", {}), runs.get("jax_b2_warm", {})
  predict = cold.get("predict", {})

  def figure(value, goal, higher=True):
    return {"value": value, "goal": goal,
            "reached": None if value is None else (value >= goal if higher else value <= goal)}

  return {
      "samples_per_s_batch_2": figure(ours_b2, 76.0),
      "ratio_to_strongest_peer": figure(ours_b2 / peer if ours_b2 and peer else None, 1.5),
      "batch_8_per_sample_vs_batch_2": figure(ours_b8 / ours_b2 if ours_b8 and ours_b2
                                              else None, 1.0),
      "process_to_first_step_cold_s": figure(
          cold.get("train", {}).get("process_to_first_step_s"), 20.0, higher=False),
      "process_to_first_step_warm_s": figure(
          warm.get("train", {}).get("process_to_first_step_s"), 5.0, higher=False),
      "predict_case_warm_s": figure(predict.get("warm_s"), 0.2, higher=False),
      "predict_case_first_s": figure(predict.get("first_s"), 2.0, higher=False)}


def table(results: dict) -> str:
  lines = [f"{'run':<22} {'side':<16} {'batch':>5} {'first s':>7} {'step ms':>8} "
           f"{'samples/s':>9} {'peak GiB':>8} {'MFU':>6}"]
  for r in _train_rows(results["runs"]):
    memory = f"{r['peak_memory_gib']:.2f}" if r.get("peak_memory_gib") else "-"
    mfu = f"{100 * r['analytic_mfu']:.1f}%" if r.get("analytic_mfu") else "-"
    lines.append(f"{r['run']:<22} {r['side']:<16} {r['batch']:>5} {r['first_step_s']:>7.1f} "
                 f"{r['step_ms']:>8.1f} {r['samples_per_s']:>9.2f} {memory:>8} {mfu:>6}")
  for name, outcome in results["runs"].items():
    if "error" in outcome or "skipped" in outcome:
      lines.append(f"{name:<22} {outcome.get('error') or outcome['skipped']}")
    if "predict" in outcome:
      p = outcome["predict"]
      lines.append(f"predict {'x'.join(map(str, p['case_shape']))} ({outcome['side']}): "
                   f"first {p['first_s']:.2f} s, warm {p['warm_s']:.3f} s")
    if "profile" in outcome:
      p = outcome["profile"]
      groups = ", ".join(f"{g} {ms:.1f}" for g, ms in p["ms_per_step"].items())
      lines.append(f"{name}: {p['total_ms_per_step']:.1f} ms of kernels per step: {groups}")
    if outcome.get("side") == "demo" and "commands" in outcome:
      steps = ", ".join(f"{c['command']} {c['seconds']:.0f} s" for c in outcome["commands"])
      dice = outcome.get("heldout_mean_region_dice")
      lines.append(f"demo: {steps}" + (f"; held-out Dice {dice:.3f}" if dice is not None
                                       else ""))
  if results["not_run"]:
    lines.append("not run (budget): " + ", ".join(results["not_run"]))
  for name, t in results["targets"].items():
    value = "-" if t["value"] is None else f"{t['value']:.3g}"
    verdict = {True: "reached", False: "not reached", None: "not measured"}[t["reached"]]
    lines.append(f"target {name}: {value} (goal {t['goal']:g}): {verdict}")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true", help="tiny shapes, any machine")
  parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."),
                                                    "device_check.json"))
  parser.add_argument("--budget_s", type=float, default=500,
                      help="no run starts unless its expected time fits in what is left")
  parser.add_argument("--runs", help="comma-separated names: only these runs")
  parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:  # one run, in this process: its JSON on the last line of stdout
    worker, spec = args.worker
    spec = json.loads(spec)
    result = {"jax": run_jax, "torch": run_torch, "demo": run_demo}[worker](spec)
    print(json.dumps(result))
    return
  args.cache = tempfile.mkdtemp(prefix="brats_jax_device_check_cache_")
  try:
    results = run_all(args)
  finally:
    shutil.rmtree(args.cache, ignore_errors=True)
  from brats_jax import files

  files.write_json(args.out, results)
  print(table(results))
  print(f"wrote {args.out}")
  if "error" in results["runs"].get("jax_b2_cold", {"error": "not run"}):
    sys.exit(1)


if __name__ == "__main__":
  main()
