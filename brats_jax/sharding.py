"""The device mesh and the shardings used everywhere: one data-parallel axis over all devices."""

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from orbax.checkpoint import multihost as ocp_multihost

DATA = "data"


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1D mesh over `devices` (default: every device of every process): data parallelism.

  Auto axes: the per-device code is written with shard_map, and everything else (the state,
  sliding-window accumulators) is replicated, so explicit sharding types would only add
  resharding calls.
  """
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA,), axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, jax.P())


def batch_sharded(mesh) -> NamedSharding:
  """Leading (batch) axis split across the data axis."""
  return NamedSharding(mesh, jax.P(DATA))


def process_batch_slice(global_batch: int) -> slice:
  """Which rows of the global batch this process must provide."""
  if global_batch % jax.process_count():
    raise ValueError(f"global batch {global_batch} does not split over "
                     f"{jax.process_count()} processes")
  per_process = global_batch // jax.process_count()
  start = jax.process_index() * per_process
  return slice(start, start + per_process)


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


def is_main_process() -> bool:
  """Process 0 prints, logs, draws and renames; every process computes."""
  return jax.process_index() == 0
