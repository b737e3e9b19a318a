"""Helpers shared by the test modules, and 8 simulated CPU devices for the sharding tests."""

import atexit
import importlib.util
import os
import shutil
import tempfile

from pfca_jax.cli import cpu_settings  # noqa: E402 -- imports nothing but the standard library.

# The tests check values, not speed, and compiling takes most of their time: these flags make XLA's CPU
# compilations about twice as short (LLVM's optimisations off, the older loop emitters for fusions, one
# code-generation unit). XLA's own passes (fusion, layout) still run, so the programs are the ones the
# commands compile; their machine code rounds a few float operations differently, in the last bit. So
# every process of the suite, the commands the tests start included, compiles with them.
COMPILE_QUICKLY = ('--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false'
                   ' --xla_cpu_parallel_codegen_split_count=1')


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a process of the suite (this one, or a command a test starts): DEVICES simulated CPUs."""
  return f'--xla_force_host_platform_device_count={devices} {COMPILE_QUICKLY}'


# Must precede the first import of jax anywhere in the test session. The commands' XLA flag too
# (cpu_settings.py): the tests compile and run what the commands do, and its convolutions are faster.
os.environ['XLA_FLAGS'] = ' '.join(filter(None, [os.environ.get('XLA_FLAGS'), xla_flags(8)]))
cpu_settings.set_xla_flag()
# Many tests compile the same programs (a resumed run, another seed, the subprocesses of the CLI
# tests, which inherit the variables): a compilation cache shared by the session's processes
# saves compiling each again. A fresh folder each session, so nothing outlives it.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='pfca_jax_test_cache_')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

# PyTorch (test-only, the parity tests) before TensorFlow, which orbax imports below: torchvision imported
# after TensorFlow crashes the process here (its CUDA build loads triton, whose libraries clash with
# TensorFlow's). Does nothing without PyTorch.
from pfca_jax.bench import torch_reference  # noqa: E402

torch_reference.preload()

import chex  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from pfca_jax.train import checkpointing  # noqa: E402

# The tests compare with NumPy at float32 tolerances. A GPU's default for float32 products and
# convolutions is TF32 (a 10-bit mantissa): on an H100 the SE test missed rtol 2e-5 that way. Full
# float32 on every backend, as the CPU does by default.
jax.config.update('jax_default_matmul_precision', 'float32')


def apply_twice_under_jit(model, variables, x1, x2, **apply_kwargs):
  """`model.apply` on two same-shaped inputs through one jitted function, failing if it is traced twice."""
  # chex counts traces per function definition, across calls of this helper; each call counts its own.
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def forward(v, inp):
    return model.apply(v, inp, **apply_kwargs)

  return forward(variables, x1), forward(variables, x2)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_repo_module(path):
  """A Python file of the repository that is not in a package (a config, an experiment script), as a module."""
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], os.path.join(REPO, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def plain_kaiming(variables):
  """Kernels x10: plain Kaiming init. BasicSR's x0.1 makes MSRResNet's branch ~1e-5 at init, too small to see."""
  return jax.tree_util.tree_map_with_path(lambda path, v: v * 10 if path[-1].key == 'kernel' else v, variables)


def checkpointed_state(workdir, step=None):
  """The train state saved in WORKDIR/checkpoints at `step` (default: the latest), or None if there is none."""
  with checkpointing.reading(workdir) as (manager, latest):
    step = None if manager is None else (latest if step is None else step)
    return None if step is None else checkpointing.restore(manager, step)[0]


def host(tree):
  """A tree of device arrays as NumPy arrays."""
  return jax.tree.map(np.asarray, jax.device_get(tree))


def assert_trees_equal(a, b):
  """Same structure, every leaf bit-equal."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)
