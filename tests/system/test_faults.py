"""Faults: broken checkpoints, configurations that cannot fit, hostile files (fuzzed)."""

import gzip
import io
import os
import tempfile

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brats_jax.cli import app
from brats_jax.errors import CheckpointError, ConfigError, DataError, NonFiniteError, Stopped
from brats_jax.imageio import nifti
from brats_jax.train import loop, metrics_log, setup
from brats_jax.train.host_input import PatchSampler
from brats_jax.workdir.checkpoints import Checkpoints

from conftest import tiny_config


def _damage_checkpoint(workdir, step):
  for folder, _, files in os.walk(os.path.join(workdir, "checkpoints", str(step), "model")):
    for name in files:
      with open(os.path.join(folder, name), "wb") as f:
        f.write(b"\0garbage")


@pytest.mark.slow  # three training launches
def test_unreadable_latest_checkpoint_falls_back_to_the_previous(tiny_store, tmp_path, capsys):
  config = tiny_config(tiny_store)
  config.data.val_fold = -1
  config.train.num_steps = 4
  workdir = str(tmp_path / "run")
  loop.train_and_validate(config, workdir)
  assert Checkpoints(workdir, read_only=True).all_steps() == [2, 4]
  _damage_checkpoint(workdir, 4)
  capsys.readouterr()
  config.train.num_steps = 6
  loop.train_and_validate(config, workdir)
  out = capsys.readouterr()
  assert "checkpoint at step 4" in out.err and "cannot be read" in out.err
  assert "resumed from checkpoint at step 2" in out.out
  assert Checkpoints(workdir, read_only=True).latest_step() == 6
  # The damaged checkpoint is kept for inspection, out of the run's way.
  assert any(d.startswith("4.unreadable-") for d in os.listdir(os.path.join(workdir,
                                                                            "checkpoints")))

  # When no checkpoint at all can be read, the run refuses to start from scratch.
  for step in Checkpoints(workdir, read_only=True).all_steps():
    _damage_checkpoint(workdir, step)
  config.train.num_steps = 8
  with pytest.raises(CheckpointError, match="refusing to start from scratch"):
    loop.train_and_validate(config, workdir)


class _SamplerWithANanAtStep3(PatchSampler):
  def batch(self, step):
    batch = super().batch(step)
    if step == 2:  # the batch of step 3 (steps count from 1)
      batch["image"][0, 1, 2, 3, 0] = np.nan
    return batch


@pytest.mark.parametrize("on_nonfinite", ["skip", "stop"])
def test_nan_in_a_batch_skips_the_step_or_stops_the_run(tiny_store, tmp_path, monkeypatch,
                                                        on_nonfinite):
  monkeypatch.setattr(setup, "PatchSampler", _SamplerWithANanAtStep3)
  config = tiny_config(tiny_store)
  config.data.val_fold = -1
  config.train.num_steps = 6
  config.log_every_steps = 1
  config.train.on_nonfinite = on_nonfinite
  config.data.placement = "host"  # the NaN is injected into the patches the host streams
  workdir = str(tmp_path / on_nonfinite)
  if on_nonfinite == "stop":
    with pytest.raises(NonFiniteError, match="at step 3 "):
      loop.train_and_validate(config, workdir)
    assert Checkpoints(workdir, read_only=True).all_steps() == [2]  # none at or after step 3
    return
  loop.train_and_validate(config, workdir)
  records = {r["step"]: r for r in metrics_log.read_metrics(workdir) if "train/loss" in r}
  assert [records[s]["train/nonfinite_steps"] for s in range(1, 7)] == [0, 0, 1, 0, 0, 0]
  assert all(np.isfinite(records[s]["train/loss"]) for s in range(1, 7))
  assert Checkpoints(workdir, read_only=True).all_steps() == [2, 4, 6]


