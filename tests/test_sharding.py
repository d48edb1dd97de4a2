"""The mesh and its devices: how many CPU cores a run's batch is split over."""

import jax
import pytest

from brats_jax import runtime, sharding

from conftest import tiny_config


@pytest.mark.parametrize("global_batch,space,expected", [
    (2, 0, 2),    # the demo's batch of 2 on 8 cores: 2 cores, a sample each
    (12, 0, 6),   # the most cores that split the batch evenly
    (3, 0, 3),
    (8, 0, 8),
    (0, 0, 8),    # data.batch_per_device: the batch grows with the devices, all of them
    (2, 4, 8),    # an explicit mesh.space: every device, as asked
])
def test_cores_split_the_batch_rather_than_the_samples(monkeypatch, global_batch, space,
                                                       expected):
  config = tiny_config()
  config.data.global_batch, config.mesh.space = global_batch, space
  monkeypatch.setattr(runtime, "_cores_as_devices", True)
  assert sharding.training_devices(config) == jax.devices()[:expected]
  monkeypatch.setattr(runtime, "_cores_as_devices", False)  # devices the user asked for
  assert sharding.training_devices(config) == jax.devices()
