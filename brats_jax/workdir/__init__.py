"""A run's workdir: what a checkpoint holds and the rules for using it again.

  train_state.py  the train state and how it splits into checkpoint items; restore targets
  checkpoints.py  the Orbax wrapper: save, restore onto any devices, unreadable checkpoints
  contract.py     the inference contract saved with every checkpoint; relaunch rules
  split_record.py WORKDIR/split.json: the run's training and validation cases, by source
  validation_predictions.py  WORKDIR/validation_predictions/: the last validation's
                  probabilities per case, for choosing post-processing
  folds.py        a cross-validation parent's layout: one workdir per fold
"""
