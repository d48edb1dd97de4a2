"""The pure train step: data-parallel, and spatially partitioned with mesh.space > 1.

The step is written per data-parallel group with `shard_map` (manual over the data axis):
each group augments and differentiates its own rows of the global batch, gradients are
averaged across the data axis with an explicit `pmean`, and every device applies the same
update to its replica of the state. Within a group of mesh.space devices, the augmented
patches are split along their first spatial axis by a sharding constraint, and XLA's SPMD
partitioner does the rest: halo exchanges for the convolutions, cross-device sums for
instance norms, losses and gradients. The state buffers are donated. A non-finite loss or
gradient is detected on device; the update is then skipped and counted (or, by config, the
loop stops).
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from brats_jax import platforms, sharding, tasks
from brats_jax.train import augment, device_input, losses

# model.remat: what the backward pass keeps. none: everything; convolutions: only convolution
# outputs; auto: convolutions on TPUs (memory-bound there), none elsewhere.
REMAT = ("auto", "none", "convolutions")
# train.on_nonfinite: a non-finite step's update is skipped either way; "stop" also ends the
# run (the loop reads the step's count one step late).
ON_NONFINITE = ("skip", "stop")


def _all_finite(tree) -> jax.Array:
  """Whether every floating-point value of the tree is finite. On CPUs one check over all
  leaves laid end to end: a check per leaf is a kernel per leaf, hundreds, each compiled
  (for the demo's step, over a third more fusions and a second more to compile). On TPUs the
  copy costs more memory traffic than the kernels (XLA's v5p estimate): a check per leaf."""
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
  if not leaves:
    return jnp.bool_(True)

  def laid_end_to_end():
    return jnp.all(jnp.isfinite(jnp.concatenate([x.ravel().astype(jnp.float32)
                                                 for x in leaves])))

  def per_leaf():
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))

  return platforms.choose(cpu=laid_end_to_end, default=per_leaf)()


def _model_forward(graphdef, config, mesh):
  """forward(params, model_state, images, dropout_key) -> (outputs, new model state), with
  the rematerialisation model.remat asks for on the mesh's platform, chosen here once."""

  def forward(params, model_state, images, dropout_key):
    # copy=True: fresh Variables at this trace level, so BatchNorm may update its statistics
    # under jax.value_and_grad (flax#5050).
    net = nnx.merge(graphdef, params, model_state, copy=True)
    outputs = net(images, train=True, dropout_key=dropout_key)
    return outputs, nnx.state(net, nnx.Not(nnx.Param))

  # Keep only convolution outputs for the backward pass; norms, activations and
  # concatenations are recomputed from them: activation memory falls several-fold (TPU v5e
  # needs it at 128^3 x 2), for some recomputation (GPUs have the memory to skip it).
  remat = config.model.remat == "convolutions" or (
      config.model.remat == "auto" and mesh.devices.flat[0].platform == "tpu")
  return jax.checkpoint(forward, policy=jax.checkpoint_policies.dots_saveable) if remat \
      else forward


def _patches(batch, data, placement: str, config):
  """This group's augmented (images, labels): its streamed patches, or patches cut from the
  cases held on the devices (device_input.py)."""
  if placement == "host":
    images, labels = batch["image"], batch["label"]
  else:
    images, labels = device_input.cut_patches(data, batch["case"], batch["start"],
                                             config.data.patch_size)
  keys = jax.vmap(jax.random.key)(batch["aug_seed"])
  return augment.augment_batch(images, labels, keys, config.augment)


def _dropout_key(state):
  """The step's dropout key: the run's, folded with the step and the data-parallel group."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state["rng"]),
                                               state["step"]),
                            jax.lax.axis_index(sharding.DATA))


def _guarded_update(state, grads, loss, model_state, tx) -> tuple:
  """(new state, finite): the optimiser's update, or, where the loss, the gradients or the
  updated state are not finite, the state as it was (and the step counted as skipped)."""
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  # Finite gradients can still overflow into the new state (a huge learning rate).
  finite = (jnp.isfinite(loss) & _all_finite(grads)
            & _all_finite((params, model_state, opt_state)))
  # One cond for the whole state: a select per leaf, each hanging on a reduction over every
  # leaf, made XLA:CPU's compile of a 20 M-parameter TransUNet step 20x slower.
  kept = (state["params"], state["model_state"], state["opt_state"])
  params, model_state, opt_state = jax.lax.cond(
      finite, lambda: (params, model_state, opt_state), lambda: kept)
  return {"step": state["step"] + 1, "params": params, "model_state": model_state,
          "opt_state": opt_state, "rng": state["rng"]}, finite


def make_train_step(graphdef, tx, mesh, config: ml_collections.ConfigDict,
                    placement: str = "host"):
  """jit(shard_map(step)): (state, global batch[, data]) -> (state, metric sums). The state
  is donated. With data on the devices (placement replicated or sharded, device_input.py) the
  batch holds descriptors and the step cuts its patches from `data`."""
  forward = _model_forward(graphdef, config, mesh)

  def step(state, batch, data):
    images, labels = _patches(batch, data, placement, config)
    if mesh.shape[sharding.SPACE] > 1:
      # Augmentation ran on whole patches (replicated in the group); the network on slabs.
      images, labels = sharding.split_spatially((images, labels))
    dropout_key = _dropout_key(state)

    def loss_fn(params):
      outputs, model_state = forward(params, state["model_state"], images, dropout_key)
      return losses.total_loss(outputs, labels, config.loss), (outputs[0], model_state)

    # Differentiate with respect to a per-device ("varying") view of the replicated
    # parameters: otherwise shard_map's autodiff already sums gradients over the data axis
    # and the mean below would see an N-times-too-large, device-count-dependent gradient.
    per_device_params = jax.lax.pcast(state["params"], sharding.DATA, to="varying")
    (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        per_device_params)
    grads, loss, model_state = jax.lax.pmean((grads, loss, model_state), sharding.DATA)
    new_state, finite = _guarded_update(state, grads, loss, model_state, tx)
    counts = jax.lax.psum(tasks.overlap_counts(logits, labels, config.loss.kind), sharding.DATA)
    metrics = {"loss": jnp.where(finite, loss, 0.0), "finite_steps": finite.astype(jnp.float32),
               "nonfinite_steps": 1.0 - finite.astype(jnp.float32), **counts}
    return new_state, metrics

  data_spec = jax.P(sharding.DATA) if placement == "sharded" else jax.P()
  sharded = jax.shard_map(step, mesh=mesh, in_specs=(jax.P(), jax.P(sharding.DATA), data_spec),
                          out_specs=(jax.P(), jax.P()), axis_names=sharding.manual_axes(mesh))

  def train_step(state, batch, data=None):
    return sharded(state, batch, data or {})

  return platforms.jit(train_step, mesh, donate_argnums=(0,))
