"""The training loop: steps, logs, validation, checkpoints and clean stops.

setup.py does everything before the first step (and every refusal); this module only drives
the run: one compiled step per global batch, the metrics read back one step late, whole-case
validation every eval.every_steps, a checkpoint at every validation, every
checkpoint.every_steps, at the end and at a stop request.
"""

import functools
import signal
import time

import ml_collections

from brats_jax import files, sharding
from brats_jax.errors import NonFiniteError, Stopped
from brats_jax.evaluation import choose_rules
from brats_jax.inference import postprocessing
from brats_jax.inference.case_predictor import make_case_predictor
from brats_jax.progress import progress_bar
from brats_jax.train import epochs, optimizer, setup, validation
from brats_jax.train.host_input import Prefetcher
from brats_jax.train.metrics_log import MetricLogger, read_metrics
from brats_jax.train.stop_request import StopRequest
from brats_jax.workdir import validation_predictions


def _stop_if_nonfinite(step_metrics, step: int):
  """Reads the metrics of a step that has finished or soon will."""
  if float(sharding.host_value(step_metrics["nonfinite_steps"])):
    raise NonFiniteError(
        f"non-finite loss or gradient at step {step} (train.on_nonfinite=stop); "
        "that update was not applied and no checkpoint was written after it; lower "
        "train.learning_rate or check the data, then run again to resume from the last "
        "checkpoint")


def _keeping(workdir: str, last: bool):
  """What a validation does with each case's prediction: on process 0, where this
  validation may be the run's last, keeps it (validation_predictions.py)."""
  if not (last and sharding.is_main_process()):
    return None
  validation_predictions.start(workdir)
  return functools.partial(validation_predictions.save, workdir)


def choose_postprocessing(workdir: str) -> None:
  """Chooses post-processing on the run's kept validation predictions (process 0), unless
  the decision in the workdir was made on them already; prints the before/after table."""
  kept = validation_predictions.record(workdir)
  if kept is None or not sharding.is_main_process():
    return
  decision = postprocessing.read_decision(workdir)
  if decision and decision.get("decided_on", {}).get("validation_steps") == {
      workdir: kept["step"]}:
    return
  rules, report = choose_rules.decide([workdir], workdir)
  print(f"post-processing chosen on {report['num_cases']} validation cases: "
        f"{rules.describe()}\n{choose_rules.format_report(report)}", flush=True)


def train_and_validate(config: ml_collections.ConfigDict, workdir: str, devices=None) -> dict:
  """Trains (or resumes) the run in `workdir` on `devices` (default: all); returns the last
  validation summary. `config` has passed config.checks.check_config (the command checks
  it); the rules that need the store and the devices are checked here (setup.py)."""
  run = setup.start_run(config, workdir, devices)
  config = run.config  # with train.num_steps resolved from train.num_epochs (epochs.py)
  is_main = sharding.is_main_process()
  val_ids = run.cases.val_ids
  predict = make_case_predictor(run.graphdef, run.mesh, config)
  # A run that stopped early stays stopped when relaunched (unless the patience grew).
  patience = config.train.early_stopping_patience
  stopped_early = validation.early_stop_reason(run.validations, patience)
  num_steps = run.start if stopped_early else config.train.num_steps
  if stopped_early and is_main:
    print(stopped_early, flush=True)
  bar = progress_bar(total=num_steps, initial=run.start, unit="step", disable=not is_main,
                     dynamic_ncols=True, smoothing=0.1)
  logger = MetricLogger(
      workdir, global_batch=run.global_batch,
      schedule=optimizer.learning_rate_schedule(config.train), kind=config.loss.kind,
      every=config.log_every_steps, last_step=num_steps, start=run.start,
      on_write=lambda s: bar.set_postfix(epoch=f"{s['train/epoch']:.2f}",
                                         loss=f"{s['train/loss']:.4f}",
                                         samples_s=f"{s['train/samples_per_second']:.1f}"),
      epoch_of=lambda step: epochs.epoch(step, run.examples_per_epoch, run.global_batch))
  batches = Prefetcher(run.batch_source(), run.start, config.data.prefetch)
  stop = StopRequest()
  summary, previous = {}, None
  try:
    for step in range(run.start, num_steps):
      tick = time.perf_counter()
      rows = next(batches)
      waited = time.perf_counter() - tick
      batch = sharding.to_global(rows, run.mesh, run.global_batch)
      run.state, step_metrics = run.step_fn(run.state, batch, run.data)
      done = step + 1
      # Read back only what belongs to the previous step: the device never waits on the host.
      if config.train.on_nonfinite == "stop" and previous is not None:
        _stop_if_nonfinite(*previous)
      previous = (step_metrics, done)
      logger.add(step_metrics, done, waited)
      bar.update(1)
      val_metrics = None
      if val_ids and (done % config.eval.every_steps == 0 or done == num_steps):
        eval_start = time.time()
        keep = _keeping(workdir, done == num_steps or patience > 0)
        summary = validation.score_cases(predict, run.state, run.cases.val_store, val_ids,
                                         config.loss, config.eval.min_enhancing_voxels, keep)
        if keep is not None:
          validation_predictions.finish(workdir, done, val_ids, config.loss.kind)
        logger.exclude(time.time() - eval_start)
        val_metrics = {f"val/{k}": v for k, v in summary.items()}
        if config.eval.min_enhancing_voxels < 0:
          run.et_threshold = {"voxels": summary["min_enhancing_voxels"], "chosen_at_step": done}
        run.validations = run.validations + [{"step": done, "mean_dice": summary["mean_dice"]}]
        stopped_early = validation.early_stop_reason(run.validations, patience)
        logger.write(done, val_metrics)
        if is_main:
          bar.write(f"step {done}: validation Dice {validation.format_dice(summary)}")
      stopping = stop.should_stop(done, run.checkpoints)
      if (done % config.checkpoint.every_steps == 0 or val_metrics is not None
          or done == num_steps or stopping or stopped_early):
        if config.train.on_nonfinite == "stop":  # no checkpoint after a non-finite step
          _stop_if_nonfinite(step_metrics, done)  # (the last step always saves: checked too)
        run.save(done, val_metrics)
      if stopping:
        run.checkpoints.wait()
        status = stop.exit_status()
        raise Stopped(f"stopped by {signal.Signals(status - 128).name} after step {done}; "
                      "checkpoint saved, run the same command again to continue", status)
      if stopped_early:
        bar.write(stopped_early)
        break
  finally:
    bar.close()
    batches.close()
    stop.restore()
    run.checkpoints.wait()
    logger.close()

  if run.resumed and run.start >= num_steps and val_ids:  # nothing trained this launch
    keep = _keeping(workdir, validation_predictions.record(workdir) is None)
    summary = validation.score_cases(predict, run.state, run.cases.val_store, val_ids,
                                     config.loss, config.eval.min_enhancing_voxels, keep)
    if keep is not None:
      validation_predictions.finish(workdir, run.start, val_ids, config.loss.kind)
  if is_main:
    from brats_jax.evaluation import plots  # matplotlib, at the end only

    plots.training_curves(read_metrics(workdir),
                          files.join(workdir, "training_curves.png"))
  if is_main and summary:
    best = run.checkpoints.best_step()
    print(f"final validation Dice ({len(val_ids)} held-out cases): "
          f"{validation.format_dice(summary)}"
          + (f"; best checkpoint at step {best}" if best is not None else ""), flush=True)
  run.checkpoints.close()
  choose_postprocessing(workdir)
  return summary
