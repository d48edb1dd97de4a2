"""Training data held on the accelerators, patches cut inside the jitted step.

When the prepared training cases fit in device memory, streaming patches from the host is
work for nothing: the cases are copied to the devices once (zero-padded to one common box)
and each step cuts its patches there with dynamic slices. The host then computes only each
sample's descriptor (case, patch start, augmentation seed): a few integers per sample, from
the same function (seed, step, sample) as streaming (host_input.PatchSampler), and reads
or copies no image data.

Placement (data.placement):
  host        stream patches from the store (host_input.Prefetcher)
  replicated  every device holds every training case: batches are exactly those of `host`
  sharded     device d holds the cases with index % devices == d and its rows draw only from
              them: batches stay a function of (seed, step, sample) for a given device count,
              but differ from `host`'s and from other device counts'
  auto        replicated if the cases fit in each device's spare memory, else sharded if a
              device's share fits, else host; `choose_placement` says which and why.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from brats_jax import sharding
from brats_jax.data.store import PreparedStore

# Of a device's memory left after the train step, the share the dataset may take.
_DATA_SHARE = 0.8
PLACEMENTS = ("auto", "host", "replicated", "sharded")  # data.placement (module docstring)


@dataclasses.dataclass
class Placement:
  mode: str  # host | replicated | sharded
  reason: str
  box: tuple = ()  # the common (padded) case shape on the devices
  bytes_per_device: int = 0


def case_box(store: PreparedStore, case_ids, patch_size) -> tuple:
  """The shape every case is zero-padded to on the devices: the largest case, and at least
  the patch (a patch may then always be sliced from it)."""
  read = tuple(patch_size) + (1,) * (3 - len(patch_size))
  shapes = np.array([store.shape(c) for c in case_ids])
  return tuple(int(max(m, r)) for m, r in zip(shapes.max(0), read))


def _available_bytes(mesh, step_bytes: int, device_memory_gib: float) -> int:
  """Memory a device has for data: its limit (or the config's, or for CPUs the machine's
  available RAM shared by its devices) minus what the train step needs."""
  if device_memory_gib:
    limit = int(device_memory_gib * 2**30)
  else:
    stats = jax.local_devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit", 0)
    if not limit:  # CPUs report no limit: share the machine's available memory
      limit = _host_available_bytes() // max(len(jax.local_devices()), 1)
  return int(max(limit - step_bytes, 0) * _DATA_SHARE)


def _host_available_bytes() -> int:
  try:
    with open("/proc/meminfo") as f:
      fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024
  except (OSError, KeyError, ValueError):
    return 0


def choose_placement(requested: str, store: PreparedStore, case_ids, patch_size, mesh,
                     step_bytes: int, device_memory_gib: float) -> Placement:
  """The placement to run, and why, from the sizes."""
  if requested == "host":
    return Placement("host", "data.placement=host")
  box = case_box(store, case_ids, patch_size)
  per_case = int(np.prod(box)) * (store.num_channels * 2 + 1)  # 16-bit images, 8-bit labels
  devices = sharding.data_shards(mesh)  # sharded: each data-parallel group holds a share
  replicated = per_case * len(case_ids)
  sharded = per_case * -(-len(case_ids) // devices)
  available = _available_bytes(mesh, step_bytes, device_memory_gib)
  size = (f"{len(case_ids)} cases padded to {'x'.join(map(str, box))}: "
          f"{replicated / 2**20:.1f} MiB")
  if requested == "replicated" or (requested == "auto" and replicated <= available):
    return Placement("replicated", f"{size}, held on every device"
                     + (f" (fits {available / 2**20:.0f} MiB spare)" if requested == "auto"
                        else ""), box, replicated)
  if requested == "sharded" or (requested == "auto" and devices > 1 and sharded <= available):
    return Placement("sharded", f"{size}, {sharded / 2**20:.1f} MiB per device"
                     + (f" (fits {available / 2**20:.0f} MiB spare; all of it would not)"
                        if requested == "auto" else ""), box, sharded)
  return Placement("host", f"{size}; a device has {available / 2**20:.0f} MiB spare: "
                   "streamed from the store")


def _shapes(store: PreparedStore, case_ids, placement: Placement, mesh) -> dict:
  """{name: (shape, dtype, sharding)} of the device arrays of a placement."""
  dtype = ml_dtypes.bfloat16 if store.image_dtype == "bfloat16" else np.dtype(np.float16)
  if placement.mode == "replicated":
    lead, where = (len(case_ids),), sharding.replicated(mesh)
  else:
    shards = sharding.data_shards(mesh)
    lead = (shards, -(-len(case_ids) // shards))
    where = sharding.batch_sharded(mesh)
  return {"images": (lead + placement.box + (store.num_channels,), dtype, where),
          "labels": (lead + placement.box, np.dtype(np.uint8), where)}


def abstract(store: PreparedStore, case_ids, placement: Placement, mesh):
  """The device arrays' shapes and shardings (to compile the step), or None (host)."""
  if placement.mode == "host":
    return None
  return {name: jax.ShapeDtypeStruct(shape, dtype, sharding=where)
          for name, (shape, dtype, where) in _shapes(store, case_ids, placement,
                                                     mesh).items()}


