"""The main job's output step is one transaction that replaces only its own outputs."""
import dataclasses
import json
import os
import re
import types

import pytest

from vitprune import atomic
from vitprune import pipeline


FILES = {"profile": "profile/m_b1.json", "profile_plot": "profile/m_b1.png",
         "estimate": "estimate/e.json", "solution": "solve/s.json", "solution_plot": "solve/s.png"}


def _layout(root, summary):
  """A pipeline output as the output step writes it: the files `summary` lists (the profile's CSV
  beside its JSON) and the summary."""
  files = {k: os.path.join(str(root), v) for k, v in FILES.items()}
  for path in list(files.values()) + [os.path.join(str(root), "profile", "m_b1.csv")]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write("x")
  with open(os.path.join(root, pipeline.SUMMARY_FILE), "w") as f:
    json.dump({**summary, "files": files} if summary is not None else {"mine": 1}, f)


def test_is_pipeline_dir(tmp_path):
  ours = tmp_path / "ours"
  _layout(ours, {"format": pipeline.SUMMARY_FORMAT, "version": 1})
  assert pipeline.is_pipeline_dir(str(ours))
  for extra in ("notes.txt", "profile/NOTES.txt", "solve/my_other_solution.json",
                "estimate/e.csv.bak"):          # something the pipeline did not write: never
    (ours / extra).write_text("mine")           # deleted by a rerun, marker or not
    assert not pipeline.is_pipeline_dir(str(ours)), extra
    os.unlink(ours / extra)
  for folder in ("extra", "solve/sub"):
    os.makedirs(ours / folder)
    assert not pipeline.is_pipeline_dir(str(ours)), folder
    os.rmdir(ours / folder)
  assert pipeline.is_pipeline_dir(str(ours))
  old = tmp_path / "old"                      # a run from before the format marker
  _layout(old, {"model": "vit_digits", "solver": "paper"})
  assert pipeline.is_pipeline_dir(str(old))
  (old / "NOTES.txt").write_text("mine")      # ... but not once it holds something else
  assert not pipeline.is_pipeline_dir(str(old))
  mine = tmp_path / "mine"                    # the layout, but a summary.json that is not ours
  _layout(mine, None)
  assert not pipeline.is_pipeline_dir(str(mine))
  other = tmp_path / "other"
  _layout(other, {"format": "someone-else", "version": 1})
  assert not pipeline.is_pipeline_dir(str(other))
  (other / pipeline.SUMMARY_FILE).write_text("[" * 100000)    # not JSON at all
  assert not pipeline.is_pipeline_dir(str(other))
  assert not pipeline.is_pipeline_dir(str(tmp_path / "missing"))


def test_the_profile_stage_counts_in_words():
  """'1 lone counts' was printed (README's example output showed it)."""
  assert pipeline.curve_shape_line(0, 11, 1) == (
      "0 steps, 11 flat stretches, 1 lone count (the profile JSON/CSV/PNG has them all)")
  assert pipeline.curve_shape_line(1, 1, 0) == (
      "1 step, 1 flat stretch (the profile JSON/CSV/PNG has them all)")
  assert pipeline.curve_shape_line(2, 0, 3).startswith("2 steps, 0 flat stretches, 3 lone counts")


def test_output_step_refuses_a_foreign_directory(tmp_path):
  foreign = tmp_path / "work"
  foreign.mkdir()
  (foreign / "NOTES.txt").write_text("do not delete")
  with pytest.raises(atomic.ForeignOutputError, match="refusing to replace"):
    with atomic.staged_dir(str(foreign), overwrite=True, is_ours=pipeline.is_pipeline_dir):
      pass
  assert (foreign / "NOTES.txt").read_text() == "do not delete"
  assert sorted(os.listdir(tmp_path)) == ["work"]   # no staged leftovers


def test_a_published_output_with_an_added_file_names_it(tmp_path):
  """The main job's own folder (its summary.json and inventory) with a NOTES.txt added was
  refused as 'a folder that is not a vitprune output', naming nothing; the file is named, as an
  artifact's is. A folder vitprune never published still gets the general line."""
  out = tmp_path / "run"
  with atomic.staged_dir(str(out), overwrite=True, is_ours=pipeline.is_pipeline_dir) as tmp:
    _layout(tmp, {"format": pipeline.SUMMARY_FORMAT, "version": 1})
  assert pipeline.is_pipeline_dir(str(out))
  atomic.check_replaceable(str(out), pipeline.is_pipeline_dir)           # ours: replaceable
  for extra in ("NOTES.txt", "profile/NOTES.txt"):
    (out / extra).write_text("mine")
    with pytest.raises(atomic.ForeignOutputError, match=re.escape(
        f"refusing to replace {out}: it holds {extra}, which vitprune did not write there; "
        "move them away or choose another output path")):
      atomic.check_replaceable(str(out), pipeline.is_pipeline_dir)
    os.unlink(out / extra)
  plain = tmp_path / "plain"
  plain.mkdir()
  (plain / "NOTES.txt").write_text("mine")
  with pytest.raises(atomic.ForeignOutputError, match="it is a folder that is not"):
    atomic.check_replaceable(str(plain), pipeline.is_pipeline_dir)


