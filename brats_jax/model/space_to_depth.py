"""The U-Net's full-resolution level computed on space-to-depth tensors, for TPUs.

A TPU holds the minor dimension of a tensor in 128 lanes. Channels-last activations of the
first level (32 channels at 128^3) fill a quarter of them: every level-0 tensor, and every
float32 normalisation value, costs 4x its size in memory and bandwidth. Folding each 1x2x2
block of voxels into channels (128 x 64 x 64 x 128) fills the lanes. The level's operations
have exact counterparts on folded tensors, built here from the same parameters:

- a 3x3x3 convolution is a 3x3x3 convolution of the folded tensor with a kernel assembled
  from the original one (each fine offset lands on one coarse offset and position pair);
  the stride-2 convolution into level 1 takes 2 coarse taps along each folded axis;
- a 1x1 convolution (heads, residual projections) is block-diagonal over the 8 positions;
- the decoder's 1x1-conv-then-depth-to-space up-sampling needs only its unfolded axis moved;
- instance and group norm statistics are sums over the folded positions
  (normalisation.group_normalise with positions=FOLD).

So the model, its parameters and its checkpoints are the same on every platform; only how
XLA lays out level 0 differs. The assembled kernels carry 4x the multiply-adds of the
original (stride 1), which lanes that would otherwise sit idle absorb.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

# Voxels folded into channels per axis: 2x2 in y and z turns 32 channels into 128, exactly
# the lanes, for 4x the convolution multiply-adds (folding all three axes would need 8x).
FACTORS = (1, 2, 2)
FOLD = int(np.prod(FACTORS))  # positions per coarse voxel; folded channel = position * C + c


def fold(x: jax.Array) -> jax.Array:
  """[B, X, Y, Z, C] -> [B, X/fx, Y/fy, Z/fz, FOLD*C]; positions in row-major (x, y, z)."""
  b, c = x.shape[0], x.shape[-1]
  coarse = [s // f for s, f in zip(x.shape[1:4], FACTORS)]
  x = x.reshape(b, coarse[0], FACTORS[0], coarse[1], FACTORS[1], coarse[2], FACTORS[2], c)
  return x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, *coarse, FOLD * c)


def unfold(x: jax.Array) -> jax.Array:
  """The inverse of fold."""
  b, c = x.shape[0], x.shape[-1] // FOLD
  coarse = x.shape[1:4]
  x = x.reshape(b, *coarse, *FACTORS, c).transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return x.reshape(b, *(n * f for n, f in zip(coarse, FACTORS)), c)


def fold_upsampled(y: jax.Array) -> jax.Array:
  """The up-sampling's 1x1 convolution output at level 1, [B, X, Y, Z, 8C] with channel
  (x, y, z) * C + c, as the folded level-0 tensor: only the axes not folded are unfolded."""
  b, sx, sy, sz, c8 = y.shape
  c = c8 // 8
  y = y.reshape(b, sx, sy, sz, 2, 2, 2, c)
  splits = [f == 1 for f in FACTORS]  # these axes go back to space
  moved = [4 + a for a in range(3) if splits[a]]
  kept = [4 + a for a in range(3) if not splits[a]]
  order = [0]
  for axis in range(3):
    order += [1 + axis] + ([4 + axis] if splits[axis] else [])
  y = y.transpose(*order, *kept, 7)
  shape = [b] + [n * (2 if splits[a] else 1) for a, n in enumerate((sx, sy, sz))]
  return y.reshape(*shape, FOLD * c) if moved else y


def _axis_table(factor: int, stride: int) -> np.ndarray:
  """Per axis: which fine kernel offset each (coarse tap o, input position a, output
  position b) takes, as a 0/1 table [taps, factor, factor or 1, 3]."""
  if factor == 1:  # this axis is not folded: the fine taps themselves
    return np.eye(3, dtype=np.float32).reshape(3, 1, 1, 3)
  if stride == 1:  # output fine 2p + b reads fine 2(p + o - 1) + a = offset 2(o - 1) + a - b
    table = np.zeros((3, 2, 2, 3), np.float32)
    for o, a, b in itertools.product(range(3), range(2), range(2)):
      d = 2 * (o - 1) + a - b
      if -1 <= d <= 1:
        table[o, a, b, d + 1] = 1
    return table
  # stride 2 ('SAME', even size: padding 0 before, 1 after): output q reads fine 2q + t,
  # t = 0, 1, 2, which is coarse q + o at position a with t = 2o + a.
  table = np.zeros((2, 2, 1, 3), np.float32)
  for o, a in itertools.product(range(2), range(2)):
    if 2 * o + a <= 2:
      table[o, a, 0, 2 * o + a] = 1
  return table


def folded_kernel(kernel: jax.Array, stride: int) -> jax.Array:
  """A [3, 3, 3, Ci, Co] kernel as the kernel of the folded convolution: [taps..., FOLD*Ci,
  FOLD*Co] (stride 1, folded output) or [taps..., FOLD*Ci, Co] (stride 2, plain output)."""
  tx, ty, tz = (_axis_table(f, stride) for f in FACTORS)
  k = jnp.einsum("xaAi,ybBj,zcCk,ijkmn->xyzabcmABCn", tx, ty, tz, kernel)
  taps = (tx.shape[0], ty.shape[0], tz.shape[0])
  outputs = tx.shape[2] * ty.shape[2] * tz.shape[2]
  return k.reshape(*taps, FOLD * kernel.shape[3], outputs * kernel.shape[4])


def conv(x: jax.Array, kernel: jax.Array, stride: int, dtype) -> jax.Array:
  """The fine 3x3x3 'SAME' convolution (stride 1 or 2) of the fine tensor that x folds."""
  if stride == 1:
    strides, padding = (1, 1, 1), ((1, 1),) * 3
  else:  # unfolded axes stride over fine voxels; folded ones take one coarse step
    strides = tuple(2 if f == 1 else 1 for f in FACTORS)
    padding = ((0, 1),) * 3
  return jax.lax.conv_general_dilated(
      x.astype(dtype), folded_kernel(kernel, stride).astype(dtype), strides, padding,
      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


def pointwise(x: jax.Array, kernel: jax.Array, bias, dtype) -> jax.Array:
  """A 1x1 convolution (kernel [1, 1, 1, Ci, Co]) of the fine tensor that x folds."""
  k = kernel.reshape(kernel.shape[-2:]).astype(dtype)
  y = jnp.einsum("...pc,cd->...pd", x.astype(dtype).reshape(*x.shape[:-1], FOLD, k.shape[0]),
                 k)
  if bias is not None:
    y = y + bias.astype(dtype)
  return y.reshape(*x.shape[:-1], FOLD * k.shape[1])
