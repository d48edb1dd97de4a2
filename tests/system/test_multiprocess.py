"""Several processes (jax.distributed over localhost, gloo CPU collectives, 4 devices each):
they train exactly like one process with 8 devices, stop together on a signal to any one of
them, resume together from the newest checkpoint that every one of them can read, and their
checkpoints resume on a different number of processes."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from brats_jax import runtime

from conftest import ROOT

pytestmark = pytest.mark.slow

TIMEOUT_S = 300


def _env(devices: int | None) -> dict:
  """This environment with `devices` fake CPU devices per process (None: not set here)."""
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  return runtime.cpu_devices_env(devices, env) if devices else env


def _command(store, workdir, num_steps, extra=()):
  return [sys.executable, "-m", "brats_jax.cli.train", f"--config={ROOT}/configs/tiny.py",
          f"--workdir={workdir}", f"--config.data.store={store}",
          f"--config.train.num_steps={num_steps}", "--config.log_every_steps=1",
          "--config.data.val_fold=-1", "--config.train.optimizer=sgd",
          "--config.train.learning_rate=0.05", "--config.checkpoint.every_steps=1000", *extra]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


# The training command on a host that cannot reach one step's files while the other hosts
# can (Checkpoints.restore fails for it), or that does not see that step at all.
_HOST_WITHOUT_STEP = """
import sys
from brats_jax.cli import train
from brats_jax.workdir.checkpoints import Checkpoints
how, missing = sys.argv.pop(1), int(sys.argv.pop(1))
restore, all_steps = Checkpoints.restore, Checkpoints.all_steps
def restore_failing(self, step, state):
  if step == missing:
    raise OSError(f"simulated: the files of step {step} are out of this host's reach")
  return restore(self, step, state)
if how == "unreachable":
  Checkpoints.restore = restore_failing
else:
  Checkpoints.all_steps = lambda self: [s for s in all_steps(self) if s != missing]
