"""Spatial partitioning (mesh.space): each sample split over several devices computes what
one device computes, in training and in prediction, on 8 CPU devices."""

import jax
import ml_collections
import numpy as np
import pytest
from train.test_training import _sampler

from brats_jax import sharding
from brats_jax.errors import ConfigError
from brats_jax.inference import case_predictor
from brats_jax.train import setup
from brats_jax.train import step as train_step

from conftest import new_train_state, tiny_config


def _sgd_steps(config, batches, mesh):
  """Losses, and parameters after each step (SGD: the update is linear in the gradient, so
  parameter differences are gradient differences scaled by the learning rate)."""
  graphdef, state, tx = new_train_state(config, mesh)
  step = train_step.make_train_step(graphdef, tx, mesh, config)
  # Spatial partitioning, not replicas: the program exchanges halos between the slabs.
  compiled = step.lower(state, sharding.to_global(batches[0], mesh, len(batches[0]["image"])))
  exchanges = "collective-permute" in compiled.compile().as_text()
  assert exchanges == (mesh.shape[sharding.SPACE] > 1)
  losses, params = [], []
  for batch in batches:
    state, metrics = step(state, sharding.to_global(batch, mesh, len(batch["image"])))
    losses.append(float(metrics["loss"]))
    params.append(jax.device_get(state["params"]))
  return losses, params, graphdef, state


def test_space_2_and_4_train_and_predict_as_space_1(tiny_store):
  config = tiny_config(tiny_store)  # augmentation on: drawn per sample, before the split
  # Plain SGD (no momentum, no clipping): an update is the gradient times the rate. With a
  # rate of 1e4, one step's update is so large that float32 parameters resolve it exactly
  # enough to recover the gradient to 1e-5 of its scale (at 0.05 the parameters' own
  # rounding would be larger than that).
  config.train.optimizer, config.train.momentum, config.train.grad_clip_norm = "sgd", 0.0, 1e9
  sampler = _sampler(tiny_store, config, 8)
  batches = [sampler.batch(s) for s in range(2)]
  steep = ml_collections.ConfigDict(config.to_dict())
  steep.train.learning_rate = 1e4
  config.train.learning_rate = 0.05
  initial = jax.tree.leaves(jax.device_get(new_train_state(config, sharding.make_mesh())[1]
                                           ["params"]))
  results, gradients = {}, {}
  for space in (1, 2, 4):
    mesh = sharding.make_mesh(jax.devices(), space)
    assert dict(mesh.shape) == {"data": 8 // space, "space": space}
    results[space] = _sgd_steps(config, batches, mesh)
    after = jax.tree.leaves(_sgd_steps(steep, batches[:1], mesh)[1][0])
    gradients[space] = [(b - a) / steep.train.learning_rate for a, b in zip(after, initial)]
  losses1, _, graphdef, state1 = results[1]
  assert len(gradients[1]) > 10 and all(np.abs(g).max() > 0 for g in gradients[1])
  for space in (2, 4):
    np.testing.assert_allclose(results[space][0], losses1, rtol=1e-5)
    for a, b in zip(gradients[space], gradients[1]):
      # Each gradient tensor to 1e-5 of its own scale: float32 sums in another order.
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())

  # The trained model predicts a whole case the same way with each window split 1, 2, 4 ways.
  image = np.asarray(jax.random.normal(jax.random.key(3), (37, 29, 20, 4)))
  predictions = {}
  for space in (1, 2, 4):
    mesh = sharding.make_mesh(jax.devices(), space)
    state = jax.device_put(state1, sharding.replicated(mesh))
    predictions[space] = case_predictor.make_case_predictor(graphdef, mesh, config)(state, image)
  assert predictions[1].shape == (37, 29, 20, 3)
  for space in (2, 4):
    np.testing.assert_allclose(predictions[space], predictions[1], rtol=1e-5, atol=1e-6)


def test_batch_norm_with_split_samples_is_refused_in_one_line():
  """XLA cannot reduce batch statistics over the data axis when samples are also split over
  the space axis: the run is refused before compiling, naming the way out."""
  config = tiny_config()
  config.model.norm = "batch"
  config.data.global_batch, config.data.batch_per_device = 2, 0
  mesh, global_batch = sharding.training_mesh(config, jax.devices()[:8])
  assert mesh.shape[sharding.SPACE] == 4
  with pytest.raises(ConfigError, match="batch norm needs whole samples on each device"):
    setup.check_against_mesh(config, mesh, global_batch)
  config.data.global_batch = 8
  setup.check_against_mesh(config, *sharding.training_mesh(config, jax.devices()[:8]))
