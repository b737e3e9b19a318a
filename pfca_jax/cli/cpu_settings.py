"""The CPU settings a command applies before JAX starts. Never on import: `apply()` is called explicitly.

The commands (`python -m pfca_jax.main`, `python -m pfca_jax.bench`, experiments/*.py) call `apply()`
first thing in their `__main__`; a script of your own can do the same (docs/models.md). Each setting is
switched off by an environment variable set to 0, and all of them by PFCA_JAX_CPU_SETTINGS=0. What each
one gains is measured in experiments/results/speed.md ("CPU XLA flag", "Huge pages", "mimalloc").

1. XLA's own CPU convolutions instead of its YNNPACK path (PFCA_JAX_XLA_FLAG=0 leaves XLA_FLAGS as it
   is), which make our networks' train steps faster: the flag below is added to XLA_FLAGS. Only the
   CPU backend reads it, and only when it starts, so it must be set before the first computation; a
   setting of the same flag in XLA_FLAGS wins.
2. Host buffers on transparent huge pages (PFCA_JAX_HUGE_PAGES=0). XLA's CPU runtime allocates a
   train step's large temporary buffer anew for every step, and glibc maps and unmaps a block that
   large each time, so every step faults the whole buffer in again, one 4 KiB page at a time. With
   glibc's `glibc.malloc.hugetlb=1` tunable (glibc >= 2.35) malloc marks such blocks MADV_HUGEPAGE;
   where the kernel's THP mode is `madvise` they get 2 MiB pages, and far fewer faults.
3. mimalloc (PFCA_JAX_MIMALLOC=0), where the `cmeel-mimalloc` wheel is installed (requirements.txt,
   Linux x86-64): preloaded with freed memory never given back to the kernel (MIMALLOC_PURGE_DELAY=-1)
   and on large OS pages, so each step reuses the previous step's buffer instead of faulting it in.
   The price: the process's resident memory does not shrink after its largest step. A library already
   in LD_PRELOAD leaves the allocator alone; so does an installed GPU or TPU backend (unless
   JAX_PLATFORMS=cpu), where the step's buffers live in device memory.

glibc reads its tunables and the loader LD_PRELOAD once, when a process starts, so 2 and 3 take one
exec of the same command with the environment extended: same process id, same arguments, before
anything heavy is imported, inherited by the command's child processes. Nothing is re-executed when
it would change nothing.
"""

import importlib.metadata
import importlib.util
import os
import sys

XLA_FLAG = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'
ALL_OPT_OUT = 'PFCA_JAX_CPU_SETTINGS'
XLA_FLAG_OPT_OUT = 'PFCA_JAX_XLA_FLAG'
TUNABLE = 'glibc.malloc.hugetlb'
OPT_OUT = 'PFCA_JAX_HUGE_PAGES'
MIMALLOC_OPT_OUT = 'PFCA_JAX_MIMALLOC'
# A user's own setting of either wins (setdefault below).
MIMALLOC_OPTIONS = {'MIMALLOC_PURGE_DELAY': '-1', 'MIMALLOC_ALLOW_LARGE_OS_PAGES': '1'}
_THP_MODE_FILE = '/sys/kernel/mm/transparent_hugepage/enabled'


def thp_mode(path: str = _THP_MODE_FILE) -> str | None:
  """The kernel's transparent huge page mode (`always`, `madvise` or `never`), None where unknown."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find('['), text.find(']')
  return text[start + 1:end] if 0 <= start < end else None


def glibc_version() -> tuple[int, int] | None:
  try:
    name, version = os.confstr('CS_GNU_LIBC_VERSION').split()  # 'glibc 2.36'
    major, minor = version.split('.')[:2]
    return (int(major), int(minor)) if name == 'glibc' else None
  except (AttributeError, OSError, ValueError):
    return None


def mimalloc_library() -> str | None:
  """The path of the installed `cmeel-mimalloc` wheel's shared library, None where it is not installed."""
  try:
    path = importlib.metadata.distribution('cmeel-mimalloc').locate_file('cmeel.prefix/lib/libmimalloc.so.3')
  except importlib.metadata.PackageNotFoundError:
    return None
  return str(path) if os.path.isfile(path) else None


def accelerator_installed() -> bool:
  """Whether JAX has a GPU or TPU backend here: CUDA and ROCm plugins live in the `jax_plugins`
  namespace package, TPU support in `libtpu`. Looked up without importing JAX."""
  return any(importlib.util.find_spec(name) is not None for name in ('jax_plugins', 'libtpu'))


def reexec_environment(environ, libc: tuple[int, int] | None, thp: str | None,
                       mimalloc: str | None = None, accelerator: bool = False) -> dict | None:
  """The environment to exec again with, or None when re-executing would change nothing."""
  env = dict(environ)
  if accelerator and environ.get('JAX_PLATFORMS', '').strip() != 'cpu':
    mimalloc = None
  if (environ.get(OPT_OUT, '1') != '0' and TUNABLE not in environ.get('GLIBC_TUNABLES', '')
      and libc is not None and libc >= (2, 35) and thp == 'madvise'):
    env['GLIBC_TUNABLES'] = ':'.join(t for t in (environ.get('GLIBC_TUNABLES'), f'{TUNABLE}=1') if t)
  if mimalloc and environ.get(MIMALLOC_OPT_OUT, '1') != '0' and not environ.get('LD_PRELOAD'):
    env['LD_PRELOAD'] = mimalloc
    for name, value in MIMALLOC_OPTIONS.items():
      env.setdefault(name, value)
  return None if env == dict(environ) else env


def allocator() -> str:
  """'mimalloc' where this process runs with the preloaded mimalloc, else 'glibc' (for benchmark reports)."""
  return 'mimalloc' if 'libmimalloc' in os.environ.get('LD_PRELOAD', '') else 'glibc'


def huge_pages_enabled() -> bool:
  """Whether this process's large host buffers can land on huge pages (for benchmark reports)."""
  mode = thp_mode()
  return mode == 'always' or (mode == 'madvise' and f'{TUNABLE}=1' in os.environ.get('GLIBC_TUNABLES', ''))


def apply() -> None:
  """All three settings, each unless switched off. Call before JAX is imported: it may replace the
  process with the same command (and then never returns)."""
  if os.environ.get(ALL_OPT_OUT, '1') == '0':
    return
  set_xla_flag()
  reexec_if_useful()


def set_xla_flag() -> None:
  flags = os.environ.get('XLA_FLAGS', '')
  if os.environ.get(XLA_FLAG_OPT_OUT, '1') != '0' and XLA_FLAG.split('=')[0] not in flags:
    os.environ['XLA_FLAGS'] = f'{flags} {XLA_FLAG}'.strip()


def reexec_if_useful() -> None:
  """Settings 2 and 3: may replace the process with itself (never returns then)."""
  env = reexec_environment(os.environ, glibc_version(), thp_mode(), mimalloc_library(), accelerator_installed())
  if env is None or not sys.executable:  # An embedded interpreter has no executable to exec.
    return
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)
  except OSError:
    pass  # Unusual hosts (no exec permission, sandboxing): run on, only slower.
