"""Seed 002 (first model): Kayalibay et al. 2017, "CNN-based segmentation of medical imaging
data" (arXiv:1701.03056), as a course project replicated it on BraTS 2015: single-modality
(post-contrast T1) tumour-against-background models.

  brats-jax-prepare --input=/data/BRATS2015_Training --output=/data/brats2015 \
      --crop=centre --crop_shape=144,144,155 --resize_shape=144,144,96 \
      --normalisation=divide --divide_by=255
  brats-jax-prepare --input=/data/BRATS2015_validation_half --output=/data/brats2015_val \
      --crop=centre --crop_shape=144,144,155 --resize_shape=144,144,96 \
      --normalisation=divide --divide_by=255
  brats-jax-train --config=configs/seeds/kayalibay2017.py --workdir=/runs/kayalibay \
      --config.data.store=/data/brats2015 --config.data.val_store=/data/brats2015_val

The project's first, strided variant is kayalibay2017_strided.py. The data as the project
had it: the BraTS 2015 MetaImage tree (the original, or a
one-folder-per-channel copy), volumes cropped to 144x144 in-plane, resized to 96 slices and
divided by 255; the testing folder's validation half as its own store.

The project's multi-class extension (one output per BraTS 2015 class: necrosis, edema,
non-enhancing, enhancing) is --config.loss.kind=labels2015 with all four modalities
(--config.data.modalities="('flair', 't1', 't1ce', 't2')").

The seed's recipe, row by row (tests/config/test_seed_recipes.py checks every "here" cell):

  what         | the seed                                | here
  parameters   | 130M+ strided, 90M+ with max-pooling    | parameters=90_000_000
               | ("shifted a few layers"); no widths     | model.base_filters=64
               | given: filters doubling from 64 over    | model.max_filters=1024
               | 5 levels give the max-pooling count     | model.depth=5
  network      | residual blocks (two convolutions and a | model.block='residual'
               | skip), batch norm, ReLU                 | model.norm='batch'
               |                                         | model.activation='relu'
               | max-pooling down (the 90M variant)      | model.downsample='maxpool'
               | segmentation maps of each decoder level | model.outputs='summed'
               | up-sampled and summed into the output   | model.deep_supervision=3
  task         | tumour against background, T1c          | loss.kind='binary'
               |                                         | data.modalities=('t1ce',)
  loss         | binary cross-entropy                    | loss.terms=(('bce', 1.0),)
  optimiser    | Adam, learning rate 1e-4, no clipping   | train.optimizer='adamw'
               |                                         | train.learning_rate=0.0001
               |                                         | train.weight_decay=0.0
               |                                         | train.schedule='constant'
               |                                         | train.grad_clip_norm=0.0
  batch        | 1 volume of 96x144x144 (here 1 per      | data.batch_per_device=1
               | device: batch norm needs whole samples) | data.global_batch=0
               |                                         | data.patch_size=(144, 144, 96)
  epochs       | "a varied number"; 5 as the other model | train.num_epochs=5; train.num_steps=0
  augmentation | none                                    | augment.enabled=False
  split        | a separate validation half              | data.val_fold=-1

Memory: at 144x144x96, batch 1, this 91.7 M-parameter network needs 18.9 GiB to train
(XLA:CPU's memory analysis of the compiled step, bf16 or float32 alike: 18.5;
benchmarks/results/memory_kayalibay2017_cpu.json), more than the project's 12.68 GB Colab GPU
held, which may be why it "didn't train". Deliberately different: bf16 convolutions on
accelerators.
"""

import ml_collections

from brats_jax.config.io import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "../default.py")
  config.data.patch_size = (144, 144, 96)
  config.data.modalities = ("t1ce",)
  # One volume per data-parallel group: batch norm cannot be split across devices.
  config.data.global_batch = 0
  config.data.batch_per_device = 1
  config.data.val_fold = -1
  config.model.block = "residual"
  config.model.base_filters = 64
  config.model.max_filters = 1024
  config.model.depth = 5
  config.model.norm = "batch"
  config.model.activation = "relu"
  config.model.downsample = "maxpool"
  config.model.outputs = "summed"
  config.model.deep_supervision = 3
  config.loss.kind = "binary"
  config.loss.terms = (("bce", 1.0),)
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