def test_nonfinite_stop_is_one_line_and_exit_status_3(capsys):
  @app.exit_on_user_error
  def main(argv):
    raise NonFiniteError("non-finite loss or gradient at step 7 (train.on_nonfinite=stop)")

  with pytest.raises(SystemExit) as exit_info:
    main([])
  assert exit_info.value.code == 3
  assert capsys.readouterr().err == (
      "error: non-finite loss or gradient at step 7 (train.on_nonfinite=stop)\n")


def test_a_stop_raises_in_the_library_and_the_command_maps_it_to_its_exit_status(capsys):
  """train_and_validate raises errors.Stopped (a caller's process goes on); a command ends
  with its message on stdout and 128 + the signal."""
  @app.exit_on_user_error
  def main(argv):
    raise Stopped("stopped by SIGINT after step 4; checkpoint saved, run the same command "
                  "again to continue", 130)

  with pytest.raises(SystemExit) as exit_info:
    main([])
  assert exit_info.value.code == 130
  assert capsys.readouterr().out.startswith("stopped by SIGINT after step 4")


@pytest.mark.slow  # three compiles; the fast tier refuses a config that cannot fit in
# tests/workdir/test_contract.py
def test_config_that_cannot_fit_is_refused_before_the_first_step(tiny_store, tmp_path):
  config = tiny_config(tiny_store)
  config.data.val_fold = -1
  config.train.device_memory_gib = 0.001  # 1 MiB "device"
  with pytest.raises(ConfigError, match=r"GiB over\): lower data.batch_per_device"):
    loop.train_and_validate(config, str(tmp_path / "run"))
  assert not os.path.exists(os.path.join(tmp_path, "run", "checkpoints", "1"))


def _valid_nifti_bytes(compressed: bool) -> bytes:
  data = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
  image = nib.Nifti1Image(data, np.diag([-1.0, -1.0, 2.0, 1.0]))
  raw = image.to_bytes()
  return gzip.compress(raw, mtime=0) if compressed else raw


_SEEDS = {False: _valid_nifti_bytes(False), True: _valid_nifti_bytes(True)}


@st.composite
def _mutated_file(draw):
  compressed = draw(st.booleans())
  data = bytearray(_SEEDS[compressed])
  if draw(st.booleans()) and not compressed:
    data = bytearray(gzip.compress(bytes(data)))  # sometimes mutate the payload, then zip
    compressed = True
  for _ in range(draw(st.integers(0, 6))):
    action = draw(st.sampled_from(["flip", "truncate", "insert", "header"]))
    if not data:
      break
    if action == "flip":
      data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif action == "truncate":
      del data[draw(st.integers(0, len(data) - 1)):]
    elif action == "insert":
      at = draw(st.integers(0, len(data)))
      data[at:at] = draw(st.binary(max_size=16))
    elif not compressed:  # overwrite a header field: dims, datatype, vox_offset, ...
      at = draw(st.sampled_from([40, 42, 44, 46, 70, 72, 108, 112, 252, 254]))
      data[at:at + 2] = draw(st.binary(min_size=2, max_size=2))
  return compressed, bytes(data)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(_mutated_file())
def test_fuzzed_nifti_gives_data_error_or_a_valid_volume(case):
  compressed, data = case
  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "fuzz.nii.gz" if compressed else "fuzz.nii")
    with open(path, "wb") as f:
      f.write(data)
    for read in (lambda: nifti.load_nifti(path), lambda: nifti.load_label(path)):
      try:
        array = read()[0]
      except DataError as e:
        assert path in str(e) and "\n" not in str(e)
      else:  # whatever was accepted is a sane, finite 3D volume
        assert array.ndim == 3 and np.all(np.isfinite(array))


def test_hostile_declared_size_is_refused_without_reading(tmp_path):
  header = nib.Nifti1Header()
  header.set_data_shape((4000, 4000, 4000))
  header.set_data_dtype(np.float32)
  buffer = io.BytesIO()
  header.write_to(buffer)
  path = str(tmp_path / "huge.nii")
  with open(path, "wb") as f:
    f.write(buffer.getvalue() + b"\0" * 4 + b"\0" * 1000)
  with pytest.raises(DataError, match="implausible declared size|truncated"):
    nifti.load_nifti(path)