def test_the_schedule_timer_times_every_schedule_in_one_measurement(monkeypatch):
  """The in-loop timer of the multi-layer main job: one compile + one shuffled measurement
  (`timing.measure_all`) for all schedules, medians back in the order asked."""
  from vitprune.model import init_params
  from vitprune.profile import timing
  from vitprune.reduce.methods import make_reducer
  from vitprune.registry import get_config
  cfg = get_config("test_tiny_vit")            # 17 tokens, depth 2
  spec = pipeline.PipelineSpec(timing=timing.TimingConfig(min_run_time=0.01), threads=1)
  calls = []
  real = timing.measure_all

  def spy(points, cfg_, **kw):
    calls.append(sorted(points))
    rounds.append(cfg_.rounds)
    return real(points, cfg_, **kw)

  rounds = []

  monkeypatch.setattr(timing, "measure_all", spy)
  timer = pipeline.ScheduleTimer(cfg, init_params(cfg, 0), spec, make_reducer("pomt"))
  schedules = [(17, 9, 9), (17, 17, 5), (17, 17, 17)]
  seconds = timer(schedules)
  assert calls == [[0, 1, 2]]                  # one measurement of all three graphs,
  assert rounds == [spec.loop_rounds] == [5]   # in interleaved rounds
  assert len(seconds) == 3 and all(s > 0 for s in seconds)
  # Each schedule's measurement is kept, its spread with it (the choice's printed mark).
  assert sorted(timer.measured) == sorted(schedules)
  assert [timer.measured[c].median for c in schedules] == seconds


def test_a_count_measured_fast_by_chance_is_timed_again_before_it_is_chosen(tmp_path,
                                                                          monkeypatch):
  """The paper's argmax over every profiled count chose one measured fast by a burst (an
  audit's main job: 33 at 0.45 ms between 0.64 and 1.05 ms; the verify stage timed its graph at
  0.92 ms). The counts of highest utility are timed again with the unpruned graph and pooled
  into the profile, until n* is one of them; the solution is read back as written."""
  from tests.test_solve import CFG, N, _acc, _estimate, _point, _profile
  from vitprune import solve_stage
  from vitprune.profile import protocol, records
  from vitprune.records.estimate import read_estimate
  from vitprune.records.solution import read_solution, write_solution
  truth = {n: 1e-3 * (0.5 + n / N) for n in range(5, N + 1)}      # smooth: no step at all
  profiled = {**truth, 12: 0.2e-3}                                 # one burst at 12
  profile = records.analyze(_profile([_point("model", n, t) for n, t in profiled.items()]))
  est = read_estimate(_estimate(tmp_path, [None], list(range(5, N + 1)), _acc))
  timed = []

  def measure(cfg, params, graphs, spec):
    timed.append(sorted(graphs))
    return {n: protocol.summarize([truth[n]] * 9) for n in graphs}
  monkeypatch.setattr(pipeline, "_measure_graphs", measure)
  solve_on = lambda prof: solve_stage.solve_paper(prof, est, alpha=0.5)
  first = solve_on(profile)
  assert first.chosen.tokens == 12                       # the burst wins the argmax
  spec = pipeline.PipelineSpec(retime_top=2, batch_size=8)
  pooled, sol = pipeline.retime_top_counts(CFG, None, spec, profile, first, solve_on)
  retimed = sol.settings["retimed_counts"]
  assert len(timed[0]) == 3 and {12, N} <= set(timed[0])   # the top 2 and the unpruned
  assert sol.chosen.tokens != 12 and sol.chosen.tokens in retimed
  assert all(N in graphs for graphs in timed) and len(timed) <= pipeline.RETIME_ROUNDS
  by_n = {p.tokens: p for p in pooled.points}
  for n in retimed:                         # 3 profiled samples + 9 per round timed again
    assert by_n[n].num_samples == 3 + 9 * sum(n in graphs for graphs in timed)
  assert by_n[12].median_s == truth[12] and by_n[7].num_samples == 3      # (7: never timed)
  assert solve_on(pooled) == dataclasses.replace(sol, settings=first.settings,
                                                 created=solve_on(pooled).created)
  assert pipeline.retime_line(first, sol).startswith(
      f"re-timed the counts of highest utility ({', '.join(map(str, retimed))}) with the "
      f"unpruned graph, samples pooled into the profile's: n* 12 -> {sol.chosen.tokens} (12: L "
      "0.2000 ms profiled, ")
  assert by_n[N].num_samples == 3                   # the reference: timed, not pooled
  # A machine 30 % slower while re-timing (every graph, the unpruned one too) chooses the same:
  # the samples are scaled by the unpruned graph's profiled / re-timed median (pooled raw, a
  # slower moment made each count re-timed look worse than those not, and n* wandered from
  # one untimed count to the next; a review).
  truth_now = truth
  truth = {n: 1.3 * t for n, t in truth_now.items()}
  timed.clear()
  pooled_slow, sol_slow = pipeline.retime_top_counts(CFG, None, spec, profile, first, solve_on)
  assert sol_slow.chosen == sol.chosen and sol_slow.settings == sol.settings
  assert [p.median_s for p in pooled_slow.points] == pytest.approx(
      [p.median_s for p in pooled.points])
  truth = truth_now
  paths = write_solution(sol, str(tmp_path / "out"))
  assert read_solution(paths["json"]).settings["retimed_counts"] == retimed
  assert read_solution(paths["json"]).settings["retimed_choices"] == (
      sol.settings["retimed_choices"])
  doc = json.load(open(paths["json"]))          # (the reader checks the new setting as well)
  doc["settings"]["retimed_choices"] = [0]
  with open(tmp_path / "bad.json", "w") as f:
    json.dump(doc, f)
  with pytest.raises(ValueError, match=r"settings.retimed_choices must be a list of token "
                                       "counts"):
    read_solution(str(tmp_path / "bad.json"))
  # alpha 0 keeps every token: nothing is timed again, and the line says why.
  timed.clear()
  keep_all = solve_stage.solve_paper(profile, est, alpha=0.0)
  assert pipeline.retime_top_counts(CFG, None, spec, profile, keep_all,
                                    lambda p: solve_stage.solve_paper(p, est, alpha=0.0)) == (
                                        profile, keep_all) and timed == []
  assert pipeline.retime_line(keep_all, keep_all) == (
      f"n* {N} is the unpruned count: nothing to time again")
  # retime_top=0 leaves the choice as the profile measured it (the CLI's --retime_top=0).
  assert pipeline.PipelineSpec(retime_top=0).retime_top == 0
  with pytest.raises(ValueError, match="retime_top must be >= 0, got -1"):
    pipeline.PipelineSpec(retime_top=-1)


