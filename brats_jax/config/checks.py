"""check_config(config): every rule the code assumes of a config, checked before anything runs.

The table below lists every field the code reads, with what it admits; a field that is
missing, unknown (a typo in a config file) or out of range is a ConfigError naming it, so
every command turns it into one line and exit 2 before it touches a file. Rules between
fields (patch size against depth, validation sources, warm-up against steps) follow. Each
choice admits the names the module implementing it defines (model/blocks.py's NORMS, ...);
the rules that need the store or the devices are train/setup.py's check_against_store.
"""

import math
import numbers

import ml_collections

from brats_jax import model as model_lib
from brats_jax import tasks
from brats_jax.errors import ConfigError
from brats_jax.imageio.checks import MAX_VOXELS
from brats_jax.model import blocks, transunet, unet
from brats_jax.train import device_input, host_input, losses, optimizer, step
from brats_jax.workdir.contract import flatten


def _fail(field, value, what):
  raise ConfigError.of_field(field, value, what)


def _integer(low=None, high=None):
  def check(field, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
      _fail(field, value, "must be an integer")
    if low is not None and value < low:
      _fail(field, value, f"must be at least {low}")
    if high is not None and value > high:
      _fail(field, value, f"must be at most {high}")
  return check


def _number(low=None, high=None, high_open=False, low_open=False):
  def check(field, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
      _fail(field, value, "must be a finite number")
    if low is not None and (value <= low if low_open else value < low):
      _fail(field, value, f"must be {'above' if low_open else 'at least'} {low}")
    if high is not None and (value >= high if high_open else value > high):
      _fail(field, value, f"must be {'below' if high_open else 'at most'} {high}")
  return check


def _choice(*names):
  def check(field, value):
    if value not in names:
      _fail(field, value, f"must be one of {', '.join(names)}")
  return check


def _boolean(field, value):
  if not isinstance(value, bool):
    _fail(field, value, "must be True or False")


def _string(field, value):
  if not isinstance(value, str):
    _fail(field, value, "must be a string")


def _range(low=None, high=None):
  """A (low, high) pair with low <= high inside [low, high]."""
  def check(field, value):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
      _fail(field, value, "must be a pair (low, high)")
    for v in value:
      _number(low, high)(field, v)
    if value[0] > value[1]:
      _fail(field, value, "low must not exceed high")
  return check


def _modalities(field, value):
  if (not isinstance(value, (tuple, list)) or not value
      or not all(isinstance(v, str) and v for v in value)):
    _fail(field, value, "must name one or more channels, e.g. ('flair', 't1', 't1ce', 't2')")
  if len(set(value)) != len(value):
    _fail(field, value, "names a channel twice")


def _loss_terms(field, value):
  pairs = value if isinstance(value, (tuple, list)) else ()
  if not pairs or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
    _fail(field, value, "must be (name, weight) pairs, e.g. (('dice', 1.0), ('bce', 1.0))")
  for name, weight in pairs:
    if name not in losses.TERM_NAMES:
      _fail(field, value, f"unknown loss {name!r}; known: {', '.join(losses.TERM_NAMES)}")
    _number(0)(field, weight)
  if not any(weight > 0 for _, weight in pairs):
    _fail(field, value, "needs a term with a weight above 0")


def _weights(field, value):
  if not isinstance(value, (tuple, list)):
    _fail(field, value, "must be a tuple of weights (empty: equal)")
  for v in value:
    _number(0)(field, v)
  if value and not any(v > 0 for v in value):
    _fail(field, value, "needs a weight above 0")


def _dilation(field, value):
  if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(
      isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 8 for v in value):
    _fail(field, value, "must be the two convolutions' dilation rates, e.g. (1, 2)")


def _conv_counts(field, value):
  if not isinstance(value, (tuple, list)) or not all(
      isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 8 for v in value):
    _fail(field, value, "must be convolutions per level, each 2 to 8 (empty: two each)")


def _probabilities(field, value):
  if not isinstance(value, (tuple, list)):
    _fail(field, value, "must be one probability per spatial axis (empty: augment.p_mirror)")
  for v in value:
    _PROBABILITY(field, v)


def _axes(field, value):
  if not isinstance(value, (tuple, list)) or len(set(value)) != len(value) or not all(
      isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2 for v in value):
    _fail(field, value, "must name distinct spatial axes 0, 1, 2, e.g. (2,) for in-plane "
          "rotations only")


def _patch_size(field, value):
  if not isinstance(value, (tuple, list)) or len(value) not in (2, 3):
    _fail(field, value, "must have 3 sizes (3D model) or 2 (2D model on axial slices)")
  for v in value:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
      _fail(field, value, "sizes must be positive integers")
  if math.prod(value) > MAX_VOXELS:  # also a contract's: a checkpoint cannot demand 1 TiB
    _fail(field, value, f"more than {MAX_VOXELS} voxels per patch (640^3)")


_PROBABILITY = _number(0, 1)
RULES = {
    "seed": _integer(0),
    "log_every_steps": _integer(1),
    "data.store": _string,
    "data.val_store": _string,
    "data.val_fraction": _number(0, 1, high_open=True),
    "data.split_seed": _integer(0),
    "data.val_fold": _integer(-1),
    "data.patch_size": _patch_size,
    "data.modalities": _modalities,
    "data.global_batch": _integer(0),
    "data.batch_per_device": _integer(0),
    "mesh.space": _integer(0),
    "data.foreground_fraction": _PROBABILITY,
    "data.case_order": _choice(*host_input.CASE_ORDERS),
    "data.foreground_centre": _choice(*host_input.FOREGROUND_CENTRES),
    "data.prefetch": _integer(1, 64),
    "data.placement": _choice(*device_input.PLACEMENTS),
    "model.base_filters": _integer(1),
    "model.max_filters": _integer(1),
    "model.depth": _integer(2, 8),
    "model.architecture": _choice(*model_lib.ARCHITECTURES),
    "model.norm": _choice(*blocks.NORMS),
    "model.activation": _choice(*blocks.ACTIVATIONS),
    "model.block": _choice(*blocks.BLOCKS),
    "model.downsample": _choice(*blocks.DOWNSAMPLE),
    "model.upsample": _choice(*blocks.UPSAMPLE),
    "model.decoder_block": _choice(*blocks.DECODER_BLOCKS),
    "model.dropout": _number(0, 1, high_open=True),
    "model.dropout_at": _choice(*blocks.DROPOUT_AT),
    "model.deep_supervision": _integer(0),
    "model.outputs": _choice(*unet.OUTPUTS),
    "model.bottleneck_dilation": _dilation,
    "model.encoder_convs": _conv_counts,
    "model.decoder_convs": _conv_counts,
    "model.decoder_narrows": _boolean,
    "model.vit_layers": _integer(1, 48),
    "model.vit_heads": _integer(1),
    "model.vit_dim": _integer(1),
    "model.vit_mlp_dim": _integer(1),
    "model.transunet_encoder": _choice(*transunet.ENCODERS),
    "model.dtype": _choice(*model_lib.DTYPES),
    "model.remat": _choice(*step.REMAT),
    "model.gpu_channel_multiple": _integer(0, 128),
    "loss.kind": _choice(*tasks.KINDS),
    "loss.terms": _loss_terms,
    "loss.class_weights": _weights,
    "loss.dice_smooth": _number(0),
    "loss.focal_alpha": _number(-1, 1),
    "loss.focal_gamma": _number(0),
    "augment.enabled": _boolean,
    "augment.p_rotation": _PROBABILITY,
    "augment.max_rotation_deg": _number(0, 180),
    "augment.p_scale": _PROBABILITY,
    "augment.scale_range": _range(0.01, 100),
    "augment.p_mirror": _PROBABILITY,
    "augment.p_mirror_axes": _probabilities,
    "augment.rotate_about": _axes,
    "augment.p_brightness": _PROBABILITY,
    "augment.brightness_range": _range(0, 100),
    "augment.p_contrast": _PROBABILITY,
    "augment.contrast_range": _range(0, 100),
    "augment.p_gamma": _PROBABILITY,
    "augment.gamma_range": _range(0.01, 100),
    "augment.p_noise": _PROBABILITY,
    "augment.noise_std_max": _number(0),
    "train.num_steps": _integer(0),
    "train.num_epochs": _number(0),
    "train.optimizer": _choice(*optimizer.OPTIMIZERS),
    "train.learning_rate": _number(0, low_open=True),
    "train.momentum": _number(0, 1, high_open=True),
    "train.weight_decay": _number(0),
    "train.schedule": _choice(*optimizer.SCHEDULES),
    "train.warmup_steps": _integer(0),
    "train.grad_clip_norm": _number(0),
    "train.on_nonfinite": _choice(*step.ON_NONFINITE),
    "train.early_stopping_patience": _integer(0),
    "train.device_memory_gib": _number(0),
    "eval.every_steps": _integer(1),
    "eval.overlap": _number(0, 1, high_open=True),
    "eval.sigma_scale": _number(0, low_open=True),
    "eval.sw_batch_per_device": _integer(1),
    "eval.max_cases": _integer(0),
    "eval.min_enhancing_voxels": _integer(-1),
    "checkpoint.every_steps": _integer(1),
    "checkpoint.keep": _integer(1),
    "checkpoint.keep_best": _integer(1),
}


def check_training_length(config: ml_collections.ConfigDict) -> None:
  """A training command's length is given one way. (A run's resolved config, which its
  contract records, holds both: epochs.resolve_num_steps.)"""
  if config.train.num_steps and config.train.num_epochs:
    _fail("train.num_steps", config.train.num_steps,
          f"give the run's length one way: this config trains train.num_epochs="
          f"{config.train.num_epochs}; set --config.train.num_epochs=0 to count steps")


def nearest_valid_sizes(size: int, multiple: int) -> list:
  """The multiples of `multiple` nearest to `size` (below and above; one if size is one)."""
  below = max(multiple, size // multiple * multiple)
  return sorted({below, below + multiple} if below < size else {below})


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first field that breaks a rule. (The rules that need the
  store and the devices are checked when a run starts: train/setup.py.)"""
  flat = flatten(config)
  unknown = sorted(set(flat) - set(RULES))
  if unknown:
    raise ConfigError(f"config field {unknown[0]} is not a field brats_jax reads "
                      "(a typo, or a config written for another version?)")
  for field, check in RULES.items():
    if field not in flat:
      raise ConfigError(f"config field {field} is missing (start configs from "
                        "configs/default.py)")
    check(field, flat[field])

  model, data, loss, train = config.model, config.data, config.loss, config.train
  if model.max_filters < model.base_filters:
    _fail("model.max_filters", model.max_filters,
          f"must be at least model.base_filters ({model.base_filters})")
  if model.architecture == "transunet":
    if len(data.patch_size) != 2:
      _fail("model.architecture", model.architecture, "transunet is a 2D model: give "
            "data.patch_size two sizes")
    if model.vit_dim % model.vit_heads:
      _fail("model.vit_dim", model.vit_dim, f"must split evenly over model.vit_heads "
            f"({model.vit_heads})")
    if model.outputs != "separate" or model.deep_supervision:
      _fail("model.deep_supervision", model.deep_supervision,
            "transunet has one output: set 0 (and model.outputs=separate)")
    if model.transunet_encoder == "resnet50" and any(s % 16 for s in data.patch_size):
      _fail("data.patch_size", tuple(data.patch_size), "transunet's ResNet-50 encoder "
            "reaches 1/16 of the patch: every size must be divisible by 16")
  for field, count in (("encoder_convs", model.depth), ("decoder_convs", model.depth - 1)):
    value = tuple(model[field])
    if value and len(value) != count:
      _fail(f"model.{field}", value, f"needs {count} entries for model.depth={model.depth} "
            "(or none: two each)")
    if value and any(v != 2 for v in value) and model.block == "context":
      _fail(f"model.{field}", value, "context blocks have two convolutions; use "
            "model.block=plain or residual")
  if model.architecture == "transunet" and (model.encoder_convs or model.decoder_convs
                                            or model.decoder_narrows
                                            or tuple(model.bottleneck_dilation) != (1, 1)):
    _fail("model.architecture", model.architecture, "transunet builds its own blocks: leave "
          "model.encoder_convs, decoder_convs, decoder_narrows and bottleneck_dilation at "
          "their defaults")
  if model.deep_supervision > model.depth - 2:
    _fail("model.deep_supervision", model.deep_supervision,
          f"a depth-{model.depth} U-Net has at most {model.depth - 2} lower-resolution outputs")
  multiple = 2**(model.depth - 1)
  if any(s % multiple for s in data.patch_size):
    options = [nearest_valid_sizes(s, multiple) for s in data.patch_size]
    low = tuple(o[0] for o in options)
    high = tuple(o[-1] for o in options)
    nearest = f"{low} or {high}" if low != high else f"{low}"
    _fail("data.patch_size", tuple(data.patch_size),
          f"every size must be divisible by 2^(model.depth-1) = {multiple} "
          f"(model.depth={model.depth}); nearest valid: {nearest}")
  for name, _ in loss.terms:
    if name not in losses.terms_for(loss.kind):
      hint = "; use ce" if name == "bce" else "; use bce" if name == "ce" else ""
      _fail("loss.terms", tuple(loss.terms),
            f"{name} is not a loss for loss.kind={loss.kind} (it takes "
            f"{', '.join(losses.terms_for(loss.kind))}){hint}")
  outputs = tasks.num_outputs(loss.kind)
  if loss.class_weights and len(loss.class_weights) != outputs:
    _fail("loss.class_weights", tuple(loss.class_weights),
          f"loss.kind={loss.kind} has {outputs} outputs, so {outputs} weights (or none)")
  if bool(data.global_batch) == bool(data.batch_per_device):
    _fail("data.global_batch", data.global_batch,
          "give the batch one way: data.global_batch (the recipe's batch, any device count) "
          f"or data.batch_per_device (now {data.batch_per_device}), and set the other to 0")
  if config.mesh.space > 1 and len(data.patch_size) == 2:
    _fail("mesh.space", config.mesh.space, "splits 3D patches; a 2D model's slices are "
          "small enough for one device")
  if config.mesh.space > data.patch_size[0] // multiple:
    _fail("mesh.space", config.mesh.space,
          f"splits the first patch axis ({data.patch_size[0]}), which is "
          f"{data.patch_size[0] // multiple} voxels at the U-Net's coarsest level: at most that")
  if not train.num_steps and not train.num_epochs:
    _fail("train.num_steps", train.num_steps, "give the run a length: train.num_steps or "
          "train.num_epochs")
  if train.num_steps and train.warmup_steps >= train.num_steps:
    _fail("train.warmup_steps", train.warmup_steps,
          f"must be below train.num_steps ({train.num_steps})")
  if config.augment.enabled and len(data.modalities) > 8:
    _fail("data.modalities", tuple(data.modalities),
          "augmentation draws for at most 8 channels")
  if config.augment.p_mirror_axes and len(config.augment.p_mirror_axes) != len(data.patch_size):
    _fail("augment.p_mirror_axes", tuple(config.augment.p_mirror_axes),
          f"needs one probability per patch axis ({len(data.patch_size)})")
  if data.val_store and data.val_fraction:
    _fail("data.val_fraction", data.val_fraction,
          f"validation comes from data.val_store ({data.val_store}); set one of the two")
  if train.early_stopping_patience and not (data.val_store or data.val_fraction
                                            or data.val_fold >= 0):
    _fail("train.early_stopping_patience", train.early_stopping_patience,
          "needs validation cases (data.val_fold, data.val_fraction or data.val_store)")
