"""A trained model's prediction of whole cases: Gaussian-weighted sliding windows, batched
and spread over every device, one compiled program per volume-size bucket."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from brats_jax import platforms, sharding, tasks
from brats_jax.inference.sliding_window import weighted_average, window_plan, window_sums

# Case volumes are padded up to a multiple of this before prediction, so that cases of
# similar size share one compiled program. Windows stay inside each case's own extent.
SHAPE_BUCKET = 32


def make_case_predictor(graphdef, mesh, config, mirror_tta: bool = False):
  """fn(variables, image [X, Y, Z, C] numpy) -> probabilities [X, Y, Z, K] numpy, where
  variables holds the model's "params" and "model_state" (a train state does) and K is the
  model's outputs: region probabilities (WT, TC, ET) for loss.kind=region, class
  probabilities (background, NCR, ED, ET) for softmax. tasks.decode turns them into labels.

  Gaussian-weighted sliding windows (config.eval.overlap, sigma_scale), batched
  (config.eval.sw_batch_per_device per data-parallel group) and spread over the mesh with
  shard_map; with a space axis each window is split over its group's devices, as in
  training. With mirror_tta each window is predicted under all 2^d flips of its spatial axes
  and averaged (nnU-Net's test-time mirroring). A 2D model sees axial slices.
  """
  kind = config.loss.kind
  sw_batch = config.eval.sw_batch_per_device * sharding.data_shards(mesh)
  roi = tuple(config.data.patch_size)
  spatial_dims = len(roi)
  flips = list(itertools.product((False, True), repeat=spatial_dims)) if mirror_tta else [()]

  def forward(params, model_state, windows):
    if mesh.shape[sharding.SPACE] > 1:
      windows = sharding.split_spatially(windows)
    model = nnx.merge(graphdef, params, model_state)
    total = 0.0
    for flip in flips:
      axes = tuple(1 + a for a, f in enumerate(flip) if f)
      logits = jnp.flip(model(jnp.flip(windows, axes), train=False)[0], axes)
      total = total + (jax.nn.softmax(logits) if tasks.TASKS[kind].activation == "softmax"
                       else jax.nn.sigmoid(logits))
    return total / len(flips)

  def blend_per_group(params, model_state, volume, starts, valid):
    # Each data-parallel group blends its own windows of every chunk into sums of its own,
    # added up once at the end: gathering every chunk's predictions onto every device cost
    # a dozen collectives per chunk (on 2 CPU devices, a third of a 2-mm case's time).
    sums = window_sums(volume, starts, valid,
                       lambda windows: forward(params, model_state, windows), roi,
                       "gaussian", config.eval.sigma_scale, vary_over=(sharding.DATA,))
    return weighted_average(*jax.lax.psum(sums, sharding.DATA))

  per_group = jax.shard_map(
      blend_per_group, mesh=mesh,
      in_specs=(jax.P(), jax.P(), jax.P(), jax.P(None, sharding.DATA), jax.P(None, sharding.DATA)),
      out_specs=jax.P(), axis_names=sharding.manual_axes(mesh))

  blend = platforms.jit(per_group, mesh)

  def predict(variables, image: np.ndarray) -> np.ndarray:
    # A 2D model sees the volume as a batch of axial slices.
    volume = image.transpose(2, 0, 1, 3) if spatial_dims == 2 else image[None]
    batch, true_size = volume.shape[0], volume.shape[1:-1]
    # As MONAI: an axis shorter than the window is padded symmetrically up to it. Then the
    # volume is padded at the end up to its bucket; windows stay inside the first part.
    before = [max(r - s, 0) // 2 for s, r in zip(true_size, roi)]
    size = [max(s, r) for s, r in zip(true_size, roi)]
    bucket = [-(-s // SHAPE_BUCKET) * SHAPE_BUCKET for s in size]
    batch_bucket = -(-batch // SHAPE_BUCKET) * SHAPE_BUCKET if spatial_dims == 2 else 1
    volume = np.pad(volume, [(0, batch_bucket - batch)]
                    + [(b, total - s - b) for b, s, total in zip(before, true_size, bucket)]
                    + [(0, 0)])
    # The number of windows is padded to that of the whole bucket, so every case of the
    # bucket runs the same compiled program.
    bucket_windows = window_plan(bucket, batch_bucket, roi, config.eval.overlap, sw_batch)[1]
    starts, valid = window_plan(size, batch, roi, config.eval.overlap, sw_batch,
                                min_windows=bucket_windows.size)
    probabilities = sharding.host_value(blend(variables["params"], variables["model_state"],
                                              sharding.replicate(volume, mesh), starts, valid))
    probabilities = probabilities[(slice(0, batch),) + tuple(
        slice(b, b + s) for b, s in zip(before, true_size))]
    probabilities = probabilities.transpose(1, 2, 0, 3) if spatial_dims == 2 \
        else probabilities[0]
    return probabilities

  return predict
