"""Raw datasets in, prepared stores out, predictions written back.

  layouts.py           each dataset layout: files, channels, label convention, output format
  discovery.py         finding a raw folder's cases (and what each lacks)
  raw_cases.py         reading and checking a raw case's files into images and labels
  preprocessing.py     crop, normalisation, filters, resizing, and undoing them
  prepare.py           a raw dataset into a store (brats-jax-prepare)
  store.py             the TensorStore zarr3 store: one shard per case, random patch reads
  splits.py            which cases train and which validate
  synth.py             synthetic BraTS-like data in every layout (brats-jax-synth)
  prediction_files.py  predictions written and read back in each layout's own form
"""
