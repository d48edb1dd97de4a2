"""The losses: each task's terms reward the right answer, terms add up, class weights weigh
their outputs, and training metrics decode outputs as inference does."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from brats_jax import labels as label_values
from brats_jax import tasks
from brats_jax.train import losses

from conftest import tiny_config


def _perfect_logits(labels, kind):
  if kind == "softmax":
    return 20.0 * (jax.nn.one_hot(tasks.softmax_classes(labels), tasks.NUM_CLASSES) - 0.5)
  return 20.0 * (tasks.sigmoid_targets(labels, kind) - 0.5)


@pytest.mark.parametrize("kind,terms", [
    ("region", (("dice", 1.0), ("bce", 1.0))), ("region", (("iou", 1.0), ("focal", 1.0))),
    ("softmax", (("dice", 1.0), ("ce", 1.0))), ("softmax", (("iou", 1.0), ("focal", 2.0))),
    ("labels", (("dice", 1.0), ("bce", 0.5))), ("binary", (("dice", 1.0), ("focal", 1.0)))])
def test_losses_reward_the_right_answer(kind, terms):
  labels = np.zeros((2, 8, 8, 8), np.uint8)
  labels[:, 2:6, 2:6, 2:6] = label_values.ED
  labels[:, 3:5, 3:5, 3:5] = label_values.ET
  labels[:, 3, 3, 3] = label_values.NCR
  config = tiny_config().loss
  config.kind, config.terms = kind, terms
  perfect = _perfect_logits(labels, kind)
  assert perfect.shape[-1] == tasks.num_outputs(config.kind)
  good = losses.segmentation_loss(perfect, labels, config)
  bad = losses.segmentation_loss(-perfect, labels, config)
  assert good < 0.05 and bad > 0.5, (kind, terms, good, bad)
  # Training metrics decode as inference does: a perfect output scores every region fully.
  counts = tasks.overlap_counts(perfect, labels, kind)
  np.testing.assert_array_equal(counts["intersection"], counts["reference"])
  np.testing.assert_array_equal(counts["predicted"], counts["reference"])
  assert len(counts["reference"]) == len(tasks.scored_regions(kind))
  assert losses.deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def test_loss_terms_add_up_and_class_weights_weigh_outputs():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, (2, 8, 8, 8)).astype(np.uint8)
  logits = jnp.asarray(rng.standard_normal((2, 8, 8, 8, 3)).astype(np.float32))
  config = tiny_config().loss
  parts = {}
  for name in ("dice", "bce"):
    config.terms = ((name, 1.0),)
    parts[name] = float(losses.segmentation_loss(logits, labels, config))
  config.terms = (("dice", 1.0), ("bce", 2.0))
  assert float(losses.segmentation_loss(logits, labels, config)) == pytest.approx(
      parts["dice"] + 2 * parts["bce"], rel=1e-5)
  # Weight only one output: the loss is that output's.
  config.terms = (("dice", 1.0),)
  config.class_weights = (0.0, 0.0, 1.0)
  only_et = float(losses.segmentation_loss(logits, labels, config))
  config.class_weights = ()
  et_logits = logits[..., 2:]
  config.kind = "binary"  # one output: its Dice alone
  labels_et = np.where(labels == label_values.ET, label_values.ET, 0).astype(np.uint8)
  assert only_et == pytest.approx(float(losses.segmentation_loss(et_logits, labels_et, config)),
                                  rel=1e-5)
