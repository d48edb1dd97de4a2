"""Process-wide JAX settings every command applies before it compiles anything."""

import glob
import importlib.metadata
import importlib.util
import os
import pkgutil
import re

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


def _gpu_plugins() -> list:
  """Names of the installed JAX GPU plugins (CUDA, ROCm)."""
  # JAX finds plugins by entry point or as modules of the jax_plugins namespace package.
  names = [e.name for e in importlib.metadata.entry_points(group="jax_plugins")]
  if importlib.util.find_spec("jax_plugins") is not None:
    import jax_plugins  # noqa: PLC0415 (a namespace package, only where plugins exist)
    names += [m.name for m in pkgutil.iter_modules(jax_plugins.__path__)]
  return [n for n in names if "cuda" in n or "rocm" in n]


def _accelerator_expected() -> bool:
  """Whether JAX will find an accelerator: JAX_PLATFORMS names one first, or (unset) a GPU
  plugin is installed or a TPU chip is on the PCI bus."""
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms:
    return platforms.split(",")[0].strip() != "cpu"
  return bool(_gpu_plugins()) or _tpu_chips_on_pci() > 0


def cpu_only_despite_libtpu() -> bool:
  """Whether this is a machine without accelerators whose environment has libtpu (the
  tpu-aot extra, for deviceless compiles): JAX would try the TPU runtime at start, which
  prints its discovery errors before falling back to the CPU. Not so where JAX_PLATFORMS
  is set, a TPU chip is on the PCI bus, or a GPU plugin is installed."""
  if os.environ.get("JAX_PLATFORMS") or importlib.util.find_spec("libtpu") is None:
    return False
  return not _accelerator_expected()


# XLA:CPU runs the convolutions of one program mostly on one core at a time (its YNNPACK
# kernels do not split a 3D U-Net's layers), while programs on separate devices run at the
# same time. So on a machine without accelerators every core is shown as a CPU device (up to
# MAX_CPU_DEVICES, which bounds the replicated state and prediction buffers), and training
# and prediction run data-parallel over them (measured on 2 cores: docs/benchmarks.md, "Each
# core a device"; benchmarks/results/peer_cores_as_devices.json).
MAX_CPU_DEVICES = 8
_cores_as_devices = False


def _usable_cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cpu_device_count_chosen() -> bool:
  """Whether the CPU device count was set already: by JAX_NUM_CPU_DEVICES, XLA's
  --xla_force_host_platform_device_count or jax.config."""
  return (bool(os.environ.get("JAX_NUM_CPU_DEVICES"))
          or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
          or jax.config.jax_num_cpu_devices != -1)


def cpu_devices_env(count: int, env=None) -> dict:
  """A copy of `env` (default: this process's environment) for a new process whose CPU shows
  `count` devices: JAX_NUM_CPU_DEVICES, with XLA's older --xla_force_host_platform_device_count
  dropped from XLA_FLAGS. (A process sets its own count before JAX starts: the same variable,
  or jax.config's jax_num_cpu_devices.)"""
  env = dict(os.environ if env is None else env)
  env["XLA_FLAGS"] = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                            env.get("XLA_FLAGS", "")).strip()
  env["JAX_NUM_CPU_DEVICES"] = str(count)
  return env


def cores_as_devices() -> bool:
  """Whether this process's devices are its CPU cores, as configure() set them up: one
  process on a machine without accelerators, the device count not chosen by the user."""
  return _cores_as_devices and jax.default_backend() == "cpu" and jax.process_count() == 1


def configure() -> None:
  # The CPU alone, as JAX would end up with, without libtpu's errors (cpu_only_despite_libtpu).
  if cpu_only_despite_libtpu():
    jax.config.update("jax_platforms", "cpu")
  global _cores_as_devices
  if not _accelerator_expected() and not _cpu_device_count_chosen():
    jax.config.update("jax_num_cpu_devices", min(_usable_cores(), MAX_CPU_DEVICES))
    _cores_as_devices = True
  # Several processes on CPUs (tests, laptops) need a CPU collectives backend.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  cache = os.environ.get("JAX_COMPILATION_CACHE_DIR", DEFAULT_CACHE)
  if cache:
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    # And XLA's autotuning results beside the programs (GPUs: cuDNN's algorithm for each
    # convolution, Triton's tiles): a program that changed (another batch size, validation,
    # a lever) autotunes only what is new. jax's default; named here because the first step
    # on a GPU is mostly autotuning.
    jax.config.update("jax_persistent_cache_enable_xla_caches",
                      "xla_gpu_per_fusion_autotune_cache_dir")
