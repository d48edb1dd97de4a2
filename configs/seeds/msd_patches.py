"""Seed 004: the 3D U-Net on 160x160x16 patches of the Medical Segmentation Decathlon's
brain tumour task (Task01_BrainTumour, 4D NIfTI), as a course project built it.

  brats-jax-prepare --input=/data/Task01_BrainTumour --output=/data/msd
  brats-jax-train --config=configs/seeds/msd_patches.py --workdir=/runs/msd \
      --config.data.store=/data/msd

The data: patches of 160x160x16 from the 240x240x155x4 volumes, each channel standardised to
mean 0 and standard deviation 1; three sigmoid outputs, edema, non-enhancing and enhancing
(the Decathlon's labels, read as what they mean: 1 edema, 2 non-enhancing, 3 enhancing; a
popular tutorial took 2 for enhancing); sensitivity and specificity reported
(brats-jax-evaluate prints both, with Dice and HD95).

The seed's recipe, row by row (tests/config/test_seed_recipes.py checks every "here" cell):

  what         | the seed                                | here
  parameters   | not stated (ours: 5.6 M)                | parameters~5_603_939
  network      | depth 4, two 3x3x3 ReLU convolutions    | model.depth=4; model.activation='relu'
               | per level, no normalisation             | model.norm='none'
               | 2x2x2 max-pooling down, 2x2x2           | model.downsample='maxpool'
               | up-convolutions                         | model.upsample='depth_to_space'
               | one output of three sigmoids            | model.deep_supervision=0
               |                                         | loss.kind='labels'
  loss         | soft Dice                               | loss.terms=(('dice', 1.0),)
  optimiser    | Adam, no clipping (learning rate not    | train.optimizer='adamw'
               | stated: 1e-4 here)                      | train.learning_rate=0.0001
               |                                         | train.weight_decay=0.0
               |                                         | train.schedule='constant'
               |                                         | train.grad_clip_norm=0.0
  batch        | patches of 160x160x16                   | data.patch_size=(160, 160, 16)
  augmentation | none                                    | augment.enabled=False

Not stated by the seed, so ours: filters 32-256, two patches per data-parallel group (the
batch grows with the devices), 20,000 steps, fold 0 of five for validation. Deliberately
different: standardisation over brain voxels only; bf16 convolutions on accelerators.
"""

import ml_collections

from brats_jax.config.io import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "../default.py")
  config.data.global_batch = 0
  config.data.batch_per_device = 2
  config.data.patch_size = (160, 160, 16)
  config.model.base_filters = 32
  config.model.max_filters = 256
  config.model.depth = 4
  config.model.norm = "none"
  config.model.activation = "relu"
  config.model.downsample = "maxpool"
  config.model.deep_supervision = 0
  config.loss.kind = "labels"
  config.loss.terms = (("dice", 1.0),)
  config.train.optimizer = "adamw"
  config.train.learning_rate = 1e-4
  config.train.weight_decay = 0.0
  config.train.schedule = "constant"
  config.train.grad_clip_norm = 0.0
  config.train.num_steps = 20_000
  config.augment.enabled = False
  return config
