"""The training loop: data, steps, logging, validation, checkpoints, resume and clean stops.

Everything that can refuse a run happens before the workdir is touched: validate(config)
against the store and the devices, the relaunch rules against the run's last inference
contract, and the ahead-of-time memory check of the compiled step. Only then are
checkpoints restored and config.json, logs and checkpoints written.
"""

import os
import signal
import sys
import time
import zlib

import jax
import ml_collections
import numpy as np

from brats_jax import (config_checks, config_io, contract, device_data, inference,
                       input_pipeline, layouts, losses, metrics, optimizer, plots,
                       preprocessing, sharding, splits, train_state, train_step)
from brats_jax.checkpointing import Checkpoints
from brats_jax.errors import ConfigError, NonFiniteError
from brats_jax.input_pipeline import PatchSampler, Prefetcher
from brats_jax.progress import progress_bar
from brats_jax.stop_request import StopRequest
from brats_jax.store import PreparedStore
from brats_jax.writers import MetricWriter, read_metrics


def validate(predict, variables, store: PreparedStore, case_ids, kind: str,
             min_enhancing_voxels: int) -> dict:
  """Whole-case sliding-window prediction, decoded as predict decodes it, and per-region
  Dice over the given cases. min_enhancing_voxels < 0 chooses the ET threshold on them."""
  per_case = []
  for case_id in case_ids:
    image, labels = store.read_case(case_id)
    predicted = inference.decode(predict(variables, image), kind)
    per_case.append(metrics.region_dice(predicted, labels, losses.scored_regions(kind)))
  if kind == "binary":  # no enhancing tumour to threshold
    threshold = 0
  else:
    threshold = metrics.choose_et_threshold(per_case) if min_enhancing_voxels < 0 \
        else min_enhancing_voxels
  return metrics.validation_summary(per_case, threshold)


def _memory(compiled, config) -> tuple:
  """(bytes the compiled step needs per device, the device's limit or 0 if unknown)."""
  analysis = compiled.memory_analysis()
  limit = config.train.device_memory_gib * 2**30
  if not limit:
    stats = jax.local_devices()[0].memory_stats() or {}  # other processes' devices: no stats
    limit = stats.get("bytes_limit", 0)
  if analysis is None:
    return 0, limit
  # Donated state buffers are counted once (alias).
  return (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
          + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes), limit


def compile_step(graphdef, tx, state, mesh, config, store, train_ids, global_batch, log):
  """(compiled step, placement): the train step compiled ahead of time for the data
  placement to run (device_data.py), checked against device memory before any step. With
  data.placement=auto, a placement whose compiled step does not fit falls back to the next
  (replicated, sharded, host); a config that cannot fit even streaming is refused."""
  requested = config.data.placement
  while True:
    placement = device_data.choose_placement(requested, store, train_ids,
                                             config.data.patch_size, mesh, 0,
                                             config.train.device_memory_gib)
    step_fn = train_step.make_train_step(graphdef, tx, mesh, config, placement.mode)
    batch = input_pipeline.batch_shapes(config, global_batch, mesh, store.image_dtype,
                                        descriptors=placement.mode != "host")
    data = device_data.abstract(store, train_ids, placement, mesh)
    compiled = step_fn.lower(state, batch, data).compile()
    needed, limit = _memory(compiled, config)
    if not limit or needed <= limit:
      return compiled, placement
    if placement.mode != "host" and requested == "auto":
      log(f"data: {placement.mode} needs {needed / 2**30:.2f} GiB per device of "
          f"{limit / 2**30:.2f}; trying less")
      requested = "sharded" if placement.mode == "replicated" else "host"
      continue
    raise ConfigError(
        f"the train step needs {needed / 2**30:.2f} GiB per device but the device has "
        f"{limit / 2**30:.2f} GiB ({(needed - limit) / 2**30:.2f} GiB over): lower "
        f"data.batch_per_device (now {config.data.batch_per_device}) or data.patch_size "
        f"(now {tuple(config.data.patch_size)}), use model.dtype=bfloat16 or "
        f"model.remat=convolutions" + ("" if placement.mode == "host" else
                                       ", or data.placement=host"))


