"""The training metrics log: device-side sums read back one step late, written by process 0
to WORKDIR/metrics.jsonl and TensorBoard (WORKDIR/tensorboard).

The train step returns per-step sums (loss, finite steps, overlap counts). They are added up
on the device over a logging interval and read back only after the next step has been
dispatched, so the host never makes the device wait. MaxText's MetricLogger does the same.
"""

import json
import os
import tempfile
import time

import jax

from brats_jax import files, sharding, tasks

METRICS, TENSORBOARD = "metrics.jsonl", "tensorboard"


def import_writer():
  """tensorboardX's SummaryWriter, imported on first use: only process 0 needs it, and the
  import takes seconds (it imports PyTorch where that is installed)."""
  from tensorboardX import SummaryWriter
  return SummaryWriter


class MetricWriter:
  """Scalars to metrics.jsonl and TensorBoard; a writer that does nothing off process 0.

  A local workdir is appended to as records come. A bucket's objects cannot be appended to:
  there the log is kept here, with the TensorBoard events in a local folder, and both are
  uploaded whole at most every UPLOAD_SECONDS and when the writer closes.
  """

  UPLOAD_SECONDS = 60.0

  def __init__(self, workdir: str):
    self.enabled = sharding.is_main_process()
    if not self.enabled:
      return
    SummaryWriter = import_writer()
    self.workdir, self.remote = workdir, files.is_url(workdir)
    self.path = files.join(workdir, METRICS)
    if self.remote:
      self.staging = tempfile.TemporaryDirectory(prefix="brats_jax_logs_")
      self.lines = [json.dumps(r) + "\n" for r in read_metrics(workdir)]
      self.uploaded = time.time()
      tensorboard = os.path.join(self.staging.name, TENSORBOARD)
    else:
      os.makedirs(workdir, exist_ok=True)
      self.jsonl = open(self.path, "a")
      tensorboard = os.path.join(workdir, TENSORBOARD)
    self.tensorboard = SummaryWriter(tensorboard)

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    line = json.dumps({"step": int(step), "time": time.time(), **scalars}) + "\n"
    for name, value in scalars.items():
      self.tensorboard.add_scalar(name, value, step)
    self.tensorboard.flush()
    if not self.remote:
      self.jsonl.write(line)
      self.jsonl.flush()
      return
    self.lines.append(line)
    if time.time() - self.uploaded >= self.UPLOAD_SECONDS:
      self._upload()

  def _upload(self) -> None:
    files.write_text(self.path, "".join(self.lines))
    local = os.path.join(self.staging.name, TENSORBOARD)
    for name in os.listdir(local):
      files.write_bytes(files.join(self.workdir, TENSORBOARD, name),
                        files.read_bytes(os.path.join(local, name)))
    self.uploaded = time.time()

  def close(self) -> None:
    if not self.enabled:
      return
    self.tensorboard.close()
    if self.remote:
      self._upload()
      self.staging.cleanup()
    else:
      self.jsonl.close()


def read_metrics(workdir: str) -> list:
  """All records of workdir/metrics.jsonl (the last record wins if a step was logged twice)."""
  path = files.join(workdir, METRICS)
  if not files.exists(path):
    return []
  return [json.loads(line) for line in files.read_text(path).splitlines() if line.strip()]


class MetricLogger:
  """Sums each step's metrics on the device and writes each interval one step late."""

  def __init__(self, workdir: str, *, global_batch: int, schedule, kind: str, every: int,
               last_step: int, start: int, on_write=None, epoch_of=None):
    self.writer = MetricWriter(workdir)
    self.global_batch, self.schedule = global_batch, schedule
    self.regions = tasks.scored_regions(kind)
    self.every, self.last_step = every, last_step
    self.on_write = on_write or (lambda scalars: None)
    self.epoch_of = epoch_of or (lambda step: 0.0)
    self.sums, self.ready = None, None
    self.interval_start, self.interval_step, self.waited = time.time(), start, 0.0

  def add(self, step_metrics, done: int, waited_seconds: float) -> None:
    """Step `done`'s metric sums (still on the device) and how long the loop waited for its
    input. Writes the previous interval if it is ready: by now that step has finished."""
    self.flush()
    self.waited += waited_seconds
    self.sums = step_metrics if self.sums is None else jax.tree.map(
        lambda a, b: a + b, self.sums, step_metrics)
    if done % self.every == 0 or done == self.last_step:
      now = time.time()
      self.ready = (self.sums, done, now - self.interval_start, done - self.interval_step,
                    self.waited)
      self.sums, self.interval_start, self.interval_step, self.waited = None, now, done, 0.0

  def exclude(self, seconds: float) -> None:
    """Time spent on something else (validation): samples/s counts training time only."""
    self.interval_start += seconds

  def flush(self) -> None:
    if self.ready is not None:
      at, scalars = self._scalars(*self.ready)
      self.ready = None
      self.writer.write(at, scalars)
      self.on_write(scalars)

  def write(self, step: int, scalars: dict) -> None:
    """Other scalars (validation), written now."""
    self.writer.write(step, scalars)

  def close(self) -> None:
    self.flush()
    self.writer.close()

  def _scalars(self, sums, at, seconds, steps, waited) -> tuple:
    sums = sharding.host_value(sums)
    finite = max(float(sums["finite_steps"]), 1.0)
    scalars = {"train/loss": float(sums["loss"]) / finite,
               "train/nonfinite_steps": float(sums["nonfinite_steps"]),
               "train/samples_per_second": steps * self.global_batch / max(seconds, 1e-9),
               # Share of the interval the loop stood waiting for patches: > 0 means
               # input-bound.
               "train/input_wait_fraction": waited / max(seconds, 1e-9),
               # The rate step `at` used (steps count from 1).
               "train/learning_rate": float(self.schedule(at - 1)),
               "train/epoch": self.epoch_of(at)}
    for i, region in enumerate(self.regions):  # Dice (= F1), IoU, accuracy, precision and
      both, predicted, reference = (float(sums[k][i])  # recall of the training patches
                                    for k in ("intersection", "predicted", "reference"))
      union = predicted + reference - both
      scalars[f"train/dice_{region}"] = tasks.dice_from_counts(both, predicted, reference)
      scalars[f"train/iou_{region}"] = tasks.iou_from_counts(both, predicted, reference)
      scalars[f"train/accuracy_{region}"] = 1 - (union - both) / float(sums["voxels"][i])
      empty = not (predicted or reference)
      scalars[f"train/precision_{region}"] = tasks.share_from_counts(both, predicted, empty)
      scalars[f"train/recall_{region}"] = tasks.share_from_counts(both, reference, empty)
    return at, scalars
