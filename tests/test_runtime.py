"""Process-wide settings: a CPU machine with libtpu installed (the tpu-aot extra) runs on the
CPU without trying the TPU runtime; TPU and GPU machines and an explicit JAX_PLATFORMS are
left alone."""

import importlib.metadata
import importlib.util

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
