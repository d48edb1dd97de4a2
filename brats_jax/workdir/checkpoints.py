"""Orbax checkpoints of a run: what each holds, saving, and restoring onto any devices.

A checkpoint holds four items (train_state.py and contract.py describe them):
  model      {params, model_state}: all that inference restores
  optimizer  {step, opt_state, rng}
  data       JSON: the next step to read, the seed, the case list checksum
  contract   JSON: the inference contract (config, preprocessing, ET threshold, history)
Saves are asynchronous. Kept: the latest `keep` checkpoints, plus the best `keep_best` by
validation mean Dice. Restoring always goes through a target that carries the current
shardings, which is what lets a run continue, validate or predict on any number of devices.
"""

import functools
import logging
import os
import sys
import time
import zlib

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from brats_jax import files, sharding
from brats_jax.errors import CheckpointError
from brats_jax.workdir import contract as contract_lib
from brats_jax.workdir import train_state

BEST_METRIC = "val/mean_dice"
ITEMS = ("model", "optimizer", "data", "contract")


class _DropOrbaxNotices(logging.Filter):
  """Orbax warns of what brats_jax asks for on purpose: a read-only manager (inference) and
  the array handler registered below. Said at every load, these are noise to a user."""
  NOTICES = ("Given directory is read only", "Type handler registry type")

  def filter(self, record):
    return not str(record.msg).startswith(self.NOTICES)


logging.getLogger("absl").addFilter(_DropOrbaxNotices())


@functools.cache  # once per process: Orbax logs every re-registration
def _one_writer_per_array() -> None:
  """With one process, that process writes each array whole. Orbax's default (replica-
  parallel saving, meant for several hosts) splits every replicated array over this host's
  devices, and compiles a slice program per array shape to do it (dozens for the demo on 2
  CPU devices, seconds at every run's first save), for the same bytes written by the same
  host."""
  if jax.process_count() == 1:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)


