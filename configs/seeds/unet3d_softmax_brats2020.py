"""Seed 001: a Keras 3D U-Net with a softmax over four classes on BraTS 2020 (a 2022 blog post,
"3D UNet for Brain Tumor Segmentation").

  brats-jax-prepare --input=/data/BraTS2020_train --output=/data/brats2020_train \
      --crop=centre --crop_shape=224,224,144 --normalisation=minmax --smooth_sigma=1 \
      --sharpen=0.3
  brats-jax-prepare --input=/data/BraTS2020_validation --output=/data/brats2020_validation \
      --crop=centre --crop_shape=224,224,144 --normalisation=minmax --smooth_sigma=1 \
      --sharpen=0.3
  brats-jax-train --config=configs/seeds/unet3d_softmax_brats2020.py \
      --workdir=/runs/unet3d_softmax --config.data.store=/data/brats2020_train \
      --config.data.val_store=/data/brats2020_validation

The post keeps its training and validation cases in two folders: prepare each into its own
store (above). Without data.val_store every case trains and nothing validates.

The seed's recipe, row by row (tests/configs/test_seed_configs.py checks every "here" cell):

  what         | the seed                                | here
  parameters   | 2,345,924 (create_unet(4, 16, 3, 0.25)) | parameters=2345924
  network      | 4 levels, filters 16-32-64-128          | model.depth=4; model.base_filters=16
               |                                         | model.max_filters=128
               | two convolutions per level, four at the | model.encoder_convs=(2, 2, 2, 4)
               | bottom (the encoder's and the decoder's | model.decoder_convs=(2, 2, 2)
               | deepest pair)                           |
               | ReLU, no normalisation                  | model.activation='relu'
               |                                         | model.norm='none'
               | max-pooling down, UpSampling3D up       | model.downsample='maxpool'
               |                                         | model.upsample='nearest'
               | dropout 0.25 after every convolution    | model.dropout=0.25
               |                                         | model.dropout_at='convolutions'
               | one output, softmax over 4 classes      | model.deep_supervision=0
               |                                         | loss.kind='softmax'
  loss         | categorical cross-entropy               | loss.terms=(('ce', 1.0),)
  optimiser    | Adam, learning rate 1e-3, no decay,     | train.optimizer='adamw'
               | no clipping                             | train.learning_rate=0.001
               |                                         | train.weight_decay=0.0
               |                                         | train.schedule='constant'
               |                                         | train.grad_clip_norm=0.0
  batch        | 1 whole cropped volume (144x224x224)    | data.global_batch=1
               |                                         | data.patch_size=(224, 224, 144)
               |                                         | data.foreground_fraction=0.0
  epochs       | 4                                       | train.num_epochs=4; train.num_steps=0
  augmentation | ImageDataGenerator(rotation_range=20,   | augment.enabled=True
               | horizontal_flip, vertical_flip) on each | augment.p_rotation=1.0
               | axial slice: in-plane rotation up to    | augment.max_rotation_deg=20.0
               | 20 degrees, flips of both in-plane axes | augment.rotate_about=(2,)
               |                                         | augment.p_mirror_axes=(0.5, 0.5, 0.0)
               | nothing else                            | augment.p_scale=0.0
               |                                         | augment.p_brightness=0.0
               |                                         | augment.p_contrast=0.0
               |                                         | augment.p_gamma=0.0; augment.p_noise=0.0
  split        | separate training and validation folders| data.val_fold=-1

Deliberately different: bf16 convolutions on accelerators (the post ran float32; set
--config.model.dtype=float32 for it); a rotation leaves zeros where the volume ends (Keras
repeats the edge voxels); the reference labels are rotated with nearest-neighbour sampling
(the post interpolated the one-hot masks and rounded them down).
"""

import ml_collections

from brats_jax.config.io import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "../default.py")
  config.data.patch_size = (224, 224, 144)
  config.data.global_batch = 1
  config.data.batch_per_device = 0
  config.data.foreground_fraction = 0.0
  config.data.val_fold = -1
  config.model.base_filters = 16
  config.model.max_filters = 128
  config.model.depth = 4
  config.model.encoder_convs = (2, 2, 2, 4)
  config.model.decoder_convs = (2, 2, 2)
  config.model.norm = "none"
  config.model.activation = "relu"
  config.model.downsample = "maxpool"
  config.model.upsample = "nearest"
  config.model.dropout = 0.25
  config.model.dropout_at = "convolutions"
  config.model.deep_supervision = 0
  config.loss.kind = "softmax"
  config.loss.terms = (("ce", 1.0),)
  config.train.optimizer = "adamw"
  config.train.learning_rate = 1e-3
  config.train.weight_decay = 0.0
  config.train.schedule = "constant"
  config.train.grad_clip_norm = 0.0
  config.train.num_steps = 0
  config.train.num_epochs = 4
  config.augment.p_rotation = 1.0
  config.augment.max_rotation_deg = 20.0
  config.augment.rotate_about = (2,)
  config.augment.p_mirror_axes = (0.5, 0.5, 0.0)
  config.augment.p_scale = 0.0
  config.augment.p_brightness = 0.0
  config.augment.p_contrast = 0.0
  config.augment.p_gamma = 0.0
  config.augment.p_noise = 0.0
  return config
