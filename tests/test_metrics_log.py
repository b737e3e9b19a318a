"""`pfca_jax.train.metrics_log`: torn lines left by a kill are kept, terminated on resume, and skipped by readers."""

import json
import os

import pytest

from pfca_jax.train import metrics_log


def _write(path, text):
  with open(path, 'w') as f:
    f.write(text)
  return str(path)


def _read(path):
  warnings = []
  return metrics_log.read(path, warn=warnings.append), warnings


def _line(step, loss):
  return json.dumps({'step': step, 'train/loss': loss}) + '\n'


def test_append_writes_one_line_per_call(tmp_path):
  path = str(tmp_path / 'metrics.jsonl')
  metrics_log.append(path, 100, {'train/loss': 2, 'train/lr': 0.5})
  metrics_log.append(path, 200, {'eval/test/top1': 0.25})
  with open(path) as f:
    assert f.read() == ('{"step": 100, "train/loss": 2.0, "train/lr": 0.5}\n'
                        '{"step": 200, "eval/test/top1": 0.25}\n')
  assert _read(path) == ([{'step': 100, 'train/loss': 2.0, 'train/lr': 0.5},
                          {'step': 200, 'eval/test/top1': 0.25}], [])


def test_torn_last_line_of_a_live_run_is_skipped_silently(tmp_path):
  # No newline after it: the line being written right now, or a torn one that resuming will terminate.
  path = _write(tmp_path / 'metrics.jsonl', _line(1, 3.0) + _line(2, 2.0) + '{"step": 3, "train/lo')
  assert _read(path) == ([{'step': 1, 'train/loss': 3.0}, {'step': 2, 'train/loss': 2.0}], [])


def test_a_complete_last_line_without_its_newline_is_read(tmp_path):
  path = _write(tmp_path / 'metrics.jsonl', _line(1, 3.0) + _line(2, 2.0).rstrip('\n'))
  assert _read(path)[0] == [{'step': 1, 'train/loss': 3.0}, {'step': 2, 'train/loss': 2.0}]


def test_torn_lines_in_the_middle_are_skipped_with_one_warning(tmp_path):
  path = _write(tmp_path / 'metrics.jsonl',
                _line(1, 3.0) + '{"step": 2, "tr\n' + _line(3, 1.0) + '\n' + '\0\0\0\n' + _line(4, 0.5))
  records, warnings = _read(path)
  assert records == [{'step': 1, 'train/loss': 3.0}, {'step': 3, 'train/loss': 1.0},
                     {'step': 4, 'train/loss': 0.5}]
  assert warnings == [f'skipped 2 torn or non-metrics line(s) of {path}: 2, 5']  # Line 4 is blank: ignored.


def test_non_object_and_stepless_lines_are_skipped(tmp_path):
  lines = ['[1, 2]', '"text"', '{"train/loss": 1.0}', '{"step": "7", "train/loss": 1.0}',
           '{"step": true, "train/loss": 1.0}', '{"step": 7.5, "train/loss": 1.0}',
           '{"step": 8, "note": "a string"}', '{"step": 9, "train/loss": 1}']
  path = _write(tmp_path / 'metrics.jsonl', '\n'.join(lines) + '\n')
  records, warnings = _read(path)
  assert records == [{'step': 9, 'train/loss': 1.0}]
  assert isinstance(records[0]['train/loss'], float)
  assert warnings == [f'skipped 7 torn or non-metrics line(s) of {path}: 1, 2, 3, 4, 5, 6, 7']


def test_the_warning_lists_at_most_ten_lines(tmp_path):
  path = _write(tmp_path / 'metrics.jsonl', 'x\n' * 12 + _line(1, 1.0))
  assert _read(path)[1] == [f'skipped 12 torn or non-metrics line(s) of {path}: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ...']


def test_the_default_warning_goes_to_stderr(tmp_path, capsys):
  path = _write(tmp_path / 'metrics.jsonl', 'oops\n' + _line(1, 1.0))
  assert metrics_log.read(path) == [{'step': 1, 'train/loss': 1.0}]
  captured = capsys.readouterr()
  assert captured.out == ''
  assert captured.err == f'warning: skipped 1 torn or non-metrics line(s) of {path}: 1\n'


def test_a_resumed_run_after_a_torn_line_keeps_all_its_lines(tmp_path):
  path = str(tmp_path / 'metrics.jsonl')
  metrics_log.append(path, 100, {'train/loss': 2.0})
  with open(path, 'a') as f:  # Killed in the middle of the next write.
    f.write('{"step": 200, "train/lo')
  metrics_log.repair_tail(path)  # What the resumed run's Reporter does first.
  metrics_log.append(path, 100, {'train/loss': 1.9})
  metrics_log.append(path, 200, {'train/loss': 1.5})
  with open(path) as f:
    assert f.read() == ('{"step": 100, "train/loss": 2.0}\n{"step": 200, "train/lo\n'
                        '{"step": 100, "train/loss": 1.9}\n{"step": 200, "train/loss": 1.5}\n')
  assert _read(path) == ([{'step': 100, 'train/loss': 2.0}, {'step': 100, 'train/loss': 1.9},
                          {'step': 200, 'train/loss': 1.5}],
                         [f'skipped 1 torn or non-metrics line(s) of {path}: 2'])


@pytest.mark.parametrize('text, repaired', [
    ('{"step": 1}\n{"st', '{"step": 1}\n{"st\n'),
    ('{"step": 1}\n', '{"step": 1}\n'),
    ('', ''),
])
def test_repair_tail_is_idempotent(tmp_path, text, repaired):
  path = _write(tmp_path / 'metrics.jsonl', text)
  for _ in range(2):
    metrics_log.repair_tail(path)
    with open(path) as f:
      assert f.read() == repaired


def test_repair_tail_does_not_create_a_missing_file(tmp_path):
  path = str(tmp_path / 'metrics.jsonl')
  metrics_log.repair_tail(path)
  assert not os.path.exists(path)
