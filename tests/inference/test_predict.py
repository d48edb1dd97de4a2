"""Prediction files: geometry and label convention round trip; checkpoints across device
counts; the evaluation command."""

import csv
import json
import os
import shutil
import subprocess
import sys

import jax
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from test_bad_input import BREAKERS

from brats_jax import labels as label_values
from brats_jax.data import discovery, prepare, raw_cases, synth
from brats_jax.errors import DataError
from brats_jax.imageio import nifti
from brats_jax.inference import predict
from brats_jax.train import loop
from brats_jax.workdir import split_record

from conftest import TINY_SHAPE, tiny_config


@pytest.mark.parametrize("layout", ["brats2021", "brats2023", "msd"])
def test_reference_labels_written_through_the_prediction_path_round_trip(
    raw_datasets, layout, tmp_path):
  for case in discovery.find_cases(raw_datasets[layout]):
    _, internal, affine, _ = raw_cases.read_raw_case(case)
    out = str(tmp_path / f"{case.case_id}.nii.gz")
    nifti.save_label_like(out, case.convention.decode(internal), affine, case.reference_image)
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
  loop.train_and_validate(config, workdir)
  return workdir


def test_checkpoint_from_8_devices_predicts_on_1_and_back(trained_on_8, raw_datasets, tmp_path,
                                                          tiny_store):
  raw = raw_datasets["brats2023"]  # another layout than the training data: any layout works
  on_1, on_8 = str(tmp_path / "on1"), str(tmp_path / "on8")
  predict.predict_folder(trained_on_8, raw, on_1, progress=False, devices=jax.devices()[:1])
  predict.predict_folder(trained_on_8, raw, on_8, progress=False)
  for case in discovery.find_cases(raw):
    a = nib.load(os.path.join(on_1, f"{case.case_id}.nii.gz"))
    b = nib.load(os.path.join(on_8, f"{case.case_id}.nii.gz"))
    reference = nib.load(case.reference_image)
    assert a.shape == reference.shape
    np.testing.assert_allclose(a.affine, reference.affine)
    labels = np.asarray(a.dataobj)
    assert set(np.unique(labels)) <= set(label_values.CONVENTIONS["brats2023"].source_values)
    assert np.array_equal(labels, np.asarray(b.dataobj))

  # And the other way round: trained on 1 device, predicted on 8.
  workdir = str(tmp_path / "run1")
  config = tiny_config(tiny_store)
  config.train.num_steps = 2
  config.data.val_fold = -1
  loop.train_and_validate(config, workdir, devices=jax.devices()[:1])
  out = str(tmp_path / "from1")
  predict.predict_folder(workdir, raw, out, progress=False)
  assert len(os.listdir(out)) == 3


def _evaluate(args):
  return subprocess.run([sys.executable, "-m", "brats_jax.cli.evaluate", *args],
                        capture_output=True, text=True, timeout=120)


