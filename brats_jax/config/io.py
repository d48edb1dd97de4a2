"""Loading config files (Python files whose get_config() returns an ml_collections.ConfigDict)."""

import importlib.util
import os

import ml_collections


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """Runs get_config() of a Python config file given by path."""
  name = "brats_jax_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise FileNotFoundError(f"{path}: not a Python config file")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def sibling_config(this_file: str, name: str) -> ml_collections.ConfigDict:
  """A config file next to `this_file` (configs/ is a folder of files, not a package)."""
  return load_config_file(os.path.join(os.path.dirname(os.path.abspath(this_file)), name))
