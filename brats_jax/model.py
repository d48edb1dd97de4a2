"""A U-Net in Flax NNX, 3D or 2D from the same code, channels-last.

Parameters and normalisation statistics are float32; convolutions run in `dtype` (bf16 on
accelerators). The 2x up-sampling is a 1x1 convolution to 2^d * C channels followed by a
depth-to-space reshape: the same operator as a k=2, s=2 transposed convolution, but built
from plain matrix products, because XLA's 3D transposed-convolution gradient is a known slow
path (jax-ml/jax#31662).

One model, lowered per platform: on CPUs the 3D convolutions run as 2D ones
(convolution.py); on TPUs the full-resolution level runs on space-to-depth tensors
(space_to_depth.py) when the norm allows it. The parameters and the function are the same.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from brats_jax import convolution
from brats_jax import space_to_depth as s2d

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
    self.norm_groups = cout if config.norm == "instance" else min(8, cout)
    self.activation = _ACTIVATIONS[config.activation]
    self.dtype = config.dtype

  def _norm_act(self, x, train):
    x = self.norm(x, use_running_average=not train) if self.is_batch_norm else self.norm(x)
    return self.activation(x)

  def __call__(self, x, train):
    return self._norm_act(self.conv(x), train)

  def folded(self, parts):
    """This (stride-1, instance or group norm) layer on folded tensors; `parts` are the
    folded inputs whose channels the convolution reads in turn (the decoder's up-sampled
    and skip tensors, which are then never concatenated)."""
    kernel, y, start = self.conv.kernel[...], 0, 0
    for part in parts:
      channels = part.shape[-1] // s2d.FOLD
      y = y + s2d.conv(part, kernel[..., start:start + channels, :], 1, self.dtype)
      start += channels
    scale = self.norm.scale[...] if self.norm.scale is not None else None
    bias = self.norm.bias[...] if self.norm.bias is not None else None
    return self.activation(s2d.normalise(y, self.norm_groups, scale, bias,
                                         self.norm.epsilon, self.dtype))

  def from_folded(self, x, train):
    """This stride-2 layer reading a folded tensor; its output is plain (level 1)."""
    return self._norm_act(s2d.conv(x, self.conv.kernel[...], 2, self.dtype), train)


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

  def folded(self, parts):
    """This stride-1 block on folded tensors (see ConvNormAct.folded)."""
    y = self.second.folded([self.first.folded(parts)])
    if self.residual and self.skip is None:
      y = y + parts[0]
    elif self.residual:
      kernel, start = self.skip.kernel[...], 0
      for part in parts:
        channels = part.shape[-1] // s2d.FOLD
        y = y + s2d.pointwise(part, kernel[..., start:start + channels, :], None,
                              self.first.dtype)
        start += channels
    return y

  def from_folded(self, x, train):
    """This stride-2 block reading a folded tensor (level 0 into level 1)."""
    y = self.second(self.first.from_folded(x, train), train)
    if self.residual:  # a strided 1x1 convolution reads position 0 of every folded block,
      kernel = self.skip.kernel[...]  # and every other voxel along unfolded axes
      x = x[:, ::2 if s2d.FACTORS[0] == 1 else 1, ::2 if s2d.FACTORS[1] == 1 else 1,
            ::2 if s2d.FACTORS[2] == 1 else 1, :kernel.shape[-2]]
      y = y + jnp.einsum("...c,cd->...d", x.astype(self.first.dtype),
                         kernel.reshape(kernel.shape[-2:]).astype(self.first.dtype))
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
    forward = functools.partial(self.forward, train=train, dropout_key=dropout_key)
    if self.config.spatial_dims == 3 and self.config.norm in ("instance", "group"):
      return jax.lax.platform_dependent(x, tpu=functools.partial(forward, folded=True),
                                        default=functools.partial(forward, folded=False))
    return forward(x, folded=False)

  def forward(self, x, *, train: bool, dropout_key, folded: bool):
    """The network; with `folded`, level 0 runs on space-to-depth tensors (the same
    function: see space_to_depth.py)."""
    skips = []
    h = s2d.fold(x) if folded else x
    for level, block in enumerate(self.encoder):
      if folded and level < 2:
        h = block.folded([h]) if level == 0 else block.from_folded(h, train)
      else:
        h = block(h, train)
      skips.append(h)
    if self.dropout is not None:
      h = self.dropout(h, deterministic=not train, rngs=dropout_key)
    outputs = []
    num_levels = len(self.encoder)
    for i, (up, block) in enumerate(zip(self.upsamples, self.decoder)):
      level = num_levels - 2 - i
      if folded and level == 0:  # the up-sampling's 1x1 convolution, nearly folded already
        h = block.folded([s2d.fold_upsampled(up.conv(h)), skips[0]])
        head = self.heads[0]
        logits = s2d.unfold(s2d.pointwise(h, head.kernel[...], head.bias[...],
                                          self.config.dtype))
      else:
        h = block(jnp.concatenate([up(h), skips[level]], axis=-1), train)
        logits = self.heads[level](h) if level < len(self.heads) else None
      if logits is not None and (train or level == 0):
        outputs.append(logits.astype(jnp.float32))
    return outputs[::-1]


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


def create_model(config: ml_collections.ConfigDict, seed: int) -> UNet:
  # Parameter initialisation draws from an "rbg" key: XLA compiles it ~8x faster than
  # threefry (20 s -> 2.5 s for a small U-Net on a CPU). Keys that must be identical under
  # any vmap or device split (augmentation) stay threefry.
  return UNet(config, rngs=nnx.Rngs(jax.random.key(seed, impl="rbg")))