def owned_cases(num_cases: int, devices: int, device: int) -> list:
  """Indices (into the training case list) of the cases device `device` holds, sharded."""
  return list(range(device, num_cases, devices))


def load(store: PreparedStore, case_ids, placement: Placement, mesh):
  """The training cases on the devices, as `abstract` describes them (None for host); each
  process reads only the cases its own devices hold."""
  if placement.mode == "host":
    return None
  shapes = _shapes(store, case_ids, placement, mesh)
  devices = sharding.data_shards(mesh)
  cache = {}

  def cases_of(index) -> tuple:
    """(images, labels) of the block a device holds: all cases, or its share."""
    if placement.mode == "replicated":
      key, indices = "all", range(len(case_ids))
    else:
      device = index[0].start or 0
      key, indices = device, owned_cases(len(case_ids), devices, device)
    if key not in cache:
      lead = shapes["labels"][0][:-3]
      count = lead[-1]
      images = np.zeros((count,) + shapes["images"][0][-4:], shapes["images"][1])
      labels = np.zeros((count,) + shapes["labels"][0][-3:], np.uint8)
      for row, case in enumerate(indices):
        image, label = store.read_case(case_ids[case])
        region = tuple(slice(0, n) for n in image.shape[:3])
        images[(row,) + region] = image.astype(images.dtype)
        labels[(row,) + region] = label
      cache[key] = (images, labels) if len(lead) == 1 else (images[None], labels[None])
    return cache[key]

  return {name: jax.make_array_from_callback(shape, where,
                                             lambda index, p=position: cases_of(index)[p])
          for position, (name, (shape, _, where)) in enumerate(shapes.items())}


def cut_patches(data: dict, cases, starts, patch_size):
  """Inside the step, per device: the patches [b, *P, C] and labels [b, *P] that the
  descriptors (case index into this device's cases [b], start [b, 3]) name. A start below
  zero (a case smaller than the patch) shifts the case into the patch: the box's zero
  padding fills the rest, as the store's reads do."""
  images, labels = data["images"], data["labels"]
  if images.ndim == 6:  # sharded: this device's [1, cases, ...] block
    images, labels = images[0], labels[0]
  read = tuple(patch_size) + (1,) * (3 - len(patch_size))

  def one(case, start):
    clamped = jnp.maximum(start, 0)
    image = jax.lax.dynamic_slice(images, (case, *clamped, 0), (1,) + read +
                                  (images.shape[-1],))[0]
    label = jax.lax.dynamic_slice(labels, (case, *clamped), (1,) + read)[0]
    for axis in range(3):  # shift right by -start where start < 0 (wrapped part is padding)
      shift = jnp.maximum(-start[axis], 0)
      image = jnp.roll(image, shift, axis)
      label = jnp.roll(label, shift, axis)
    if len(patch_size) == 2:
      image, label = image[:, :, 0], label[:, :, 0]
    return image, label

  return jax.vmap(one)(cases, starts)
