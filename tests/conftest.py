"""Shared fixtures. Every test process sees 8 fake CPU devices (set before JAX starts;
subprocesses that need another count use runtime.cpu_devices_env)."""

import os

os.environ["JAX_NUM_CPU_DEVICES"] = "8"

# Tests compile many small programs and run each for a few steps: XLA:CPU's backend
# optimisations would cost more compile time (26 s -> 8 s for the tiny train step) than they
# save. They change how fast code runs, not what it computes; benchmarks run without them,
# and so do the tests that run full-width models (optimised_env).
_UNOPTIMISED = (" --xla_backend_optimization_level=0"
                " --xla_llvm_disable_expensive_passes=true")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + _UNOPTIMISED).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests (and the training subprocesses they start) compile the same small programs many
# times; a persistent compilation cache shared by all of them saves most of that time.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import pytest  # noqa: E402

from brats_jax.config import io as config_io  # noqa: E402
from brats_jax.data import prepare, synth  # noqa: E402
from brats_jax.train import optimizer  # noqa: E402
from brats_jax.workdir import train_state  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_SHAPE = (32, 32, 24)


def pytest_terminal_summary(terminalreporter):
  """The versions tested, beside the result (CI runs the suite on the oldest and the newest
  jax that setup.cfg allows)."""
  import importlib.metadata
  import sys
  terminalreporter.write_line("tested with Python {}, {}".format(
      sys.version.split()[0], ", ".join(
          f"{name} {importlib.metadata.version(name)}"
          for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorstore"))))


def optimised_env() -> dict:
  """The environment for a subprocess that computes more than it compiles (full-width seed
  models predicting whole cases): XLA's usual optimisations back on."""
  return dict(os.environ, XLA_FLAGS=os.environ["XLA_FLAGS"].replace(_UNOPTIMISED, ""))


def gpu_aot_env(xla_flags: str = "") -> dict:
  """The environment for a subprocess that compiles for NVIDIA GPUs this machine does not
  have (benchmarks/aot.py): the CUDA plugin of the gpu-aot extra, installed in this
  environment or (as `make` installs it, so that CPU commands never try CUDA at start) in
  the folder gpu-aot of the virtual environment. Skips the test where neither has it."""
  import importlib.util
  import sys
  folder = os.path.join(sys.prefix, "gpu-aot")
  if importlib.util.find_spec("jax_cuda12_plugin") is None and not os.path.isdir(
      os.path.join(folder, "jax_plugins")):
    pytest.skip("no CUDA plugin for deviceless GPU compiles (make installs it in "
                f"{folder}; or pip install -e '.[gpu-aot]')")
  paths = [folder, ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
  return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), JAX_PLATFORMS="cpu",
              XLA_FLAGS=xla_flags)


def tiny_config(store: str = ""):
  config = config_io.load_config_file(os.path.join(ROOT, "configs", "tiny.py"))
  config.data.store = store
  return config


def new_train_state(config, mesh):
  """(graphdef, state, optimiser) of a fresh run of `config` on `mesh`."""
  tx = optimizer.make_optimizer(config.train)
  graphdef, state = train_state.create_train_state(config, mesh, tx)
  return graphdef, state, tx


@pytest.fixture(scope="session")
def raw_datasets(tmp_path_factory):
  """A tiny synthetic dataset in each layout: {layout: folder}."""
  root = tmp_path_factory.mktemp("raw")
  folders = {}
  for layout in ("brats2021", "brats2023", "msd"):
    folders[layout] = str(root / layout)
    synth.write_dataset(folders[layout], layout, num_cases=3, shape=TINY_SHAPE, seed=1,
                        p_non_enhancing=0.0)
  return folders


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
  """A prepared store of 10 tiny brats2021 cases (2 per fold)."""
  root = tmp_path_factory.mktemp("store")
  raw = str(root / "raw")
  synth.write_dataset(raw, "brats2021", num_cases=10, shape=TINY_SHAPE, seed=3)
  store = str(root / "store")
  prepare.prepare(raw, store, num_workers=2, fg_per_class=500)
  return store
