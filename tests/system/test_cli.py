"""The training command line: Ctrl-C saves and exits; the same command again resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT


def _train_command(store, workdir, num_steps):
  return [sys.executable, "-m", "brats_jax.cli.train", f"--config={ROOT}/configs/tiny.py",
          f"--workdir={workdir}", f"--config.data.store={store}",
          f"--config.train.num_steps={num_steps}", "--config.eval.max_cases=1",
          "--config.eval.every_steps=1000", "--config.checkpoint.every_steps=1000"]


def _logged_steps(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line)["step"] for line in f if '"train/loss"' in line]


@pytest.mark.slow
def test_ctrl_c_saves_and_the_same_command_resumes(tiny_store, tmp_path):
  workdir = str(tmp_path / "run")
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  process = subprocess.Popen(_train_command(tiny_store, workdir, 100_000), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 240
  while not _logged_steps(workdir) and time.time() < deadline and process.poll() is None:
    time.sleep(0.5)
  assert _logged_steps(workdir), process.communicate()[0]
  process.send_signal(signal.SIGINT)
  output, _ = process.communicate(timeout=120)
  assert process.returncode == 128 + signal.SIGINT, output
  assert "stopped by SIGINT" in output
  saved = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                 if d.isdigit())
  assert saved and saved[-1] >= 2, saved  # checkpoint every 1000 steps: this one is the stop's
  stopped_at = saved[-1]

  result = subprocess.run(_train_command(tiny_store, workdir, stopped_at + 2), env=env,
                          capture_output=True, text=True, timeout=240)
  assert result.returncode == 0, result.stdout + result.stderr
  assert f"resumed from checkpoint at step {stopped_at}" in result.stdout
  assert "final validation Dice" in result.stdout
  assert max(_logged_steps(workdir)) == stopped_at + 2
