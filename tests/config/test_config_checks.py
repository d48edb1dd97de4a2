"""Every check_config rule refuses a bad value with one line naming the field."""

import glob
import os
import re
import subprocess
import sys

import jax
import ml_collections
import pytest

from brats_jax import sharding
from brats_jax.config import checks
from brats_jax.config import io as config_io
from brats_jax.errors import ConfigError
from brats_jax.model import blocks
from brats_jax.train import device_input, optimizer, setup
from brats_jax.workdir import contract

from conftest import ROOT

# One bad value per field the code reads (a type or range the code cannot run with).
BAD_VALUES = {
    "seed": -1, "log_every_steps": 0, "data.store": 3, "data.val_fold": -2,
    "data.patch_size": (16, 16, 16, 16), "data.batch_per_device": -1,
    "data.global_batch": -1, "mesh.space": -1,
    "data.foreground_fraction": 1.5, "data.prefetch": 0, "data.placement": "gpu",
    "data.case_order": "sorted", "data.foreground_centre": "middle",
    "data.modalities": ("flair", "flair"), "data.val_store": None, "data.val_fraction": 1.0,
    "data.split_seed": -1,
    "model.base_filters": 0, "model.max_filters": 0, "model.depth": 1, "model.norm": "layer",
    "model.activation": "tanh", "model.block": "dense", "model.dropout": 1.0,
    "model.architecture": "vit", "model.downsample": "avgpool", "model.upsample": "cubic",
    "model.decoder_block": "dense",
    "model.dropout_at": "input", "model.outputs": "averaged",
    "model.bottleneck_dilation": (2,), "model.vit_layers": 0, "model.vit_heads": 0,
    "model.encoder_convs": (2, 1), "model.decoder_convs": [9],
    "model.decoder_narrows": 1, "augment.rotate_about": (3,),
    "augment.p_mirror_axes": (0.5, 2.0, 0.5),
    "model.vit_dim": 0, "model.vit_mlp_dim": 0, "model.transunet_encoder": "resnet101",
    "model.deep_supervision": -1, "model.dtype": "float64",
    "model.remat": "all", "model.gpu_channel_multiple": -8,
    "loss.kind": "dice", "loss.terms": (("bogus", 1.0),), "loss.class_weights": (-1.0,),
    "loss.dice_smooth": -1.0,
    "loss.focal_alpha": -2.0, "loss.focal_gamma": -1.0, "augment.enabled": "true",
    "augment.p_rotation": -0.1, "augment.max_rotation_deg": 360.0, "augment.p_scale": 2.0,
    "augment.scale_range": (1.4, 0.7), "augment.p_mirror": 1.1,
    "augment.p_brightness": -1.0, "augment.brightness_range": (0.75,),
    "augment.p_contrast": 7.0, "augment.contrast_range": (-1.0, 1.0), "augment.p_gamma": 1.01,
    "augment.gamma_range": (0.0, 1.5), "augment.p_noise": float("nan"),
    "augment.noise_std_max": -0.1, "train.num_steps": -1, "train.num_epochs": -1,
    "train.optimizer": "lamb",
    "train.learning_rate": 0.0, "train.momentum": 1.0, "train.weight_decay": -1e-5,
    "train.schedule": "linear", "train.warmup_steps": -1, "train.grad_clip_norm": -1.0,
    "train.on_nonfinite": "halt", "train.device_memory_gib": -1.0,
    "train.early_stopping_patience": -1, "eval.every_steps": 0,
    "eval.overlap": 1.0, "eval.sigma_scale": 0.0, "eval.sw_batch_per_device": 0,
    "eval.max_cases": -1, "eval.min_enhancing_voxels": -2, "checkpoint.every_steps": 0,
    "checkpoint.keep": 0, "checkpoint.keep_best": 0,
}


def _default():
  return config_io.load_config_file(os.path.join(ROOT, "configs", "default.py"))


def _with(config, field, value):
  """A copy of config with field set to value, whatever its type (as a config file could)."""
  plain = config.to_dict()
  *sections, name = field.split(".")
  target = plain
  for section in sections:
    target = target[section]
  target[name] = value
  return ml_collections.ConfigDict(plain, type_safe=False)


def test_every_field_has_a_rule_and_every_rule_a_test():
  assert set(BAD_VALUES) == set(checks.RULES)
  assert set(contract.flatten(_default())) == set(checks.RULES)


