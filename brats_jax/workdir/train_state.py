"""What a training run's state is, and how it splits into checkpoint items.

The state is one dict, replicated on every device of the mesh:

    step         int32 scalar: steps taken
    params       nnx.Param variables of the U-Net (float32)
    model_state  the other model variables (BatchNorm statistics; empty for other norms)
    opt_state    the optax optimiser state
    rng          raw key data for dropout

A checkpoint stores it as two Orbax items, so that inference restores only what it needs:
"model" = {params, model_state} and "optimizer" = {step, opt_state, rng}. Training and
prediction both build their restore targets here; prediction never builds an optimiser.
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from brats_jax import model, sharding

MODEL_KEYS = ("params", "model_state")
OPTIMIZER_KEYS = ("step", "opt_state", "rng")


def _split_model(net):
  graphdef, params, model_state = nnx.split(net, nnx.Param, ...)  # type: ignore[misc]
  return graphdef, {"params": params, "model_state": model_state}


def abstract_model(config: ml_collections.ConfigDict, mesh):
  """(graphdef, shapes of {params, model_state} carrying replicated shardings): the target
  a checkpoint's "model" item is restored into, without creating any array."""
  mc = model.model_config(config)
  graphdef, variables = _split_model(nnx.eval_shape(lambda: model.create_model(mc, config.seed)))
  return graphdef, _with_sharding(variables, mesh)


def _with_sharding(tree, mesh):
  replicated = sharding.replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                      tree)


def _state_initialiser(config: ml_collections.ConfigDict, tx: optax.GradientTransformation):
  mc = model.model_config(config)

  def init():
    _, variables = _split_model(model.create_model(mc, config.seed))
    return {"step": jnp.zeros((), jnp.int32), **variables,
            "opt_state": tx.init(variables["params"]),
            "rng": jax.random.key_data(jax.random.key(config.seed))}

  return init


def abstract_train_state(config: ml_collections.ConfigDict, mesh,
                         tx: optax.GradientTransformation):
  """(graphdef, shapes of the state carrying replicated shardings): enough to compile the
  train step for devices this machine does not have (benchmarks/aot.py)."""
  graphdef, _ = abstract_model(config, mesh)
  return graphdef, _with_sharding(jax.eval_shape(_state_initialiser(config, tx)), mesh)


def create_train_state(config: ml_collections.ConfigDict, mesh,
                       tx: optax.GradientTransformation, abstract=None):
  """(graphdef, state) with every array created directly, replicated, on the mesh devices.

  Shapes come first (eval_shape; or `abstract`, what abstract_train_state gave), then
  shardings, then the arrays themselves.
  """
  graphdef, abstract = abstract or abstract_train_state(config, mesh, tx)
  init = _state_initialiser(config, tx)
  return graphdef, jax.jit(init, out_shardings=jax.tree.map(lambda x: x.sharding, abstract))()


def to_items(state: dict) -> dict:
  """The state as checkpoint items {"model": ..., "optimizer": ...}."""
  return {"model": {k: state[k] for k in MODEL_KEYS},
          "optimizer": {k: state[k] for k in OPTIMIZER_KEYS}}


def from_items(items: dict) -> dict:
  return {**items["model"], **items["optimizer"]}


def restore_targets(state: dict) -> dict:
  """Shapes and shardings of a state's checkpoint items (what to restore into)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      to_items(state))
