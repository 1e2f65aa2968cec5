"""experiments.profile end to end on the tiny config (in-process, its flags parsed into a fresh
FlagValues by `common.parse`), and its errors."""
import dataclasses
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from vitprune import pipeline, solve, solve_loop
from tests.test_profile_records import _point
from vitprune.profile import protocol, records, runner, timing
from vitprune.records.solution_text import describe_checked_error
from vitprune.reduce import make_reducer
from vitprune.registry import get_config
from vitprune.schedule import Schedule, parse_token_grid

from experiments import common
from experiments import profile as cli

ERRORS = (ValueError, KeyError, OSError)
FAST = ["--min_run_time=0.005", "--max_retries=0", "--noprogress", "--threads=2"]
CFG = get_config("test_tiny_vit")   # 1 cls + 16 patches = 17 tokens, depth 2


def _flags(*args):
  return common.parse(cli.define_flags, args)


def _run(tmp_path, *args):
  return cli.main(_flags(f"--out_dir={tmp_path}", "--model=test_tiny_vit", "--mode=model",
                         *FAST, *args))


@pytest.mark.parametrize("name, content, message", [
    ("test-tiny-vit_model_b1-2_float32_cpu.png", "notes", "no profile .*b1-2_float32_cpu.json "
     "beside them"),                             # the combined plot replaced any file there
    ("test-tiny-vit_model_b2_float32_cpu.csv", "x", "no profile .*b2_float32_cpu.json"),
])
def test_every_output_of_a_batch_list_is_checked_before_measuring(tmp_path, name, content,
                                                                  message):
  """A refusal for a later batch size came after the earlier ones were published."""
  (tmp_path / name).write_text(content)
  with pytest.raises(ValueError, match=message):
    _run(tmp_path, "--tokens=17,9", "--batch_size=1,2")
  assert os.listdir(tmp_path) == [name] and (tmp_path / name).read_text() == content


def test_a_profile_of_another_reducer_is_refused_before_measuring(tmp_path, monkeypatch):
  _run(tmp_path, "--tokens=17,9")
  monkeypatch.setattr(runner, "profile_batch", lambda *a, **k: pytest.fail("measured"))
  with pytest.raises(ValueError, match="cannot merge into .* different reducers"):
    _run(tmp_path, "--tokens=17,9", "--reducer=keep_first"
         if records.load(str(next(tmp_path.glob("*.json")))).reducer == "random"
         else "--reducer=random")


def test_model_mode_writes_profile_csv_png(tmp_path, capsys):
  profs = _run(tmp_path, "--tokens=17,9", "--batch_size=1,2")
  assert [p.batch_sizes for p in profs] == [(1,), (2,)]
  for b in (1, 2):
    stem = tmp_path / f"test-tiny-vit_model_b{b}_float32_cpu"
    back = records.load(f"{stem}.json")
    assert sorted(p.tokens for p in back.points) == [9, 17]
    assert {p.component for p in back.points} == {"model"}
    assert all(p.num_samples >= 5 and p.compile_s > 0 and p.median_s > 0 for p in back.points)
    assert back.modes == ("model",) and back.config["name"] == "test_tiny_vit"
    assert back.reducer in ("random", "keep_first")   # library RandomDrop when present
    assert len(open(f"{stem}.csv").read().strip().split("\n")) == 3
    assert os.path.getsize(f"{stem}.png") > 0
  both = records.load(str(tmp_path / "test-tiny-vit_model_b1-2_float32_cpu.json"))
  assert both.batch_sizes == (1, 2) and len(both.points) == 4     # all batch sizes, one plot
  assert (tmp_path / "test-tiny-vit_model_b1-2_float32_cpu.png").exists()
  out = capsys.readouterr().out
  assert "== test_tiny_vit | float32" in out and "-- steps of model curve, batch 2" in out
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_a_later_batch_run_keeps_the_combined_profile_in_step(tmp_path, capsys, monkeypatch):
  """A run at batch 1 merged into the b1 file and left `..._b1-2_...` reporting the old batch-1
  latencies (and steps) beside it; a run killed between batch sizes did the same."""
  _run(tmp_path, "--tokens=17,9", "--batch_size=1,2")
  capsys.readouterr()
  _run(tmp_path, "--tokens=17,13", "--batch_size=1")
  one = records.load(str(tmp_path / "test-tiny-vit_model_b1_float32_cpu.json"))
  both = records.load(str(tmp_path / "test-tiny-vit_model_b1-2_float32_cpu.json"))
  assert sorted(p.tokens for p in one.points) == [9, 13, 17]
  assert {p.key: p for p in both.points if p.batch_size == 1} == {p.key: p for p in one.points}
  assert sorted(p.tokens for p in both.points if p.batch_size == 2) == [9, 17]
  assert both.steps == records.analyze(records.merge(
      [records.load(str(tmp_path / "test-tiny-vit_model_b2_float32_cpu.json")), one])).steps
  assert "merged batch 1 into " in capsys.readouterr().out
  # A second run at both batch sizes keeps its own combined file in step after each batch, and
  # does not write it once more at the end (it was written 3 times, its plot redrawn each time).
  saves = []
  real_save = records.save
  monkeypatch.setattr(records, "save", lambda p, d, stem=None, **k: saves.append(
      stem or records.file_stem(p)) or real_save(p, d, stem, **k))
  _run(tmp_path, "--tokens=17,9", "--batch_size=1,2")
  assert saves == ["test-tiny-vit_model_b1_float32_cpu", "test-tiny-vit_model_b1-2_float32_cpu",
                   "test-tiny-vit_model_b2_float32_cpu", "test-tiny-vit_model_b1-2_float32_cpu"]
  both = records.load(str(tmp_path / "test-tiny-vit_model_b1-2_float32_cpu.json"))
  assert {p.key: p for p in both.points} == {p.key: p for b in (1, 2) for p in records.load(
      str(tmp_path / f"test-tiny-vit_model_b{b}_float32_cpu.json")).points}
  monkeypatch.undo()
  # A combined file that cannot take the batch is refused before anything is measured.
  (tmp_path / "test-tiny-vit_model_b1-4_float32_cpu.json").write_text("{}")
  monkeypatch.setattr(runner, "profile_batch", lambda *a, **k: pytest.fail("measured"))
  with pytest.raises(ValueError, match=r"refusing to replace .*b1-4_float32_cpu.json: it is "
                     "not a readable latency profile"):
    _run(tmp_path, "--tokens=17,13", "--batch_size=1")
  # Other batch lists, modes and dtypes are not this batch's.
  assert runner.combined_stems(one, str(tmp_path), 2) == ["test-tiny-vit_model_b1-2_float32_cpu"]
  assert runner.combined_stems(one, str(tmp_path), 4) == ["test-tiny-vit_model_b1-4_float32_cpu"]
  assert runner.combined_stems(one, str(tmp_path), 8) == []
  # A file whose points are of other batch sizes than its name says was merged into (a b1 file
  # holding batch-2 points became a two-batch profile named b1).
  os.remove(tmp_path / "test-tiny-vit_model_b1-4_float32_cpu.json")
  shutil.copy(tmp_path / "test-tiny-vit_model_b2_float32_cpu.json",
              tmp_path / "test-tiny-vit_model_b1_float32_cpu.json")
  with pytest.raises(ValueError, match=r"refusing to merge into .*_b1_float32_cpu.json: it holds "
                     r"batch \[2\] points, but its name says batch \[1\] \(edited or renamed\?\)"):
    _run(tmp_path, "--tokens=17,13", "--batch_size=1")
  assert records.named_batch_sizes(one, "test-tiny-vit_model_b1-2_float32_cpu") == (1, 2)
  assert records.named_batch_sizes(one, "board") is None


def test_block_mode_reports_predictions(tmp_path, capsys):
  (prof,) = _run(tmp_path, "--mode=block", "--tokens=17:13:-4", "--dtype=bfloat16")
  comps = sorted((p.component, p.tokens) for p in prof.points)
  assert comps == ([("block", n) for n in (13, 17)] + [("dispatch", 1), ("embed", 17)]
                   + [("head", n) for n in (13, 17)] + [("model", n) for n in (13, 17)])
  assert sorted(p["schedule"][0] for p in prof.predictions) == [13, 17]
  for p in prof.predictions:
    assert p["rel_error"] == pytest.approx(p["predicted_s"] / p["measured_s"] - 1)
  assert "per-block sum (embed + sum blocks + head) vs measured graph" in capsys.readouterr().out
  assert (tmp_path / "test-tiny-vit_block_b1_bfloat16_cpu.json").exists()


def test_schedule_mode_measures_graphs_and_block_table(tmp_path, capsys):
  (prof,) = _run(tmp_path, "--mode=schedule", "--schedule=17,12,5", "--schedule=9,9,9",
                 "--reducer=keep_first")
  assert prof.reducer == "keep_first" and "note: the schedules are timed with random drop" \
      not in capsys.readouterr().out
  scheds = sorted(p.schedule for p in prof.points if p.component == "schedule")
  assert scheds == [(9, 9, 9), (17, 12, 5)]
  assert sorted(p.tokens for p in prof.points if p.component == "block") == [9, 12, 17]
  assert sorted(p.tokens for p in prof.points if p.component == "head") == [5, 9]
  assert sorted(tuple(p["schedule"]) for p in prof.predictions) == [(9, 9, 9), (17, 12, 5)]


def test_schedule_mode_without_a_reducer_says_it_times_random_drop(tmp_path, capsys):
  """keep@1:9 was timed as random drop's graph, said only by the table's header: a user timing
  a POMT choice read it as POMT's. A schedule that removes nothing needs no reducer."""
  (prof,) = _run(tmp_path / "a", "--mode=schedule", "--schedule=keep@1:9")
  assert prof.reducer == "random"
  assert ("note: the schedules are timed with random drop, the default --reducer: pass "
          "--reducer=pomt (or the method you deploy) to time that method's graph"
          in capsys.readouterr().out)
  _run(tmp_path / "b", "--mode=schedule", "--schedule=full")
  assert "note: the schedules are timed" not in capsys.readouterr().out


def test_adaptive_grid_is_subset_and_keeps_ends(tmp_path):
  (prof,) = _run(tmp_path, "--adaptive", "--coarse_stride=5", "--tokens=all")
  toks = {p.tokens for p in prof.points}
  assert {17, 12, 7, 2} <= toks <= set(range(2, 18))


def test_max_points_bounds_the_refinement(tmp_path):
  """The GPU asked for 185 of 196 DeiT-S counts (every coarse interval non-flat): at ~6 s a
  compile, more than a lease. --max_points keeps the coarse grid and cuts the refinement."""
  (full,) = _run(tmp_path / "a", "--adaptive", "--coarse_stride=5", "--tokens=all")
  coarse = {17, 12, 7, 2}
  assert len({p.tokens for p in full.points}) > 6     # (else the bound below bounds nothing)
  (prof,) = _run(tmp_path / "b", "--adaptive", "--coarse_stride=5", "--tokens=all",
                 "--max_points=6")
  toks = {p.tokens for p in prof.points}
  assert len(toks) == 6 and coarse <= toks


def test_chunks_are_written_as_they_are_measured(tmp_path, monkeypatch, capsys):
  """An interrupted GPU profile kept nothing: the points of a batch size were written when it
  was done. With --chunk_points every finished chunk is on disk when a later one is killed."""
  real, calls = runner._measure, []

  def measure(keys, **kw):
    calls.append(sorted(k[1] for k in keys))
    if len(calls) == 3:
      raise KeyboardInterrupt
    return real(keys, **kw)

  monkeypatch.setattr(runner, "_measure", measure)
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path, "--tokens=all", "--chunk_points=5")
  assert [len(c) for c in calls] == [5, 5, 5]
  assert calls[0] == [2, 5, 9, 13, 17]       # both ends, the midpoint, the quarters
  (path,) = tmp_path.glob("*.json")
  held = sorted(p.tokens for p in records.load(str(path)).points)
  assert held == sorted(calls[0] + calls[1])
  assert capsys.readouterr().out.count("points of batch 1 so far to") == 2
  monkeypatch.setattr(runner, "_measure", real)
  (prof,) = _run(tmp_path / "all", "--tokens=all", "--chunk_points=5",
                 "--noconfirm_steps")   # (a step timed apart would be timed again together)
  assert sorted(p.tokens for p in prof.points) == list(range(2, 18))   # every count, once
  chunks = {}                    # each chunk is one measurement: the file says which
  for p in prof.points:
    chunks.setdefault(p.measured_at, []).append(p.tokens)
  assert "" not in chunks and sorted(map(len, chunks.values())) == [1, 5, 5, 5]
  # Adaptive: the coarse grid's chunks span it too (they went top down: a run killed in the
  # second chunk of DeiT-S had nothing below 113 tokens).
  calls.clear()
  monkeypatch.setattr(runner, "_measure", measure)
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path / "adaptive", "--tokens=all", "--adaptive", "--coarse_stride=2",
         "--chunk_points=4")
  assert calls[0] == [2, 5, 9, 17]


def _timed_as(latency, calls):
  """A `runner._measure` timing each count n at `latency(n, call)` seconds (3 equal samples),
  `call` counting its calls from 1, each call a measurement of its own (a mark a second
  apart); the counts of each call are appended to `calls`, descending."""
  def measure(keys, **_):
    calls.append(sorted((k[1] for k in keys), reverse=True))
    mark = f"2026-12-08T01:00:{len(calls):02d}.000+00:00"
    return {k: dataclasses.replace(protocol.summarize([latency(k[1], len(calls))] * 3),
                                   measured_at=mark) for k in keys}
  return measure


def test_a_step_timed_apart_is_timed_again_together_and_holds(tmp_path, monkeypatch, capsys):
  """A step whose two sides two chunks timed was reported 'timed apart: ... time those counts
  again together, in one run, before pruning to it'; the profiler now does that itself: the
  step's window (the count beyond each level too) in one measurement, whose samples replace
  theirs, and the line says the step holds. --noconfirm_steps keeps them as measured."""
  calls = []
  monkeypatch.setattr(runner, "_measure", _timed_as(
      lambda n, _: (1e-3 if n > 9 else 0.5e-3) * (1 + 0.001 * n), calls))
  (prof,) = _run(tmp_path / "a", "--tokens=17:3:-2", "--chunk_points=4")
  assert calls == [[17, 13, 11, 3], [15, 9, 7, 5], [13, 11, 9, 7]]
  assert ("timed 13, 11, 9, 7 again together, in one measurement (steps and lone "
          "counts timed apart): 11 -> 9 holds (saves 50.1%)") in capsys.readouterr().out
  (step,) = prof.steps
  assert (step["n_from"], step["n_to"], step["measured_apart"]) == (11, 9, [])
  marks = {p.tokens: p.measured_at for p in prof.points}
  assert {n for n, m in marks.items() if m.startswith("2026-12-08T01:00:03")} == {13, 11, 9, 7}
  (path,) = (tmp_path / "a").glob("*.json")
  assert records.load(str(path)).points == prof.points       # the file holds what was confirmed
  calls.clear()
  (kept,) = _run(tmp_path / "b", "--tokens=17:3:-2", "--chunk_points=4", "--noconfirm_steps")
  assert len(calls) == 2 and "(steps and lone counts timed apart)" not in capsys.readouterr().out
  assert [len(s["measured_apart"]) for s in kept.steps] == [2]


