"""The commands' re-execution with glibc's huge-page tunable: when it happens, and that it takes effect."""

import importlib
import os
import subprocess
import sys

import pytest

from conftest import REPO
from pfca_jax import huge_pages

TUNE = 'glibc.malloc.hugetlb=1'


@pytest.mark.parametrize('environ, libc, thp, expected', [
    ({}, (2, 36), 'madvise', TUNE),
    ({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, (2, 36), 'madvise', 'glibc.malloc.arena_max=2:' + TUNE),
    ({}, (2, 35), 'madvise', TUNE),
    ({}, (2, 34), 'madvise', None),     # The tunable does not exist before 2.35.
    ({}, None, 'madvise', None),        # musl or no libc information.
    ({}, (2, 36), 'always', None),      # Every large mapping gets huge pages already.
    ({}, (2, 36), 'never', None),
    ({}, (2, 36), None, None),          # No THP on this kernel.
    ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, (2, 36), 'madvise', None),  # The user's choice stands.
    ({'PFCA_JAX_HUGE_PAGES': '0'}, (2, 36), 'madvise', None),
    ({'PFCA_JAX_HUGE_PAGES': '1'}, (2, 36), 'madvise', TUNE),
])
def test_reexec_environment(environ, libc, thp, expected):
  env = huge_pages.reexec_environment(environ, libc, thp)
  if expected is None:
    assert env is None
  else:
    assert env['GLIBC_TUNABLES'] == expected
    assert {k: v for k, v in env.items() if k != 'GLIBC_TUNABLES'} == {
        k: v for k, v in environ.items() if k != 'GLIBC_TUNABLES'}


MI = '/site-packages/cmeel.prefix/lib/libmimalloc.so.3'
MI_ENV = {'LD_PRELOAD': MI, 'MIMALLOC_PURGE_DELAY': '-1', 'MIMALLOC_ALLOW_LARGE_OS_PAGES': '1'}
OFF = {'PFCA_JAX_MIMALLOC': '0'}


@pytest.mark.parametrize('environ, thp, expected', [
    ({}, 'never', MI_ENV),                                       # The default, without glibc's huge pages.
    ({}, 'madvise', dict(MI_ENV, GLIBC_TUNABLES=TUNE)),          # Both.
    ({'PFCA_JAX_MIMALLOC': '1'}, 'never', MI_ENV),
    (OFF, 'never', None),
    (OFF, 'madvise', {'GLIBC_TUNABLES': TUNE}),                  # Turning one off keeps the other.
    ({'MIMALLOC_PURGE_DELAY': '100'}, 'never', dict(MI_ENV, MIMALLOC_PURGE_DELAY='100')),  # The user's option stands.
    ({'LD_PRELOAD': '/usr/lib/libjemalloc.so.2'}, 'never', None),  # Another preloaded library: leave it alone.
    (MI_ENV, 'never', None),                                     # After the exec: no second one.
])
def test_reexec_environment_with_mimalloc(environ, thp, expected):
  env = huge_pages.reexec_environment(environ, (2, 36), thp, MI)
  assert env == (None if expected is None else dict(environ, **expected))


def test_no_mimalloc_wheel_no_preload():
  assert huge_pages.reexec_environment({}, (2, 36), 'never', None) is None


@pytest.mark.parametrize('environ, expected', [
    ({}, {'GLIBC_TUNABLES': TUNE}),                             # Huge pages stay; no preload.
    ({'JAX_PLATFORMS': 'cuda'}, {'GLIBC_TUNABLES': TUNE}),
    ({'JAX_PLATFORMS': 'cpu'}, dict(MI_ENV, GLIBC_TUNABLES=TUNE)),  # The user asked for the CPU backend.
])
def test_no_preload_where_an_accelerator_backend_is_installed(environ, expected):
  env = huge_pages.reexec_environment(environ, (2, 36), 'madvise', MI, accelerator=True)
  assert env == dict(environ, **expected)


