"""Seed 002 (second model): Henry et al. 2020, "Brain tumor segmentation with self-ensembled,
deeply-supervised 3D U-net neural networks: a BraTS 2020 challenge solution"
(arXiv:2011.01045), as the same course project ran it on BraTS 2015.

  brats-jax-prepare --input=/data/BRATS2015_Training --output=/data/brats2015 \
      --crop=centre --crop_shape=144,144,155 --resize_shape=144,144,96 \
      --normalisation=divide --divide_by=255
  brats-jax-train --config=configs/seeds/henry2020_dilated.py --workdir=/runs/henry \
      --config.data.store=/data/brats2015

As published: a 4-level 3D U-Net (filters 48-96-192-384) whose bottleneck replaces pooling
with dilated convolutions (rate 2, both convolutions of the deepest stage), group norm, ReLU,
and the output of the last layer only (as the project used it); the project's best loss,
focal (with Dice here), and data as in kayalibay2017.py.
Deliberately different: one model, not the paper's self-ensemble of several; region-based
WT/TC/ET sigmoids; patches of 144x144x96.
"""

import ml_collections

from brats_jax.config.io import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "../default.py")
  config.data.patch_size = (144, 144, 96)
  config.data.batch_per_device = 1
  config.data.global_batch = 0
  config.model.base_filters = 48
  config.model.max_filters = 384
  config.model.depth = 4
  config.model.norm = "group"
  config.model.activation = "relu"
  config.model.bottleneck_dilation = (2, 2)
  config.model.deep_supervision = 0
  config.loss.kind = "region"
  config.loss.terms = (("focal", 1.0), ("dice", 1.0))
  config.train.optimizer = "adamw"
  config.train.learning_rate = 1e-4
  config.train.weight_decay = 1e-5
  config.train.num_steps = 20_000
  return config
