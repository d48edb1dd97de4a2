"""Experiments made of runs: each cell trains, predicts and scores through the commands.

  sweep.py  a grid of config overrides, trained, predicted and scored into one table
            (brats-jax-sweep)
"""
