"""Process-wide JAX settings every command applies before it compiles anything."""

import os

import jax

# Compiled programs are kept here between runs, so a second run of the same config starts
# its first step in seconds; JAX_COMPILATION_CACHE_DIR overrides it, "" turns it off.
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "brats_jax", "xla")


def configure() -> None:
  # Several processes on CPUs (tests, laptops) need a CPU collectives backend.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  cache = os.environ.get("JAX_COMPILATION_CACHE_DIR", DEFAULT_CACHE)
  if cache:
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
