"""Prediction files: geometry and label convention round trip; checkpoints across device
counts; the evaluation command."""

import csv
import json
import os
import subprocess
import sys

import jax
import nibabel as nib
import numpy as np
import pytest

from brats_jax import layouts, prepare, predict, train, volumes

from conftest import tiny_config


@pytest.mark.parametrize("layout", ["brats2021", "brats2023", "msd"])
def test_reference_labels_written_through_the_prediction_path_round_trip(
    raw_datasets, layout, tmp_path):
  for case in layouts.find_cases(raw_datasets[layout]):
    _, internal, affine, _ = prepare.read_raw_case(case)
    out = str(tmp_path / f"{case.case_id}.nii.gz")
    volumes.save_label_like(out, case.convention.decode(internal), affine, case.reference_image)
    written, reference = nib.load(out), nib.load(case.label)
    assert written.shape == reference.shape and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, nib.load(case.reference_image).affine)
    assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(reference.affine)
    assert np.array_equal(np.asarray(written.dataobj), np.asarray(reference.dataobj))


@pytest.fixture(scope="module")
def trained_on_8(tiny_store, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run8"))
  config = tiny_config(tiny_store)
  config.train.num_steps = 4
  config.eval.max_cases = 1
  train.train_and_evaluate(config, workdir)
  return workdir


def test_checkpoint_from_8_devices_predicts_on_1_and_back(trained_on_8, raw_datasets, tmp_path,
                                                          tiny_store):
  raw = raw_datasets["brats2023"]  # another layout than the training data: any layout works
  on_1, on_8 = str(tmp_path / "on1"), str(tmp_path / "on8")
  predict.predict_folder(trained_on_8, raw, on_1, progress=False, devices=jax.devices()[:1])
  predict.predict_folder(trained_on_8, raw, on_8, progress=False)
  for case in layouts.find_cases(raw):
    a = nib.load(os.path.join(on_1, f"{case.case_id}.nii.gz"))
    b = nib.load(os.path.join(on_8, f"{case.case_id}.nii.gz"))
    reference = nib.load(case.reference_image)
    assert a.shape == reference.shape
    np.testing.assert_allclose(a.affine, reference.affine)
    labels = np.asarray(a.dataobj)
    assert set(np.unique(labels)) <= set(layouts.CONVENTIONS["brats2023"].source_values)
    assert np.array_equal(labels, np.asarray(b.dataobj))

  # And the other way round: trained on 1 device, predicted on 8.
  workdir = str(tmp_path / "run1")
  config = tiny_config(tiny_store)
  config.train.num_steps = 2
  config.data.val_fold = -1
  train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  out = str(tmp_path / "from1")
  predict.predict_folder(workdir, raw, out, progress=False)
  assert len(os.listdir(out)) == 3


def _evaluate(args):
  return subprocess.run([sys.executable, "-m", "brats_jax.evaluate", *args],
                        capture_output=True, text=True, timeout=120)


def test_evaluate_command(raw_datasets, tmp_path):
  raw = raw_datasets["msd"]
  predictions = str(tmp_path / "pred")
  cases = layouts.find_cases(raw)
  for i, case in enumerate(cases):  # perfect predictions, except one with ET missed
    reference = nib.load(case.label)
    labels = np.asarray(reference.dataobj).copy()
    if i == 0:
      labels[labels == 3] = 2  # MSD: enhancing (3) -> non-enhancing (2)
    volumes.save_label_like(os.path.join(predictions, f"{case.case_id}.nii.gz"), labels,
                            reference.affine, case.reference_image)
  output = str(tmp_path / "scores.csv")
  result = _evaluate([f"--predictions={predictions}", f"--references={raw}",
                      f"--output={output}", "--lesion_wise"])
  assert result.returncode == 0, result.stderr
  with open(output) as f:
    rows = list(csv.DictReader(f))
  assert [r["case_id"] for r in rows] == [c.case_id for c in cases]
  assert float(rows[0]["ET_dice"]) == 0.0 and float(rows[0]["TC_dice"]) == 1.0
  assert all(float(r["WT_dice"]) == 1.0 for r in rows)
  assert float(rows[1]["ET_hd95"]) == 0.0 and "WT_lesion_dice" in rows[0]
  with open(str(tmp_path / "scores_summary.json")) as f:
    summary = json.load(f)
  assert summary["metrics"]["ET_dice"]["mean"] == pytest.approx(2 / 3)
  assert "dice" in result.stdout and "hd95" in result.stdout

  os.remove(os.path.join(predictions, f"{cases[1].case_id}.nii.gz"))
  result = _evaluate([f"--predictions={predictions}", f"--references={raw}",
                      f"--output={tmp_path / 'again.csv'}"])
  assert result.returncode == 2 and cases[1].case_id in result.stderr
  assert "Traceback" not in result.stderr
  volumes.save_nifti(os.path.join(predictions, f"{cases[1].case_id}.nii.gz"),
                     np.zeros((5, 5, 5), np.uint8), np.eye(4))
  result = _evaluate([f"--predictions={predictions}", f"--references={raw}",
                      f"--output={tmp_path / 'again.csv'}"])
  assert result.returncode == 2 and "shape" in result.stderr and cases[1].case_id in result.stderr


def test_predict_from_a_prepared_store(trained_on_8, tiny_store, tmp_path):
  out = str(tmp_path / "from_store")
  predict.predict_folder(trained_on_8, tiny_store, out, progress=False)
  with open(os.path.join(tiny_store, "manifest.json")) as f:
    manifest = json.load(f)
  assert sorted(os.listdir(out)) == sorted(f"{c['case_id']}.nii.gz" for c in manifest["cases"])
  for entry in manifest["cases"][:3]:
    written = nib.load(os.path.join(out, f"{entry['case_id']}.nii.gz"))
    source = nib.load(entry["images"][0])
    assert written.shape == tuple(entry["original_shape"]) == source.shape
    np.testing.assert_allclose(written.affine, source.affine)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 4}  # brats2021 values