@pytest.mark.parametrize("field", sorted(BAD_VALUES))
def test_a_bad_value_is_refused_naming_the_field(field):
  with pytest.raises(ConfigError) as error:
    checks.check_config(_with(_default(), field, BAD_VALUES[field]))
  assert str(error.value).startswith(f"config field {field}=") and "\n" not in str(error.value)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))
                                         + glob.glob(os.path.join(ROOT, "configs", "seeds",
                                                                  "*.py"))))
def test_every_shipped_config_is_valid(path):
  config = config_io.load_config_file(path)
  checks.check_config(config)
  checks.check_training_length(config)


@pytest.mark.parametrize("field,value,message", [
    ("model.max_filters", 16, "at least model.base_filters"),
    ("model.deep_supervision", 5, "at most 4 lower-resolution outputs"),
    ("data.patch_size", (128, 128, 100),
     r"divisible by 2\^\(model.depth-1\) = 32 .* nearest valid: \(128, 128, 96\) or "
     r"\(128, 128, 128\)"),
    ("data.patch_size", (20, 20), r"nearest valid: \(32, 32\)$"),
    ("train.warmup_steps", 250_000, "below train.num_steps"),
    ("data.modalities", tuple(f"c{i}" for i in range(9)), "at most 8 channels"),
])
def test_rules_between_fields(field, value, message):
  with pytest.raises(ConfigError, match=message):
    checks.check_config(_with(_default(), field, value))


def test_early_stopping_needs_validation_and_one_source_of_it():
  no_validation = _with(_with(_default(), "data.val_fold", -1),
                        "train.early_stopping_patience", 3)
  with pytest.raises(ConfigError, match="early_stopping_patience=3: needs validation cases"):
    checks.check_config(no_validation)
  checks.check_config(_with(no_validation, "data.val_fraction", 0.2))
  both = _with(_with(_default(), "data.val_store", "/data/val"), "data.val_fraction", 0.2)
  with pytest.raises(ConfigError, match="val_fraction=0.2: validation comes from "
                                        "data.val_store"):
    checks.check_config(both)


@pytest.mark.parametrize("kind,terms,message", [
    ("softmax", (("dice", 1.0), ("bce", 1.0)), "bce is not a loss for loss.kind=softmax .*use ce"),
    ("region", (("ce", 1.0),), "ce is not a loss for loss.kind=region .*use bce"),
    ("binary", (("iou", 0.0),), "needs a term with a weight above 0"),
    ("region", (("dice", 1.0), ("iou",)), "must be \\(name, weight\\) pairs"),
    ("labels", (("none", 1.0),), "unknown loss 'none'; known: dice, iou, bce, focal, ce")])
def test_loss_terms_must_suit_the_task(kind, terms, message):
  config = _with(_with(_default(), "loss.kind", kind), "loss.terms", terms)
  with pytest.raises(ConfigError, match=message):
    checks.check_config(config)
  for kind, terms in (("softmax", (("focal", 1.0), ("iou", 0.5))),
                      ("binary", (("dice", 1.0), ("focal", 2.0)))):
    checks.check_config(_with(_with(_default(), "loss.kind", kind), "loss.terms", terms))


# What a store of the default recipe and a 4-device, 2-process machine give the start of a run.
_ENVIRONMENT = {"channels": ("t2", "t1ce", "t1", "flair"), "num_folds": 5,
                "binary_labels": False}


def _check_against(config, **changes):
  setup.check_against_store(config, **{**_ENVIRONMENT, **changes})


def test_class_weights_and_binary_stores():
  config = _with(_default(), "loss.class_weights", (1.0, 2.0))
  with pytest.raises(ConfigError, match="loss.kind=region has 3 outputs, so 3 weights"):
    checks.check_config(config)
  checks.check_config(_with(_default(), "loss.class_weights", (1.0, 2.0, 4.0)))
  with pytest.raises(ConfigError, match="holds binary masks .* loss.kind=binary"):
    _check_against(_default(), binary_labels=True)
  _check_against(_with(_default(), "loss.kind", "binary"), binary_labels=True)


def test_rules_against_the_store_and_the_devices():
  config = _default()
  with pytest.raises(ConfigError, match="data.modalities=.*: the store .* has no t1ce, t2 "
                                        r"\(it holds flair, t1\)"):
    _check_against(config, channels=("flair", "t1"))
  with pytest.raises(ConfigError, match="data.val_fold=5: the store .* has folds 0-4"):
    _check_against(_with(config, "data.val_fold", 5), num_folds=5)
  _check_against(config)


