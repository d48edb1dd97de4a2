"""A U-Net in Flax NNX, 3D or 2D from the same code, channels-last.

Parameters and normalisation statistics are float32; convolutions run in `dtype` (bf16 on
accelerators). The 2x up-sampling is a 1x1 convolution to 2^d * C channels followed by a
depth-to-space reshape: the same operator as a k=2, s=2 transposed convolution, but built
from plain matrix products, because XLA's 3D transposed-convolution gradient is a known slow
path (jax-ml/jax#31662).

One model, lowered per platform (platforms.py chooses while tracing): on CPUs the 3D
convolutions run as 2D ones (convolution.py); on TPUs the full-resolution level runs on
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
  ConvNormAct,
  Dropout,
  LocalisationBlock,
  UpSample,
  level_filters,
  resize2x,
)

OUTPUTS = ("separate", "summed")  # UNet's outputs (see its docstring)


def encoder_convs(config) -> tuple:
  """Convolutions per encoder level (model.encoder_convs; empty: two each)."""
  return tuple(config.encoder_convs) or (2,) * config.depth


def decoder_convs(config) -> tuple:
  """Convolutions of the decoder block at levels 0 .. depth-2 (model.decoder_convs; empty:
  two each)."""
  return tuple(config.decoder_convs) or (2,) * (config.depth - 1)


def has_dilated_bottleneck(config) -> bool:
  """Henry et al. 2020: a separate dilated block after the deepest level, fused with it."""
  return tuple(config.bottleneck_dilation) != (1, 1)


def foldable(config: ml_collections.ConfigDict) -> bool:
  """Whether level 0 has a space-to-depth lowering for TPUs (the standard recipe's
  layers; other options run unfolded there)."""
  return (config.spatial_dims == 3 and config.norm in ("instance", "group")
          and config.block in ("plain", "residual") and config.downsample == "conv"
          and config.upsample == "depth_to_space" and config.outputs == "separate"
          and (config.dropout == 0 or config.dropout_at == "bottleneck")
          and encoder_convs(config)[:2] == (2, 2) and decoder_convs(config)[0] == 2
          and not config.decoder_narrows and config.decoder_block == "same")


def channel_plan(config: ml_collections.ConfigDict) -> dict:
  """The width of every convolution, level by level: what UNet builds and what
  training_flops_per_sample counts. Entries are (level, cin, [cout of each conv], taps)."""
  filters, narrows = level_filters(config), config.decoder_narrows

  def counted(level, cin, widths, entry=False):
    # A context block adds an entry convolution where it strides or changes width, a
    # separate strided convolution where it strides.
    if (config.block == "context" and (entry or cin != widths[0])) or (
        entry and config.downsample == "separate_conv"):
      widths = widths[:1] + widths
    return (level, cin, widths)

  plan = {"encoder": [], "bottom": [], "upsample": [], "decoder": [], "heads": []}
  cin = config.in_channels
  for level, (features, convs) in enumerate(zip(filters, encoder_convs(config))):
    plan["encoder"].append(counted(level, cin, [features] * convs, entry=level > 0))
    cin = features
  deepest = len(filters) - 1
  if has_dilated_bottleneck(config):  # the dilated block, then a fusion of both
    fused = filters[deepest - 1] if narrows else filters[deepest]
    plan["bottom"] = [(deepest, cin, [cin, cin]), (deepest, 2 * cin, [fused])]
    cin = fused
  widths = {}
  for level, convs in reversed(list(enumerate(decoder_convs(config)))):
    up = filters[level] if config.upsample in ("depth_to_space", "nearest_conv") else cin
    plan["upsample"].append((level, cin, up))
    last = filters[level - 1] if narrows and level > 0 else filters[level]
    widths_here = [filters[level]] * (convs - 1) + [last]
    plan["decoder"].append((level, up + filters[level], widths_here)
                           if config.decoder_block == "localisation"
                           else counted(level, up + filters[level], widths_here))
    widths[level] = cin = last
  plan["heads"] = [(level, widths[level]) for level in range(1 + config.deep_supervision)]
  return plan


class UNet(nnx.Module):
  """Encoder-decoder with skip connections and segmentation heads.

  Returns a list of logits, full resolution first. outputs=separate: during training it
  also holds one map per deep-supervision level (each half the resolution of the one
  before), each scored by the loss. outputs=summed (Kayalibay 2017, Isensee 2017): the
  heads of levels 0..deep_supervision are up-sampled and added into one full-resolution map.
  With model.bottleneck_dilation other than (1, 1), a dilated block follows the deepest
  level and a fusion convolution joins its input and output (Henry et al. 2020's EquiUnet).
  """

  def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    dims, plan = config.spatial_dims, channel_plan(config)
    self.config = config
    block = ContextBlock if config.block == "context" else ConvBlock
    site = itertools.count(1)  # every dropout site gets its own number (blocks.Dropout)

    def sites(n=2):
      return tuple(next(site) for _ in range(max(n, 2)))

    def make_block(cin, widths, **kwargs):
      if block is ContextBlock:
        return ContextBlock(cin, widths[0], dims, config, rngs, sites=sites(), **kwargs)
      if kwargs.get("strides", 1) != 1 and config.downsample == "separate_conv":
        widths = widths[1:]  # the plan counts the block's strided entry convolution too
      return ConvBlock(cin, widths[0], dims, config, rngs, sites=sites(len(widths)),
                       num_convs=len(widths), cout_last=widths[-1], **kwargs)

    self.encoder = nnx.List([make_block(cin, widths, strides=1 if level == 0 else 2)
                             for level, cin, widths in plan["encoder"]])
    if plan["bottom"]:
      (_, cin, widths), (_, fusion_in, (fused,)) = plan["bottom"]
      self.bottom = make_block(cin, widths, dilations=tuple(config.bottleneck_dilation))
      self.fusion = ConvNormAct(fusion_in, fused, dims, config, rngs)
    else:
      self.bottom = self.fusion = None
    # Built level by level, each up-sampling then its block: the order parameters are drawn
    # in, which keeps a seed's initial weights those of earlier versions.
    upsamples, decoder = [], []
    for (_, cin, up), (_, block_in, widths) in zip(plan["upsample"], plan["decoder"]):
      upsamples.append(UpSample(cin, up, dims, config, rngs))
      decoder.append(LocalisationBlock(block_in, widths[-1], dims, config, rngs)
                     if config.decoder_block == "localisation"
                     else make_block(block_in, widths))
    self.upsamples, self.decoder = nnx.List(upsamples), nnx.List(decoder)
    # heads[k] reads the decoder output at resolution level k (0 = full resolution).
    self.heads = nnx.List([Conv(width, config.out_channels, (1,) * dims, config, rngs)
                           for _, width in plan["heads"]])
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
    if self.bottom is not None:
      h = self.fusion(jnp.concatenate([h, self.bottom(h, train, dropout_key)], axis=-1), train,
                      dropout_key)
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
        h = block(jnp.concatenate([up(h, train), skips[level]], axis=-1), train, dropout_key)
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
  plan, dims = channel_plan(config), config.spatial_dims
  patch = np.array(patch_size, np.float64)

  def convs(level, cin, widths, taps=3**dims):
    voxels, total = np.prod(patch / 2**level), 0.0
    for width in widths:
      total += 2 * voxels * taps * cin * width
      cin = width
    return total

  forward = sum(convs(*entry) for entry in plan["encoder"] + plan["bottom"])
  for level, cin, widths in plan["decoder"]:
    if config.decoder_block == "localisation":  # a 3x3x3, then a 1x1x1 convolution
      forward += convs(level, cin, widths[:1]) + convs(level, widths[0], widths[1:], 1)
    else:
      forward += convs(level, cin, widths)
  if config.upsample == "depth_to_space":  # a 1x1 convolution at the coarser level
    forward += sum(convs(level + 1, cin, [up * 2**dims], 1)
                   for level, cin, up in plan["upsample"])
  elif config.upsample == "nearest_conv":  # a 3x3x3 convolution at the finer level
    forward += sum(convs(level, cin, [up]) for level, cin, up in plan["upsample"])
  forward += sum(convs(level, width, [config.out_channels], 1) for level, width in plan["heads"])
  return 3 * forward
