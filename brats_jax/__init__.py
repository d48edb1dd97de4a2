"""brats_jax: 3D U-Nets for brain-tumour segmentation (BraTS) in JAX/Flax.

The top-level modules, which every subpackage may use:

  errors.py     the exception types for user mistakes
  files.py      files and folders on a disk or in a bucket, written whole or not at all
  labels.py     internal label values, the WT/TC/ET regions, each dataset's convention
  tasks.py      what each task outputs and how outputs become labels
  platforms.py  the platform a program is built for, its per-platform forms and XLA options
  sharding.py   the (data, space) mesh, the shardings, process barriers
  runtime.py    process-wide JAX settings (compilation cache, CPU cores as devices)
  progress.py   progress bars that stay readable in log files

The subpackages, in import order (each imports only from those before it): imageio, data,
model, workdir, inference, evaluation, train, config, experiments, cli. docs/architecture.md
is the map.
"""
