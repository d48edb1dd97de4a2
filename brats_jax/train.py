"""The training loop: data, steps, logging, validation, checkpoints, resume and clean stops."""

import os
import signal
import sys
import time
import zlib

import jax
import ml_collections

from brats_jax import config_io, inference, layouts, metrics, plots, sharding, train_step
from brats_jax.checkpointing import Checkpoints
from brats_jax.errors import ConfigError, NonFiniteError
from brats_jax.input_pipeline import PatchSampler, Prefetcher
from brats_jax.progress import progress_bar
from brats_jax.store import PreparedStore
from brats_jax.writers import MetricWriter, read_metrics


class StopRequest:
  """Turns SIGINT/SIGTERM into a stop at a step boundary, agreed by every process.

  One process: the signal sets a flag the loop checks between steps. Several processes: they
  must all save the same step, so the stop goes through jax.distributed's preemption sync
  manager, which owns SIGTERM and makes every process reach the same sync point
  (Checkpoints.reached_preemption); SIGINT is passed on to it as SIGTERM.
  """

  def __init__(self):
    self.signal = None
    self.several_processes = jax.process_count() > 1
    signals = (signal.SIGINT,) if self.several_processes else (signal.SIGINT, signal.SIGTERM)
    self.previous = {s: signal.signal(s, self._handle) for s in signals}

  def _handle(self, signum, frame):
    if self.signal is not None:  # a second signal: stop now
      self.restore()
      raise KeyboardInterrupt
    self.signal = signum
    if self.several_processes:
      signal.raise_signal(signal.SIGTERM)

  def should_stop(self, step: int, checkpoints: Checkpoints) -> bool:
    """Called by every process after every step."""
    if self.several_processes:
      return checkpoints.reached_preemption(step)
    return self.signal is not None or checkpoints.reached_preemption(step)

  def exit_status(self) -> int:
    """128 + the signal this process received (SIGTERM when another process was stopped)."""
    return 128 + (self.signal or signal.SIGTERM)

  def restore(self):
    for s, handler in self.previous.items():
      signal.signal(s, handler)


def evaluate(predict, state, store: PreparedStore, case_ids, min_enhancing_voxels: int) -> dict:
  """Whole-case sliding-window prediction and per-region Dice over the given cases.

  min_enhancing_voxels < 0 chooses the ET threshold on these cases (reported in the summary).
  """
  per_case = []
  for case_id in case_ids:
    image, labels = store.read_case(case_id)
    regions = predict(state, image) > 0.5
    per_case.append(metrics.region_dice(regions, labels))
  threshold = metrics.choose_et_threshold(per_case) if min_enhancing_voxels < 0 \
      else min_enhancing_voxels
  return metrics.summarise(per_case, threshold)


def compile_and_check_memory(step_fn, state, batch, config):
  """Compiles the train step ahead of time; refuses a config that cannot fit on a device."""
  compiled = step_fn.lower(state, batch).compile()
  analysis = compiled.memory_analysis()
  limit = config.train.device_memory_gib * 2**30
  if not limit:
    stats = jax.local_devices()[0].memory_stats() or {}  # other processes' devices: no stats
    limit = stats.get("bytes_limit", 0)
  if analysis is not None and limit:
    # Donated state buffers are counted once (alias).
    needed = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
              + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)
    if needed > limit:
      raise ConfigError(
          f"the train step needs {needed / 2**30:.2f} GiB per device but the device has "
          f"{limit / 2**30:.2f} GiB ({(needed - limit) / 2**30:.2f} GiB over): lower "
          f"data.batch_per_device (now {config.data.batch_per_device}) or data.patch_size "
          f"(now {tuple(config.data.patch_size)}), or use model.dtype=bfloat16")
  return compiled


def _data_record(config, step: int, train_ids) -> dict:
  digest = zlib.crc32("\n".join(train_ids).encode())
  return {"next_step": int(step), "seed": int(config.seed), "num_train_cases": len(train_ids),
          "train_cases_crc32": digest,
          "batch_per_device": int(config.data.batch_per_device)}


