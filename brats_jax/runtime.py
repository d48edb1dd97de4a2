"""Process-wide JAX settings every command applies before it compiles anything."""

import glob
import importlib.metadata
import importlib.util
import os
import pkgutil

import jax

# Compiled programs are kept here between runs, so a second run of the same config starts
# its first step in seconds; JAX_COMPILATION_CACHE_DIR overrides it, "" turns it off.
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "brats_jax", "xla")


# PCI ids of TPU chips (vendor Google): the ones JAX's own TPU detection looks for.
_GOOGLE_PCI_VENDOR = "0x1ae0"
_TPU_PCI_DEVICES = ("0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076")


def _tpu_chips_on_pci() -> int:
  chips = 0
  for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
    folder = os.path.dirname(vendor)
    try:
      with open(vendor) as f, open(os.path.join(folder, "device")) as g:
        chips += f.read().strip() == _GOOGLE_PCI_VENDOR and g.read().strip() in _TPU_PCI_DEVICES
    except OSError:
      continue
  return chips


def cpu_only_despite_libtpu() -> bool:
  """Whether this is a machine without accelerators whose environment has libtpu (the
  tpu-aot extra, for deviceless compiles): JAX would try the TPU runtime at start, which
  prints its discovery errors before falling back to the CPU. Not so where JAX_PLATFORMS
  is set, a TPU chip is on the PCI bus, or a GPU plugin is installed."""
  if os.environ.get("JAX_PLATFORMS") or importlib.util.find_spec("libtpu") is None:
    return False
  # JAX finds plugins by entry point or as modules of the jax_plugins namespace package.
  names = [e.name for e in importlib.metadata.entry_points(group="jax_plugins")]
  if importlib.util.find_spec("jax_plugins") is not None:
    import jax_plugins  # noqa: PLC0415 (a namespace package, only where plugins exist)
    names += [m.name for m in pkgutil.iter_modules(jax_plugins.__path__)]
  gpu_plugins = [n for n in names if "cuda" in n or "rocm" in n]
  return not gpu_plugins and not _tpu_chips_on_pci()


def configure() -> None:
  # The CPU alone, as JAX would end up with, without libtpu's errors (cpu_only_despite_libtpu).
  if cpu_only_despite_libtpu():
    jax.config.update("jax_platforms", "cpu")
  # Several processes on CPUs (tests, laptops) need a CPU collectives backend.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  cache = os.environ.get("JAX_COMPILATION_CACHE_DIR", DEFAULT_CACHE)
  if cache:
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
