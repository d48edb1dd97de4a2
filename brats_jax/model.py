"""A U-Net in Flax NNX, 3D or 2D from the same code, channels-last.

Parameters and normalisation statistics are float32; convolutions run in `dtype` (bf16 on
accelerators). The 2x up-sampling is a 1x1 convolution to 2^d * C channels followed by a
depth-to-space reshape: the same operator as a k=2, s=2 transposed convolution, but built
from plain matrix products, because XLA's 3D transposed-convolution gradient is a known slow
path (jax-ml/jax#31662).
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from brats_jax import convolution

# Every convolution of the model: lax's, except 3D on CPUs (convolution.py says why).
Conv = functools.partial(nnx.Conv, conv_general_dilated=convolution.conv_general_dilated)

_ACTIVATIONS = {"leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.01), "relu": jax.nn.relu,
                "gelu": jax.nn.gelu, "silu": jax.nn.silu}


def level_filters(config: ml_collections.ConfigDict) -> list:
  """Filters per resolution level: doubling from `base_filters`, capped at `max_filters`."""
  return [min(config.base_filters * 2**i, config.max_filters) for i in range(config.depth)]


def _norm(kind: str, features: int, dtype, rngs):
  if kind == "instance":
    return nnx.InstanceNorm(features, epsilon=1e-5, dtype=dtype, rngs=rngs)
  if kind == "group":
    return nnx.GroupNorm(features, num_groups=min(8, features), epsilon=1e-5, dtype=dtype,
                         rngs=rngs)
  if kind == "batch":
    # Statistics are averaged across the data-parallel axis inside the train step.
    return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, dtype=dtype, axis_name="data",
                         rngs=rngs)
  raise ValueError(f"unknown norm {kind!r}; expected instance, group or batch")


class ConvNormAct(nnx.Module):
  """Convolution (no bias: the norm follows) -> norm -> activation."""

  def __init__(self, cin, cout, dims, config, rngs, strides=1, dilation=1):
    self.conv = Conv(cin, cout, (3,) * dims, strides=strides, kernel_dilation=dilation,
                         use_bias=False, dtype=config.dtype, rngs=rngs)
    self.norm = _norm(config.norm, cout, config.dtype, rngs)
    self.is_batch_norm = config.norm == "batch"
    self.activation = _ACTIVATIONS[config.activation]

  def __call__(self, x, train):
    x = self.conv(x)
    x = self.norm(x, use_running_average=not train) if self.is_batch_norm else self.norm(x)
    return self.activation(x)


class ConvBlock(nnx.Module):
  """Two conv-norm-act layers; the first may stride; optionally residual."""

  def __init__(self, cin, cout, dims, config, rngs, strides=1, dilations=(1, 1)):
    self.first = ConvNormAct(cin, cout, dims, config, rngs, strides, dilations[0])
    self.second = ConvNormAct(cout, cout, dims, config, rngs, 1, dilations[1])
    needs_projection = config.residual and (cin != cout or strides != 1)
    self.skip = Conv(cin, cout, (1,) * dims, strides=strides, use_bias=False,
                         dtype=config.dtype, rngs=rngs) if needs_projection else None
    self.residual = config.residual

  def __call__(self, x, train):
    y = self.second(self.first(x, train), train)
    if self.residual:
      y = y + (self.skip(x) if self.skip is not None else x)
    return y


class UpSample(nnx.Module):
  """2x up-sampling: a 1x1 conv to 2^d * cout channels, then depth-to-space."""

  def __init__(self, cin, cout, dims, config, rngs):
    self.conv = Conv(cin, cout * 2**dims, (1,) * dims, dtype=config.dtype, rngs=rngs)
    self.dims, self.cout = dims, cout

  def __call__(self, x):
    y = self.conv(x)
    batch, spatial = y.shape[0], y.shape[1:-1]
    y = y.reshape(batch, *spatial, *(2,) * self.dims, self.cout)
    # [b, s1..sd, f1..fd, c] -> [b, s1, f1, ..., sd, fd, c]
    order = [0] + [a for i in range(self.dims) for a in (1 + i, 1 + self.dims + i)]
    y = y.transpose(*order, 1 + 2 * self.dims)
    return y.reshape(batch, *(2 * s for s in spatial), self.cout)


class UNet(nnx.Module):
  """Encoder-decoder with skip connections and optional deep-supervision heads.

  Returns a list of logits, full resolution first; during training it also holds one map per
  deep-supervision level (each half the resolution of the one before).
  """

  def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    dims, filters = config.spatial_dims, level_filters(config)
    self.config = config
    self.encoder = nnx.List()
    cin = config.in_channels
    for level, features in enumerate(filters):
      bottleneck = level == len(filters) - 1
      dilations = (1, 2) if bottleneck and config.dilated_bottleneck else (1, 1)
      self.encoder.append(ConvBlock(cin, features, dims, config, rngs,
                                    strides=1 if level == 0 else 2, dilations=dilations))
      cin = features
    self.upsamples, self.decoder, self.heads = nnx.List(), nnx.List(), nnx.List()
    for level in reversed(range(len(filters) - 1)):
      self.upsamples.append(UpSample(filters[level + 1], filters[level], dims, config, rngs))
      self.decoder.append(ConvBlock(2 * filters[level], filters[level], dims, config, rngs))
    # heads[k] reads the decoder output at resolution level k (0 = full resolution).
    for level in range(1 + config.deep_supervision):
      self.heads.append(Conv(filters[level], config.out_channels, (1,) * dims,
                                 dtype=config.dtype, rngs=rngs))
    self.dropout = nnx.Dropout(config.dropout) if config.dropout > 0 else None

  def __call__(self, x, *, train: bool = False, dropout_key=None):
    x = x.astype(self.config.dtype)
    skips = []
    for block in self.encoder:
      x = block(x, train)
      skips.append(x)
    if self.dropout is not None:
      x = self.dropout(x, deterministic=not train, rngs=dropout_key)
    outputs = []
    num_levels = len(self.encoder)
    for i, (up, block) in enumerate(zip(self.upsamples, self.decoder)):
      level = num_levels - 2 - i
      x = block(jnp.concatenate([up(x), skips[level]], axis=-1), train)
      if level < len(self.heads) and (train or level == 0):
        outputs.append(self.heads[level](x).astype(jnp.float32))
    return outputs[::-1]


def create_model(config: ml_collections.ConfigDict, seed: int) -> UNet:
  # Parameter initialisation draws from an "rbg" key: XLA compiles it ~8x faster than
  # threefry (20 s -> 2.5 s for a small U-Net on a CPU). Keys that must be identical under
  # any vmap or device split (augmentation) stay threefry.
  return UNet(config, rngs=nnx.Rngs(jax.random.key(seed, impl="rbg")))
