"""Inputs written as an attacker (or an accident) would: links that loop, a store manifest
that points outside its store or declares absurd sizes, a MetaImage header whose voxels are
said to be in another file, an --output that would overwrite the dataset. Each is bounded
or refused in one DataError naming the file."""

import json
import os
import shutil

import numpy as np
import pytest

from brats_jax.data import discovery
from brats_jax.data.store import MANIFEST, PreparedStore
from brats_jax.errors import DataError
from brats_jax.imageio import metaimage
from brats_jax.inference.predict import refuse_overwriting_inputs


def test_links_that_loop_are_walked_once(raw_datasets, tmp_path):
  root = str(tmp_path / "raw")
  shutil.copytree(raw_datasets["brats2021"], root)
  expected = [c.case_id for c in discovery.find_cases(root)]
  case_folder = os.path.join(root, sorted(os.listdir(root))[0])
  os.symlink(root, os.path.join(root, "loop"))  # the dataset inside itself
  os.symlink("..", os.path.join(case_folder, "up"))  # a case folder's link to its parent
  os.symlink(os.path.join(root, "gone"), os.path.join(root, "dangling"))
  assert [c.case_id for c in discovery.find_cases(root)] == expected and len(expected) == 3


def _store_with(tiny_store, tmp_path, change):
  store = str(tmp_path / "store")
  shutil.copytree(tiny_store, store)
  path = os.path.join(store, MANIFEST)
  with open(path) as f:
    manifest = json.load(f)
  change(manifest)
  with open(path, "w") as f:
    json.dump(manifest, f)
  return store


def _set_first(key, value):
  def change(manifest):
    manifest["cases"][0][key] = value
  return change


def _drop_first(key):
  def change(manifest):
    del manifest["cases"][0][key]
  return change


@pytest.mark.parametrize("change, message", [
    (_set_first("case_id", "../../outside"), "not one plain file name"),
    (_set_first("case_id", ".."), "not one plain file name"),
    (_set_first("case_id", "a/b"), "not one plain file name"),
    (_set_first("case_id", 7), "not one plain file name"),
    (_drop_first("stored_shape"), "lacks or garbles"),
    (_set_first("fold", "first"), "lacks or garbles"),
    (_set_first("stored_shape", [4096, 4096, 4096]), "implausible declared size"),
    (_set_first("stored_shape", [8, 8]), "expected 3 sizes"),
    (lambda m: m.update(cases={"a": 1}), "not a store manifest"),
], ids=["parent", "dotdot", "slash", "number", "no_shape", "bad_fold", "huge", "2d", "dict"])
def test_a_hostile_store_manifest_is_one_line(tiny_store, tmp_path, change, message):
  store = _store_with(tiny_store, tmp_path, change)
  with pytest.raises(DataError, match=message) as error:
    PreparedStore(store)
  assert str(error.value).startswith(os.path.join(store, MANIFEST))
  assert "\n" not in str(error.value)


def test_a_huge_manifest_is_refused_unread(tiny_store, tmp_path):
  store = str(tmp_path / "store")
  shutil.copytree(tiny_store, store)
  with open(os.path.join(store, MANIFEST), "ab") as f:
    f.truncate(65 << 20)  # sparse: no disk used
  with pytest.raises(DataError, match="MiB, more than any store's manifest"):
    PreparedStore(store)


def _mhd(folder, data_file: str) -> str:
  header = os.path.join(folder, "case.mhd")
  with open(header, "w") as f:
    f.write("ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_UCHAR\n"
            f"ElementDataFile = {data_file}\n")
  return header


@pytest.mark.parametrize("data_file", ["../secret.raw", "/etc/hostname", "LIST",
                                       "slice_%03d.raw 1 4 1", "sub/case.raw"])
def test_a_metaimage_header_cannot_send_the_reader_outside_its_folder(tmp_path, data_file):
  folder = tmp_path / "dataset"
  os.makedirs(folder / "sub")
  (tmp_path / "secret.raw").write_bytes(bytes(64))
  (folder / "sub" / "case.raw").write_bytes(bytes(64))
  header = _mhd(str(folder), data_file)
  with pytest.raises(DataError, match="only LOCAL or a file beside the header") as error:
    metaimage.load_mha(header)
  assert str(error.value).startswith(header)


def test_a_metaimage_beside_its_header_and_a_local_one_read(tmp_path):
  (tmp_path / "case.raw").write_bytes(bytes(range(64)))
  data, _, _ = metaimage.load_mha(_mhd(str(tmp_path), "case.raw"))
  assert data.shape == (4, 4, 4) and int(data[1, 0, 0]) == 1
  local = str(tmp_path / "local.mha")
  metaimage.save_mha(local, np.arange(64, dtype=np.uint8).reshape(4, 4, 4))
  assert metaimage.load_mha(local)[0].shape == (4, 4, 4)


def test_predictions_never_overwrite_the_dataset_they_read(raw_datasets, tmp_path):
  """Decathlon's files are named by case id alone: --output=imagesTr (or labelsTr) would
  replace the inputs with predictions."""
  root = raw_datasets["msd"]
  for folder in ("imagesTr", "labelsTr"):
    output = os.path.join(root, folder)
    with pytest.raises(DataError, match="is a file of the input dataset") as error:
      refuse_overwriting_inputs(root, None, output, save_probabilities=False)
    assert str(error.value).startswith(output)
  refuse_overwriting_inputs(root, None, str(tmp_path / "predictions"), save_probabilities=True)


def test_a_patch_no_device_could_hold_is_refused_from_a_config_or_a_contract():
  from brats_jax.config import checks, io
  from brats_jax.errors import ConfigError

  config = io.load_config_file(os.path.join(os.path.dirname(__file__), "..", "..", "configs",
                                            "tiny.py"))
  config.data.patch_size = (4096, 4096, 4096)
  with pytest.raises(ConfigError, match="voxels per patch"):
    checks.check_config(config)


def test_a_tiff_declaring_gigapixels_is_refused_before_reading(tmp_path):
  import struct

  import tifffile

  from brats_jax.imageio import tiff

  path = str(tmp_path / "slice.tif")
  tifffile.imwrite(path, np.zeros((4, 4), np.uint8))
  with tifffile.TiffFile(path) as f:
    tags = [f.pages[0].tags[name] for name in ("ImageWidth", "ImageLength")]
    where = [(t.valueoffset, "<H" if t.dtype == 3 else "<I") for t in tags]
  with open(path, "r+b") as f:
    for offset, form in where:
      f.seek(offset)
      f.write(struct.pack(form, 60000))
  with pytest.raises(DataError, match="implausible declared size") as error:
    tiff.load_lgg_stack([path])
  assert str(error.value).startswith(path)
