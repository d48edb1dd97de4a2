"""Seed 003 (U-Net, model 1): a 2D U-Net on the Kaggle LGG MRI segmentation set (Buda et al.
2019, "Association of genomic subtypes of lower-grade gliomas with shape features
automatically extracted by a deep learning algorithm"), as a GitHub project's first notebook
built it. lgg_unet2d_model2.py is the same project's second model.

  brats-jax-prepare --input=/data/kaggle_3m --output=/data/lgg --normalisation=divide \
      --divide_by=255
  brats-jax-train --config=configs/seeds/lgg_unet2d.py --workdir=/runs/lgg_unet \
      --config.data.store=/data/lgg

The data: 256x256 slices of pre-contrast, FLAIR and post-contrast (the RGB TIFFs) divided by
255, one sigmoid for the FLAIR abnormality; predictions are written back as
<patient>_<n>_mask.tif files. An epoch is a pass over the training patients' slices.

The seed's recipe, row by row (tests/config/test_seed_recipes.py checks every "here" cell):

  what         | the seed                                | here
  parameters   | 7,774,049 (total, batch-norm statistics | parameters=7_774_049
               | included)                               |
  network      | 5 floors of double 3x3 convolutions,    | model.depth=5; model.base_filters=32
               | filters 32-512                          | model.max_filters=512
               | batch norm, ReLU, max-pooling down,     | model.norm='batch'
               | transposed-convolution up               | model.activation='relu'
               |                                         | model.downsample='maxpool'
               |                                         | model.upsample='depth_to_space'
               | one output                              | model.deep_supervision=0
  task         | the FLAIR abnormality, one sigmoid      | loss.kind='binary'
               |                                         | data.modalities=('t1', 'flair', 't1ce')
  loss         | binary cross-entropy (Dice is "future   | loss.terms=(('bce', 1.0),)
               | work")                                  |
  optimiser    | Adam, no clipping (learning rate not    | train.optimizer='adamw'
               | stated: 1e-4 here)                      | train.learning_rate=0.0001
               |                                         | train.weight_decay=0.0
               |                                         | train.schedule='constant'
               |                                         | train.grad_clip_norm=0.0
  batch        | 16 slices                               | data.global_batch=16
               |                                         | data.patch_size=(256, 256)
  epochs       | not stated for model 1 (model 2: 100)   | train.num_epochs=100
               |                                         | train.num_steps=0
  augmentation | none ("no real preprocessing")          | augment.enabled=False
  precision    | float32                                 | model.dtype='float32'

Deliberately different: slices are drawn at random from the training patients, a third of
them centred on tumour, rather than every slice once per epoch in file order; the split is
fold 0 of prepare's five (the seed does not state its split).
"""

import ml_collections

from brats_jax.config.io import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "../default.py")
  config.data.modalities = ("t1", "flair", "t1ce")
  config.data.patch_size = (256, 256)
  config.data.global_batch = 16
  config.data.batch_per_device = 0
  config.model.base_filters = 32
  config.model.max_filters = 512
  config.model.depth = 5
  config.model.norm = "batch"
  config.model.activation = "relu"
  config.model.downsample = "maxpool"
  config.model.deep_supervision = 0
  config.model.dtype = "float32"
  config.loss.kind = "binary"
  config.loss.terms = (("bce", 1.0),)
  config.train.optimizer = "adamw"
  config.train.learning_rate = 1e-4
  config.train.weight_decay = 0.0
  config.train.schedule = "constant"
  config.train.grad_clip_norm = 0.0
  config.train.num_steps = 0
  config.train.num_epochs = 100
  config.augment.enabled = False
  config.eval.min_enhancing_voxels = 0  # no enhancing tumour in a binary task
  return config