def _log_scalars(ready: tuple, global_batch: int, schedule) -> tuple:
  """(step, scalars) of a logging interval: (device sums, step, seconds, steps in it)."""
  sums, at, seconds, steps = ready
  sums = sharding.host_value(sums)
  finite = max(float(sums["finite_steps"]), 1.0)
  scalars = {"train/loss": float(sums["loss"]) / finite,
             "train/nonfinite_steps": float(sums["nonfinite_steps"]),
             "train/samples_per_second": steps * global_batch / max(seconds, 1e-9),
             "train/learning_rate": float(schedule(at - 1))}  # used by step `at` (counts from 1)
  for i, region in enumerate(layouts.REGIONS):
    denominator = sums["predicted"][i] + sums["reference"][i]
    scalars[f"train/dice_{region}"] = (2 * sums["intersection"][i] / denominator
                                       if denominator > 0 else 1.0)
  return at, scalars


def _stop_if_nonfinite(step_metrics):
  """(metrics, step) of a step that has finished or soon will."""
  if step_metrics is not None and float(sharding.host_value(step_metrics[0]["nonfinite_steps"])):
    raise NonFiniteError(
        f"non-finite loss or gradient at step {step_metrics[1]} (train.on_nonfinite=stop); "
        "that update was not applied and no checkpoint was written after it; lower "
        "train.learning_rate or check the data, then run again to resume from the last "
        "checkpoint")


