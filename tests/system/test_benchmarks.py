"""The benchmarks run as their documentation says, so that they cannot rot: throughput.py on
fake CPU devices and on two local processes (its JSON and plot), and the accelerator check
(device_check.py) with tiny shapes on this CPU."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, optimised_env

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import device_check  # noqa: E402
import ensemble  # noqa: E402


@pytest.mark.slow  # several compiles and two extra processes
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


@pytest.mark.slow
def test_device_check_smoke_runs_every_code_path_of_the_gpu_check(tmp_path):
  """benchmarks/device_check.sh --smoke: the accelerator check's code on this CPU, with tiny
  shapes, so that it runs on the day a GPU is lent: one run of each kind, each in its own
  process. The PyTorch peers run where torch, MONAI and nnU-Net are installed (pip install
  -e ".[peer]"), and say they were skipped where not."""
  env = dict(os.environ, OUT=str(tmp_path),
             PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
  result = subprocess.run([os.path.join(ROOT, "benchmarks", "device_check.sh"), "--smoke"],
                          capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().splitlines()[-1].startswith("wrote ")  # the table comes last
  check = json.load(open(tmp_path / "device_check.json"))
  runs = check["smoke"] and check["runs"]
  assert sorted(runs) == sorted(device_check.SMOKE_RUNS) and not check["not_run"]
  for name in ("jax_b2_cold", "jax_b2_warm", "jax_b8", "profile_b2", "lever_pad8_b2",
               "lever_no_nhwc_b2"):
    row = runs[name]["train"]
    assert row["step_ms"] > 0 and row["first_step_s"] > 0 and row["finite"], name
  assert runs["jax_b8"]["train"]["batch"] == 2 and runs["jax_b2_cold"]["train"]["batch"] == 1
  assert runs["lever_no_nhwc_b2"]["xla_flags"].endswith("--xla_gpu_force_conv_nhwc=false")
  assert runs["lever_pad8_b2"]["lever"] == "pad8"
  predict = runs["jax_b2_cold"]["predict"]
  assert predict["case_shape"] == [40, 40, 31] and predict["warm_s"] > 0
  profile = runs["profile_b2"]["profile"]
  assert profile["ms_per_step"]["convolution forward"] > 0 and profile["top_kernels"]
  assert [c["exit"] for c in runs["demo"]["commands"]] == [0] * 6
  assert 0 <= runs["demo"]["heldout_mean_region_dice"] <= 1
  try:
    import dynamic_network_architectures  # noqa: F401
    import monai  # noqa: F401
    import nnunetv2  # noqa: F401
    import torch  # noqa: F401
    peers = True
  except ImportError:
    peers = False
  for peer in ("monai", "nnunet"):
    if peers:
      assert [r["batch"] for r in runs[peer]["train"]] == [1, 2], peer
      assert all(r["step_ms"] > 0 for r in runs[peer]["train"]), peer
    else:
      assert runs[peer]["skipped"].endswith("is not installed"), peer


def test_ensemble_gain_over_the_best_fold_is_paired_case_by_case():
  """ensemble.py's verdict compares the ensemble with the fold case by case: the mean gain,
  a bootstrap interval around it, and the cases ahead / level / behind (0.001 either way)."""
  def run(dice):
    return {"cases": {f"case_{i}": {"mean_dice": d, "mean_hd95": 1.0}
                      for i, d in enumerate(dice)}}

  fold = run([0.90, 0.95, 0.97, 0.99])
  against = ensemble._gain_over_fold(run([0.92, 0.96, 0.9705, 0.98]), fold)
  assert against["dice_gain"] == pytest.approx((0.02 + 0.01 + 0.0005 - 0.01) / 4)
  low, high = against["dice_gain_ci95"]
  assert -0.01 <= low < against["dice_gain"] < high <= 0.02
  assert (against["cases_ahead"], against["cases_level"], against["cases_behind"]) == (2, 1, 1)
  same = ensemble._gain_over_fold(fold, fold)
  assert same["dice_gain"] == 0 and same["dice_gain_ci95"] == [0, 0]
  assert same["cases_level"] == 4


def test_the_fold_validation_picks_is_the_best_at_its_last_validation(tmp_path):
  """The fold a user would keep: the highest val/mean_dice at each fold's last validation,
  not its best along the way; a fold that never validated is never picked."""
  logs = {"fold_0": [0.90, 0.97, 0.93], "fold_1": [0.80, 0.95], "fold_2": []}
  for fold, dice in logs.items():
    (tmp_path / fold).mkdir()
    lines = [json.dumps({"step": 10 * i, "train/loss": 0.5})
             + "\n" + json.dumps({"step": 10 * i, "val/mean_dice": d})
             for i, d in enumerate(dice)]
    (tmp_path / fold / "metrics.jsonl").write_text("\n".join(lines) + "\n")
  assert ensemble.fold_validation_picks(str(tmp_path), sorted(logs)) == "fold_1"


def test_device_check_holds_its_figures_to_the_gpu_targets():
  """The targets are read from the right runs: the best of brats_jax's batch-2 runs against
  the strongest peer at batch 2, batch 8 per sample against batch 2, the cold and warm
  starts, prediction."""
  def train(side, batch, samples, first=None):
    return {"side": side, "batch": batch, "samples_per_s": samples,
            "process_to_first_step_s": first}

  runs = {"jax_b2_cold": {"side": "brats_jax", "train": train("brats_jax", 2, 80.0, 18.0),
                          "predict": {"first_s": 2.5, "warm_s": 0.15}},
          "jax_b2_warm": {"side": "brats_jax", "train": train("brats_jax", 2, 82.0, 6.0)},
          "jax_b8": {"side": "brats_jax", "train": train("brats_jax", 8, 90.0)},
          "lever_pad8_b2": {"side": "brats_jax", "train": train("brats_jax", 2, 99.0)},
          "monai_compiled": {"side": "monai_compiled", "train": [train("monai", 2, 50.0)]},
          "nnunet": {"side": "nnunet", "train": [train("nnunet", 2, 60.0),
                                                 train("nnunet", 8, 70.0)]},
          "monai": {"side": "monai", "skipped": "torch is not installed"}}
  t = device_check.targets(runs, smoke=False)
  assert t["samples_per_s_batch_2"] == {"value": 82.0, "goal": 76.0, "reached": True}
  assert t["ratio_to_strongest_peer"]["value"] == pytest.approx(82 / 60)
  assert t["ratio_to_strongest_peer"]["reached"] is False
  assert t["batch_8_per_sample_vs_batch_2"]["value"] == pytest.approx(90 / 82)
  assert t["process_to_first_step_cold_s"]["reached"] is True
  assert t["process_to_first_step_warm_s"]["reached"] is False
  assert t["predict_case_warm_s"]["reached"] and not t["predict_case_first_s"]["reached"]
  assert device_check.targets({}, smoke=False)["samples_per_s_batch_2"]["reached"] is None


@pytest.mark.slow
def test_memory_stays_flat_over_long_training_prediction_and_evaluation(tmp_path):
  """benchmarks/memory.py at 2,000 steps and 100 cases: from 60% to 95% of each run, the
  resident set grows by less than the bounds below. Measured at full scale (5,000 steps, 200
  cases): +0.4, +0.1 and +2.4 MiB. A leak of what one step or one case uses would break them:
  a tiny case's image, probabilities and labels are ~0.8 MiB (x 35 cases), a step's batch and
  its metric sums ~0.1 MiB (x 700 steps); allocator and cache noise stays well under."""
  out = tmp_path / "memory.json"
  # As a user runs it: XLA's optimisations on, the CPU's cores as devices. (Not the tests'
  # 8 devices on 2 cores: over thousands of steps, XLA:CPU's all-reduce can then miss its
  # 40 s rendezvous timeout and abort the process.)
  env = optimised_env()
  env.pop("JAX_NUM_CPU_DEVICES")
  result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "memory.py"),
                           "--steps=2000", "--cases=100", f"--out={out}"],
                          capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  runs = json.load(open(out))["runs"]
  bounds = {"train": 32.0, "predict": 16.0, "evaluate": 16.0}
  for name, bound in bounds.items():
    assert runs[name]["growth_mib"] < bound, (name, runs[name]["growth_mib"])
    assert runs[name]["rss_mib_at_end"] > 50  # the samples are of the command's process
