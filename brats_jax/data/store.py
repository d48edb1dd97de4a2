"""The prepared store: one zarr3 group of per-case arrays, read and written with TensorStore.

    STORE/zarr.json                  group metadata
    STORE/manifest.json              cases: ids, geometry, crop boxes, folds, conventions
    STORE/images/<case>/             [X, Y, Z, 4] float16 (or bfloat16), z-scored, brain-cropped
    STORE/labels/<case>/             [X, Y, Z] uint8, internal labels (labels.py)
    STORE/foreground/<case>/         [K, 4] int16: (x, y, z, internal label) samples

Each case array is a single zarr3 shard, so it is one object on disk or in a bucket, and is
split into inner chunks of about 32^3 voxels so a random patch reads only the chunks it
touches. A store may sit on a local disk or in a bucket (gs://, s3://): TensorStore reads
and writes the arrays there, files.py the manifest (brats_jax/files.py says where endpoints
and credentials come from).
"""

import json
import re
import threading

import numpy as np
import tensorstore as ts

from brats_jax import files
from brats_jax.data import layouts, preprocessing
from brats_jax.errors import DataError
from brats_jax.imageio.checks import check_declared_size
from brats_jax.labels import CONVENTIONS

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_CACHE_BYTES = 256 << 20


def _codecs(inner_chunks, dtype):
  compressor = {"name": "blosc", "configuration": {
      "cname": "zstd", "clevel": 3, "shuffle": "bitshuffle" if dtype == "uint8" else "shuffle",
      "typesize": np.dtype(dtype if dtype != "bfloat16" else "uint16").itemsize}}
  return [{"name": "sharding_indexed", "configuration": {
      "chunk_shape": list(inner_chunks),
      "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, compressor],
      "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                       {"name": "crc32c"}],
  }}]


