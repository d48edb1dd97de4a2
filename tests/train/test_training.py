"""The data-parallel step, the input pipeline's determinism, learning, and exact resume."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from brats_jax import sharding, tasks
from brats_jax.config import checks
from brats_jax.data.store import PreparedStore
from brats_jax.errors import ConfigError
from brats_jax.labels import INTERNAL_NAMES
from brats_jax.train import epochs, loop, losses, optimizer, validation
from brats_jax.train import step as train_step
from brats_jax.train.host_input import PatchSampler, is_foreground_sample
from brats_jax.train.metrics_log import read_metrics
from brats_jax.workdir.checkpoints import Checkpoints

from conftest import new_train_state, tiny_config


def _sampler(store_path, config, global_batch, rows=None, **options):
  store = PreparedStore(store_path)
  return PatchSampler(store, store.case_ids(exclude_folds=[0]), config.data.patch_size,
                      global_batch, rows or slice(0, global_batch),
                      config.data.foreground_fraction, config.seed, **options)


def test_batches_are_a_function_of_seed_and_step(tiny_store):
  config = tiny_config(tiny_store)
  sampler = _sampler(tiny_store, config, 6)
  a, b, c = sampler.batch(5), sampler.batch(5), sampler.batch(6)
  for key in a:
    assert np.array_equal(a[key], b[key])
  assert not np.array_equal(a["image"], c["image"])
  # Two processes each reading their half build exactly the one-process batch.
  halves = [_sampler(tiny_store, config, 6, slice(0, 3)).batch(5),
            _sampler(tiny_store, config, 6, slice(3, 6)).batch(5)]
  for key in a:
    assert np.array_equal(np.concatenate([h[key] for h in halves]), a[key])
  # Labels are not images, and foreground-centred samples contain tumour.
  assert a["label"].dtype == np.uint8 and a["image"].dtype == np.float16
  for i in range(6):
    if is_foreground_sample(i, config.data.foreground_fraction):
      assert (a["label"][i] > 0).any()
  assert sum(is_foreground_sample(i, 1 / 3) for i in range(6)) == 2


@pytest.mark.parametrize("sharded_over", [0, 2])
def test_epochs_order_takes_every_case_once_per_pass(tiny_store, sharded_over):
  """case_order "epochs": each pass over the cases (of a device, when they are sharded)
  holds every one of them once, and the passes differ in order."""
  config = tiny_config(tiny_store)
  in_turn = _sampler(tiny_store, config, 4, case_order="epochs", sharded_over=sharded_over)
  groups = max(sharded_over, 1)
  per_group = 4 // groups
  for group in range(groups):
    count = len(in_turn._choices(group * per_group))
    draws = [in_turn.describe(step, group * per_group + row)[1]
             for step in range(3 * count) for row in range(per_group)]
    passes = [draws[i:i + count] for i in range(0, 3 * count, count)]
    assert all(sorted(p) == list(range(count)) for p in passes), passes
    assert len({tuple(p) for p in passes}) > 1, passes  # a fresh order per pass
  assert in_turn.describe(7, 1) == in_turn.describe(7, 1)  # a function of (seed, step, index)
  with pytest.raises(ValueError, match="case_order 'sorted'"):
    _sampler(tiny_store, config, 4, case_order="sorted")


def test_any_voxel_centres_draw_tumour_classes_by_volume(tiny_store):
  """foreground_centre any_voxel (MONAI's): a class as often as its share of the case's
  tumour voxels; per_class (nnU-Net's): every class present alike."""
  config = tiny_config(tiny_store)
  by_volume = _sampler(tiny_store, config, 2, foreground_centre="any_voxel")
  alike = _sampler(tiny_store, config, 2)
  case = by_volume.case_ids[0]
  samples = by_volume._foreground(case)
  present = np.unique(samples[:, 3])
  assert len(present) >= 2
  counts = by_volume.store.cases[case]["voxels_per_label"]
  voxels = np.array([counts[INTERNAL_NAMES[int(v)]] for v in present], np.float64)
  for sampler, expected in ((by_volume, voxels / voxels.sum()),
                            (alike, np.full(len(present), 1 / len(present)))):
    rng = np.random.default_rng(0)
    drawn = [sampler._centre_class(rng, case, samples) for _ in range(4000)]
    shares = np.array([np.mean(np.equal(drawn, v)) for v in present])
    np.testing.assert_allclose(shares, expected, atol=0.03)
  assert not np.allclose(voxels / voxels.sum(), 1 / len(present), atol=0.1)  # they differ
  with pytest.raises(ValueError, match="foreground_centre 'middle'"):
    _sampler(tiny_store, config, 2, foreground_centre="middle")


def _two_steps(config, batches, mesh):
  graphdef, state, tx = new_train_state(config, mesh)
  step = train_step.make_train_step(graphdef, tx, mesh, config)
  losses = []
  for batch in batches:
    state, metrics = step(state, sharding.to_global(batch, mesh, len(batch["image"])))
    losses.append(float(metrics["loss"]))
  return losses, jax.device_get(state["params"])


def test_step_on_8_devices_equals_1_device(tiny_store):
  assert jax.device_count() == 8
  config = tiny_config(tiny_store)  # augmentation on: it must not depend on the device count
  # SGD: its update is linear in the gradient, so float32 reordering across devices stays at
  # rounding level. (Adam divides by sqrt(v): for near-zero gradients it turns rounding noise
  # into full learning-rate steps, which would hide real differences behind a loose tolerance.)
  config.train.optimizer = "sgd"
  config.train.learning_rate = 0.05
  sampler = _sampler(tiny_store, config, 8)
  batches = [sampler.batch(0), sampler.batch(1)]
  losses8, params8 = _two_steps(config, batches, sharding.make_mesh())
  losses1, params1 = _two_steps(config, batches, sharding.make_mesh(jax.devices()[:1]))
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
  flat8, flat1 = jax.tree.leaves(params8), jax.tree.leaves(params1)
  assert len(flat8) == len(flat1) > 10
  for a, b in zip(flat8, flat1):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # And the step did change the parameters.
  _, initial, _ = new_train_state(config, sharding.make_mesh())
  assert any(not np.allclose(a, b) for a, b in
             zip(flat8, jax.tree.leaves(jax.device_get(initial["params"]))))


def test_tiny_model_loss_falls(tiny_store):
  config = tiny_config(tiny_store)
  config.augment.enabled = False
  config.data.foreground_fraction = 1.0
  config.train.learning_rate = 1e-2
  sampler = _sampler(tiny_store, config, 4)
  mesh = sharding.make_mesh(jax.devices()[:1])
  losses, _ = _two_steps(config, [sampler.batch(s) for s in range(40)], mesh)
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def _final_params(workdir, config):
  graphdef, state, _ = new_train_state(config, sharding.make_mesh())
  checkpoints = Checkpoints(workdir, read_only=True)
  restored, data, _ = checkpoints.restore(checkpoints.latest_step(), state)
  return jax.device_get(restored["params"]), data


@pytest.mark.parametrize("num_steps", [6])
def test_stop_and_resume_equals_uninterrupted(tiny_store, tmp_path, num_steps):
  config = tiny_config(tiny_store)
  config.eval.max_cases = 1
  config.train.num_steps = num_steps
  straight = str(tmp_path / "straight")
  loop.train_and_validate(config, straight)

  resumed = str(tmp_path / "resumed")
  first_half = config.copy_and_resolve_references()
  first_half.train.num_steps = num_steps // 2
  loop.train_and_validate(first_half, resumed)
  summary = loop.train_and_validate(config, resumed)
  assert {"WT", "TC", "ET", "mean_dice", "min_enhancing_voxels"} <= set(summary)

  expected, _ = _final_params(straight, config)
  got, data = _final_params(resumed, config)
  assert data["next_step"] == num_steps
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    assert np.array_equal(a, b)  # bitwise: same device count, same batches


def test_nonfinite_step_is_skipped_and_counted(tiny_store):
  config = tiny_config(tiny_store)
  mesh = sharding.make_mesh()
  graphdef, state, tx = new_train_state(config, mesh)
  step = train_step.make_train_step(graphdef, tx, mesh, config)
  batch = _sampler(tiny_store, config, 8).batch(0)
  before = jax.device_get(state["params"])
  poisoned = dict(batch, image=batch["image"].copy())
  poisoned["image"][3, 2, 2, 2, 0] = np.nan
  state, metrics = step(state, sharding.to_global(poisoned, mesh, 8))
  assert float(metrics["nonfinite_steps"]) == 1.0 and float(metrics["loss"]) == 0.0
  assert int(state["step"]) == 1  # the step counts, the update does not
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state["params"]))):
    assert np.array_equal(a, b)
  state, metrics = step(state, sharding.to_global(batch, mesh, 8))
  assert float(metrics["nonfinite_steps"]) == 0.0 and np.isfinite(float(metrics["loss"]))


