"""Augmentation keeps image and label aligned: an image made from the label still matches
its label after every spatial transform, in 3D and 2D."""

import jax
import numpy as np
import pytest
from scipy import ndimage

from brats_jax.train import augment

from conftest import tiny_config


def _blobs(shape, seed):
  """Smooth random labels 0-3 (large regions, so boundaries are a small part)."""
  rng = np.random.default_rng(seed)
  field = ndimage.gaussian_filter(rng.standard_normal((4,) + shape), [0] + [6] * len(shape),
                                mode="wrap")
  return np.argmax(field, axis=0).astype(np.uint8)


def _spatial_only(transform):
  config = tiny_config().augment
  for p in ("p_rotation", "p_scale", "p_mirror", "p_brightness", "p_contrast", "p_gamma",
            "p_noise"):
    setattr(config, p, 0.0)
  for p in transform:
    setattr(config, p, 1.0)
  config.max_rotation_deg = 45.0
  config.scale_range = (0.7, 1.4)
  return config


@pytest.mark.parametrize("shape", [(40, 36, 32), (48, 40)])
@pytest.mark.parametrize("transform", [("p_mirror",), ("p_rotation",), ("p_scale",),
                                       ("p_rotation", "p_scale", "p_mirror")])
def test_spatial_transforms_move_image_and_label_together(shape, transform):
  labels = np.stack([_blobs(shape, seed) for seed in range(4)])
  images = np.eye(4, dtype=np.float32)[labels]  # channel c = (label == c)
  keys = jax.vmap(jax.random.key)(np.arange(10, 14, dtype=np.uint32))
  config = _spatial_only(transform)
  out_images, out_labels = jax.jit(lambda i, y, k: augment.augment_batch(i, y, k, config))(
      images, labels, keys)
  out_images, out_labels = np.asarray(out_images), np.asarray(out_labels)
  assert not np.array_equal(out_labels, labels)  # something moved
  inside = out_images.sum(-1) > 0.99  # voxels sampled from inside the patch
  assert _misaligned_voxels(out_images, out_labels, inside, exact=transform == ("p_mirror",)) == 0
  # The check has teeth: the same pair with the label flipped once more (a transform applied
  # to one and not the other) fails it.
  assert _misaligned_voxels(out_images, np.flip(out_labels, axis=1), inside, exact=False) > 20


def _misaligned_voxels(images, labels, inside, exact: bool) -> int:
  """Voxels where the label-derived image disagrees with the label. A flip moves voxels
  exactly (every voxel must agree); linear (image) and nearest (label) resampling may differ
  only on region borders: voxels with another label within 2 voxels, or within 2 voxels of
  the patch edge (beyond which the labels are unknown here)."""
  disagree = (np.argmax(images, -1) != labels) & inside
  if not exact:
    size = (1,) + (5,) * (labels.ndim - 1)
    border = (ndimage.maximum_filter(labels, size, mode="constant", cval=255)
              != ndimage.minimum_filter(labels, size, mode="constant", cval=0))
    assert (inside & ~border).mean() > 0.1  # enough voxels are checked (thousands)
    disagree &= ~border
  return int(disagree.sum())


@pytest.mark.parametrize("dtype,channels", [(np.float16, 4), (np.float16, 3),
                                            (np.float32, 4)])
def test_both_resampling_lowerings_give_the_same_values(dtype, channels):
  """TPUs gather per channel, other devices all channels of a voxel at once; both are
  map_coordinates (linear for the image, nearest for the labels), accumulated in float32."""
  rng = np.random.default_rng(0)
  shape = (20, 18, 16)
  image = rng.standard_normal(shape + (channels,)).astype(dtype)
  labels = rng.integers(0, 4, shape).astype(np.uint8)
  grid = np.stack(np.meshgrid(*[np.arange(float(n)) for n in shape], indexing="ij"))
  coords = (grid * 0.93 + 1.7 + rng.uniform(-0.3, 0.3, grid.shape)).astype(np.float32)
  expected = np.stack([jax.scipy.ndimage.map_coordinates(
      image[..., c].astype(np.float32), list(coords), order=1, mode="constant", cval=0)
      for c in range(channels)], -1)
  expected_labels = jax.scipy.ndimage.map_coordinates(labels, list(coords), order=0,
                                                      mode="constant", cval=0)
  for lowering in (augment._resample_per_channel, augment._resample_channels_together):
    got, got_labels = jax.jit(lowering)(image, labels, coords)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.array_equal(got_labels, expected_labels)
  assert (np.asarray(expected_labels) > 0).mean() > 0.5


def test_in_plane_rotation_and_per_axis_flips_leave_the_other_axes_alone():
  """Seed 001's set: rotations about the slice axis only, flips of the two in-plane axes.
  A volume whose slices differ only by a constant per slice keeps each slice's constant in
  the same slice (nothing moves along axis 2), and axis 2 is never flipped."""
  shape = (24, 20, 8)
  ramp = np.broadcast_to(np.arange(1, 9, dtype=np.float32), shape)  # slice z holds z + 1
  # Channel 1 is ones: where it stays 1, the voxel was sampled wholly from inside the patch.
  images = np.stack([np.stack([ramp, np.ones(shape, np.float32)], -1)] * 16)
  labels = np.zeros((16,) + shape, np.uint8)
  keys = jax.vmap(jax.random.key)(np.arange(16, dtype=np.uint32))
  config = _spatial_only(("p_rotation",))
  config.rotate_about = (2,)
  config.p_mirror_axes = (0.5, 0.5, 0.0)
  config.max_rotation_deg = 20.0
  out, _ = jax.jit(lambda i, y, k: augment.augment_batch(i, y, k, config))(
      images, labels, keys)
  inside = np.asarray(out)[..., 1] > 0.9999
  out = np.asarray(out)[..., 0]
  assert inside.mean() > 0.6
  z = np.broadcast_to(np.arange(1, 9, dtype=np.float32), out.shape)
  np.testing.assert_allclose(out[inside], z[inside], atol=1e-3)
  # With rotations about every axis (the default), slices mix.
  config.rotate_about = (0, 1, 2)
  out, _ = jax.jit(lambda i, y, k: augment.augment_batch(i, y, k, config))(
      images, labels, keys)
  inside = np.asarray(out)[..., 1] > 0.9999
  out = np.asarray(out)[..., 0]
  assert np.abs(out - z)[inside].max() > 0.5
  # Per-axis flip probabilities: axis 0 always, axis 1 never.
  mirror_only = _spatial_only(("p_mirror",))
  mirror_only.p_mirror_axes = (1.0, 0.0, 0.0)
  volume = np.random.default_rng(0).standard_normal((2,) + shape + (1,)).astype(np.float32)
  flipped, _ = augment.augment_batch(volume, np.zeros((2,) + shape, np.uint8), keys[:2],
                                     mirror_only)
  # (allclose: the intensity transforms, drawn as the identity, still round.)
  np.testing.assert_allclose(np.asarray(flipped), volume[:, ::-1], atol=1e-5)
