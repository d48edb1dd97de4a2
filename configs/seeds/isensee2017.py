"""Seed 000: the Keras 3D U-Net of a BraTS 2018 blog project, after Isensee et al. 2017
("Brain tumor segmentation and radiomics survival prediction: contribution to the BRATS 2017
challenge", arXiv:1802.10508), built from the 3DUnetCNN repository's isensee2017 model.

  brats-jax-prepare --input=/data/MICCAI_BraTS_2018_Data_Training --output=/data/brats2018
  brats-jax-train --config=configs/seeds/isensee2017.py --workdir=/runs/isensee2017 \
      --config.data.store=/data/brats2018

The blog states the network's origin, the data, the split and the scores (whole-tumour Dice
0.78, "weighted" Dice 0.67: brats-jax-evaluate's mean over the three labels), not its
training settings: those below that the blog does not state come from the 3DUnetCNN
repository's train_isensee2017.py, which the blog's code was modified from.

The seed's recipe, row by row (tests/config/test_seed_recipes.py checks every "here" cell):

  what         | the seed                                | here
  parameters   | not stated (ours: 8.3 M)                | parameters~8_268_345
  network      | context modules (pre-activation         | model.block='context'
               | residual blocks, dropout 0.3 between    | model.dropout=0.3
               | their convolutions) joined by stride-2  | model.dropout_at='blocks'
               | convolutions, filters 16-256            | model.base_filters=16
               |                                         | model.max_filters=256
               |                                         | model.depth=5
               | instance norm, leaky ReLU               | model.norm='instance'
               |                                         | model.activation='leaky_relu'
               | up-sampling modules: nearest x2, then a | model.upsample='nearest_conv'
               | 3x3x3 convolution to the level's width  |
               | localisation modules: a 3x3x3 then a    | model.decoder_block='localisation'
               | 1x1x1 convolution                       |
               | segmentation layers of three            | model.outputs='summed'
               | resolutions, up-sampled and summed      | model.deep_supervision=2
  task         | one sigmoid per label (edema,           | loss.kind='labels'
               | enhancing, necrosis)                    |
  loss         | soft Dice averaged over the labels      | loss.terms=(('dice', 1.0),)
               | (smoothing 1e-5)                        | loss.dice_smooth=1e-05
  optimiser    | Adam, learning rate 5e-4, no clipping   | train.optimizer='adamw'
               |                                         | train.learning_rate=0.0005
               |                                         | train.weight_decay=0.0
               |                                         | train.schedule='constant'
               |                                         | train.grad_clip_norm=0.0
  batch        | 1                                       | data.global_batch=1
  epochs       | 500 (train_isensee2017.py)              | train.num_epochs=500
               |                                         | train.num_steps=0
  augmentation | none named                              | augment.enabled=False
  split        | 15% of the cases held out               | data.val_fraction=0.15

Deliberately different: 128^3 patches (the paper's size) rather than whole 240x240x155
volumes, which do not fit a 2017 GPU at these widths either; a constant learning rate (the
repository halves it when the validation loss stalls for 10 epochs and stops after 50);
images z-scored over brain voxels (the blog found its data already normalised); bf16
convolutions on accelerators. The localisation module's convolutions both have the level's
width, as the 3DUnetCNN repository builds them (the paper halves the width in the 1x1x1).
"""

import ml_collections

from brats_jax.config.io import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "../default.py")
  config.data.global_batch = 1
  config.data.batch_per_device = 0
  config.data.patch_size = (128, 128, 128)
  config.data.val_fraction = 0.15
  config.model.block = "context"
  config.model.base_filters = 16
  config.model.max_filters = 256
  config.model.depth = 5
  config.model.upsample = "nearest_conv"
  config.model.decoder_block = "localisation"
  config.model.dropout = 0.3
  config.model.dropout_at = "blocks"
  config.model.outputs = "summed"
  config.model.deep_supervision = 2
  config.loss.kind = "labels"
  config.loss.terms = (("dice", 1.0),)
  config.loss.dice_smooth = 1e-5
  config.train.optimizer = "adamw"
  config.train.learning_rate = 5e-4
  config.train.weight_decay = 0.0
  config.train.schedule = "constant"
  config.train.grad_clip_norm = 0.0
  config.train.num_steps = 0
  config.train.num_epochs = 500
  config.augment.enabled = False
  return config
