"""experiments/kill_resume.py: trainer runs SIGKILLed during a save and during an evaluation resume bit-identical.

The same functions as the script, on a shorter run (12 steps, a checkpoint every 3, an evaluation
every 6): one reference, then two trials of one kill each, side by side. The comparison is shown to
fail on the real reference state with one bit changed, so that "identical" cannot pass by comparing
nothing.
"""

import concurrent.futures
import os
import random

import jax
import numpy as np
import pytest
from conftest import load_repo_module

kill_resume = load_repo_module('experiments/kill_resume.py')
pytestmark = pytest.mark.slow  # Three trainer runs and two kills: minutes on 2 cores.


def one_bit_changed(state):
  """A copy of `state` with the lowest bit of one float32 value of its first float32 leaf flipped."""
  leaves, treedef = jax.tree_util.tree_flatten(jax.tree.map(np.array, state))
  index = next(i for i, leaf in enumerate(leaves) if leaf.dtype == np.float32 and leaf.size)
  leaves[index].reshape(-1).view(np.uint32)[0] ^= 1
  return jax.tree_util.tree_unflatten(treedef, leaves), index


def test_kills_during_a_save_and_an_evaluation_resume_bit_identical(tmp_path):
  # The session's compilation cache (conftest.py): the reference compiles, the trials' runs read it back.
  setup = kill_resume.Setup(str(tmp_path), os.environ['JAX_COMPILATION_CACHE_DIR'], steps=12, checkpoint_every=3,
                            eval_every=6)
  ref = kill_resume.reference(setup, warmup=False)
  assert ref['step'] == 12 and ref['final']['eval/test/examples'] == 360

  # One flipped bit in a real leaf is found and named; so is a changed dtype; the same state is not.
  changed, index = one_bit_changed(ref['state'])
  found = kill_resume.differences(ref['state'], changed)
  size = jax.tree_util.tree_leaves(changed)[index].size
  assert len(found) == 1 and f': 1 of {size} values differ' in found[0], found
  assert kill_resume.differences(ref['state'], ref['state']) == []
  wider = jax.tree.map(lambda v: v.astype(np.float64) if v.dtype == np.float32 else v, ref['state'])
  found = kill_resume.differences(ref['state'], wider)
  assert found and all('float64' in line and 'instead of float32' in line for line in found), found
  assert kill_resume.differences(ref['state'], {}) == [f'{k}: only in the reference' for k in sorted(
      jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(ref['state']))][:5]

  # Two trials side by side: most of a run is its single-threaded start (imports), and there are two cores.
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    records = list(pool.map(lambda index, phase: kill_resume.trial(setup, ref, index, random.Random(index), [phase]),
                            (0, 1), ('save', 'eval')))
  for record, phase in zip(records, ('save', 'eval')):
    summary = kill_resume.describe(record)
    assert len(record['kills']) == 1 and len(record['restarts']) == 1, summary
    kill = record['kills'][0]
    if phase == 'save':  # An orbax save was in flight at the kill (the phase seen may be an evaluation it overlapped).
      assert any(kill_resume.TMP_MARK in name for name in kill['checkpoints']), summary
    else:
      assert kill['phase'] == 'eval', summary  # Killed in the phase aimed at, as seen at the kill.
    assert record['failure'] is None, record['failure']
    assert record['identical'] and not record['differences'], record['differences']
    assert record['same_final_metrics'] and record['results_json'] and record['metrics_jsonl_bad_lines'] == 0, summary
    # The temporary folder of an interrupted save is gone once the rerun has opened its checkpoints.
    assert record['tmp_left_after_restarts'] == 0 and not record['tmp_at_end'], record['restarts']
    assert not record['damaged_checkpoints'] and not record['lost'], summary
    assert not os.path.exists(tmp_path / f'trial_{record["trial"]:03d}')  # Kept only when lost.
