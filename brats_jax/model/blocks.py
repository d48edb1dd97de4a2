"""The U-Net's layers (Flax NNX, channels-last, 2D or 3D from the same code).

Options (model.* in the config): norm instance | group | batch | none; activation leaky_relu
| relu | elu | gelu | silu; block plain (conv-norm-act twice) | residual (plus a skip) |
context (Isensee 2017: a pre-activation residual module with dropout between its two
convolutions); down-sampling by strided convolution or max-pooling; up-sampling by a 1x1
convolution and depth-to-space (a k=2, s=2 transposed convolution without XLA's slow 3D
transposed-convolution gradient, jax-ml/jax#31662) or by nearest/linear resizing; dropout
after the bottleneck, after every block or after every convolution.

The `folded` methods run a layer on space-to-depth tensors for TPUs (space_to_depth.py);
unet.foldable says which configs they cover.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from brats_jax.model import convolution, normalisation
from brats_jax.model import space_to_depth as s2d


def Conv(cin, cout, kernel_size, config, rngs, **kwargs) -> nnx.Conv:  # noqa: N802 (a layer)
  """A convolution of the model: nnx.Conv in the model's dtype, lowered per platform
  (convolution.py)."""
  lowering = functools.partial(convolution.conv_general_dilated,
                               gpu_channel_multiple=config.gpu_channel_multiple)
  return nnx.Conv(cin, cout, kernel_size, dtype=config.dtype, rngs=rngs,
                  conv_general_dilated=lowering, **kwargs)

ACTIVATIONS = {"leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.01), "relu": jax.nn.relu,
               "elu": jax.nn.elu, "gelu": jax.nn.gelu, "silu": jax.nn.silu}


def level_filters(config: ml_collections.ConfigDict) -> list:
  """Filters per resolution level: doubling from `base_filters`, capped at `max_filters`."""
  return [min(config.base_filters * 2**i, config.max_filters) for i in range(config.depth)]


_NORMS = {
    "instance": lambda features, dtype, rngs: nnx.InstanceNorm(
        features, epsilon=1e-5, dtype=dtype, rngs=rngs),
    "group": lambda features, dtype, rngs: nnx.GroupNorm(
        features, num_groups=min(8, features), epsilon=1e-5, dtype=dtype, rngs=rngs),
    # Statistics are averaged across the data-parallel axis inside the train step.
    "batch": lambda features, dtype, rngs: nnx.BatchNorm(
        features, momentum=0.9, epsilon=1e-5, dtype=dtype, axis_name="data", rngs=rngs),
    "none": lambda features, dtype, rngs: None,
}
NORMS = tuple(_NORMS)
BLOCKS = ("plain", "residual", "context")  # ConvBlock (plain or residual), ContextBlock
# The block's first convolution strides | max-pooling | a separate strided convolution to the
# level's width before the block (Kayalibay 2017's strided network) (ConvBlock)
DOWNSAMPLE = ("conv", "maxpool", "separate_conv")
# UpSample: a 1x1 convolution and depth-to-space | resizing | nearest resizing, then a 3x3x3
# convolution to the level's width (Isensee 2017's up-sampling module)
UPSAMPLE = ("depth_to_space", "nearest", "linear", "nearest_conv")
# The decoder's blocks: the encoder's (model.block) | Isensee 2017's localisation modules
DECODER_BLOCKS = ("same", "localisation")
DROPOUT_AT = ("bottleneck", "blocks", "convolutions")  # where Dropout layers sit


def _norm(kind: str, features: int, dtype, rngs):
  return _NORMS[kind](features, dtype, rngs)


def _apply_norm(norm, x, train):
  """A _norm layer (or None: nothing); batch norm uses its running statistics outside
  training."""
  if norm is None:
    return x
  return norm(x, use_running_average=not train) if isinstance(norm, nnx.BatchNorm) \
      else normalisation.apply(norm, x)


class Dropout(nnx.Module):
  """Dropout whose random bits come from the step's key and this site's own number, so the
  model holds no RNG state (and the train step stays a pure function)."""

  def __init__(self, rate: float, site: int):
    self.rate, self.site = rate, site

  def __call__(self, x, train, key):
    if not train or self.rate == 0 or key is None:
      return x
    keep = jax.random.bernoulli(jax.random.fold_in(key, self.site), 1 - self.rate, x.shape)
    return jnp.where(keep, x / (1 - self.rate), 0).astype(x.dtype)


class ConvNormAct(nnx.Module):
  """Convolution (no bias before a norm) -> norm -> activation (-> dropout)."""

  def __init__(self, cin, cout, dims, config, rngs, strides=1, dilation=1, dropout=None,
               kernel=3):
    self.norm = _norm(config.norm, cout, config.dtype, rngs)
    self.conv = Conv(cin, cout, (kernel,) * dims, config, rngs, strides=strides,
                     kernel_dilation=dilation, use_bias=self.norm is None)
    self.activation = ACTIVATIONS[config.activation]
    self.dropout = dropout
    self.dtype = config.dtype

  def _norm_act(self, x, train, key=None):
    x = self.activation(_apply_norm(self.norm, x, train))
    return self.dropout(x, train, key) if self.dropout is not None else x

  def __call__(self, x, train, key=None):
    return self._norm_act(self.conv(x), train, key)

  def folded(self, parts):
    """This (stride-1, instance or group norm) layer on folded tensors; `parts` are the
    folded inputs whose channels the convolution reads in turn (the decoder's up-sampled
    and skip tensors, which are then never concatenated)."""
    kernel, y, start = self.conv.kernel[...], 0, 0
    for part in parts:
      channels = part.shape[-1] // s2d.FOLD
      y = y + s2d.conv(part, kernel[..., start:start + channels, :], 1, self.dtype)
      start += channels
    return self.activation(normalisation.apply(self.norm, y, positions=s2d.FOLD))

  def from_folded(self, x, train):
    """This stride-2 layer reading a folded tensor; its output is plain (level 1)."""
    return self._norm_act(s2d.conv(x, self.conv.kernel[...], 2, self.dtype), train)


class ConvBlock(nnx.Module):
  """num_convs conv-norm-act layers (2 by default); the first may stride (or follow a
  max-pool, or a separate strided convolution); the last outputs cout_last channels
  (default cout); optionally residual; optionally dropout after the block."""

  def __init__(self, cin, cout, dims, config, rngs, strides=1, dilations=None, sites=(),
               num_convs=2, cout_last=None):
    dilations = tuple(dilations or (1,) * num_convs)
    cout_last = cout_last or cout
    separate = strides != 1 and config.downsample == "separate_conv"
    self.entry = ConvNormAct(cin, cout, dims, config, rngs, strides) if separate else None
    if separate:
      cin, strides = cout, 1
    self.pool = strides != 1 and config.downsample == "maxpool"
    conv_strides = 1 if self.pool else strides
    per_conv = [Dropout(config.dropout, s) for s in sites[:num_convs]] \
        if config.dropout_at == "convolutions" and sites else [None] * num_convs
    widths = [cout] * (num_convs - 1) + [cout_last]
    self.first = ConvNormAct(cin, widths[0], dims, config, rngs, conv_strides, dilations[0],
                             per_conv[0])
    self.second = ConvNormAct(widths[0], widths[1], dims, config, rngs, 1, dilations[1],
                              per_conv[1])
    # Blocks of more than two convolutions (unet3d_softmax_brats2020.py's bottleneck,
    # lgg_unet2d_model2.py's floors).
    self.more = nnx.List([ConvNormAct(widths[i - 1], widths[i], dims, config, rngs, 1,
                                      dilations[i], per_conv[i])
                          for i in range(2, num_convs)])
    self.residual = config.block == "residual"
    needs_projection = self.residual and (cin != cout_last or conv_strides != 1)
    self.skip = Conv(cin, cout_last, (1,) * dims, config, rngs, strides=conv_strides,
                     use_bias=False) if needs_projection else None
    self.dropout = Dropout(config.dropout, sites[0]) \
        if config.dropout_at == "blocks" and sites else None
    self.dims = dims

  def __call__(self, x, train, key=None):
    if self.pool:
      x = nnx.max_pool(x, window_shape=(2,) * self.dims, strides=(2,) * self.dims)
    if self.entry is not None:
      x = self.entry(x, train, key)
    y = self.second(self.first(x, train, key), train, key)
    for layer in self.more:
      y = layer(y, train, key)
    if self.residual:
      y = y + (self.skip(x) if self.skip is not None else x)
    return self.dropout(y, train, key) if self.dropout is not None else y

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


class ContextBlock(nnx.Module):
  """Isensee et al. 2017: a stride-2 convolution into the level (or a 3x3 convolution where
  the width changes), then a pre-activation residual context module: norm, activation,
  convolution, dropout, norm, activation, convolution, added to its input."""

  def __init__(self, cin, cout, dims, config, rngs, strides=1, dilations=None, sites=()):
    dilations = tuple(dilations or (1, 1))
    self.entry = ConvNormAct(cin, cout, dims, config, rngs, strides) \
        if strides != 1 or cin != cout else None
    self.norms = nnx.List([_norm(config.norm, cout, config.dtype, rngs) for _ in range(2)])
    self.convs = nnx.List([Conv(cout, cout, (3,) * dims, config, rngs, kernel_dilation=d)
                           for d in dilations])
    self.activation = ACTIVATIONS[config.activation]
    self.dropout = Dropout(config.dropout, sites[0]) if sites else None

  def __call__(self, x, train, key=None):
    h = self.entry(x, train, key) if self.entry is not None else x
    y = h
    for i, (norm, conv) in enumerate(zip(self.norms, self.convs)):
      y = conv(self.activation(_apply_norm(norm, y, train)))
      if i == 0 and self.dropout is not None:
        y = self.dropout(y, train, key)
    return h + y


class LocalisationBlock(nnx.Module):
  """Isensee et al. 2017's localisation module: a 3x3x3 then a 1x1x1 conv-norm-act, the
  first bringing the concatenated up-sampled and skip features to the level's width."""

  def __init__(self, cin, cout, dims, config, rngs):
    self.first = ConvNormAct(cin, cout, dims, config, rngs)
    self.second = ConvNormAct(cout, cout, dims, config, rngs, kernel=1)

  def __call__(self, x, train, key=None):
    return self.second(self.first(x, train, key), train, key)


