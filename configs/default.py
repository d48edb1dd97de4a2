"""The full BraTS 2021 recipe: 128^3 patches, global batch 8, filters 32-64-128-256-320-320.

Region-based (WT/TC/ET) sigmoid outputs with Dice + BCE and deep supervision, SGD Nesterov 0.99
with poly decay (nnU-Net), bf16 compute. Launch:

  brats-jax-prepare --input=/data/BraTS2021_Training_Data --output=/data/brats2021_store
  brats-jax-train --config=configs/default.py --workdir=/runs/brats2021 \
      --config.data.store=/data/brats2021_store

The batch is the recipe's global batch (data.global_batch = 8), whatever the device count: 8
devices take one sample each; 16 devices split each sample over 2 (mesh.space, chosen
automatically); 1 device takes all 8 (a smaller GPU: --config.data.global_batch=2). Any field
can be overridden on the command line, e.g. --config.train.num_steps=1000.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.store = ""  # a store written by brats-jax-prepare (path or gs:// / s3:// URL)
  # Validation cases: those of val_store if given (every case of store then trains), else
  # a val_fraction of store's cases chosen by split_seed, else fold val_fold (-1: none).
  config.data.val_store = ""
  config.data.val_fraction = 0.0
  config.data.split_seed = 0
  config.data.val_fold = 0
  config.data.patch_size = (128, 128, 128)  # two entries train a 2D model on axial slices
  # The store channels the model sees, in this order (its input channels): e.g. ("flair",)
  # trains a FLAIR-only model. BraTS and Decathlon stores hold flair, t1, t1ce, t2; Kaggle
  # LGG stores t1, flair, t1ce (pre-contrast, FLAIR, post-contrast).
  config.data.modalities = ("flair", "t1", "t1ce", "t2")
  # The batch: data.global_batch samples per step on any number of devices, or (0 here)
  # data.batch_per_device per data-parallel group, growing with the devices. One of the two.
  config.data.global_batch = 8
  config.data.batch_per_device = 0
  config.data.foreground_fraction = 1 / 3
  # per_class: a foreground patch is centred on a tumour class drawn alike, then a voxel of it
  # (nnU-Net); any_voxel: on any tumour voxel alike (MONAI's RandCropByPosNegLabeld).
  config.data.foreground_centre = "per_class"
  # random: every sample draws its case at random (nnU-Net); epochs: each training case once
  # per pass over them, in a fresh order each pass (a shuffling DataLoader, as MONAI's).
  config.data.case_order = "random"
  config.data.prefetch = 4  # batches read ahead of the device
  # auto | host | replicated | sharded: hold the training cases on the accelerators and cut
  # patches inside the step when they fit (auto decides from the sizes and says why), or
  # stream patches from the store (host). brats_jax/train/device_input.py has the details.
  config.data.placement = "auto"

  # How the devices share the work (brats_jax/sharding.py): mesh.space devices split each
  # sample along its first spatial axis, the rest split the batch. 0: auto (1, unless the
  # global batch is smaller than the devices).
  config.mesh = ml_collections.ConfigDict()
  config.mesh.space = 0

  config.model = ml_collections.ConfigDict()
  config.model.base_filters = 32
  config.model.max_filters = 320
  config.model.depth = 6
  config.model.architecture = "unet"  # unet | transunet (2D: a ViT bottleneck)
  config.model.norm = "instance"  # instance | group | batch | none
  config.model.activation = "leaky_relu"  # leaky_relu | relu | elu | gelu | silu
  config.model.block = "plain"  # plain | residual | context (Isensee 2017)
  config.model.downsample = "conv"  # conv (strided) | maxpool
  # depth_to_space (1x1 conv) | nearest | linear | nearest_conv (then a 3x3x3 convolution)
  config.model.upsample = "depth_to_space"
  # same (decoder blocks as model.block) | localisation (3x3x3 then 1x1x1: Isensee 2017)
  config.model.decoder_block = "same"
  config.model.dropout = 0.0
  config.model.dropout_at = "bottleneck"  # bottleneck | blocks | convolutions
  config.model.deep_supervision = 3  # extra outputs at 1/2, 1/4, 1/8 resolution
  # separate (each output scored by the loss) | summed (Kayalibay 2017: the heads are
  # up-sampled and added into one output)
  config.model.outputs = "separate"
  # Convolutions per encoder level and per decoder level (0 .. depth-2); empty: two each.
  config.model.encoder_convs = ()
  config.model.decoder_convs = ()
  # True: each decoder block's last convolution outputs the next level's width, so resizing
  # up-sampling keeps channels (Henry et al. 2020's EquiUnet).
  config.model.decoder_narrows = False
  # Other than (1, 1): a separate block of two convolutions with these dilation rates after
  # the deepest level, and a fusion convolution of its input and output (Henry et al. 2020).
  config.model.bottleneck_dilation = (1, 1)
  config.model.vit_layers = 4  # transunet only
  config.model.vit_heads = 4
  config.model.vit_dim = 256
  config.model.vit_mlp_dim = 512
  # transunet's CNN encoder: unet (the U-Net's blocks) | resnet50 (the paper's R50 hybrid)
  config.model.transunet_encoder = "unet"
  config.model.dtype = "bfloat16"  # compute dtype; parameters stay float32
  # none | convolutions: keep only convolution outputs for the backward pass and recompute
  # norms and activations (much less activation memory for a little more compute); auto:
  # convolutions on TPUs (a 16 GiB v5e needs it for this recipe), none elsewhere.
  config.model.remat = "auto"
  # GPUs: convolutions' channels padded with zeros to a multiple of this (cuDNN's bf16
  # tensor-core kernels take multiples of 8: the 4 modalities, the 3 region outputs); 0: as
  # they are. The parameters and the function are the same either way.
  config.model.gpu_channel_multiple = 0

  config.loss = ml_collections.ConfigDict()
  # region (sigmoids WT/TC/ET) | softmax (4 classes) | labels (sigmoids NCR/ED/ET) |
  # labels2015 (sigmoids NCR/ED/ET/non-enhancing, BraTS 2015's four) | binary
  config.loss.kind = "region"
  # A weighted sum of dice | iou | bce (sigmoid tasks) | ce (softmax) | focal.
  config.loss.terms = (("dice", 1.0), ("bce", 1.0))
  config.loss.class_weights = ()  # one weight per model output; empty: equal
  config.loss.dice_smooth = 1.0
  config.loss.focal_alpha = 0.25  # the positives' weight (sigmoid focal); -1: unweighted
  config.loss.focal_gamma = 2.0

  config.augment = ml_collections.ConfigDict()
  config.augment.enabled = True
  config.augment.p_rotation = 0.2
  config.augment.max_rotation_deg = 30.0
  config.augment.rotate_about = (0, 1, 2)  # 3D: the axes rotations turn about; (2,): in-plane
  config.augment.p_scale = 0.2
  config.augment.scale_range = (0.7, 1.4)
  config.augment.p_mirror = 0.5
  config.augment.p_mirror_axes = ()  # a flip probability per spatial axis; empty: p_mirror
  config.augment.p_brightness = 0.15
  config.augment.brightness_range = (0.75, 1.25)
  config.augment.p_contrast = 0.15
  config.augment.contrast_range = (0.75, 1.25)
  config.augment.p_gamma = 0.3
  config.augment.gamma_range = (0.7, 1.5)
  config.augment.p_noise = 0.15
  config.augment.noise_std_max = 0.1

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 250_000  # nnU-Net: 1000 epochs of 250 steps
  # Or (with num_steps = 0) this many passes over the training cases (2D: their slices):
  # resolved against the store and the global batch (brats_jax/train/epochs.py).
  config.train.num_epochs = 0
  config.train.optimizer = "sgd"  # sgd (Nesterov) | adamw
  config.train.learning_rate = 1e-2
  config.train.momentum = 0.99
  config.train.weight_decay = 3e-5
  config.train.schedule = "poly"  # poly | cosine | constant
  config.train.warmup_steps = 0
  config.train.grad_clip_norm = 12.0  # global-norm clipping (nnU-Net); 0: none
  config.train.on_nonfinite = "skip"  # skip (count and go on) | stop
  # Stop once this many validations in a row have not beaten the best validation mean Dice
  # (the best checkpoint is kept); 0: train for num_steps.
  config.train.early_stopping_patience = 0
  config.train.device_memory_gib = 0.0  # 0: the device's own limit (CPUs report none)

  config.eval = ml_collections.ConfigDict()
  config.eval.every_steps = 5000
  config.eval.overlap = 0.5
  config.eval.sigma_scale = 0.125
  config.eval.sw_batch_per_device = 2
  config.eval.max_cases = 0  # 0: the whole validation fold
  # ET predictions smaller than this become necrosis; -1: chosen on the validation fold
  # (metrics.ET_THRESHOLD_CANDIDATES) at each validation, and used by brats-jax-predict.
  config.eval.min_enhancing_voxels = -1

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 1000
  config.checkpoint.keep = 3
  config.checkpoint.keep_best = 1

  config.log_every_steps = 50
  return config
