"""Seed 003 (TransUNet): TransUNet (Chen et al. 2021, "TransUNet: Transformers make strong
encoders for medical image segmentation", arXiv:2102.04306) on the Kaggle LGG set, as the
same GitHub project's third notebook built it, trained from scratch.

  brats-jax-prepare --input=/data/kaggle_3m --output=/data/lgg --normalisation=divide \
      --divide_by=255
  brats-jax-train --config=configs/seeds/lgg_transunet.py --workdir=/runs/lgg_transunet \
      --config.data.store=/data/lgg

The paper's R50+ViT-B/16 hybrid: a ResNet-50's first three stages down to 1/16 of the
slice, a Vision Transformer over the 16x16 feature map (linear patch embedding, learned
position embedding, pre-norm transformer blocks) and the cascaded up-sampler with skips from
1/8, 1/4 and 1/2. Everything not in the table is lgg_unet2d.py's.

The seed's recipe, row by row (tests/config/test_seed_recipes.py checks every "here" cell):

  what         | the seed                                | here
  parameters   | "10 times bigger" than model 2's 10.7 M | parameters~100_000_000
  network      | a ResNet-50 encoder (the paper's R50)   | model.transunet_encoder='resnet50'
               | ViT-Base's transformer: 12 blocks of    | model.architecture='transunet'
               | width 768, 12 heads, MLP 3072           | model.vit_layers=12
               |                                         | model.vit_heads=12
               |                                         | model.vit_dim=768
               |                                         | model.vit_mlp_dim=3072
  task         | the FLAIR abnormality, one sigmoid      | loss.kind='binary'
  loss         | binary cross-entropy                    | loss.terms=(('bce', 1.0),)
  optimiser    | Adam, no clipping (learning rate not    | train.optimizer='adamw'
               | stated: 1e-4 here)                      | train.learning_rate=0.0001
               |                                         | train.grad_clip_norm=0.0
  batch        | 16 slices                               | data.global_batch=16
  epochs       | 100, as model 2                         | train.num_epochs=100
  augmentation | none                                    | augment.enabled=False

Deliberately different: no ImageNet pre-training (the project had none either), and so no
weight standardisation in the ResNet (BiT's, which serves that transfer). The U-Net-encoder
arrangement this config had before (filters 32-512, 91 M) is
--config.model.transunet_encoder=unet.
"""

import ml_collections

from brats_jax.config.io import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "lgg_unet2d.py")
  config.model.architecture = "transunet"
  config.model.downsample = "conv"
  config.model.vit_layers = 12
  config.model.vit_heads = 12
  config.model.vit_dim = 768
  config.model.vit_mlp_dim = 3072
  config.model.transunet_encoder = "resnet50"
  return config