def test_paper_predicted_by_says_whether_n_star_was_re_timed():
  """A probe: --retime_top=0 wrote summary.json predicted_by '(counts re-timed with the
  unpruned graph, samples pooled)' of a run that timed nothing again."""
  note = pipeline.paper_retime_note
  assert note({"retimed_counts": [49, 33, 17]}, 33) == (
      "counts re-timed with the unpruned graph, samples pooled")
  assert note({"retimed_counts": [49, 33]}, 17) == "n* 17 itself not re-timed; other counts were"
  assert note({}, 33) == "as profiled, not re-timed"            # --retime_top=0
  assert note({"retimed_counts": []}, 65) == "as profiled, not re-timed"


@dataclasses.dataclass(frozen=True)
class _Sol:
  """The fields of a solve_stage.Solution that retime_top_counts and retime_line read."""
  chosen: types.SimpleNamespace
  curve: dict
  profile: types.SimpleNamespace
  settings: dict


def test_retiming_skips_the_counts_timed_again_and_lists_them_all(monkeypatch):
  """Two rounds of two counts each: the unpruned count (here of highest utility) is never among
  them, a count timed again is not timed again in a later round (its point pooled twice was
  refused), the samples are scaled by profiled / re-timed of the unpruned graph (a machine twice
  as slow: x0.5) and only the batch's 'model' points are pooled; the solution lists the counts
  largest first and the line gives n*'s profiled and pooled latency."""
  from tests.test_solve import CFG, N, _point, _profile
  from vitprune.profile import protocol, records
  profiled = {N: 1.0e-3, 14: 0.95e-3, 13: 0.5e-3, 12: 0.4e-3, 11: 0.3e-3, 10: 0.9e-3}
  truth = {**profiled, 13: 0.6e-3, 12: 0.55e-3, 11: 0.7e-3}
  other = [_point("model", n, 2 * t, batch=1) for n, t in profiled.items()]   # (not batch 8)
  profile = records.analyze(_profile([_point("model", n, t) for n, t in profiled.items()]
                                     + other))
  timed = []

  def measure(cfg, params, graphs, spec):
    timed.append(sorted(graphs))
    mark = f"2026-12-07T15:00:0{len(timed)}.000+00:00"           # each round its measurement
    return {n: dataclasses.replace(protocol.summarize([2 * truth[n]] * 5), measured_at=mark)
            for n in graphs}                                    # twice as slow
  monkeypatch.setattr(pipeline, "_measure_graphs", measure)

  def solve_on(prof):
    lat = {p.tokens: p.median_s for p in prof.points if p.batch_size == 8}
    ns = sorted(lat)
    n_star = min((n for n in ns if n != N), key=lambda n: lat[n])
    return _Sol(types.SimpleNamespace(tokens=n_star, predicted_latency_s=lat[n_star]),
                {"tokens": ns, "latency_s": [lat[n] for n in ns],
                 "utility": [1.0 if n == N else -lat[n] for n in ns]},
                types.SimpleNamespace(batch_size=8), {"alpha": 0.5})
  first = solve_on(profile)
  assert first.chosen.tokens == 11
  spec = pipeline.PipelineSpec(retime_top=2, batch_size=8)
  pooled, sol = pipeline.retime_top_counts(CFG, None, spec, profile, first, solve_on)
  assert timed == [[11, 12, N], [10, 13, N]]
  assert sol.settings == {"alpha": 0.5, "retimed_counts": [13, 12, 11, 10],
                          "retimed_choices": [13, 12]}        # n* after each round
  assert sol.chosen.tokens == 12
  by_n = {p.tokens: p for p in pooled.points if p.batch_size == 8}
  for n in (13, 12, 11, 10):               # 3 profiled samples + 5 timed again, x0.5
    assert (by_n[n].num_samples, by_n[n].retimed_samples) == (8, 5)
    assert by_n[n].retimed_scale == 0.5 and by_n[n].median_s == pytest.approx(truth[n])
  assert (by_n[N].num_samples, by_n[N].retimed_samples, by_n[14].num_samples) == (3, 0, 3)
  # A pooled point holds the re-timing's samples: it takes that measurement's mark (a step
  # against a count not timed again says it was timed apart); the others keep theirs.
  assert {n: by_n[n].measured_at[17:19] for n in (12, 11, 13, 10)} == {
      12: "01", 11: "01", 13: "02", 10: "02"}
  assert by_n[N].measured_at == by_n[14].measured_at == ""
  assert [p for p in pooled.points if p.batch_size == 1] == list(profile.points[-6:]) == other
  assert pipeline.retime_line(first, sol) == (
      "re-timed the counts of highest utility (13, 12, 11, 10) with the unpruned graph, samples "
      "pooled into the profile's: n* 11 -> 13 -> 12 (11: L 0.3000 ms profiled, 0.7000 ms "
      "pooled)")
  with pytest.raises(ValueError, match="the profile point of 11 tokens was already timed again"):
    pipeline._pooled(pooled, 8, measure(CFG, None, {11: None, N: None}, None), N)


def test_a_pooled_point_keeps_its_own_mark_where_the_re_timing_recorded_none():
  """Mutation audit: a re-timing's mark replaces the profiled point's; a re-timing without one
  (a Measurement not from measure_all) leaves the point's own, not '' (the counts not timed
  again and the unpruned reference keep theirs)."""
  from tests.test_solve import N, _point, _profile
  from vitprune.profile import protocol, records
  old, new = "2026-12-07T15:00:00.000+00:00", "2026-12-07T16:00:00.000+00:00"
  lat = {N: 1e-3, 12: 0.5e-3, 11: 0.4e-3, 10: 0.3e-3}
  profile = records.analyze(_profile([dataclasses.replace(_point("model", n, t), measured_at=old)
                                      for n, t in lat.items()]))
  measured = {N: protocol.summarize([lat[N]] * 5),
              12: dataclasses.replace(protocol.summarize([lat[12]] * 5), measured_at=new),
              11: protocol.summarize([lat[11]] * 5)}
  pooled = pipeline._pooled(profile, 8, measured, N)   # pylint: disable=protected-access
  assert {p.tokens: (p.measured_at, p.retimed_samples) for p in pooled.points} == {
      N: (old, 0), 12: (new, 5), 11: (old, 5), 10: (old, 0)}