@pytest.mark.parametrize('installed', [[], ['jax_plugins/xla_cuda13/__init__.py'], ['libtpu/__init__.py']])
def test_accelerator_lookup_follows_the_installed_packages(installed, tmp_path, monkeypatch):
  # A site-packages holding only what the parameter names: a CUDA plugin wheel's files, libtpu's, or nothing.
  for name in installed:
    (tmp_path / name).parent.mkdir(parents=True)
    (tmp_path / name).write_text('')
  monkeypatch.setattr(sys, 'path', [str(tmp_path)])
  for module in ('jax_plugins', 'libtpu'):
    monkeypatch.delitem(sys.modules, module, raising=False)
  importlib.invalidate_caches()
  assert huge_pages.accelerator_installed() == bool(installed)


@pytest.mark.parametrize('text, mode', [
    ('always [madvise] never\n', 'madvise'), ('[always] madvise never\n', 'always'),
    ('always madvise [never]\n', 'never'), ('garbage\n', None)])
def test_thp_mode(tmp_path, text, mode):
  path = tmp_path / 'enabled'
  path.write_text(text)
  assert huge_pages.thp_mode(str(path)) == mode


def test_thp_mode_missing_file(tmp_path):
  assert huge_pages.thp_mode(str(tmp_path / 'absent')) is None


# Reports the process id on both sides of the exec, then whether a large malloc'd block (not numpy,
# which madvises its own arrays) came back on huge pages.
_PROBE = '''
import ctypes, os, sys
from pfca_jax import huge_pages
print('pid', os.getpid(), flush=True)
huge_pages.reexec_if_useful()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
block = libc.malloc(64 << 20)
ctypes.memset(block, 1, 64 << 20)
with open('/proc/self/smaps_rollup') as f:
  huge_kb = next(int(line.split()[1]) for line in f if line.startswith('AnonHugePages'))
print('allocator', huge_pages.allocator(), flush=True)
print('args', sys.argv[1:], 'tunables', os.environ.get('GLIBC_TUNABLES'), 'huge_kb', huge_kb)
'''


def _probe(extra_env):
  env = {k: v for k, v in os.environ.items()
         if k not in ('GLIBC_TUNABLES', 'LD_PRELOAD', huge_pages.OPT_OUT) and not k.startswith('MIMALLOC_')}
  env[huge_pages.MIMALLOC_OPT_OUT] = '0'  # These probe glibc; mimalloc has its own test below.
  env.update(extra_env)
  out = subprocess.run([sys.executable, '-c', _PROBE, 'a', '--b=c'], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=60, check=True).stdout.splitlines()
  return out


needs_madvise_thp = pytest.mark.skipif(
    not (huge_pages.thp_mode() == 'madvise' and (huge_pages.glibc_version() or (0, 0)) >= (2, 35)),
    reason='needs glibc >= 2.35 and transparent huge pages in madvise mode')


@needs_madvise_thp
def test_reexec_keeps_process_and_arguments_and_gets_huge_pages():
  lines = _probe({})
  pids = [line for line in lines if line.startswith('pid')]
  assert len(pids) == 2 and pids[0] == pids[1], lines  # Printed before and after the exec.
  assert f"args ['a', '--b=c'] tunables {TUNE}" in lines[-1]
  assert int(lines[-1].split()[-1]) >= 32 * 1024, lines  # At least half of the 64 MiB block.


@needs_madvise_thp
def test_opt_out_runs_once_on_small_pages():
  lines = _probe({huge_pages.OPT_OUT: '0'})
  assert len([line for line in lines if line.startswith('pid')]) == 1
  assert lines[-1].endswith('tunables None huge_kb 0'), lines


@pytest.mark.skipif(huge_pages.mimalloc_library() is None, reason='the cmeel-mimalloc wheel is not installed')
def test_reexec_preloads_mimalloc_once():
  lines = _probe({huge_pages.MIMALLOC_OPT_OUT: '1', huge_pages.OPT_OUT: '0'})
  assert len([line for line in lines if line.startswith('pid')]) == 2, lines
  assert 'allocator mimalloc' in lines, lines
  assert "args ['a', '--b=c'] tunables None" in lines[-1], lines


def test_allocator_reads_this_process_preload(monkeypatch):
  monkeypatch.setenv('LD_PRELOAD', MI)
  assert huge_pages.allocator() == 'mimalloc'
  monkeypatch.delenv('LD_PRELOAD')
  assert huge_pages.allocator() == 'glibc'
