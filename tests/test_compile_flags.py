"""experiments/compile_flags.py measures the suite's own XLA flags, and refuses a bad flag in one line."""

import os

import conftest
from conftest import load_repo_module

compile_flags = load_repo_module('experiments/compile_flags.py')


def test_it_measures_the_flags_this_suite_compiles_with():
  assert compile_flags.suite_flags() == conftest.COMPILE_QUICKLY
  sets = compile_flags.flag_sets()
  assert sets['all three (the test suite)'] == conftest.COMPILE_QUICKLY
  assert sorted(f for f in sets.values() if f and ' ' not in f) == sorted(conftest.COMPILE_QUICKLY.split())
  # And this process does compile with them.
  assert set(conftest.COMPILE_QUICKLY.split()) <= set(os.environ['XLA_FLAGS'].split())


def test_a_bad_flag_is_one_line(capsys):
  assert compile_flags.main(['--repeats=0']) == 2
  err = capsys.readouterr().err.strip()
  assert err == 'error: --repeats=0: must be at least 1'