train.run()
"""


def _start_processes(store, workdir, num_steps, extra=(), count=2, host_without=None):
  """`count` processes of one run; `host_without`: (process, "unreachable" or "unlisted",
  step) for a process that cannot read that step or does not see it."""
  port = _free_port()
  commands = [_command(store, workdir, num_steps, [*extra, f"--coordinator=localhost:{port}",
                                                   f"--num_processes={count}",
                                                   f"--process_id={i}"]) for i in range(count)]
  if host_without:
    process, how, step = host_without
    commands[process][1:3] = ["-c", _HOST_WITHOUT_STEP, how, str(step)]
  return [subprocess.Popen(command, env=_env(8 // count), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True) for command in commands]


def _finish(processes) -> list:
  """Every process's output; a process still running after TIMEOUT_S fails the test with
  what each process printed (a hang in one shows where the others were)."""
  deadline = time.time() + TIMEOUT_S
  try:
    return [p.communicate(timeout=max(deadline - time.time(), 1))[0] for p in processes]
  except subprocess.TimeoutExpired:
    for p in processes:
      p.kill()
    outputs = [p.communicate()[0] for p in processes]
    pytest.fail(f"processes still running after {TIMEOUT_S} s:\n" + "\n".join(
        f"--- process {i} ---\n{out[-3000:]}" for i, out in enumerate(outputs)))
  finally:
    for p in processes:
      p.kill()


def _run_one_process(store, workdir, num_steps):
  result = subprocess.run(_command(store, workdir, num_steps), env=_env(8), capture_output=True,
                          text=True, timeout=TIMEOUT_S)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  return result.stdout


def _losses(workdir) -> dict:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    records = [json.loads(line) for line in f]
  return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


def _checkpoint_steps(workdir) -> list:
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def test_two_processes_train_like_one_and_resume_on_one(tiny_store, tmp_path):
  single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
  _run_one_process(tiny_store, single, 6)

  # Through the local launcher, as a user would start it.
  logs = str(tmp_path / "logs")
  env = dict(_env(None), DEVICES_PER_PROCESS="4", LOG_DIR=logs, PORT=str(_free_port()),
             PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
  launcher = subprocess.run(["bash", os.path.join(ROOT, "launch", "local.sh"), "2",
                             *_command(tiny_store, multi, 4)[3:]],
                            env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
  outputs = []
  for i in range(2):
    with open(os.path.join(logs, f"process_{i}.log")) as f:
      outputs.append(f.read())
  assert launcher.returncode == 0, launcher.stdout + outputs[0][-3000:] + outputs[1][-3000:]
  assert "8 devices (cpu), 2 processes" in outputs[0]
  assert "8 devices" not in outputs[1]  # only process 0 reports and writes metrics
  expected, got = _losses(single), _losses(multi)
  assert sorted(got) == [1, 2, 3, 4]
  np.testing.assert_allclose([got[s] for s in range(1, 5)], [expected[s] for s in range(1, 5)],
                             rtol=1e-5)
  # Every process wrote its share of the checkpoint.
  state_dir = os.path.join(multi, "checkpoints", "4", "model")
  assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(os.listdir(state_dir))

  # The two-process checkpoint continues in one process (8 devices) as if never interrupted.
  output = _run_one_process(tiny_store, multi, 6)
  assert "resumed from checkpoint at step 4" in output
  got = _losses(multi)
  np.testing.assert_allclose([got[5], got[6]], [expected[5], expected[6]], rtol=1e-5)


def test_a_signal_to_one_process_stops_every_process_at_the_same_step(tiny_store, tmp_path):
  workdir = str(tmp_path / "run")
  processes = _start_processes(tiny_store, workdir, 100_000, ["--config.checkpoint.every_steps=1"])
  deadline = time.time() + TIMEOUT_S
  while len(_losses(workdir)) < 2 and time.time() < deadline:
    assert all(p.poll() is None for p in processes), _finish(processes)
    time.sleep(0.5)
  processes[1].send_signal(signal.SIGINT)  # e.g. Ctrl-C reaching one process first
  outputs = _finish(processes)
  # The signalled process exits 128+SIGINT, the other 128+SIGTERM, after the same step.
  assert [p.returncode for p in processes] == [128 + signal.SIGTERM, 128 + signal.SIGINT], outputs
  stopped = [re.search(r"stopped by (\w+) after step (\d+); checkpoint saved", out)
             for out in outputs]
  assert all(stopped), outputs
  assert [m.group(1) for m in stopped] == ["SIGTERM", "SIGINT"]
  step = int(stopped[0].group(2))
  assert int(stopped[1].group(2)) == step >= 2
  assert _checkpoint_steps(workdir)[-1] == step

  # Damage process 1's share of that checkpoint: both processes must agree to fall back to
  # the previous one, and the same command (two processes again) continues from there.
  shard = os.path.join(workdir, "checkpoints", str(step), "model", "ocdbt.process_1", "d")
  for name in os.listdir(shard):
    with open(os.path.join(shard, name), "wb") as f:
      f.write(b"\0garbage")
  processes = _start_processes(tiny_store, workdir, step + 1)
  outputs = _finish(processes)
  assert [p.returncode for p in processes] == [0, 0], outputs
  assert f"checkpoint at step {step} in" in outputs[0] and "cannot be read" in outputs[0]
  assert f"resumed from checkpoint at step {step - 1}" in outputs[0]
  assert max(_losses(workdir)) == step + 1 and _checkpoint_steps(workdir)[-1] == step + 1
  assert any(d.startswith(f"{step}.unreadable-")
             for d in os.listdir(os.path.join(workdir, "checkpoints")))

  # Only process 1 cannot read the newest checkpoint (step + 1): process 0 can, but the two
  # must still resume from the same one, the newest that both read (step - 1).
  processes = _start_processes(tiny_store, workdir, step + 2,
                               host_without=(1, "unreachable", step + 1))
  outputs = _finish(processes)
  assert [p.returncode for p in processes] == [0, 0], outputs
  assert f"checkpoint at step {step + 1} in" in outputs[0], outputs[0]
  assert "(process 1 could not read it)" in outputs[0], outputs[0]
  assert f"process 1: checkpoint at step {step + 1} in" in outputs[1], outputs[1]
  assert "out of this host's reach" in outputs[1], outputs[1]
  assert f"resumed from checkpoint at step {step - 1}" in outputs[0], outputs[0]
  assert max(_losses(workdir)) == step + 2 and _checkpoint_steps(workdir)[-1] == step + 2

  # Process 1 does not see the newest checkpoint (a workdir on disks the hosts do not share):
  # one line from each process, exit 2, nothing trained or written.
  processes = _start_processes(tiny_store, workdir, step + 3,
                               host_without=(1, "unlisted", step + 2))
  outputs = _finish(processes)
  assert [p.returncode for p in processes] == [2, 2], outputs
  assert all("the processes see different checkpoints" in out for out in outputs), outputs
  seen = [json.loads(re.search(r"sees steps (\[[\d, ]*\])", out).group(1)) for out in outputs]
  assert seen[0][-1] == step + 2 and seen[1] == seen[0][:-1], seen
  assert max(_losses(workdir)) == step + 2 and _checkpoint_steps(workdir)[-1] == step + 2
