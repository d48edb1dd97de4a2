"""Seed 004: the 3D U-Net on 160x160x16 patches of the Medical Segmentation Decathlon's
brain tumour task (Task01_BrainTumour, 4D NIfTI), as a course project built it.

  brats-jax-prepare --input=/data/Task01_BrainTumour --output=/data/msd
  brats-jax-train --config=configs/seeds/msd_patches.py --workdir=/runs/msd \
      --config.data.store=/data/msd

As published: patches of 160x160x16 from the 240x240x155x4 volumes, each channel
standardised to mean 0 and standard deviation 1, a depth-4 U-Net of two 3x3x3 ReLU
convolutions per level, max-pooling down, 2x2x2 up-convolutions, three sigmoid outputs
(edema, non-enhancing, enhancing: the Decathlon's labels) trained with a soft Dice loss;
sensitivity and specificity reported (brats-jax-evaluate prints both, with Dice and HD95).
Deliberately different: the Decathlon's labels are read as what they mean (1 edema, 2
non-enhancing, 3 enhancing; a popular tutorial took 2 for enhancing); standardisation is
over brain voxels only; instance norm after each convolution (the project has none), which
trains far more stably.
"""

import ml_collections

from brats_jax.config.io import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "../default.py")
  # Two samples per data-parallel group: the batch grows with the devices.
  config.data.global_batch = 0
  config.data.batch_per_device = 2
  config.data.patch_size = (160, 160, 16)
  config.model.base_filters = 32
  config.model.max_filters = 256
  config.model.depth = 4
  config.model.activation = "relu"
  config.model.downsample = "maxpool"
  config.model.deep_supervision = 0
  config.loss.kind = "labels"
  config.loss.terms = (("dice", 1.0),)
  config.train.optimizer = "adamw"
  config.train.learning_rate = 1e-4
  config.train.weight_decay = 0.0
  config.train.num_steps = 20_000
  return config
