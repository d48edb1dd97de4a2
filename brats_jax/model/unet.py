"""A U-Net in Flax NNX, 3D or 2D from the same code, channels-last.

Parameters and normalisation statistics are float32; convolutions run in `dtype` (bf16 on
accelerators). The 2x up-sampling is a 1x1 convolution to 2^d * C channels followed by a
depth-to-space reshape: the same operator as a k=2, s=2 transposed convolution, but built
from plain matrix products, because XLA's 3D transposed-convolution gradient is a known slow
path (jax-ml/jax#31662).

One model, lowered per platform (platforms.py chooses while tracing): on CPUs the 3D
convolutions run as 2D ones (cpu_convolution.py); on TPUs the full-resolution level runs on
space-to-depth tensors (space_to_depth.py) when the norm allows it. The parameters and the
function are the same.
"""

import itertools

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from brats_jax import platforms
from brats_jax.model import space_to_depth as s2d
from brats_jax.model.blocks import (
  ContextBlock,
  Conv,
  ConvBlock,
  Dropout,
  UpSample,
  level_filters,
  resize2x,
)

OUTPUTS = ("separate", "summed")  # UNet's outputs (see its docstring)


def foldable(config: ml_collections.ConfigDict) -> bool:
  """Whether level 0 has a space-to-depth lowering for TPUs (the standard recipe's
  layers; other options run unfolded there)."""
  return (config.spatial_dims == 3 and config.norm in ("instance", "group")
          and config.block in ("plain", "residual") and config.downsample == "conv"
          and config.upsample == "depth_to_space" and config.outputs == "separate"
          and (config.dropout == 0 or config.dropout_at == "bottleneck"))


class UNet(nnx.Module):
  """Encoder-decoder with skip connections and segmentation heads.

  Returns a list of logits, full resolution first. outputs=separate: during training it
  also holds one map per deep-supervision level (each half the resolution of the one
  before), each scored by the loss. outputs=summed (Kayalibay 2017, Isensee 2017): the
  heads of levels 0..deep_supervision are up-sampled and added into one full-resolution map.
  """

  def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    dims, filters = config.spatial_dims, level_filters(config)
    self.config = config
    block = ContextBlock if config.block == "context" else ConvBlock
    site = itertools.count(1)  # every dropout site gets its own number (blocks.Dropout)

    def sites():
      return (next(site), next(site))

    self.encoder = nnx.List()
    cin = config.in_channels
    for level, features in enumerate(filters):
      bottleneck = level == len(filters) - 1
      dilations = tuple(config.bottleneck_dilation) if bottleneck else (1, 1)
      self.encoder.append(block(cin, features, dims, config, rngs,
                                strides=1 if level == 0 else 2, dilations=dilations,
                                sites=sites()))
      cin = features
    self.upsamples, self.decoder, self.heads = nnx.List(), nnx.List(), nnx.List()
    for level in reversed(range(len(filters) - 1)):
      self.upsamples.append(UpSample(filters[level + 1], filters[level], dims, config, rngs))
      up = filters[level] if config.upsample == "depth_to_space" else filters[level + 1]
      self.decoder.append(block(up + filters[level], filters[level], dims, config, rngs,
                                sites=sites()))
    # heads[k] reads the decoder output at resolution level k (0 = full resolution).
    for level in range(1 + config.deep_supervision):
      self.heads.append(Conv(filters[level], config.out_channels, (1,) * dims,
                             dtype=config.dtype, rngs=rngs))
    self.dropout = Dropout(config.dropout, 0) \
        if config.dropout > 0 and config.dropout_at == "bottleneck" else None

  def __call__(self, x, *, train: bool = False, dropout_key=None):
    folded = foldable(self.config) and platforms.target() == "tpu"
    return self.forward(x.astype(self.config.dtype), train=train, dropout_key=dropout_key,
                        folded=folded)

  def forward(self, x, *, train: bool, dropout_key, folded: bool):
    """The network; with `folded`, level 0 runs on space-to-depth tensors (the same
    function: see space_to_depth.py)."""
    skips = []
    h = s2d.fold(x) if folded else x
    for level, block in enumerate(self.encoder):
      if folded and level < 2:
        h = block.folded([h]) if level == 0 else block.from_folded(h, train)
      else:
        h = block(h, train, dropout_key)
      skips.append(h)
    if self.dropout is not None:
      h = self.dropout(h, train, dropout_key)
    maps = {}
    num_levels = len(self.encoder)
    for i, (up, block) in enumerate(zip(self.upsamples, self.decoder)):
      level = num_levels - 2 - i
      if folded and level == 0:  # the up-sampling's 1x1 convolution, nearly folded already
        h = block.folded([s2d.fold_upsampled(up.conv(h)), skips[0]])
        head = self.heads[0]
        maps[0] = s2d.unfold(s2d.pointwise(h, head.kernel[...], head.bias[...],
                                           self.config.dtype))
      else:
        h = block(jnp.concatenate([up(h), skips[level]], axis=-1), train, dropout_key)
        if level < len(self.heads):
          maps[level] = self.heads[level](h)
    if self.config.outputs == "summed":
      total = None
      for level in sorted(maps, reverse=True):
        total = maps[level] if total is None else maps[level] + resize2x(total, "linear")
      return [total.astype(jnp.float32)]
    return [maps[level].astype(jnp.float32) for level in sorted(maps)
            if train or level == 0]


def training_flops_per_sample(config: ml_collections.ConfigDict, patch_size) -> float:
  """Analytic FLOPs of one training sample: 3x the forward convolutions (the backward pass
  costs twice the forward). config is the resolved model config (train_state.model_config).
  Counts real channels, unlike XLA's cost analysis, which counts padded ones."""
  filters = level_filters(config)
  dims, patch = config.spatial_dims, np.array(patch_size, np.float64)
  taps = 3**dims
  forward, cin = 0.0, config.in_channels
  for level, f in enumerate(filters):  # encoder: two 3^d convolutions per level
    voxels = np.prod(patch / 2**level)
    forward += 2 * voxels * taps * (cin * f + f * f)
    cin = f
  for level in range(len(filters) - 1):  # decoder: up-sampling (1x1 to 2^d f) + two convs
    voxels, f = np.prod(patch / 2**level), filters[level]
    forward += 2 * (voxels / 2**dims) * filters[level + 1] * f * 2**dims
    forward += 2 * voxels * taps * (2 * f * f + f * f)
  for level in range(1 + config.deep_supervision):  # 1x1 heads
    forward += 2 * np.prod(patch / 2**level) * filters[level] * config.out_channels
  return 3 * forward
