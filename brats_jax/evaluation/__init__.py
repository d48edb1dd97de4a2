"""Scores and pictures.

  metrics.py   Dice, HD95, sensitivity, ... with the BraTS empty-mask conventions
  evaluate.py  scoring a folder of predictions against references (brats-jax-evaluate)
  plots.py     case overlays, GIF sweeps, Dice distributions, training curves
"""
