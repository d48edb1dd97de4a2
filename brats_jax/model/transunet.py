"""TransUNet (Chen et al. 2021) in Flax NNX: a CNN encoder, a Vision Transformer at the
bottleneck, and a CNN decoder with skip connections (the cascaded up-sampler).

model.transunet_encoder chooses the CNN encoder:
  unet      the U-Net's (blocks.py) for levels 0..depth-2, a strided convolution into the
            deepest level; the decoder and heads are the U-Net's
  resnet50  the paper's: the first three stages of a ResNet-50 (resnet.py) down to 1/16, and
            the paper's decoder: a 3x3 convolution from the transformer's width to 512, then
            four bilinear up-samplings, each followed by two 3x3 conv-norm-acts (widths 256,
            128, 64, 16; skips from 1/8, 1/4 and 1/2), and a 3x3 segmentation head
The deepest features become tokens (a linear patch embedding of 1x1 patches, as TransUNet
embeds its ResNet features), plus a learned position embedding, through model.vit_layers
pre-norm transformer blocks (multi-head self-attention and a GELU MLP), then back to a
feature map. The token count is fixed by the patch size, so the model is built for it
(sliding windows use that size too).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from brats_jax.model import resnet
from brats_jax.model.blocks import (
  Conv,
  ConvBlock,
  ConvNormAct,
  Dropout,
  UpSample,
  level_filters,
  resize2x,
)

ENCODERS = ("unet", "resnet50")  # model.transunet_encoder
DECODER_WIDTHS = (256, 128, 64, 16)  # the resnet50 arrangement's up-sampling path


class TransformerBlock(nnx.Module):
  def __init__(self, dim, heads, mlp_dim, dropout, site, dtype, rngs):
    self.norm1 = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
    self.attention = nnx.MultiHeadAttention(heads, dim, dtype=dtype, decode=False, rngs=rngs)
    self.norm2 = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
    self.mlp_in = nnx.Linear(dim, mlp_dim, dtype=dtype, rngs=rngs)
    self.mlp_out = nnx.Linear(mlp_dim, dim, dtype=dtype, rngs=rngs)
    self.dropout = Dropout(dropout, site)

  def __call__(self, x, train, key):
    x = x + self.dropout(self.attention(self.norm1(x)), train, key)
    y = self.mlp_out(jax.nn.gelu(self.mlp_in(self.norm2(x))))
    return x + self.dropout(y, train, key)


def _build_transformer(module, cin: int, grid: tuple, config, rngs) -> None:
  """The transformer bottleneck's layers, as attributes of `module` (their names are the
  checkpoints' parameter paths)."""
  module.grid = grid
  module.embed = nnx.Linear(cin, config.vit_dim, dtype=config.dtype, rngs=rngs)
  module.position = nnx.Param(0.02 * jax.random.normal(
      rngs.params(), (1, int(np.prod(grid)), config.vit_dim)))
  module.transformer = nnx.List([
      TransformerBlock(config.vit_dim, config.vit_heads, config.vit_mlp_dim,
                       config.dropout, 100 + i, config.dtype, rngs)
      for i in range(config.vit_layers)])
  module.norm = nnx.LayerNorm(config.vit_dim, dtype=config.dtype, rngs=rngs)


def _transform(module, h, train, key):
  """Feature map [B, *grid, C] -> the transformer's output tokens [B, tokens, vit_dim]."""
  tokens = module.embed(h.reshape(h.shape[0], -1, h.shape[-1]))
  tokens = tokens + module.position[...].astype(tokens.dtype)
  for block in module.transformer:
    tokens = block(tokens, train, key)
  return module.norm(tokens)


class TransUNet(nnx.Module):
  """The U-Net's encoder and decoder around the transformer (model.transunet_encoder=unet).
  Returns [full-resolution logits] (the U-Net's output convention)."""

  def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    dims, filters = config.spatial_dims, level_filters(config)
    self.config = config
    self.encoder = nnx.List()
    cin = config.in_channels
    for level, features in enumerate(filters[:-1]):
      self.encoder.append(ConvBlock(cin, features, dims, config, rngs,
                                    strides=1 if level == 0 else 2))
      cin = features
    self.down = ConvNormAct(cin, filters[-1], dims, config, rngs, strides=2)
    _build_transformer(self, filters[-1],
                       tuple(s // 2**(config.depth - 1) for s in config.patch_size), config,
                       rngs)
    self.unembed = nnx.Linear(config.vit_dim, filters[-1], dtype=config.dtype, rngs=rngs)
    self.upsamples, self.decoder = nnx.List(), nnx.List()
    for level in reversed(range(len(filters) - 1)):
      self.upsamples.append(UpSample(filters[level + 1], filters[level], dims, config, rngs))
      up = filters[level] if config.upsample == "depth_to_space" else filters[level + 1]
      self.decoder.append(ConvBlock(up + filters[level], filters[level], dims, config, rngs))
    self.head = Conv(filters[0], config.out_channels, (1,) * dims, config, rngs)

  def __call__(self, x, *, train: bool = False, dropout_key=None):
    h = x.astype(self.config.dtype)
    skips = []
    for block in self.encoder:
      h = block(h, train, dropout_key)
      skips.append(h)
    h = self.down(h, train)
    batch, channels = h.shape[0], h.shape[-1]
    tokens = _transform(self, h, train, dropout_key)
    h = self.unembed(tokens).reshape(batch, *self.grid, channels)
    for up, block, skip in zip(self.upsamples, self.decoder, reversed(skips)):
      h = block(jnp.concatenate([up(h), skip], axis=-1), train, dropout_key)
    return [self.head(h).astype(jnp.float32)]


class R50TransUNet(nnx.Module):
  """The paper's R50+ViT hybrid (model.transunet_encoder=resnet50): a ResNet-50's first
  three stages, the transformer at 1/16, and the cascaded up-sampler. Returns
  [full-resolution logits]."""

  def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    dims = config.spatial_dims
    self.config = config
    self.cnn = resnet.ResNet50Encoder(config.in_channels, dims, config, rngs)
    _build_transformer(self, resnet.STAGES[-1][2], tuple(s // 16 for s in config.patch_size),
                       config, rngs)
    self.unembed = ConvNormAct(config.vit_dim, 512, dims, config, rngs)  # "conv_more"
    self.decoder = nnx.List()
    cin = 512
    for width, skip in zip(DECODER_WIDTHS, resnet.skip_widths() + (0,)):
      self.decoder.append(nnx.List([ConvNormAct(cin + skip, width, dims, config, rngs),
                                    ConvNormAct(width, width, dims, config, rngs)]))
      cin = width
    self.head = Conv(cin, config.out_channels, (3,) * dims, config, rngs)

  def __call__(self, x, *, train: bool = False, dropout_key=None):
    h, skips = self.cnn(x.astype(self.config.dtype))
    tokens = _transform(self, h, train, dropout_key)
    h = self.unembed(tokens.reshape(h.shape[0], *self.grid, tokens.shape[-1]), train)
    for i, (first, second) in enumerate(self.decoder):
      h = resize2x(h, "linear")
      if i < len(skips):
        h = jnp.concatenate([h, skips[i]], axis=-1)
      h = second(first(h, train), train)
    return [self.head(h).astype(jnp.float32)]
