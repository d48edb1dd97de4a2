"""Each kind of bad input stops brats-jax-prepare with one line naming the file, exit 2, and
no store (final or partial) left behind; --skip_bad reports the case and goes on."""

import ctypes
import gzip
import io
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from brats_jax.data import discovery
from brats_jax.imageio import nifti


def _case_files(root):
  case = discovery.find_cases(root)[0]
  return case, dict(zip(("flair", "t1", "t1ce", "t2"), case.images))


def _rewrite(path, transform):
  image = nib.load(path)
  data, affine = transform(np.asarray(image.dataobj).copy(), image.affine.copy())
  nifti.save_nifti(path, data, affine)


def _missing_modality(root):
  _, files = _case_files(root)
  os.remove(files["t1ce"])
  return files["t1ce"]


def _missing_flair(root):
  """The first modality: case discovery once keyed on it and lost such cases silently."""
  _, files = _case_files(root)
  os.remove(files["flair"])
  return files["flair"]


def _shape_mismatch(root):
  _, files = _case_files(root)
  _rewrite(files["t2"], lambda d, a: (d[:-2], a))
  return files["t2"]


def _affine_mismatch(root):
  _, files = _case_files(root)
  _rewrite(files["t1"], lambda d, a: (d, a @ np.diag([1.0, 1.0, 2.0, 1.0])))
  return files["t1"]


def _nan_voxels(root):
  _, files = _case_files(root)

  def put_nan(d, a):
    d = d.astype(np.float32)
    d[3, 3, 3] = np.nan
    return d, a

  _rewrite(files["flair"], put_nan)
  return files["flair"]


def _bad_label_values(root):
  case, _ = _case_files(root)
  _rewrite(case.label, lambda d, a: (np.where(d == 4, 3, d).astype(np.uint8), a))
  return case.label  # 3 is not a BraTS 2021 label


