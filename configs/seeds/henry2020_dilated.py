"""Seed 002 (second model): Henry et al. 2020, "Brain tumor segmentation with self-ensembled,
deeply-supervised 3D U-net neural networks: a BraTS 2020 challenge solution"
(arXiv:2011.01045), the EquiUnet as a course project replicated it on BraTS 2015 and trained
its best model: focal loss on FLAIR alone, tumour against background.

  brats-jax-prepare --input=/data/BRATS2015_Training --output=/data/brats2015 \
      --crop=centre --crop_shape=144,144,155 --resize_shape=144,144,96 \
      --normalisation=divide --divide_by=255
  brats-jax-prepare --input=/data/BRATS2015_validation_half --output=/data/brats2015_val \
      --crop=centre --crop_shape=144,144,155 --resize_shape=144,144,96 \
      --normalisation=divide --divide_by=255
  brats-jax-train --config=configs/seeds/henry2020_dilated.py --workdir=/runs/henry \
      --config.data.store=/data/brats2015 --config.data.val_store=/data/brats2015_val

The project split BraTS 2015's testing folder in two halves of 27 cases, validation and test:
prepare the validation half as its own store (above). Its loss x modality table (Fig. 5-6)
is brats-jax-sweep's example (docs/inference.md).

The project's multi-class extension (one output per BraTS 2015 class: necrosis, edema,
non-enhancing, enhancing) is --config.loss.kind=labels2015 with all four modalities
(--config.data.modalities="('flair', 't1', 't1ce', 't2')").

The seed's recipe, row by row (tests/config/test_seed_recipes.py checks every "here" cell):

  what         | the seed                                | here
  parameters   | 23M+ (EquiUnet, width 48)               | parameters=23_000_000
  network      | 4 stages 48-96-192-384, two 3x3x3       | model.depth=4; model.base_filters=48
               | convolutions each, group norm, ReLU     | model.max_filters=384
               |                                         | model.norm='group'
               |                                         | model.activation='relu'
               | max-pooling down, trilinear up          | model.downsample='maxpool'
               |                                         | model.upsample='linear'
               | a dilated block (rate 2) after stage 4, | model.bottleneck_dilation=(2, 2)
               | fused with stage 4 by a convolution     |
               | each decoder block ends at the next     | model.decoder_narrows=True
               | stage's width                           |
               | the last layer's output only            | model.deep_supervision=0
  task         | tumour against background, FLAIR        | loss.kind='binary'
               |                                         | data.modalities=('flair',)
  loss         | binary focal cross-entropy (Keras:      | loss.terms=(('focal', 1.0),)
               | gamma 2, no class balancing)            | loss.focal_gamma=2.0
               |                                         | loss.focal_alpha=-1.0
  optimiser    | Adam, learning rate 1e-4, no clipping   | train.optimizer='adamw'
               |                                         | train.learning_rate=0.0001
               |                                         | train.weight_decay=0.0
               |                                         | train.schedule='constant'
               |                                         | train.grad_clip_norm=0.0
  batch        | 1 volume of 96x144x144                  | data.global_batch=1
               |                                         | data.patch_size=(144, 144, 96)
  epochs       | 5 (the modality runs; losses: 2)        | train.num_epochs=5; train.num_steps=0
  augmentation | none ("to not make training             | augment.enabled=False
               | time-consuming")                        |
  split        | a separate validation half              | data.val_fold=-1

Deliberately different: one model, not the paper's self-ensemble; bf16 convolutions on
accelerators; trilinear up-sampling without align_corners (jax.image.resize); group norm of
8 groups.
"""

import ml_collections

from brats_jax.config.io import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "../default.py")
  config.data.patch_size = (144, 144, 96)
  config.data.modalities = ("flair",)
  config.data.global_batch = 1
  config.data.batch_per_device = 0
  config.data.val_fold = -1
  config.model.base_filters = 48
  config.model.max_filters = 384
  config.model.depth = 4
  config.model.norm = "group"
  config.model.activation = "relu"
  config.model.downsample = "maxpool"
  config.model.upsample = "linear"
  config.model.bottleneck_dilation = (2, 2)
  config.model.decoder_narrows = True
  config.model.deep_supervision = 0
  config.loss.kind = "binary"
  config.loss.terms = (("focal", 1.0),)
  config.loss.focal_gamma = 2.0
  config.loss.focal_alpha = -1.0
  config.train.optimizer = "adamw"
  config.train.learning_rate = 1e-4
  config.train.weight_decay = 0.0
  config.train.schedule = "constant"
  config.train.grad_clip_norm = 0.0
  config.train.num_steps = 0
  config.train.num_epochs = 5
  config.augment.enabled = False
  config.eval.min_enhancing_voxels = 0  # no enhancing tumour in a binary task
  return config
