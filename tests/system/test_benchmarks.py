"""benchmarks/throughput.py runs as its README line says, on fake CPU devices and on two
local processes, and writes its JSON and plot (so that the scaling benchmark cannot rot)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # several compiles and two extra processes


def test_throughput_weak_and_strong_scaling_in_one_and_two_processes(tmp_path):
  out, plot = str(tmp_path / "scaling.json"), str(tmp_path / "scaling.png")
  common = [sys.executable, os.path.join(ROOT, "benchmarks", "throughput.py"),
            f"--config={ROOT}/configs/tiny.py", "--steps=2", "--warmup=1"]
  result = subprocess.run(
      common + ["--device_counts=1,2", "--batch_per_device=1", "--processes=2",
                "--local_devices=2", f"--out={out}", f"--plot={plot}"],
      capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  weak = json.load(open(out))
  assert weak["scaling"] == "weak" and weak["label"] == "measured on cpu"
  rows = [(r["devices"], r["processes"], r["global_batch"]) for r in weak["rows"]]
  assert rows == [(1, 1, 1), (2, 1, 2), (4, 2, 4)]
  assert weak["rows"][0]["allreduce_bytes"] == 0 and weak["rows"][1]["allreduce_bytes"] > 0
  assert all(r["step_s"] > 0 and 0 < r["allreduce_share"] < 10 for r in weak["rows"][1:])
  assert os.path.getsize(plot) > 10_000

  # Strong scaling: a global batch of 2 on 4 devices splits each sample over 2.
  result = subprocess.run(common + ["--device_counts=2,4", "--global_batch=2", f"--out={out}"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  strong = json.load(open(out))
  assert [(r["devices"], r["space"], r["global_batch"]) for r in strong["rows"]] == \
      [(2, 1, 2), (4, 2, 2)]


def test_device_check_smoke_runs_every_code_path_of_the_gpu_check(tmp_path):
  """benchmarks/device_check.sh --smoke: the accelerator check's code on this CPU, with tiny
  shapes, so that it runs on the day a GPU is lent. The MONAI side runs where torch and
  MONAI are installed (pip install -e ".[peer]"), and says it was skipped where not."""
  env = dict(os.environ, OUT=str(tmp_path),
             PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
  result = subprocess.run([os.path.join(ROOT, "benchmarks", "device_check.sh"), "--smoke"],
                          capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  check = json.load(open(tmp_path / "device_check.json"))
  assert check["smoke"] and "brats_jax" in result.stdout
  sides = ["brats_jax"]
  try:
    import monai  # noqa: F401
    import torch  # noqa: F401
    sides.append("monai")
  except ImportError:
    assert check["monai"]["skipped"].endswith("is not installed")
  for side in sides:
    rows = check[side]["train"]
    assert [r["batch"] for r in rows] == [1, 2], side
    assert all(r["step_ms"] > 0 and r["first_step_s"] > 0 and r["samples_per_s"] > 0
               for r in rows), side
    assert check[side]["predict"]["case_shape"] == [40, 40, 31]
    assert check[side]["predict"]["second_s"] > 0
