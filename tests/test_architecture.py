"""The shape of the package: the code map of docs/architecture.md and of every package's
docstring names every module; no package imports from a floor above its own; no import
circle between modules; no private JAX imports; and the facts that once lived in two places
defined in one."""

import ast
import os
import re

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "brats_jax")


def _modules() -> dict:
  """{module name: source} of every module of brats_jax."""
  found = {}
  for folder, _, names in os.walk(PACKAGE):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        module = module.removesuffix(".__init__")
        with open(path) as f:
          found[module] = f.read()
  return found


def _imports(module: str, source: str, modules) -> set:
  """The brats_jax modules `module` imports (a package import counts as its __init__)."""
  imported = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("brats_jax"):
      for alias in node.names:
        sub = f"{node.module}.{alias.name}"
        imported.add(sub if sub in modules else node.module)
    elif isinstance(node, ast.Import):
      imported |= {a.name for a in node.names if a.name.startswith("brats_jax")}
  return imported - {module}


def _cycle(graph: dict):
  """A cycle of the directed graph as a list of nodes, or None."""
  state = {}

  def visit(node, path):
    state[node] = "open"
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        return path[path.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt, path + [nxt])
        if found:
          return found
    state[node] = "done"
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node, [node])
      if found:
        return found
  return None


def _unit(module: str) -> str:
  """A module's unit in the package graph: its subpackage, or itself at the top level."""
  parts = module.split(".")
  return ".".join(parts[:2])


ARCHITECTURE = os.path.join(ROOT, "docs", "architecture.md")


def _code_map() -> list:
  """[(package, [module file names])] from docs/architecture.md's "### `brats_jax/...`"
  sections, in the document's order (the import order)."""
  with open(ARCHITECTURE) as f:
    text = f.read().split("## The packages, in import order", 1)[1].split("\n## ", 1)[0]
  packages = []
  for section in re.split(r"(?m)^### ", text)[1:]:
    heading = re.match(r"`brats_jax/(\w*)/?`", section)
    assert heading, f"{ARCHITECTURE}: a section heading is not a package: {section[:60]}"
    listed = re.findall(r"(?m)^- `(\w+\.py)`: \S", section)
    packages.append((heading.group(1), listed))
  return packages


def _package_of(module: str) -> str:
  """"brats_jax.data.store" -> "data"; a top-level module -> "" (the top level)."""
  parts = module.split(".")
  return parts[1] if len(parts) > 2 or os.path.isdir(os.path.join(PACKAGE, parts[-1])) \
      else ""


def test_the_code_map_and_the_package_docstrings_name_every_module():
  code_map = dict(_code_map())
  folders = [""] + sorted(d for d in os.listdir(PACKAGE)
                          if os.path.isfile(os.path.join(PACKAGE, d, "__init__.py")))
  assert sorted(code_map) == sorted(folders), "docs/architecture.md's packages"
  for package in folders:
    folder = os.path.join(PACKAGE, package)
    modules = sorted(n for n in os.listdir(folder) if n.endswith(".py") and n != "__init__.py")
    assert sorted(code_map[package]) == modules, f"docs/architecture.md, brats_jax/{package}"
    with open(os.path.join(folder, "__init__.py")) as f:
      docstring = ast.get_docstring(ast.parse(f.read())) or ""
    missing = [m for m in modules if not re.search(rf"(?m)\s{re.escape(m)}\s+\S", docstring)]
    assert not missing, f"brats_jax/{package}/__init__.py's docstring does not list {missing}"


def test_no_package_imports_from_a_floor_above_its_own():
  floors = {package: floor for floor, (package, _) in enumerate(_code_map())}
  modules = _modules()
  for module, source in modules.items():
    own = _package_of(module)
    for imported in _imports(module, source, modules):
      theirs = _package_of(imported)
      assert floors[theirs] <= floors[own], (
          f"{module} imports {imported}: brats_jax/{theirs} is above brats_jax/{own} in "
          "docs/architecture.md's import order")


def test_no_import_circle_between_modules_or_subpackages():
  modules = _modules()
  graph = {m: _imports(m, s, modules) for m, s in modules.items()}
  # A package's __init__ importing its own modules is how a package is built, not a circle.
  graph = {m: {i for i in imports if not i.startswith(m + ".")} for m, imports in graph.items()}
  assert _cycle(graph) is None, " -> ".join(_cycle(graph))
  packages = {}
  for module, imports in graph.items():
    packages.setdefault(_unit(module), set()).update(
        _unit(i) for i in imports if _unit(i) != _unit(module))
  assert len(packages) > 15
  assert _cycle(packages) is None, " -> ".join(_cycle(packages))


def test_no_private_or_pmap_era_jax_apis():
  for module, source in _modules().items():
    assert not re.search(r"from jax\._src|import jax\._src|\bpmap\(|device_put_sharded",
                         source), module


def test_each_fact_has_one_definition():
  """What used to be written twice is defined once (in the module named)."""
  sources = _modules()
  for folder in ("benchmarks",):
    for name in os.listdir(os.path.join(ROOT, folder)):
      if name.endswith(".py"):
        with open(os.path.join(ROOT, folder, name)) as f:
          sources[f"{folder}.{name[:-3]}"] = f.read()
  owners = {r"(?m)^def write_atomic\(": "brats_jax.files",
            r"def (_)?flatten\(": "brats_jax.workdir.contract",
            r"(?m)^def decode\(": "brats_jax.tasks",
            r"def (dice|iou)_from_counts\(": "brats_jax.tasks",
            r"def level_filters\(": "brats_jax.model.blocks",
            r"output_size_in_bytes": "brats_jax.train.compile",  # the memory formula
            r"def _newest_readable\(": "brats_jax.workdir.checkpoints",
            r"\bos\.replace\(|\.partial[\"-]": "brats_jax.files"}
  for pattern, owner in owners.items():
    holders = {m for m, s in sources.items() if re.search(pattern, s)}
    # Whole folders renamed into place (not file writes): a store, a synthetic dataset, an
    # unreadable checkpoint set aside.
    if "replace" in pattern:
      holders -= {"brats_jax.data.prepare", "brats_jax.data.synth",
                  "brats_jax.workdir.checkpoints"}
    assert holders == {owner}, (pattern, holders)