def test_evaluate_command(raw_datasets, tmp_path):
  raw = raw_datasets["msd"]
  predictions = str(tmp_path / "pred")
  cases = discovery.find_cases(raw)
  for i, case in enumerate(cases):  # perfect predictions, except one with ET missed
    reference = nib.load(case.label)
    labels = np.asarray(reference.dataobj).copy()
    if i == 0:
      labels[labels == 3] = 2  # MSD: enhancing (3) -> non-enhancing (2)
    nifti.save_label_like(os.path.join(predictions, f"{case.case_id}.nii.gz"), labels,
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
  # Case 0 scores WT 1, TC 1, ET 0 (mean 2/3), the other two 1: over the cases, 8/9.
  assert float(rows[0]["mean_region_dice"]) == pytest.approx(2 / 3)
  assert summary["metrics"]["mean_region_dice"]["mean"] == pytest.approx(8 / 9)
  assert float(rows[1]["mean_label_dice"]) == 1.0
  assert "dice" in result.stdout and "hd95" in result.stdout
  assert f"mean Dice: regions (WT, TC, ET) {8 / 9:.4f}" in result.stdout

  os.remove(os.path.join(predictions, f"{cases[1].case_id}.nii.gz"))
  result = _evaluate([f"--predictions={predictions}", f"--references={raw}",
                      f"--output={tmp_path / 'again.csv'}"])
  assert result.returncode == 2 and cases[1].case_id in result.stderr
  assert "Traceback" not in result.stderr
  nifti.save_nifti(os.path.join(predictions, f"{cases[1].case_id}.nii.gz"),
                     np.zeros((5, 5, 5), np.uint8), np.eye(4))
  result = _evaluate([f"--predictions={predictions}", f"--references={raw}",
                      f"--output={tmp_path / 'again.csv'}"])
  assert result.returncode == 2 and "shape" in result.stderr and cases[1].case_id in result.stderr


def _largest_tumour_component(path: str) -> int:
  components = ndimage.label(np.asarray(nib.load(path).dataobj) > 0, np.ones((3, 3, 3)))[0]
  return int(np.bincount(components.ravel())[1:].max(initial=0))


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
  # --min_component_voxels: components as small as the largest predicted one all go.
  largest = max(_largest_tumour_component(os.path.join(out, name)) for name in os.listdir(out))
  assert largest > 0, "the tiny model predicted no tumour anywhere: nothing to remove"
  cleaned = str(tmp_path / "cleaned")
  predict.predict_folder(trained_on_8, tiny_store, cleaned, progress=False,
                         min_component_voxels=int(largest) + 1)
  for name in os.listdir(out):
    assert not np.asarray(nib.load(os.path.join(cleaned, name)).dataobj).any()


def _rename_case(folder: str, new_id: str) -> str:
  """Renames a per-modality case folder and its files to a new case id; returns the folder."""
  old_id = os.path.basename(folder)
  renamed = os.path.join(os.path.dirname(folder), new_id)
  os.rename(folder, renamed)
  for name in os.listdir(renamed):
    os.rename(os.path.join(renamed, name), os.path.join(renamed, name.replace(old_id, new_id)))
  return renamed


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory):
  """One good case and one case per kind of breakage (labels are not read by predict, so
  the broken-label case counts as good); {case_id: bad file or None}."""
  root = str(tmp_path_factory.mktemp("hostile") / "raw")
  os.makedirs(root)
  bad_files = {}
  for i, breaker in enumerate([None, *BREAKERS]):
    single = str(tmp_path_factory.mktemp("single"))
    synth.write_dataset(single, "brats2021", num_cases=1, shape=TINY_SHAPE, seed=10 + i)
    case_id = f"case{i:02d}_{breaker.__name__.strip('_') if breaker else 'good'}"
    _rename_case(os.path.join(single, os.listdir(single)[0]), case_id)
    bad = breaker(single) if breaker else None
    shutil.move(os.path.join(single, case_id), os.path.join(root, case_id))
    labels_only = breaker is not None and breaker.__name__ == "_bad_label_values"
    bad_files[case_id] = None if bad is None or labels_only else bad.replace(single, root)
  return root, bad_files


def test_predict_stops_on_a_bad_case_before_writing_anything(trained_on_8, hostile_folder,
                                                            tmp_path):
  root, bad_files = hostile_folder
  out = str(tmp_path / "pred")
  first_bad = next(f for f in bad_files.values() if f)
  with pytest.raises(DataError) as error:
    predict.predict_folder(trained_on_8, root, out, progress=False)
  assert str(error.value).startswith(first_bad) and "\n" not in str(error.value)
  assert not os.path.exists(out)  # header checks of every case run before the model loads


def test_predict_skip_bad_reports_each_bad_case_and_predicts_the_rest(trained_on_8,
                                                                     hostile_folder, tmp_path):
  root, bad_files = hostile_folder
  out = str(tmp_path / "pred")
  timings, skipped = predict.predict_folder(trained_on_8, root, out, skip_bad=True,
                                            progress=False)
  good = sorted(c for c, f in bad_files.items() if f is None)
  assert [c for c, _ in timings] == good
  assert sorted(os.listdir(out)) == [f"{c}.nii.gz" for c in good]  # no partial files either
  bad = sorted(f for f in bad_files.values() if f)
  assert len(skipped) == len(bad)
  for path in bad:
    assert sum(message.startswith(path + ":") for message in skipped) == 1, (path, skipped)