def test_a_run_killed_while_confirming_keeps_the_profile_of_all_batches_in_step(
    tmp_path, monkeypatch):
  """A review: the final chunk's save wrote the batch's own file alone (the profile of all batch
  sizes came after the batch); a run killed during the confirmation in between left the two
  disagreeing. The profile of all batch sizes is now written before a confirmation."""
  calls = []
  timed = _timed_as(lambda n, _: (1e-3 if n > 9 else 0.5e-3) * (1 + 0.001 * n), calls)

  def measure(keys, **kw):
    if len(calls) == 5:                  # batch 1: two chunks and a confirmation; batch 2's
      raise KeyboardInterrupt            # confirmation
    return timed(keys, **kw)

  monkeypatch.setattr(runner, "_measure", measure)
  _run(tmp_path, "--tokens=17:3:-2", "--batch_size=1,2", "--noconfirm_steps")
  calls.clear()
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path, "--tokens=17:3:-2", "--batch_size=1,2", "--chunk_points=4")
  assert len(calls) == 5 and calls[2] == [13, 11, 9, 7]   # (batch 2's confirmation raised)
  own = records.load(str(tmp_path / "test-tiny-vit_model_b2_float32_cpu.json"))
  both = records.load(str(tmp_path / "test-tiny-vit_model_b1-2_float32_cpu.json"))
  assert {p.key: p for p in both.points if p.batch_size == 2} == {p.key: p for p in own.points}
  assert {p.measured_at for p in own.points} == {"2026-12-08T01:00:04.000+00:00",
                                                 "2026-12-08T01:00:05.000+00:00"}


def test_a_confirmation_keeps_to_the_memory_bound_and_the_grid(tmp_path, monkeypatch, capsys):
  """Block mode times no more counts at once than a chunk holds (the memory check's bound: a
  confirmation of 16 counts was above it), and a window reaching counts outside this run's
  --tokens (held points of a wider one) is not timed in part; each line says why."""
  calls = []
  monkeypatch.setattr(runner, "_measure", _timed_as(
      lambda n, _: (1e-3 if n > 9 else 0.5e-3) * (1 + 0.001 * n), calls))
  _run(tmp_path / "two", "--mode=block", "--tokens=17:3:-2", "--chunk_points=2")
  assert len(calls) == 4 and ("timed nothing again together (steps and lone counts timed "
                              "apart): 1 timed apart, not timed again (at most 2 counts)"
                              ) in capsys.readouterr().out
  calls.clear()
  _run(tmp_path / "four", "--mode=block", "--tokens=17:3:-2", "--chunk_points=4")
  assert calls[-1] == [13, 13, 11, 11, 9, 9, 7, 7]          # (block and head keys)
  assert ": 11 -> 9 holds (saves 50.1%)" in capsys.readouterr().out
  calls.clear()
  _run(tmp_path / "narrow", "--tokens=17:10")
  _run(tmp_path / "narrow", "--tokens=9:2", "--resume")     # 10 -> 9: its window holds 11, 10
  assert calls == [list(range(17, 9, -1)), list(range(9, 1, -1))]
  assert ("timed nothing again together (steps and lone counts timed apart): 1 timed apart, "
          "not timed again (its counts reach beyond the token counts this run profiles)"
          ) in capsys.readouterr().out
  # A resume measuring nothing does not advise --confirm_steps, which would time nothing here
  # (a mutation audit): it says why instead.
  _run(tmp_path / "narrow", "--tokens=9:2", "--resume")
  out = capsys.readouterr().out
  assert "--confirm_steps given with --resume" not in out and (
      "not timed again (its counts reach beyond the token counts this run profiles)") in out
  assert len(calls) == 2


def test_a_confirmation_across_a_resume_says_a_level_shift_is_no_step(tmp_path, monkeypatch,
                                                                       capsys):
  """A resumed run on a machine 30 % faster than the first one's: 10 -> 9 read as a 30 % step.
  Timed together it is no step; the shift then lies between the counts confirmed and the
  resumed ones (8 -> 7), said timed apart: one confirmation per run, not a walk down the curve.
  A resume that measures nothing confirms nothing."""
  calls = []
  monkeypatch.setattr(runner, "_measure", _timed_as(
      lambda n, call: 1e-3 * (1 + 0.01 * n) * (0.7 if call == 2 else 1.0), calls))
  _run(tmp_path, "--tokens=17:10")
  (prof,) = _run(tmp_path, "--tokens=all", "--resume")
  assert calls == [list(range(17, 9, -1)), list(range(9, 1, -1)), [11, 10, 9, 8]]
  out = capsys.readouterr().out
  assert ("timed 11, 10, 9, 8 again together, in one measurement (steps and lone "
          "counts timed apart): 10 -> 9 is no step") in out
  assert [(s["n_from"], s["n_to"], len(s["measured_apart"])) for s in prof.steps] == [(8, 7, 2)]
  calls.clear()
  (again,) = _run(tmp_path, "--tokens=all", "--resume")
  assert calls == [] and again.points == prof.points
  # A confirmation interrupted (here: not asked for) leaves a step timed apart that a resume
  # measuring nothing does not time again: it says so, and --confirm_steps given does it (a
  # probe: the resume after a kill during the confirmation left it timed apart, unsaid).
  shifted = tmp_path / "shifted"
  _run(shifted, "--tokens=17:10")
  _run(shifted, "--tokens=all", "--resume", "--noconfirm_steps")
  calls.clear()
  capsys.readouterr()
  (held,) = _run(shifted, "--tokens=all", "--resume")
  assert calls == [] and [len(s["measured_apart"]) for s in held.steps] == [2]
  assert ("1 step or lone count timed apart, not timed again: this run measured nothing (a "
          "resumed profile whose points were all there); --confirm_steps given with --resume "
          "times them again together") in capsys.readouterr().out
  (confirmed,) = _run(shifted, "--tokens=all", "--resume", "--confirm_steps")
  assert calls == [[11, 10, 9, 8]] and ": 10 -> 9 is no step" in capsys.readouterr().out


def test_a_confirmation_keeps_its_protocol_bound_and_saves(tmp_path, monkeypatch, capsys):
  """A mutation audit of the confirmation: it times without re-measurement (the run's rounds
  stay the chunks'); model mode's 16 counts are not cut to a chunk (block's memory bound
  only); each profile is said saved once, the final chunk's before the confirmation (not
  again after it, nor twice where an adaptive run had nothing to refine); and a resume asked
  to confirm does not first say it will not."""
  calls, retries = [], []
  timed = _timed_as(lambda n, _: (1e-3 if n > 9 else 0.5e-3) * (1 + 0.001 * n), calls)

  def measure(keys, **kw):
    retries.append(kw["spec"].timing.max_retries)
    return timed(keys, **kw)

  monkeypatch.setattr(runner, "_measure", measure)
  _run(tmp_path / "a", "--tokens=17:3:-2", "--chunk_points=2", "--max_retries=2")
  assert calls[-1] == [13, 11, 9, 7] and retries == [2, 2, 2, 2, 0]
  assert re.findall(r"saved (\d+) points", capsys.readouterr().out) == ["2", "4", "6", "8"]
  calls.clear()
  _run(tmp_path / "b", "--tokens=17:3:-2", "--chunk_points=4", "--adaptive")   # (no refining)
  assert calls == [[17, 13, 11, 3], [15, 9, 7, 5], [13, 11, 9, 7]]
  assert re.findall(r"saved (\d+) points", capsys.readouterr().out) == ["4", "8"]
  _run(tmp_path / "c", "--tokens=17:3:-2", "--chunk_points=4", "--noconfirm_steps")
  calls.clear()
  capsys.readouterr()
  _run(tmp_path / "c", "--tokens=17:3:-2", "--resume", "--confirm_steps")
  out = capsys.readouterr().out
  assert calls == [[13, 11, 9, 7]] and ": 11 -> 9 holds (saves 50.1%)" in out
  assert "not timed again" not in out


def test_a_confirmation_that_times_one_window_says_why_another_was_not(tmp_path, monkeypatch,
                                                                        capsys):
  """A mutation audit: after timing a window, the line still names why another was left out
  (its counts reach beyond this run's grid, not the bound): the runner hands the line the
  curve's counts and the grid after the confirmation too, not only where nothing fitted."""
  calls = []
  monkeypatch.setattr(runner, "_measure", _timed_as(
      lambda n, _: 1e-3 * (1 + (n > 9) + 0.5 * (n > 5) + 0.001 * n), calls))
  _run(tmp_path, "--tokens=17:10")
  _run(tmp_path, "--tokens=9:2", "--resume", "--chunk_points=4")    # 10 -> 9 reaches 11, 10
  assert calls[1:] == [[9, 5, 3, 2], [8, 7, 6, 4], [7, 6, 5, 4]]
  assert ("timed 7, 6, 5, 4 again together, in one measurement (steps and lone counts timed "
          "apart): 6 -> 5 holds (saves 33.3%); 1 more timed apart, not timed again (its counts "
          "reach beyond the token counts this run profiles)") in capsys.readouterr().out


def test_a_resumed_batch_takes_its_own_files_points_over_a_combined_profiles(tmp_path):
  """A count held both by the profile of batches 1 and 4 and by batch 1's own file (written
  after it: a later run at batch 1 alone) is resumed from the batch's own file."""
  spec = runner.ProfileSpec(cfg=CFG, mode="model", tokens=(17, 9))
  setup = runner._setup(spec)        # pylint: disable=protected-access
  point = lambda batch, n, median: _point("model", n, median, batch=batch)  # noqa: E731
  combined = dataclasses.replace(setup, points=(point(1, 17, 1e-3), point(1, 9, 5e-4),
                                                point(4, 17, 4e-3)))
  records.save(combined, str(tmp_path))
  records.save(dataclasses.replace(setup, points=(point(1, 17, 2e-3),)), str(tmp_path))
  assert len(runner.combined_stems(setup, str(tmp_path), 1)) == 1
  held = runner._held_points(  # pylint: disable=protected-access
      spec, str(tmp_path), 1, lambda _: None)
  assert sorted((p.tokens, p.median_s) for p in held) == [(9, 5e-4), (17, 2e-3)]


def test_resume_measures_only_what_a_killed_run_did_not(tmp_path, monkeypatch, capsys):
  real, calls = runner._measure, []

  def measure(keys, **kw):
    calls.append(sorted(k[1] for k in keys))
    if len(calls) == 3 and kw.get("spec").chunk_points == 5:
      raise KeyboardInterrupt
    return real(keys, **kw)

  monkeypatch.setattr(runner, "_measure", measure)
  (fresh,) = _run(tmp_path / "fresh", "--tokens=all", "--resume")     # nothing there yet
  assert sorted(p.tokens for p in fresh.points) == list(range(2, 18))
  out = capsys.readouterr().out                   # ... said (a probe: a typo in --out_dir or
  assert "resuming" not in out and (              # --batch_size re-measured all, unsaid)
      f"note: --resume: {tmp_path / 'fresh'} does not exist yet: nothing to continue, every "
      "count of batch 1 is measured") in out
  (other,) = _run(tmp_path / "fresh", "--tokens=9,17", "--resume", "--batch_size=2")
  (held,) = [p.name for p in (tmp_path / "fresh").glob("*_b1_*.json")]
  assert (f"note: --resume: {tmp_path / 'fresh'} holds no {held.replace('_b1_', '_b2_')} (nor "
          f"a profile of several batch sizes with batch 2) to continue; it holds {held}: every "
          "count of batch 2 is measured") in capsys.readouterr().out
  calls.clear()
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path, "--tokens=all", "--chunk_points=5")
  (path,) = tmp_path.glob("*.json")
  kept = {p.tokens: p.median_s for p in records.load(str(path)).points}
  assert len(kept) == 10
  calls.clear()
  (prof,) = _run(tmp_path, "--tokens=all", "--chunk_points=5", "--resume",
                 "--noconfirm_steps")    # (confirming a step timed apart re-times held ones)
  assert sorted(n for c in calls for n in c) == sorted(set(range(2, 18)) - set(kept))
  assert f"resuming batch 1: the 10 points it has in {tmp_path} are not measured again" in (
      capsys.readouterr().out)
  got = {p.tokens: p.median_s for p in prof.points}
  assert sorted(got) == list(range(2, 18)) and all(got[n] == kept[n] for n in kept)
  calls.clear()
  (again,) = _run(tmp_path, "--tokens=all", "--resume")       # all there: nothing measured
  assert calls == [] and {p.tokens: p.median_s for p in again.points} == got
  # Adaptive: the refinement starts from every point held (the coarse grid is not redone).
  (prof,) = _run(tmp_path, "--tokens=all", "--adaptive", "--coarse_stride=5", "--resume")
  assert calls == [] and len(prof.points) == 16
  # --max_points counts the points held: a finished run resumed measures nothing (each resume
  # measured another refinement's worth).
  bounded = ["--tokens=all", "--adaptive", "--coarse_stride=4", "--max_points=8",
             "--chunk_points=2"]
  (first,) = _run(tmp_path / "bounded", *bounded)
  calls.clear()
  (again,) = _run(tmp_path / "bounded", *bounded, "--resume")
  assert len(first.points) == len(again.points) == 8 and calls == []
  # ... and resumed with another coarse stride (its coarse grid was measured whole besides the
  # points held: 8 + the new counts of 17, 14, 11, 8, 5, 2 where the bound said 8).
  calls.clear()
  (other,) = _run(tmp_path / "bounded", *bounded[:2], "--coarse_stride=3", *bounded[3:],
                  "--resume")
  assert calls == [] and len(other.points) == 8
  (wider,) = _run(tmp_path / "bounded", *bounded[:2], "--coarse_stride=3", "--max_points=11",
                  *bounded[4:], "--resume", "--noconfirm_steps")
  assert sum(map(len, calls)) == 3 and len(wider.points) == 11
  # Mode block: the whole-model checks were measured by the first run (a resume with another
  # stride compiled one more, at the middle count of its own coarse grid).
  block = ["--mode=block", "--tokens=all", "--adaptive", "--max_points=8", "--chunk_points=2"]
  _run(tmp_path / "block", *block, "--coarse_stride=4")
  calls.clear()
  _run(tmp_path / "block", *block, "--coarse_stride=3", "--resume")
  assert calls == []
  # ... but a resume over a wider grid measures the checks at its new ends.
  _run(tmp_path / "narrow", "--mode=block", "--tokens=9:17")
  calls.clear()
  (wide,) = _run(tmp_path / "narrow", "--mode=block", "--tokens=2:17", "--resume")
  assert {p.tokens for p in wide.points if p.component == "model"} == {17, 13, 9, 2}