class UpSample(nnx.Module):
  """2x up-sampling to cout channels: a 1x1 convolution to 2^d * cout channels, then
  depth-to-space; or (mode nearest/linear) resizing, keeping the channels; or
  (nearest_conv) nearest resizing, then a 3x3x3 conv-norm-act to cout channels."""

  def __init__(self, cin, cout, dims, config, rngs):
    self.mode = config.upsample
    self.conv = {"depth_to_space": lambda: Conv(cin, cout * 2**dims, (1,) * dims, config, rngs),
                 "nearest_conv": lambda: ConvNormAct(cin, cout, dims, config, rngs)}.get(
                     self.mode, lambda: None)()
    self.dims, self.cout = dims, cout

  def __call__(self, x, train: bool = False):
    if self.mode == "nearest_conv":
      return self.conv(resize2x(x, "nearest"), train)
    if self.conv is None:
      return resize2x(x, self.mode)
    y = self.conv(x)
    batch, spatial = y.shape[0], y.shape[1:-1]
    y = y.reshape(batch, *spatial, *(2,) * self.dims, self.cout)
    # [b, s1..sd, f1..fd, c] -> [b, s1, f1, ..., sd, fd, c]
    order = [0] + [a for i in range(self.dims) for a in (1 + i, 1 + self.dims + i)]
    y = y.transpose(*order, 1 + 2 * self.dims)
    return y.reshape(batch, *(2 * s for s in spatial), self.cout)


def resize2x(x, mode: str):
  """Doubles every spatial axis of [B, *S, C] by nearest or (bi/tri)linear resizing: what
  jax.image.resize gives (half-pixel centres, edges clamped), written with slices and
  reshapes so that the batch may stay symbolic (an exported graph's)."""
  for axis in range(1, x.ndim - 1):
    if mode == "nearest":
      x = jnp.repeat(x, 2, axis=axis)
      continue
    first, last = (jax.lax.slice_in_dim(x, i, i + 1 or None, axis=axis) for i in (0, -1))
    previous = jnp.concatenate([first, jax.lax.slice_in_dim(x, 0, -1, axis=axis)], axis)
    following = jnp.concatenate([jax.lax.slice_in_dim(x, 1, None, axis=axis), last], axis)
    pairs = jnp.stack([0.75 * x + 0.25 * previous, 0.75 * x + 0.25 * following], axis + 1)
    x = pairs.reshape(x.shape[:axis] + (2 * x.shape[axis],) + x.shape[axis + 1:])
  return x
