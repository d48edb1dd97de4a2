"""Seed 000: the Keras 3D U-Net of a BraTS 2018 blog project, after Isensee et al. 2017
("Brain tumor segmentation and radiomics survival prediction: contribution to the BRATS 2017
challenge", arXiv:1802.10508).

  brats-jax-prepare --input=/data/MICCAI_BraTS_2018_Data_Training --output=/data/brats2018
  brats-jax-train --config=configs/seeds/isensee2017.py --workdir=/runs/isensee2017 \
      --config.data.store=/data/brats2018

As published: context modules (pre-activation residual blocks with dropout 0.3 between their
two convolutions) joined by stride-2 convolutions, filters 16-32-64-128-256, instance norm,
leaky ReLU, nearest up-sampling, and segmentation layers of three resolutions up-sampled and
summed; one independent sigmoid per label (edema, enhancing, necrosis: the blog's 3-channel
masks) trained with a soft Dice loss; Adam 5e-4.
Deliberately different: the localisation modules are two 3x3x3 convolutions (the paper has a
3x3x3 then a 1x1x1); augmentation runs on the accelerator with nnU-Net's ranges; images are
z-scored over brain voxels (the blog found its data already normalised); 128^3 patches as
in the paper, rather than the blog's whole 240x240x155 volumes.
"""

import ml_collections

from brats_jax.config.io import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "../default.py")
  # Two samples per data-parallel group: the batch grows with the devices.
  config.data.global_batch = 0
  config.data.batch_per_device = 2
  config.data.patch_size = (128, 128, 128)
  config.model.block = "context"
  config.model.base_filters = 16
  config.model.max_filters = 256
  config.model.depth = 5
  config.model.upsample = "nearest"
  config.model.dropout = 0.3
  config.model.dropout_at = "blocks"
  config.model.outputs = "summed"
  config.model.deep_supervision = 2
  config.loss.kind = "labels"
  config.loss.terms = (("dice", 1.0),)
  config.train.optimizer = "adamw"
  config.train.learning_rate = 5e-4
  config.train.weight_decay = 1e-5
  config.train.schedule = "poly"
  config.train.num_steps = 50_000
  return config