def _stopped_between_writes(tmp_path, tokens=(17, 9)):
  """Profiles of batch 1, 2 and 1-2 in `tmp_path` (counts 17 and 9), then batch 1's own file
  alone rewritten with the points of `tokens` twice as slow, as a run stopped between its two
  writes leaves them -> (batch 1's path, the b1-2 path)."""
  _run(tmp_path, "--tokens=17,9", "--batch_size=1,2")
  own_path = str(tmp_path / "test-tiny-vit_model_b1_float32_cpu.json")
  both_path = str(tmp_path / "test-tiny-vit_model_b1-2_float32_cpu.json")
  own = records.load(own_path)
  moved = dataclasses.replace(own, points=tuple(dataclasses.replace(
      p, median_s=2 * p.median_s, q25_s=2 * p.q25_s, q75_s=2 * p.q75_s,
      samples_s=tuple(2 * x for x in p.samples_s)) if p.tokens in tokens else p
      for p in own.points))
  records.save(moved, str(tmp_path))
  return own_path, both_path


def test_a_run_stopped_between_two_writes_is_brought_in_step(tmp_path, capsys):
  """A run killed after writing a batch size's own profile but before the b1-2 profile left
  them disagreeing; only a later run of that batch size repaired it. Any run now does, first."""
  own_path, both_path = _stopped_between_writes(tmp_path)
  capsys.readouterr()
  _run(tmp_path, "--tokens=13", "--batch_size=2")               # another batch size entirely
  assert f"brought {both_path} in step with {own_path}, which is newer" in (
      capsys.readouterr().out)
  held = {p.key: p for p in records.load(both_path).points if p.batch_size == 1}
  assert held == {p.key: p for p in records.load(own_path).points}
  _run(tmp_path, "--tokens=13", "--batch_size=2")
  assert "in step" not in capsys.readouterr().out           # (nothing to repair now)


def test_block_mode_chunks_keep_the_whole_phases_checks(tmp_path):
  """The whole-model checks of --mode=block came from the first chunk (17 and 15, not 17, 10
  and 2): the low end was never checked against the additive prediction."""
  (plain,) = _run(tmp_path / "a", "--mode=block", "--tokens=all")
  (chunked,) = _run(tmp_path / "b", "--mode=block", "--tokens=all", "--chunk_points=2")
  for prof in (plain, chunked):
    assert sorted(p.tokens for p in prof.points if p.component == "model") == [2, 10, 17]
    assert sorted(p.component for p in prof.points if p.component in ("embed", "dispatch")) == [
        "dispatch", "embed"]
    assert sorted(p.tokens for p in prof.points if p.component == "block") == list(range(2, 18))


def test_an_interrupted_batch_keeps_the_profile_of_all_batches_in_step(tmp_path, monkeypatch):
  """Chunks of batch 2 were written to its own profile, not to the b1-2 one beside it, which
  went on reporting the old latencies when the run was killed before batch 2 was done."""
  _run(tmp_path, "--tokens=all", "--batch_size=1,2", "--chunk_points=4")
  real, calls = runner._measure, []

  def measure(keys, **kw):
    calls.append(keys)
    if len(calls) == 6:           # batch 1's four chunks, then one of batch 2
      raise KeyboardInterrupt
    return real(keys, **kw)

  monkeypatch.setattr(runner, "_measure", measure)
  with pytest.raises(KeyboardInterrupt):    # (no confirmation call among batch 1's)
    _run(tmp_path, "--tokens=all", "--batch_size=1,2", "--chunk_points=4", "--noconfirm_steps")
  own = records.load(str(tmp_path / "test-tiny-vit_model_b2_float32_cpu.json"))
  both = records.load(str(tmp_path / "test-tiny-vit_model_b1-2_float32_cpu.json"))
  fresh = {k[1] for k in calls[4]}
  got = {p.tokens: p.median_s for p in both.points if p.batch_size == 2}
  assert {p.tokens: p.median_s for p in own.points} == got and fresh <= set(got)


def test_default_flags_run_the_pipeline_on_the_embedded_model():
  # The no-flag run itself is exercised by hand (README); here: what it would run.
  f = _flags()
  assert f.mode == "pipeline" and f.out_dir is None
  cfg, params, source, spec, data = cli.pipeline_from_flags(f)
  assert data.labelled and len(data.indices) == 359
  assert cfg.name == "vit_digits" and params is not None
  assert source.endswith(os.path.join("weights", "vit_digits"))
  assert spec.batch_size == 1 and spec.dtype == "float32" and spec.data == "digits"
  assert spec.confirm_steps and not cli.pipeline_from_flags(_flags("--noconfirm_steps"))[
      3].confirm_steps          # (the paper pipeline's profile: runner.ProfileSpec)
  assert spec.tokens is None and spec.grid(cfg) == tuple(range(65, 1, -1))
  assert spec.layer == 3 and spec.method == "pomt" and spec.solver == "paper"
  assert spec.alpha == 0.5 and spec.num_images is None
  assert spec.loop_neighbours == 2
  *_, spec, _ = cli.pipeline_from_flags(_flags("--solver=multi", "--accuracy_floor=0.97",
                                               "--loop_neighbours=4"))
  assert spec.loop_neighbours == 4             # (the main job had no flag: always 2)


def test_the_paper_pipeline_profiles_with_its_confirm_steps(monkeypatch):
  """A mutation audit: the paper pipeline's profile stage hands its `confirm_steps` to the
  profiler (--noconfirm_steps was otherwise dropped there) and indents the profiler's lines
  (a confirmation's) under the stage's heading; PipelineSpec confirms by default."""
  got = []

  def run_profile(pspec, **kw):
    got.append(pspec.confirm_steps)
    kw["log"]("timed 9 again")
    raise KeyboardInterrupt

  monkeypatch.setattr(runner, "run_profile", run_profile)
  for args, confirms in (((), True), (("--noconfirm_steps",), False)):
    cfg, params, _, spec, _ = cli.pipeline_from_flags(_flags(*args))
    lines = []
    with pytest.raises(KeyboardInterrupt):
      pipeline._profile(cfg, params, spec, [17, 9], False, lines.append)  # noqa
    assert got[-1] is confirms and lines[-1] == "  timed 9 again"
  assert pipeline.PipelineSpec.confirm_steps is True


def _killed_and_live_keeps(parent, name):
  """The staging folders of two `.partial` keeps of output `name` in `parent`: one whose
  writer died (a process that has exited), one of a writer still at work (this one)."""
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  stale = parent / f".{name}.partial-0badf00d.tmp-{int(dead.stdout)}-abc"
  live = parent / f".{name}.partial-0badf00e.tmp-{os.getpid()}-abc"
  (stale / "profile").mkdir(parents=True)
  live.mkdir()
  return stale, live


def test_pipeline_end_to_end_on_a_small_grid(tmp_path, capsys, monkeypatch):
  # A keep killed while staging (a probe: SIGKILL while a failed run kept its measurements)
  # left its hidden temporary, which only a later failed run swept: a succeeding one does too.
  stale, live = _killed_and_live_keeps(tmp_path, "run")
  # The verify stage's measurements replaced by known, distinct ones (a pruned row reporting
  # the unpruned graph's spread passed while the two happened to be close).
  known = {"unpruned": timing.summarize([2e-3, 3e-3, 4e-3, 6e-3]),
           "pomt": timing.summarize([1e-3, 1.5e-3, 1.6e-3, 3e-3])}
  timed = []          # (the timing itself: test_verify_times_both_graphs_in_interleaved_rounds)
  # The solve stage's re-timing of the counts of highest utility: uniform graphs keyed by their
  # count, each 8 samples of a smooth curve (0.8 ms at 17 tokens .. 2 ms at 65).
  retimed = {n: timing.summarize([(0.5 + 1.5 * n / 65) * 1e-3 * (1 + k / 100) for k in range(8)])
             for n in (65, 49, 33, 17)}

  def measure(cfg, params, graphs, spec):
    timed.append(sorted(graphs))
    return {name: (retimed if isinstance(name, int) else known)[name] for name in graphs}
  monkeypatch.setattr(pipeline, "_measure_graphs", measure)
  s = cli.main(_flags(f"--out_dir={tmp_path / 'run'}", *FAST, "--tokens=65,49,33,17",
         "--num_images=40", "--eval_batch_size=20"))
  # Every count below 65 is among the top 5 by utility: one round times them with the unpruned
  # graph (none where the profile's n* is 65 itself, as a loaded machine's flat curve gives),
  # then the verify stage its two (or one) graphs.
  rounds = [graphs for graphs in timed if all(isinstance(k, int) for k in graphs)]
  assert rounds in ([], [[17, 33, 49, 65]]) and len(timed) == len(rounds) + 1
  timed = timed[len(rounds):]
  assert not stale.exists() and live.exists()
  assert s["model"] == "vit_digits" and s["num_images"] == 40 and s["metric"] == "accuracy"
  assert s["n_star"] in (65, 49, 33, 17)
  assert (s["alpha"], s["accuracy_floor"], s["latency_budget"]) == (0.5, None, None)
  # The paper's proxies: L(n*) of the uniform graph, not of the schedule, and said so.
  assert (s["basis"], s["latency_basis"]) == ("predicted", "predicted")
  assert s["predicted_by"].startswith("the paper's proxies at n*: the latency of the uniform "
                                      "n*-token graph as the profile measured it")
  assert s["counts"] == [65] * 4 + [s["n_star"]] * 3
  assert s["unpruned"]["counts"] == [65] * 7
  assert 0.0 <= s["pruned"]["accuracy"] <= 1.0 and s["unpruned"]["accuracy"] > 0.9
  assert s["speedup"] == pytest.approx(s["unpruned"]["latency_ms"] / s["pruned"]["latency_ms"])
  # Each graph's own median and spread, in milliseconds (n* = 65: one graph, timed once).
  assert timed == ([["unpruned"]] if s["n_star"] == 65 else [["pomt", "unpruned"]])
  pruned = known["unpruned" if s["n_star"] == 65 else "pomt"]
  assert (s["unpruned"]["latency_ms"], s["unpruned"]["iqr_ms"], s["pruned"]["latency_ms"],
          s["pruned"]["iqr_ms"]) == pytest.approx((3.5, 1.75, 1e3 * pruned.median,
                                                   1e3 * pruned.iqr))
  for key in ("profile", "estimate", "solution", "solution_plot", "profile_plot", "summary"):
    assert os.path.exists(s["files"][key]), key
  with open(s["files"]["summary"]) as f:
    assert json.load(f)["schedule"] == s["schedule"]
  assert s["method_options"] == {}                       # (POMT has none)
  # The solution names the profile and estimate published beside it (it said 'profile' and
  # 'estimate_record': deploy's provenance and its refusals named no file).
  with open(s["files"]["solution"]) as f:
    solved_from = json.load(f)
  assert solved_from["profile"]["path"] == s["files"]["profile"]
  assert solved_from["estimate"]["path"] == s["files"]["estimate"]
  assert set(s["seconds"]) == {"profile", "estimate", "solve", "verify"} | (
      {"in_loop"} if rounds else set())                # (paper: the re-timing's, when it ran)
  assert all(v > 0 for v in s["seconds"].values())
  # The re-timed samples joined the profile's points, the ones the solution's curve is of.
  assert solved_from["settings"].get("retimed_counts") == ([49, 33, 17] if rounds else None)
  with open(s["files"]["profile"]) as f:
    points = {p["tokens"]: p for p in json.load(f)["points"] if p["component"] == "model"}
  scale = points[65]["median_s"] / retimed[65].median      # (the machine's drift since)
  for n, p in points.items():
    assert (p["samples_s"][-8:] == pytest.approx([scale * t for t in retimed[n].samples])
            ) == (bool(rounds) and n != 65), n
    assert p.get("retimed") == ({"samples": 8, "scale": pytest.approx(scale)}
                                if rounds and n in (49, 33, 17) else None), n
    assert p["median_s"] == pytest.approx(float(np.median(p["samples_s"])))
    i = solved_from["curve"]["tokens"].index(n)
    assert solved_from["curve"]["latency_s"][i] == p["median_s"]
  out = capsys.readouterr().out
  assert ("  re-timed the counts of highest utility (49, 33, 17) with the unpruned graph, "
          "samples pooled into the profile's: n* " if rounds else
          "  n* 65 is the unpruned count: nothing to time again") in out
  assert f"n* = {s['n_star']} tokens" in out
  assert ("nothing pruned: the chosen schedule is the unpruned graph" if s["n_star"] == 65 else
          "speedup x") in out      # (n* = 65 on a loaded machine: a flat curve, CI saw it)
  t = s["seconds"]
  assert f"wall seconds: profile {t['profile']:.1f}, " in out
  assert (f", solve {t['solve']:.1f} (in-loop timing {t['in_loop']:.1f}), " if rounds else
          f", solve {t['solve']:.1f}, verify ") in out


