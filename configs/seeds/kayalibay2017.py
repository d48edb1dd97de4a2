"""Seed 002 (first model): Kayalibay et al. 2017, "CNN-based segmentation of medical imaging
data" (arXiv:1701.03056), on BraTS 2015 as a course project replicated it.

  brats-jax-prepare --input=/data/BRATS2015_Training --output=/data/brats2015 \
      --crop=centre --crop_shape=144,144,155 --resize_shape=144,144,96 \
      --normalisation=divide --divide_by=255
  brats-jax-train --config=configs/seeds/kayalibay2017.py --workdir=/runs/kayalibay \
      --config.data.store=/data/brats2015
  # the project's FLAIR-only tumour/background variant:
  brats-jax-train --config=configs/seeds/kayalibay2017.py --workdir=/runs/kayalibay_flair \
      --config.data.store=/data/brats2015 --config.data.modalities="('flair',)" \
      --config.loss.kind=binary

As published: residual blocks (two convolutions and a skip), strided convolutions down,
segmentation maps of three resolutions up-sampled and summed into the output (to combine
global and local features and converge faster), batch norm, ReLU. The project's data: the
BraTS 2015 MetaImage tree (both the original and a one-folder-per-channel copy are read),
volumes cropped to 144x144 in-plane and resized to 96 slices, intensities divided by 255.
Deliberately different: region-based WT/TC/ET sigmoids with Dice + BCE (the 2015 labels, with
non-enhancing tumour, map onto the regions exactly); patches of 144x144x96 rather than whole
volumes at batch 1; Adam 1e-4 as the project settled on, with a poly decay.
"""

import ml_collections

from brats_jax.config.io import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "../default.py")
  config.data.patch_size = (144, 144, 96)
  config.data.batch_per_device = 1
  config.data.global_batch = 0
  config.model.block = "residual"
  config.model.base_filters = 16
  config.model.max_filters = 128
  config.model.depth = 4
  config.model.norm = "batch"
  config.model.activation = "relu"
  config.model.outputs = "summed"
  config.model.deep_supervision = 2
  config.loss.kind = "region"
  config.loss.terms = (("dice", 1.0), ("bce", 1.0))
  config.train.optimizer = "adamw"
  config.train.learning_rate = 1e-4
  config.train.weight_decay = 0.0
  config.train.num_steps = 20_000
  return config
