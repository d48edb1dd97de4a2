"""Seed 001: a Keras 3D U-Net with a softmax over four classes on BraTS 2020 (a 2022 blog post,
"3D UNet for Brain Tumor Segmentation").

  brats-jax-prepare --input=/data/BraTS2020_TrainingData --output=/data/brats2020_cropped \
      --crop=centre --crop_shape=224,224,144 --normalisation=minmax --smooth_sigma=1 \
      --sharpen=0.3
  brats-jax-train --config=configs/seeds/unet3d_softmax_brats2020.py \
      --workdir=/runs/unet3d_softmax --config.data.store=/data/brats2020_cropped

As published: volumes cropped to 144x224x224, min-max scaled, Gaussian-smoothed (sigma 1) and
Laplacian-sharpened (0.3) per channel (the prepare flags above, recorded in the store and
applied again by predict); a 4-level U-Net with filters 16-32-64-128, two 3x3x3 ReLU
convolutions per level each followed by dropout 0.25, no normalisation, max-pooling down and
nearest up-sampling; four softmax classes with categorical cross-entropy; Adam 1e-3; batch 1.
Deliberately different: patches of the whole cropped volume are sampled with a third centred
on tumour rather than whole volumes in file order; augmentation (the post's rotations and
flips, and more) runs on the accelerator; the Dice of the classes is added to the loss
(set --config.loss.terms="(('ce', 1.0),)" for the post's loss alone).
"""

import ml_collections

from brats_jax.config.io import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "../default.py")
  config.data.patch_size = (224, 224, 144)
  config.data.batch_per_device = 1
  config.data.global_batch = 0
  config.model.base_filters = 16
  config.model.max_filters = 128
  config.model.depth = 4
  config.model.norm = "none"
  config.model.activation = "relu"
  config.model.downsample = "maxpool"
  config.model.upsample = "nearest"
  config.model.dropout = 0.25
  config.model.dropout_at = "convolutions"
  config.model.deep_supervision = 0
  config.loss.kind = "softmax"
  config.loss.terms = (("ce", 1.0), ("dice", 1.0))
  config.train.optimizer = "adamw"
  config.train.learning_rate = 1e-3
  config.train.weight_decay = 0.0
  config.train.schedule = "constant"
  config.train.num_steps = 20_000
  return config
