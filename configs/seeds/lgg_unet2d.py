"""Seed 003 (U-Net): a 2D U-Net on the Kaggle LGG MRI segmentation set (Buda et al. 2019,
"Association of genomic subtypes of lower-grade gliomas with shape features automatically
extracted by a deep learning algorithm"), as a GitHub project's first notebook built it.

  brats-jax-prepare --input=/data/kaggle_3m --output=/data/lgg --normalisation=divide \
      --divide_by=255
  brats-jax-train --config=configs/seeds/lgg_unet2d.py --workdir=/runs/lgg_unet \
      --config.data.store=/data/lgg

As published: 256x256 slices of pre-contrast, FLAIR and post-contrast (the RGB TIFFs) divided
by 255, a 5-floor U-Net of double 3x3 convolutions (filters 32 to 512, about 7.8M
parameters), batch norm, ReLU, max-pooling, transposed-convolution up-sampling, one sigmoid
for the FLAIR abnormality, binary cross-entropy with Dice, Adam 1e-4, batch 16.
Deliberately different: slices are sampled from all patients as training patches (a third
centred on tumour); predictions are written back as <patient>_<n>_mask.tif files.
"""

import ml_collections

from brats_jax.config.io import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "../default.py")
  config.data.modalities = ("t1", "flair", "t1ce")
  config.data.patch_size = (256, 256)
  config.data.batch_per_device = 16
  config.data.global_batch = 0
  config.model.base_filters = 32
  config.model.max_filters = 512
  config.model.depth = 5
  config.model.norm = "batch"
  config.model.activation = "relu"
  config.model.downsample = "maxpool"
  config.model.deep_supervision = 0
  config.model.dtype = "float32"
  config.loss.kind = "binary"
  config.loss.terms = (("bce", 1.0), ("dice", 1.0))
  config.train.optimizer = "adamw"
  config.train.learning_rate = 1e-4
  config.train.weight_decay = 0.0
  config.train.schedule = "constant"
  config.train.num_steps = 20_000
  config.eval.min_enhancing_voxels = 0  # no enhancing tumour in a binary task
  return config
