"""Whole-volume inference.

  sliding_window.py  MONAI-compatible sliding_window_inference, channels-last and jittable
  case_predictor.py  a model's whole-case prediction, spread over every device
  trained_model.py   a workdir checkpoint's model and contract, and nothing else
  inputs.py          the cases to predict: a raw folder of any layout, or a store
  ensemble.py        several runs (or a folds parent) predicting together
  postprocessing.py  the rules chosen on validation, applied to a case's labels
  predict.py         segmenting a folder of patients (brats-jax-predict)
  onnx_export.py     a run's network as an ONNX graph with its contract (brats-jax-export)
"""