def test_the_retime_line_says_when_n_star_holds_and_when_it_was_not_timed_again():
  def sol(n, retimed=None):
    ns = [17, 12, 11, 9]
    return _Sol(types.SimpleNamespace(tokens=n, predicted_latency_s=0.25e-3),
                {"tokens": ns, "latency_s": [1e-3, 0.5e-3, 0.4e-3, 0.8e-3], "utility": [0] * 4},
                None, {} if retimed is None else {"retimed_counts": retimed})
  head = ("re-timed the counts of highest utility (12, 11) with the unpruned graph, samples "
          "pooled into the profile's: ")
  assert pipeline.retime_line(sol(11), sol(11, [12, 11])) == (
      head + "n* 11 holds (L 0.4000 ms pooled)")
  assert pipeline.retime_line(sol(11), sol(9, [12, 11])) == (
      head + "n* 11 -> 9 (11: L 0.2500 ms profiled, 0.4000 ms pooled); n* 9 itself was not "
      f"timed again within {pipeline.RETIME_ROUNDS} rounds")
  # n* that moved and came back says so (a README walk-through read "n* 36 holds" after two
  # rounds whose first chose 41); a solution without the rounds' record reads as before.
  back = sol(11, [12, 11])
  back.settings["retimed_choices"] = [12, 11]
  assert pipeline.retime_line(sol(11), back) == (
      head + "n* 11 holds, by way of 11 -> 12 -> 11 (L 0.4000 ms pooled)")
  back.settings["retimed_choices"] = [11, 11]
  assert pipeline.retime_line(sol(11), back) == head + "n* 11 holds (L 0.4000 ms pooled)"
  assert pipeline.RETIME_ROUNDS == 8


def test_a_replacing_choice_within_the_timing_spread_is_marked():
  """The in-loop choice replaced the predicted-fastest graph by 0.18 % of its time, which the
  verify stage then timed 3 % apart, printed as any other (a probe): within the larger IQR the
  line says so, as the summary's speed-up does."""
  from vitprune.profile import protocol  # pylint: disable=g-import-not-at-top
  a, b, c = (17, 9, 9), (17, 17, 5), (17, 17, 9)
  measured = {a: protocol.summarize([0.80, 0.82, 0.83, 0.84, 0.86]),     # median 0.83, IQR 0.02
              b: protocol.summarize([0.81, 0.83, 0.84, 0.845, 0.85]),    # median 0.84, IQR 0.015
              c: protocol.summarize([0.95, 0.96, 0.97, 0.98, 0.99])}     # median 0.97, IQR 0.02
  assert pipeline._spread_mark(measured, a, b) == (
      " (within the timing spread: the medians differ by less than the larger IQR)")
  assert pipeline._spread_mark(measured, a, c) == ""
  assert pipeline._spread_mark(measured, a, (17, 5, 5)) == ""      # (one not timed: unknown)
  # The larger IQR is either graph's: b's 0.10 holds a 0.03 difference that a's 0.02 does not.
  d = (17, 13, 13)
  measured[d] = protocol.summarize([0.70, 0.80, 0.86, 0.90, 1.00])      # median 0.86, IQR 0.10
  assert pipeline._spread_mark(measured, a, d) == pipeline._spread_mark(measured, d, a) == (
      " (within the timing spread: the medians differ by less than the larger IQR)")


def test_the_time_of_a_schedule_checked_in_the_loop_is_its_measured_one():
  checked = [types.SimpleNamespace(counts=c, measured_latency_s=m, predicted_latency_s=p)
             for c, m, p in (((17, 9, 9), 2e-3, 1e-3), ((17, 17, 9), 3e-3, 4e-3))]
  sol = types.SimpleNamespace(checked=checked)
  assert pipeline._timed(sol, (17, 17, 9)) == 3e-3 and pipeline._timed(sol, (17, 9, 9)) == 2e-3


def test_verify_times_both_graphs_in_interleaved_rounds(monkeypatch):
  """The verify stage: the unpruned and the chosen graph in ONE measurement, in the in-loop
  protocol's interleaved rounds (one burst each let drift decide the speed-up)."""
  from vitprune import estimate as estimate_lib
  from vitprune.model import init_params
  from vitprune.profile import timing
  from vitprune.registry import get_config
  from vitprune.schedule import Schedule
  cfg = get_config("test_tiny_vit")
  spec = pipeline.PipelineSpec(timing=timing.TimingConfig(min_run_time=0.01), threads=1,
                               method="pomt")
  seen = []
  real = timing.measure_all

  def spy(points, cfg_, **kw):
    seen.append((sorted(points), cfg_.rounds))
    return real(points, cfg_, **kw)

  monkeypatch.setattr(timing, "measure_all", spy)
  monkeypatch.setattr(estimate_lib, "evaluate", lambda *a, **k: "evaluated")
  data = types.SimpleNamespace(batches=lambda *a: [], labelled=True)     # evaluate is stubbed
  solution = types.SimpleNamespace(schedule=Schedule((17, 9, 9)), method="pomt",
                                   reducer_options=dict)
  v = pipeline._verify(cfg, init_params(cfg, 0), spec, data, solution, lambda _: None)
  assert seen == [(["pomt", "unpruned"], spec.loop_rounds)] and spec.loop_rounds > 1
  assert v.unpruned.median > 0 and v.pruned.median > 0


