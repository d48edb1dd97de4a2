"""Each seed config against its docstring's table of the seed: every "here" cell (a field and
its value, or the network's parameter count) must hold for the config as shipped."""

import ast
import glob
import os

import jax
import pytest
from flax import nnx

from brats_jax import model as model_lib
from brats_jax.config import io as config_io
from brats_jax.workdir.contract import flatten

from conftest import ROOT

SEED_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "seeds", "*.py")))


def recipe_table(path: str) -> list:
  """The (field, value) cells of a seed config's recipe table: the rows under "The seed's
  recipe", each "| what | the seed | here" with the here cell holding field=value items
  separated by ';' (parameters=N: the count within 2%; parameters~N: within 15%)."""
  with open(path) as f:
    doc = ast.get_docstring(ast.parse(f.read()))
  lines = doc.split("The seed's recipe", 1)[1].splitlines()[3:]
  cells = []
  for line in lines:
    if line.count("|") != 2:
      break
    here = line.split("|")[2].strip()
    for item in filter(None, (i.strip() for i in here.split(";"))):
      separator = "~" if "~" in item and "=" not in item else "="
      field, value = item.split(separator, 1)
      cells.append((field.strip(), separator, ast.literal_eval(value.strip())))
  return cells


def parameter_count(config) -> int:
  """Trainable parameters, plus batch-norm statistics (Keras's "total params" counts them)."""
  model = nnx.eval_shape(lambda: model_lib.create_model(model_lib.model_config(config), 0))
  state = nnx.state(model, nnx.Param, nnx.BatchStat)
  return sum(x.size for x in jax.tree.leaves(state))


@pytest.mark.parametrize("path", SEED_CONFIGS, ids=os.path.basename)
def test_seed_config_matches_its_recipe_table(path):
  config = config_io.load_config_file(path)
  flat = flatten(config)
  cells = recipe_table(path)
  assert len(cells) >= 8, f"{path}: the recipe table is missing or too short"
  fields = [field for field, _, _ in cells]
  for needed in ("parameters", "train.optimizer", "train.learning_rate",
                 "train.grad_clip_norm", "augment.enabled"):
    assert needed in fields, f"{path}: the recipe table has no {needed} row"
  for field, separator, value in cells:
    if field == "parameters":
      count = parameter_count(config)
      tolerance = 0.02 if separator == "=" else 0.15
      assert abs(count - value) <= tolerance * value, (path, count, value)
    else:
      actual = flat[field]
      assert actual == value, f"{path}: {field} is {actual!r}, the table says {value!r}"
