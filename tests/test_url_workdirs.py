"""URL workdirs, whatever the scheme: refused in one line by every command that takes a run folder.

README.md and docs/training.md: checkpoints, events and records are written with local file operations,
so a `gs://` (or any URL) workdir is refused, naming the value and what is accepted (a local or mounted
folder). os.path takes 's3://b/run' for the local folder './s3:/b/run', so a URL let through is quietly
written to (convert's --out) or read from (predict's --workdir) a folder named after the scheme: the
cases below run in a folder where that mangled folder exists, and nothing may be created or read there.
test_bad_inputs.py, test_plot.py and test_init_from.py check gs:// through their commands; this table
covers the other schemes, through the trainer and the run-folder layer of predict and convert.
"""

import json
import os

import pytest

from pfca_jax import run_folder, train
from pfca_jax.errors import UserError
from pfca_jax.train import config_defaults
from pfca_jax.train.validation import check_workdir

# Schemes users meet (cloud buckets, Hadoop, the web, and file:// which is local yet still a URL), in
# lower and upper case: a URL scheme is case-insensitive.
URLS = ['s3://bucket/run', 'S3://Bucket/run', 'gs://bucket/run', 'gcs://bucket/run', 'hdfs://namenode:8020/run',
        'file:///tmp/run', 'http://host/run', 'https://host/run', 'az://container/run', 's3a://bucket/run',
        'abfs+ssl://container/run']

ACCEPTED = ('a local or mounted folder (mount a bucket, e.g. with gcsfuse, and give its mount point)')


def _config():
  """A valid tiny config: the workdir check comes after the config's, so the refusal must be the workdir's."""
  config = config_defaults.classification()
  config.update(dict(dataset='synthetic', batch_size=8, eval_batch_size=8, image_size=8, num_train_steps=1))
  config.synthetic.update(dict(num_classes=3, train_examples=16, eval_examples=8))
  return config


def _mangled_run(root, url: str) -> None:
  """The folder os.path makes of `url` under `root` ('s3://b/run' -> 's3:/b/run'), holding a run's config.json
  and a checkpoint folder: what a command that let the URL through would read."""
  folder = os.path.join(root, os.path.normpath(url))
  os.makedirs(os.path.join(folder, 'checkpoints', '1'))
  with open(os.path.join(folder, 'config.json'), 'w') as f:
    json.dump({'task': 'classification', 'model': {'name': 'cifar_resnet20'}}, f)


def _tree(root) -> list[str]:
  return sorted(os.path.relpath(os.path.join(d, name), root) for d, dirs, files in os.walk(root)
                for name in dirs + files)


# Each command that takes a run folder, as the call that refuses it and the flag its one line names.
COMMANDS = {
    'train': (lambda url: train.train_and_evaluate(_config(), url), '--workdir'),
    'predict_or_convert_to_torch': (lambda url: run_folder.open_run(url), '--workdir'),
    'convert_from_torch_out': (lambda url: run_folder.check_new_folder(url), '--out'),
}


@pytest.mark.parametrize('command', COMMANDS)
@pytest.mark.parametrize('url', URLS)
def test_a_url_of_any_scheme_is_refused_in_one_line_naming_it_and_nothing_is_read_or_written(
    url, command, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  _mangled_run(tmp_path, url)
  before = _tree(tmp_path)
  call, flag = COMMANDS[command]
  with pytest.raises(UserError) as err:
    call(url)
  assert str(err.value) == f'{flag} {url!r} is a URL; it must be {ACCEPTED}'
  assert _tree(tmp_path) == before


# Local paths that look a little like URLs (a colon, a double slash, '~') are folders: accepted as such,
# resolved against the current directory or the home folder, and not created by the check.
@pytest.mark.parametrize('path, resolved', [
    ('runs/a', '{cwd}/runs/a'),
    ('s3:/bucket/run', '{cwd}/s3:/bucket/run'),  # One slash: a folder named 's3:', which the user asked for.
    ('runs//a', '{cwd}/runs/a'),
    ('run:2026-12-07', '{cwd}/run:2026-12-07'),
    ('3s://bucket/run', '{cwd}/3s:/bucket/run'),  # A scheme starts with a letter: this is a folder name.
    ('~/runs/a', '{home}/runs/a'),
    ('{cwd}/abs//run', '{cwd}/abs/run'),
])
def test_local_paths_with_colons_or_double_slashes_are_accepted_as_folders(path, resolved, tmp_path, monkeypatch):
  cwd, home = tmp_path / 'cwd', tmp_path / 'home'
  cwd.mkdir()
  home.mkdir()
  monkeypatch.chdir(cwd)
  monkeypatch.setenv('HOME', str(home))
  assert check_workdir(path.format(cwd=cwd)) == resolved.format(cwd=cwd, home=home)
  assert os.listdir(cwd) == [] and os.listdir(home) == []
