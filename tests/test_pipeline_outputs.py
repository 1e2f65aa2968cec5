"""The main job's output step is one transaction that replaces only its own outputs."""
import json
import os

import pytest

from vitprune import atomic
from vitprune import pipeline


def _layout(root, summary):
  for sub in ("profile", "estimate", "solve"):
    os.makedirs(os.path.join(root, sub))
  with open(os.path.join(root, pipeline.SUMMARY_FILE), "w") as f:
    json.dump(summary, f)


def test_is_pipeline_dir(tmp_path):
  ours = tmp_path / "ours"
  _layout(ours, {"format": pipeline.SUMMARY_FORMAT, "version": 1})
  assert pipeline.is_pipeline_dir(str(ours))
  os.makedirs(ours / "extra")                 # the marker decides, not the layout
  assert pipeline.is_pipeline_dir(str(ours))
  old = tmp_path / "old"                      # a run from before the format marker
  _layout(old, {"model": "vit_digits", "solver": "paper"})
  assert pipeline.is_pipeline_dir(str(old))
  (old / "NOTES.txt").write_text("mine")      # ... but not once it holds something else
  assert not pipeline.is_pipeline_dir(str(old))
  assert not pipeline.is_pipeline_dir(str(tmp_path / "missing"))


def test_output_step_refuses_a_foreign_directory(tmp_path):
  foreign = tmp_path / "work"
  foreign.mkdir()
  (foreign / "NOTES.txt").write_text("do not delete")
  with pytest.raises(atomic.ForeignOutputError, match="refusing to replace"):
    with atomic.staged_dir(str(foreign), overwrite=True, is_ours=pipeline.is_pipeline_dir):
      pass
  assert (foreign / "NOTES.txt").read_text() == "do not delete"
  assert sorted(os.listdir(tmp_path)) == ["work"]   # no staged leftovers
