"""Instance and group normalisation: float32 statistics, applied in the activations' dtype.

flax's InstanceNorm and GroupNorm apply (x - mean) * rsqrt(var + eps) in float32 and round
the result to the layer's dtype. In a bf16 network that float32 arithmetic, and its float32
gradient, is what XLA keeps in memory between the convolution and the activation: the
default config's step on a TPU v5p accessed 212.5 GiB with the normalisation applied in bf16
(XLA's cost analysis, deviceless: benchmarks/results/aot_default_v5p-4_b2_bf16_norm.json;
223.0 before, docs/benchmarks.md). Statistics
stay float32 (E[x^2] - E[x]^2 over each sample's voxels, as flax with use_fast_variance);
only the subtract-and-scale runs in the layer's dtype, where the convolution's output
already is. In float32 networks (CPUs) nothing changes.
"""

import jax
import jax.numpy as jnp
from flax import nnx


def group_normalise(x: jax.Array, groups: int, scale, bias, epsilon: float, dtype,
                    positions: int = 1) -> jax.Array:
  """x [B, *spatial, positions * C] normalised per sample and group of channels (groups =
  C: instance norm), where channel p * C + c holds channel c of position p (space_to_depth's
  folded tensors; positions = 1 for plain ones). scale and bias: [C] or None."""
  channels = x.shape[-1] // positions
  spatial = tuple(range(1, x.ndim - 1))
  x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))

  def group_mean(v):  # [B, ..., P*C] -> [B, G]: over voxels, positions, the group's channels
    per_channel = v.mean(spatial).reshape(v.shape[0], positions, groups, channels // groups)
    return per_channel.mean((1, 3))

  mean = group_mean(x32)
  var = jnp.maximum(0.0, group_mean(jnp.square(x32)) - jnp.square(mean))

  def per_channel(stat):  # [B, G] -> [B, 1, ..., P*C]
    stat = jnp.tile(jnp.repeat(stat, channels // groups, axis=1), (1, positions))
    return stat.reshape(x.shape[0], *(1,) * len(spatial), -1)

  multiplier = jax.lax.rsqrt(per_channel(var) + epsilon)
  if scale is not None:
    multiplier = multiplier * jnp.tile(scale, positions)
  compute = jnp.dtype(dtype or x.dtype)
  y = (x.astype(compute) - per_channel(mean).astype(compute)) * multiplier.astype(compute)
  if bias is not None:
    y = y + jnp.tile(bias, positions).astype(compute)
  return y


def apply(norm, x: jax.Array, positions: int = 1) -> jax.Array:
  """An nnx.InstanceNorm or nnx.GroupNorm (channels-last, over all spatial axes) applied by
  group_normalise, with its own parameters; positions as there (folded tensors)."""
  groups = norm.num_features if isinstance(norm, nnx.InstanceNorm) else norm.num_groups
  return group_normalise(x, groups, norm.scale[...] if norm.scale is not None else None,
                         norm.bias[...] if norm.bias is not None else None, norm.epsilon,
                         norm.dtype, positions)