def test_pipeline_on_image_folders(tmp_path, capsys):
  # The real-data path: PNG files through ImageFolder and the model's eval preprocessing.
  from vitprune.digits import write_digits_imagefolder
  labelled = write_digits_imagefolder(str(tmp_path / "digits"), split="test", limit=30)
  s = cli.main(_flags(f"--out_dir={tmp_path / 'a'}", *FAST, "--tokens=65,33",
         f"--data={labelled}", "--eval_batch_size=16"))
  assert s["metric"] == "accuracy" and s["num_images"] == 30 and s["unpruned"]["accuracy"] > 0.8
  flat = tmp_path / "flat"
  flat.mkdir()
  for png in sorted((tmp_path / "digits").glob("*/*.png"))[:20]:
    (flat / png.name).write_bytes(png.read_bytes())
  s = cli.main(_flags(f"--out_dir={tmp_path / 'b'}", *FAST, "--tokens=65,33",
         f"--data={flat}", "--eval_batch_size=16"))
  assert s["metric"] == "agreement" and s["num_images"] == 20
  assert s["unpruned"]["agreement"] == 1.0 and "accuracy" not in s["pruned"]
  # Few unlabelled images are noted as few, not as fewer than the classes (20 >= 10 of them).
  assert ("note: the choice rests on 20 images, unlabelled, fewer than 30: each measured "
          "agreement is a count of 20 (steps of 0.05)") in capsys.readouterr().out
  # The change in agreement: agreement - 1 exactly (the unpruned graph cannot disagree with
  # itself), never an interval above 0 (nothing pruned: test_pipeline_outputs).
  change = s["pruned"]["change"]
  assert change["value"] == pytest.approx(s["pruned"]["agreement"] - 1.0, abs=1e-12)
  assert change["interval_95"][1] <= 0.0 and change["images_gained"] == 0


def test_pipeline_multi_layer_solver(tmp_path, capsys):
  s = cli.main(_flags(f"--out_dir={tmp_path}", *FAST, "--tokens=65,33,17", "--num_images=40",
         "--eval_batch_size=20", "--solver=multi", "--accuracy_floor=0.5",
         "--refine_accuracy_rounds=2"))
  assert s["solver"] == "multi" and s["n_star"] is None and s["method"] == "pomt"
  # What chose the schedule: the floor; alpha weighed nothing (it was recorded as 0.5).
  assert (s["accuracy_floor"], s["latency_budget"], s["alpha"]) == (0.5, None, None)
  counts = s["counts"]
  assert counts[0] == 65 and all(a >= b for a, b in zip(counts, counts[1:]))
  assert set(counts) <= {65, 33, 17}
  assert s["predicted"]["accuracy"] >= 0.5 and s["predicted"]["latency_ms"] > 0
  with open(s["files"]["solution"]) as f:   # (why the latency model is untrusted: the solution's)
    assert s["latency_model_untrusted"] == json.load(f)["settings"].get("latency_model_untrusted")
  # The floor is checked on the data, not only predicted: the verified graph meets it.
  assert s["pruned"]["accuracy"] >= 0.5
  with open(s["files"]["solution"]) as f:
    chosen = json.load(f)["chosen"]
  assert chosen["criterion"] == "accuracy_floor_measured" and chosen["counts"] == counts
  assert chosen["measured_accuracy"] == pytest.approx(s["pruned"]["accuracy"])
  assert chosen["basis"] == "measured" and s["basis"] == "measured"
  assert s["latency_basis"] == "measured"                 # (timed in the loop)
  assert chosen["measured_latency_iqr_s"] >= 0            # (and its spread recorded)
  assert s["predicted_by"] == ("the solver's models: latency from the profile "
                               f"({s['latency_source']}), accuracy combined from the "
                               "estimate's single-layer sensitivities")
  with open(s["files"]["solution"]) as f:
    refined = json.load(f)["settings"]["accuracy_refinement"]
  # Round 0 measured schedules; which ones depends on the timing: where its whole frontier is
  # the estimate's own single reductions, all are "unscored" (in sample) and none scored (a
  # clean-clone CI run failed on `num_schedules >= 1` alone).
  first = refined["rounds"][0]
  assert first["num_schedules"] + first.get("unscored", 0) >= 1
  # The estimate stage kept its per-example margins in memory: every round also reports the
  # anchored per-image prediction, which round 0 (no multi-layer schedule measured yet) makes
  # from the unpruned model alone.
  assert all(r["anchored"]["num_schedules"] == r["num_schedules"] for r in refined["rounds"])
  with open(s["files"]["estimate"]) as f:
    est = json.load(f)
  assert est["kind"] == "sensitivity" and est["layers"] == list(range(6))
  assert est["tokens"] == [17, 33]
  out = capsys.readouterr().out
  assert "multi-layer Pareto frontier, accuracy >= 0.5" in out
  assert "accuracy model corrected from measurements in" in out
  # (its error, when some round scored a schedule: none may have, by the timing, as above)
  assert ("; the anchored per-image prediction by " in out) == any(
      r["num_schedules"] for r in refined["rounds"])
  assert f"chosen: multi-layer pomt schedule {s['schedule']}" in out
  # In the order it happened: accuracy measured on the data, then the timing among those
  # meeting the floor (it was printed first); the chosen line names both measurements.
  lines = out.splitlines()
  # (one multi-layer schedule reads "1 multi-layer schedule on the data": how many the floor
  # check measures depends on the timing, and a CI run failed on the plural alone)
  data_line = next(i for i, ln in enumerate(lines) if ln.startswith("  measured ")
                   and re.search(r" schedules? on the data ", ln))
  timed_line = next(i for i, ln in enumerate(lines) if ln.startswith("  timed "))
  assert data_line < timed_line, out
  ms = chosen["measured_latency_s"] * 1e3
  assert (f"  chosen: predicted {s['predicted']['latency_ms']:.4f} ms, accuracy "
          f"{s['predicted']['accuracy']:.4f}; measured {ms:.4f} ms, accuracy "
          f"{chosen['measured_accuracy']:.4f}") in lines, out
  t = s["seconds"]
  assert set(t) == {"profile", "estimate", "solve", "in_loop", "verify"}
  assert 0 < t["in_loop"] < t["solve"] and f"(in-loop timing {t['in_loop']:.1f})" in out


@pytest.mark.parametrize("stage", ["_verify", "write_outputs"])
def test_a_failed_late_stage_keeps_what_was_measured(tmp_path, capsys, monkeypatch, stage):
  """A failure in the solve or verify stage lost the profile and the estimate (a fault probe's
  main job: 60 s of measurement, then an error and no file); they are kept in a new sibling
  directory that experiments.solve reads, and the output directory is left untouched. So does
  a failure of the output step (a file added to the output folder during the run made it not
  ours to replace: the measurements were lost)."""
  from vitprune import pipeline  # pylint: disable=g-import-not-at-top
  from vitprune.records.estimate import read_estimate  # pylint: disable=g-import-not-at-top

  def broken(*args, **kwargs):
    raise ValueError(f"{stage} broke")
  monkeypatch.setattr(pipeline, stage, broken)
  out = tmp_path / "run"
  # A keep killed while staging left its hidden temporary, and no later run drew its name.
  stale, live = _killed_and_live_keeps(tmp_path, "run")
  with pytest.raises(ValueError, match=f"{stage} broke"):
    cli.main(_flags(f"--out_dir={out}", *FAST, "--tokens=65,33,17", "--num_images=40",
                    "--eval_batch_size=20", "--solver=multi", "--accuracy_floor=0.5"))
  assert not out.exists()
  (kept,) = [p for p in tmp_path.iterdir() if p.name.startswith("run.partial-")]
  assert not stale.exists() and live.exists()
  (prof,) = (kept / "profile").glob("*.json")
  est = kept / "estimate" / "vit_digits_pomt_layers.json"
  command = (f"python -m experiments.solve --profile={prof} --estimate={est} --mode=multi "
             "--accuracy_floor=0.5 --allow_batch_mismatch")
  assert f"is kept in {kept} (solve them again: {command})" in capsys.readouterr().out
  assert {p.component for p in records.load(str(prof)).points} == {"model", "schedule"}
  assert read_estimate(str(est)).kind == "sensitivity"
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  code, out, err = run_cli_in_process(tmp_path, "solve", shlex.split(command)[3:] + [
      f"--out_dir={tmp_path / 'solved'}"])              # (the command as the line gives it)
  assert code == 0 and "(accuracy_floor, rests on predicted numbers)" in out, err


def test_a_main_job_does_not_replace_outputs_another_run_published_meanwhile(
    tmp_path, capsys, monkeypatch):
  """Two main jobs into one --out_dir at once (a probe): both exited 0 and the one finishing
  second replaced the other's outputs. It fails now, keeping what it measured, and the other
  run's outputs stay."""
  from vitprune import atomic, pipeline  # pylint: disable=g-import-not-at-top
  out = tmp_path / "run"
  verify = pipeline._verify                           # pylint: disable=protected-access

  def other_run_publishes(*args, **kwargs):
    with atomic.staged_dir(str(out), overwrite=True, is_ours=pipeline.is_pipeline_dir) as tmp:
      with open(os.path.join(tmp, pipeline.SUMMARY_FILE), "w") as f:
        json.dump({"format": pipeline.SUMMARY_FORMAT, "files": {}, "run": "other"}, f)
    return verify(*args, **kwargs)
  monkeypatch.setattr(pipeline, "_verify", other_run_publishes)
  with pytest.raises(atomic.ReplacedMeanwhileError, match="was written by another run after "
                                                          "this one began"):
    cli.main(_flags(f"--out_dir={out}", *FAST, "--tokens=65,33,17", "--num_images=40",
                    "--eval_batch_size=20"))
  assert json.loads((out / pipeline.SUMMARY_FILE).read_text())["run"] == "other"
  (kept,) = [p for p in tmp_path.iterdir() if p.name.startswith("run.partial-")]
  said = capsys.readouterr().out
  command = said.split(f"is kept in {kept} (solve them again: ")[1].split(")\n")[0]
  assert command.endswith("--mode=paper --layer=3 --method=pomt --alpha=0.5 "
                          "--allow_batch_mismatch"), command
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  code, out, err = run_cli_in_process(tmp_path, "solve", shlex.split(command)[3:] + [
      f"--out_dir={tmp_path / 'solved'}"])              # (the paper solve, as the job's)
  assert code == 0 and "method pomt  (utility, rests on predicted numbers)" in out, err