def write_array(root: str, name: str, data: np.ndarray, inner_chunk: int = 32,
                dtype: str | None = None) -> None:
  """Writes `data` as one zarr3 shard at root/name, with inner chunks of about inner_chunk^3."""
  dtype = dtype or str(data.dtype)
  shape = list(data.shape)
  # Inner chunks of at most inner_chunk voxels, and at least 1 (an empty foreground table).
  inner = [max(1, min(s, inner_chunk)) for s in shape[:3]] + [max(1, s) for s in shape[3:]]
  # The shard must be a whole number of inner chunks; one shard still covers the whole case.
  shard = [max(i, -(-s // i) * i) for s, i in zip(shape, inner)]
  spec = {
      "driver": "zarr3", "kvstore": files.kvstore_spec(files.join(root, name)),
      "metadata": {
          "shape": shape, "data_type": dtype,
          "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": shard}},
          "codecs": _codecs(inner, dtype),
      },
      # Open or create, not delete-and-create: a create whose reply was lost on the way
      # (a bucket) is retried, finds its own first attempt, and opens it. Prepare writes
      # into a tree it cleared, so nothing else is there.
      "create": True, "open": True,
  }
  with files.reaching(root):
    store = ts.open(spec).result()
    store.write(data).result()


def write_group(root: str, attributes: dict) -> None:
  files.write_json(files.join(root, "zarr.json"),
                   {"zarr_format": 3, "node_type": "group", "attributes": attributes}, None)


# A manifest is ~1 KiB per case: 64 MiB is tens of thousands of cases.
_MAX_MANIFEST_BYTES = 64 << 20
# A case id names the store's arrays (images/<id>): one path component, not hidden.
_SAFE_CASE_ID = re.compile(r"[^/\\\x00]+")


def _check_manifest(manifest, path: str) -> None:
  """DataError naming the manifest for what a store's readers would trip on or be led by
  outside the store: a case id that is not one safe path component, missing or malformed
  fields, an implausible stored shape."""
  if not isinstance(manifest, dict) or not isinstance(manifest.get("cases"), list):
    raise DataError(f"{path}: not a store manifest (no list of cases)")
  for i, case in enumerate(manifest["cases"]):
    case_id = case.get("case_id") if isinstance(case, dict) else None
    if not isinstance(case_id, str) or not _SAFE_CASE_ID.fullmatch(case_id) or \
        case_id.startswith("."):
      raise DataError(f"{path}: case {i} has the id {case_id!r}: not one plain file name")
    try:
      shape = [int(n) for n in case["stored_shape"]]
      int(case["fold"])
      if not isinstance(case["has_label"], bool):
        raise TypeError("has_label")
    except (KeyError, TypeError, ValueError) as e:
      raise DataError(f"{path}: case {case_id} lacks or garbles {e}") from None
    if len(shape) != 3:
      raise DataError(f"{path}: case {case_id} has stored shape {shape}, expected 3 sizes")
    check_declared_size(path, tuple(shape))


class PreparedStore:
  """Read access to a prepared store. Array handles open lazily and share one cache pool.

  With `channels` (names, e.g. data.modalities), images come back with those channels in
  that order; otherwise with every channel the store holds.
  """

  def __init__(self, path: str, channels=None):
    self.path = path
    manifest_path = files.join(path, MANIFEST)
    try:
      text = files.read_bytes(manifest_path)
      if len(text) > _MAX_MANIFEST_BYTES:
        raise DataError(f"{manifest_path}: {len(text) >> 20} MiB, more than any store's "
                        f"manifest ({_MAX_MANIFEST_BYTES >> 20} MiB)")
      self.manifest = json.loads(text)
    except FileNotFoundError:
      raise DataError(f"{manifest_path}: no prepared store here (run brats-jax-prepare)") \
          from None
    except (OSError, json.JSONDecodeError) as e:
      raise DataError(f"{manifest_path}: unreadable manifest ({e})") from None
    if self.manifest.get("format_version") != FORMAT_VERSION:
      raise DataError(f"{manifest_path}: store format {self.manifest.get('format_version')}, "
                      f"this version reads {FORMAT_VERSION}; prepare it again")
    _check_manifest(self.manifest, manifest_path)
    self.cases = {c["case_id"]: c for c in self.manifest["cases"]}
    # Stores written before the preprocessing was recorded used this version's.
    self.preprocessing = self.manifest.get("preprocessing") or preprocessing.describe(
        self.manifest.get("channels", layouts.MODALITIES))
    self.num_folds = int(self.manifest.get("num_folds", 5))
    self.channels = tuple(self.preprocessing["channels"])
    selected = tuple(channels) if channels else self.channels
    missing = [c for c in selected if c not in self.channels]
    if missing:
      raise DataError(f"{path}: no channel {', '.join(missing)} (it holds "
                      f"{', '.join(self.channels)})")
    self._selection = [self.channels.index(c) for c in selected]
    self.num_channels = len(selected)
    self.image_dtype = self.manifest.get("dtype", "float16")
    # Binary masks only (Kaggle LGG): no tumour sub-regions to train on.
    self.binary_labels = bool(self.cases) and all(
        CONVENTIONS[c["convention"]].binary for c in self.cases.values())
    self._context = ts.Context({"cache_pool": {"total_bytes_limit": _CACHE_BYTES}})
    self._handles: dict[tuple, ts.TensorStore] = {}
    self._lock = threading.Lock()

  def case_ids(self, folds=None, exclude_folds=None, labelled=True) -> list:
    """Case ids, optionally only those in (or not in) the given folds."""
    ids = []
    for cid, case in self.cases.items():
      if labelled and not case["has_label"]:
        continue
      if folds is not None and case["fold"] not in folds:
        continue
      if exclude_folds is not None and case["fold"] in exclude_folds:
        continue
      ids.append(cid)
    return sorted(ids)

  def array(self, kind: str, case_id: str) -> ts.TensorStore:
    key = (kind, case_id)
    with self._lock:
      if key not in self._handles:
        where = files.join(self.path, kind, case_id)
        spec = {"driver": "zarr3", "kvstore": files.kvstore_spec(where)}
        try:
          with files.reaching(self.path):
            self._handles[key] = ts.open(spec, context=self._context, read=True).result()
        except ValueError as e:
          raise DataError(f"{where}: cannot open ({e})") from None
      return self._handles[key]

  def shape(self, case_id: str) -> tuple:
    """The stored (preprocessed) shape of a case."""
    case = self.cases[case_id]
    return tuple(case.get("stored_shape", case["cropped_shape"]))

  def stored_spacing(self, case_id: str) -> tuple:
    """The voxel spacing (mm) of a case as stored: its original spacing, scaled where
    preparation resized the crop."""
    case = self.cases[case_id]
    cropped = np.array(case["cropped_shape"], np.float64)
    return tuple(float(s) for s in np.array(case["spacing"], np.float64) * cropped
                 / np.array(self.shape(case_id), np.float64))

  def read_case(self, case_id: str):
    """Whole cropped case: (image [X, Y, Z, C] float32, labels [X, Y, Z] uint8 or None)."""
    with files.reaching(self.path):
      image = self.array("images", case_id).read().result()[..., self._selection].astype(
          np.float32)
      labels = None
      if self.cases[case_id]["has_label"]:
        labels = self.array("labels", case_id).read().result()
    return image, labels

  def foreground(self, case_id: str) -> np.ndarray:
    with files.reaching(self.path):
      return self.array("foreground", case_id).read().result()

  def read_patches(self, requests) -> list:
    """Reads [(case_id, start, size)] patches (stored dtype); out-of-volume parts are zero.

    All reads are issued together (one TensorStore batch) before any is awaited.
    """
    pending = []
    with ts.Batch() as batch:
      for case_id, start, size in requests:
        shape = self.shape(case_id)
        lo = [max(0, s) for s in start]
        hi = [min(d, s + n) for d, s, n in zip(shape, start, size)]
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        pending.append((self.array("images", case_id)[box].read(batch=batch),
                        self.array("labels", case_id)[box].read(batch=batch),
                        [a - s for a, s in zip(lo, start)], size))
    patches = []
    for image_read, labels_read, offset, size in pending:
      with files.reaching(self.path):
        image, labels = image_read.result()[..., self._selection], labels_read.result()
      out_image = np.zeros(tuple(size) + image.shape[-1:], image.dtype)
      out_labels = np.zeros(tuple(size), np.uint8)
      box = tuple(slice(o, o + n) for o, n in zip(offset, labels.shape))
      out_image[box] = image
      out_labels[box] = labels
      patches.append((out_image, out_labels))
    return patches
