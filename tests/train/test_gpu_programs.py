"""The train step as XLA compiles it for an NVIDIA GPU, read from the optimised program of a
deviceless compile for an H100 (benchmarks/aot.py with the CUDA plugin of the gpu-aot
extra): cuDNN runs every convolution channels-last (XLA lays 3D convolutions out
channels-first on Hopper unless told otherwise: 31% of the step on an H200 went to cuDNN's
transposes), and with model.gpu_channel_multiple=8 no convolution has a channel count that
cuDNN pads on every call."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from brats_jax import platforms

from conftest import ROOT, gpu_aot_env

AOT = os.path.join(ROOT, "benchmarks", "aot.py")


def compiled_for_h100(tmp_path, config: str, *overrides, xla_flags: str = "") -> dict:
  """benchmarks/aot.py's result for `config` compiled for one H100 at batch 1 (bf16)."""
  out = tmp_path / "aot.json"
  subprocess.run([sys.executable, AOT, f"--config={config}", "--target=h100-1",
                  "--global_batch=1", "--config.model.dtype=bfloat16", f"--out={out}",
                  *overrides], env=gpu_aot_env(xla_flags), cwd=ROOT, check=True,
                 capture_output=True, timeout=600)
  return json.loads(out.read_text())["cudnn_convolutions"]


def test_a_small_bf16_step_for_a_gpu_runs_every_convolution_channels_last_and_padded(
    tmp_path):
  convolutions = compiled_for_h100(tmp_path, "configs/tiny.py",
                                   "--config.model.gpu_channel_multiple=8")
  assert convolutions["count"] >= 30  # forward, data and weight gradients of every layer
  assert convolutions["channels_first"] == 0, convolutions
  assert convolutions["channels_not_multiple_of_8"] == 0, convolutions


@pytest.mark.slow
def test_the_default_recipe_for_a_gpu_runs_every_convolution_channels_last(tmp_path):
  """configs/default.py's step as shipped (128^3, 6 levels): channels-last; with the
  option turned off by the user (XLA_FLAGS), XLA's own layout is channels-first: what this
  check would catch if the option were lost. Padding: only the modalities and the region
  outputs have counts that are not multiples of 8, and model.gpu_channel_multiple=8 pads
  them."""
  shipped = compiled_for_h100(tmp_path, "configs/default.py")
  assert shipped["count"] >= 60 and shipped["channels_first"] == 0, shipped
  assert 0 < shipped["channels_not_multiple_of_8"] < 20, shipped
  without = compiled_for_h100(tmp_path, "configs/default.py",
                              xla_flags="--xla_gpu_force_conv_nhwc=false")
  assert without["channels_first"] > 0, (
      "XLA now lays 3D convolutions out channels-last by itself: "
      "platforms.COMPILER_OPTIONS may no longer need xla_gpu_force_conv_nhwc", without)
  padded = compiled_for_h100(tmp_path, "configs/default.py",
                             "--config.model.gpu_channel_multiple=8")
  assert padded["channels_not_multiple_of_8"] == 0 and padded["channels_first"] == 0, padded


def _mesh_of(platform: str):
  """What compiler_options reads of a mesh: its devices' platform."""
  return types.SimpleNamespace(devices=np.array([types.SimpleNamespace(platform=platform)]))


@pytest.mark.parametrize("platform,xla_flags,expected", [
    ("gpu", "", {"xla_gpu_force_conv_nhwc": True}),
    ("gpu", "--xla_gpu_force_conv_nhwc=false", {}),   # the user's flag stands
    ("gpu", "--xla_gpu_autotune_level=0", {"xla_gpu_force_conv_nhwc": True}),
    ("cpu", "", {}),
    ("tpu", "", {})])
def test_programs_get_their_platform_s_xla_options(monkeypatch, platform, xla_flags, expected):
  """The train step and prediction (platforms.jit) compile with these."""
  monkeypatch.setenv("XLA_FLAGS", xla_flags)
  assert platforms.compiler_options(_mesh_of(platform)) == expected
