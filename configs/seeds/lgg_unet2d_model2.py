"""Seed 003 (U-Net, model 2): the same project's second notebook: a 4-floor 2D U-Net whose
deeper floors stack three convolutions, on the Kaggle LGG set.

  brats-jax-prepare --input=/data/kaggle_3m --output=/data/lgg --normalisation=divide \
      --divide_by=255
  brats-jax-train --config=configs/seeds/lgg_unet2d_model2.py --workdir=/runs/lgg_unet2 \
      --config.data.store=/data/lgg

The seed gives the floors, the triple stacks "on the deeper floors" and the count, not the
widths: filters 64-512 with three convolutions on the encoder's two deepest floors (batch
norm, ReLU, max-pooling, transposed-convolution up) is the arrangement that gives the count
(10,654,401 trainable in Keras's terms; here 10,652,161 trainable and 7,168 batch-norm
statistics: a convolution before batch norm has no bias, and the up-sampling's 1x1
convolution to 4x the channels has 4x the transposed convolution's bias). Everything else
is lgg_unet2d.py's.

The seed's recipe, row by row (tests/config/test_seed_recipes.py checks every "here" cell):

  what         | the seed                                | here
  parameters   | 10,655,809 trainable                    | parameters=10_655_809
  network      | 4 floors, filters 64-512                | model.depth=4; model.base_filters=64
               |                                         | model.max_filters=512
               | triple convolutions on the deeper       | model.encoder_convs=(2, 2, 3, 3)
               | floors                                  | model.decoder_convs=(2, 2, 2)
  task         | the FLAIR abnormality, one sigmoid      | loss.kind='binary'
  loss         | binary cross-entropy                    | loss.terms=(('bce', 1.0),)
  optimiser    | Adam, no clipping (learning rate not    | train.optimizer='adamw'
               | stated: 1e-4 here)                      | train.learning_rate=0.0001
               |                                         | train.grad_clip_norm=0.0
  batch        | 16 slices                               | data.global_batch=16
  epochs       | 100 ("a plateau after ~35")             | train.num_epochs=100
               |                                         | train.num_steps=0
  augmentation | none                                    | augment.enabled=False
"""

import ml_collections

from brats_jax.config.io import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "lgg_unet2d.py")
  config.model.base_filters = 64
  config.model.max_filters = 512
  config.model.depth = 4
  config.model.encoder_convs = (2, 2, 3, 3)
  config.model.decoder_convs = (2, 2, 2)
  return config
