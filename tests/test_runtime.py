"""Process-wide settings: a CPU machine with libtpu installed (the tpu-aot extra) runs on the
CPU without trying the TPU runtime; TPU and GPU machines and an explicit JAX_PLATFORMS are
left alone. Without accelerators each core is a CPU device, unless the user chose a count."""

import importlib.metadata
import importlib.util
import os
import subprocess
import sys

import pytest

from brats_jax import runtime


@pytest.mark.parametrize("libtpu,platforms,tpu_chips,expected", [
    (True, "", 0, True),       # the tpu-aot extra on a CPU machine: the CPU alone
    (True, "", 4, False),      # a TPU VM: JAX's own choice
    (True, "tpu", 0, False),   # the user chose
    (False, "", 0, False),     # no libtpu: nothing to avoid
])
def test_cpu_only_despite_libtpu(monkeypatch, libtpu, platforms, tpu_chips, expected):
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name: (object() if libtpu else None) if name == "libtpu"
                      else real_find_spec(name))
  monkeypatch.setenv("JAX_PLATFORMS", platforms)
  monkeypatch.setattr(runtime, "_tpu_chips_on_pci", lambda: tpu_chips)
  assert runtime.cpu_only_despite_libtpu() is expected


def test_a_gpu_plugin_keeps_jax_choosing(monkeypatch):
  """A GPU box with libtpu installed too: JAX's own choice (the GPU) stands."""
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name: object() if name == "libtpu" else real_find_spec(name))
  monkeypatch.setenv("JAX_PLATFORMS", "")
  monkeypatch.setattr(runtime, "_tpu_chips_on_pci", lambda: 0)
  plugin = type("EntryPoint", (), {"name": "xla_cuda13"})()
  monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [plugin])
  assert runtime.cpu_only_despite_libtpu() is False


def _devices_in_a_new_process(**env_changes) -> tuple:
  """(device count, cores_as_devices()) of a new process that calls runtime.configure()."""
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
  env.update(JAX_PLATFORMS="cpu", **env_changes)
  script = ("from brats_jax import runtime; runtime.configure(); import jax; "
            "print(len(jax.devices()), runtime.cores_as_devices())")
  result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
  count, as_devices = result.stdout.split()
  return int(count), as_devices == "True"


def test_a_cpu_machine_shows_each_core_as_a_device():
  cores = len(os.sched_getaffinity(0))
  assert _devices_in_a_new_process() == (min(cores, runtime.MAX_CPU_DEVICES), True)


@pytest.mark.parametrize("env", [{"JAX_NUM_CPU_DEVICES": "3"},
                                 {"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}])
def test_a_cpu_device_count_the_user_chose_stands(env):
  assert _devices_in_a_new_process(**env) == (3, False)
