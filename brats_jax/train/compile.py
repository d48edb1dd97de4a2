"""The train step compiled ahead of time, and checked against device memory before any step.

Compiling first lets a run refuse a config that cannot fit (one line, exit 2) before it
writes anything, and lets data.placement=auto choose where the training cases live from the
compiled step's real memory needs (device_input.py).
"""

import jax
import ml_collections

from brats_jax.errors import ConfigError
from brats_jax.train import device_input, host_input, step


def compiled_memory_bytes(compiled) -> int:
  """Bytes a compiled program needs per device (XLA's memory analysis; 0 if unknown).
  Donated arguments are counted once: their buffers are reused for outputs (alias)."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return 0
  return (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
          + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


def device_memory_limit(config: ml_collections.ConfigDict) -> int:
  """A device's memory in bytes: train.device_memory_gib, else what the device reports (0 if
  it reports nothing, as CPUs)."""
  limit = int(config.train.device_memory_gib * 2**30)
  if not limit:
    stats = jax.local_devices()[0].memory_stats() or {}  # other processes' devices: no stats
    limit = stats.get("bytes_limit", 0)
  return limit


def compile_step(graphdef, tx, state, mesh, config, store, train_ids, global_batch, log):
  """(compiled step, placement): the train step compiled ahead of time for the data
  placement to run (device_input.py), checked against device memory before any step. With
  data.placement=auto, a placement whose compiled step does not fit falls back to the next
  (replicated, sharded, host); a config that cannot fit even streaming is refused."""
  requested = config.data.placement
  limit = device_memory_limit(config)
  while True:
    placement = device_input.choose_placement(requested, store, train_ids,
                                              config.data.patch_size, mesh, 0,
                                              config.train.device_memory_gib)
    step_fn = step.make_train_step(graphdef, tx, mesh, config, placement.mode)
    batch = host_input.batch_shapes(config, global_batch, mesh, store.image_dtype,
                                    descriptors=placement.mode != "host")
    data = device_input.abstract(store, train_ids, placement, mesh)
    compiled = step_fn.lower(state, batch, data).compile()
    needed = compiled_memory_bytes(compiled)
    if not limit or needed <= limit:
      return compiled, placement
    if placement.mode != "host" and requested == "auto":
      log(f"data: {placement.mode} needs {needed / 2**30:.2f} GiB per device of "
          f"{limit / 2**30:.2f}; trying less")
      requested = "sharded" if placement.mode == "replicated" else "host"
      continue
    batch_field = "global_batch" if config.data.global_batch else "batch_per_device"
    raise ConfigError(
        f"the train step needs {needed / 2**30:.2f} GiB per device but the device has "
        f"{limit / 2**30:.2f} GiB ({(needed - limit) / 2**30:.2f} GiB over): lower "
        f"data.{batch_field} (now {config.data[batch_field]}) or data.patch_size "
        f"(now {tuple(config.data.patch_size)}), split each sample over more devices "
        f"(mesh.space), use model.dtype=bfloat16 or "
        f"model.remat=convolutions" + ("" if placement.mode == "host" else
                                       ", or data.placement=host"))
