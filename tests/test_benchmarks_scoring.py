"""Pins the scoring and summaries of benchmarks/predictor_accuracy.py and floor_study.py on
hand-made numbers with exactly known answers: the token grid and schedule counts, the anchored
and interleaved errors, the markdown rows (cells, their order and formats), floor_study's
per-seed re-timing, overhead and totals (no model is compiled); and accuracy_combination.py's
errors, target, refinement table, flag parsers and own frontier."""
import json
import re
import types

import numpy as np
import pytest

from benchmarks import accuracy_combination as ac
from benchmarks import floor_study
from benchmarks import predictor_accuracy as pa
from experiments import common
from vitprune.records.solution import Candidate
from vitprune.registry import get_config
from vitprune.schedule import Schedule


def _cells(line):
  """The cells of a markdown row (escaped pipes, '\\|', are not separators)."""
  return re.split(r"(?<!\\)\|", line)[1:-1]


def test_the_token_grid_steps_by_model_size_and_keeps_the_full_count():
  digits, deit = get_config("vit_digits"), get_config("deit_small_patch16_224")
  assert pa._grid(digits, False) == list(range(5, 66, 4))          # every 4th, from 65 down
  assert pa._grid(digits, True) == [17, 33, 49, 65]                 # --quick: every 16th
  assert pa._grid(deit, False) == list(range(5, 198, 24))          # DeiT-sized: every 24th
  assert pa._grid(deit, True) == list(range(5, 198, 16))
  assert pa._grid(digits, False, step=8) == list(range(9, 66, 8))   # the sensitivity grid


def test_the_schedule_counts_by_model_size_and_flags():
  digits, deit = get_config("vit_digits"), get_config("deit_small_patch16_224")
  f = common.parse(pa.define_flags, [])
  assert pa._schedule_counts(f, digits, False) == (30, 6)
  assert pa._schedule_counts(f, deit, False) == (8, 6)
  assert pa._schedule_counts(f, digits, True) == (3, 5)
  assert pa._schedule_counts(f, deit, True) == (3, 5)
  f = common.parse(pa.define_flags, ["--num_schedules=4", "--calibration_schedules=7"])
  for cfg in (digits, deit):
    for quick in (False, True):
      assert pa._schedule_counts(f, cfg, quick) == (4, 7)           # as given


class _Model:
  """A latency model predicting 1 ms per token summed over the blocks' inputs."""
  num_tokens, depth = 4, 2

  def __init__(self, calibration=()):
    self.calibration = list(calibration)

  def predict(self, counts):
    return 0.001 * sum(counts)


def test_anchored_rescales_by_the_full_graph_measured_over_predicted():
  # the full graph (4, 4, 4): 12 ms predicted, 24 ms measured: a speed ratio of 2
  got, ratio = pa._anchored(_Model(), [(4, 2, 2), (4, 4, 1)], 0.024)
  assert ratio == pytest.approx(2.0, rel=1e-12)
  assert got == pytest.approx([0.016, 0.018], rel=1e-12)


def test_interleaved_refits_on_the_full_count_calibration_and_scores_the_held_out(monkeypatch):
  cal = [(4, 3, 2), (3, 3, 3), (4, 2, 1)]        # (3, 3, 3): not started at the full count
  held = [(4, 4, 2), (4, 1, 1)]
  seen = {}
  medians = {(4, 3, 2): 1.0, (4, 2, 1): 1.0, (4, 4, 2): 0.005, (4, 1, 1): 0.008}

  def measure(cfg, params, **kw):
    seen["schedules"] = [tuple(c) for c in kw["schedules"]]
    return types.SimpleNamespace(curve=lambda kind, batch: [
        types.SimpleNamespace(schedule=c, median_s=medians[c]) for c in seen["schedules"]])

  def fit_on(prof, fitted, **kw):
    seen["fitted"] = [tuple(c) for c in fitted]
    return _Model()

  monkeypatch.setattr(pa.lm_lib, "measure_calibration", measure)
  monkeypatch.setattr(pa.lm_lib, "fit_on", fit_on)
  e = pa._interleaved(types.SimpleNamespace(num_tokens=4), None, "pomt", 1, [4, 2], _Model(cal),
                      held, None, 1, 0)
  assert seen == {"schedules": [(4, 3, 2), (4, 2, 1), (4, 4, 2), (4, 1, 1)],
                  "fitted": [(4, 3, 2), (4, 2, 1)]}
  # predicted 10 and 6 ms, measured 5 and 8: errors of the measurement, 100 % and 25 %
  assert e == {"median": pytest.approx(0.625), "p90": pytest.approx(0.925), "within10": 0.0,
               "count": 2}


