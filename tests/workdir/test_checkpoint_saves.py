"""One process saves each replicated array whole: no slicing over its devices, which costs
a compiled program per array shape at every run's first save."""

import jax
import jax.numpy as jnp
import numpy as np

from brats_jax import sharding
from brats_jax.workdir.checkpoints import Checkpoints


def test_one_process_saves_replicated_arrays_without_slicing_them(tmp_path, monkeypatch):
  mesh = sharding.make_mesh()  # the 8 test devices, every array replicated on all of them
  assert mesh.devices.size == 8
  state = {"step": jnp.int32(0), "params": {"w": jnp.arange(56.0).reshape(7, 8)},
           "model_state": {"mean": jnp.zeros(3)}, "opt_state": {"mu": jnp.ones((7, 8))},
           "rng": jnp.zeros(2)}
  state = jax.device_put(state, sharding.replicated(mesh))
  slices = []
  real_slice_in_dim = jax.lax.slice_in_dim
  monkeypatch.setattr(jax.lax, "slice_in_dim",
                      lambda *a, **k: slices.append(a[0].shape) or real_slice_in_dim(*a, **k))
  checkpoints = Checkpoints(str(tmp_path))
  assert checkpoints.save(1, state, {"next_step": 1}, {"format": 0}, force=True)
  checkpoints.wait()
  assert slices == []
  restored = checkpoints.restore_model(1, {k: state[k] for k in ("params", "model_state")})
  checkpoints.close()
  np.testing.assert_array_equal(restored["params"]["w"], np.arange(56.0).reshape(7, 8))


def test_reading_a_checkpoint_logs_no_orbax_notices(tmp_path, caplog):
  """What brats_jax asks of Orbax on purpose (its own array handler, read-only managers for
  inference) is not repeated to the user at every load."""
  mesh = sharding.make_mesh()
  state = jax.device_put({"step": jnp.int32(0), "params": {"w": jnp.ones(3)},
                          "model_state": {}, "opt_state": {}, "rng": jnp.zeros(2)},
                         sharding.replicated(mesh))
  checkpoints = Checkpoints(str(tmp_path))
  assert checkpoints.save(1, state, {"next_step": 1}, {"format": 0}, force=True)
  checkpoints.close()
  caplog.set_level("INFO", logger="absl")
  reader = Checkpoints(str(tmp_path), read_only=True)
  reader.restore_model(1, {"params": state["params"], "model_state": {}})
  reader.close()
  notices = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert notices == [], notices
