"""The layouts of .mha and .tif files: BraTS 2015 MetaImage (original tree and re-packed) and
Kaggle LGG TIFF slices, found, read in their label conventions and written back exactly; a
missing channel named; and BraTS 2015's five labels trained as regions, predicted and scored
with pictures (the seed configs' end-to-end tests train these layouts as binary tasks)."""

import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile

from brats_jax import labels as label_values
from brats_jax.data import discovery, layouts, prediction_files, prepare, raw_cases, synth
from brats_jax.errors import DataError
from brats_jax.evaluation import evaluate
from brats_jax.inference import predict
from brats_jax.train import loop

from conftest import tiny_config

SHAPE = (32, 32, 16)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp("more_layouts")
  made = {}
  for layout in ("brats2015", "brats2015_repacked", "lgg"):
    made[layout] = str(root / layout)
    synth.write_dataset(made[layout], layout, num_cases=4, shape=SHAPE, seed=2,
                        p_non_enhancing=0.0)
  return made


@pytest.mark.parametrize("layout", ["brats2015", "brats2015_repacked", "lgg"])
def test_found_read_and_written_back_exactly(folders, layout, tmp_path):
  root = folders[layout]
  assert discovery.detect_layout(root) == layout
  cases = discovery.find_cases(root)
  assert len(cases) == 4 and all(c.label for c in cases)
  convention = label_values.CONVENTIONS[layouts.LAYOUTS[layout].convention]
  seen = set()
  for case in cases:
    images, labels, _, _ = raw_cases.read_raw_case(case)
    assert images.shape == SHAPE + (len(layouts.LAYOUTS[layout].channels),)
    assert labels.shape == SHAPE and not np.array_equal(labels, images[..., 0])
    seen |= set(np.unique(labels).tolist())
    # The reference written through the prediction path is the source, in its geometry.
    written = prediction_files.write(str(tmp_path), case.case_id, layout,
                                     convention.decode(labels), np.eye(4), case.reference_image)
    back, _ = prediction_files.read(str(tmp_path), case, labels.shape)
    assert np.array_equal(convention.encode(back), labels)
    if layout.startswith("brats2015"):
      source, ours = sitk.ReadImage(case.label), sitk.ReadImage(written)
      assert np.array_equal(sitk.GetArrayFromImage(source), sitk.GetArrayFromImage(ours))
      assert source.GetOrigin() == ours.GetOrigin() and source.GetSpacing() == ours.GetSpacing()
      assert source.GetDirection() == ours.GetDirection()
    else:
      first = os.path.join(written, f"{case.case_id}_1_mask.tif")
      assert tifffile.imread(first).dtype == np.uint8
      assert set(np.unique(tifffile.imread(first))) <= {0, 255}
  if layout == "lgg":
    assert seen == {label_values.BACKGROUND, label_values.TUMOUR}
  else:  # 2015 tells non-enhancing tumour (3) from necrosis (1), and both are in TC
    assert {label_values.NCR, label_values.ED, label_values.ET, label_values.NET} <= seen
    assert convention.encode(np.array([3])).tolist() == [label_values.NET]
    assert label_values.regions_from_labels(np.array([label_values.NET])).tolist() == [[1, 1, 0]]


def test_a_missing_2015_channel_is_named(folders, tmp_path):
  root = str(tmp_path / "raw")
  shutil.copytree(folders["brats2015"], root)
  case = discovery.find_cases(root)[1]
  shutil.rmtree(os.path.dirname(case.images[2]))  # the T1c folder
  case = discovery.find_cases(root)[1]
  with pytest.raises(DataError, match=r"MR_T1c.*: missing modality file"):
    raw_cases.read_raw_case(case)
  with pytest.raises(DataError, match="MR_T1c"):
    prepare.prepare(root, str(tmp_path / "store"))
  assert not os.path.exists(str(tmp_path / "store"))


@pytest.mark.slow
def test_brats2015_labels_train_as_regions_and_predictions_score_with_pictures(folders,
                                                                             tmp_path):
  layout, kind, modalities = "brats2015", "region", ("flair", "t1", "t1ce", "t2")
  store = str(tmp_path / "store")
  prepare.prepare(folders[layout], store, num_workers=2, fg_per_class=200)
  config = tiny_config(store)
  config.data.patch_size = (16, 16, 16)
  config.data.val_fold = -1
  config.data.modalities = modalities
  config.loss.kind = kind
  config.train.num_steps = 2
  workdir = str(tmp_path / "run")
  loop.train_and_validate(config, workdir)
  out = str(tmp_path / "predictions")
  timings, _ = predict.predict_folder(workdir, folders[layout], out, progress=False)
  assert len(timings) == 4
  rows, summary = evaluate.evaluate_folder(out, folders[layout], str(tmp_path / "s.csv"),
                                           pictures=str(tmp_path / "pictures"))
  assert len(rows) == 4 and {"WT_dice", "TC_dice", "ET_dice"} <= set(summary)
  assert len(os.listdir(tmp_path / "pictures")) > 4