def test_verify_records_each_graphs_timing_and_evaluates_the_held_out_images(monkeypatch):
  """Verification: the unpruned graph's timing, the chosen one's, the evaluation on the choice's
  images and on the held-out ones; a chosen graph that prunes nothing is timed once, as both."""
  from vitprune import estimate as estimate_lib
  from vitprune.registry import get_config
  from vitprune.schedule import Schedule
  cfg = get_config("test_tiny_vit")
  spec = pipeline.PipelineSpec(method="pomt", threads=1)
  seen = []

  def measure(cfg_, params, graphs, spec_):
    seen.append(sorted(graphs))
    return {name: f"timing of {name}" for name in graphs}
  monkeypatch.setattr(pipeline, "_measure_graphs", measure)
  monkeypatch.setattr(estimate_lib, "evaluate", lambda cfg_, params, batches, *a, **k: batches)

  def images(name):
    return types.SimpleNamespace(batches=lambda *a: f"{name} images", labelled=True,
                                 indices=[0, 1])
  for counts, graphs, pruned in (((17, 9, 9), ["pomt", "unpruned"], "timing of pomt"),
                                 ((17, 17, 17), ["unpruned"], "timing of unpruned")):
    solution = types.SimpleNamespace(schedule=Schedule(counts), method="pomt",
                                     reducer_options=dict)
    v = pipeline._verify(cfg, None, spec, images("chosen"), solution, lambda _: None,
                         images("held-out"))
    assert seen.pop() == graphs
    assert v == pipeline.Verification("timing of unpruned", pruned, "chosen images",
                                      "held-out images")
  v = pipeline._verify(cfg, None, spec, images("chosen"), solution, lambda _: None)
  assert v.holdout is None and v.check == "chosen images"


def test_the_method_options_reach_every_stage_that_builds_the_reducer(monkeypatch):
  """--method_opts: the spec's reducer (estimate, loop and verify stages) and, in paper mode,
  the verified graph of a method the random-drop estimate did not measure (EViT's normalize)."""
  import types  # pylint: disable=g-import-not-at-top
  from vitprune import estimate as estimate_lib  # pylint: disable=g-import-not-at-top
  from vitprune.model import init_params  # pylint: disable=g-import-not-at-top
  from vitprune.reduce.methods import make_reducer  # pylint: disable=g-import-not-at-top
  from vitprune.registry import get_config  # pylint: disable=g-import-not-at-top
  from vitprune.schedule import Schedule  # pylint: disable=g-import-not-at-top
  spec = pipeline.PipelineSpec(method="random", method_options=(("nested", False),))
  assert spec.reducer() == make_reducer("random", seed=0, nested=False)
  spec = pipeline.PipelineSpec(method="random", solver="multi", seed=3)   # (--seed is its seed)
  assert spec.reducer() == make_reducer("random", seed=3) != make_reducer("random")
  assert spec.reducer_options() == {"seed": 3}
  assert pipeline.PipelineSpec(method="evit", seed=3).reducer_options() == {}
  for bad, match in (((("seed", 3),), "method_options gives a seed"),
                     ((("sigma", 1),), r"accepts \['nested'\] \(seed: --seed\), got \['sigma'\]")):
    with pytest.raises(ValueError, match=match):
      pipeline.PipelineSpec(method="random", method_options=bad)
  cfg = get_config("test_tiny_vit")
  spec = pipeline.PipelineSpec(method="evit", method_options=(("normalize", True),), threads=1)
  seen = []
  monkeypatch.setattr(pipeline, "_measure_graphs",
                      lambda cfg_, params, graphs, timing_: seen.append(graphs) or {
                          "unpruned": None, "evit": None})
  monkeypatch.setattr(estimate_lib, "evaluate", lambda *a, **k: "evaluated")
  paper = types.SimpleNamespace(schedule=Schedule((17, 9, 9)), method="evit",
                                reducer_options=lambda given=None: dict(given or {}))
  data = types.SimpleNamespace(batches=lambda *a: [], labelled=True, indices=[0], info={})
  pipeline._verify(cfg, init_params(cfg, 0), spec, data, paper, lambda _: None)
  assert seen[0]["evit"][1] == make_reducer("evit", normalize=True)
  # The estimate stage: the chosen method's options; in paper mode its random-drop curve takes
  # them only when random drop is the chosen method.
  made = []
  monkeypatch.setattr(estimate_lib, "estimate_record", lambda **k: made.append(
      (k["method"], k["method_kwargs"], {p.reducer for p in k["points"]})) or "record")
  for solver, method, opts, want in (
      ("paper", "random", (("nested", False),), ("random", {"seed": 3, "nested": False})),
      ("paper", "evit", (("normalize", True),), ("random", {"seed": 3})),
      ("multi", "evit", (("normalize", True),), ("evit", {"normalize": True})),
      ("multi", "random", (("nested", False),), ("random", {"seed": 3, "nested": False}))):
    s = pipeline.PipelineSpec(method=method, method_options=opts, solver=solver, seed=3)
    assert pipeline._estimate(cfg, None, s, [9, 17], data, "w", lambda _: None) == (
        "record", None)
    method_, kwargs, reducers = made[-1]
    assert (method_, kwargs) == want and reducers == {make_reducer(*want[:1], **want[1])}


def test_spec_refuses_zero_loop_rounds():
  with pytest.raises(ValueError, match="loop_rounds must be >= 1, got 0"):
    pipeline.PipelineSpec(loop_rounds=0)


def test_spec_refuses_both_frontier_measurements():
  """measure_frontier and refine_accuracy_rounds, refused by the spec with the CLIs' message
  (tests/test_cli_errors.py) in the library's terms (solve_multilayer itself runs both:
  tests/test_solve.py)."""
  with pytest.raises(ValueError, match="^measure_frontier and refine_accuracy_rounds both "
                                       "measure the whole uncorrected frontier"):
    pipeline.PipelineSpec(solver="multi", measure_frontier=True, refine_accuracy_rounds=2)