def test_the_global_batch_against_the_devices():
  """data.global_batch is the same recipe on any device count: with fewer samples than
  devices, each sample is split over mesh.space devices (auto: the fewest that divide)."""
  config = _default()
  assert (config.data.global_batch, config.data.batch_per_device, config.mesh.space) == (8, 0, 0)
  devices = jax.devices()
  for count, space in ((1, 1), (2, 1), (4, 1), (8, 1)):
    assert sharding.resolve_space(config.data, config.mesh, count) == space
  small = _with(config, "data.global_batch", 2)
  assert sharding.resolve_space(small.data, small.mesh, 8) == 4
  mesh = sharding.make_mesh(devices, 4)
  assert dict(mesh.shape) == {"data": 2, "space": 4}
  assert sharding.global_batch(small.data, mesh) == 2
  with pytest.raises(ConfigError, match=r"data.global_batch=2: does not split over 8 "
                                        r"data-parallel groups .* mesh.space=4"):
    sharding.global_batch(small.data, sharding.make_mesh(devices, 1))
  with pytest.raises(ConfigError, match="mesh.space=3: must divide the 8 devices"):
    sharding.make_mesh(devices, 3)
  per_device = _with(_with(config, "data.global_batch", 0), "data.batch_per_device", 2)
  assert sharding.global_batch(per_device.data, mesh) == 4  # 2 per data-parallel group
  with pytest.raises(ConfigError, match="data.global_batch=8: give the batch one way"):
    checks.check_config(_with(config, "data.batch_per_device", 2))
  with pytest.raises(ConfigError, match="mesh.space=16: splits the first patch axis"):
    checks.check_config(_with(config, "mesh.space", 16))


def test_unknown_and_missing_fields():
  plain = _default().to_dict()
  plain["model"]["base_filter"] = 16  # a typo in a config file
  with pytest.raises(ConfigError, match="model.base_filter is not a field brats_jax reads"):
    checks.check_config(ml_collections.ConfigDict(plain))
  plain = _default().to_dict()
  del plain["train"]["schedule"]
  with pytest.raises(ConfigError, match="train.schedule is missing"):
    checks.check_config(ml_collections.ConfigDict(plain))


def test_the_training_command_reports_one_line_and_exit_2(tmp_path):
  workdir = str(tmp_path / "run")
  result = subprocess.run([sys.executable, "-m", "brats_jax.cli.train",
                           f"--config={ROOT}/configs/tiny.py", f"--workdir={workdir}",
                           "--config.loss.kind=bogus"],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr == ("error: config field loss.kind='bogus': must be one of region, "
                           "softmax, labels, binary, labels2015\n")
  assert not os.path.exists(workdir)


@pytest.mark.parametrize("override,message", [
    ("--config.train.num_step=3", "config field train.num_step is not a field of .*tiny.py; "
                                  "did you mean train.num_steps\\?"),
    ("--config.trian.num_steps=3", "config field trian.num_steps is not a field of .*tiny.py; "
                                   "did you mean train.num_steps\\?"),
    ("--config.model.no_such_field=3", "config field model.no_such_field is not a field of "
                                       ".*tiny.py$"),
    ("--config.train.num_steps=abc", "command line: flag --config.train.num_steps=abc: "
                                     "invalid literal .*"),
])
def test_a_command_line_config_mistake_is_one_line_and_exit_2(tmp_path, override, message):
  workdir = str(tmp_path / "run")
  result = subprocess.run([sys.executable, "-m", "brats_jax.cli.train",
                           f"--config={ROOT}/configs/tiny.py", f"--workdir={workdir}", override],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr
  lines = result.stderr.splitlines()
  assert len(lines) == 1 and re.fullmatch("error: " + message, lines[0]), result.stderr
  assert not os.path.exists(workdir)


def test_every_choice_is_the_implementing_modules_own():
  """A name a module adds (a norm, a schedule, a placement) is admitted without restating it."""
  for field, names in (("model.norm", blocks.NORMS), ("train.schedule", optimizer.SCHEDULES),
                       ("data.placement", device_input.PLACEMENTS),
                       ("model.activation", tuple(blocks.ACTIVATIONS))):
    for name in names:
      checks.check_config(_with(_default(), field, name))
    with pytest.raises(ConfigError, match=f"config field {field}='nope': must be one of "
                                          + ", ".join(names)):
      checks.check_config(_with(_default(), field, "nope"))
