"""Loading config files, and the human-readable config.json of a workdir."""

import importlib.util
import os

import ml_collections

WORKDIR_CONFIG = "config.json"


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """Runs get_config() of a Python config file given by path."""
  name = "brats_jax_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def sibling_config(this_file: str, name: str) -> ml_collections.ConfigDict:
  """A config file next to `this_file` (configs/ is a folder of files, not a package)."""
  return load_config_file(os.path.join(os.path.dirname(os.path.abspath(this_file)), name))


def save_workdir_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  path = os.path.join(workdir, WORKDIR_CONFIG)
  tmp = path + ".partial"
  with open(tmp, "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(tmp, path)
