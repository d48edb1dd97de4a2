"""The device mesh and the shardings used everywhere.

Two axes: "data" splits the global batch (data parallelism), and "space" splits each sample
along its first spatial axis (spatial partitioning, mesh.space devices per sample). The
per-device code is written with shard_map, manual over "data" only; "space" stays with XLA's
SPMD partitioner, which exchanges the convolutions' halos and reduces instance norms and
losses across it. With mesh.space=1 the space axis has one device and nothing is split.
"""

import math

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding
from orbax.checkpoint import multihost as ocp_multihost

from brats_jax import runtime
from brats_jax.errors import ConfigError

DATA = "data"
SPACE = "space"


def make_mesh(devices=None, space: int = 1) -> jax.sharding.Mesh:
  """A (data, space) mesh over `devices` (default: every device of every process).

  Auto axes: the state and the sliding-window accumulators are replicated, and the space
  axis is the partitioner's, so explicit sharding types would only add resharding calls.
  A sample's space group lies within one process (its rows come from that process's host).
  """
  devices = jax.devices() if devices is None else list(devices)
  local = sum(d.process_index == jax.process_index() for d in devices)
  if space < 1 or len(devices) % space or (jax.process_count() > 1 and local % space):
    raise ConfigError.of_field("mesh.space", space,
                               f"must divide the {len(devices)} devices"
                               + (f" and each process's {local}" if jax.process_count() > 1
                                  else ""))
  return jax.make_mesh((len(devices) // space, space), (DATA, SPACE),
                       axis_types=(AxisType.Auto,) * 2, devices=devices)


def manual_axes(mesh) -> set:
  """The mesh axes a shard_map body handles itself: data, and space too where it has one
  device (nothing to split; a fully manual body skips XLA's sharding propagation, a second
  of the compile of a 2-device CPU train step)."""
  return {DATA} if mesh.shape[SPACE] > 1 else {DATA, SPACE}


def data_shards(mesh) -> int:
  """How many groups of devices split the batch (each group holds whole samples)."""
  return mesh.shape[DATA]


def resolve_space(data_config, mesh_config, num_devices: int) -> int:
  """mesh.space, with 0 (auto) resolved: 1 unless the global batch is smaller than the
  devices, then the fewest devices per sample that let the batch split evenly."""
  if mesh_config.space or not data_config.global_batch:
    return mesh_config.space or 1
  for space in range(1, num_devices + 1):
    if num_devices % space == 0 and data_config.global_batch % (num_devices // space) == 0:
      return space
  return num_devices


def global_batch(data_config, mesh) -> int:
  """data.global_batch, or data.batch_per_device for each data shard; refused in one line
  if it does not split evenly over the data shards."""
  shards = data_shards(mesh)
  if not data_config.global_batch:
    return data_config.batch_per_device * shards
  if data_config.global_batch % shards:
    fewer = mesh.devices.size // math.gcd(data_config.global_batch, mesh.devices.size)
    raise ConfigError.of_field(
        "data.global_batch", data_config.global_batch,
        f"does not split over {shards} data-parallel groups of {mesh.shape[SPACE]} "
        f"device(s): use a multiple of {shards}, or mesh.space={fewer} (or 0: auto) to split "
        "each sample over more devices")
  return data_config.global_batch


def training_mesh(config, devices=None) -> tuple:
  """(mesh, global batch) a config trains with on `devices` (default: training_devices):
  mesh.space resolved against the device count, and the batch checked against the data
  shards."""
  devices = training_devices(config) if devices is None else list(devices)
  mesh = make_mesh(devices, resolve_space(config.data, config.mesh, len(devices)))
  return mesh, global_batch(config.data, mesh)


def training_devices(config) -> list:
  """Every device, except where they are a CPU's cores (runtime.cores_as_devices) and
  mesh.space is auto: then the most cores that split data.global_batch evenly, one sample
  or more each. A core's share of one sample is too small to pay for splitting it."""
  devices = jax.devices()
  batch = config.data.global_batch
  if not (runtime.cores_as_devices() and batch and config.mesh.space == 0):
    return devices
  return devices[:max(n for n in range(1, len(devices) + 1) if batch % n == 0)]


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, jax.P())


def batch_sharded(mesh) -> NamedSharding:
  """Leading (batch) axis split across the data axis."""
  return NamedSharding(mesh, jax.P(DATA))


def split_spatially(tree):
  """Inside shard_map (manual over data): [batch, x, ...] arrays split along x over the
  space axis; the partitioner exchanges halos for whatever reads across the split."""
  return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, jax.P(None, SPACE)), tree)


def process_batch_slice(mesh, global_batch: int) -> slice:
  """Which rows of the global batch this process must provide: those of its data shards
  (a process holds whole space groups, so its rows are one contiguous range)."""
  rows = batch_sharded(mesh).addressable_devices_indices_map((global_batch,)).values()
  return slice(min(index[0].start or 0 for index in rows),
               max(index[0].stop or global_batch for index in rows))


def to_global(local: dict, mesh, global_batch: int) -> dict:
  """Process-local batch rows -> global arrays sharded along the batch axis."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(
      sharding, np.asarray(v), (global_batch,) + np.shape(v)[1:]) for k, v in local.items()}


def replicate(tree, mesh):
  """Host values (the same on every process) -> arrays replicated on every device."""
  return jax.device_put(tree, replicated(mesh))


def host_value(tree):
  """Replicated arrays -> numpy, from this process's own replica.

  (jax.device_get needs every shard to be addressable, which a replicated array of a
  multi-process run is not.)
  """
  return jax.tree.map(
      lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x, tree)


def wait_for_all_processes(name: str, timeout_s: int = 3600):
  """A barrier on jax.distributed's coordination service (no-op with one process).

  Gloo sets up its communicators in the first collective and gives the other processes only
  30 s to arrive; processes that finish compiling at different times meet here first.
  """
  if jax.process_count() > 1:
    ocp_multihost.sync_global_processes(name, timeout=timeout_s,
                                        processes=set(range(jax.process_count())))


def values_of_processes(value: int, name: str) -> list:
  """Every process's `value` (an int32), by process index; every process calls this once per
  `name`. They meet on the coordination service first (its timeout allows for work that
  takes each process a different time), then exchange the values in one collective."""
  if jax.process_count() == 1:
    return [value]
  wait_for_all_processes(name)
  values = multihost_utils.process_allgather(np.array([value], np.int32))
  return [int(v) for v in np.asarray(values).ravel()]


def processes_where(flag: bool, name: str) -> list:
  """The indices of the processes on which `flag` is true (see values_of_processes)."""
  return [i for i, v in enumerate(values_of_processes(int(flag), name)) if v]


def is_main_process() -> bool:
  """Process 0 prints, logs, draws and renames; every process computes."""
  return jax.process_index() == 0