def test_a_signal_while_keeping_the_measurements_still_says_why_the_run_failed(
    tmp_path, capsys, monkeypatch):
  """A probe: SIGTERM while a failed run kept its measurements printed 'error: terminated'
  alone; the failure it was keeping them for was never shown."""
  from vitprune import pipeline  # pylint: disable=g-import-not-at-top

  def broken(*args, **kwargs):
    raise ValueError("refusing to replace run: it holds NOTES.txt")

  def killed(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(pipeline, "write_outputs", broken)
  monkeypatch.setattr(pipeline, "keep_measured", killed)
  with pytest.raises(KeyboardInterrupt):
    cli.main(_flags(f"--out_dir={tmp_path / 'run'}", *FAST, "--tokens=65,33",
                    "--num_images=20", "--eval_batch_size=20"))
  assert ("the run had failed (refusing to replace run: it holds NOTES.txt); interrupted "
          "while keeping what it measured") in capsys.readouterr().out


def test_an_image_the_estimate_cannot_read_keeps_the_profile(tmp_path, capsys):
  """A 16-bit PNG in --data was found by the estimate stage, after the whole profile stage, and
  the profile was thrown away with it (a probe: no out_dir, no partial folder). The profile is
  kept as after a later stage's failure, and the message says what failed."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from vitprune import digits  # pylint: disable=g-import-not-at-top
  images = tmp_path / "imgs"
  digits.write_digits_imagefolder(images, split="test", limit=20)
  odd = images / "3" / "odd.png"
  Image.fromarray((np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)).save(odd)
  out = tmp_path / "run"
  with pytest.raises(ValueError, match=re.escape(f"image file '{odd}' has mode 'I;16'")):
    cli.main(_flags(f"--out_dir={out}", *FAST, "--tokens=65,33,17", f"--data={images}"))
  assert not out.exists()
  (kept,) = [p for p in tmp_path.iterdir() if p.name.startswith("run.partial-")]
  assert (f"the estimate stage failed; the profile measured before it is kept in {kept} "
          "(experiments.solve reads it with an estimate of experiments.estimate)") in (
              capsys.readouterr().out)
  (prof,) = (kept / "profile").glob("*.json")
  assert {p.tokens for p in records.load(str(prof)).points} == {65, 33, 17}
  assert not (kept / "estimate").exists()


def test_a_choice_that_prunes_nothing_reports_no_measured_speed_up(tmp_path, capsys,
                                                                   monkeypatch):
  """`--alpha=0` on all 359 digits chose n* = 65 (accuracy alone): the verify stage timed the
  unpruned graph against itself and reported 'speedup x1.13' (x1.01 on a rerun)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vitprune import solve  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(solve, "utility", lambda lat, acc, alpha=0.5: np.arange(float(len(acc))))
  s = cli.main(_flags(f"--out_dir={tmp_path}", *FAST, "--tokens=65,33,17", "--num_images=40",
                      "--eval_batch_size=20"))
  assert s["schedule"] == "full" and s["counts"] == s["unpruned"]["counts"]
  assert s["speedup"] == 1.0 and s["pruned"]["latency_ms"] == s["unpruned"]["latency_ms"]
  out = capsys.readouterr().out
  assert "the chosen schedule prunes nothing: it is the unpruned graph, timed once" in out
  assert "nothing pruned: the chosen schedule is the unpruned graph (speed-up 1 by " \
         "definition)" in out and "speedup x" not in out


def test_measurements_that_cannot_be_kept_leave_no_partial_folder(tmp_path, capsys,
                                                                   monkeypatch):
  """On a full disk the kept `<out_dir>.partial-XXXX/` was left half-written (an empty
  profile/), one more per run; it is staged and published whole, or not at all."""
  import errno  # pylint: disable=g-import-not-at-top

  def broken(*args, **kwargs):
    raise ValueError("verify broke")

  def full(path, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", path)
  monkeypatch.setattr(pipeline, "_verify", broken)
  monkeypatch.setattr(pipeline, "write_estimate", full)
  with pytest.raises(ValueError, match="verify broke"):
    cli.main(_flags(f"--out_dir={tmp_path / 'run'}", *FAST, "--tokens=65,33,17",
                    "--num_images=40", "--eval_batch_size=20"))
  assert os.listdir(tmp_path) == []
  out = capsys.readouterr().out
  assert "could not keep the profile and estimate measured so far: [Errno 28] No space left " \
         f"on device: '{tmp_path}/run.partial-" in out and ".tmp-" not in out


def test_a_budget_is_checked_in_the_loop_with_no_neighbours(tmp_path):
  """--loop_neighbours=0 skipped the budget's check: a budget no graph can meet ended normally,
  the fastest schedule labelled 'utility'. The choice alone is timed now, and checked."""
  from vitprune import solve_loop  # pylint: disable=g-import-not-at-top
  with pytest.raises(solve_loop.BudgetNotMetError, match="latency budget"):
    cli.main(_flags(f"--out_dir={tmp_path}", *FAST, "--tokens=65,33,17", "--num_images=40",
                    "--eval_batch_size=20", "--solver=multi", "--latency_budget=1e-9",
                    "--loop_neighbours=0"))


def test_pipeline_refinement_without_a_floor(tmp_path, capsys):
  """A latency budget: the refinement chooses on measured accuracy, then the choice and its
  neighbours are timed in the loop (it rested on predicted latency)."""
  s = cli.main(_flags(f"--out_dir={tmp_path}", *FAST, "--tokens=65,33,17", "--num_images=40",
         "--eval_batch_size=20", "--solver=multi", "--latency_budget=10",
         "--refine_accuracy_rounds=2"))
  with open(s["files"]["solution"]) as f:
    sol = json.load(f)
  assert sol["chosen"]["basis"] == "measured" and sol["settings"]["accuracy_refinement"]
  best = max(c["measured_accuracy"] for c in sol["checked"]
             if c["predicted_latency_s"] <= 10)
  assert sol["chosen"]["measured_accuracy"] == best == pytest.approx(s["pruned"]["accuracy"])
  assert sol["chosen"]["criterion"] == "latency_budget_measured"
  assert sol["settings"]["latency_basis"] == "measured"
  assert sol["chosen"]["measured_latency_s"] <= 10
  # (one graph or several: how many neighbours the measured frontier has varies by run)
  assert "in_loop" in s["seconds"] and re.search(r"timed \d+ compiled graphs? around the "
                                                 r"choice: the most accurate within 1e\+04 ms is",
                                                 capsys.readouterr().out)
  assert sol["settings"]["timed_rounds"] == [sol["settings"]["timed_in_loop"]]   # one round
  # What the budget gives up, in one line (a probe's budget cost 54 points, said only as an
  # accuracy change in the table), unless nothing was pruned.
  m, u, p = s["metric"], s["unpruned"], s["pruned"]
  cost = (f"   the latency budget 1e+04 ms {'costs' if u[m] >= p[m] else 'gains'} "
          f"{abs(100 * (u[m] - p[m])):.2f} points of accuracy (measured here, on the same "
          "images)")
  assert (cost in pipeline.format_summary(s).splitlines()) is (s["counts"] != u["counts"])
  assert cost not in pipeline.format_summary(dict(s, counts=u["counts"]))
  assert "   the latency budget 1e+04 ms costs 12.50 points of accuracy (measured here" in (
      pipeline.format_summary(dict(s, counts=[0], unpruned=dict(u, accuracy=0.75),
                                   pruned=dict(p, accuracy=0.625))))
  # The verify stage's own timing over the budget is said (it exited 0 with no word).
  assert "is over the budget" not in pipeline.format_summary(s)
  over = dict(s, pruned=dict(s["pruned"], latency_ms=2e4))
  assert (f"note: this timing of the chosen graph, 20000.0000 ms, is over the budget of 1e+04 ms "
          f"it measured within in the loop ({s['measured_in_loop']['latency_ms']:.4f} ms)"
          in pipeline.format_summary(over))
  # The solver's accuracy of a schedule with at most one reduction is the estimate's measurement
  # (a probe read it as predicted); of a multi-layer schedule, a prediction.
  said = "(the accuracy the estimate measured: it reduces in at most one block)"
  from vitprune.records.estimate import read_estimate  # pylint: disable=g-import-not-at-top
  assert s["estimate_measured"] == read_estimate(s["files"]["estimate"]).measured(
      "accuracy").get(tuple(s["counts"]))   # (None: the choice here may reduce in several blocks)
  same = dict(s, estimate_measured=s["predicted"]["accuracy"])
  for counts, noted in (([65, 65, 65, 65, 33, 33, 33], True),
                        ([65, 65, 49, 49, 33, 33, 33], False)):
    assert (said in pipeline.format_summary(dict(same, counts=counts))) is noted
  # ... unless the monotone envelope predicted less than it measured (a probe: 0.9749 was said
  # to be the estimate's measurement, which was 0.9805), timed in the loop or not (a review)
  for looped in (s["measured_in_loop"], None):
    above = dict(same, counts=[65, 65, 65, 65, 33, 33, 33], measured_in_loop=looped,
                 estimate_measured=s["predicted"]["accuracy"] + 0.0056)
    text = pipeline.format_summary(above)
    assert said not in text and (
        f"accuracy {s['predicted']['accuracy']:.4f} (the estimate measured "
        f"{s['predicted']['accuracy'] + 0.0056:.4f}: the solver's monotone envelope predicts no "
        "block's reduction above the unpruned model or a larger count's); measured:") in text
  # A speed-up whose medians differ by less than the larger IQR says it is within the spread.
  spread = "(within the timing spread: the medians differ by less than the larger IQR)"
  u = s["unpruned"]
  for iqr, noted in ((0.0, False), (10.0 * u["latency_ms"], True)):
    text = pipeline.format_summary(dict(s, pruned=dict(s["pruned"], iqr_ms=iqr),
                                        unpruned=dict(u, iqr_ms=0.0), speedup=1.5,
                                        counts=[65, 65, 65, 65, 33, 33, 33]))   # (it may
                                                                # choose the unpruned graph)
    assert (f"speedup x1.50 {spread}; " in text) is noted and ("speedup x1.50; " in text) is not \
        noted, text


def test_the_printed_summary_of_a_summary_record():
  """format_summary's lines, every number where it belongs: the table's columns, the held-out
  line (met or not, where the interval lies, paired under a maximum drop), the budget's cost
  with no note below the budget, the first 6 steps, the in-loop timing within the solve's; a
  record without the paired change gives pruned minus unpruned."""
  s = {"model": "vit_digits", "device_kind": "cpu", "platform": "cpu", "batch_size": 8,
       "dtype": "float32", "num_images": 40, "data": "digits", "metric": "accuracy",
       "solver": "paper", "n_star": 33, "alpha": 0.5, "method": "pomt",
       "schedule": "33 tokens from block 1", "counts": [65, 33, 33],
       "predicted": {"latency_ms": 1.25, "accuracy": 0.9},
       "unpruned": {"counts": [65, 65, 65], "latency_ms": 2.0, "iqr_ms": 0.125, "accuracy": 0.95},
       "pruned": {"latency_ms": 1.5, "iqr_ms": 0.0625, "accuracy": 0.875,
                  "agreement_with_unpruned": 0.9},
       "speedup": 4 / 3, "max_accuracy_drop": 0.1, "accuracy_floor": 0.85,
       "holdout": {"num_images": 20, "unpruned": {"accuracy": 0.9},
                   "pruned": {"accuracy": 0.8, "interval_95": [0.6, 0.92]},
                   "floor": 0.8, "floor_met": True, "floor_status": "straddles"},
       "latency_budget": 0.004, "measured_in_loop": {"latency_ms": 1.4},
       "steps": [f"step {i}" for i in range(1, 8)],
       "seconds": {"profile": 1.5, "estimate": 2.0, "solve": 3.5, "in_loop": 0.5},
       "files": {"summary": "out/summary.json"}}
  assert pipeline.format_summary(s).splitlines() == [
      "== vit_digits on cpu (cpu), batch 8, float32, 40 images of digits",
      "   chosen: n* = 33 tokens (alpha 0.5) -> pomt schedule 33 tokens from block 1",
      "   paper proxies at n*: L(n*) 1.2500 ms (all blocks at n*), random-drop accuracy 0.9000; "
      "measured:",
      "   graph      tokens/layer                  latency ms   IQR ms  accuracy",
      "   unpruned   [65, 65, 65]                      2.0000   0.1250    0.9500",
      "   pomt       [65, 33, 33]                      1.5000   0.0625    0.8750",
      "   speedup x1.33; accuracy change -0.0750; top-1 agreement with unpruned 0.9000",
      "   held out: 20 images the choice never saw: unpruned 0.9000, pomt 0.8000 (95% interval "
      "0.6000..0.9200); floor 0.8 (the unpruned there - 0.1) met there (the paired interval "
      "contains it)",
      "   the latency budget 4 ms costs 7.50 points of accuracy (measured here, on the same "
      "images)",
      "   latency steps: step 1; step 2; step 3; step 4; step 5; step 6",
      "   wall seconds: profile 1.5, estimate 2.0, solve 3.5 (in-loop timing 0.5)",
      "   files: summary=out/summary.json"]
  fails = dict(s, max_accuracy_drop=None, holdout=dict(
      s["holdout"], floor=0.85, floor_met=False, floor_status="fails"))
  assert ("floor 0.85 NOT met there (the whole interval is below it)\n"
          in pipeline.format_summary(fails))
  one = pipeline.format_summary(dict(s, num_images=1, holdout=dict(s["holdout"], num_images=1)))
  assert one.splitlines()[0].endswith(", float32, 1 image of digits")   # (was '1 images')
  assert "   held out: 1 image the choice never saw: " in one


def test_floor_study_checks_the_main_job(tmp_path, capsys):
  # Same job as test_pipeline_multi_layer_solver: its graphs come from the session's XLA cache.
  from benchmarks import floor_study
  f = common.parse(floor_study.define_flags, [
      "--seeds=1", "--accuracy_floor=0.5", f"--out={tmp_path / 'fs.json'}",
      "--job_flags=" + " ".join(FAST + ["--tokens=65,33,17", "--num_images=40",
                                        "--eval_batch_size=20"])])
  (row,) = floor_study.main(f)
  assert row["meets_floor"] == (row["measured_accuracy"] >= 0.5) and row["basis"] == "measured"
  assert row["checked"] >= row["meeting_floor"] >= 1
  assert 0 < row["uniform_curve_s"] and 0 <= row["overhead_s"] <= row["wall_s"]
  assert row["overhead_share"] == pytest.approx(row["overhead_s"] / row["wall_s"])
  checked = row["checked_schedules"]
  assert len(checked) == row["checked"] and row["calibration_schedules"] == 6
  assert row["accuracy_refinement"] is None          # not asked for
  chosen = [c for c in checked if c["counts"] == row["counts"]]
  assert len(chosen) == 1 and chosen[0]["loop_ms"] > 0     # the choice was timed in the loop
  if row["retime"]:
    rt = row["retime"]
    assert rt["ratio"] >= 1.0 and rt["schedules"] == row["meeting_floor"] == len(rt["all_ms"])
    assert rt["all_ms"][rt["fastest"]] == min(rt["all_ms"].values()) == rt["fastest_ms"]
    loop = {c["schedule"]: c["loop_ms"] for c in checked}
    assert rt["fastest_timed_in_loop"] == (loop[rt["fastest"]] is not None)
    if rt["fastest_timed_in_loop"]:    # the loop chose the fastest it measured
      assert rt["loop_ratio"] == pytest.approx(chosen[0]["loop_ms"] / loop[rt["fastest"]])
      assert rt["loop_ratio"] <= 1.0
  doc = json.loads((tmp_path / "fs.json").read_text())
  assert doc["totals"]["seeds"] == 1 and doc["rows"][0]["schedule"] == row["schedule"]
  assert f"| 0 | {row['schedule']} |" in capsys.readouterr().out
  with pytest.raises(ERRORS, match="is a directory, not a file"):
    floor_study.main(common.parse(floor_study.define_flags, [f"--out={tmp_path}"]))
  with pytest.raises(ERRORS, match="--job_flags sets --accuracy_floor, --seed, which the "
                     "study owns"):       # the rows said floor 0.97, seed 0
    floor_study.main(common.parse(floor_study.define_flags, [
        f"--out={tmp_path / 'fs2.json'}",
        "--job_flags=--tokens=17,9 -accuracy_floor=0.5 --seed=7 --noprogress"]))
  for job_flags, message in (                 # the first ran the study without the argument
      ("--tokens=17,9 extra", r"^--job_flags: unexpected arguments: \['extra'\]$"),
      ("--bogus", r"^--job_flags: Unknown command line flag 'bogus'"),   # named no flag
      ("'x", r"^--job_flags=\"'x\": No closing quotation$"),
      ("--latency_budget=nan", r"^--job_flags: --latency_budget=nan is not a finite number$"),
      ("--tokens=abc", r"^--job_flags: --tokens 'abc' is not 'all'"),     # the job's own checks
      (f"--data={tmp_path / 'missing'}", r"^--job_flags: --data=.*missing does not exist")):
    with pytest.raises(ERRORS, match=message):
      floor_study.main(common.parse(floor_study.define_flags, [
          f"--out={tmp_path / 'fs3.json'}", f"--job_flags={job_flags}"]))
  with pytest.raises(ERRORS, match=r"^unknown token-reduction method 'nosuch'"):  # the study's
    floor_study.main(common.parse(floor_study.define_flags, [             # own, not job_flags'
        f"--out={tmp_path / 'fs3.json'}", "--method=nosuch", "--job_flags=--tokens=17,9"]))
  with pytest.raises(ERRORS, match=r"^--accuracy_floor=0.0: the study needs a floor in \(0, 1\]"):
    floor_study.main(common.parse(floor_study.define_flags, [
        f"--out={tmp_path / 'fs3.json'}", "--accuracy_floor=0"]))
  assert not (tmp_path / "fs3.json").exists()


def test_multi_grid_keeps_the_counts_one_block_can_reach():
  from vitprune import pipeline
  from vitprune.reduce.methods import make_reducer
  cfg = get_config("vit_digits")
  grid = (65, 49, 33, 32, 17)
  assert pipeline.one_block_counts(cfg, grid, make_reducer("tome")) == [33, 49]
  assert pipeline.one_block_counts(cfg, grid, make_reducer("pomt")) == [17, 32, 33, 49]


def test_pipeline_errors(tmp_path):
  with pytest.raises(ERRORS, match="needs trained --weights for test_tiny_vit"):
    cli.main(_flags(f"--out_dir={tmp_path}", "--model=test_tiny_vit"))
  with pytest.raises(ERRORS, match="takes one --batch_size"):
    cli.main(_flags(f"--out_dir={tmp_path}", "--batch_size=1,2"))
  with pytest.raises(ERRORS, match=re.escape(
      f"--data={tmp_path / 'missing'} does not exist: give a folder of images or 'digits' for "
      "the bundled digits")):
    cli.main(_flags(f"--out_dir={tmp_path}", f"--data={tmp_path / 'missing'}"))
  (tmp_path / "notes.txt").write_text("")
  with pytest.raises(ERRORS, match=re.escape(
      f"--data={tmp_path / 'notes.txt'} is a regular file, not a folder: give a folder")):
    cli.main(_flags(f"--out_dir={tmp_path}", f"--data={tmp_path / 'notes.txt'}"))
  with pytest.raises(ERRORS, match="^--accuracy_floor applies to --solver=multi only$"):
    cli.main(_flags(f"--out_dir={tmp_path}", "--accuracy_floor=0.9"))
  with pytest.raises(ERRORS, match="^--measure_frontier applies to --solver=multi only$"):
    cli.main(_flags(f"--out_dir={tmp_path}", "--measure_frontier"))
  with pytest.raises(ERRORS, match="--calibration_schedules applies to --solver=multi only"):
    cli.main(_flags(f"--out_dir={tmp_path}", "--calibration_schedules=8"))
  with pytest.raises(ERRORS, match="--refine_accuracy_rounds applies to --solver=multi only"):
    cli.main(_flags(f"--out_dir={tmp_path}", "--refine_accuracy_rounds=2"))
  with pytest.raises(ERRORS, match="--loop_neighbours applies to --solver=multi with "):
    cli.main(_flags(f"--out_dir={tmp_path}", "--solver=multi", "--loop_neighbours=1"))
  with pytest.raises(ERRORS, match=r"^give only one of --accuracy_floor, --latency_budget "
                                   r"\(each sets what the choice meets\)$"):
    cli.main(_flags(f"--out_dir={tmp_path}", "--solver=multi", "--accuracy_floor=0.9",
           "--latency_budget=0.001"))
  for flag in ("--reducer=tome", "--adaptive", "--coarse_stride=4", "--schedule=keep@3:33",
               f"--compile_cache_dir={tmp_path / 'cache'}"):
    name = flag.split("=")[0]
    hint = r" \(the pipeline's method is --method\)" if name == "--reducer" else ""
    modes = ("model or block" if name in ("--adaptive", "--coarse_stride") else
             "schedule" if name == "--schedule" else "model, block or schedule")
    with pytest.raises(ERRORS, match=f"^{name} applies to --mode={modes}, not "
                       f"--mode=pipeline{hint}$"):
      cli.main(_flags(f"--out_dir={tmp_path}", flag))
  assert not os.path.exists(tmp_path / "cache")


def test_pipeline_checks_flags_and_out_dir_before_any_stage(tmp_path):
  out = tmp_path / "p"
  for args, match in ((["--layer=6"], r"layer 6 is outside \[0, 5\]"),
                      (["--method=nosuch"], "unknown token-reduction method 'nosuch'"),
                      (["--alpha=nan"], "--alpha=nan is not a finite number"),
                      (["--solver=multi", "--latency_budget=0"],
                       "^--latency_budget must be a positive number of seconds, got 0$"),
                      (["--solver=multi", "--calibration_schedules=3"],
                       r"^--calibration_schedules must be >= 4 \(one per reduction term of the "
                       r"latency model\), got 3"),
                      (["--eval_batch_size=1000000000"], "--eval_batch_size=1000000000 cannot fit"),
                      (["--solver=multi", "--method=tome", "--tokens=65,17,9"],
                       r"tome removes at most 32 of 65 tokens in one block: no token count of "
                       r"the grid \(9..65\) below 65 is reachable; use counts >= 33"),
                      (["--solver=multi", "--tokens=65"], r"the token grid \(65..65\) has no "
                       "count below all 65 tokens")):
    with pytest.raises(ERRORS, match=match):
      cli.main(_flags(f"--out_dir={out}", *args))
  assert not out.exists()
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("mine")
  with pytest.raises(FileExistsError, match="refusing to replace"):
    cli.pipeline_from_flags(_flags(), str(foreign))
  (tmp_path / "file").write_text("x")
  with pytest.raises(NotADirectoryError, match="is a regular file, not a directory"):
    cli.pipeline_from_flags(_flags(), str(tmp_path / "file"))
  assert os.listdir(foreign) == ["notes.txt"]


def test_weights_flag(tmp_path):
  from vitprune import checkpoint, model
  wdir = checkpoint.save_weights(str(tmp_path / "w"), get_config("test_tiny_distilled"),
                                 model.init_params(get_config("test_tiny_distilled"), 1))
  (prof,) = _run(tmp_path / "out", f"--weights={wdir}", "--model=test_tiny_distilled",
                 "--tokens=18,3")
  assert prof.model == "test_tiny_distilled" and {p.tokens for p in prof.points} == {18, 3}
  with pytest.raises(ERRORS, match=f"--weights={tmp_path / 'missing'} does not exist"):
    _run(tmp_path, f"--weights={tmp_path / 'missing'}")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ERRORS, match="no config.json"):
    _run(tmp_path, f"--weights={tmp_path / 'empty'}")


@pytest.mark.parametrize("args, match", [
    (["--tokens=1:5"], r"the range lists 1 \.\. 5; 1 is outside \[2, 17\]"),
    (["--tokens=10:18"], r"lists 10 \.\. 18; 18 is outside \[2, 17\]"),
    (["--tokens=1,5"], r"counts \[1\] are outside \[2, 17\]"),
    (["--tokens=5:10:-1"], "never goes from 5 to 10"),
    (["--tokens=5:10:0"], "step must not be 0"),
    (["--tokens=17:5:-99999999999999999999"], r"^--tokens '17:5:-99999999999999999999': step "
     r"-99999999999999999999 is larger than the range 17 \.\. 5, so it lists 17 alone: give "
     r"'17' for that count, or a step of at most 12$"),
    (["--tokens=a:b"], "is not 'all'"),
    (["--tokens="], "is empty"),
    (["--model=deit_smal_patch16_224"], "Did you mean: deit_small_patch16_224"),
    (["--batch_size=0"], "must be >= 1"),
    (["--batch_size=x"], "--batch_size: 'x' is not an integer"),
    (["--batch_size=1,1"], r"--batch_size: duplicate values in \[1, 1\]"),
    (["--mode=schedule"], "needs at least one --schedule"),
    (["--schedule=17,17,17"], "only used with --mode=schedule"),
    (["--mode=schedule", "--schedule=17,17"], "needs depth \\+ 1 = 3"),
    (["--mode=schedule", "--schedule=17,x,3"], "17,x,3"),
    (["--mode=schedule", "--schedule=12,17,3"], "never increase"),
    (["--min_run_time=0"], "^--min_run_time must be > 0"),
    (["--reducer=nosuch"], "nosuch"),
    (["--reducer=KEEP_FIRST_X"], r"valid: evit, pomt, random, tome, topk, keep_first \(the "
                                 r"profiler's own\)"),
    # refused after every graph had compiled (61 s on vit_digits), not naming --reducer
    (["--mode=block", "--reducer=pomt"], "^--reducer=pomt cannot drop tokens after the "
                                         "embedding, which every graph of --mode=block does"),
    (["--reducer=tome"], "^--reducer=tome cannot drop tokens after the embedding"),
    (["--mode=schedule", "--schedule=17,5,5", "--reducer=tome"], "tome can remove at most 8 of "
     "the 17 tokens entering block 0"),
    (["--mode=schedule", "--schedule=17,17,17", "--adaptive"], "^--adaptive applies to "
     "--mode=model or block"),
    (["--mode=schedule", "--schedule=17,17,17", "--chunk_points=4", "--max_points=9"],
     "^--max_points, --chunk_points apply to --mode=model or block"),
    (["--max_points=9"], "^--max_points needs --adaptive$"),
    (["--mode=schedule", "--schedule=17,17,17", "--resume"], "^--resume applies to "
     "--mode=model or block"),
    (["--mode=pipeline", "--resume"], "^--resume applies to --mode=model or block, not "
                                      "--mode=pipeline$"),
    (["--mode=pipeline", "--resume", "--reducer=tome"], "^--resume applies to --mode=model or "
                                                         "block, not --mode=pipeline$"),
    (["--adaptive", "--max_points=3"], r"^--max_points=3 is below the 16 counts of the coarse "
                                       r"grid \(--coarse_stride=0: the automatic stride, each "
                                       r"of the 16 counts\); raise it or --coarse_stride$"),
    (["--mode=schedule", "--schedule=17,17,17", "--tokens=9:17"], "not --mode=schedule"),
    (["--coarse_stride=4"], "^--coarse_stride needs --adaptive$"),
    (["--mode=pipeline", "--model=vit_digits", "--solver=multi", "--noconfirm_steps"],
     "^--confirm_steps applies to "
     r"--solver=paper \(multi fits a latency model to its curve and calibration schedules\)$"),
    (["--mode=pipeline", "--model=vit_digits", "--solver=multi", "--confirm_steps"],
     r"^--confirm_steps applies to --solver=paper \(multi fits"),     # (given, not only off)
    (["--mode=schedule", "--schedule=17,17,17", "--noconfirm_steps"], "^--confirm_steps applies "
     "to --mode=model or block"),
    (["--compile_cache_dir=/dev/null"], "compile_cache_dir"),
    (["--accuracy_floor=0.9"], "^--accuracy_floor applies to --mode=pipeline only, not "
                               "--mode=model$"),
    (["--method=tome", "--data=digits", "--refine_accuracy_rounds=0"],
     "^--data, --method, --refine_accuracy_rounds apply to --mode=pipeline only"),
    (["--min_run_time=inf"], "--min_run_time=inf is not a finite number"),
    (["--batch_size=1000000000"], r"--batch_size=1000000000 cannot fit in memory.*at most \d+ fit"),
])
def test_flag_errors(tmp_path, args, match):
  with pytest.raises(ERRORS, match=match):
    _run(tmp_path, *args)
  assert not os.path.exists(tmp_path / "profile")


def test_reducer_names_are_recorded_in_their_one_spelling(tmp_path):
  """`--reducer=RANDOM` was recorded as 'RANDOM', and the next merge into the same file was
  refused as 'timed with different reducers: 'random' vs 'RANDOM''."""
  assert runner.make_drop_reducer("RANDOM")[1] == "random"
  assert runner.make_drop_reducer(" Keep_First ")[1] == "keep_first"
  _run(tmp_path, "--tokens=17,9", "--reducer=RANDOM")
  _run(tmp_path, "--tokens=13")                          # merged into the same file
  (path,) = [str(p) for p in tmp_path.iterdir() if p.suffix == ".json"]
  prof = records.load(path)
  assert prof.reducer == "random" and {p.tokens for p in prof.points} == {17, 13, 9}


def test_parse_tokens_forms():
  assert parse_token_grid(CFG, "all") == tuple(range(17, 1, -1))
  assert parse_token_grid(CFG, "10:13") == (13, 12, 11, 10)
  assert parse_token_grid(CFG, "17:2:-5") == (17, 12, 7, 2)
  assert parse_token_grid(CFG, "17:1:-5") == (17, 12, 7, 2)   # its end is never reached
  assert parse_token_grid(CFG, " 9,3,4 ") == (9, 4, 3)
  with pytest.raises(ValueError, match=r"^--tokens ' 9,3,9,3,5 ' lists \[3, 9\] more than "
                     r"once: give each count once$"):     # (merged unsaid: a typo for 39?)
    parse_token_grid(CFG, " 9,3,9,3,5 ")
  assert parse_token_grid(get_config("test_tiny_dinov2_reg"), "all")[-1] == 4
  with pytest.raises(ValueError, match="ASCII digits"):       # int() reads them as 5, 6
    parse_token_grid(CFG, "\u0665,\u0666")
  for spec in ("1_0,5", "+9,3", "9:+3", "9:3:-+1", "--tokens"):  # int() took the first three
    with pytest.raises(ValueError, match="is not 'all', 'a:b', 'a:b:step' or a comma list"):
      parse_token_grid(CFG, spec)


def test_a_huge_token_range_is_refused_before_it_is_listed():
  """`--tokens=1:999999999999999` built the whole list (7 GB, 'out of memory'), `1:200000` a
  1.5 MB error line listing every count."""
  with pytest.raises(ValueError, match=re.escape(
      "--tokens '1:999999999999999': the range lists 1 .. 999999999999999; 1 and "
      "999999999999999 are outside [2, 17]")):
    parse_token_grid(CFG, "1:999999999999999")
  with pytest.raises(ValueError) as e:
    parse_token_grid(CFG, ",".join(str(n) for n in range(100, 200000)))
  assert len(str(e.value)) < 200 and "are outside [2, 17]" in str(e.value)


def test_default_output_folders_are_the_documented_ones(monkeypatch):
  """Without --out_dir the main job writes to outputs/pipeline/ and a profile run to
  outputs/profile/ (the README's paths; every other test names its folder)."""
  class Stop(Exception):
    pass
  seen = []

  def stop(f, out_dir):
    seen.append(out_dir)
    raise Stop
  monkeypatch.setattr(cli, "pipeline_from_flags", stop)
  monkeypatch.setattr(cli, "spec_from_flags", stop)
  for argv in ([], ["--mode=model", "--model=test_tiny_vit"]):
    with pytest.raises(Stop):
      cli.main(_flags(*argv))
  assert seen == ["outputs/pipeline", "outputs/profile"]


def test_keep_first_reducer_and_spec_validation():
  import jax.numpy as jnp
  x = jnp.arange(2 * 5 * 3).reshape(2, 5, 3)
  r = runner.KeepFirst()
  assert (r.reduce_embedding(x, num_keep=3, num_prefix=1) == x[:, :3]).all()
  y, size = r.reduce(x, jnp.ones((2, 5)), None, num_keep=2, num_prefix=1, layer=0)
  assert y.shape == (2, 2, 3) and size.shape == (2, 2)
  with pytest.raises(ValueError, match="unknown mode"):
    runner.ProfileSpec(cfg=CFG, mode="layer")
  with pytest.raises(ValueError, match="outside"):
    runner.ProfileSpec(cfg=CFG, tokens=(18,))
  with pytest.raises(ValueError, match="needs depth"):
    runner.ProfileSpec(cfg=CFG, mode="schedule", schedules=(Schedule((17, 17)),))
  with pytest.raises(ValueError, match=r"max_points needs adaptive \(it bounds the refinement\)"):
    runner.ProfileSpec(cfg=CFG, max_points=20)          # (ignored, where a CLI did not check)
  runner.ProfileSpec(cfg=CFG, max_points=20, adaptive=True)
  assert runner.coarse_grid(range(17, 1, -1), 5) == (17, 12, 7, 2)
  assert runner.coarse_grid([17, 16, 15], 2) == (17, 15)
  # --coarse_stride=0: about 16 counts of a larger grid, said as such (was 'about 16 counts' of a
  # coarse grid of 4)
  assert [runner.auto_stride(n) for n in (4, 24, 25, 61, 200)] == [1, 2, 2, 4, 12]
  assert len(runner.coarse_grid(range(66, 5, -1), 0)) == 16
  assert [runner._every(n) for n in (4, 40, 61, 200)] == [  # pylint: disable=protected-access
      "each of the 4 counts", "every 2nd of the 40 counts and both ends",
      "every 4th of the 61 counts and both ends", "every 12th of the 200 counts and both ends"]
  # the default reducer named on a grid that prunes nothing: what is recorded anyway (accepted)
  runner.ProfileSpec(cfg=CFG, mode="block", tokens=(17,), reducer="random")
  with pytest.raises(ValueError, match="--reducer=keep_first given, but no graph"):
    runner.ProfileSpec(cfg=CFG, mode="block", tokens=(17,), reducer="keep_first")


def test_the_estimate_stage_margins_are_the_solve_stage_evaluators():
  """The margin table the refinement reports from is keyed by schedule and in the data order
  of the solve stage's evaluator: the estimate stage's margins of a single reduction equal what
  that evaluator measures for it, and the evaluator records every schedule it measures."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vitprune import estimate as estimate_lib  # pylint: disable=g-import-not-at-top
  from vitprune import pipeline  # pylint: disable=g-import-not-at-top
  from vitprune.reduce.methods import make_reducer  # pylint: disable=g-import-not-at-top
  from vitprune.schedule import embed_counts, layer_counts  # pylint: disable=g-import-not-at-top
  cfg, params, source = common.load_model("vit_digits", None)
  spec = pipeline.PipelineSpec(solver="multi", tokens=(65, 33, 17), num_images=30,
                               eval_batch_size=8, refine_accuracy_rounds=1)
  data = pipeline.load_data(spec)
  est, margins = pipeline._estimate(cfg, params, spec, spec.grid(cfg), data, source,
                                    lambda s: None)
  singles = [layer_counts(65, n, 6, l) for l in range(6) for n in (17, 33)]
  assert set(margins) == {embed_counts(65, 6)} | set(singles)
  recorded = {}
  evaluate = estimate_lib.schedule_evaluator(cfg, params, data, make_reducer("pomt"),
                                             batch_size=16, record_margins=recorded)
  picked = [singles[1], singles[8], (65, 65, 33, 33, 17, 17, 17)]
  acc, got = evaluate(picked, margins=True)
  for c, m in zip(picked[:2], got):
    np.testing.assert_allclose(m, margins[c], atol=1e-5)
    assert est.measured("accuracy")[c] == pytest.approx((m > 0).mean())
  assert set(recorded) == set(picked)
  np.testing.assert_array_equal(recorded[picked[2]], got[2])
  assert evaluate(picked[:1]) == acc[:1] and len(recorded) == 3     # metrics only: recorded too
  plain = pipeline.PipelineSpec(solver="multi", tokens=(65, 33), num_images=30)
  assert pipeline._estimate(cfg, params, plain, plain.grid(cfg), data, source,
                            lambda s: None)[1] is None          # no refinement: none kept


def test_the_main_job_verifies_the_random_drop_graph_its_solution_deploys(tmp_path,
                                                                           monkeypatch):
  """`--method=random --seed=5`: the estimate, the solution (and so deploy and benchmark) used
  seed 5, but the verify step timed and scored the seed-0 graph: other tokens dropped, another
  accuracy (0.7855 reported for a graph that deploys at 0.8468)."""
  from vitprune import checkpoint  # pylint: disable=g-import-not-at-top
  from vitprune import estimate as estimate_lib  # pylint: disable=g-import-not-at-top
  from vitprune.records.solution import read_solution  # pylint: disable=g-import-not-at-top
  from vitprune.reduce.methods import make_reducer  # pylint: disable=g-import-not-at-top
  # (alpha 1: latency alone chooses, on the profile's latencies made proportional to the tokens:
  # a busy machine timed the 15-token graph slower than the unpruned one, and 65 was chosen)
  real = runner._measure
  monkeypatch.setattr(runner, "_measure", lambda keys, **kw: {
      k: protocol.summarize([1e-5 * k[1]] * 3, compile_s=m.compile_s)
      for k, m in real(keys, **kw).items()})
  s = cli.main(_flags(f"--out_dir={tmp_path}", *FAST, "--method=random", "--seed=5",
                      "--layer=1", "--tokens=65,15", "--alpha=1.0"))
  assert s["counts"] == [65, 65, 15, 15, 15, 15, 15]
  assert read_solution(s["files"]["solution"]).method_kwargs == {"seed": 5, "nested": True}
  cfg, params = checkpoint.load_weights(common.EMBEDDED_WEIGHTS)
  data = pipeline.load_data(pipeline.PipelineSpec(), checkpoint.read_class_names(
      common.EMBEDDED_WEIGHTS), cfg.num_classes)
  accuracy = {seed: estimate_lib.schedule_evaluator(cfg, params, data, make_reducer(
      "random", seed=seed))([s["counts"]])[0] for seed in (0, 5)}
  assert accuracy[0] != accuracy[5]                 # (else this test could not tell them apart)
  assert s["pruned"]["accuracy"] == accuracy[5]


def test_the_main_job_records_the_options_its_paper_choice_was_verified_with(tmp_path):
  """`--method=evit --method_opts=normalize=true` verified EViT(normalize=True), and its paper
  solution said nothing of it: deploy rebuilt EViT(normalize=False)."""
  from vitprune.records.solution import read_solution  # pylint: disable=g-import-not-at-top
  s = cli.main(_flags(f"--out_dir={tmp_path}", *FAST, "--method=evit",
                      "--method_opts=normalize=true", "--layer=1", "--tokens=65,15",
                      "--alpha=1.0", "--num_images=20", "--eval_batch_size=20"))
  sol = read_solution(s["files"]["solution"])
  assert sol.method == "evit" and sol.estimate.method == "random"
  assert sol.method_options == sol.method_kwargs == s["method_options"] == {"normalize": True}
  with open(s["files"]["solution"]) as f:
    assert json.load(f)["chosen"]["method_options"] == {"normalize": True}


def test_the_printed_summary_is_of_the_merged_profile(tmp_path, capsys):
  """A second run merged into the file printed a table of its own points only: the file's
  other points, and a step between them and the new ones, went unmentioned."""
  _run(tmp_path, "--tokens=17,9")
  capsys.readouterr()
  (prof,) = _run(tmp_path, "--tokens=13")
  out = capsys.readouterr().out
  path = tmp_path / "test-tiny-vit_model_b1_float32_cpu.json"
  assert {p.tokens for p in prof.points} == {17, 13, 9} == {
      p.tokens for p in records.load(str(path)).points}
  assert f"{path} holds 3 points: this run's 1 merged into the 2 others it held" in out
  table = runner.summary_table(prof)
  assert all(re.search(rf"^model +1 +{n} ", table, re.M) for n in (17, 13, 9))
  (prof,) = _run(tmp_path / "new", "--tokens=13")  # a new file: nothing else held
  assert len(prof.points) == 1 and " holds " not in capsys.readouterr().out


def test_held_out_images_check_the_choice_on_images_it_never_saw(tmp_path, capsys):
  """--holdout_images: the estimate and the solve see the other images only (the estimate
  records their fingerprint), the verify stage measures the chosen and the unpruned graph on
  the held-out ones too; summary.json and the printed summary report them with the floor."""
  from vitprune import estimate as estimate_lib  # pylint: disable=g-import-not-at-top
  from vitprune.reduce.methods import make_reducer  # pylint: disable=g-import-not-at-top
  f = _flags(f"--out_dir={tmp_path / 'a'}", *FAST, "--tokens=65,33,17", "--num_images=60",
             "--holdout_images=20", "--eval_batch_size=20", "--solver=multi",
             "--accuracy_floor=0.9")
  s = cli.main(f)
  cfg, params, _, _, data = cli.pipeline_from_flags(f)
  selection, holdout = estimate_lib.holdout_split(data, 20, 0)
  assert s["num_images"] == 40 and len(holdout.indices) == 20
  with open(s["files"]["estimate"]) as fh:
    est = json.load(fh)
  assert est["data"]["fingerprint"] == selection.info["fingerprint"]
  assert est["data"]["selection"]["holdout_images"] == 20
  assert est["data"]["selection"]["part"] == "selection"
  point = estimate_lib.EvalPoint(Schedule(tuple(s["counts"])), make_reducer("pomt"),
                                 s["counts"][-1], None)
  want = estimate_lib.evaluate(cfg, params, holdout.batches(cfg, 20), [point], labelled=True,
                               whole_graphs=True)
  held = s["holdout"]
  assert held["num_images"] == 20
  assert held["pruned"]["accuracy"] == want.points[0].accuracy
  assert held["unpruned"]["accuracy"] == want.reference.accuracy
  lo, hi = held["pruned"]["interval_95"]
  assert lo <= held["pruned"]["accuracy"] <= hi and hi - lo > 0.1      # 20 images: wide
  assert held["floor_met"] == (held["pruned"]["accuracy"] >= 0.9)
  assert held["floor_status"] in ("meets", "fails", "straddles")
  with open(s["files"]["summary"]) as fh:
    assert json.load(fh)["holdout"] == held
  out = capsys.readouterr().out
  assert ", and on the 20 held-out ones" in out and "note: the choice rests on" not in out
  assert re.search(r"held out: 20 images the choice never saw: unpruned \d\.\d{4}, pomt "
                   r"\d\.\d{4} \(95% interval \d\.\d{4}\.\.\d\.\d{4}\); floor 0\.9 (met|NOT met) "
                   r"there", out)
  # Without a holdout nothing is held out, and the summary says so.
  assert cli.main(_flags(f"--out_dir={tmp_path / 'b'}", *FAST, "--tokens=65,33,17",
                         "--num_images=40", "--eval_batch_size=20"))["holdout"] is None
  # A choice on fewer images than classes says so (a probe held out 59 of 60: chose on one).
  capsys.readouterr()
  cli.main(_flags(f"--out_dir={tmp_path / 'c'}", *FAST, "--tokens=65,17", "--num_images=12",
                  "--holdout_images=5", "--eval_batch_size=20"))
  assert ("note: the choice rests on 7 images, fewer than the model's 10 classes: each "
          "measured accuracy is a count of 7 (steps of 0.143)") in capsys.readouterr().out
  cli.main(_flags(f"--out_dir={tmp_path / 'd'}", *FAST, "--tokens=65,17", "--num_images=12",
                  "--holdout_images=11", "--eval_batch_size=20"))     # ("1 images": a probe)
  assert ("note: the choice rests on 1 image, fewer than the model's 10 classes: each "
          "measured accuracy is a count of 1 (steps of 1)") in capsys.readouterr().out


def test_a_maximum_drop_is_judged_against_the_unpruned_model_on_each_set_of_images(tmp_path,
                                                                                 capsys):
  """--max_accuracy_drop=D: the floor the choice meets is the unpruned model's accuracy on the
  selection images minus D; on the held-out images the floor is the unpruned model's accuracy
  there minus D (pruned and unpruned compared on the same images)."""
  s = cli.main(_flags(f"--out_dir={tmp_path / 'a'}", *FAST, "--tokens=65,33,17",
                      "--num_images=60", "--holdout_images=20", "--eval_batch_size=20",
                      "--solver=multi", "--max_accuracy_drop=0.05"))
  assert s["max_accuracy_drop"] == 0.05 and s["alpha"] is None
  assert s["accuracy_floor"] == pytest.approx(s["unpruned"]["accuracy"] - 0.05, abs=1e-12)
  assert s["pruned"]["accuracy"] >= s["accuracy_floor"]
  held = s["holdout"]
  assert held["floor"] == pytest.approx(held["unpruned"]["accuracy"] - 0.05, abs=1e-12)
  assert held["floor_met"] == (held["pruned"]["accuracy"] >= held["floor"] - 1e-12)
  for part, n in ((s, 40), (held, 20)):      # the change against the unpruned graph, paired
    p = part["pruned"]
    change = p["change"]
    assert change["value"] == pytest.approx(p["accuracy"] - part["unpruned"]["accuracy"],
                                            abs=1e-12)
    assert (change["images_gained"] - change["images_lost"]) / n == pytest.approx(
        change["value"], abs=1e-12)
    lo, hi = change["interval_95"]
    assert lo <= change["value"] <= hi and hi - lo > 0
  lo, hi = held["pruned"]["change"]["interval_95"]
  assert held["floor_status"] == solve_loop.interval_status(
      held["unpruned"]["accuracy"] + lo, held["unpruned"]["accuracy"] + hi, held["floor"])
  out = capsys.readouterr().out
  assert "solve: multi-layer Pareto frontier, accuracy >= the unpruned's - 0.05" in out
  # The accuracy model's error on the multi-layer schedules measured, as README says the
  # summary reports it (experiments.solve printed it; the main job did not: a probe).
  # (none where no multi-layer schedule was measured: the floor check met it with a single
  # reduction, as timing noise in the latency model's fit can make it)
  with open(s["files"]["solution"]) as f:
    err = json.load(f)["settings"].get("checked_accuracy_error")
  assert (f"\n  {describe_checked_error(err)}\n" in out if err else
          "combined accuracy model vs the" not in out)
  assert re.search(r"accuracy change [+-]\d\.\d{4} \(paired 95% interval [+-]\d\.\d{4}\.\."
                   r"[+-]\d\.\d{4}: \d+ images? lost, \d+ gained\); top-1 agreement", out)
  assert re.search(r"\n   change against the unpruned graph there: [+-]\d\.\d{4} \(paired 95% "
                   r"interval", out)
  assert re.search(r"; floor \d\.\d+ \(the unpruned there - 0\.05\) (met|NOT met) there", out)


def test_floor_confidence_chooses_on_the_paired_interval(tmp_path, capsys):
  """--floor_confidence with --max_accuracy_drop: every schedule the solve measures is compared
  with the unpruned graph image by image, and the choice (the unpruned graph when none
  qualifies) clears -D with its whole paired 95 % interval; the solution and the summary say so."""
  from vitprune.records.solution import meets_measured_floor, read_solution
  s = cli.main(_flags(f"--out_dir={tmp_path / 'a'}", *FAST, "--tokens=65,33,17",
                      "--num_images=60", "--eval_batch_size=20", "--solver=multi",
                      "--max_accuracy_drop=0.1", "--floor_confidence"))
  assert s["floor_confidence"] is True
  sol = read_solution(s["files"]["solution"])
  assert sol.settings["floor_confidence"] and sol.criterion == "accuracy_floor_measured"
  assert meets_measured_floor(sol.chosen, sol.settings)
  assert sol.chosen.measured_change_low >= -0.1 - 1e-9
  measured = [c for c in sol.checked if c.measured_accuracy is not None]
  # (unpaired: the estimate's single reductions meeting the floor, listed, never chosen so)
  assert sol.chosen.measured_change_low is not None and all(
      c.measured_change_low is not None or not solve.is_multi_reduction(c.counts)
      for c in measured)
  out = capsys.readouterr().out
  assert "accuracy >= the unpruned's - 0.1 by the whole paired 95% interval of the change" in out
  assert re.search(r"measured \d+ schedules? on the data image by image against the unpruned "
                   r"graph, single reductions among them: the chosen \S+ \(the fastest timed, "
                   r"below\) measures \d\.\d{4} \(change [+-]\d\.\d{4}, paired 95% interval "
                   r"[+-]\d\.\d{4}\.\.[+-]\d\.\d{4}\), meeting a change against the unpruned "
                   r"graph >= -0\.1 by its whole paired 95% interval", out)
  assert sol.chosen.counts != sol.full.counts      # (a pruned schedule clears it on these images)


def test_every_graph_is_timed_at_its_own_batch_token_count_and_dtype(tmp_path, monkeypatch):
  """Each key's job gets inputs of the profiled batch size, its token count and dtype, and a
  model key's graph keeps exactly n tokens from the embedding on (a point recorded as batch 2,
  n tokens, bfloat16 must be a measurement of that shape)."""
  real, seen = runner._jobs, {}     # pylint: disable=protected-access

  def jobs(keys, **kw):
    out = real(keys, **kw)
    seen.update(out)
    return out

  monkeypatch.setattr(runner, "_jobs", jobs)
  _run(tmp_path, "--mode=block", "--tokens=17,9", "--batch_size=2", "--dtype=bfloat16")
  assert {k[0] for k in seen} == {"block", "head", "embed", "dispatch", "model"}
  for (comp, n, _), (fn, args) in seen.items():
    if comp in ("model", "embed"):
      assert args[1].shape == (2, CFG.img_size, CFG.img_size, CFG.in_chans)
      assert str(args[1].dtype) == "float32"        # images go in as float32 and are cast
    if comp == "model":
      assert fn.keywords["schedule"].counts == (n,) * (CFG.depth + 1)
      assert fn.keywords["dtype"] == "bfloat16"
    elif comp in ("block", "head"):
      assert args[1].shape == (2, n, CFG.embed_dim) and str(args[1].dtype) == "bfloat16"
    elif comp == "dispatch":
      assert args[0].shape == (2, 1, 1) and str(args[0].dtype) == "bfloat16"


def test_resume_without_an_out_dir_is_refused_before_measuring(monkeypatch):
  monkeypatch.setattr(runner, "profile_batch", lambda *a, **k: pytest.fail("measured"))
  spec = runner.ProfileSpec(cfg=CFG, mode="model", tokens=(17, 9))
  with pytest.raises(ValueError, match="^resume continues the profiles in out_dir: give out_dir$"):
    runner.run_profile(spec, resume=True, progress=False, log=lambda _: None)


def test_the_coarse_stride_and_max_points_bounds_are_exact():
  """16 counts (17..2) have 15 steps: a stride of 15 times the two ends alone and is refused,
  14 is not; --max_points may equal the coarse grid's count (stride 5: 17, 12, 7, 2)."""
  spec = functools.partial(runner.ProfileSpec, cfg=CFG, mode="model", adaptive=True)
  assert spec(coarse_stride=14).coarse_stride == 14
  with pytest.raises(ValueError, match="^--coarse_stride=15 is not below the 16-count grid's 15"):
    spec(coarse_stride=15)
  assert runner.coarse_grid(range(17, 1, -1), 5) == (17, 12, 7, 2)
  assert spec(coarse_stride=5, max_points=4).max_points == 4
  with pytest.raises(ValueError, match=r"^--max_points=3 is below the 4 counts of the coarse"):
    spec(coarse_stride=5, max_points=3)