def test_spec_and_calibrate_refuse_too_few_calibration_schedules():
  from vitprune.profile import latency_model
  from vitprune.registry import get_config
  with pytest.raises(ValueError, match="calibration_schedules must be >= 4 .* got 3"):
    pipeline.PipelineSpec(calibration_schedules=3)
  cfg = get_config("test_tiny_vit")
  with pytest.raises(latency_model.CalibrationError,
                     match=r"^num_schedules must be >= 4 \(one per reduction term of the "
                           r"latency model\), got 3$"):
    latency_model.calibrate(cfg, None, method="pomt", batch_size=1, dtype="float32",
                            tokens=[17, 9], timing_cfg=None, num_schedules=3)
  with pytest.raises(ValueError, match=r"^calibration_schedules must be <= 1000 \(each is a "
                                       r"graph compiled and timed\), got 1001$"):
    pipeline.PipelineSpec(calibration_schedules=1001)      # (the CLI's flag bound, one home)


def test_a_library_run_labels_its_data_by_the_weights_class_names(monkeypatch, tmp_path):
  """`run_pipeline(data=None)` loaded `spec.data` without the weights' class names: weights
  naming their outputs '9'..'0' were scored by position (the CLIs match by name)."""
  from experiments import common  # pylint: disable=g-import-not-at-top
  from vitprune.registry import get_config  # pylint: disable=g-import-not-at-top
  got = []

  def load_data(spec, class_names=None, num_classes=None):
    got.append((spec.data, class_names, num_classes))
    raise KeyboardInterrupt         # stop before any stage runs

  monkeypatch.setattr(pipeline, "load_data", load_data)
  cfg = get_config("vit_digits")
  for source, names in ((common.EMBEDDED_WEIGHTS, tuple(str(d) for d in range(10))),
                        ("init_params(seed=0)", None)):
    with pytest.raises(KeyboardInterrupt):
      pipeline.run_pipeline(cfg, None, pipeline.PipelineSpec(), str(tmp_path / "out"),
                            weights_source=source)
    assert got.pop() == ("digits", names, 10)


def test_the_verify_stages_change_is_paired_and_zero_for_the_unpruned_graph():
  """pipeline.paired_change from the per-image margins: pruned minus unpruned with the paired
  interval; [0, 0] when the chosen graph is the unpruned one (identical); for agreement never
  above 0; holdout_summary judges a drop by it."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from vitprune import estimate as estimate_lib, intervals, pipeline

  def result(ref_right, got_right):
    n = len(ref_right)
    margins = np.array([[1.0 if r else -1.0 for r in ref_right],
                        [1.0 if r else -1.0 for r in got_right]])
    agree = sum(a == b for a, b in zip(ref_right, got_right))   # (2 classes: right == agree)
    return estimate_lib.EvalResult(
        reference=estimate_lib.PointResult(n, sum(ref_right), n, 0.0),
        points=(estimate_lib.PointResult(n, sum(got_right), agree, 0.0),), batch_size=n,
        num_devices=1, margins=margins)

  ref = [True] * 36 + [False] * 4
  got = [True] * 34 + [False, False] + [True] + [False] * 3      # 2 lost, 1 gained
  change = pipeline.paired_change(result(ref, got), "accuracy")
  assert change["value"] == pytest.approx(-1 / 40)
  assert (change["images_lost"], change["images_gained"]) == (2, 1)
  assert change["interval_95"] == pytest.approx(
      intervals.change_interval((34, 2, 1, 3), "accuracy")[1:])
  same = pipeline.paired_change(result(ref, ref), "accuracy", identical=True)
  assert same["value"] == 0.0 and same["interval_95"] == [0.0, 0.0]
  assert pipeline.paired_change(result(ref, ref), "accuracy")["interval_95"][0] < 0  # not same
  held = pipeline.holdout_summary(result(ref, ref), "accuracy", 0.5, max_drop=0.01,
                                  identical=True)
  assert held["floor"] == pytest.approx(0.9 - 0.01) and held["floor_status"] == "meets"
  held = pipeline.holdout_summary(result(ref, got), "accuracy", 0.5, max_drop=0.01)
  assert held["floor_status"] == "straddles" and not held["floor_met"]
  agree = pipeline.paired_change(result([True] * 40, [True] * 37 + [False] * 3), "agreement")
  assert agree["value"] == pytest.approx(-3 / 40) and agree["interval_95"][1] <= 0.0


def test_the_calibration_line_counts_the_full_count_the_curve_adds(monkeypatch):
  """--tokens=64,33,17: the curve holds 17, 33, 64 and the full 65, the line said 3 counts."""
  from vitprune.profile import latency_model  # pylint: disable=g-import-not-at-top
  from vitprune.registry import get_config  # pylint: disable=g-import-not-at-top

  def stop(*args, **kwargs):
    raise KeyboardInterrupt      # (only the line before the measurement is wanted)

  monkeypatch.setattr(latency_model, "calibrate", stop)
  lines = []
  for tokens, count in (((64, 33, 17), 4), ((65, 33, 17), 3)):
    with pytest.raises(KeyboardInterrupt):
      pipeline._calibrate(get_config("vit_digits"), None, pipeline.PipelineSpec(solver="multi"),
                          tokens, lines.append)
    assert f": uniform curve at {count} token counts + 6 pomt calibration schedules" in lines[-1]


def test_spec_refuses_each_setting_out_of_range_and_accepts_its_edge():
  """A library caller has no CLI flag bounds in front of the spec: each bound it checks refuses
  the value just outside it (retime_top=-1 sliced all but one count to re-time) and accepts
  the edge itself."""
  for kwargs, match in (({"num_images": 0}, r"^num_images must be >= 1, got 0$"),
                        ({"holdout_images": 0}, r"^holdout_images must be >= 1, got 0$"),
                        ({"threads": 0}, r"^threads must be >= 1, got 0$"),
                        ({"retime_top": -1}, r"^retime_top must be >= 0, got -1$"),
                        ({"loop_neighbours": -1}, r"^loop_neighbours must be >= 0, got -1$"),
                        ({"layer": -1}, r"^layer must be >= 0, got -1$"),
                        ({"batch_size": 0}, r"^batch sizes must be >= 1, got 0, 64$"),
                        ({"eval_batch_size": 0}, r"^batch sizes must be >= 1, got 1, 0$"),
                        ({"alpha": 1.01}, r"^alpha must be in \[0, 1\], got 1.01$"),
                        ({"alpha": -0.01}, r"^alpha must be in \[0, 1\], got -0.01$")):
    with pytest.raises(ValueError, match=match):
      pipeline.PipelineSpec(**kwargs)
  for kwargs in ({"num_images": 1}, {"holdout_images": 1}, {"threads": 1}, {"retime_top": 0},
                 {"loop_neighbours": 0}, {"layer": 0}, {"alpha": 0.0}, {"alpha": 1.0},
                 {"num_images": 2, "holdout_images": 1}):
    pipeline.PipelineSpec(**kwargs)


def test_spec_grid_and_check_against_the_model():
  """The default grids (paper: every count down to prefix + 1; multi: every 4th) and the
  model's checks at their edges: a count of the prefix tokens alone, or above all tokens, and
  a block past the last are refused before any stage runs."""
  from vitprune.registry import get_config  # pylint: disable=g-import-not-at-top
  cfg = get_config("vit_digits")          # 65 tokens (1 prefix), 6 blocks
  assert pipeline.PipelineSpec().grid(cfg) == tuple(range(65, 1, -1))
  assert pipeline.PipelineSpec(solver="multi").grid(cfg) == tuple(range(65, 1, -4))
  assert pipeline.PipelineSpec(tokens=(65, 2)).grid(cfg) == (65, 2)
  pipeline.PipelineSpec(tokens=(65, 2), layer=5).check(cfg)        # the edges themselves
  for spec, match in ((pipeline.PipelineSpec(tokens=(65, 1)), r"^tokens \[1\] are outside "
                                                              r"\[2, 65\]$"),
                      (pipeline.PipelineSpec(tokens=(66, 65)), r"^tokens \[66\] are outside"),
                      (pipeline.PipelineSpec(layer=6), r"^layer 6 is outside \[0, 5\]")):
    with pytest.raises(ValueError, match=match):
      spec.check(cfg)


def test_load_data_draws_the_spec_seeds_subset():
  """`load_data` draws `num_images` with the spec's seed (the seed the estimate records)."""
  from vitprune import estimate as estimate_lib  # pylint: disable=g-import-not-at-top

  def drawn(seed):
    return list(estimate_lib.load_eval_data("digits", num_images=20, seed=seed,
                                            num_classes=10).indices)
  got = pipeline.load_data(pipeline.PipelineSpec(num_images=20, seed=3), num_classes=10)
  assert len(got.indices) == 20 and list(got.indices) == drawn(3) != drawn(0)