def test_update_that_overflows_the_state_is_skipped(tiny_store):
  # Finite loss and gradients, but an infinite learning rate makes the new parameters inf/NaN.
  config = tiny_config(tiny_store)
  config.train.optimizer = "sgd"
  config.train.learning_rate = float("inf")
  mesh = sharding.make_mesh()
  graphdef, state, tx = new_train_state(config, mesh)
  step = train_step.make_train_step(graphdef, tx, mesh, config)
  before = jax.device_get(state["params"])
  state, metrics = step(state, sharding.to_global(_sampler(tiny_store, config, 8).batch(0),
                                                  mesh, 8))
  assert float(metrics["nonfinite_steps"]) == 1.0
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state["params"]))):
    assert np.array_equal(a, b)


@pytest.mark.slow  # two launches on two device counts, two schedules: four compiles
def test_resume_on_another_device_count_and_extend_a_finished_run(tiny_store, tmp_path):
  config = tiny_config(tiny_store)
  config.data.val_fold = -1
  config.train.num_steps = 2
  config.train.schedule = "poly"  # decays to 0 at num_steps: an old schedule would freeze
  config.log_every_steps = 1
  workdir = str(tmp_path / "run")
  loop.train_and_validate(config, workdir)  # 8 devices
  finished, _ = _final_params(workdir, config)
  config.train.num_steps = 4  # a finished run, given more steps, continues
  loop.train_and_validate(config, workdir, devices=jax.devices()[:2])  # on 2 devices
  checkpoints = Checkpoints(workdir, read_only=True)
  assert checkpoints.latest_step() == 4
  params, data = _final_params(workdir, config)
  assert data["next_step"] == 4
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))
  # Steps 3 and 4 follow the 4-step schedule (learning rate > 0), so the parameters moved.
  schedule = optimizer.learning_rate_schedule(config.train)
  logged = {r["step"]: r["train/learning_rate"] for r in read_metrics(workdir)
            if "train/learning_rate" in r}
  np.testing.assert_allclose([logged[3], logged[4]], [schedule(2), schedule(3)], rtol=1e-6)
  assert schedule(3) > 0
  assert any(not np.array_equal(a, b)
             for a, b in zip(jax.tree.leaves(finished), jax.tree.leaves(params)))


