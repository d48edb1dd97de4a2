"""Epochs: a pass over the training examples, for runs specified the way most seeds are.

An example is a training case for a 3D model and an axial slice of one for a 2D model (the
Keras generators of the 2D seeds went over slice files). train.num_epochs, when set, is
resolved once the store, the split and the global batch are known:
num_steps = ceil(num_epochs * examples / global_batch). The resolved num_steps is what the
run trains, schedules and records in its contract.
"""

import math

import ml_collections

from brats_jax.errors import ConfigError


def examples_per_epoch(store, train_ids, spatial_dims: int) -> int:
  if spatial_dims == 3:
    return len(train_ids)
  return sum(int(store.shape(case_id)[2]) for case_id in train_ids)


def resolve_num_steps(config: ml_collections.ConfigDict, examples: int,
                      global_batch: int) -> ml_collections.ConfigDict:
  """config with train.num_steps from train.num_epochs (unchanged when that is 0). A
  relaunch resolves the same steps again; with another global batch, other steps (recorded
  in the run's history like any change of train.num_steps)."""
  train = config.train
  if not train.num_epochs:
    return config
  steps = max(1, math.ceil(train.num_epochs * examples / global_batch))
  if train.warmup_steps >= steps:
    raise ConfigError.of_field("train.warmup_steps", train.warmup_steps,
                               f"must be below the {steps} steps of train.num_epochs="
                               f"{train.num_epochs} ({examples} examples, global batch "
                               f"{global_batch})")
  resolved = config.copy_and_resolve_references()
  resolved.train.num_steps = steps
  return resolved


def epoch(step: int, examples: int, global_batch: int) -> float:
  """The epochs completed after `step` steps."""
  return step * global_batch / max(examples, 1)
