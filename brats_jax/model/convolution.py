"""Every convolution of the model, lowered per platform: the same operator in three forms.

- CPUs: 3D convolutions with their depth taps stacked into channels. XLA:CPU runs a
  small-channel 3D convolution (and far worse, its gradients) 10-18x slower than PyTorch's
  oneDNN kernels, while its 2D convolutions are fast. A k_d x k_h x k_w convolution is
  exactly a k_h x k_w 2D convolution over (H, W) of the input with its k_d depth-shifted
  copies concatenated along channels, the depth folded into the batch:

      conv3d(x, w)[n, z] = conv2d(concat_t x[n, z*s + t*r], w[t] stacked over t)

- GPUs, with model.gpu_channel_multiple: convolutions whose channel counts are not a
  multiple of it (the 4 input modalities, the 3 region outputs) get zero channels added to
  the input and the kernel, and the extra outputs are dropped. cuDNN's tensor-core kernels
  take bf16 channels in multiples of 8 and otherwise pad on every call; XLA pads only f16
  convolutions itself, never bf16. The parameters keep their shapes.
- Otherwise lax's own convolution (cuDNN and the TPU have fast 3D kernels).

`conv_general_dilated` has lax's signature (nnx.Conv takes it as its convolution) and picks
the form when the program is traced (platforms.py). Tests check the forms agree.
"""

import functools

import jax.numpy as jnp
from jax import lax

from brats_jax import platforms


def _channels_last(ndim: int) -> lax.ConvDimensionNumbers:
  """[N, *spatial, C] inputs and outputs, [*spatial, I, O] kernels."""
  spatial = tuple(range(1, ndim - 1))
  return lax.ConvDimensionNumbers(lhs_spec=(0, ndim - 1) + spatial,
                                  rhs_spec=(ndim - 1, ndim - 2) + tuple(range(ndim - 2)),
                                  out_spec=(0, ndim - 1) + spatial)


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


def channel_padded_conv(lhs, rhs, multiple: int, convolution):
  """convolution(lhs, rhs) of channels-last operands, computed with the input and output
  channels padded with zeros up to a multiple of `multiple`: the added input channels meet
  zero weights, and the added outputs are dropped."""
  cin, cout = rhs.shape[-2:]
  pad_in, pad_out = -cin % multiple, -cout % multiple
  if not pad_in and not pad_out:
    return convolution(lhs, rhs)
  lhs = jnp.pad(lhs, [(0, 0)] * (lhs.ndim - 1) + [(0, pad_in)])
  rhs = jnp.pad(rhs, [(0, 0)] * (rhs.ndim - 2) + [(0, pad_in), (0, pad_out)])
  return convolution(lhs, rhs)[..., :cout]


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None,
                         gpu_channel_multiple: int = 0, **kwargs):
  """lax.conv_general_dilated, lowered for the platform being traced for (see the module's
  docstring); anything but the channels-last convolutions the models use goes to lax
  unchanged."""

  def native(lhs, rhs):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type, **kwargs)

  dims = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  if (dims != _channels_last(lhs.ndim) or feature_group_count != 1 or batch_group_count != 1
      or kwargs.get("out_sharding") is not None):
    return native(lhs, rhs)
  padded = functools.partial(channel_padded_conv, multiple=gpu_channel_multiple,
                             convolution=native)
  gpu = padded if gpu_channel_multiple else None
  rhs_dilation = tuple(rhs_dilation or (1,) * (lhs.ndim - 2))
  if lhs.ndim != 5 or any(d != 1 for d in (lhs_dilation or ())):
    return platforms.choose(gpu=gpu, default=native)(lhs, rhs)
  if isinstance(padding, str):
    dilated = [(k - 1) * r + 1 for k, r in zip(rhs.shape[:3], rhs_dilation)]
    padding = lax.padtype_to_pads(lhs.shape[1:4], dilated, window_strides, padding)
  padding = tuple(tuple(p) for p in padding)

  def stacked(lhs, rhs):
    return depth_stacked_conv(lhs, rhs, tuple(window_strides), padding, rhs_dilation,
                              precision, preferred_element_type)

  return platforms.choose(cpu=stacked, gpu=gpu, default=native)(lhs, rhs)
