"""Training data on the devices: the same batches as streaming, decided from the sizes."""

import jax
import numpy as np
import pytest

from brats_jax import sharding
from brats_jax.data.store import PreparedStore
from brats_jax.train import device_input, loop
from brats_jax.train.host_input import PatchSampler
from brats_jax.train.metrics_log import read_metrics

from conftest import tiny_config


def _setup(tiny_store, placement, global_batch=8, patch=(16, 16, 16)):
  store = PreparedStore(tiny_store)
  ids = store.case_ids(exclude_folds=[0])
  mesh = sharding.make_mesh()
  devices = mesh.devices.size
  sampler = PatchSampler(store, ids, patch, global_batch, slice(0, global_batch), 0.5, 3,
                         sharded_over=devices if placement == "sharded" else 0)
  chosen = device_input.choose_placement(placement, store, ids, patch, mesh, 0, 0)
  return store, ids, mesh, sampler, chosen


def _cut_on_devices(data, descriptors, mesh, placement, patch):
  """The patches the train step would cut, gathered back to the host."""
  spec = jax.P(sharding.DATA) if placement == "sharded" else jax.P()
  cut = jax.jit(jax.shard_map(
      lambda d, c, s: device_input.cut_patches(d, c, s, patch), mesh=mesh,
      in_specs=(spec, jax.P(sharding.DATA), jax.P(sharding.DATA)),
      out_specs=jax.P(sharding.DATA)))
  rows = sharding.to_global(descriptors, mesh, len(descriptors["case"]))
  return jax.device_get(cut(data, rows["case"], rows["start"]))


@pytest.mark.parametrize("patch", [(16, 16, 16), (40, 16, 8)])
def test_replicated_batches_are_the_streamed_batches(tiny_store, patch):
  """Same seed and step: the patches cut on the devices are the ones the host reads,
  including patches larger than a case (a 40-voxel axis of 32x32x24 cases)."""
  store, ids, mesh, sampler, placement = _setup(tiny_store, "replicated", patch=patch)
  data = device_input.load(store, ids, placement, mesh)
  for step in (0, 7):
    streamed = sampler.batch(step)
    descriptors = sampler.descriptors(step)
    images, labels = _cut_on_devices(data, descriptors, mesh, "replicated", patch)
    assert np.array_equal(images, streamed["image"]) and np.array_equal(labels,
                                                                       streamed["label"])
    assert np.array_equal(descriptors["aug_seed"], streamed["aug_seed"])
    assert (labels > 0).any()


def test_sharded_rows_draw_from_their_devices_cases(tiny_store):
  store, ids, mesh, sampler, placement = _setup(tiny_store, "sharded")
  data = device_input.load(store, ids, placement, mesh)
  devices = mesh.devices.size
  assert data["images"].shape[:2] == (devices, -(-len(ids) // devices))
  descriptors = sampler.descriptors(3)
  images, labels = _cut_on_devices(data, descriptors, mesh, "sharded", (16, 16, 16))
  for row in range(8):  # row i is on device i (one row per device): read it from the store
    case = device_input.owned_cases(len(ids), devices, row)[descriptors["case"][row]]
    start = [int(s) for s in descriptors["start"][row]]
    image, label = store.read_patches([(ids[case], start, (16, 16, 16))])[0]
    assert np.array_equal(images[row], image) and np.array_equal(labels[row], label)
  again = sampler.descriptors(3)
  assert all(np.array_equal(again[k], descriptors[k]) for k in again)


def test_auto_placement_follows_the_sizes(tiny_store):
  store = PreparedStore(tiny_store)
  ids = store.case_ids()
  mesh = sharding.make_mesh()
  plenty = device_input.choose_placement("auto", store, ids, (16, 16, 16), mesh, 0, 1.0)
  assert plenty.mode == "replicated" and "held on every device" in plenty.reason
  size = plenty.bytes_per_device
  # Room for a device's share (2 of the 10 cases; 80% of a device's memory is for data),
  # not for all of them: each of the 8 devices holds its share.
  share = device_input.choose_placement("auto", store, ids, (16, 16, 16), mesh, 0,
                                       size / 3 / 2**30)
  assert share.mode == "sharded" and share.bytes_per_device < size
  tiny = device_input.choose_placement("auto", store, ids, (16, 16, 16), mesh, 0, 1e-6)
  assert tiny.mode == "host" and "streamed from the store" in tiny.reason
  assert device_input.choose_placement("host", store, ids, (16, 16, 16), mesh, 0, 1.0).mode \
      == "host"


@pytest.mark.slow  # two training runs compared step by step
def test_training_on_device_data_equals_streaming(tiny_store, tmp_path):
  """Replicated placement trains on exactly the streamed batches: the same losses."""
  losses = {}
  for placement in ("host", "replicated", "sharded"):
    config = tiny_config(tiny_store)
    config.data.val_fold = -1
    config.data.placement = placement
    config.train.num_steps = 3
    config.log_every_steps = 1
    workdir = str(tmp_path / placement)
    loop.train_and_validate(config, workdir)
    losses[placement] = [r["train/loss"] for r in read_metrics(workdir) if "train/loss" in r]
  assert len(losses["host"]) == 3
  np.testing.assert_allclose(losses["replicated"], losses["host"], rtol=1e-6)
  # Sharded rows draw from their devices' cases: other batches, the same kind of run.
  assert len(losses["sharded"]) == 3 and np.all(np.isfinite(losses["sharded"]))
  assert not np.allclose(losses["sharded"], losses["host"])
