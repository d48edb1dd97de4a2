"""A tiny config for tests: a 3-level U-Net on 16^3 patches, float32, a few steps."""

import ml_collections

from brats_jax.config.io import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "default.py")
  config.data.patch_size = (16, 16, 16)
  config.data.batch_per_device = 1
  config.data.global_batch = 0
  config.data.prefetch = 2
  config.model.base_filters = 4
  config.model.max_filters = 16
  config.model.depth = 3
  config.model.deep_supervision = 1
  config.model.dtype = "float32"
  config.train.num_steps = 8
  config.train.optimizer = "adamw"
  config.train.learning_rate = 3e-3
  config.train.weight_decay = 0.0
  config.train.schedule = "constant"
  config.eval.every_steps = 4
  config.eval.sw_batch_per_device = 1
  config.checkpoint.every_steps = 2
  config.log_every_steps = 2
  return config
