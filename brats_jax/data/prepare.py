"""Prepare a raw BraTS dataset once into a pre-sharded TensorStore zarr3 store
(brats-jax-prepare runs this).

Per case: read and check every file, map labels to the internal convention, crop to the brain
bounding box, z-score each channel over brain voxels (background stays 0), sample foreground
locations per class, and write one shard per case. The store appears under its final name
only when complete (in a bucket: when its manifest, written last, is there); a rerun after a
crash starts clean.
"""

import concurrent.futures
import os
import sys
import zlib

import ml_dtypes
import numpy as np

from brats_jax import files
from brats_jax.data import discovery, layouts, preprocessing, store
from brats_jax.data.raw_cases import read_raw_case
from brats_jax.errors import DataError
from brats_jax.labels import INTERNAL_NAMES
from brats_jax.progress import progress_bar

FOLD_SEED = 20_211_121


def foreground_samples(labels: np.ndarray, rng, per_class: int) -> np.ndarray:
  """Up to per_class random (x, y, z, label) rows for each tumour label present."""
  rows = [np.zeros((0, 4), np.int16)]
  for value in INTERNAL_NAMES:
    coords = np.argwhere(labels == value)
    if len(coords):
      chosen = coords[rng.choice(len(coords), min(per_class, len(coords)), replace=False)]
      rows.append(np.concatenate([chosen, np.full((len(chosen), 1), value)], 1).astype(np.int16))
  return np.concatenate(rows)


def prepare_case(case: layouts.RawCase, root: str, dtype: str, inner_chunk: int,
                 fg_per_class: int, options: dict) -> dict:
  """Reads, preprocesses (options: preprocessing.describe) and writes one case; returns
  its manifest entry."""
  images, labels, affine, spacing = read_raw_case(case)
  ready, labels, geometry = preprocessing.preprocess(images, labels, case.images[0], options)
  np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float16
  store.write_array(root, f"images/{case.case_id}", ready.astype(np_dtype), inner_chunk, dtype)
  entry = {
      "case_id": case.case_id, "layout": case.layout, "convention": case.convention.name,
      "images": list(case.images), "label": case.label,
      "original_shape": list(images.shape[:3]), "affine": affine.tolist(),
      "spacing": list(spacing), "crop_box": geometry["box"],
      "cropped_shape": geometry["cropped_shape"], "stored_shape": list(ready.shape[:3]),
      "has_label": labels is not None,
  }
  if labels is not None:
    store.write_array(root, f"labels/{case.case_id}", labels, inner_chunk)
    rng = np.random.default_rng(zlib.crc32(case.case_id.encode()))
    store.write_array(root, f"foreground/{case.case_id}",
                      foreground_samples(labels, rng, fg_per_class), 1 << 16)
    entry["voxels_per_label"] = {INTERNAL_NAMES[v]: int((labels == v).sum())
                                 for v in INTERNAL_NAMES}
  return entry


def case_stratum(entry: dict) -> str:
  """The kind of case folds are balanced over: which tumour labels it holds ("edema,necrosis":
  no enhancing tumour), or "unlabelled"."""
  if not entry["has_label"]:
    return "unlabelled"
  return ",".join(sorted(n for n, count in entry["voxels_per_label"].items() if count))


def assign_folds(case_ids, num_folds: int, strata=None) -> dict:
  """Deterministic folds stratified by `strata` (one key per case): a fixed permutation of
  the sorted ids, grouped by stratum (in that order within each), dealt round-robin with the
  deal going on from one stratum to the next. Every fold gets its share of each kind of case
  (a rare kind, such as tumours without enhancing tumour, is not left to one fold by chance,
  where its training folds would hardly see it) and fold sizes differ by one at most."""
  strata = list(strata) if strata is not None else [""] * len(case_ids)
  order = sorted(np.random.default_rng(FOLD_SEED).permutation(len(case_ids)),
                 key=lambda i: strata[i])  # stable: each stratum keeps the permutation
  return {case_ids[i]: int(rank % num_folds) for rank, i in enumerate(order)}


def prepare(input_dir: str, output: str, layout: str | None = None, dtype: str = "float16",
            num_workers: int = 4, skip_bad: bool = False, overwrite: bool = False,
            num_folds: int = 5, inner_chunk: int = 32, fg_per_class: int = 10_000,
            progress: bool = False, **preprocessing_options) -> dict:
  """Prepares every case of input_dir into the store `output`; returns the manifest.
  preprocessing_options are preprocessing.describe's (crop, normalisation, ...)."""
  output = output.rstrip("/")
  remote = files.is_url(output)
  # A local store is written beside its final name and renamed when complete. A bucket has
  # no rename: there the manifest, written last, is what makes a store complete.
  complete = files.exists(files.join(output, store.MANIFEST)) if remote \
      else os.path.exists(output)
  if complete and not overwrite:
    raise DataError(f"{output}: already exists (pass --overwrite to replace it)")
  cases = discovery.find_cases(input_dir, layout)
  channels = layouts.LAYOUTS[cases[0].layout].channels
  options = preprocessing.describe(channels, **preprocessing_options)
  preprocessing.check_supported(options, input_dir)
  work = output if remote else output + ".incomplete"
  files.remove_tree(work)  # left by a crashed run (in a bucket: also the store replaced)
  files.makedirs(work)
  entries, skipped = [], []
  try:
    with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
      jobs = {pool.submit(prepare_case, c, work, dtype, inner_chunk, fg_per_class, options): c
              for c in cases}
      for job in progress_bar(concurrent.futures.as_completed(jobs), total=len(jobs),
                              unit="case", desc="prepare", disable=not progress):
        try:
          entries.append(job.result())
        except DataError as e:
          if not skip_bad:
            for other in jobs:
              other.cancel()
            raise
          skipped.append(str(e))
          print(f"skipped: {e}", file=sys.stderr)
    if not entries:
      raise DataError(f"{input_dir}: no usable case")
    entries.sort(key=lambda e: e["case_id"])
    folds = assign_folds([e["case_id"] for e in entries], num_folds,
                         [case_stratum(e) for e in entries])
    for entry in entries:
      entry["fold"] = folds[entry["case_id"]]
    manifest = {
        "format_version": store.FORMAT_VERSION, "source": os.path.abspath(input_dir),
        "layout": entries[0]["layout"], "dtype": dtype, "num_folds": num_folds,
        "channels": list(channels), "preprocessing": options,
        "label_values": INTERNAL_NAMES,
        "skipped": skipped, "cases": entries,
    }
    store.write_group(work, {"brats_jax": store.FORMAT_VERSION})
    files.write_json(files.join(work, store.MANIFEST), manifest)
    if not remote:
      files.remove_tree(output)
      files.rename(work, output)
    return manifest
  except BaseException:
    if remote:  # arrays without a manifest are no store; leave nothing behind
      files.remove_tree(output)
    raise
  finally:
    if not remote:
      files.remove_tree(work)
