"""Every validate() rule refuses a bad value with one line naming the field."""

import glob
import os
import subprocess
import sys

import ml_collections
import pytest

from brats_jax import config_checks, config_io
from brats_jax.errors import ConfigError

from conftest import ROOT

# One bad value per field the code reads (a type or range the code cannot run with).
BAD_VALUES = {
    "seed": -1, "log_every_steps": 0, "data.store": 3, "data.val_fold": -2,
    "data.patch_size": (16, 16, 16, 16), "data.batch_per_device": 0,
    "data.foreground_fraction": 1.5, "data.prefetch": 0, "data.placement": "gpu",
    "data.modalities": ("flair", "flair"), "data.val_store": None, "data.val_fraction": 1.0,
    "data.split_seed": -1,
    "model.base_filters": 0, "model.max_filters": 0, "model.depth": 1, "model.norm": "layer",
    "model.activation": "tanh", "model.block": "dense", "model.dropout": 1.0,
    "model.architecture": "vit", "model.downsample": "avgpool", "model.upsample": "cubic",
    "model.dropout_at": "input", "model.outputs": "averaged",
    "model.bottleneck_dilation": (2,), "model.vit_layers": 0, "model.vit_heads": 0,
    "model.vit_dim": 0, "model.vit_mlp_dim": 0,
    "model.deep_supervision": -1, "model.dtype": "float64",
    "model.remat": "all",
    "loss.kind": "dice", "loss.terms": (("bogus", 1.0),), "loss.class_weights": (-1.0,),
    "loss.dice_smooth": -1.0,
    "loss.focal_alpha": 2.0, "loss.focal_gamma": -1.0, "augment.enabled": "true",
    "augment.p_rotation": -0.1, "augment.max_rotation_deg": 360.0, "augment.p_scale": 2.0,
    "augment.scale_range": (1.4, 0.7), "augment.p_mirror": 1.1,
    "augment.p_brightness": -1.0, "augment.brightness_range": (0.75,),
    "augment.p_contrast": 7.0, "augment.contrast_range": (-1.0, 1.0), "augment.p_gamma": 1.01,
    "augment.gamma_range": (0.0, 1.5), "augment.p_noise": float("nan"),
    "augment.noise_std_max": -0.1, "train.num_steps": 0, "train.optimizer": "lamb",
    "train.learning_rate": 0.0, "train.momentum": 1.0, "train.weight_decay": -1e-5,
    "train.schedule": "linear", "train.warmup_steps": -1, "train.grad_clip_norm": 0.0,
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
  assert set(BAD_VALUES) == set(config_checks.RULES)
  assert set(config_checks._flatten(_default())) == set(config_checks.RULES)


@pytest.mark.parametrize("field", sorted(BAD_VALUES))
def test_a_bad_value_is_refused_naming_the_field(field):
  with pytest.raises(ConfigError) as error:
    config_checks.validate(_with(_default(), field, BAD_VALUES[field]))
  assert str(error.value).startswith(f"config field {field}=") and "\n" not in str(error.value)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))
                                         + glob.glob(os.path.join(ROOT, "configs", "seeds",
                                                                  "*.py"))))
def test_every_shipped_config_is_valid(path):
  config_checks.validate(config_io.load_config_file(path))


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
    config_checks.validate(_with(_default(), field, value))


def test_early_stopping_needs_validation_and_one_source_of_it():
  no_validation = _with(_with(_default(), "data.val_fold", -1),
                        "train.early_stopping_patience", 3)
  with pytest.raises(ConfigError, match="early_stopping_patience=3: needs validation cases"):
    config_checks.validate(no_validation)
  config_checks.validate(_with(no_validation, "data.val_fraction", 0.2))
  both = _with(_with(_default(), "data.val_store", "/data/val"), "data.val_fraction", 0.2)
  with pytest.raises(ConfigError, match="val_fraction=0.2: validation comes from "
                                        "data.val_store"):
    config_checks.validate(both)


@pytest.mark.parametrize("kind,terms,message", [
    ("softmax", (("dice", 1.0), ("bce", 1.0)), "bce is not a loss for loss.kind=softmax .*use ce"),
    ("region", (("ce", 1.0),), "ce is not a loss for loss.kind=region .*use bce"),
    ("binary", (("iou", 0.0),), "needs a term with a weight above 0"),
    ("region", (("dice", 1.0), ("iou",)), "must be \\(name, weight\\) pairs"),
    ("labels", (("none", 1.0),), "unknown loss 'none'; known: dice, iou, bce, ce, focal")])
def test_loss_terms_must_suit_the_task(kind, terms, message):
  config = _with(_with(_default(), "loss.kind", kind), "loss.terms", terms)
  with pytest.raises(ConfigError, match=message):
    config_checks.validate(config)
  for kind, terms in (("softmax", (("focal", 1.0), ("iou", 0.5))),
                      ("binary", (("dice", 1.0), ("focal", 2.0)))):
    config_checks.validate(_with(_with(_default(), "loss.kind", kind), "loss.terms", terms))


def test_class_weights_and_binary_stores():
  config = _with(_default(), "loss.class_weights", (1.0, 2.0))
  with pytest.raises(ConfigError, match="loss.kind=region has 3 outputs, so 3 weights"):
    config_checks.validate(config)
  config_checks.validate(_with(_default(), "loss.class_weights", (1.0, 2.0, 4.0)))
  with pytest.raises(ConfigError, match="holds binary masks .* loss.kind=binary"):
    config_checks.validate(_default(), binary_labels=True)
  config_checks.validate(_with(_default(), "loss.kind", "binary"), binary_labels=True)


def test_rules_against_the_store_and_the_devices():
  config = _default()
  with pytest.raises(ConfigError, match="data.modalities=.*: the store .* has no t1ce, t2 "
                                        r"\(it holds flair, t1\)"):
    config_checks.validate(config, channels=("flair", "t1"))
  with pytest.raises(ConfigError, match="data.val_fold=5: the store .* has folds 0-4"):
    config_checks.validate(_with(config, "data.val_fold", 5), num_folds=5)
  with pytest.raises(ConfigError, match=r"global batch \(2 x 3 devices\) must split evenly "
                                        "over 4 processes"):
    config_checks.validate(config, num_devices=3, num_processes=4)
  config_checks.validate(config, channels=("t2", "t1ce", "t1", "flair"), num_folds=5,
                         num_devices=4, num_processes=2)


def test_unknown_and_missing_fields():
  plain = _default().to_dict()
  plain["model"]["base_filter"] = 16  # a typo in a config file
  with pytest.raises(ConfigError, match="model.base_filter is not a field brats_jax reads"):
    config_checks.validate(ml_collections.ConfigDict(plain))
  plain = _default().to_dict()
  del plain["train"]["schedule"]
  with pytest.raises(ConfigError, match="train.schedule is missing"):
    config_checks.validate(ml_collections.ConfigDict(plain))


def test_the_training_command_reports_one_line_and_exit_2(tmp_path):
  workdir = str(tmp_path / "run")
  result = subprocess.run([sys.executable, "-m", "brats_jax.main",
                           f"--config={ROOT}/configs/tiny.py", f"--workdir={workdir}",
                           "--config.loss.kind=bogus"],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr == ("error: config field loss.kind='bogus': must be one of region, "
                           "softmax, labels, binary\n")
  assert not os.path.exists(workdir)
