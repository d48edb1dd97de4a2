"""Training: the loop and what it drives.

  loop.py          train_and_validate: steps, logs, validation, checkpoints, clean stops
  setup.py         everything before the first step (refusals, compile, restore): a Run
  step.py          the pure jitted shard_map step (augment, loss, gradient pmean, update)
  compile.py       the step compiled ahead of time and checked against device memory
  validation.py    whole-case validation, the ET threshold, early stopping
  cross_validation.py  every fold of a store trained, then post-processing chosen on all
  losses.py        the loss terms (optax) per task, deep supervision
  augment.py       augmentation inside the step, on the accelerator
  optimizer.py     the optax optimiser and learning-rate schedule
  epochs.py        a run's length in epochs, resolved to steps
  host_input.py    patches as a function of (seed, step, sample), read ahead from the store
  device_input.py  training cases held on the accelerators, patches cut in the step
  metrics_log.py   device-side metric sums, read one step late, metrics.jsonl, TensorBoard
  stop_request.py  SIGINT/SIGTERM as a stop at a step boundary agreed by every process
"""