class Checkpoints:
  """The checkpoints of one workdir."""

  def __init__(self, workdir: str, keep: int = 3, keep_best: int = 1, read_only: bool = False):
    _one_writer_per_array()
    policy = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(keep),
        checkpoint_managers.BestN(get_metric_fn=lambda metrics: metrics[BEST_METRIC],
                                  n=keep_best, keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, enable_async_checkpointing=True,
        cleanup_tmp_directories=not read_only, read_only=read_only, create=not read_only,
        save_interval_steps=0 if read_only else 1)
    if workdir.startswith("s3://"):
      raise CheckpointError(
          f"{workdir}: Orbax {ocp.__version__} writes checkpoints to local or shared disks and "
          "to gs:// buckets, not to s3://; use one of those for --workdir (data.store may be "
          "an s3:// URL)")
    self.directory = files.join(workdir if files.is_url(workdir) else os.path.abspath(workdir),
                                "checkpoints")
    with self._reaching():
      self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

  def _reaching(self):
    """Bucket operations that fail after the retries are one StorageError naming the URL
    (a missing bucket too: Orbax reports it as a missing file)."""
    return files.reaching(self.directory, missing_is_an_answer=False)

  def save(self, step: int, state, data: dict, contract: dict, metrics: dict | None = None,
           force: bool = False) -> bool:
    """Starts an asynchronous save; returns whether one was started."""
    items = train_state.to_items(state)
    with self._reaching():
      return self.manager.save(
          step, args=ocp.args.Composite(model=ocp.args.StandardSave(items["model"]),
                                        optimizer=ocp.args.StandardSave(items["optimizer"]),
                                        data=ocp.args.JsonSave(data),
                                        contract=ocp.args.JsonSave(contract)),
          metrics=metrics, force=force)

  def all_steps(self) -> list:
    return list(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def _check_format(self, step: int) -> None:
    path = files.join(self.directory, str(step))
    if files.isdir(files.join(path, "state")) and not files.isdir(files.join(path, "contract")):
      raise CheckpointError(
          f"{path}: a checkpoint of brats_jax 0.1 (no inference contract); predict with "
          "brats_jax 0.1.0, or train again in a new workdir with this version")

  def _read(self, step: int, **items) -> dict:
    """The named items of checkpoint `step`, read by this process alone.

    CheckpointManager.restore ends in a barrier of every process. A process whose read fails
    never reaches it: the others wait there for good, or pass it with that process's read of
    an older step and train from a different state. Reads here have no barrier; processes
    that scan for a readable checkpoint agree on the result afterwards (_newest_readable).
    """
    handler = ocp.CompositeCheckpointHandler()
    try:
      return handler.restore(files.etils_path(files.join(self.directory, str(step))),
                             args=ocp.args.Composite(**items))
    finally:
      handler.close()

  def contract(self, step: int) -> dict:
    """The inference contract of `step` (a small JSON read)."""
    self._check_format(step)
    restored = self._read(step, contract=ocp.args.JsonRestore())
    return contract_lib.check_version(restored["contract"],
                                      files.join(self.directory, str(step)))

  def _newest_readable(self, read, what: str, log) -> tuple | None:
    """(step, read(step), [newer steps that could not be read]) of the newest checkpoint
    that `read` reads, or None if there are no checkpoints. A brats_jax refusal
    (CheckpointError) stops the scan; if checkpoints exist but none can be read, this raises
    rather than let a run start from scratch."""
    steps = sorted(self.all_steps(), reverse=True)
    listed = sharding.values_of_processes(zlib.crc32(repr(steps).encode()) & 0x7FFFFFFF,
                                          f"brats_jax: {what} steps listed")
    if len(set(listed)) > 1:  # the scan below would wait at barriers of different names
      raise CheckpointError(
          f"{self.directory}: the processes see different checkpoints (process "
          f"{jax.process_index()} sees steps {sorted(steps)}); is the workdir on a disk or "
          "bucket that every host shares?")
    unreadable: list[int] = []
    for step in steps:
      value, error = None, None
      try:
        value = read(step)
      except CheckpointError:
        raise
      except Exception as e:  # Orbax/TensorStore raise many types for damaged files.
        error = e
        if not sharding.is_main_process():  # its own log says why (process 0 logs the rest)
          print(f"process {jax.process_index()}: {what} at step {step} in {self.directory} "
                f"cannot be read ({_first_line(e)})", file=sys.stderr, flush=True)
      # Every process resumes from the same step: one that any process cannot read is
      # unreadable for all (a damaged share, or a host that cannot reach the bucket).
      failed = sharding.processes_where(error is not None, f"brats_jax: {what} {step} read")
      if not failed:
        return step, value, unreadable
      reason = (_first_line(error) if error is not None
                else f"process {', '.join(map(str, failed))} could not read it")
      log(f"warning: {what} at step {step} in {self.directory} cannot be read "
          f"({reason}); trying an older one")
      unreadable.append(step)
    if steps:
      raise CheckpointError(f"{self.directory}: none of the checkpoints {steps} can be read; "
                            "refusing to start from scratch (move them away to do so)")
    return None

  def latest_contract(self, log=print):
    """(step, contract) of the newest checkpoint whose contract reads, or None if there are
    no checkpoints."""
    found = self._newest_readable(self.contract, "the contract of the checkpoint", log)
    return None if found is None else found[:2]

  def restore(self, step: int, state) -> tuple:
    """(state, data, contract) of `step`, onto the shardings carried by `state` (arrays or
    ShapeDtypeStructs)."""
    self._check_format(step)
    targets = train_state.restore_targets(state)
    restored = self._read(step, model=ocp.args.StandardRestore(targets["model"]),
                          optimizer=ocp.args.StandardRestore(targets["optimizer"]),
                          data=ocp.args.JsonRestore(), contract=ocp.args.JsonRestore())
    return (train_state.from_items(restored), restored["data"],
            contract_lib.check_version(restored["contract"],
                                       files.join(self.directory, str(step))))

  def restore_model(self, step: int, target) -> dict:
    """{params, model_state} of `step` onto the shardings carried by `target`: inference
    needs nothing else (no optimiser state is read)."""
    self._check_format(step)
    return self._read(step, model=ocp.args.StandardRestore(target))["model"]

  def restore_latest_readable(self, state, log=print):
    """(step, state, data, contract) of the newest checkpoint that can be read, or None if
    there are no checkpoints. Unreadable ones are reported and set aside."""
    found = self._newest_readable(lambda step: self.restore(step, state), "checkpoint", log)
    if found is None:
      return None
    step, restored, unreadable = found
    self._set_aside(unreadable, log)
    return (step, *restored)

  def _set_aside(self, steps, log):
    """Renames unreadable checkpoints (kept for inspection) so their steps can be saved
    again by the resumed run."""
    if steps and sharding.is_main_process():
      for step in steps:
        path = files.join(self.directory, str(step))
        files.rename(path, f"{path}.unreadable-{int(time.time())}")
        log(f"moved the unreadable checkpoint to {path}.unreadable-*")
    if steps:
      sharding.wait_for_all_processes("brats_jax: unreadable checkpoints set aside")
      self.manager.reload()

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def wait(self):
    with self._reaching():
      self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


def latest_saved_contract(workdir: str, log=print):
  """(step, contract) of the newest readable checkpoint of `workdir`, or None where it has
  none: the record a relaunch is checked against."""
  if not files.isdir(files.join(workdir, "checkpoints")):
    return None
  checkpoints = Checkpoints(workdir, read_only=True)
  try:
    return checkpoints.latest_contract(log)
  finally:
    checkpoints.close()


def _first_line(error: Exception) -> str:
  return f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
