"""Sliding-window inference (MONAI semantics, channels-last) and the case predictor."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from brats_jax import sharding
from brats_jax.inference import case_predictor, sliding_window

from conftest import new_train_state, tiny_config


def pointwise(windows):
  """Translation-equivariant at every voxel: the blend must reproduce it exactly."""
  return jnp.concatenate([2 * windows + 1, windows.sum(-1, keepdims=True)], -1)


@pytest.mark.parametrize("shape", [(13, 9, 7), (16, 16, 16), (5, 20, 3)])
@pytest.mark.parametrize("mode", ["constant", "gaussian"])
def test_equals_whole_volume_for_pointwise_predictor(shape, mode):
  x = jax.random.normal(jax.random.key(0), (2,) + shape + (3,))
  out = jax.jit(lambda v: sliding_window.sliding_window_inference(
      v, pointwise, (8, 8, 8), 3, overlap=0.5, mode=mode))(x)
  np.testing.assert_allclose(out, pointwise(x), rtol=1e-5, atol=1e-5)


def test_window_positions_match_monai():
  assert sliding_window.scan_starts((10,), (4,), 0.25) == [[0, 3, 6]]
  assert sliding_window.scan_starts((7,), (4,), 0.5) == [[0, 2, 3]]
  assert sliding_window.scan_starts((4, 9), (4, 4), 0.5) == [[0], [0, 2, 4, 5]]


def test_gaussian_blend_by_hand():
  """1D: image 6, window 4, overlap 0.5 -> windows at 0 and 2, each predicting its mean."""
  x = jnp.arange(6, dtype=jnp.float32).reshape(1, 6, 1)

  def window_mean(w):
    return jnp.broadcast_to(w.mean(axis=(1, 2), keepdims=True), w.shape)

  out = sliding_window.sliding_window_inference(x, window_mean, (4,), 1, overlap=0.5,
                                           mode="gaussian", sigma_scale=0.125)
  offsets = np.array([-1.5, -0.5, 0.5, 1.5])
  g = np.maximum(np.exp(-offsets**2 / (2 * 0.5**2)), 1e-3)  # MONAI: not normalised
  means = {0: 1.5, 2: 3.5}  # mean of [0..3] and of [2..5]
  expected = []
  for p in range(6):
    num = sum(g[p - s] * m for s, m in means.items() if 0 <= p - s < 4)
    den = sum(g[p - s] for s in means if 0 <= p - s < 4)
    expected.append(num / den)
  np.testing.assert_allclose(out[0, :, 0], expected, rtol=1e-5)
  constant = sliding_window.sliding_window_inference(x, window_mean, (4,), 1, overlap=0.5)
  np.testing.assert_allclose(constant[0, :, 0], [1.5, 1.5, 2.5, 2.5, 3.5, 3.5], rtol=1e-6)


def test_case_predictor_equals_plain_sliding_window():
  """Shape bucketing and window padding must not change the prediction of a case."""
  config = tiny_config()
  config.eval.overlap = 0.5
  mesh = sharding.make_mesh()
  graphdef, state, _ = new_train_state(config, mesh)
  predict = case_predictor.make_case_predictor(graphdef, mesh, config)
  image = np.asarray(jax.random.normal(jax.random.key(1), (21, 18, 11, 4)))
  net = nnx.merge(graphdef, state["params"], state["model_state"])
  expected = sliding_window.sliding_window_inference(
      jnp.asarray(image)[None], lambda w: jax.nn.sigmoid(net(w)[0]), (16, 16, 16), 2,
      overlap=0.5, mode="gaussian")[0]
  got = predict(state, image)
  assert got.shape == (21, 18, 11, 3)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
  # With mirror TTA the result stays a probability map of the same shape.
  tta = case_predictor.make_case_predictor(graphdef, mesh, config, mirror_tta=True)(state, image)
  assert tta.shape == got.shape and 0 <= tta.min() and tta.max() <= 1
  assert not np.allclose(tta, got)


MONAI_FIXTURE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures",
                             "monai_sliding_window.npz")


def _ramp_predictor(windows):
  """tests/fixtures/make_monai_fixture.py's predictor, channels-last: window * its mean + a
  ramp across the window, so the blend depends on the weight of every window at every voxel."""
  spatial = windows.shape[1:-1]
  ramp = sum(jnp.linspace(0, 1, n).reshape([n if i == a else 1 for i in range(len(spatial))])
             for a, n in enumerate(spatial))
  mean = windows.mean(axis=tuple(range(1, windows.ndim)), keepdims=True)
  return windows * mean + ramp[None, ..., None]


@pytest.mark.parametrize("name,roi,overlap,mode,sigma,sw_batch", [
    ("gaussian_cubic", (8, 8, 8), 0.5, "gaussian", 0.125, 3),
    ("gaussian_padded", (7, 10, 12), 0.25, "gaussian", 0.2, 2),
    ("constant", (8, 8, 8), 0.5, "constant", 0.125, 4)])
def test_sliding_window_matches_monai(name, roi, overlap, mode, sigma, sw_batch):
  """Against outputs MONAI 1.6 itself produced (tests/fixtures/make_monai_fixture.py)."""
  fixture = np.load(MONAI_FIXTURE)
  inputs = np.moveaxis(fixture["inputs"], 1, -1)  # MONAI is channels-first
  out = sliding_window.sliding_window_inference(jnp.asarray(inputs), _ramp_predictor, roi,
                                           sw_batch, overlap=overlap, mode=mode,
                                           sigma_scale=sigma)
  np.testing.assert_allclose(np.moveaxis(np.asarray(out), -1, 1), fixture[name], atol=1e-5,
                             rtol=0)
  for map_name, map_roi, map_sigma in (("map_8_8_8", (8, 8, 8), 0.125),
                                       ("map_7_10_12", (7, 10, 12), 0.2),
                                       ("map_16_16", (16, 16), 0.125),
                                       ("map_5_6_7", (5, 6, 7), 0.5)):
    np.testing.assert_allclose(sliding_window.importance_map(map_roi, "gaussian", map_sigma),
                               fixture[map_name], rtol=1e-6, atol=0)
