"""Seed 002 (first model, as first built): Kayalibay et al. 2017's network with strided
convolutions, the variant the course project replicated first ("It consisted of strided
convolutions. This had 130M+ parameters.") before it replaced them with max-pooling
(kayalibay2017.py, 90 M+).

  brats-jax-train --config=configs/seeds/kayalibay2017_strided.py --workdir=/runs/kayalibay_s \
      --config.data.store=/data/brats2015 --config.data.val_store=/data/brats2015_val

The stores are kayalibay2017.py's. Each level below the first starts with a separate
stride-2 convolution (batch norm, ReLU) to the level's width, as Kayalibay et al.'s figure
draws it, followed by the level's residual block at that width; the max-pooling model's
first convolution of each block changes the width instead, and "shifted a few layers" is
what the project did to get there. Everything not in the table is kayalibay2017.py's.

The seed's recipe, row by row (tests/config/test_seed_recipes.py checks every "here" cell):

  what         | the seed                                | here
  parameters   | 130M+ ("strided convolutions")          | parameters=130_000_000
  network      | residual blocks, batch norm, ReLU,      | model.block='residual'
               | filters doubling from 64 over 5 levels  | model.norm='batch'
               |                                         | model.base_filters=64
               |                                         | model.max_filters=1024
               | strided convolutions down               | model.downsample='separate_conv'
               | segmentation maps of each decoder level | model.outputs='summed'
               | up-sampled and summed into the output   | model.deep_supervision=3
  task         | tumour against background, T1c          | loss.kind='binary'
               |                                         | data.modalities=('t1ce',)
  loss         | binary cross-entropy                    | loss.terms=(('bce', 1.0),)
  optimiser    | Adam, learning rate 1e-4, no clipping   | train.optimizer='adamw'
               |                                         | train.learning_rate=0.0001
               |                                         | train.grad_clip_norm=0.0
  augmentation | none                                    | augment.enabled=False

The count here is 128.6 M (trainable parameters and batch-norm statistics, as Keras counts):
1% under the seed's "130M+", which gives no widths; the arrangement above is the one of this
network family that comes nearest. Deliberately different: bf16 convolutions on
accelerators.
"""

import ml_collections

from brats_jax.config.io import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "kayalibay2017.py")
  config.model.downsample = "separate_conv"
  return config
