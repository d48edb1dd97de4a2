"""Every seed config trains, predicts and evaluates through the usual commands on tiny
synthetic data in its own layout, with only the store, the step count and the patch size
overridden (and the prepare options its docstring gives, scaled to the tiny volumes).
kayalibay2017_strided.py is kayalibay2017.py with another down-sampling: its network trains
in tests/model/test_model.py, and this path is kayalibay2017's."""

import os
import subprocess
import sys

import pytest

from brats_jax import runtime
from brats_jax.data import synth

from conftest import ROOT, optimised_env

SEEDS = {  # config: (layout, patch size, prepare flags)
    "isensee2017": ("brats2021", "(16,16,16)", []),
    "unet3d_softmax_brats2020": ("brats2021", "(16,16,16)", [
        "--crop=centre", "--crop_shape=28,28,20", "--normalisation=minmax",
        "--smooth_sigma=1", "--sharpen=0.3"]),
    "kayalibay2017": ("brats2015", "(16,16,16)", [
        "--crop=centre", "--crop_shape=28,28,24", "--resize_shape=24,24,16",
        "--normalisation=divide", "--divide_by=255"]),
    "henry2020_dilated": ("brats2015_repacked", "(16,16,16)", [
        "--normalisation=divide", "--divide_by=255"]),
    "lgg_unet2d": ("lgg", "(32,32)", ["--normalisation=divide", "--divide_by=255"]),
    "lgg_unet2d_model2": ("lgg", "(32,32)", ["--normalisation=divide", "--divide_by=255"]),
    "lgg_transunet": ("lgg", "(32,32)", ["--normalisation=divide", "--divide_by=255"]),
    "msd_patches": ("msd", "(16,16,16)", []),
}

# Seeds that validate on a separate store (a folder of their own) validate on fold 0 here.
VALIDATION = {seed: ["--config.data.val_fold=0"] for seed in (
    "unet3d_softmax_brats2020", "kayalibay2017", "henry2020_dilated")}


def _run(module, *args):
  # One CPU device: two of these configs have about 90 M parameters, whose train state on
  # the 8 fake devices of the other tests (or one per core), two tests at a time, outgrows
  # the memory of a 24 GB machine.
  env = runtime.cpu_devices_env(1, optimised_env())
  result = subprocess.run([sys.executable, "-m", f"brats_jax.cli.{module}", *args],
                          capture_output=True, text=True, timeout=600, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_seed_config_trains_predicts_and_evaluates(seed, tmp_path):
  layout, patch, prepare_flags = SEEDS[seed]
  raw, store = str(tmp_path / "raw"), str(tmp_path / "store")
  synth.write_dataset(raw, layout, num_cases=5, shape=(32, 32, 24), seed=4)
  _run("prepare", f"--input={raw}", f"--output={store}", *prepare_flags)
  workdir = str(tmp_path / "run")
  out = _run("train", f"--config={ROOT}/configs/seeds/{seed}.py", f"--workdir={workdir}",
             f"--config.data.store={store}", "--config.train.num_steps=2",
             "--config.train.num_epochs=0", *VALIDATION.get(seed, []),
             f"--config.data.patch_size={patch}")
  assert "final validation Dice" in out
  _run("predict", f"--workdir={workdir}", f"--input={raw}", f"--output={tmp_path / 'pred'}")
  table = _run("evaluate", f"--predictions={tmp_path / 'pred'}", f"--references={raw}",
               f"--output={tmp_path / 'scores.csv'}")
  assert "dice" in table and os.path.exists(tmp_path / "scores.csv")