def test_holds_finished_only_for_a_complete_result_of_this_benchmark(tmp_path):
  path = tmp_path / "p.json"
  assert not pa._holds_finished(str(path))                           # none there
  for doc, finished in (({"format": pa.RESULT_FORMAT}, True),       # (before "complete")
                        ({"format": pa.RESULT_FORMAT, "complete": True}, True),
                        ({"format": pa.RESULT_FORMAT, "complete": False}, False),
                        ({"format": "vitprune-other", "complete": True}, False),
                        ({"complete": True}, False)):
    path.write_text(json.dumps(doc))
    assert pa._holds_finished(str(path)) is finished, doc


def test_predictor_accuracy_table_rows_cell_by_cell():
  row = {"model": "vit_digits", "batch_size": 1, "method": "pomt", "num_heldout": 30,
         "heldout": {"calibrated": {"median": 0.034, "p90": 0.081, "within10": 0.9},
                     "anchored": {"median": 0.05, "p90": 0.12, "within10": 0.6,
                                  "speed_ratio": 1.234},
                     "interleaved": {"median": 0.021, "p90": 0.043, "within10": 1.0},
                     "block_sum": {"median": 0.2, "p90": 0.35, "within10": 0.25}},
         "frontier": {"latency": {"calibrated": {"median": 0.017, "p90": 0.062}},
                      "accuracy_error_points": {"mean": 0.456, "max": 1.789,
                                                "mean_signed": -0.1}},
         "choice": {"meets_floor": True, "measured_accuracy": 0.9667, "floor": 0.95},
         "calibration_s": 12.34, "profile_s": 45.67, "calibration_share": 0.27}
  cut = {"model": "deit_small_patch16_224", "batch_size": 8, "method": "tome",
         "num_heldout": 8, "calibration_s": 3.0,
         "heldout": {"calibrated": {"median": 0.1, "p90": 0.2, "within10": 0.5}}}
  lines = pa.table([row, cut]).splitlines()
  assert lines[1] == "|" + "---|" * 12
  assert lines[2] == ("| vit_digits | 1 | pomt | 30 | 3.4% / 8.1% / 90% | "
                      "5.0% / 12.0% / 60% (x1.23) | 2.1% / 4.3% / 100% | 20.0% / 35.0% / 25% | "
                      "1.7% / 6.2% | 0.46 / 1.79 | yes (0.9667 >= 0.95) | "
                      "12.3s / 45.7s (27%) |")
  # A row cut after its first phase: every later cell a dash, the columns kept in place.
  assert lines[3] == ("| deit_small_patch16_224 | 8 | tome | 8 | 10.0% / 20.0% / 50% | - | - | "
                      "- | - | - | - | 3.0s / - |")
  assert [len(_cells(ln)) for ln in lines] == [12] * 4


def _round(n, mean, top, anchored=None):
  e = {"num_schedules": n, "mean_abs_points": mean, "max_abs_points": top}
  return e if anchored is None else dict(e, anchored=anchored)


def test_pooled_errors_weigh_each_round_by_its_schedules():
  rounds = [_round(1, 4.0, 6.0, _round(1, 1.0, 1.5)), _round(3, 0.0, 0.5),
            _round(0, 9.0, 9.0, _round(0, 9.0, 9.0))]          # (a round that measured none)
  assert floor_study.pooled_errors(rounds) == {"n": 4, "mean": 1.0, "max": 6.0}
  assert floor_study.pooled_errors(rounds, "anchored") == {"n": 1, "mean": 1.0, "max": 1.5}
  assert floor_study.pooled_errors([]) == {"n": 0, "mean": None, "max": None}