def test_a_run_chooses_on_the_seeded_selection_and_notes_fewer_images_than_classes(
    monkeypatch, tmp_path):
  """run_pipeline: the estimate gets the images `holdout_images` leaves, drawn with the spec's
  seed; the note on too few images comes below the model's 10 classes, not at 10."""
  from vitprune import estimate as estimate_lib  # pylint: disable=g-import-not-at-top
  from vitprune.registry import get_config  # pylint: disable=g-import-not-at-top
  cfg = get_config("vit_digits")
  data = pipeline.load_data(pipeline.PipelineSpec(num_images=15), num_classes=10)
  for holdout, note in ((5, None), (6, "note: the choice rests on 9 images, fewer than the "
                                       "model's 10 classes: each measured accuracy is a count "
                                       "of 9 (steps of 0.111)")):
    notes, seen = _notes_up_to_the_estimate(monkeypatch, tmp_path, cfg, data, holdout)
    want = list(estimate_lib.holdout_split(data, holdout, 3)[0].indices)
    assert seen == want != list(estimate_lib.holdout_split(data, holdout, 0)[0].indices)
    assert notes == ([note] if note else [])


def _notes_up_to_the_estimate(monkeypatch, tmp_path, cfg, data, holdout):
  """(the notes `run_pipeline` logs before its estimate stage, the indices of the images that
  stage gets) for a run of seed 3 holding `holdout` images out; nothing is written."""
  seen = []

  def estimate(cfg, params, spec, tokens, data, *args):
    seen.append(list(data.indices))
    raise KeyboardInterrupt        # (the stages after it are not wanted)
  monkeypatch.setattr(pipeline, "_profile", lambda *args: None)
  monkeypatch.setattr(pipeline, "_estimate", estimate)
  lines = []
  with pytest.raises(KeyboardInterrupt):
    pipeline.run_pipeline(cfg, None, pipeline.PipelineSpec(seed=3, holdout_images=holdout),
                          str(tmp_path / "out"), weights_source="w", data=data,
                          progress=False, log=lines.append)
  assert not (tmp_path / "out").exists()
  return [line for line in lines if line.startswith("note:")], seen.pop()


def test_a_linked_folder_makes_an_output_not_ours(tmp_path):
  """A profile/, estimate/ or solve/ that is a link to a folder elsewhere is not ours to
  replace, though what it links to lists only our files."""
  ours = tmp_path / "ours"
  _layout(ours, {"format": pipeline.SUMMARY_FORMAT, "version": 1})
  os.rename(ours / "solve", tmp_path / "elsewhere")
  os.symlink(tmp_path / "elsewhere", ours / "solve")
  assert not pipeline.is_pipeline_dir(str(ours))
  os.unlink(ours / "solve")
  os.rename(tmp_path / "elsewhere", ours / "solve")
  assert pipeline.is_pipeline_dir(str(ours))


