"""The networks (Flax NNX): a U-Net, 3D or 2D, and a 2D TransUNet, with per-platform lowerings.

  blocks.py           layers and blocks, the filter schedule
  unet.py             the U-Net, its analytic FLOP count
  transunet.py        TransUNet (a ViT bottleneck), on the U-Net's encoder or a ResNet-50's
  resnet.py           TransUNet's ResNet-50 encoder (its first three stages)
  convolution.py      every convolution, lowered per platform (CPUs: 2D over depth taps;
                      GPUs: channels padded for cuDNN)
  space_to_depth.py   the full-resolution level folded into channels (TPU lanes)
  normalisation.py    instance and group norm: float32 statistics, applied in bf16
"""

import jax
import ml_collections
from flax import nnx

from brats_jax import tasks
from brats_jax.model.transunet import R50TransUNet, TransUNet
from brats_jax.model.unet import UNet

ARCHITECTURES = ("unet", "transunet")
DTYPES = ("float32", "bfloat16")  # compute dtype; parameters are float32


def model_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The model section with the fields derived from the rest of the config (dims, channels,
  patch size, outputs) filled in: what create_model builds from."""
  mc = config.model.copy_and_resolve_references()
  with mc.unlocked():
    mc.spatial_dims = len(config.data.patch_size)
    mc.in_channels = len(config.data.modalities)
    mc.patch_size = tuple(config.data.patch_size)
    mc.out_channels = tasks.num_outputs(config.loss.kind)
  return mc


def create_model(config: ml_collections.ConfigDict, seed: int) -> nnx.Module:
  """The configured network (model.architecture: unet | transunet); `config` is the resolved
  model config (model_config)."""
  # Parameter initialisation draws from an "rbg" key: XLA compiles it several times faster
  # than threefry (seconds instead of tens for a small U-Net on a CPU). Keys that must be
  # identical under
  # any vmap or device split (augmentation) stay threefry.
  rngs = nnx.Rngs(jax.random.key(seed, impl="rbg"))
  if config.architecture == "transunet":
    network = R50TransUNet if config.transunet_encoder == "resnet50" else TransUNet
    return network(config, rngs=rngs)
  return UNet(config, rngs=rngs)
