"""TransUNet's hybrid encoder: the first three stages of a ResNet-50 (Chen et al. 2021, after
ViT's R50+ViT-B/16), 2D or 3D from the same code, channels-last.

A root 7x7 stride-2 convolution (64 channels, group norm, ReLU) and a 3x3 stride-2 max-pool,
then bottleneck stages of 3, 4 and 9 units (widths 256, 512, 1024; the second and third
stride 2 in their first unit). A unit: 1x1, 3x3 (strided), 1x1 convolutions with group norm
(32 groups), ReLU, and a projected shortcut where its width or resolution changes. The
features at 1/2, 1/4 and 1/8 of the input are the decoder's skips; 1/16 goes to the
transformer. BiT's weight standardisation is left out: it serves transfer from ImageNet
weights, which neither the seed nor brats_jax uses.
"""

from flax import nnx

from brats_jax.model.blocks import Conv

STAGES = ((3, 64, 256, 1), (4, 128, 512, 2), (9, 256, 1024, 2))  # units, middle, out, stride
ROOT = 64


def _group_norm(features, config, rngs):
  return nnx.GroupNorm(features, num_groups=32, epsilon=1e-6, dtype=config.dtype, rngs=rngs)


class Bottleneck(nnx.Module):
  def __init__(self, cin, middle, cout, stride, dims, config, rngs):
    self.convs = nnx.List([
        Conv(cin, middle, (1,) * dims, config, rngs, use_bias=False),
        Conv(middle, middle, (3,) * dims, config, rngs, strides=stride, use_bias=False),
        Conv(middle, cout, (1,) * dims, config, rngs, use_bias=False)])
    self.norms = nnx.List([_group_norm(w, config, rngs) for w in (middle, middle, cout)])
    self.project = nnx.List([Conv(cin, cout, (1,) * dims, config, rngs, strides=stride,
                                  use_bias=False), _group_norm(cout, config, rngs)]) \
        if cin != cout or stride != 1 else None

  def __call__(self, x):
    y = x
    for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      y = norm(conv(y))
      y = nnx.relu(y) if i < 2 else y
    shortcut = x if self.project is None else self.project[1](self.project[0](x))
    return nnx.relu(shortcut + y)


class ResNet50Encoder(nnx.Module):
  """x [B, *S, C] -> (features at 1/16 [B, *S/16, 1024], skips at 1/8, 1/4, 1/2)."""

  def __init__(self, cin, dims, config, rngs):
    self.root = Conv(cin, ROOT, (7,) * dims, config, rngs, strides=2, use_bias=False)
    self.root_norm = _group_norm(ROOT, config, rngs)
    self.stages = nnx.List()
    width = ROOT
    for units, middle, cout, stride in STAGES:
      self.stages.append(nnx.List([
          Bottleneck(width if i == 0 else cout, middle, cout, stride if i == 0 else 1, dims,
                     config, rngs) for i in range(units)]))
      width = cout
    self.dims = dims

  def __call__(self, x):
    h = nnx.relu(self.root_norm(self.root(x)))
    skips = [h]  # 1/2
    h = nnx.max_pool(h, window_shape=(3,) * self.dims, strides=(2,) * self.dims,
                     padding="SAME")
    for stage in self.stages:
      for unit in stage:
        h = unit(h)
      skips.append(h)  # 1/4, 1/8, then 1/16 (the last is the output)
    return h, skips[-2::-1]


def skip_widths() -> tuple:
  """The skips' channels, coarsest first (1/8, 1/4, 1/2)."""
  return (STAGES[1][2], STAGES[0][2], ROOT)