def test_the_progress_bar_stays_off_a_log_file(tmp_path, monkeypatch):
  """tqdm redrew its bar into a log (stderr not a terminal) line after line; it is drawn only
  where stderr is a terminal, unless --noprogress (a log gets a plain line every 30 s instead,
  `tests/test_progress.py`: held off here, so that a slow machine's run prints none either)."""
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  from vitprune import progress  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(progress, "LINE_INTERVAL_S", float("inf"))
  code, out, err = run_cli_in_process(tmp_path, "profile", [
      "--model=test_tiny_vit", "--mode=model", "--tokens=17", "--min_run_time=0.005",
      "--max_retries=0", f"--out_dir={tmp_path / 'p'}"])
  assert code == 0 and "wrote" in out, err
  assert "step" not in err and "\r" not in err, err


def test_the_printed_summary_names_the_in_loop_timing_the_choice_rested_on():
  """A multi choice timed in the loop: the table's latencies are the verify stage's, and the
  timing the choice rested on (22 % apart in a probe) was printed only by stage 3; the summary
  says it, unless nothing was pruned or the budget note already says it."""
  s = {"model": "vit_digits", "device_kind": "cpu", "platform": "cpu", "batch_size": 1,
       "dtype": "float32", "num_images": 359, "data": "digits", "metric": "accuracy",
       "solver": "multi", "method": "pomt", "schedule": "keep@1:41", "counts": [65, 65, 41],
       "predicted": {"latency_ms": 0.665, "accuracy": 0.9},
       "unpruned": {"counts": [65, 65, 65], "latency_ms": 0.741, "iqr_ms": 0.01,
                    "accuracy": 0.95},
       "pruned": {"latency_ms": 0.6449, "iqr_ms": 0.01, "accuracy": 0.94,
                  "agreement_with_unpruned": 0.99},
       "speedup": 0.741 / 0.6449, "measured_in_loop": {"latency_ms": 0.7888, "accuracy": 0.94},
       "steps": [], "files": {}}
  line = ("   the choice rested on its in-loop timing, 0.7888 ms: another measurement than "
          "this table's")
  lines = pipeline.format_summary(s).splitlines()
  assert lines[lines.index(line) - 1].startswith("   speedup x1.15")
  for other in (dict(s, measured_in_loop=None), dict(s, counts=[65, 65, 65]),
                dict(s, solver="paper", n_star=41, alpha=0.5),
                dict(s, latency_budget=5e-4)):          # (over it: the budget note says it)
    text = pipeline.format_summary(other)
    assert line not in text
  assert "0.7888 ms" in pipeline.format_summary(dict(s, latency_budget=5e-4))
  assert line in pipeline.format_summary(dict(s, latency_budget=1e-3))


