"""TransUNet (Chen et al. 2021) in Flax NNX: a CNN encoder, a Vision Transformer at the
bottleneck, and a CNN decoder with skip connections (the cascaded up-sampler).

The CNN encoder is the U-Net's (blocks.py) for levels 0..depth-2; the deepest level is the
transformer: the level's down-sampled features become tokens (a linear patch embedding of
1x1 patches, as TransUNet embeds its ResNet features), plus a learned position embedding,
through model.vit_layers pre-norm transformer blocks (multi-head self-attention and a GELU
MLP), then back to a feature map. The decoder and heads are the U-Net's. The token count is
fixed by the patch size, so the model is built for it (sliding windows use that size too).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from brats_jax.model.blocks import Conv, ConvBlock, ConvNormAct, Dropout, UpSample, level_filters


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


class TransUNet(nnx.Module):
  """Returns [full-resolution logits] (the U-Net's output convention)."""

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
    grid = tuple(s // 2**(config.depth - 1) for s in config.patch_size)
    self.grid = grid
    self.embed = nnx.Linear(filters[-1], config.vit_dim, dtype=config.dtype, rngs=rngs)
    self.position = nnx.Param(0.02 * jax.random.normal(
        rngs.params(), (1, int(np.prod(grid)), config.vit_dim)))
    self.transformer = nnx.List([
        TransformerBlock(config.vit_dim, config.vit_heads, config.vit_mlp_dim,
                         config.dropout, 100 + i, config.dtype, rngs)
        for i in range(config.vit_layers)])
    self.norm = nnx.LayerNorm(config.vit_dim, dtype=config.dtype, rngs=rngs)
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
    tokens = self.embed(h.reshape(batch, -1, channels)) + self.position[...].astype(h.dtype)
    for block in self.transformer:
      tokens = block(tokens, train, dropout_key)
    h = self.unembed(self.norm(tokens)).reshape(batch, *self.grid, channels)
    for up, block, skip in zip(self.upsamples, self.decoder, reversed(skips)):
      h = block(jnp.concatenate([up(h), skip], axis=-1), train, dropout_key)
    return [self.head(h).astype(jnp.float32)]
