"""The command lines: one thin module per command, and what they share.

  (every command)     app.py       flags, one line and exit 2 for a user mistake
  brats-jax-synth     synth.py     synthetic raw datasets in every layout
  brats-jax-prepare   prepare.py   a raw dataset once into a TensorStore zarr3 store
  brats-jax-train     train.py     train or resume a run
  brats-jax-predict   predict.py   segment patients with a trained workdir
  brats-jax-evaluate  evaluate.py  score predictions BraTS-style, with pictures
  brats-jax-sweep     sweep.py     a grid of overrides trained, predicted and scored
  brats-jax-export    export.py    a trained network for ONNX Runtime
"""
