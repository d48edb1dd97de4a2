"""The optimiser and its learning-rate schedule (optax), from the config's `train` section."""

import ml_collections
import optax


def learning_rate_schedule(config: ml_collections.ConfigDict):
  """Linear warm-up, then cosine or polynomial (nnU-Net's 0.9) decay to the last step."""
  decay_steps = max(config.num_steps - config.warmup_steps, 1)
  decay = {
      "cosine": lambda: optax.cosine_decay_schedule(config.learning_rate, decay_steps),
      "poly": lambda: optax.polynomial_schedule(config.learning_rate, 0.0, 0.9, decay_steps),
      "constant": lambda: optax.constant_schedule(config.learning_rate),
  }[config.schedule]()
  if config.warmup_steps == 0:
    return decay
  warmup = optax.linear_schedule(0.0, config.learning_rate, config.warmup_steps)
  return optax.join_schedules([warmup, decay], [config.warmup_steps])


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW or SGD with Nesterov momentum and decoupled decay."""
  schedule = learning_rate_schedule(config)
  if config.optimizer == "adamw":
    opt = optax.adamw(schedule, weight_decay=config.weight_decay)
  else:  # "sgd" (config_checks.validate admits no other name)
    opt = optax.chain(optax.add_decayed_weights(config.weight_decay),
                      optax.sgd(schedule, momentum=config.momentum, nesterov=True))
  return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), opt)
