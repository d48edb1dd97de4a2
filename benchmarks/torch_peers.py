"""brats_jax's network as the PyTorch projects our users come from build it, for the benchmarks
that run both sides (peer.py on CPUs, device_check.py on a GPU).

  monai      MONAI's DynUNet of the config's levels, filters, kernels and strides (instance
             norm, leaky ReLU, deep-supervision heads up-sampled to full resolution), with
             MONAI's DiceCELoss: softmax classes, or sigmoid regions (WT, TC, ET)
  nnunet     nnU-Net's own network, `dynamic-network-architectures`' PlainConvUNet with
             nnU-Net's BraTS settings (instance norm, leaky ReLU, conv bias, He init, deep
             supervision at every decoder level), and nnU-Net v2's region loss: Dice + BCE
             (DC_and_BCE_loss with MemoryEfficientSoftDiceLoss) in its DeepSupervisionWrapper,
             weights halving per level, the coarsest 0, normalised

Targets are built on the device from integer labels in brats_jax's internal values (0
background, 1 NCR, 2 ED, 3 ET), as each project's loader would hand them to its loss.
Nothing here is imported by brats_jax; torch, MONAI and nnU-Net are never needed to train.
Each builder imports what it needs when called (a torch process imports no JAX).
"""

# brats_jax's internal label values in each region (labels.REGIONS for the BraTS tasks).
REGION_LABELS = ((1, 2, 3), (1, 3), (3,))


def monai_network(config, out_channels: int):
  """MONAI's DynUNet with the config's levels and filters, deep supervision as the config's."""
  from monai.networks.nets import DynUNet

  from brats_jax.model.blocks import level_filters
  filters = level_filters(config.model)
  return DynUNet(len(config.data.patch_size), len(config.data.modalities), out_channels,
                 kernel_size=[3] * len(filters), strides=[1] + [2] * (len(filters) - 1),
                 upsample_kernel_size=[2] * (len(filters) - 1), filters=filters,
                 norm_name=("INSTANCE", {"affine": True}), deep_supervision=True,
                 deep_supr_num=config.model.deep_supervision, trans_bias=True)


def monai_loss(kind: str = "softmax"):
  """loss(outputs [B, heads, C, *S], labels [B, 1, *S] internal values): MONAI's DiceCELoss
  on every deep-supervision head (weights halving per level, normalised); softmax classes,
  or (kind "region") sigmoid WT/TC/ET regions with binary cross-entropy."""
  from monai.losses import DiceCELoss
  if kind == "region":
    dice_ce = DiceCELoss(sigmoid=True)
    target = regions
  else:
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    target = lambda labels: labels  # noqa: E731 (one-hot inside the loss)

  def loss(outputs, labels):
    labels = target(labels)
    weights = [0.5**i for i in range(outputs.shape[1])]  # Python floats: a NumPy scalar
    return sum(w / sum(weights) * dice_ce(outputs[:, i], labels)  # times a tensor can
               for i, w in enumerate(weights))  # turn the loss into a NumPy value

  return loss


def regions(labels):
  """[B, 1, *S] internal labels -> [B, 3, *S] float WT, TC, ET masks."""
  import torch
  return torch.cat([sum((labels == v) for v in values).float() for values in REGION_LABELS],
                   dim=1)


def nnunet_network(config, out_channels: int):
  """nnU-Net's PlainConvUNet with the config's levels and filters, as nnU-Net plans it for
  BraTS (3d_fullres): two 3x3x3 convolutions per stage, stride 2 after the first, conv bias,
  InstanceNorm (affine, eps 1e-5), LeakyReLU, deep supervision, He initialisation."""
  from dynamic_network_architectures.architectures.unet import PlainConvUNet
  from dynamic_network_architectures.initialization.weight_init import InitWeights_He
  from torch import nn

  from brats_jax.model.blocks import level_filters
  filters = level_filters(config.model)
  dims = len(config.data.patch_size)
  net = PlainConvUNet(
      input_channels=len(config.data.modalities), n_stages=len(filters),
      features_per_stage=filters, conv_op=nn.Conv3d if dims == 3 else nn.Conv2d,
      kernel_sizes=[[3] * dims] * len(filters),
      strides=[[1] * dims] + [[2] * dims] * (len(filters) - 1),
      n_conv_per_stage=[2] * len(filters), num_classes=out_channels,
      n_conv_per_stage_decoder=[2] * (len(filters) - 1), conv_bias=True,
      norm_op=nn.InstanceNorm3d if dims == 3 else nn.InstanceNorm2d,
      norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
      nonlin_kwargs={"inplace": True}, deep_supervision=True)
  net.apply(InitWeights_He(1e-2))
  return net


def nnunet_region_loss(num_outputs: int, compile_dice: bool = False):
  """nnU-Net v2's loss for region-based training (nnUNetTrainer._build_loss): Dice + BCE on
  one-hot regions, over `num_outputs` deep-supervision outputs (full resolution first)."""
  import numpy as np
  import torch
  from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
  from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
  from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
  loss = DC_and_BCE_loss({}, {"batch_dice": False, "do_bg": True, "smooth": 1e-5,
                              "ddp": False}, use_ignore_label=False,
                         dice_class=MemoryEfficientSoftDiceLoss)
  if compile_dice:  # as nnU-Net does where it compiles the network
    loss.dc = torch.compile(loss.dc)
  weights = np.array([1 / 2**i for i in range(num_outputs)])
  weights[-1] = 0  # nnU-Net leaves the coarsest output out
  return DeepSupervisionWrapper(loss, weights / weights.sum())


def nnunet_targets(labels, num_outputs: int) -> list:
  """nnU-Net's deep-supervision targets: the region masks at each output's resolution
  (nearest down-sampling by 2 per level, as its loader's DownsampleSegForDSTransform)."""
  import torch.nn.functional as F
  full = regions(labels)
  return [full] + [F.interpolate(full, scale_factor=0.5**level, mode="nearest")
                   for level in range(1, num_outputs)]