def _cases_checksum(train_ids) -> int:
  return zlib.crc32("\n".join(train_ids).encode())


def _data_record(config, step: int, train_ids) -> dict:
  return {"next_step": int(step), "seed": int(config.seed), "num_train_cases": len(train_ids),
          "train_cases_crc32": _cases_checksum(train_ids),
          "batch_per_device": int(config.data.batch_per_device)}


def _log_scalars(ready: tuple, global_batch: int, schedule, regions) -> tuple:
  """(step, scalars) of a logging interval: (device sums, step, seconds, steps in it,
  seconds the loop waited for input)."""
  sums, at, seconds, steps, waited = ready
  sums = sharding.host_value(sums)
  finite = max(float(sums["finite_steps"]), 1.0)
  scalars = {"train/loss": float(sums["loss"]) / finite,
             "train/nonfinite_steps": float(sums["nonfinite_steps"]),
             "train/samples_per_second": steps * global_batch / max(seconds, 1e-9),
             # Share of the interval the loop stood waiting for patches: > 0 means input-bound.
             "train/input_wait_fraction": waited / max(seconds, 1e-9),
             "train/learning_rate": float(schedule(at - 1))}  # used by step `at` (counts from 1)
  for i, region in enumerate(regions):  # Dice (= F1), IoU and accuracy of training patches
    both, predicted, reference = (float(sums[k][i]) for k in ("intersection", "predicted",
                                                              "reference"))
    union = predicted + reference - both
    scalars[f"train/dice_{region}"] = 2 * both / (predicted + reference) if union else 1.0
    scalars[f"train/iou_{region}"] = both / union if union else 1.0
    scalars[f"train/accuracy_{region}"] = 1 - (union - both) / float(sums["voxels"][i])
  return at, scalars


def _stop_if_nonfinite(step_metrics):
  """(metrics, step) of a step that has finished or soon will."""
  if step_metrics is not None and float(sharding.host_value(step_metrics[0]["nonfinite_steps"])):
    raise NonFiniteError(
        f"non-finite loss or gradient at step {step_metrics[1]} (train.on_nonfinite=stop); "
        "that update was not applied and no checkpoint was written after it; lower "
        "train.learning_rate or check the data, then run again to resume from the last "
        "checkpoint")


def early_stop_reason(validations: list, patience: int) -> str | None:
  """Why to stop now, or None: the last `patience` validations ({"step", "mean_dice"}, in
  order) did not beat the best one before them (a tie is not an improvement)."""
  if not patience or not validations:
    return None
  scores = [v["mean_dice"] for v in validations]
  best = int(np.argmax(scores))  # the first of equal bests
  since = len(scores) - 1 - best
  if since < patience:
    return None
  return (f"early stopping: {since} validations without beating mean Dice "
          f"{scores[best]:.4f} of step {validations[best]['step']} "
          f"(train.early_stopping_patience={patience}); the best checkpoint is kept")


def _format_dice(summary: dict) -> str:
  text = "  ".join(f"{r} {summary[r]:.4f}" for r in layouts.REGIONS if r in summary) + \
      f"  mean {summary['mean_dice']:.4f}"
  if summary["min_enhancing_voxels"]:
    text += (f"  (ET predictions under {summary['min_enhancing_voxels']} voxels relabelled as "
             f"necrosis; ET before: {summary['ET_before_threshold']:.4f})")
  return text


