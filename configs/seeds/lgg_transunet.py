"""Seed 003 (TransUNet): TransUNet (Chen et al. 2021, "TransUNet: Transformers make strong
encoders for medical image segmentation", arXiv:2102.04306) on the Kaggle LGG set, as the
same GitHub project's third notebook built it.

  brats-jax-prepare --input=/data/kaggle_3m --output=/data/lgg --normalisation=divide \
      --divide_by=255
  brats-jax-train --config=configs/seeds/lgg_transunet.py --workdir=/runs/lgg_transunet \
      --config.data.store=/data/lgg

As published: a CNN encoder down to 1/16 of the slice, a Vision Transformer over the 16x16
feature map (linear patch embedding, learned position embedding, pre-norm transformer
blocks), and a CNN decoder with skip connections; one sigmoid, binary cross-entropy with
Dice; trained from scratch as the project did.
Deliberately different: 8 transformer blocks of width 384 (6 heads), not ViT-Base's 12 of
768, and the U-Net's double-convolution encoder instead of a ResNet-50: a fraction of the
parameters, trainable from scratch on 110 patients.
"""

import ml_collections

from brats_jax.config.io import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "lgg_unet2d.py")
  config.data.batch_per_device = 8
  config.data.global_batch = 0
  config.model.architecture = "transunet"
  config.model.norm = "batch"
  config.model.downsample = "conv"
  config.model.vit_layers = 8
  config.model.vit_heads = 6
  config.model.vit_dim = 384
  config.model.vit_mlp_dim = 1536
  config.model.dropout = 0.1
  config.model.dropout_at = "blocks"
  return config
