"""The networks: the U-Net and its options, its per-platform lowerings, TransUNet."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from brats_jax import model, platforms, sharding
from brats_jax.config import checks
from brats_jax.model import blocks, convolution, normalisation, unet
from brats_jax.model import space_to_depth as s2d
from brats_jax.train import step as train_step

from conftest import new_train_state, tiny_config


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("shape", [(2, 5, 4, 3), (1, 3, 6, 4, 2)])
def test_resizing_by_two_is_jax_image_resize(mode, shape):
  x = jax.random.normal(jax.random.key(0), shape)
  expected = jax.image.resize(x, (shape[0],) + tuple(2 * s for s in shape[1:-1]) + shape[-1:],
                              mode)
  np.testing.assert_allclose(blocks.resize2x(x, mode), expected, rtol=1e-6, atol=1e-6)


def test_upsample_equals_stride_2_transposed_convolution():
  """The depth-to-space up-sampling is the k=2, s=2 transposed convolution, without using it."""
  config = ml_collections.ConfigDict({"dtype": "float32", "upsample": "depth_to_space",
                                      "gpu_channel_multiple": 0})
  for dims in (2, 3):
    up = blocks.UpSample(6, 5, dims, config, nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2,) + (3, 4, 5)[:dims] + (6,))
    kernel = up.conv.kernel[...].reshape((6,) + (2,) * dims + (5,))
    kernel = jnp.moveaxis(kernel, 0, dims)  # [2, ..., 2, in, out]
    spatial = "DHW"[-dims:]
    expected = jax.lax.conv_transpose(
        x, kernel[(slice(None, None, -1),) * dims], (2,) * dims, "VALID",
        dimension_numbers=(f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"))
    bias = up.conv.bias[...].reshape((2,) * dims + (5,))
    expected = expected + jnp.tile(bias, x.shape[1:-1] + (1,))[None]
    np.testing.assert_allclose(up(x), expected, rtol=1e-5, atol=1e-5)
  # Nothing in the model lowers to XLA's transposed convolution.
  net = model.create_model(model.model_config(tiny_config()), 0)
  hlo = jax.jit(lambda x: net(x)[0]).lower(jnp.ones((1, 16, 16, 16, 4))).as_text()
  dilations = re.findall(r"lhs_dilate = \[([0-9, ]*)\]", hlo)
  assert len(dilations) >= 10
  assert all(set(d.replace(" ", "").split(",")) == {"1"} for d in dilations), dilations


@pytest.mark.parametrize("patch,norm,residual", [((16, 16, 16), "instance", False),
                                                 ((32, 32), "group", True),
                                                 pytest.param((16, 16, 16), "batch", True,
                                                              marks=pytest.mark.slow)])
def test_unet_shapes_3d_and_2d(patch, norm, residual):
  config = tiny_config()
  config.data.patch_size = patch
  config.model.norm = norm
  config.model.block = "residual" if residual else "plain"
  config.model.bottleneck_dilation = (1, 2)
  config.model.dropout = 0.1
  net = model.create_model(model.model_config(config), 0)
  x = jnp.ones((2,) + patch + (4,))

  graphdef, variables = nnx.split(net)

  def forward(x):  # as in the train step: a fresh copy of the module inside the transform
    return nnx.merge(graphdef, variables, copy=True)(x, train=True,
                                                      dropout_key=jax.random.key(0))

  if norm == "batch":  # batch statistics are reduced over the data axis, as in training
    forward = jax.shard_map(forward, mesh=sharding.make_mesh(jax.devices()[:1]),
                            in_specs=jax.P(), out_specs=jax.P(), check_vma=False)
  outputs = forward(x)
  assert [o.shape for o in outputs] == [(2,) + tuple(s // 2**i for s in patch) + (3,)
                                        for i in range(1 + config.model.deep_supervision)]
  assert len(net(x)) == 1  # inference: full resolution only


def test_bf16_compute_keeps_float32_parameters():
  config = tiny_config()
  config.model.dtype = "bfloat16"
  net = model.create_model(model.model_config(config), 0)
  params = nnx.state(net, nnx.Param)
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}
  hlo = jax.jit(lambda x: net(x)[0]).lower(jnp.ones((1, 16, 16, 16, 4))).as_text()
  assert "bf16" in hlo and net(jnp.ones((1, 16, 16, 16, 4)))[0].dtype == jnp.float32


def test_batch_norm_statistics_are_global_across_devices(tiny_store):
  """BatchNorm statistics are averaged over the data axis: 8 devices match 1."""
  config = tiny_config(tiny_store)
  config.model.norm = "batch"
  config.augment.enabled = False
  rng = np.random.default_rng(0)
  batch = {"image": rng.standard_normal((8, 16, 16, 16, 4)).astype(np.float16),
           "label": rng.integers(0, 4, (8, 16, 16, 16)).astype(np.uint8),
           "aug_seed": np.arange(8, dtype=np.uint32)}
  results = []
  for mesh in (sharding.make_mesh(), sharding.make_mesh(jax.devices()[:1])):
    graphdef, state, tx = new_train_state(config, mesh)
    before = jax.tree.leaves(jax.device_get(state["model_state"]))
    state, _ = train_step.make_train_step(graphdef, tx, mesh, config)(
        state, sharding.to_global(batch, mesh, 8))
    results.append(jax.tree.leaves(jax.device_get(state["model_state"])))
  assert any(not np.allclose(a, b) for a, b in zip(before, results[0]))
  for a, b in zip(*results):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shape,kernel,strides,dilation,padding", [
    ((2, 9, 10, 11, 3), (3, 3, 3), (1, 1, 1), (1, 1, 1), "SAME"),
    ((2, 16, 16, 16, 4), (3, 3, 3), (2, 2, 2), (1, 1, 1), "SAME"),
    ((1, 8, 8, 8, 5), (3, 3, 3), (1, 1, 1), (2, 2, 2), "SAME"),
    ((1, 9, 8, 7, 2), (3, 3, 3), (2, 2, 2), (1, 1, 1), ((1, 1), (0, 2), (1, 0))),
    ((1, 7, 6, 5, 2), (1, 1, 1), (1, 1, 1), (1, 1, 1), "SAME")])
def test_cpu_convolution_is_lax_convolution(shape, kernel, strides, dilation, padding):
  """The depth-stacked 2D form the CPU runs is the 3D convolution, values and gradients."""
  x = jax.random.normal(jax.random.key(0), shape)
  w = jax.random.normal(jax.random.key(1), kernel + (shape[-1], 6))
  numbers = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NDHWC", "DHWIO", "NDHWC"))

  def loss(conv):
    return lambda x, w: jnp.sum(jnp.sin(conv(x, w, strides, padding, rhs_dilation=dilation,
                                                 dimension_numbers=numbers)))

  ours, theirs = convolution.conv_general_dilated, jax.lax.conv_general_dilated
  np.testing.assert_allclose(
      jax.jit(lambda x, w: ours(x, w, strides, padding, rhs_dilation=dilation,
                                dimension_numbers=numbers))(x, w),
      theirs(x, w, strides, padding, rhs_dilation=dilation, dimension_numbers=numbers),
      rtol=1e-5, atol=5e-5)
  for a, b in zip(jax.jit(jax.grad(loss(ours), (0, 1)))(x, w),
                  jax.grad(loss(theirs), (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-4)
  # On the CPU the program holds only 2D convolutions.
  hlo = jax.jit(loss(ours)).lower(x, w).as_text()
  inputs = re.findall(r"stablehlo.convolution.* dim_numbers = \[([^\]]*)\]", hlo)
  assert inputs and all(i.replace(" ", "") == "b,0,1,f" for i in inputs), inputs


@pytest.mark.parametrize("shape,kernel,cout,strides", [
    ((2, 8, 8, 8, 4), (3, 3, 3), 32, (1, 1, 1)),   # the first level: 4 modalities
    ((2, 8, 8, 8, 32), (1, 1, 1), 3, (1, 1, 1)),   # a head: 3 regions
    ((1, 9, 8, 7, 5), (3, 3, 3), 6, (2, 2, 2)),    # both, strided
    ((2, 12, 10, 3), (3, 3), 2, (1, 1))])          # 2D (LGG: 3 channels)
def test_channel_padded_convolution_is_the_convolution(shape, kernel, cout, strides):
  """The GPU form (channels padded with zeros to a multiple of 8) is the convolution:
  values, and gradients for the input and the kernel of the real channels."""
  x = jax.random.normal(jax.random.key(0), shape)
  w = jax.random.normal(jax.random.key(1), kernel + (shape[-1], cout))
  spec = {5: ("NDHWC", "DHWIO", "NDHWC"), 4: ("NHWC", "HWIO", "NHWC")}[len(shape)]
  numbers = jax.lax.conv_dimension_numbers(x.shape, w.shape, spec)

  def native(x, w):
    return jax.lax.conv_general_dilated(x, w, strides, "SAME", dimension_numbers=numbers)

  def padded(x, w):
    return convolution.channel_padded_conv(x, w, 8, native)

  hlo = jax.jit(padded).lower(x, w).as_text()
  channels = re.findall(r"stablehlo.convolution.*: \(tensor<([0-9x]+)xf32>, "
                        r"tensor<([0-9x]+)xf32>\) -> tensor<([0-9x]+)xf32>", hlo)
  assert channels and all(int(dims.split("x")[-1]) % 8 == 0
                          for dims in channels[0]), channels  # input, kernel in and out
  np.testing.assert_allclose(jax.jit(padded)(x, w), native(x, w), rtol=1e-6, atol=1e-5)
  loss = lambda conv: lambda x, w: jnp.sum(jnp.sin(conv(x, w)))  # noqa: E731
  for ours, theirs in zip(jax.jit(jax.grad(loss(padded), (0, 1)))(x, w),
                          jax.grad(loss(native), (0, 1))(x, w)):
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)


def test_a_network_lowered_for_gpus_with_padded_channels_is_the_same_network():
  """model.gpu_channel_multiple changes how a network is traced for GPUs, not its
  parameters (the checkpoint format) or its function: the GPU form, run here on the CPU,
  gives the outputs of the unpadded form."""
  config = tiny_config()
  nets = {}
  for multiple in (0, 8):
    config.model.gpu_channel_multiple = multiple
    nets[multiple] = model.create_model(model.model_config(config), 0)
  plain, padded = (nnx.state(nets[m], nnx.Param) for m in (0, 8))
  assert jax.tree.structure(plain) == jax.tree.structure(padded)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(padded)):
    np.testing.assert_array_equal(a, b)
  x = jax.random.normal(jax.random.key(2), (2,) + tuple(config.data.patch_size) + (4,))
  with platforms.tracing_for("gpu"):
    lowered = {m: jax.jit(lambda x, net=nets[m]: net(x, train=True)).lower(x) for m in nets}
  shapes = {m: re.findall(r"stablehlo.convolution.*: \(tensor<[0-9x]+x(\d+)xf32>",
                          lowered[m].as_text()) for m in nets}
  assert "4" in shapes[0] and "4" not in shapes[8] and "8" in shapes[8], shapes
  outputs = {m: lowered[m].compile()(x) for m in nets}
  for a, b in zip(outputs[0], outputs[8], strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["instance", "group"])
def test_normalisation_is_flax_norm_and_rounds_once_in_bf16(kind):
  """normalisation.apply gives flax's InstanceNorm / GroupNorm (float32); in bf16 it stays
  within bf16 rounding of the float32 result, even for activations far from zero mean; on a
  space-to-depth folded tensor it is the same function."""
  x = 3.0 + 0.5 * jax.random.normal(jax.random.key(0), (2, 4, 8, 6, 16))
  layer = {"instance": nnx.InstanceNorm(16, epsilon=1e-5, rngs=nnx.Rngs(0)),
           "group": nnx.GroupNorm(16, num_groups=8, epsilon=1e-5, rngs=nnx.Rngs(0))}[kind]
  layer.scale[...] = 1 + jax.random.normal(jax.random.key(1), (16,))
  layer.bias[...] = jax.random.normal(jax.random.key(2), (16,))
  with jax.enable_x64(True):  # flax's layer in float64: the exact values
    expected = np.asarray(nnx.merge(*jax.tree.map(
        lambda v: v.astype(jnp.float64), nnx.split(layer)))(x.astype(jnp.float64)), np.float32)
  np.testing.assert_allclose(normalisation.apply(layer, x), expected, rtol=1e-5, atol=3e-5)

  layer.dtype = jnp.bfloat16
  half = normalisation.apply(layer, x.astype(jnp.bfloat16))
  assert half.dtype == jnp.bfloat16
  # the input's own bf16 rounding (|x| ~ 3, std 0.5: 0.008 / 0.5) bounds what is reachable
  np.testing.assert_allclose(half.astype(jnp.float32), expected, rtol=0.02, atol=0.1)
  assert float(jnp.abs(half.astype(jnp.float32) - expected).mean()) < 0.02

  groups = 16 if kind == "instance" else 8
  folded = normalisation.group_normalise(s2d.fold(x), groups, layer.scale[...],
                                         layer.bias[...], 1e-5, jnp.float32, positions=s2d.FOLD)
  np.testing.assert_allclose(s2d.unfold(folded), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # float64 compiles of the whole model, twice: about 25 s each
@pytest.mark.parametrize("norm,residual,patch", [("instance", False, (16, 16, 16)),
                                                 ("group", True, (16, 32, 8))])
def test_tpu_space_to_depth_level_is_the_same_function(norm, residual, patch):
  """The TPU lowering (level 0 on folded tensors, from the same parameters) gives the same
  outputs and parameter gradients as the plain network; here both run on the CPU, in
  float32 and (gradients, whose float32 rounding the norms amplify) in float64."""
  config = tiny_config()
  config.data.patch_size = patch
  config.model.norm = norm
  config.model.block = "residual" if residual else "plain"
  config.model.base_filters = 8
  mc = model.model_config(config)

  def run(module, x, folded):
    return module.forward(x, train=True, dropout_key=None, folded=folded)

  net = model.create_model(mc, 0)
  x = jax.random.normal(jax.random.key(0), (2,) + patch + (4,))
  for a, b in zip(run(net, x, False), run(net, x, True)):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5)

  with jax.enable_x64(True):
    with mc.unlocked():
      mc.dtype = "float64"
    net = model.create_model(mc, 0)
    graphdef, variables = nnx.split(net)
    net = nnx.merge(graphdef, jax.tree.map(lambda v: v.astype(jnp.float64), variables))
    x = x.astype(jnp.float64)

    def grads(folded):
      g = jax.grad(lambda m: sum(jnp.sum(jnp.sin(o)) for o in run(m, x, folded)))(net)
      return jax.tree.leaves(nnx.state(g, nnx.Param))

    for a, b in zip(grads(False), grads(True)):
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-9 * float(np.abs(a).max()))


@pytest.mark.slow
@pytest.mark.parametrize("options", [
    {"downsample": "maxpool", "upsample": "nearest", "norm": "none", "activation": "elu"},
    {"upsample": "linear", "block": "context", "dropout": 0.3, "dropout_at": "blocks"},
    {"block": "residual", "dropout": 0.25, "dropout_at": "convolutions",
     "bottleneck_dilation": (2, 2)},
    {"outputs": "summed", "deep_supervision": 1, "norm": "batch"},
    {"upsample": "nearest_conv", "decoder_block": "localisation", "block": "context"},
    {"downsample": "separate_conv", "block": "residual", "norm": "batch"},
    {"architecture": "transunet", "deep_supervision": 0, "vit_layers": 2, "vit_heads": 2,
     "vit_dim": 16, "vit_mlp_dim": 32, "patch": (32, 32)},
    {"architecture": "transunet", "transunet_encoder": "resnet50", "deep_supervision": 0,
     "vit_layers": 1, "vit_heads": 2, "vit_dim": 16, "vit_mlp_dim": 32, "patch": (32, 32)}])
def test_model_options_build_train_and_infer(options):
  options = dict(options)
  config = tiny_config()
  config.data.patch_size = options.pop("patch", (16, 16, 16))
  for name, value in options.items():
    setattr(config.model, name, value)
  checks.check_config(config)
  net = model.create_model(model.model_config(config), 0)
  patch = tuple(config.data.patch_size)
  x = jax.random.normal(jax.random.key(0), (2,) + patch + (4,))
  graphdef, params, rest = nnx.split(net, nnx.Param, ...)

  def run(variables, key, train=True):
    module = nnx.merge(graphdef, variables, rest, copy=True)
    return module(x, train=train, dropout_key=key)

  variables = params

  if config.model.norm == "batch":
    run = _single_device(run)
  run = jax.jit(run, static_argnums=2)  # eager, the shard_map'd gradient took minutes
  outputs = run(variables, jax.random.key(1))
  separate = config.model.outputs == "separate"
  heads = 1 + config.model.deep_supervision if separate else 1
  assert [o.shape for o in outputs] == [(2,) + tuple(s // 2**i for s in patch) + (3,)
                                        for i in range(heads)]
  grads = jax.grad(lambda v: sum(jnp.sum(o**2) for o in run(v, jax.random.key(1))))(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  inference = run(variables, None, False)
  assert len(inference) == 1 and inference[0].shape == outputs[0].shape
  if config.model.dropout > 0:  # dropout draws from the step's key, and only in training
    other = run(variables, jax.random.key(2))
    assert not np.allclose(other[0], outputs[0])
    np.testing.assert_array_equal(run(variables, None, False)[0], inference[0])


def _single_device(run):
  """BatchNorm reduces its statistics over the data axis: run inside a 1-device shard_map."""
  mesh = sharding.make_mesh(jax.devices()[:1])

  def wrapped(variables, key, train=True):
    inner = jax.shard_map(lambda v, k: run(v, k, train), mesh=mesh, in_specs=jax.P(),
                          out_specs=jax.P(), check_vma=False)
    return inner(variables, key)

  return wrapped


@pytest.mark.parametrize("options", [
    {},
    {"encoder_convs": (2, 3, 4), "decoder_convs": (3, 2), "upsample": "nearest"},
    {"decoder_narrows": True, "upsample": "linear", "bottleneck_dilation": (2, 2),
     "downsample": "maxpool", "deep_supervision": 1},
    {"block": "residual", "encoder_convs": (2, 2, 3), "decoder_narrows": True,
     "bottleneck_dilation": (1, 2)},
    {"block": "context", "upsample": "nearest", "outputs": "summed", "deep_supervision": 1},
    {"block": "context", "upsample": "nearest_conv", "decoder_block": "localisation",
     "outputs": "summed"},  # Isensee 2017
    {"block": "residual", "downsample": "separate_conv", "norm": "batch"}])  # Kayalibay's
def test_channel_plan_is_the_model_that_is_built(options):
  """Every convolution the U-Net builds is in the channel plan that the FLOP count reads,
  with its widths: the kernels' sizes add up to the plan's."""
  config = tiny_config()
  for name, value in options.items():
    setattr(config.model, name, value)
  checks.check_config(config)
  mc = model.model_config(config)
  net = nnx.eval_shape(lambda: model.create_model(mc, 0))
  kernels = sum(x.size for path, x in nnx.to_flat_state(nnx.state(net, nnx.Param))
                if path[-1] == "kernel" and "skip" not in path)
  plan, dims = unet.channel_plan(mc), mc.spatial_dims

  def size(cin, widths, taps=3**dims):
    total = 0
    for width in widths:
      total, cin = total + taps * cin * width, width
    return total

  expected = sum(size(cin, widths) for _, cin, widths in plan["encoder"] + plan["bottom"])
  for _, cin, widths in plan["decoder"]:
    expected += (size(cin, widths[:1]) + size(widths[0], widths[1:], 1)
                 if mc.decoder_block == "localisation" else size(cin, widths))
  if mc.upsample == "depth_to_space":
    expected += sum(size(cin, [up * 2**dims], 1) for _, cin, up in plan["upsample"])
  if mc.upsample == "nearest_conv":
    expected += sum(size(cin, [up]) for _, cin, up in plan["upsample"])
  expected += sum(size(width, [mc.out_channels], 1) for _, width in plan["heads"])
  assert kernels == expected


def test_deeper_blocks_narrowing_decoder_and_dilated_bottleneck_run():
  """Henry's EquiUnet arrangement and blocks of more than two convolutions, forward and
  backward, with dropout after every convolution."""
  config = tiny_config()
  config.model.encoder_convs = (2, 3, 4)
  config.model.decoder_convs = (3, 2)
  config.model.decoder_narrows = True
  config.model.upsample = "linear"
  config.model.bottleneck_dilation = (2, 2)
  config.model.dropout, config.model.dropout_at = 0.2, "convolutions"
  config.model.dtype = "float32"
  checks.check_config(config)
  net = model.create_model(model.model_config(config), 0)
  assert len(net.encoder[2].more) == 2 and net.bottom is not None
  assert net.heads[0].kernel.shape[-2] == config.model.base_filters
  x = jax.random.normal(jax.random.key(0), (1, 16, 16, 16, 4))
  graphdef, params, rest = nnx.split(net, nnx.Param, ...)

  @jax.jit
  def loss(params):
    outputs = nnx.merge(graphdef, params, rest, copy=True)(
        x, train=True, dropout_key=jax.random.key(1))
    return sum(jnp.mean(o**2) for o in outputs), [o.shape for o in outputs]

  (value, shapes), grads = jax.value_and_grad(loss, has_aux=True)(params)
  assert shapes[0] == (1, 16, 16, 16, 3) and np.isfinite(float(value))
  assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads))
