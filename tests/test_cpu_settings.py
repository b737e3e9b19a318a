"""The commands' re-execution with glibc's huge-page tunable: when it happens, and that it takes effect."""

import importlib
import os
import subprocess
import sys

import pytest

from conftest import REPO
from pfca_jax.cli import cpu_settings

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
  env = cpu_settings.reexec_environment(environ, libc, thp)
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
  env = cpu_settings.reexec_environment(environ, (2, 36), thp, MI)
  assert env == (None if expected is None else dict(environ, **expected))


def test_no_mimalloc_wheel_no_preload():
  assert cpu_settings.reexec_environment({}, (2, 36), 'never', None) is None


@pytest.mark.parametrize('environ, expected', [
    ({}, {'GLIBC_TUNABLES': TUNE}),                             # Huge pages stay; no preload.
    ({'JAX_PLATFORMS': 'cuda'}, {'GLIBC_TUNABLES': TUNE}),
    ({'JAX_PLATFORMS': 'cpu'}, dict(MI_ENV, GLIBC_TUNABLES=TUNE)),  # The user asked for the CPU backend.
])
def test_no_preload_where_an_accelerator_backend_is_installed(environ, expected):
  env = cpu_settings.reexec_environment(environ, (2, 36), 'madvise', MI, accelerator=True)
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
  assert cpu_settings.accelerator_installed() == bool(installed)


@pytest.mark.parametrize('text, mode', [
    ('always [madvise] never\n', 'madvise'), ('[always] madvise never\n', 'always'),
    ('always madvise [never]\n', 'never'), ('garbage\n', None)])
def test_thp_mode(tmp_path, text, mode):
  path = tmp_path / 'enabled'
  path.write_text(text)
  assert cpu_settings.thp_mode(str(path)) == mode


def test_thp_mode_missing_file(tmp_path):
  assert cpu_settings.thp_mode(str(tmp_path / 'absent')) is None


# Reports the process id on both sides of the exec, then whether a large malloc'd block (not numpy,
# which madvises its own arrays) came back on huge pages.
_PROBE = '''
import ctypes, os, sys
from pfca_jax.cli import cpu_settings
print('pid', os.getpid(), flush=True)
cpu_settings.reexec_if_useful()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
block = libc.malloc(64 << 20)
ctypes.memset(block, 1, 64 << 20)
with open('/proc/self/smaps_rollup') as f:
  huge_kb = next(int(line.split()[1]) for line in f if line.startswith('AnonHugePages'))
print('allocator', cpu_settings.allocator(), flush=True)
print('args', sys.argv[1:], 'tunables', os.environ.get('GLIBC_TUNABLES'), 'huge_kb', huge_kb)
'''


def _probe(extra_env):
  env = {k: v for k, v in os.environ.items()
         if k not in ('GLIBC_TUNABLES', 'LD_PRELOAD', cpu_settings.OPT_OUT) and not k.startswith('MIMALLOC_')}
  env[cpu_settings.MIMALLOC_OPT_OUT] = '0'  # These probe glibc; mimalloc has its own test below.
  env.update(extra_env)
  out = subprocess.run([sys.executable, '-c', _PROBE, 'a', '--b=c'], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=60, check=True).stdout.splitlines()
  return out


needs_madvise_thp = pytest.mark.skipif(
    not (cpu_settings.thp_mode() == 'madvise' and (cpu_settings.glibc_version() or (0, 0)) >= (2, 35)),
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
  lines = _probe({cpu_settings.OPT_OUT: '0'})
  assert len([line for line in lines if line.startswith('pid')]) == 1
  assert lines[-1].endswith('tunables None huge_kb 0'), lines


@pytest.mark.skipif(cpu_settings.mimalloc_library() is None, reason='the cmeel-mimalloc wheel is not installed')
def test_reexec_preloads_mimalloc_once():
  lines = _probe({cpu_settings.MIMALLOC_OPT_OUT: '1', cpu_settings.OPT_OUT: '0'})
  assert len([line for line in lines if line.startswith('pid')]) == 2, lines
  assert 'allocator mimalloc' in lines, lines
  assert "args ['a', '--b=c'] tunables None" in lines[-1], lines


def test_allocator_reads_this_process_preload(monkeypatch):
  monkeypatch.setenv('LD_PRELOAD', MI)
  assert cpu_settings.allocator() == 'mimalloc'
  monkeypatch.delenv('LD_PRELOAD')
  assert cpu_settings.allocator() == 'glibc'


_IMPORT_ALL = '''
import importlib, importlib.util, os, pkgutil
print('start', flush=True)
watched = lambda: {k: v for k, v in os.environ.items()
                   if k in ('XLA_FLAGS', 'LD_PRELOAD', 'GLIBC_TUNABLES') or k.startswith('MIMALLOC_')}
before = watched()
import pfca_jax
# The PyTorch definitions need PyTorch, which the project does not install: imported only where it is.
needs_torch = {'pfca_jax.convert.torch_models'} if importlib.util.find_spec('torch') is None else set()
names = [m.name for m in pkgutil.walk_packages(pfca_jax.__path__, 'pfca_jax.')
         if not m.name.endswith('__main__') and m.name not in needs_torch]
for name in names:
  importlib.import_module(name)
print('imported', len(names), 'changed', sorted(k for k in set(before) | set(watched()) if before.get(k) != watched().get(k)))
'''


def test_importing_the_library_changes_no_process_setting():
  env = {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', 'LD_PRELOAD')}
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
  lines = subprocess.run([sys.executable, '-c', _IMPORT_ALL], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout.splitlines()
  assert lines.count('start') == 1, lines  # Not re-executed.
  count, changed = lines[-1].split()[1], lines[-1].split(' changed ')[1]
  assert int(count) > 40 and changed == '[]', lines


@pytest.mark.parametrize('environ, expected', [
    ({}, cpu_settings.XLA_FLAG),
    ({'XLA_FLAGS': '--xla_dump_to=/tmp/x'}, f'--xla_dump_to=/tmp/x {cpu_settings.XLA_FLAG}'),
    ({'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type=invalid'}, '--xla_cpu_experimental_ynn_fusion_type=invalid'),
    ({cpu_settings.XLA_FLAG_OPT_OUT: '0'}, None),
])
def test_xla_flag_is_added_unless_switched_off_or_set(environ, expected, monkeypatch):
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  for k, v in environ.items():
    monkeypatch.setenv(k, v)
  cpu_settings.set_xla_flag()
  assert os.environ.get('XLA_FLAGS') == expected


def test_all_settings_switch_off_together(monkeypatch):
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  monkeypatch.setenv(cpu_settings.ALL_OPT_OUT, '0')
  monkeypatch.setattr(cpu_settings, 'reexec_if_useful', lambda: pytest.fail('re-executed'))
  cpu_settings.apply()
  assert 'XLA_FLAGS' not in os.environ