def test_summary_json_carries_why_the_latency_model_is_untrusted(tmp_path, monkeypatch):
  """summary.json's latency_model_untrusted is the solution's (the model's error beyond its
  limit), found before only in the solution and stdout."""
  from vitprune.profile import latency_model  # pylint: disable=g-import-not-at-top
  why = "the pomt latency model's p90 calibration error 34.9% exceeds 10%"
  monkeypatch.setattr(latency_model.LatencyModel, "trust",
                      lambda self, counts: why if not counts else None)
  s = cli.main(_flags(f"--out_dir={tmp_path}", *FAST, "--tokens=65,33,17", "--num_images=40",
                      "--eval_batch_size=20", "--solver=multi", "--accuracy_floor=0.5"))
  with open(s["files"]["solution"]) as f:
    assert json.load(f)["settings"]["latency_model_untrusted"] == why
  with open(s["files"]["summary"]) as f:
    assert json.load(f)["latency_model_untrusted"] == s["latency_model_untrusted"] == why


@pytest.mark.parametrize("changes, message", [
    (dict(batch_sizes=(0,)), r"^batch sizes must be >= 1, got \[0\]$"),
    (dict(batch_sizes=()), r"^batch sizes must be >= 1, got \[\]$"),
    (dict(threads=0), "^threads must be >= 1, got 0$"),
    (dict(mode="schedule", schedules=(Schedule((17, 17, 17)),), chunk_points=2),
     r"^chunk_points applies to mode 'model' or 'block' \(a grid of counts\)$"),
    (dict(mode="schedule", schedules=(Schedule((17, 9, 9)), Schedule((17, 9, 9)))),
     r"^--schedule gives .* \(counts 17,9,9\) twice: give each schedule once$"),
    # (the seed: one check, numpy's generators'; -1 failed later, in init_params: a review)
    (dict(seed=-1), r"^seed must be an int >= 0, got -1$"),
    (dict(seed=1.5), r"^seed must be an int >= 0, got 1\.5$"),
])
def test_the_library_spec_refuses_what_the_cli_checks_first(changes, message):
  """A mutation audit: the CLI checks these flags before ProfileSpec does, so only a direct
  ProfileSpec (the library API) tells whether the spec itself still refuses them (a batch of
  0, 0 compile threads, chunks of a schedule run, a schedule timed twice)."""
  with pytest.raises(ValueError, match=message):
    runner.ProfileSpec(cfg=CFG, **changes)


