"""The optimiser and its learning-rate schedule (optax), from the config's `train` section."""

import ml_collections
import optax

# train.schedule: the decay after the linear warm-up, to the last step.
_DECAYS = {
    "poly": lambda c, steps: optax.polynomial_schedule(c.learning_rate, 0.0, 0.9, steps),
    "cosine": lambda c, steps: optax.cosine_decay_schedule(c.learning_rate, steps),
    "constant": lambda c, steps: optax.constant_schedule(c.learning_rate),
}
SCHEDULES = tuple(_DECAYS)
# train.optimizer, both with decoupled weight decay.
_OPTIMIZERS = {
    "adamw": lambda c, schedule: optax.adamw(schedule, weight_decay=c.weight_decay),
    "sgd": lambda c, schedule: optax.chain(
        optax.add_decayed_weights(c.weight_decay),
        optax.sgd(schedule, momentum=c.momentum, nesterov=True)),
}
OPTIMIZERS = tuple(_OPTIMIZERS)


def learning_rate_schedule(config: ml_collections.ConfigDict):
  """Linear warm-up, then cosine or polynomial (nnU-Net's 0.9) decay to the last step."""
  decay = _DECAYS[config.schedule](config, max(config.num_steps - config.warmup_steps, 1))
  if config.warmup_steps == 0:
    return decay
  warmup = optax.linear_schedule(0.0, config.learning_rate, config.warmup_steps)
  return optax.join_schedules([warmup, decay], [config.warmup_steps])


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Global-norm clipping (grad_clip_norm; 0: none), then AdamW or SGD with Nesterov
  momentum."""
  optimiser = _OPTIMIZERS[config.optimizer](config, learning_rate_schedule(config))
  if not config.grad_clip_norm:
    return optimiser
  return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), optimiser)