def _truncated_file(root):
  _, files = _case_files(root)
  with open(files["t2"], "rb") as f:
    data = f.read()
  with open(files["t2"], "wb") as f:
    f.write(data[: len(data) // 2])
  return files["t2"]


def _garbage_file(root):
  _, files = _case_files(root)
  with gzip.open(files["t1"], "wb") as f:
    f.write(b"this is not a NIfTI header" * 20)
  return files["t1"]


def _empty_file(root):
  _, files = _case_files(root)
  open(files["flair"], "w").close()
  return files["flair"]


def _inf_voxels(root):
  _, files = _case_files(root)

  def put_inf(d, a):
    d = d.astype(np.float32)
    d[1, 2, 3] = -np.inf
    return d, a

  _rewrite(files["t2"], put_inf)
  return files["t2"]


def _wrong_dimensionality(root):
  _, files = _case_files(root)
  _rewrite(files["t1ce"], lambda d, a: (np.stack([d, d], axis=-1), a))  # 4D in a 3D slot
  return files["t1ce"]


def _huge_declared_size(root):
  _, files = _case_files(root)
  header = nib.load(files["flair"]).header.copy()
  header.set_data_shape((30000, 30000, 30000))
  buffer = io.BytesIO()
  header.write_to(buffer)
  with gzip.open(files["flair"], "wb") as f:
    f.write(buffer.getvalue() + b"\0" * 1024)
  return files["flair"]


def _directory_instead_of_file(root):
  _, files = _case_files(root)
  os.remove(files["t2"])
  os.makedirs(files["t2"])
  return files["t2"]


BREAKERS = [_missing_modality, _missing_flair, _shape_mismatch, _affine_mismatch, _nan_voxels,
            _inf_voxels, _bad_label_values, _truncated_file, _garbage_file, _empty_file,
            _wrong_dimensionality, _huge_declared_size, _directory_instead_of_file]


def _prepare(args):
  return subprocess.run([sys.executable, "-m", "brats_jax.cli.prepare", *args],
                        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("breaker", BREAKERS, ids=lambda f: f.__name__.strip("_"))
def test_bad_input_is_one_clear_line_and_leaves_nothing(raw_datasets, tmp_path, breaker):
  root = str(tmp_path / "raw")
  shutil.copytree(raw_datasets["brats2021"], root)
  bad_file = breaker(root)
  output = str(tmp_path / "store")
  result = _prepare([f"--input={root}", f"--output={output}", "--num_workers=1"])
  assert result.returncode == 2, result.stderr
  # Besides the progress bar: exactly one error line, naming the file, and no traceback.
  errors = [line for line in result.stderr.replace("\r", "\n").splitlines()
            if line.startswith("error: ")]
  assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
  assert bad_file in errors[0], errors[0]
  assert not os.path.exists(output) and not os.path.exists(output + ".incomplete")

  # --skip_bad: the broken case is reported, the others are prepared.
  result = _prepare([f"--input={root}", f"--output={output}", "--skip_bad"])
  assert result.returncode == 0, result.stderr
  assert bad_file in result.stderr
  assert len(os.listdir(os.path.join(output, "images"))) == 2


def test_a_folder_with_only_some_of_a_cases_files_is_reported(raw_datasets, tmp_path):
  """Whichever files a case folder lacks (every modality here), it is named, not skipped."""
  root = str(tmp_path / "raw")
  shutil.copytree(raw_datasets["brats2023"], root)
  case, _ = _case_files(root)
  for path in case.images:
    os.remove(path)
  cases = discovery.find_cases(root)
  assert [c.case_id for c in cases][0] == case.case_id and len(cases) == 3
  result = _prepare([f"--input={root}", f"--output={tmp_path / 'store'}"])
  assert result.returncode == 2 and f"error: {case.images[0]}: missing modality file" in \
      result.stderr


def test_rerun_after_crash_starts_clean(raw_datasets, tmp_path):
  output = str(tmp_path / "store")
  os.makedirs(output + ".incomplete/images/stale")  # what a killed run leaves
  result = _prepare([f"--input={raw_datasets['msd']}", f"--output={output}"])
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(os.path.join(output, "images"))) == [
      "BRATS_001", "BRATS_002", "BRATS_003"]
  assert not os.path.exists(output + ".incomplete")
  # An existing store is not replaced unless asked.
  result = _prepare([f"--input={raw_datasets['msd']}", f"--output={output}"])
  assert result.returncode == 2 and "already exists" in result.stderr


def test_not_a_dataset(tmp_path):
  result = _prepare([f"--input={tmp_path}", f"--output={tmp_path / 'store'}"])
  assert result.returncode == 2 and str(tmp_path) in result.stderr
  assert "Traceback" not in result.stderr


def _without_root_file_access():
  """preexec_fn: as root, drop the capabilities that let root read any file (so permission
  bits apply); other users need nothing."""
  if os.geteuid() != 0:
    return None
  libc = ctypes.CDLL(None, use_errno=True)

  def drop():
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
      if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

  return drop


@pytest.mark.parametrize("what", ["file", "folder"])
def test_unreadable_file_or_folder_is_one_clear_line(raw_datasets, tmp_path, what):
  root = str(tmp_path / "raw")
  shutil.copytree(raw_datasets["brats2021"], root)
  case, files = _case_files(root)
  target = files["t1"] if what == "file" else os.path.dirname(files["t1"])
  os.chmod(target, 0)
  output = str(tmp_path / "store")
  try:
    result = subprocess.run([sys.executable, "-m", "brats_jax.cli.prepare", f"--input={root}",
                             f"--output={output}"], capture_output=True, text=True, timeout=120,
                            preexec_fn=_without_root_file_access())
  finally:
    os.chmod(target, 0o755)
  assert result.returncode == 2, result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
  assert errors[0].startswith(f"error: {target}: ") and "denied" in errors[0], errors[0]
  assert not os.path.exists(output) and not os.path.exists(output + ".incomplete")