def test_predict_command_bad_input_is_one_line_and_exit_2(trained_on_8, hostile_folder,
                                                           tmp_path):
  root, bad_files = hostile_folder
  out = str(tmp_path / "pred")
  result = subprocess.run([sys.executable, "-m", "brats_jax.cli.predict",
                           f"--workdir={trained_on_8}", f"--input={root}", f"--output={out}"],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and next(f for f in bad_files.values() if f) in errors[0]
  assert not os.path.exists(out)


def test_file_names_that_break_naive_parsing(trained_on_8, tmp_path):
  # Spaces, '#', '%', glob characters, non-ASCII, dots and modality words inside case ids;
  # macOS junk (__MACOSX, ._ files, .DS_Store), stray files and a backup copy beside them.
  odd_ids = ["BraTS 2021 #1 (copy) 100%", "ünï?case[1]*", "t1_flair_seg.v2"]
  root = str(tmp_path / "raw [2021]")
  synth.write_dataset(root, "brats2021", num_cases=3, shape=TINY_SHAPE, seed=4)
  for folder, new_id in zip(sorted(os.listdir(root)), odd_ids):
    _rename_case(os.path.join(root, folder), new_id)
  case_dir = os.path.join(root, odd_ids[2])
  junk = {os.path.join(root, "__MACOSX", odd_ids[2], f"._{odd_ids[2]}_flair.nii.gz"): b"\0\5\26\7",
          os.path.join(case_dir, f"._{odd_ids[2]}_flair.nii.gz"): b"\0\5\26\7",
          os.path.join(root, ".DS_Store"): b"\0", os.path.join(root, "notes.txt"): b"hi"}
  for path, content in junk.items():
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(content)
  shutil.copy(os.path.join(case_dir, f"{odd_ids[2]}_t1.nii.gz"),
              os.path.join(case_dir, f"{odd_ids[2]}_t1.nii.gz.bak"))

  assert [c.case_id for c in discovery.find_cases(root)] == sorted(odd_ids)
  store = str(tmp_path / "store #1")
  manifest = prepare.prepare(root, store, num_workers=1, fg_per_class=50)
  assert sorted(c["case_id"] for c in manifest["cases"]) == sorted(odd_ids)
  for source, prepared in ((root, "from_raw"), (store, "from_store")):
    out = str(tmp_path / prepared)
    timings, skipped = predict.predict_folder(trained_on_8, source, out, progress=False)
    assert not skipped and sorted(os.listdir(out)) == sorted(f"{i}.nii.gz" for i in odd_ids)
    for case_id in odd_ids:
      assert nib.load(os.path.join(out, f"{case_id}.nii.gz")).shape == TINY_SHAPE


def test_held_out_cases_of_a_run_predicted_with_probabilities_and_scored(trained_on_8,
                                                                         tmp_path):
  """The run wrote its split; predicting exactly its validation cases from their raw folder
  writes labels and probability maps in the input's geometry; brats-jax-evaluate --split
  scores exactly those cases."""
  part = split_record.read(trained_on_8, "validation")
  assert part["case_ids"] and set(part["sources"]) == set(part["case_ids"])
  with open(os.path.join(trained_on_8, "split.json")) as f:
    assert set(json.load(f)["train"]["case_ids"]).isdisjoint(part["case_ids"])
  raw = split_record.raw_folder(part, trained_on_8)
  out = str(tmp_path / "held_out")
  predict.predict_folder(trained_on_8, raw, out, progress=False, case_ids=part["case_ids"],
                         save_probabilities=True)
  assert sorted(os.listdir(out)) == sorted(
      n for c in part["case_ids"] for n in (f"{c}.nii.gz", f"{c}_probabilities.nii.gz"))
  for case_id in part["case_ids"]:
    labels = nib.load(os.path.join(out, f"{case_id}.nii.gz"))
    maps = nib.load(os.path.join(out, f"{case_id}_probabilities.nii.gz"))
    assert maps.shape == labels.shape + (3,) and b"WT,TC,ET" in maps.header["descrip"].item()
    np.testing.assert_allclose(maps.affine, labels.affine)
    p = maps.get_fdata()
    assert p.min() >= 0 and p.max() <= 1 and p.max() > 0.5
    # A voxel is tumour exactly where some region's probability passes 0.5 (away from 0.5
    # by more than the 16-bit rounding).
    clear = np.all(np.abs(p - 0.5) > 1e-4, axis=-1)
    np.testing.assert_array_equal((np.asarray(labels.dataobj) > 0)[clear],
                                  (p > 0.5).any(-1)[clear])
  # Contract: the checkpoint records the validation cases.
  _, run_contract = predict.read_contract(trained_on_8, "latest")
  assert run_contract["training_data"]["validation_cases"] == part["case_ids"]
  assert run_contract["training_data"]["train_cases"] == split_record.read(
      trained_on_8, "train")["case_ids"]
  scores = str(tmp_path / "scores.csv")
  result = subprocess.run([sys.executable, "-m", "brats_jax.cli.evaluate",
                           f"--workdir={trained_on_8}", "--split=validation",
                           f"--predictions={out}", f"--output={scores}"],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  with open(scores) as f:
    assert sorted(r["case_id"] for r in csv.DictReader(f)) == sorted(part["case_ids"])
  assert "Dice with background: pooled" in result.stdout
  # A case the folder lacks is one line.
  with pytest.raises(DataError, match="no case nope"):
    predict.predict_folder(trained_on_8, raw, str(tmp_path / "x"), progress=False,
                           case_ids=["nope"])


# Imported only where a case or a picture needs them: BraTS 2015 .mha (52 MB), Kaggle LGG's
# TIFF, matplotlib, and the training set-up (compilation, the loop, TensorBoard).
NOT_FOR_NIFTI = ("SimpleITK", "tifffile", "matplotlib", "tensorboardX",
                 "brats_jax.train.loop", "brats_jax.train.setup", "brats_jax.train.compile")


def _modules_a_command_loads(module: str, *args) -> list:
  """Runs brats-jax-<module> in a fresh interpreter; the NOT_FOR_NIFTI modules it loaded."""
  script = (
      "import atexit, sys\n"
      f"atexit.register(lambda: print('LOADED', [m for m in {NOT_FOR_NIFTI!r} "
      "if m in sys.modules]))\n"
      f"sys.argv = ['brats-jax-{module}'] + {list(args)!r}\n"
      f"from brats_jax.cli import {module}\n"
      f"{module}.run()\n")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  return eval(result.stdout.rsplit("LOADED", 1)[1])  # noqa: S307 (the list printed above)


def test_nifti_commands_load_only_what_they_use(trained_on_8, raw_datasets, tmp_path):
  raw = raw_datasets["brats2021"]
  assert _modules_a_command_loads("prepare", f"--input={raw}",
                                  f"--output={tmp_path / 'store'}") == []
  assert _modules_a_command_loads("predict", f"--workdir={trained_on_8}", f"--input={raw}",
                                  f"--output={tmp_path / 'pred'}") == []
  assert _modules_a_command_loads("evaluate", f"--predictions={tmp_path / 'pred'}",
                                  f"--references={raw}",
                                  f"--output={tmp_path / 'scores.csv'}") == []
  # Pictures are drawn with matplotlib: asked for, it is loaded (the check can see it).
  assert _modules_a_command_loads("evaluate", f"--predictions={tmp_path / 'pred'}",
                                  f"--references={raw}", f"--output={tmp_path / 's2.csv'}",
                                  f"--pictures={tmp_path / 'pictures'}") == ["matplotlib"]