def test_epochs_resolve_to_steps_against_cases_or_slices_and_the_global_batch():
  class Store:  # three cases of 10, 20 and 30 slices
    def shape(self, case_id):
      return (64, 64, {"a": 10, "b": 20, "c": 30}[case_id])

  ids = ["a", "b", "c"]
  assert epochs.examples_per_epoch(Store(), ids, 3) == 3
  assert epochs.examples_per_epoch(Store(), ids, 2) == 60
  config = tiny_config()
  config.train.num_steps, config.train.num_epochs = 0, 4
  resolved = epochs.resolve_num_steps(config, 60, 16)
  assert resolved.train.num_steps == 15 and config.train.num_steps == 0  # ceil(240 / 16)
  assert epochs.epoch(15, 60, 16) == pytest.approx(4.0)
  config.train.num_epochs = 0
  assert epochs.resolve_num_steps(config, 60, 16) is config
  config.train.num_epochs, config.train.warmup_steps = 1, 10
  with pytest.raises(ConfigError, match="train.warmup_steps=10: must be below the 4 steps"):
    epochs.resolve_num_steps(config, 60, 16)
  # A command that gives both is one line.
  config.train.num_steps, config.train.warmup_steps = 100, 0
  with pytest.raises(ConfigError, match="give the run's length one way"):
    checks.check_training_length(config)


@pytest.mark.parametrize("kind", ["region", "softmax"])
def test_validation_loss_is_the_training_loss_of_the_case(kind):
  """Validation turns the whole-case probabilities back into logits: the loss is the one
  the same logits give in training."""
  config = tiny_config()
  config.loss.kind = kind
  config.loss.terms = (("dice", 1.0), ("ce" if kind == "softmax" else "bce", 1.0))
  rng = np.random.default_rng(0)
  labels = rng.choice([0, 1, 2, 3], size=(12, 10, 8)).astype(np.uint8)
  logits = rng.normal(0, 2, (12, 10, 8, tasks.num_outputs(kind))).astype(np.float32)
  probabilities = np.asarray(jax.nn.softmax(logits) if kind == "softmax"
                             else jax.nn.sigmoid(logits))
  expected = float(losses.segmentation_loss(jnp.asarray(logits)[None],
                                            jnp.asarray(labels)[None], config.loss))
  assert validation.case_loss(probabilities, labels, config.loss) == pytest.approx(expected,
                                                                                   rel=1e-4)
