"""The platform a program is built for, so each per-platform lowering is chosen while the
program is traced.

The model has per-platform forms of the same function (CPU convolutions over depth taps, the
TPU's folded full-resolution level, TPU-friendly resampling and rematerialisation).
jax.lax.platform_dependent would trace every form and let the compiler keep one: five times
the tracing (5.8 s instead of 1.2 s for the tiny test model). Instead the code that builds a
program names its devices (`building_for`), and `choose` picks the form at trace time. Code
traced outside `building_for` (eager calls, tests) runs on the default backend, which is then
the target.
"""

import contextlib
import contextvars

import jax

_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("brats_jax_platform",
                                                                     default=None)


@contextlib.contextmanager
def building_for(mesh: jax.sharding.Mesh):
  """Traces inside this block build programs for the mesh's devices (their platform)."""
  token = _TARGET.set(mesh.devices.flat[0].platform)
  try:
    yield
  finally:
    _TARGET.reset(token)


def target() -> str:
  """"cpu", "gpu" or "tpu": what the program being traced will run on."""
  return _TARGET.get() or jax.default_backend()


def choose(*, default, cpu=None, gpu=None, tpu=None):
  """The form for the target platform (`default` where none is given for it)."""
  return {"cpu": cpu, "gpu": gpu, "tpu": tpu}.get(target()) or default
