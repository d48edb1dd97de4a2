"""Random training patches from the prepared store, as a function of (seed, step, sample).

Sample i of the global batch at step s depends only on (seed, s, i): which case, where the
patch sits, whether it is centred on foreground, and its augmentation key. The case is drawn
at random (case_order "random"), or (case_order "epochs") taken in turn from an order of the
cases drawn afresh for each pass over them, from (seed, pass). Each process reads
only the rows of the global batch it feeds to its own devices, so the global batch is the
same for any number of processes, and a resumed run sees exactly the batches it would have.
Reads run ahead of the device in a small thread pool.
"""

import collections
import concurrent.futures
import functools
import math

import jax
import ml_dtypes
import numpy as np

from brats_jax import sharding
from brats_jax.data.store import PreparedStore
from brats_jax.labels import INTERNAL_NAMES


def is_foreground_sample(index: int, fraction: float) -> bool:
  """Spreads round(B * fraction) foreground-centred samples evenly over any batch."""
  return math.floor((index + 1) * fraction) > math.floor(index * fraction)


CASE_ORDERS = ("random", "epochs")
# Where a foreground-centred patch is centred: per_class, on a tumour class present in the
# case, drawn alike, then a voxel of it (nnU-Net: small classes are seen often); any_voxel, on
# any tumour voxel alike (MONAI's RandCropByPosNegLabeld: classes by their volume).
FOREGROUND_CENTRES = ("per_class", "any_voxel")


