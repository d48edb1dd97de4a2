"""Orbax checkpoints of the train state and the data position.

A checkpoint holds two items: "state" (parameters, normalisation statistics, optimiser state,
step, RNG key) and "data" (a small JSON record: the next step to read, the seed, the case
list), so a resumed run reads exactly the batches it would have read. Saves are asynchronous.
Kept: the latest `keep` checkpoints, plus the best `keep_best` by validation mean Dice.
Restoring always goes through an abstract target that carries the current shardings, which
is what lets a run continue, evaluate or predict on a different number of devices.
"""

import os
import time

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from brats_jax import sharding

BEST_METRIC = "val/mean_dice"


class Checkpoints:
  """The checkpoints of one workdir."""

  def __init__(self, workdir: str, keep: int = 3, keep_best: int = 1, read_only: bool = False):
    policy = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(keep),
        checkpoint_managers.BestN(get_metric_fn=lambda metrics: metrics[BEST_METRIC],
                                  n=keep_best, keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, enable_async_checkpointing=True,
        cleanup_tmp_directories=not read_only, read_only=read_only, create=not read_only)
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data"))

  def save(self, step: int, state, data: dict, metrics: dict | None = None,
           force: bool = False) -> bool:
    """Starts an asynchronous save; returns whether one was started."""
    return self.manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      data=ocp.args.JsonSave(data)),
        metrics=metrics, force=force)

  def all_steps(self) -> list:
    return list(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def restore(self, step: int, abstract_state):
    """Restores (state, data) of `step` onto the shardings carried by `abstract_state`."""
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), abstract_state)
    restored = self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                      data=ocp.args.JsonRestore()))
    return restored["state"], restored["data"]

  def restore_latest_readable(self, abstract_state, log=print):
    """(step, state, data) of the newest checkpoint that can be read, or None if there are
    no checkpoints. Unreadable ones are reported and skipped; if checkpoints exist but none
    can be read, this raises rather than let a run start from scratch."""
    steps = sorted(self.all_steps(), reverse=True)
    unreadable = []
    for step in steps:
      try:
        state, data = self.restore(step, abstract_state)
      except Exception as e:  # Orbax/TensorStore raise many types for damaged files.
        log(f"warning: checkpoint at step {step} in {self.directory} cannot be read "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); trying an older one")
        unreadable.append(step)
        continue
      self._set_aside(unreadable, log)
      return step, state, data
    if steps:
      raise RuntimeError(f"{self.directory}: none of the checkpoints {steps} can be read; "
                         "refusing to start from scratch (move them away to do so)")
    return None

  def _set_aside(self, steps, log):
    """Renames unreadable checkpoints (kept for inspection) so their steps can be saved
    again by the resumed run."""
    if steps and jax.process_index() == 0:
      for step in steps:
        path = os.path.join(self.directory, str(step))
        os.replace(path, f"{path}.unreadable-{int(time.time())}")
        log(f"moved the unreadable checkpoint to {path}.unreadable-*")
    if steps:
      sharding.wait_for_all_processes("brats_jax: unreadable checkpoints set aside")
      self.manager.reload()

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()
