"""Whole-volume inference: sliding windows with importance weighting, on device.

`sliding_window_inference` follows MONAI's function of the same name (modes "constant" and
"gaussian", same window positions, same Gaussian importance map), except that arrays are
channels-last: [batch, *spatial, channels]. Window positions are static, so the whole
function traces into one XLA program: no host round-trip per window.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from scipy import ndimage

from brats_jax import layouts, sharding


def scan_starts(image_size, roi_size, overlap: float) -> list:
  """Start index of every window along each spatial axis (MONAI's dense_patch_slices)."""
  starts = []
  for size, roi in zip(image_size, roi_size):
    interval = roi if roi == size else max(int(roi * (1 - overlap)), 1)
    count = 1
    while (count - 1) * interval + roi < size:
      count += 1
    starts.append([min(i * interval, size - roi) for i in range(count)])
  return starts


def importance_map(roi_size, mode: str = "constant", sigma_scale=0.125) -> np.ndarray:
  """Per-voxel window weight: ones, or MONAI's Gaussian (compute_importance_map, MONAI 1.6):
  the product of 1D exp(-x^2 / 2 sigma^2) with sigma = sigma_scale * roi, centred on the
  window, in float32 and not normalised, floored at max(its minimum, 1e-3)."""
  if mode == "constant":
    return np.ones(roi_size, np.float32)
  if mode != "gaussian":
    raise ValueError(f"unknown mode {mode!r}; expected constant or gaussian")
  scales = np.broadcast_to(np.asarray(sigma_scale, np.float64), (len(roi_size),))
  weights = None
  for roi, scale in zip(roi_size, scales):
    x = np.arange(-(roi - 1) / 2, (roi - 1) / 2 + 1, dtype=np.float32)
    g = np.exp(x**2 / np.float32(-2 * float(roi * scale)**2))
    weights = g if weights is None else np.multiply.outer(weights, g)
  return np.maximum(weights, max(float(weights.min()), 1e-3)).astype(np.float32)


def window_plan(image_size, batch: int, roi, overlap: float, sw_batch_size: int,
                min_windows: int = 0):
  """Window starts [chunks, sw_batch_size, 1 + d] (batch index first) and validity weights.

  Covers every item of the batch with windows inside image_size; the list is padded (with
  zero-weight copies of the last window) to a whole number of chunks of at least min_windows.
  """
  windows = [(b,) + s for b in range(batch)
             for s in itertools.product(*scan_starts(image_size, roi, overlap))]
  num_chunks = math.ceil(max(len(windows), min_windows) / sw_batch_size)
  valid = np.zeros(num_chunks * sw_batch_size, np.float32)
  valid[:len(windows)] = 1
  windows += [windows[-1]] * (len(valid) - len(windows))
  return (np.array(windows, np.int32).reshape(num_chunks, sw_batch_size, -1),
          valid.reshape(num_chunks, sw_batch_size))


def blend_windows(inputs, starts, valid, predictor, roi, mode="constant", sigma_scale=0.125):
  """Importance-weighted average of predictor outputs over the given windows of inputs.

  starts/valid come from window_plan and may be traced, so one compiled program serves
  every window layout of the same size. Voxels no window covers are 0.
  """
  sw_batch_size, channels = starts.shape[1], inputs.shape[-1]
  weights = jnp.asarray(importance_map(roi, mode, sigma_scale))[..., None]
  out_channels = jax.eval_shape(
      predictor, jax.ShapeDtypeStruct((sw_batch_size,) + roi + (channels,), inputs.dtype)
  ).shape[-1]

  def crop(start):
    return jax.lax.dynamic_slice(inputs, tuple(start) + (0,), (1,) + roi + (channels,))[0]

  def add_chunk(carry, chunk):
    chunk_starts, chunk_valid = chunk

    def add(carry):
      total, norm = carry
      predictions = predictor(jax.vmap(crop)(chunk_starts)).astype(jnp.float32)
      for i in range(sw_batch_size):
        w = weights * chunk_valid[i]
        index = tuple(chunk_starts[i]) + (0,)
        total = jax.lax.dynamic_update_slice(
            total, jax.lax.dynamic_slice(total, index, (1,) + roi + (out_channels,))
            + (predictions[i] * w)[None], index)
        norm = jax.lax.dynamic_update_slice(
            norm, jax.lax.dynamic_slice(norm, index, (1,) + roi + (1,)) + w[None], index)
      return total, norm

    # Chunks that only pad the window list up to the bucket's count are skipped, not run.
    return jax.lax.cond(chunk_valid.any(), add, lambda carry: carry, carry), None

  total = jnp.zeros(inputs.shape[:-1] + (out_channels,), jnp.float32)
  norm = jnp.zeros(inputs.shape[:-1] + (1,), jnp.float32)
  (total, norm), _ = jax.lax.scan(add_chunk, (total, norm), (jnp.asarray(starts),
                                                             jnp.asarray(valid)))
  return jnp.where(norm > 0, total / jnp.maximum(norm, 1e-12), 0.0)


def sliding_window_inference(inputs, predictor, roi_size, sw_batch_size: int,
                             overlap: float = 0.25, mode: str = "constant",
                             sigma_scale=0.125, cval: float = 0.0):
  """Blends predictor outputs over overlapping windows of `inputs` [B, *S, C].

  predictor maps [sw_batch_size, *roi_size, C] to [sw_batch_size, *roi_size, K]. A roi_size
  entry that is None or <= 0 means the whole axis. Volumes smaller than the window are padded
  symmetrically with cval and the padding is cropped from the result.
  """
  spatial = inputs.shape[1:-1]
  roi = tuple(s if (r is None or r <= 0) else int(r) for r, s in zip(roi_size, spatial))
  pads = [max(r - s, 0) for r, s in zip(roi, spatial)]
  pad_width = [(0, 0)] + [(p // 2, p - p // 2) for p in pads] + [(0, 0)]
  padded = jnp.pad(inputs, pad_width, constant_values=cval)
  starts, valid = window_plan(padded.shape[1:-1], inputs.shape[0], roi, overlap, sw_batch_size)
  out = blend_windows(padded, starts, valid, predictor, roi, mode, sigma_scale)
  unpad = (slice(None),) + tuple(slice(lo, lo + s) for (lo, _), s in
                                 zip(pad_width[1:-1], spatial)) + (slice(None),)
  return out[unpad]


# Case volumes are padded up to a multiple of this before prediction, so that cases of
# similar size share one compiled program. Windows stay inside each case's own extent.
SHAPE_BUCKET = 32


def make_case_predictor(graphdef, mesh, config, mirror_tta: bool = False):
  """fn(variables, image [X, Y, Z, C] numpy) -> probabilities [X, Y, Z, K] numpy, where
  variables holds the model's "params" and "model_state" (a train state does) and K is the
  model's outputs: region probabilities (WT, TC, ET) for loss.kind=region, class
  probabilities (background, NCR, ED, ET) for softmax. decode() turns them into labels.

  Gaussian-weighted sliding windows (config.eval.overlap, sigma_scale), batched
  (config.eval.sw_batch_per_device per device) and spread over every device of the mesh
  with shard_map. With mirror_tta each window is predicted under all 2^d flips of its spatial
  axes and averaged (nnU-Net's test-time mirroring). A 2D model sees axial slices.
  """
  kind = config.loss.kind
  sw_batch = config.eval.sw_batch_per_device * mesh.devices.size
  roi = tuple(config.data.patch_size)
  spatial_dims = len(roi)
  flips = list(itertools.product((False, True), repeat=spatial_dims)) if mirror_tta else [()]

  def forward(params, model_state, windows):
    model = nnx.merge(graphdef, params, model_state)
    total = 0.0
    for flip in flips:
      axes = tuple(1 + a for a, f in enumerate(flip) if f)
      logits = jnp.flip(model(jnp.flip(windows, axes), train=False)[0], axes)
      total = total + (jax.nn.softmax(logits) if kind == "softmax" else jax.nn.sigmoid(logits))
    return total / len(flips)

  sharded_forward = jax.shard_map(
      forward, mesh=mesh, in_specs=(jax.P(), jax.P(), jax.P(sharding.DATA)),
      out_specs=jax.P(sharding.DATA))

  @jax.jit
  def blend(params, model_state, volume, starts, valid):
    return blend_windows(volume, starts, valid,
                         lambda w: sharded_forward(params, model_state, w), roi,
                         "gaussian", config.eval.sigma_scale)

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


def decode(probabilities: np.ndarray, kind: str, min_enhancing_voxels: int = 0) -> np.ndarray:
  """Model probabilities [..., K] -> internal labels, as validation and prediction both do.

  region (WT, TC, ET sigmoids): ET where p(ET) > 0.5, the rest of TC (p > 0.5) necrosis,
  the rest of WT edema. softmax (background, NCR, ED, ET): the most probable class, so ET
  wins with p = 0.4 when no other class is more probable. labels (NCR, ED, ET sigmoids):
  each where p > 0.5, enhancing over necrosis over edema. binary: tumour where p > 0.5.
  Then an ET prediction of fewer than min_enhancing_voxels voxels becomes necrosis (BraTS
  post-processing; 0 disables it).
  """
  labels = np.zeros(probabilities.shape[:-1], np.uint8)
  if kind == "softmax":  # class index = internal label (0 background, 1 NCR, 2 ED, 3 ET)
    labels = np.argmax(probabilities, axis=-1).astype(np.uint8)
  elif kind == "binary":
    labels[probabilities[..., 0] > 0.5] = layouts.TUMOUR
  else:
    order = (0, 1, 2) if kind == "region" else (1, 0, 2)  # outermost first, ET last
    values = ((layouts.ED, layouts.NCR, layouts.ET) if kind == "region"
              else (layouts.NCR, layouts.ED, layouts.ET))
    for i in order:
      labels[probabilities[..., i] > 0.5] = values[i]
  et_voxels = int((labels == layouts.ET).sum())
  if 0 < et_voxels < min_enhancing_voxels:
    labels[labels == layouts.ET] = layouts.NCR
  return labels


def remove_small_components(labels: np.ndarray, min_voxels: int) -> np.ndarray:
  """Labels with every connected tumour component (26-connected, any tumour label) of fewer
  than min_voxels voxels set to background: the usual clean-up of isolated false positives.
  min_voxels <= 1 changes nothing."""
  if min_voxels <= 1:
    return labels
  structure = ndimage.generate_binary_structure(labels.ndim, labels.ndim)
  components, count = ndimage.label(labels > 0, structure)
  if not count:
    return labels
  sizes = np.bincount(components.ravel())
  small = sizes < min_voxels
  small[0] = False
  return np.where(small[components], np.uint8(layouts.BACKGROUND), labels).astype(labels.dtype)