class PatchSampler:
  """Builds this process's rows of the global batch for a given step."""

  def __init__(self, store: PreparedStore, case_ids, patch_size, global_batch: int,
               rows: slice, foreground_fraction: float, seed: int, sharded_over: int = 0,
               case_order: str = "random", foreground_centre: str = "per_class"):
    """sharded_over > 0: the cases are split over that many devices (device_input.py), and
    row i, on device i // (global_batch / sharded_over), draws only from that device's."""
    if case_order not in CASE_ORDERS:
      raise ValueError(f"case_order {case_order!r} is not one of {CASE_ORDERS}")
    if foreground_centre not in FOREGROUND_CENTRES:
      raise ValueError(f"foreground_centre {foreground_centre!r} is not one of "
                       f"{FOREGROUND_CENTRES}")
    if not case_ids:
      raise ValueError("no training cases")
    self.store, self.case_ids = store, list(case_ids)
    self.sharded_over = sharded_over
    self.spatial_dims = len(patch_size)
    # A 2D patch is a one-voxel-thick axial slab of the volume.
    self.read_size = tuple(patch_size) + (1,) * (3 - len(patch_size))
    self.global_batch, self.rows = global_batch, rows
    self.foreground_fraction, self.seed = foreground_fraction, seed
    self.case_order, self.foreground_centre = case_order, foreground_centre

  @functools.lru_cache(maxsize=512)
  def _foreground(self, case_id):
    return self.store.foreground(case_id)

  def _centre_class(self, rng, case_id, samples) -> int:
    """The tumour class a foreground patch is centred on: one of those present, alike
    (per_class) or by its share of the case's tumour voxels (any_voxel; the store's manifest
    counts them)."""
    present = np.unique(samples[:, 3])
    odds = None
    if self.foreground_centre == "any_voxel":
      counts = self.store.cases[case_id]["voxels_per_label"]
      voxels = np.array([counts[INTERNAL_NAMES[int(v)]] for v in present], np.float64)
      odds = voxels / voxels.sum()
    return rng.choice(present, p=odds)

  def _start(self, rng, case_id, foreground: bool):
    shape, size = self.store.shape(case_id), self.read_size
    low = [min(0, d - s) for d, s in zip(shape, size)]
    high = [max(0, d - s) for d, s in zip(shape, size)]
    samples = self._foreground(case_id) if foreground else np.zeros((0, 4))
    if len(samples):
      chosen = samples[samples[:, 3] == self._centre_class(rng, case_id, samples)]
      centre = chosen[rng.integers(len(chosen)), :3]
      start = [int(c) - s // 2 for c, s in zip(centre, size)]
      return [int(np.clip(st, lo, hi)) for st, lo, hi in zip(start, low, high)]
    return [int(rng.integers(lo, hi + 1)) for lo, hi in zip(low, high)]

  def _group(self, index: int) -> tuple:
    """(group, rows per group) of global sample `index`: the cases a group draws from are
    its device's when they are sharded, else all (one group)."""
    if not self.sharded_over:
      return 0, self.global_batch
    per_group = self.global_batch // self.sharded_over
    return index // per_group, per_group

  def _choices(self, index: int) -> list:
    """Indices of the cases global sample `index` may draw from: its group's."""
    return range(self._group(index)[0], len(self.case_ids), self.sharded_over or 1)

  @functools.lru_cache(maxsize=8)
  def _pass_order(self, group: int, epoch: int, count: int) -> np.ndarray:
    # A stream of its own (the leading 1): the patch draws stay those of "random" order.
    return np.random.default_rng([1, self.seed, group, epoch]).permutation(count)

  def _in_turn(self, step: int, index: int, count: int) -> int:
    """The draw of "epochs" order: the group's samples, step after step, go through its
    cases in an order drawn afresh each pass."""
    group, per_group = self._group(index)
    position = step * per_group + index % per_group
    return int(self._pass_order(group, position // count, count)[position % count])

  def describe(self, step: int, index: int):
    """(case id, draw, patch start, augmentation seed) of global sample `index` at `step`;
    draw is the case's position among the cases this sample may draw from."""
    rng = np.random.default_rng([self.seed, step, index])
    choices = self._choices(index)
    draw = int(rng.integers(len(choices)))  # drawn in either order: same patch draws after it
    if self.case_order == "epochs":
      draw = self._in_turn(step, index, len(choices))
    case_id = self.case_ids[choices[draw]]
    start = self._start(rng, case_id, is_foreground_sample(index, self.foreground_fraction))
    return case_id, draw, start, np.uint32(rng.integers(1 << 32))

  def descriptors(self, step: int) -> dict:
    """This process's rows as descriptors for patches cut on the devices (device_input.py):
    case [b] (index into what the row's device holds), start [b, 3], aug_seed [b]."""
    described = [self.describe(step, i) for i in range(self.global_batch)[self.rows]]
    return {"case": np.array([d[1] for d in described], np.int32),
            "start": np.array([d[2] for d in described], np.int32).reshape(-1, 3),
            "aug_seed": np.array([d[3] for d in described], np.uint32)}

  def batch(self, step: int) -> dict:
    """This process's rows: image [b, *P, C], label [b, *P] (uint8), aug_seed [b] (uint32)."""
    described = [self.describe(step, i) for i in range(self.global_batch)[self.rows]]
    patches = self.store.read_patches([(c, s, self.read_size) for c, _, s, _ in described])
    images = np.stack([p[0] for p in patches])
    labels = np.stack([p[1] for p in patches])
    if self.spatial_dims == 2:
      images, labels = images[:, :, :, 0], labels[:, :, :, 0]
    return {"image": images, "label": labels,
            "aug_seed": np.array([d[3] for d in described], np.uint32)}


def batch_shapes(config, global_batch: int, mesh, image_dtype: str,
                 descriptors: bool = False) -> dict:
  """Shapes, dtypes and shardings of the global batch PatchSampler.batch (or, with
  `descriptors`, PatchSampler.descriptors) builds, for compiling the train step before any
  data is read."""
  spatial = tuple(config.data.patch_size)
  rows = sharding.batch_sharded(mesh)
  seeds = jax.ShapeDtypeStruct((global_batch,), np.uint32, sharding=rows)
  if descriptors:
    return {"case": jax.ShapeDtypeStruct((global_batch,), np.int32, sharding=rows),
            "start": jax.ShapeDtypeStruct((global_batch, 3), np.int32, sharding=rows),
            "aug_seed": seeds}
  dtype = ml_dtypes.bfloat16 if image_dtype == "bfloat16" else np.dtype(image_dtype)
  return {"image": jax.ShapeDtypeStruct((global_batch, *spatial, len(config.data.modalities)),
                                        dtype, sharding=rows),
          "label": jax.ShapeDtypeStruct((global_batch, *spatial), np.uint8, sharding=rows),
          "aug_seed": seeds}


class Prefetcher:
  """Yields fn(step) for step = start, start + 1, ..., computing `depth` steps ahead."""

  def __init__(self, fn, start: int, depth: int = 4):
    self.fn, self.next_step = fn, start
    self.pool = concurrent.futures.ThreadPoolExecutor(max(1, depth))
    self.pending = collections.deque()
    for _ in range(max(1, depth)):
      self._submit()

  def _submit(self):
    self.pending.append(self.pool.submit(self.fn, self.next_step))
    self.next_step += 1

  def __iter__(self):
    return self

  def __next__(self):
    result = self.pending.popleft().result()
    self._submit()
    return result

  def close(self):
    for future in self.pending:
      future.cancel()
    self.pool.shutdown(wait=False, cancel_futures=True)
