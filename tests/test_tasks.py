"""tasks.py: what each task outputs, how outputs become labels, and Dice from counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from brats_jax import tasks
from brats_jax.labels import ED, ET, NCR, NET, TUMOUR


def test_decode_regions_by_threshold_and_classes_by_argmax():
  probabilities = np.zeros((4, 1, 1, 3))
  probabilities[0] = [0.9, 0.1, 0.1]  # WT only: edema
  probabilities[1] = [0.9, 0.9, 0.1]  # TC, not ET: necrosis
  probabilities[2] = [0.9, 0.9, 0.9]  # ET
  assert tasks.decode(probabilities, "region")[:, 0, 0].tolist() == [2, 1, 3, 0]
  # A too-small ET prediction becomes necrosis.
  relabelled = tasks.relabel_small_enhancing(tasks.decode(probabilities, "region"), 5)
  assert relabelled[:, 0, 0].tolist() == [2, 1, 1, 0]
  # Softmax classes (background, NCR, ED, ET): the largest wins, even below 0.5. p(ET) = 0.4
  # as the largest class is ET; summing into regions and thresholding would say edema.
  classes = np.array([[0.2, 0.1, 0.3, 0.4],  # ET with p 0.4
                      [0.3, 0.35, 0.05, 0.3],  # necrosis with p 0.35
                      [0.1, 0.2, 0.6, 0.1],  # edema
                      [0.7, 0.1, 0.1, 0.1]])  # background
  assert tasks.decode(classes, "softmax").tolist() == [3, 1, 2, 0]
  assert tasks.relabel_small_enhancing(tasks.decode(classes, "softmax"), 2).tolist() == [1, 1, 2, 0]


@pytest.mark.parametrize("kind", tasks.KINDS)
def test_one_decode_for_jitted_logits_and_numpy_probabilities(kind):
  """Training logs decode logits inside jit, validation and prediction decode probabilities
  in NumPy: the same function, the same labels."""
  logits = np.random.default_rng(0).normal(0, 2, (2, 5, 5, 3, tasks.num_outputs(kind)))
  if tasks.TASKS[kind].activation == "softmax":
    probabilities = np.asarray(jax.nn.softmax(logits))
  else:
    probabilities = np.asarray(jax.nn.sigmoid(logits))
  in_jit = jax.jit(lambda x: tasks.decode(x, kind, logits=True))(jnp.asarray(logits))
  in_numpy = tasks.decode(probabilities, kind)
  assert isinstance(in_numpy, np.ndarray) and in_numpy.dtype == np.uint8
  np.testing.assert_array_equal(np.asarray(in_jit), in_numpy)
  values = set(np.unique(in_numpy).tolist())
  expected = {"binary": {0, TUMOUR}, "labels2015": {0, NCR, ED, NET, ET}}.get(kind,
                                                                          {0, NCR, ED, ET})
  assert values <= expected and len(values) > 1


def test_labels2015_keeps_non_enhancing_tumour_apart():
  """BraTS 2015's four tumour classes each have an output; the labels task merges NET into
  necrosis."""
  labels = jnp.array([[0, NCR, ED, NET, ET]], jnp.uint8)
  targets = np.asarray(tasks.sigmoid_targets(labels, "labels2015"))[0]
  np.testing.assert_array_equal(targets, [[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0],
                                          [0, 0, 1, 0], [0, 0, 0, 1]])
  merged = np.asarray(tasks.sigmoid_targets(labels, "labels"))[0]
  np.testing.assert_array_equal(merged[:, 0], [0, 1, 0, 1, 0])
  # Decoding the targets as probabilities gives the labels back.
  np.testing.assert_array_equal(tasks.decode(targets, "labels2015"), [0, NCR, ED, NET, ET])


def test_dice_and_iou_from_counts_score_two_empty_masks_1():
  assert tasks.dice_from_counts(0, 0, 0) == 1.0 and tasks.iou_from_counts(0, 0, 0) == 1.0
  assert tasks.dice_from_counts(0, 5, 0) == 0.0 and tasks.iou_from_counts(0, 0, 5) == 0.0
  assert tasks.dice_from_counts(3, 4, 6) == pytest.approx(0.6)
  assert tasks.iou_from_counts(3, 4, 6) == pytest.approx(3 / 7)
