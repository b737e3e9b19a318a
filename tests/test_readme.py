"""The Python examples of the README and docs/models.md run as written."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = ('README.md', 'docs/models.md')
# cpu_settings.apply() may restart the process it runs in (tests/test_cpu_settings.py covers it).
BLOCKS = [(page, i, block) for page in PAGES
          for i, block in enumerate(re.findall(r'```python\n(.*?)```', (ROOT / page).read_text(), flags=re.S))
          if 'cpu_settings.apply()' not in block]


def test_pages_have_examples():
  assert {page for page, _, _ in BLOCKS} == set(PAGES)


@pytest.mark.parametrize('page,index,block', BLOCKS, ids=[f'{page}:{i}' for page, i, _ in BLOCKS])
def test_example_runs(page, index, block):
  # Each block stands alone, as a reader would paste it; its own asserts check it.
  exec(compile(block, f'{page} python block {index}', 'exec'), {'__name__': 'readme_example'})
