"""Clean stops: SIGINT/SIGTERM end a run at a step boundary, agreed by every process."""

import signal

import jax

from brats_jax.workdir.checkpoints import Checkpoints


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