def _check_relaunch(config, workdir: str, train_ids, log):
  """The run's last contract and the accepted changes, or (None, {}) for a new run; a
  relaunch that would change the trained run raises before anything is written."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    return None, {}
  checkpoints = Checkpoints(workdir, read_only=True)
  try:
    latest = checkpoints.latest_contract(log)
  finally:
    checkpoints.close()
  if latest is None:
    return None, {}
  step, run_contract = latest
  changes = contract.check_relaunch(run_contract, config, _cases_checksum(train_ids),
                                    f"{workdir} (checkpoint {step})")
  return run_contract, changes


def train_and_validate(config: ml_collections.ConfigDict, workdir: str, devices=None) -> dict:
  """Trains (or resumes) the run in `workdir` on `devices` (default: all); returns the last
  validation summary."""
  is_main = sharding.is_main_process()
  log = (lambda m: print(m, file=sys.stderr, flush=True)) if is_main else (lambda m: None)
  mesh = sharding.make_mesh(devices)
  store = PreparedStore(config.data.store)
  config_checks.validate(config, channels=store.channels, num_folds=store.num_folds,
                         num_devices=mesh.devices.size, num_processes=jax.process_count(),
                         binary_labels=store.binary_labels)
  store = PreparedStore(config.data.store, config.data.modalities)
  preprocessing.check_supported(store.preprocessing, store.path)
  cases = splits.split(config, store)
  train_ids, val_ids = cases.train_ids, cases.val_ids
  global_batch = config.data.batch_per_device * mesh.devices.size
  run_contract, changes = _check_relaunch(config, workdir, train_ids, log)

  tx = optimizer.make_optimizer(config.train)
  graphdef, state = train_state.create_train_state(config, mesh, tx)
  step_fn, placement = compile_step(graphdef, tx, state, mesh, config, store, train_ids,
                                    global_batch, log)
  sharding.wait_for_all_processes("brats_jax: train step compiled")

  # Nothing was written before this point; from here on the run is accepted.
  checkpoints = Checkpoints(workdir, config.checkpoint.keep, config.checkpoint.keep_best)
  start, history, et_threshold, validations = 0, [], None, []
  restored = checkpoints.restore_latest_readable(state, log)
  latest = None
  if restored is not None:
    latest, state, _, run_contract = restored
    start = int(sharding.host_value(state["step"]))
    history, et_threshold = run_contract["history"], run_contract["et_threshold"]
    validations = run_contract.get("validations", [])
    if is_main:
      print(f"resumed from checkpoint at step {start}" + (
          "; changed: " + ", ".join(f"{f} {a!r} -> {b!r}" for f, (a, b) in changes.items())
          if changes else ""), flush=True)
  history = history + [{"start_step": start, "num_devices": int(mesh.devices.size),
                        "num_processes": jax.process_count(),
                        "changes": {f: list(v) for f, v in changes.items()}}]
  training_data = {"store": store.path, "num_train_cases": len(train_ids),
                   "train_cases_crc32": _cases_checksum(train_ids)}
  if is_main:
    os.makedirs(workdir, exist_ok=True)
    config_io.save_workdir_config(config, workdir)
    print(f"{mesh.devices.size} devices ({jax.devices()[0].platform}), "
          f"{jax.process_count()} processes; global batch {global_batch}; "
          f"{len(train_ids)} training and {len(val_ids)} validation cases "
          f"({cases.description})", flush=True)

  predict = inference.make_case_predictor(graphdef, mesh, config)
  schedule = optimizer.learning_rate_schedule(config.train)
  sampler = PatchSampler(store, train_ids, config.data.patch_size, global_batch,
                         sharding.process_batch_slice(global_batch),
                         config.data.foreground_fraction, config.seed,
                         sharded_over=mesh.devices.size if placement.mode == "sharded" else 0)
  if is_main:
    print(f"data: {placement.mode}: {placement.reason}", flush=True)
  data = device_data.load(store, train_ids, placement, mesh)
  batches = Prefetcher(sampler.batch if placement.mode == "host" else sampler.descriptors,
                       start, config.data.prefetch)
  writer = MetricWriter(workdir)
  stop = StopRequest()
  # A run that stopped early stays stopped when relaunched (unless the patience grew).
  stopped_early = early_stop_reason(validations, config.train.early_stopping_patience)
  num_steps = start if stopped_early else config.train.num_steps
  if stopped_early and is_main:
    print(stopped_early, flush=True)
  regions = losses.scored_regions(config.loss.kind)
  summary = {}
  sums, ready_to_log, previous_metrics = None, None, None
  log_start, log_step, waited = time.time(), start, 0.0
  bar = progress_bar(total=num_steps, initial=start, unit="step", disable=not is_main,
                     dynamic_ncols=True, smoothing=0.1)
  try:
    for step in range(start, num_steps):
      tick = time.perf_counter()
      rows = next(batches)
      waited += time.perf_counter() - tick
      batch = sharding.to_global(rows, mesh, global_batch)
      state, step_metrics = step_fn(state, batch, data)
      done = step + 1
      # Everything read back below belongs to the previous step, which has finished by now
      # or soon will: the device is never made to wait on the host.
      if config.train.on_nonfinite == "stop":
        _stop_if_nonfinite(previous_metrics)
      previous_metrics = (step_metrics, done)
      if ready_to_log is not None:
        at, scalars = _log_scalars(ready_to_log, global_batch, schedule, regions)
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
        ready_to_log = (sums, done, now - log_start, done - log_step, waited)
        sums, log_start, log_step, waited = None, now, done, 0.0
      val_metrics = None
      if val_ids and (done % config.eval.every_steps == 0 or done == num_steps):
        eval_start = time.time()
        summary = validate(predict, state, cases.val_store, val_ids, config.loss.kind,
                           config.eval.min_enhancing_voxels)
        log_start += time.time() - eval_start  # samples/s counts training time only
        val_metrics = {f"val/{k}": v for k, v in summary.items()}
        if config.eval.min_enhancing_voxels < 0:
          et_threshold = {"voxels": summary["min_enhancing_voxels"], "chosen_at_step": done}
        validations = validations + [{"step": done, "mean_dice": summary["mean_dice"]}]
        stopped_early = early_stop_reason(validations, config.train.early_stopping_patience)
        writer.write(done, val_metrics)
        if is_main:
          bar.write(f"step {done}: validation Dice {_format_dice(summary)}")
      stopping = stop.should_stop(done, checkpoints)
      if (done % config.checkpoint.every_steps == 0 or val_metrics is not None
          or done == num_steps or stopping or stopped_early):
        if config.train.on_nonfinite == "stop":  # no checkpoint after a non-finite step
          # (the last step always saves, so this also checks it)
          _stop_if_nonfinite((step_metrics, done))
        checkpoints.save(done, state, _data_record(config, done, train_ids),
                         contract.make(config, store.preprocessing, training_data,
                                       et_threshold, history, validations),
                         val_metrics, force=True)
      if stopping:
        checkpoints.wait()
        status = stop.exit_status()
        bar.write(f"stopped by {signal.Signals(status - 128).name} after step {done}; "
                  f"checkpoint saved, run the same command again to continue")
        bar.close()
        sys.exit(status)
      if stopped_early:
        bar.write(stopped_early)
        break
    if ready_to_log is not None:
      writer.write(*_log_scalars(ready_to_log, global_batch, schedule, regions))
  finally:
    bar.close()
    batches.close()
    stop.restore()
    checkpoints.wait()
    writer.close()

  if latest is not None and start >= num_steps and val_ids:  # nothing trained this launch
    summary = validate(predict, state, cases.val_store, val_ids, config.loss.kind,
                       config.eval.min_enhancing_voxels)
  if is_main:
    plots.training_curves(read_metrics(workdir), os.path.join(workdir, "training_curves.png"))
  if is_main and summary:
    best = checkpoints.best_step()
    print(f"final validation Dice ({len(val_ids)} held-out cases): {_format_dice(summary)}"
          + (f"; best checkpoint at step {best}" if best is not None else ""), flush=True)
  checkpoints.close()
  return summary