def test_paired_change_refuses_margins_that_disagree_with_the_metric():
  """The paired change comes from the per-image margins; margins of other images than the
  metric's (or of another count) are an error, not a change reported beside a metric."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vitprune import estimate as estimate_lib  # pylint: disable=g-import-not-at-top

  def result(n, right, margins):
    return estimate_lib.EvalResult(
        reference=estimate_lib.PointResult(n, n, n, 0.0),
        points=(estimate_lib.PointResult(n, right, right, 0.0),), batch_size=n,
        num_devices=1, margins=np.array(margins))
  assert pipeline.paired_change(result(4, 3, [[1.0] * 4, [1.0] * 3 + [-1.0]]), "accuracy")[
      "value"] == pytest.approx(-0.25)
  with pytest.raises(AssertionError, match="per-image margins give a change of 0.0 on 4 "):
    pipeline.paired_change(result(4, 3, [[1.0] * 4, [1.0] * 4]), "accuracy")
  with pytest.raises(AssertionError, match=r"change of -0.25 on 4 images, the accuracy -0.25 on "
                                           r"8$"):      # (the same change, on half the images)
    pipeline.paired_change(result(8, 6, [[1.0] * 4, [1.0] * 3 + [-1.0]]), "accuracy")


@pytest.mark.parametrize("kwargs,message", [
    (dict(batch_size=0), "batch sizes must be >= 1, got 0, 64"),
    (dict(dtype="float16"), "dtype must be one of ['bfloat16', 'float32'], got 'float16'"),
    (dict(alpha=1.5), "alpha must be in [0, 1], got 1.5"),
    (dict(alpha=float("nan")), "alpha must be in [0, 1], got nan"),
    (dict(solver="greedy"), "solver must be 'paper' or 'multi', got 'greedy'"),
    (dict(accuracy_floor=0.9),
     "accuracy_floor / latency_budget / max_accuracy_drop apply to solver='multi' only"),
    (dict(measure_frontier=True), "measure_frontier applies to solver='multi' only"),
    (dict(refine_accuracy_rounds=1), "refine_accuracy_rounds applies to solver='multi' only"),
    (dict(solver="multi", refine_accuracy_rounds=-1),
     "refine_accuracy_rounds must be >= 0, got -1"),
    (dict(solver="multi", accuracy_floor=0.5, latency_budget=0.01),
     "give accuracy_floor or latency_budget, not both"),
    (dict(solver="multi", accuracy_floor=0.5, max_accuracy_drop=0.01),
     "give max_accuracy_drop, accuracy_floor or latency_budget, not two"),
    (dict(solver="multi", latency_budget=0.01, floor_confidence=True),
     "floor_confidence applies to solver='multi' with accuracy_floor or max_accuracy_drop"),
    (dict(solver="multi", accuracy_floor=1.5), "accuracy_floor must be in [0, 1], got 1.5"),
    (dict(solver="multi", latency_budget=0.0),
     "latency_budget must be a positive number of seconds, got 0.0"),
    (dict(solver="multi", latency_budget=float("inf")),
     "latency_budget must be a positive number of seconds, got inf"),
])
def test_spec_refuses_bad_settings(kwargs, message):
  """The library's own refusals (the CLI refuses these by flag first): one line each."""
  with pytest.raises(ValueError) as e:
    pipeline.PipelineSpec(**kwargs)
  assert str(e.value) == message


def test_spec_refuses_a_bool_alpha_and_a_negative_seed():
  """alpha=True was taken as 1.0 (solve's own check refuses a bool), and seed=-1 and 2**32 were
  accepted until numpy's generator and the estimate record refused them mid-run."""
  with pytest.raises(TypeError, match=r"^alpha must be a number in \[0, 1\], got True$"):
    pipeline.PipelineSpec(alpha=True)
  for seed in (-1, 2 ** 32):
    with pytest.raises(ValueError, match=rf"^seed must be in \[0, 2\*\*32\), got {seed}$"):
      pipeline.PipelineSpec(seed=seed)
  assert pipeline.PipelineSpec(seed=0, alpha=1).alpha == 1
  assert pipeline.PipelineSpec(seed=2 ** 32 - 1).seed == 2 ** 32 - 1


def test_measured_on_data_text_counts_single_reductions_in_the_singular():
  # A probe's holdout run: 'candidates too: the 1 single reductions meeting the floor'.
  one = pipeline.measured_on_data_text(54, 1)
  assert one == ("54 multi-layer schedules on the data (candidates too: the 1 single reduction "
                 "meeting the floor, measured by the estimate)")
  many = pipeline.measured_on_data_text(1, 51)
  assert many.startswith("1 multi-layer schedule on the data (candidates too: the 51 single "
                         "reductions meeting the floor")


def test_the_few_images_note_stops_at_30_for_a_model_of_more_classes(monkeypatch, tmp_path):
  """Labelled, a choice is noted below the model's classes only up to FEW_IMAGES (30): 40
  images for 100 classes are not noted, 29 are."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from vitprune.registry import get_config  # pylint: disable=g-import-not-at-top
  cfg = dataclasses.replace(get_config("vit_digits"), num_classes=100)
  data = pipeline.load_data(pipeline.PipelineSpec(num_images=40), num_classes=10)
  for holdout, note in ((None, None), (11, "note: the choice rests on 29 images, fewer than "
                                           "the model's 100 classes: each measured accuracy is "
                                           "a count of 29 (steps of 0.0345)")):
    notes, _ = _notes_up_to_the_estimate(monkeypatch, tmp_path, cfg, data, holdout)
    assert notes == ([note] if note else [])
