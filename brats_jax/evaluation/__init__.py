"""Scores and pictures.

  metrics.py       Dice, HD95, sensitivity, ... with the BraTS empty-mask conventions
  evaluate.py      scoring a folder of predictions against references (brats-jax-evaluate)
  choose_rules.py  post-processing rules chosen on validation predictions
  plots.py         case overlays, GIF sweeps, Dice distributions, training curves
  views.py         more views of a case: slice grids, every slice, a rotating projection
"""
