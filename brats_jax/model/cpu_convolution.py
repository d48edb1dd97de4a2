"""3D convolution that XLA:CPU runs 3-8x faster: the depth taps stacked into channels.

XLA:CPU runs a small-channel 3D convolution (and far worse, its gradients) 10-18x slower than
PyTorch's oneDNN kernels, while its 2D convolutions are fast. A k_d x k_h x k_w convolution is
exactly a k_h x k_w 2D convolution over (H, W) of the input with its k_d depth-shifted copies
concatenated along channels, the depth folded into the batch:

    conv3d(x, w)[n, z] = conv2d(concat_t x[n, z*s + t*r], w[t] stacked over t)

`conv_general_dilated` has lax's signature (nnx.Conv takes it as its convolution) and picks
the form when the program is traced (platforms.py): the stacked form for the CPU, lax's own
3D convolution for GPUs and TPUs (cuDNN and the TPU have fast 3D kernels, and the stacked
copy would only add memory traffic there). Both are the same mathematical operator; tests
check they agree.
"""

import jax.numpy as jnp
from jax import lax

from brats_jax import platforms

_CHANNELS_LAST_3D = lax.ConvDimensionNumbers(lhs_spec=(0, 4, 1, 2, 3),
                                             rhs_spec=(4, 3, 0, 1, 2),
                                             out_spec=(0, 4, 1, 2, 3))


def depth_stacked_conv(lhs, rhs, window_strides, padding, rhs_dilation=(1, 1, 1),
                       precision=None, preferred_element_type=None):
  """A channels-last 3D convolution (lhs [N, D, H, W, C], rhs [kd, kh, kw, C, O], explicit
  padding [(lo, hi)] * 3) computed as one 2D convolution."""
  kd, kh, kw, cin, cout = rhs.shape
  stride, dilation = window_strides[0], rhs_dilation[0]
  x = jnp.pad(lhs, ((0, 0), padding[0], (0, 0), (0, 0), (0, 0)))
  depth = (x.shape[1] - (kd - 1) * dilation - 1) // stride + 1
  taps = [lax.slice_in_dim(x, t * dilation, t * dilation + (depth - 1) * stride + 1, stride,
                           axis=1) for t in range(kd)]
  stacked = jnp.concatenate(taps, axis=-1) if kd > 1 else taps[0]  # channel = t * C + c
  n, _, h, w, _ = stacked.shape
  kernel = rhs.transpose(1, 2, 0, 3, 4).reshape(kh, kw, kd * cin, cout)
  y = lax.conv_general_dilated(stacked.reshape(n * depth, h, w, kd * cin), kernel,
                               window_strides[1:], padding[1:],
                               rhs_dilation=rhs_dilation[1:],
                               dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision,
                               preferred_element_type=preferred_element_type)
  return y.reshape(n, depth, *y.shape[1:])


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None,
                         **kwargs):
  """lax.conv_general_dilated, lowered as depth_stacked_conv on CPUs for the channels-last
  3D convolutions the U-Net uses; anything else goes to lax unchanged."""

  def native(lhs, rhs):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type, **kwargs)

  dims = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  rhs_dilation = tuple(rhs_dilation or (1,) * (lhs.ndim - 2))
  if (lhs.ndim != 5 or dims != _CHANNELS_LAST_3D or feature_group_count != 1
      or batch_group_count != 1 or any(d != 1 for d in (lhs_dilation or ())) or kwargs.get(
          "out_sharding") is not None):
    return native(lhs, rhs)
  if isinstance(padding, str):
    dilated = [(k - 1) * r + 1 for k, r in zip(rhs.shape[:3], rhs_dilation)]
    padding = lax.padtype_to_pads(lhs.shape[1:4], dilated, window_strides, padding)
  padding = tuple(tuple(p) for p in padding)

  def stacked(lhs, rhs):
    return depth_stacked_conv(lhs, rhs, tuple(window_strides), padding, rhs_dilation,
                              precision, preferred_element_type)

  return platforms.choose(cpu=stacked, default=native)(lhs, rhs)
