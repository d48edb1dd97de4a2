"""The platform a program is built for: each per-platform lowering is chosen while the
program is traced, and each platform's XLA options are given when it is compiled.

The model has per-platform forms of the same function (CPU convolutions over depth taps, the
TPU's folded full-resolution level, TPU-friendly resampling and rematerialisation).
jax.lax.platform_dependent would trace every form and let the compiler keep one: five times
the tracing (several times the seconds, for the tiny test model). Instead the code that builds a
program names its devices (`building_for`), and `choose` picks the form at trace time. Code
traced outside `building_for` (eager calls, tests) runs on the default backend, which is then
the target. `jit` does both for a program that runs on a mesh.
"""

import contextlib
import contextvars
import functools
import os
import re

import jax

_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("brats_jax_platform",
                                                                     default=None)


@contextlib.contextmanager
def tracing_for(platform: str):
  """Traces inside this block build programs for `platform` ("cpu", "gpu" or "tpu")."""
  token = _TARGET.set(platform)
  try:
    yield
  finally:
    _TARGET.reset(token)


def building_for(mesh: jax.sharding.Mesh):
  """Traces inside this block build programs for the mesh's devices (their platform)."""
  return tracing_for(mesh.devices.flat[0].platform)


def target() -> str:
  """"cpu", "gpu" or "tpu": what the program being traced will run on."""
  return _TARGET.get() or jax.default_backend()


def choose(*, default, cpu=None, gpu=None, tpu=None):
  """The form for the target platform (`default` where none is given for it)."""
  return {"cpu": cpu, "gpu": gpu, "tpu": tpu}.get(target()) or default


# XLA options for the programs built for a platform, each on by default because a real
# device measured that it helps (docs/benchmarks.md, "One H200"). GPUs: XLA lays 3D
# convolutions out channels-first on Hopper and cuDNN then transposes around every call (31%
# of configs/default.py's step on an H200); forcing channels-last took the step from 39.9 to
# 32.0 ms (benchmarks/results/h200_2026-12-04.json).
COMPILER_OPTIONS = {"gpu": {"xla_gpu_force_conv_nhwc": True}}


def compiler_options(mesh: jax.sharding.Mesh) -> dict:
  """The XLA options for programs on the mesh's platform, except those the user sets in
  XLA_FLAGS (theirs stand: a per-program option would override the flag)."""
  flags = os.environ.get("XLA_FLAGS", "")
  return {name: value
          for name, value in COMPILER_OPTIONS.get(mesh.devices.flat[0].platform, {}).items()
          if not re.search(rf"--{name}(=|\s|$)", flags)}


def jit(fn, mesh: jax.sharding.Mesh, **jit_kwargs):
  """jax.jit of a program that runs on the mesh: traced for its platform (`choose` picks
  the per-platform forms) and compiled with the platform's XLA options."""

  @functools.wraps(fn)
  def traced_for_the_mesh(*args, **kwargs):
    with building_for(mesh):
      return fn(*args, **kwargs)

  return jax.jit(traced_for_the_mesh, compiler_options=compiler_options(mesh) or None,
                 **jit_kwargs)