def _format_dice(summary: dict) -> str:
  text = "  ".join(f"{r} {summary[r]:.4f}" for r in layouts.REGIONS) + \
      f"  mean {summary['mean_dice']:.4f}"
  if summary["min_enhancing_voxels"]:
    text += (f"  (ET predictions under {summary['min_enhancing_voxels']} voxels relabelled as "
             f"necrosis; ET before: {summary['ET_before_threshold']:.4f})")
  return text


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, devices=None) -> dict:
  """Trains (or resumes) the run in `workdir` on `devices` (default: all); returns the last
  validation summary."""
  is_main = jax.process_index() == 0
  mesh = sharding.make_mesh(devices)
  store = PreparedStore(config.data.store)
  val_fold = config.data.val_fold
  train_ids = store.case_ids(exclude_folds=[val_fold] if val_fold >= 0 else None)
  val_ids = store.case_ids(folds=[val_fold]) if val_fold >= 0 else []
  if config.eval.max_cases:
    val_ids = val_ids[:config.eval.max_cases]
  global_batch = config.data.batch_per_device * mesh.devices.size
  if is_main:
    os.makedirs(workdir, exist_ok=True)
    config_io.save_workdir_config(config, workdir)
    print(f"{mesh.devices.size} devices ({jax.devices()[0].platform}), "
          f"{jax.process_count()} processes; global batch {global_batch}; "
          f"{len(train_ids)} training and {len(val_ids)} validation cases", flush=True)

  graphdef, state, tx = train_step.create_train_state(config, mesh)
  checkpoints = Checkpoints(workdir, config.checkpoint.keep, config.checkpoint.keep_best)
  start = 0
  restored = checkpoints.restore_latest_readable(
      state, log=lambda m: print(m, file=sys.stderr, flush=True))
  latest = None
  if restored is not None:
    latest, state, data = restored
    start = int(sharding.host_value(state["step"]))
    if is_main:
      print(f"resumed from checkpoint at step {start}", flush=True)
    if data["train_cases_crc32"] != _data_record(config, 0, train_ids)["train_cases_crc32"]:
      print("warning: the training cases differ from those of the checkpointed run",
            file=sys.stderr)

  step_fn = train_step.make_train_step(graphdef, tx, mesh, config)
  predict = inference.make_case_predictor(graphdef, mesh, config)
  schedule = train_step.learning_rate_schedule(config.train)
  sampler = PatchSampler(store, train_ids, config.data.patch_size, global_batch,
                         sharding.process_batch_slice(global_batch),
                         config.data.foreground_fraction, config.seed)
  batches = Prefetcher(sampler.batch, start, config.data.prefetch)
  writer = MetricWriter(workdir)
  stop = StopRequest()
  num_steps = config.train.num_steps
  summary = {}
  sums, ready_to_log, previous_metrics = None, None, None
  log_start, log_step = time.time(), start
  bar = progress_bar(total=num_steps, initial=start, unit="step", disable=not is_main,
                     dynamic_ncols=True, smoothing=0.1)
  try:
    for step in range(start, num_steps):
      batch = sharding.to_global(next(batches), mesh, global_batch)
      if step == start:  # before the first step: compile, and check it fits in memory
        step_fn = compile_and_check_memory(step_fn, state, batch, config)
        sharding.wait_for_all_processes("brats_jax: train step compiled")
      state, step_metrics = step_fn(state, batch)
      done = step + 1
      # Everything read back below belongs to the previous step, which has finished by now
      # or soon will: the device is never made to wait on the host.
      if config.train.on_nonfinite == "stop":
        _stop_if_nonfinite(previous_metrics)
      previous_metrics = (step_metrics, done)
      if ready_to_log is not None:
        at, scalars = _log_scalars(ready_to_log, global_batch, schedule)
        writer.write(at, scalars)
        bar.set_postfix(loss=f"{scalars['train/loss']:.4f}",
                        samples_s=f"{scalars['train/samples_per_second']:.1f}")
        ready_to_log = None
      # Summed on device (asynchronously); read back only when logged.
      sums = step_metrics if sums is None else jax.tree.map(lambda a, b: a + b, sums,
                                                            step_metrics)
      bar.update(1)
      if done % config.log_every_steps == 0 or done == num_steps:
        now = time.time()
        ready_to_log = (sums, done, now - log_start, done - log_step)
        sums, log_start, log_step = None, now, done
      val_metrics = None
      if val_ids and (done % config.eval.every_steps == 0 or done == num_steps):
        eval_start = time.time()
        summary = evaluate(predict, state, store, val_ids, config.eval.min_enhancing_voxels)
        log_start += time.time() - eval_start  # samples/s counts training time only
        val_metrics = {f"val/{k}": v for k, v in summary.items()}
        writer.write(done, val_metrics)
        if is_main:
          bar.write(f"step {done}: validation Dice {_format_dice(summary)}")
      stopping = stop.should_stop(done, checkpoints)
      if (done % config.checkpoint.every_steps == 0 or val_metrics is not None
          or done == num_steps or stopping):
        if config.train.on_nonfinite == "stop":  # no checkpoint after a non-finite step
          # (the last step always saves, so this also checks it)
          _stop_if_nonfinite((step_metrics, done))
        checkpoints.save(done, state, _data_record(config, done, train_ids), val_metrics,
                         force=True)
      if stopping:
        checkpoints.wait()
        status = stop.exit_status()
        bar.write(f"stopped by {signal.Signals(status - 128).name} after step {done}; "
                  f"checkpoint saved, run the same command again to continue")
        bar.close()
        sys.exit(status)
    if ready_to_log is not None:
      writer.write(*_log_scalars(ready_to_log, global_batch, schedule))
  finally:
    bar.close()
    batches.close()
    stop.restore()
    checkpoints.wait()
    writer.close()

  if latest is not None and start >= num_steps and val_ids:
    summary = evaluate(predict, state, store, val_ids, config.eval.min_enhancing_voxels)
  if is_main:
    plots.training_curves(read_metrics(workdir), os.path.join(workdir, "training_curves.png"))
  if is_main and summary:
    best = checkpoints.best_step()
    print(f"final validation Dice ({len(val_ids)} held-out cases): {_format_dice(summary)}"
          + (f"; best checkpoint at step {best}" if best is not None else ""), flush=True)
  checkpoints.close()
  return summary