def _seed_row(seed, meets, ratio, share, **kw):
  rt = None if ratio is None else {"ratio": ratio, "schedules": 2}
  return dict({"seed": seed, "meets_floor": meets, "retime": rt, "overhead_share": share,
               "schedule": f"s{seed}", "measured_accuracy": 0.96, "floor": 0.95,
               "wall_s": 10.0, "seconds": {"profile": 1.0}, "uniform_curve_s": 0.5}, **kw)


def _rows():
  return [_seed_row(0, True, 1.05, 0.1), _seed_row(1, False, 1.2, 0.4),
          _seed_row(2, True, None, 0.2), _seed_row(3, True, 1.0, 0.25),
          {"seed": 4, "floor": 0.95, "meets_floor": False, "floor_not_met": "nothing met",
           "retime": None, "wall_s": 5.0}]


def test_floor_study_totals_by_hand():
  assert floor_study.totals(_rows()) == {
      "seeds": 5, "meets_floor": 3, "retimed": 3, "within_5pct": 2,    # (1.05 is within)
      "ratio_median": 1.05, "ratio_max": 1.2,
      "overhead_share_median": pytest.approx(0.225), "overhead_share_max": 0.4}


def test_floor_study_prints_the_totals_line(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(floor_study, "run_seed", lambda seed, *a: _rows()[seed])
  rows = floor_study.main(common.parse(floor_study.define_flags, [
      "--seeds=5", f"--out={tmp_path / 'f.json'}"]))
  assert rows == _rows()
  assert ("\nfloor met on measurement: 3/5 seeds; re-timed chosen within 5% of the fastest "
          "schedule meeting the floor: 2/3 (median ratio 1.050, max 1.200); calibration + "
          "in-loop timing: median 22.5%, max 40.0% of the main job's wall time\n"
          ) in capsys.readouterr().out
  assert json.loads((tmp_path / "f.json").read_text())["totals"]["within_5pct"] == 2


def test_floor_study_table_rows_and_loop_notes():
  rt = {"ratio": 1.03, "schedules": 3, "fastest_timed_in_loop": True, "loop_ratio": 0.98}
  rows = [dict(_seed_row(0, True, None, 0.0988), retime=rt, measured_accuracy=0.96667,
               wall_s=100.4, seconds={"profile": 12.34, "in_loop": 3.21},
               uniform_curve_s=5.67),
          dict(_seed_row(1, False, None, 0.5), retime=dict(rt, ratio=1.0, schedules=2,
                                                           loop_ratio=1.1)),
          dict(_seed_row(2, True, None, 0.5), retime={
              "ratio": 1.2, "schedules": 4, "fastest_timed_in_loop": False,
              "loop_ratio": None}),
          _seed_row(3, True, None, 0.5)]
  lines = floor_study.table(rows).splitlines()
  assert lines[2:] == [
      "| 0 | s0 | 0.9667 | yes | 1.030 (3 schedules; in the loop x0.980) | 100 | 12.3 (5.7) | "
      "3.2 | 9.9% |",
      "| 1 | s1 | 0.9600 | NO | 1.000 (2 schedules) | 10 | 1.0 (0.5) | 0.0 | 50.0% |",
      "| 2 | s2 | 0.9600 | yes | 1.200 (4 schedules; the loop did not time the fastest) | 10 | "
      "1.0 (0.5) | 0.0 | 50.0% |",
      "| 3 | s3 | 0.9600 | yes | n/a | 10 | 1.0 (0.5) | 0.0 | 50.0% |"]


def _cand(name, counts, acc, loop_s):
  return Candidate(counts=counts, schedule=name, predicted_latency_s=1.0, predicted_accuracy=0.97,
                   measured_accuracy=acc, measured_latency_s=loop_s)


def _run_seed(monkeypatch, checked, chosen, measured, seconds, times):
  """floor_study.run_seed over a stand-in job: `checked` candidates, the job's choice and its
  verified accuracy, its stage seconds; the re-timing medians: A 1.0, B 0.625, C 0.5, D 0.25 s;
  perf_counter reads `times` (job start, end, uniform curve start, end)."""
  medians = {(65, 65): 1.0, (65, 33): 0.625, (33, 33): 0.5, (33, 17): 0.25, (17, 17): 0.125}
  summary = {"files": {"solution": "x"}, "metric": "top1", "pruned": {"top1": measured},
             "seconds": seconds, "counts": list(chosen), "schedule": "chosen", "basis": "measured",
             "predicted": {"top1": 0.97}, "unpruned": {"top1": 0.98}, "speedup": 1.5}
  spec = types.SimpleNamespace(batch_size=1, dtype="float32", grid=lambda cfg: (33, 17),
                               timing=None, threads=1, calibration_schedules=6)
  curve = {}
  monkeypatch.setattr(floor_study.profile_cli, "main", lambda f: summary)
  monkeypatch.setattr(floor_study.profile_cli, "pipeline_from_flags", lambda f: (
      types.SimpleNamespace(num_tokens=65), None, None, spec, None))
  monkeypatch.setattr(floor_study, "read_solution", lambda path: types.SimpleNamespace(
      checked=tuple(checked), settings={"accuracy_floor": 0.95}))
  monkeypatch.setattr(floor_study.latency_model, "measure_calibration",
                      lambda cfg, params, **kw: curve.update(tokens=kw["tokens"]))
  monkeypatch.setattr(floor_study.pipeline, "ScheduleTimer", lambda *a: (
      lambda order: [medians[tuple(c)] for c in order]))
  clock = iter(times)
  monkeypatch.setattr(floor_study, "time", types.SimpleNamespace(
      perf_counter=lambda: next(clock)))
  row = floor_study.run_seed(0, 0.95, "pomt", [], "unused")
  assert curve == {"tokens": [17, 33, 65]}              # the job's grid and the full count
  return row


def test_run_seed_retimes_the_schedules_meeting_the_floor(monkeypatch):
  a, b = _cand("A", (65, 65), 0.97, 1.0), _cand("B", (65, 33), 0.96, 0.625)
  c, d = _cand("C", (33, 33), 0.955, None), _cand("D", (33, 17), 0.90, 0.25)
  e = _cand("E", (17, 17), None, None)                  # (not measured on the data)
  row = _run_seed(monkeypatch, [a, b, c, d, e], (65, 33), 0.95,
                  {"profile": 2.0, "in_loop": 1.5}, [0.0, 40.0, 100.0, 103.0])
  assert row["meets_floor"] is True                     # 0.95 meets a floor of 0.95
  assert (row["checked"], row["meeting_floor"]) == (5, 3)
  assert row["retime"] == {"schedules": 3, "chosen_ms": 625.0, "fastest_ms": 500.0,
                           "fastest": "C", "ratio": 1.25,
                           "all_ms": {"C": 500.0, "B": 625.0, "A": 1000.0},
                           "fastest_timed_in_loop": False, "loop_ratio": None}
  assert [s["loop_ms"] for s in row["checked_schedules"]] == [1000.0, 625.0, None, 250.0, None]
  # the profile stage (2 s) took less than the uniform curve alone (3 s): no calibration cost,
  # the in-loop timing's 1.5 s only, of a 40 s job
  assert (row["wall_s"], row["uniform_curve_s"], row["overhead_s"]) == (40.0, 3.0, 1.5)
  assert row["overhead_share"] == 1.5 / 40.0
  # Two schedules meet the floor, the fastest timed in the loop too: the loop's ratio.
  row = _run_seed(monkeypatch, [b, _cand("C", (33, 33), 0.955, 0.5), d], (65, 33), 0.96,
                  {"profile": 10.0, "in_loop": 2.0}, [0.0, 40.0, 100.0, 103.0])
  assert row["retime"]["schedules"] == 2 and row["retime"]["fastest_timed_in_loop"] is True
  assert row["retime"]["loop_ratio"] == 1.25 and row["overhead_s"] == 9.0
  assert row["overhead_share"] == 9.0 / 40.0
  # The choice misses the floor (not among those meeting it): nothing re-timed.
  row = _run_seed(monkeypatch, [a, b, c, d], (33, 17), 0.90, {"profile": 1.0},
                  [0.0, 10.0, 20.0, 20.5])
  assert row["meets_floor"] is False and row["retime"] is None and row["overhead_s"] == 0.5


def test_run_one_scores_each_phase_against_the_measurement(monkeypatch):
  """One method's row over stand-ins: calibrated and block-sum errors are of the measured
  seconds, the held-out count is the schedules drawn, the calibration share is of the
  profile's time, and the log line says both errors in order."""
  held = [(4, 4, 2), (4, 2, 2), (4, 1, 1)]
  lm = _Model([(4, 3, 3)])
  lm.summary = lambda: {"kind": "stand-in"}
  monkeypatch.setattr(pa.lm_lib, "calibrate", lambda *a, **kw: (lm, None))
  monkeypatch.setattr(pa.lm_lib, "heldout_schedules", lambda *a, **kw: list(held))
  # measured 5, 8 and 12 ms (the calibrated model says 10, 8 and 6); the full graph 24 ms
  monkeypatch.setattr(pa.lm_lib, "measure_with_full", lambda *a, **kw: ([0.005, 0.008, 0.012],
                                                                         0.024))
  monkeypatch.setattr(pa.runner, "ProfileSpec", lambda **kw: None)
  monkeypatch.setattr(pa.runner, "profile_batch", lambda *a, **kw: None)
  monkeypatch.setattr(pa.records, "block_table", lambda prof, batch: None)
  block = {(4, 4, 2): 0.0055, (4, 2, 2): 0.016, (4, 1, 1): 0.0108}   # 10 %, 100 %, 10 % off
  monkeypatch.setattr(pa, "Schedule", tuple)
  monkeypatch.setattr(pa.predict_lib, "predict", lambda table, s: block[s])
  monkeypatch.setattr(pa, "_interleaved", lambda *a: {"refit": True})
  clock = iter([0.0, 3.0, 10.0, 22.0])          # calibration 3 s, block profile 12 s
  monkeypatch.setattr(pa, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
  rows, said = [], []
  pa.run_one(types.SimpleNamespace(name="m", num_tokens=4, num_prefix_tokens=1), None, 1,
             ["pomt"], num=5, num_cal=2, tcfg=None, threads=1, seed=0, data=None, floor=0.95,
             quick=False, log=said.append, rows=rows, save=lambda: None)
  (row,) = rows
  assert row["num_heldout"] == 3 and row["num_calibration_graphs"] == 1
  assert row["calibration_s"] == 3.0 and row["profile_s"] == 12.0
  assert row["calibration_share"] == 0.25
  h = row["heldout"]
  assert h["calibrated"] == {"median": 0.5, "p90": pytest.approx(0.9), "within10": 1 / 3,
                             "count": 3}
  assert h["block_sum"]["median"] == pytest.approx(0.1)
  assert h["block_sum"]["p90"] == pytest.approx(0.82)
  assert h["anchored"]["speed_ratio"] == pytest.approx(2.0) and h["interleaved"] == {
      "refit": True}
  assert [s["block_sum_s"] for s in row["schedules"]] == [0.0055, 0.016, 0.0108]
  assert said == ["m b1 pomt: held-out |err| calibrated median 50.0% p90 90.0% | block sum "
                  "median 10.0% p90 82.0% | calibration 3.0s (25% of the profile)"]


def test_frontier_spreads_eight_schedules_and_scores_their_accuracy(monkeypatch):
  """Nine frontier schedules: eight spread over it (the first and last kept) are measured; the
  accuracy error (points, predicted - measured) is averaged and maxed in absolute value; a
  choice measured at the floor meets it."""
  errors = {0: 1.0, 1: -3.0, 2: 0.5, 3: 0.5, 4: 50.0, 5: 0.0, 6: 1.0, 7: 1.0, 8: 2.0}
  fr = [types.SimpleNamespace(counts=(i,), predicted_accuracy=0.5 + 0.01 * i,
                              predicted_latency_s=0.001 * (i + 1)) for i in range(9)]
  chosen = types.SimpleNamespace(schedule="c", counts=(3,), measured_accuracy=0.95,
                                 measured_accuracy_low=0.9, measured_latency_s=0.002,
                                 predicted_latency_s=0.0021)
  for name in ("sensitivity_points", "evaluate", "estimate_record"):
    monkeypatch.setattr(pa.estimate_lib, name, lambda *a, **kw: None)
  monkeypatch.setattr(pa.estimate_lib, "schedule_evaluator", lambda *a, **kw: lambda counts: [
      0.5 + 0.01 * c[0] - errors[c[0]] / 100 for c in counts])
  monkeypatch.setattr(pa, "one_block_counts", lambda *a: None)
  monkeypatch.setattr(pa.solve_stage, "solve_multilayer", lambda *a, **kw: types.SimpleNamespace(
      frontier=tuple(fr)))
  monkeypatch.setattr(pa, "_measure", lambda cfg, params, method, batch, counts, *a: (
      [0.002 * (c[0] + 1) for c in counts], 0.024))
  monkeypatch.setattr(pa.solve_loop, "check_in_loop", lambda *a, **kw: types.SimpleNamespace(
      chosen=chosen, settings={}))
  monkeypatch.setattr(pa, "Schedule", tuple)
  monkeypatch.setattr(pa.predict_lib, "predict", lambda table, s: 0.001 * (s[0] + 1))
  data = types.SimpleNamespace(batches=lambda cfg, n: None, labelled=True, info={},
                               indices=range(10))
  got = pa._frontier(get_config("vit_digits"), None, 1, "pomt", _Model(), None, [65, 33], data,
                     0.95, None, 1, 0, None, False)
  f = got["frontier"]
  assert f["num"] == 8
  assert [s["counts"] for s in f["schedules"]] == [[0], [1], [2], [3], [5], [6], [7], [8]]
  assert f["accuracy_error_points"] == {"mean": pytest.approx(1.125), "max": pytest.approx(3.0),
                                        "mean_signed": pytest.approx(0.375)}
  assert f["latency"]["calibrated"]["median"] == pytest.approx(0.5)
  assert got["choice"]["meets_floor"] is True and got["choice"]["counts"] == [3]


def test_check_draws_draws_the_held_out_besides_the_calibration(monkeypatch):
  seen = []

  def calibration(cfg, grid, num, method, seed):
    return [("cal", method, seed)]

  def heldout(cfg, grid, num, method, exclude, seed):
    seen.append((grid, num, method, exclude, seed))
    if num > 3:
      raise ValueError("could only draw 3")

  monkeypatch.setattr(pa.lm_lib, "calibration_schedules", calibration)
  monkeypatch.setattr(pa.lm_lib, "heldout_schedules", heldout)
  digits = get_config("vit_digits")
  pa.check_draws(digits, ["pomt", "tome"], 3, 5, quick=True, seed=7)
  assert seen == [([17, 33, 49, 65], 3, m, [("cal", m, 7)], 1007) for m in ("pomt", "tome")]
  with pytest.raises(ValueError, match=r"^--num_schedules=4: could only draw 3 besides the 5 "
                     r"calibration ones \(vit_digits, pomt\)$"):
    pa.check_draws(digits, ["pomt"], 4, 5, quick=True, seed=7)


def test_run_seed_with_the_chosen_untimed_in_the_loop_gives_no_loop_ratio(monkeypatch):
  """A review of the audit: the fastest schedule timed in the loop but not the chosen one
  raised a TypeError (None / seconds); no ratio then, and the table says why."""
  b, c = _cand("B", (65, 33), 0.96, None), _cand("C", (33, 33), 0.955, 0.5)
  row = _run_seed(monkeypatch, [b, c], (65, 33), 0.96, {"profile": 10.0, "in_loop": 2.0},
                  [0.0, 40.0, 100.0, 103.0])
  assert row["retime"]["fastest_timed_in_loop"] is True and row["retime"]["loop_ratio"] is None
  assert floor_study.table([dict(row, seed=7)]).splitlines()[2].startswith(
      "| 7 | chosen | 0.9600 | yes | 1.250 (2 schedules; the loop did not time the chosen) |")


def test_accuracy_combination_errors_and_target_by_hand():
  """Mutation audit: `errors` in points over all schedules and over those measured less than
  10 points below the unpruned model (a drop of exactly 10 is out), and the target's bounds
  (a mean of 0.5 and a max of 2 points meet it, a max above 2 misses it whatever the mean)."""
  got = ac.errors([0.96, 0.80, 0.90], [0.95, 0.83, 0.87], full=0.97)
  assert got["all"]["count"] == 3 and got["drop_lt_10"]["count"] == 1
  assert (got["all"]["mean"], got["all"]["max"], got["all"]["mean_signed"]) == pytest.approx(
      (7 / 3, 3, 1 / 3))
  assert got["drop_lt_10"] == pytest.approx({"count": 1, "mean": 1, "max": 1, "mean_signed": 1})
  assert ac.errors([], [], 0.97) == {"all": {"count": 0}, "drop_lt_10": {"count": 0}}
  assert ac.meets_target({"count": 2, "mean": 0.5, "max": 2.0}) is True
  assert ac.meets_target({"count": 2, "mean": 0.1, "max": 2.5}) is False
  assert ac.meets_target({"count": 2, "mean": 0.6, "max": 0.6}) is False
  assert ac.meets_target({"count": 0}) is None


def test_accuracy_combination_refinement_table_cell_by_cell():
  """Mutation audit: the refinement's markdown, each cell in its column (all / drop < 10
  points, corrected / anchored, the verdict of its own cell, predicted / measured, the
  fewest MFLOP before / after)."""
  def e(n, mean, mx, signed, met=None):
    return {"count": n, "mean": mean, "max": mx, "mean_signed": signed, "meets_target": met}

  ref = {"rounds": [{"round": 0, "frontier": 5, "fitted_on": 0,
                     "errors": {"all": e(5, 1, 2, -0.5), "drop_lt_10": e(4, 0.25, 0.75, 0.125)},
                     "anchored_errors": {"all": e(5, 3, 4, 1), "drop_lt_10": {"count": 0}}}],
         "pooled": {"from_round_1": {
             "corrected": {"all": e(3, 0.5, 1, 0), "drop_lt_10": e(2, 0.25, 0.5, -0.25)},
             "anchored": {"all": e(3, 0.5, 2.5, 0, False), "drop_lt_10": e(2, 0.5, 2, 0, True)}}},
         "random_held_out": {
             "incremental": {"all": e(2, 1.5, 2, 1.5), "drop_lt_10": e(1, 1, 1, 1)}},
         "floors": [{"floor": 0.95, "uncorrected_choice": {"predicted": 0.96, "measured": 0.94},
                     "before": {"flop": 3e6, "counts": [65, 41]},
                     "after": {"flop": 2.5e6, "counts": [65, 17]}},
                    {"floor": 0.99, "uncorrected_choice": None, "before": None, "after": None}]}
  lines = ac.refinement_table(ref).splitlines()
  assert lines[2] == ("| 0 | 5 | 0 | 5, 1.00 / 2.00, -0.50 | 4, 0.25 / 0.75, +0.12 | "
                      "5, 3.00 / 4.00, +1.00 | 0 |")
  assert lines[3] == ("| from round 1 on, pooled | | | 3, 0.50 / 1.00, +0.00 | "
                      "2, 0.25 / 0.50, -0.25 | 3, 0.50 / 2.50, +0.00 (target missed) | "
                      "2, 0.50 / 2.00, +0.00 (target met) |")
  assert lines[7] == "| incremental | 2, 1.50 / 2.00, +1.50 | 1, 1.00 / 1.00, +1.00 |"
  assert lines[-2:] == ["| 0.95 | 0.9600 / 0.9400 | 3.00 (65,41) | 2.50 (65,17) |",
                        "| 0.99 | infeasible | none | none |"]


def test_accuracy_combination_refinement_table_says_every_rounds_unscored_single_reductions():
  """Mutation audit: the single reductions left unscored in every round (not the first alone)
  are said once, between the rounds and the held-out schedules, with why they are left out."""
  def e(n):
    return {"count": n, "mean": 1.0, "max": 2.0, "mean_signed": 0.5, "meets_target": None}

  rounds = [{"round": k, "frontier": 5, "fitted_on": k, "unscored": u,
             "errors": {"all": e(5 - u), "drop_lt_10": e(0)},
             "anchored_errors": {"all": e(5 - u), "drop_lt_10": e(0)}}
            for k, u in enumerate((3, 0, 1))]
  lines = ac.refinement_table({"rounds": rounds, "random_held_out": {}, "floors": []}
                              ).splitlines()
  assert lines[5:8] == ["", "Not scored: 4 single reductions on a frontier (points of the "
                        "sensitivity table, measured above: in sample).", ""]
  assert lines[8].startswith("| random schedules never measured by it |")


def test_accuracy_combination_parses_its_flags_at_their_bounds():
  """Mutation audit: --conditional's block before the last and count strictly inside the
  model's, --pairwise's counts strictly inside the grid (sorted, once each) and step >= 1,
  --floors up to 1 inclusive; random_multilayer's schedules reduce 2 to 5 times."""
  cfg = types.SimpleNamespace(depth=6, num_tokens=65, num_prefix_tokens=1)
  assert ac.parse_conditional("4:64", cfg) == (4, 64)
  assert ac.parse_conditional("0:2", cfg) == (0, 2)
  for text, message in (("5:41", "block 5 must be in 0..4"), ("0:65", "count 65 must be in 2"),
                        ("0:1", "count 1 must be in 2..64")):
    with pytest.raises(ValueError, match=message):
      ac.parse_conditional(text, cfg)
  grid = [65, 49, 41, 33, 17]
  assert ac.parse_pairwise("41,33,41,49:1", grid) == ((33, 41, 49), 1)
  for text, message in (("41:0", "step 0 must be >= 1"), ("17:8", "first-cut count 17 must"),
                        ("65:8", "first-cut count 65 must"), ("40:8", "first-cut count 40")):
    with pytest.raises(ValueError, match=message):
      ac.parse_pairwise(text, grid)
  assert ac.parse_floors("1,0.95") == [1.0, 0.95]
  with pytest.raises(ValueError, match="--floors gives 0.9 twice"):
    ac.parse_floors("0.9,0.8,0.9")
  with pytest.raises(ValueError, match="^--floors=' ' names no floor$"):
    ac.parse_floors(" ")
  grid = list(range(65, 8, -2))
  got = ac.random_multilayer(65, 12, grid, 200, seed=0, max_remove=None)
  assert len(set(got)) == 200
  assert {len(Schedule(c).reduction_layers) for c in got} == {2, 3, 4, 5}


def test_accuracy_combination_own_frontier_spreads_by_latency(monkeypatch):
  """Mutation audit: own_frontier keeps `num` of the frontier, evenly from its cheapest to its
  dearest end (4 of 4 kept too many when thinning started only above num + 1), and counts
  every schedule it scored; limit 0 scores none."""
  model = types.SimpleNamespace(ns=np.array([10, 20, 30, 40, 50, 60, 70]))
  rows = np.array([[6, i] for i in (3, 0, 6, 1, 5, 2, 4)])
  monkeypatch.setattr(ac.solve, "schedule_latencies", lambda m, idx: m.ns[idx][:, 1] * 1.0)

  def score(counts):
    return np.array([c[1] / 100 for c in counts])

  for size, want in ((7, [10, 40, 70]), (4, [10, 30, 40])):
    idx = rows[np.isin(rows[:, 1], np.arange(size))]
    monkeypatch.setattr(ac, "enumerate_schedules", lambda m, limit, idx=idx: idx)
    assert ac.own_frontier(model, score, 3, 100) == ([(70, n) for n in want], size)
  assert ac.own_frontier(model, score, 3, 0) == ([], None)


def test_accuracy_combination_refinement_pairs_each_scored_schedule_with_its_own_measurement(
    tmp_path):
  """Mutation audit: the single reductions a round leaves unscored are taken out of its
  predictions, measurements and anchored values alike: each scored schedule keeps its own."""
  # pylint: disable=g-import-not-at-top
  from tests.test_solve import N, _acc, _block_profile, _dp_model, _estimate, _margin_world
  from vitprune import solve, solve_loop
  model = _dp_model(_block_profile(tmp_path), _estimate(tmp_path, [1, 3, 5], list(range(4, N)),
                                                        _acc))
  margins_of, evaluate, singles = _margin_world(2)
  table = solve_loop.margin_table(model, {c: margins_of(c) for c in singles})
  ref = ac.refinement(model, evaluate, 2, [0.5], np.arange(len(model.ns), dtype=float), {},
                      table)
  assert ref["rounds"][0]["unscored"] > 0
  for r in ref["rounds"]:
    for s in r["schedules"]:
      assert solve.is_multi_reduction(s["counts"])
      assert s["measured"] == evaluate([s["counts"]])[0]