@pytest.mark.parametrize("changes, message", [
    # ("'int' object is not iterable", "'Schedule' object is not iterable")
    (dict(batch_sizes=4), r"^batch_sizes must be a sequence, got int 4 \(write \(4,\)\)$"),
    (dict(tokens=9), r"^tokens must be a sequence, got int 9"),
    (dict(tokens=np.array(9)), r"^tokens must be a sequence, got ndarray"),
    (dict(mode="schedule", schedules=Schedule((17, 9, 9))), r"^schedules must be a sequence"),
    # ("'str' object has no attribute 'counts'", "'RandomDrop' object has no attribute 'strip'")
    (dict(mode="schedule", schedules=("keep@1:9",)), r"^schedules must be vitprune Schedules"),
    (dict(reducer=make_reducer("random")), r"^reducer must be a method name .* got RandomDrop"),
    # (accepted: a float batch or seed, a dict as timing; threads='2': "'<' not supported")
    (dict(batch_sizes=(1.5,)), r"^a batch size must be an int, got 1\.5$"),
    (dict(batch_sizes=("2",)), r"^a batch size must be an int, got '2'$"),
    (dict(threads="2"), r"^threads must be an int, got '2'$"),
    (dict(timing={"warmup": 1}), r"^timing must be a vitprune\.profile\.timing\.TimingConfig"),
    (dict(adaptive="no"), r"^adaptive must be True or False, got 'no'$"),   # ('no': adaptive)
    # (a mutation audit: text and a dict iterate, the other int fields and cfg were unchecked)
    (dict(tokens="17,9"), r"^tokens must be a sequence, got str '17,9'$"),
    (dict(batch_sizes={1: 2}), r"^batch_sizes must be a sequence, got dict \{1: 2\}$"),
    (dict(coarse_stride=1.5), r"^coarse_stride must be an int, got 1\.5$"),
    (dict(max_points="4"), r"^max_points must be an int, got '4'$"),
    (dict(chunk_points=2.5), r"^chunk_points must be an int, got 2\.5$"),
    (dict(confirm_steps="no"), r"^confirm_steps must be True or False, got 'no'$"),  # (truthy)
    (dict(confirm_held=1), r"^confirm_held must be True or False, got 1$"),
    (dict(cfg="vit_digits"), r"^cfg must be a vitprune ViTConfig .* got str 'vit_digits'$"),
    (dict(cfg="vit_digits", mode="schedule", schedules=(Schedule((17, 9, 9)),)),
     r"^cfg must be a vitprune ViTConfig"),     # (not "'str' object has no attribute")
])
def test_the_library_spec_names_a_field_of_the_wrong_type(changes, message):
  with pytest.raises(TypeError, match=message):
    runner.ProfileSpec(**dict(dict(cfg=CFG), **changes))
  spec = runner.ProfileSpec(cfg=CFG, batch_sizes=[np.int64(2)], tokens=[17, np.int32(9)])
  assert spec.batch_sizes == (2,) and spec.tokens == (17, 9)
  assert all(type(v) is int for v in spec.batch_sizes + spec.tokens)


def test_the_coarse_grid_keeps_the_smallest_count_off_its_stride():
  """A mutation audit of `coarse_grid`: both ends are kept where the stride does not land on
  the smallest count (every case checked before landing on it by chance: 17..2 by 5, 66..6
  automatically), so an adaptive run still times the low end of the curve."""
  assert runner.coarse_grid(range(17, 1, -1), 4) == (17, 13, 9, 5, 2)
  assert runner.coarse_grid([10, 9, 8, 7, 6], 3) == (10, 7, 6)
  assert runner.coarse_grid(range(41, 5, -1), 0) == tuple(range(41, 6, -2)) + (6,)


def test_spread_order_and_chunks_hold_each_count_once():
  """A mutation audit of `spread_order` and `_chunks`: a one-count grid is one count (its two
  'ends' were the same count twice), every prefix spans the range, and the last chunk keeps a
  remainder of one count."""
  assert runner.spread_order([9]) == [9]
  assert runner.spread_order(range(17, 8, -1)) == [17, 9, 13, 11, 15, 10, 12, 14, 16]
  chunks = runner._chunks  # pylint: disable=protected-access
  assert chunks([5, 4, 3, 2, 1], 2) == [[5, 4], [3, 2], [1]]
  assert chunks([3], 0) == [[3]] and chunks([], 4) == []


def test_a_combined_profile_out_of_step_in_one_point_of_several_is_brought_in_step(tmp_path,
                                                                                   capsys):
  """A mutation audit of `bring_in_step`: a b1-2 profile that agrees with the batch's own file
  in one point but not in another is still out of step (not only one that differs in all)."""
  own_path, both_path = _stopped_between_writes(tmp_path, tokens=(9,))
  capsys.readouterr()
  _run(tmp_path, "--tokens=13", "--batch_size=2")
  assert f"brought {both_path} in step with {own_path}, which is newer" in (
      capsys.readouterr().out)
  held = {p.key: p for p in records.load(both_path).points if p.batch_size == 1}
  assert held == {p.key: p for p in records.load(own_path).points} and len(held) == 2


def test_a_held_point_of_another_batch_size_is_neither_skipped_nor_returned():
  """A mutation audit of `profile_batch(held=...)`: a held point of another batch size does not
  stand for this batch's count (its count was left unmeasured, and the other batch's latency
  returned as this one's)."""
  from vitprune import model as model_lib  # pylint: disable=g-import-not-at-top
  spec = runner.ProfileSpec(cfg=CFG, tokens=(17, 9), timing=timing.TimingConfig(
      min_run_time=0.005, max_retries=0))
  other = _point("model", 17, 1.0, batch=2)
  prof = runner.profile_batch(spec, 1, model_lib.init_params(CFG, 0), progress=False,
                              log=lambda _: None, held=(other,))
  assert sorted((p.batch_size, p.tokens) for p in prof.points) == [(1, 9), (1, 17)]
  assert all(p.median_s < 1.0 for p in prof.points)
