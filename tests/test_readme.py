"""README's Python snippets run as written (in order, in one namespace, from the repository
root), and give what their comments say."""
import os
import re

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_python_snippets_run_as_written(monkeypatch):
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    blocks = re.findall(r"^```python\n(.*?)^```", f.read(), re.S | re.M)
  assert len(blocks) == 2
  monkeypatch.chdir(ROOT)
  namespace, logits = {}, []
  for block in blocks:          # the functional forward, then the flax Module
    exec(compile(block, "README.md", "exec"), namespace)   # pylint: disable=exec-used
    logits.append(np.asarray(namespace["logits"]))
  images, labels = namespace["images"], namespace["labels"]
  assert images.shape == (8, 32, 32, 3) and labels.shape == (8,)
  assert logits[0].shape == (8, 10)
  np.testing.assert_allclose(logits[1], logits[0], atol=1e-5)
  assert (logits[0].argmax(-1) == labels).mean() >= 0.75


def test_re_filled_prose_starts_no_block_by_accident():
  """A paragraph re-filled at 100 columns put '>= 0 and growing ...' at the start of a line:
  Markdown renders it as a block quote ('= 0 and growing ...'). README and WORKSPACE quote
  nothing, so no line outside code blocks may start with '>' (nor a prose line with '+ ', which
  starts a list)."""
  for name in ("README.md", "WORKSPACE.md"):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
      text = re.sub(r"^```.*?^```", "", f.read(), flags=re.S | re.M)
    starts = [line for line in text.splitlines() if re.match(r"^ {0,3}(>|\+ )", line)]
    assert starts == [], (name, starts)


def test_the_bad_input_table_is_as_large_as_readme_says():
  """README quotes the size of tests/test_cli_errors.py's table: a mutation audit's row made it
  241 while README said 240, and nothing noticed."""
  from tests import test_cli_errors   # pylint: disable=g-import-not-at-top
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    quoted = re.findall(r"`tests/test_cli_errors\.py`, (\d+) cases", f.read())
  assert quoted == [str(len(test_cli_errors.CASES))]
