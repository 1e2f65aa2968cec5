"""Profile JSON schema round trip, CSV twin, merge rules, plot, and analysis on synthetic points."""
import dataclasses
import json
import os
import re

import numpy as np
import pytest

from vitprune import figure
from vitprune.profile import plot, records, steps
from vitprune.registry import get_config

CFG = get_config("test_tiny_vit")


def _point(component, n, median, *, batch=1, schedule=None, spread=0.0):
  samples = (median - spread, median, median + spread)
  return records.Point(component=component, batch_size=batch, tokens=n, median_s=median,
                       q25_s=median - spread / 2, q75_s=median + spread / 2, num_samples=3,
                       samples_s=samples, compile_s=0.5, retries=0, schedule=schedule)


def _profile(points, *, created="2025-01-01T00:00:00+00:00", dtype="float32",
             device="cpu", modes=("model",), cfg=CFG, reducer="keep_first"):
  return records.analyze(records.Profile(
      model=cfg.name, config=dataclasses.asdict(cfg), device_kind=device, platform="cpu",
      jax_version="0.0", jaxlib_version="0.0", dtype=dtype, modes=modes, reducer=reducer,
      timing={"min_run_time": 0.1}, points=tuple(points), created=created))


def _staircase_points(batch=1, jump=1e-3):
  return [_point("model", n, 1e-2 + (jump if n > 9 else 0.0), batch=batch)
          for n in range(17, 1, -1)]


def test_check_save_refuses_a_name_too_long_for_the_file_system(tmp_path):
  """A profile's name holds the device kind (a board's CPU name can be long): one that left no
  room for the hidden temporaries failed after every point was measured."""
  setup = _profile([])
  with pytest.raises(ValueError, match=r"^--out_dir: the name xxxxxxxx[^ ]*\.\.\. \(made of the "
                                       r"model, modes, batch sizes, dtype and device kind\) is "
                                       r"240 bytes; at most \d+ fit"):
    records.check_save(setup, str(tmp_path), "x" * 235)        # + ".json"
  records.check_save(setup, str(tmp_path), "x" * 100)
  assert os.listdir(tmp_path) == []


def test_analyze_finds_steps_and_flats():
  prof = _profile(_staircase_points())
  assert [(s["n_from"], s["n_to"]) for s in prof.steps] == [(10, 9)]
  assert prof.steps[0]["saving_s"] == pytest.approx(1e-3)
  assert (prof.steps[0]["level_from"], prof.steps[0]["level_to"]) == (10, 9)   # (in line)
  assert [(f["n_hi"], f["n_lo"]) for f in prof.flats] == [(17, 10), (9, 2)]
  assert prof.predictions == ()   # no block table


def test_analyze_predictions_exact_on_additive_points():
  block = {n: 1e-3 * n for n in (17, 12, 5)}
  pts = [_point("embed", 17, 2e-3)]
  pts += [_point("block", n, v) for n, v in block.items()]
  pts += [_point("head", n, 1e-4) for n in (17, 12, 5)]
  pts += [_point("model", 17, 2e-3 + 2 * block[17] + 1e-4)]
  pts += [_point("schedule", 17, 2e-3 + block[17] + block[12] + 1e-4 + 1e-3,
                 schedule=(17, 12, 5))]
  prof = _profile(pts, modes=("block", "schedule"))
  preds = {p["component"]: p for p in prof.predictions}
  assert preds["model"]["rel_error"] == pytest.approx(0.0, abs=1e-12)
  assert preds["model"]["schedule"] == [17, 17, 17]
  assert preds["schedule"]["predicted_s"] == pytest.approx(2e-3 + 0.017 + 0.012 + 1e-4)
  assert preds["schedule"]["rel_error"] == pytest.approx(-1e-3 / preds["schedule"]["measured_s"])


def test_json_round_trip_and_files(tmp_path):
  prof = _profile(_staircase_points())
  paths = records.save(prof, str(tmp_path))
  assert os.path.basename(paths["json"]) == "test-tiny-vit_model_b1_float32_cpu.json"
  back = records.load(paths["json"])
  assert back == prof
  assert records.merge([back, prof]).points == prof.points   # fresh and loaded merge
  assert records.to_json(back) == records.to_json(prof)
  d = json.load(open(paths["json"]))
  assert d["schema_version"] == records.SCHEMA_VERSION and d["batch_sizes"] == [1]
  assert d["config"]["depth"] == 2 and d["points"][0]["num_samples"] == 3
  assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in paths.values())
  # Steps are derived: an edited step list is recomputed from the points on load.
  d["steps"] = [dict(d["steps"][0], n_from=9, n_to=8, saving_frac=0.99)] if d["steps"] else []
  d["predictions"] = [{"batch_size": 1, "component": "model", "schedule": [17, 17, 17],
                       "predicted_s": 1.0, "measured_s": 1.0, "rel_error": 0.0}]
  with open(paths["json"], "w") as f:
    json.dump(d, f)
  edited = records.load(paths["json"])
  assert (edited.steps, edited.predictions) == (prof.steps, prof.predictions)


def test_a_merge_keeps_the_files_entries_that_vitprune_does_not_write(tmp_path):
  """A note a user added to a profile (a top-level entry readers ignore) was dropped without a
  word when the next run merged into the file; vitprune's own entries are this run's."""
  first = _profile(_staircase_points())
  path = records.save(first, str(tmp_path), stem="p")["json"]
  d = json.load(open(path))
  d.update(note="timed on battery", steps=[])
  with open(path, "w") as f:
    json.dump(d, f)
  records.save(_profile(_staircase_points(batch=2)), str(tmp_path), stem="p")
  merged = json.load(open(path))
  assert merged["note"] == "timed on battery" and merged["batch_sizes"] == [1, 2]
  assert merged["steps"] == records.to_json(records.load(path))["steps"] != []
  # Fields this run writes (a board's 'edge' entry) are this run's, the note still kept.
  records.save(_profile(_staircase_points(batch=4)), str(tmp_path), stem="p",
               fields={"edge": {"target": "x"}})
  merged = json.load(open(path))
  assert (merged["edge"], merged["note"]) == ({"target": "x"}, "timed on battery")


def test_csv_twin():
  prof = _profile(_staircase_points())
  rows = records.to_csv(prof).strip().split("\n")
  assert rows[0].split(",") == list(records.CSV_COLUMNS)
  assert len(rows) == 1 + 16
  row10 = dict(zip(records.CSV_COLUMNS,
                   next(r for r in rows[1:] if r.split(",")[6] == "10").split(",")))
  assert row10["step_to"] == "9"                         # step 10 -> 9
  assert float(row10["median_ms"]) == pytest.approx(11.0)   # median in ms
  assert (row10["retimed_samples"], row10["retimed_scale"]) == ("", "")   # timed once
  spread = _profile([_point("model", n, 1e-2, spread=4e-3) for n in (17, 9)])
  cols = list(records.CSV_COLUMNS)
  for row in records.to_csv(spread).strip().split("\n")[1:]:
    v = dict(zip(cols, row.split(",")))            # q25 below the median, q75 above it
    assert (float(v["q25_ms"]), float(v["median_ms"]), float(v["q75_ms"]),
            float(v["iqr_ms"])) == pytest.approx((8.0, 10.0, 12.0, 4.0))


def test_merge_later_wins_and_batches_union():
  """The profile given last wins on a duplicate point, whatever the files' `created` says: a
  file from a board whose clock ran ahead (or an edited one) kept its old points over a new
  measurement, while the run printed the new numbers."""
  a = _profile(_staircase_points(batch=1), created="9999-01-01T00:00:00+00:00")
  newer = [_point("model", 17, 5e-2)]
  b = _profile(newer, created="2025-02-01T00:00:00+00:00")
  c = _profile(_staircase_points(batch=8, jump=2e-3), created="2025-01-15T00:00:00+00:00",
               modes=("block",))
  m = records.merge([a, c, b])
  assert m.batch_sizes == (1, 8)
  assert m.modes == ("model", "block")
  assert len(m.points) == 32
  assert {p.median_s for p in m.curve("model", 1) if p.tokens == 17} == {5e-2}
  # The newer 17-token point (50 ms) is a step of its own; steps are recomputed on merge.
  assert {(s["batch_size"], s["n_from"]) for s in m.steps} == {(1, 17), (1, 10), (8, 10)}
  assert records.file_stem(m) == "test-tiny-vit_model-block_b1-8_float32_cpu"


@pytest.mark.parametrize("kw, match", [
    (dict(dtype="bfloat16"), "different dtype"),
    (dict(device="NVIDIA H100"), "different device: "),
    (dict(cfg=get_config("test_tiny_distilled")),
     "different model: 'test_tiny_vit' vs 'test_tiny_distilled'"),
    (dict(reducer="random"), re.escape(
        "timed with different reducers: 'keep_first' vs 'random' (their pruned graphs differ; "
        "write them to another output: another --out_dir (experiments.profile) or --out file "
        "(vitprune.edge profile))")),
    # (a probe: 'different model config: 'vit_digits' vs 'vit_digits'' named no field)
    (dict(cfg=dataclasses.replace(CFG, depth=CFG.depth + 1, mlp_hidden=8)),
     re.escape(f"different model config: 'test_tiny_vit (depth {CFG.depth}, mlp_hidden "
               f"{CFG.mlp_hidden})' vs 'test_tiny_vit (depth {CFG.depth + 1}, mlp_hidden 8)'")),
])
def test_merge_mismatch_errors(kw, match):
  with pytest.raises(ValueError, match=match):
    records.merge([_profile(_staircase_points()), _profile(_staircase_points(), **kw)])
  with pytest.raises(ValueError, match="at least one"):
    records.merge([])


def test_merge_refuses_another_jax_and_a_file_with_a_graph_twice(tmp_path):
  """A profile timed under jax 0.4.1 merged into a 0.10.2 one and was relabelled 0.10.2 for
  every point; a point appended twice (edited) loaded, the last one silently winning."""
  a = _profile(_staircase_points())
  for field in ("jax_version", "jaxlib_version"):
    old = dataclasses.replace(a, **{field: "0.4.1"})
    with pytest.raises(ValueError, match=re.escape(
        f"cannot merge profiles measured with different {field.split('_')[0]} versions: '0.4.1' "
        "vs '0.0' (another compiler builds other graphs")):
      records.merge([old, a])
  doc = records.to_json(a)
  doc["points"].append(dict(doc["points"][3], compile_s=9.0))   # (consistent on its own)
  with pytest.raises(ValueError, match=re.escape(
      "p.json: point 16 (model, batch 1, 14 tokens) repeats point 3: a profile holds one timing "
      "per graph (edited?)")):
    records.from_json(doc, "p.json")


def test_merge_refuses_another_timing_protocol_but_not_another_seed():
  """The merged file's `timing` described only the latest run (min_run_time 0.1 for points
  timed at 0.05)."""
  a = _profile(_staircase_points())
  b = dataclasses.replace(a, timing={"min_run_time": 0.05})
  with pytest.raises(ValueError, match=r"timed with different settings \(min_run_time 0.1 vs "
                     r"0.05; write them to another output: another --out_dir "
                     r"\(experiments.profile\) or --out file \(vitprune.edge profile\)\)$"):
    records.merge([a, b])
  seeded = dataclasses.replace(a, timing={"min_run_time": 0.1, "seed": 3})
  assert records.merge([a, seeded]).points


def test_load_errors(tmp_path):
  good = records.to_json(_profile(_staircase_points()))
  cases = {
      "notjson": "{", "format": {**good, "format": "x"},
      "version": {**good, "schema_version": 99},
      "missing": {k: v for k, v in good.items() if k != "points"},
      "point": {**good, "points": [{k: v for k, v in good["points"][0].items()
                                    if k != "median_s"}]},
      "count": {**good, "points": [{**good["points"][0], "num_samples": 7}]},
      "component": {**good, "points": [{**good["points"][0], "component": "mlp"}]},
      "dtype": {**good, "dtype": "float99"},
      "timing": {**good, "timing": {"min_run_time": -1}},
      "config": {**good, "config": {**good["config"], "depth": -3}},
      "tokens": {**good, "points": [{**good["points"][0], "tokens": 1000}]},
      "prefix": {**good, "points": [{**good["points"][0], "tokens": 1}]},
      "sched": {**good, "modes": ["schedule"], "points": [{**good["points"][0],
                                                           "component": "schedule",
                                                           "schedule": [17, 9]}]},
      "grows": {**good, "modes": ["schedule"], "points": [{**good["points"][0],
                                                           "component": "schedule",
                                                           "schedule": [17, 9, 13]}]},
      "first": {**good, "modes": ["schedule"], "points": [{**good["points"][0],
                                                           "component": "schedule",
                                                           "tokens": 9,
                                                           "schedule": [17, 9, 9]}]},
      "median": {**good, "points": [{**good["points"][0], "median_s": 1e300}]},
      "negative": {**good, "points": [{**good["points"][0], "median_s": -1.0}]},
      "nosamples": {**good, "points": [{**good["points"][0], "samples_s": [], "num_samples": 0,
                                        "median_s": 1e-9, "q25_s": 1e-9, "q75_s": 1e-9}]},
      "negsample": {**good, "points": [{**good["points"][0], "median_s": 1e-9,
                                        "samples_s": [-1.0] + good["points"][0]["samples_s"][1:]}]},
      "compile": {**good, "points": [{**good["points"][0], "compile_s": -2.0}]},
      "zero": {**good, "points": [{**good["points"][0], "samples_s": [0.0, 0.0, 0.0],
                                   "median_s": 0.0, "q25_s": 0.0, "q75_s": 0.0}]},
      "prep": {**good, "config": {**good["config"], "preprocessing": {
          **good["config"]["preprocessing"], "mean": 0.5}}},
      "q25": {**good, "points": [{**good["points"][0],
                                  "q25_s": good["points"][0]["median_s"] * 2}]},
      "modes": {**good, "modes": [["model"]]},                   # (a TypeError traceback)
      "twice": {**good, "modes": ["model", "model"]},
      "nodevice": {**good, "device_kind": " "},                  # (hand edits a run never
      "noreducer": {**good, "reducer": ""},                      # writes, loaded as given)
      "patch": {**good, "config": {**good["config"], "patch_size": 0}},   # (ZeroDivisionError)
      "boolversion": {**good, "schema_version": True},           # (True == 1: loaded; probe)
      "badreducer": {**good, "reducer": "pomt+randomx"},         # (loaded as given; probe)
      # (a missing field took its default, depth 12: 'error: depth' came later; probe)
      "nodepth": {**good, "config": {k: v for k, v in good["config"].items() if k != "depth"}},
      "nocrop": {**good, "config": {**good["config"], "preprocessing": {
          k: v for k, v in good["config"]["preprocessing"].items() if k != "crop_pct"}}},
  }
  matches = {"notjson": "not valid JSON", "format": "not a latency profile",
             "version": "schema_version 99", "missing": r"missing keys \['points'\]",
             "point": r"point 0 is missing keys \['median_s'\]",
             "count": "num_samples 7 != 3", "component": "unknown component 'mlp'",
             "dtype": r"dtype must be one of \('float32', 'bfloat16'\), got 'float99'",
             "config": "depth", "tokens": r"tokens 1000 is outside \[2, 17\] for test_tiny_vit",
             "prefix": r"tokens 1 is outside \[2, 17\]",
             "sched": r"schedule \[17, 9\] is not 3 counts within \[2, 17\]",
             "grows": r"point 0: schedule \[17, 9, 13\] increases: token counts never grow",
             "first": r"point 0: tokens 9 is not its schedule's first count 17: edited\?",
             "median": "median_s 1e\\+300 is not its 3 samples'.*edited",
             "q25": "q25_s .* is not its 3 samples'",
             "negative": r"negative.json: point 0: median_s must be a finite number >= 0 "
                         r"seconds, got -1.0",
             "nosamples": r"point 0: samples_s is empty: a point holds the durations",
             "negsample": r"point 0: samples_s holds -1.0: every sample is a duration >= 0",
             "compile": r"point 0: compile_s must be a finite number >= 0 seconds, got -2.0",
             "zero": r"point 0: median_s is 0 seconds: a timed call takes time",
             "prep": "prep.json: invalid preprocessing: mean must be a list, got 0.5",
             "timing": r"timing.json: timing: min_run_time must be > 0 and finite, got -1",
             "modes": r"modes must be a list of distinct modes of \('model', 'block', "
                      r"'schedule'\), got \[\['model'\]\]",
             "twice": r"twice.json: modes must be a list of distinct modes of .*, got "
                      r"\['model', 'model'\]",
             "nodevice": r"nodevice.json: device_kind must be a non-empty string, got ' '",
             "noreducer": r"noreducer.json: reducer must be a non-empty string, got ''",
             "patch": "patch.json: test_tiny_vit: patch_size must be a positive integer, got 0",
             "boolversion": r"boolversion.json: schema_version True is not supported",
             "badreducer": r"badreducer.json: reducer 'pomt\+randomx' names no token-reduction "
                           r"method \(evit, pomt, random, tome, topk, keep_first, or two joined",
             "nodepth": r"/nodepth.json: config is missing fields \['depth'\]$",
             "nocrop": r"/nocrop.json: config is missing fields \['preprocessing.crop_pct'\]$"}
  for name, content in cases.items():
    path = tmp_path / f"{name}.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ValueError, match=matches[name]):
      records.load(str(path))


def test_a_profile_timed_before_a_run_limit_still_loads(tmp_path):
  """The run limits (protocol.RUN_LIMITS: max_retries 100, ...) refuse runs, not records: a
  profile measured with --max_retries=200 before the limit was no longer loadable (solve,
  deploy --profile and merges refused it). Values the protocol never allowed still are."""
  from vitprune.profile import protocol  # pylint: disable=g-import-not-at-top
  doc = records.to_json(_profile(_staircase_points()))
  doc["timing"] = dict(doc["timing"], max_retries=200, min_run_time=5000.0, rounds=2000,
                      min_reps=2 * 10 ** 7, max_reps=2 * 10 ** 7)    # (--repeats=2e7)
  path = tmp_path / "old.json"
  path.write_text(json.dumps(doc))
  assert records.load(str(path)).timing["max_retries"] == 200
  with pytest.raises(ValueError, match="max_retries must be at most 100, got 200"):
    protocol.TimingConfig(max_retries=200)                   # a run with it is refused
  doc["timing"]["max_retries"] = -1
  path.write_text(json.dumps(doc))
  with pytest.raises(ValueError, match="timing: max_retries must be >= 0, got -1"):
    records.load(str(path))


@pytest.mark.parametrize("edit, message", [
    (lambda p: dataclasses.replace(p, median_s=p.median_s * 2), "is not its 3 samples'"),
    (lambda p: dataclasses.replace(p, tokens=500), "tokens 500 is outside [2, 17]"),
    (lambda p: dataclasses.replace(p, samples_s=(0.0,) * 3, num_samples=3, median_s=0.0,
                                   q25_s=0.0, q75_s=0.0), "median_s is 0 seconds"),
    # Samples, quartiles and median scaled together (consistent, absurd: a probe's edit).
    *[(lambda p, f=f: dataclasses.replace(p, samples_s=tuple(x * f for x in p.samples_s),
                                          median_s=p.median_s * f, q25_s=p.q25_s * f,
                                          q75_s=p.q75_s * f),
       "seconds is outside [1e-09, 86400]: no timing of one call takes that (edited?)")
      for f in (1e300, 1e-300)],
])
def test_save_refuses_what_load_would_refuse_and_writes_nothing(tmp_path, edit, message):
  """A profile built in Python was published unchecked: load then refused it, and every later
  save to that name failed (a good profile cannot merge into an unreadable one)."""
  points = _staircase_points()
  bad = dataclasses.replace(_profile(points), points=tuple([edit(points[0])] + points[1:]))
  with pytest.raises(ValueError, match=re.escape("the profile to save: point 0: ") + ".*" +
                     re.escape(message)):
    records.save(bad, str(tmp_path))
  assert os.listdir(tmp_path) == []
  records.save(_profile(points), str(tmp_path))        # the name is still free for a good one


def test_a_model_name_that_is_not_the_config_s_is_refused(tmp_path):
  prof = dataclasses.replace(_profile(_staircase_points()), model="vit_digits")
  with pytest.raises(ValueError, match=re.escape(
      "the profile to save: model 'vit_digits' is not its config's name 'test_tiny_vit'")):
    records.save(prof, str(tmp_path))
  good = records.save(_profile(_staircase_points()), str(tmp_path))["json"]
  doc = json.load(open(good))
  json.dump(dict(doc, model="vit_digits"), open(good, "w"))
  with pytest.raises(ValueError, match="model 'vit_digits' is not its config's name"):
    records.load(good)


def test_point_relative_iqr_is_the_protocol_s():
  p = _point("model", 17, 2.0, spread=0.5)
  assert p.iqr_s == pytest.approx(0.5) and p.rel_iqr == pytest.approx(0.25)


def _retimed(point, samples, scale):
  """`point` with `samples` more samples, timed again and scaled by `scale`, pooled in."""
  from vitprune.profile import protocol
  both = protocol.summarize(point.samples_s + tuple(scale * t for t in samples))
  return dataclasses.replace(point, median_s=both.median, q25_s=both.q25, q75_s=both.q75,
                             num_samples=len(both.samples), samples_s=both.samples,
                             retimed_samples=len(samples), retimed_scale=scale)


def test_a_point_timed_again_says_so_in_every_form(tmp_path):
  """The main job's re-timing pools a count's second timing, scaled for the drift, into its
  profile point: the file, its CSV and the summary say which point and by how much (the
  pooled samples were written as the profile's own measurement, unsaid)."""
  from vitprune.profile import runner
  plain = _staircase_points()
  points = [_retimed(p, (0.02, 0.021), 0.9) if p.tokens == 10 else p for p in plain]
  prof = _profile(points)
  path = records.save(prof, str(tmp_path), stem="p")["json"]
  d = json.load(open(path))
  marked = [q for q in d["points"] if "retimed" in q]
  assert [(q["tokens"], q["retimed"]) for q in marked] == [(10, {"samples": 2, "scale": 0.9})]
  assert marked[0]["samples_s"][-2:] == pytest.approx([0.018, 0.0189])
  back = records.load(path)
  assert back == prof and back.points[7].retimed_samples == 2
  rows = [dict(zip(records.CSV_COLUMNS, r.split(",")))
          for r in records.to_csv(prof).strip().split("\n")[1:]]
  assert [(r["tokens"], r["retimed_samples"], r["retimed_scale"]) for r in rows
          if r["retimed_samples"]] == [("10", "2", "0.9")]
  lines = [ln for ln in runner.summary_table(prof).splitlines() if "timed again" in ln]
  assert len(lines) == 1 and lines[0].split()[2] == "10"
  assert lines[0].endswith("(the last 2 samples timed again, x0.9 for the drift)")
  # Unmarked points write no key: the digest of a profile that was not re-timed is as before.
  assert all("retimed" not in q for q in records.to_json(_profile(plain))["points"])
  # The mark is not in the measurement's digest: a vitprune from before it, reading the file
  # without it, finds the digest a solution recorded.
  unmarked = dataclasses.replace(prof, points=tuple(
      dataclasses.replace(p, retimed_samples=0, retimed_scale=None) for p in prof.points))
  assert records.measurement_sha256(unmarked) == records.measurement_sha256(prof)
  assert records.measurement_sha256(_profile(plain)) != records.measurement_sha256(prof)
  # A later run's timing of that count replaces the point, mark and all (merge is per point).
  again = records.merge([prof, _profile([_point("model", 10, 0.05)])])
  assert [p.retimed_samples for p in again.points if p.tokens == 10] == [0]
  kept = records.merge([prof, _profile([_point("model", 11, 0.05)])])
  assert [p.retimed_scale for p in kept.points if p.tokens == 10] == [0.9]


def test_each_point_records_its_measurement_and_a_step_between_two_says_so(tmp_path):
  """A profile merges points of several runs (and of chunks, and of the adaptive refinement):
  a step between two counts timed minutes or days apart was reported, and written, as a step
  of the graph, though the machine's change of speed may be all of it. Each point now keeps
  when its measurement began; a step between two says so in the file, the CSV and the summary.
  """
  from vitprune.profile import runner
  earlier, later = "2026-12-05T10:00:00.000+00:00", "2026-12-07T15:00:00.123+00:00"
  points = [dataclasses.replace(p, measured_at=earlier if p.tokens > 9 else later)
            for p in _staircase_points()]
  prof = _profile(points)
  (step,) = prof.steps
  assert (step["n_from"], step["n_to"], step["measured_apart"]) == (10, 9, [earlier, later])
  path = records.save(prof, str(tmp_path), stem="p")["json"]
  d = json.load(open(path))
  assert {q["tokens"]: q["measured_at"] for q in d["points"]}[9] == later
  assert d["steps"][0]["measured_apart"] == [earlier, later]
  assert [f["measured_apart"] for f in d["flats"]] == [[]] * len(d["flats"])  # (each in one)
  back = records.load(path)
  assert back == prof and back.points[0].measured_at == earlier
  rows = [dict(zip(records.CSV_COLUMNS, r.split(",")))
          for r in records.to_csv(prof).strip().split("\n")[1:]]
  assert {r["tokens"]: r["measured_at"] for r in rows} == {
      str(n): earlier if n > 9 else later for n in range(17, 1, -1)}
  (line,) = [ln for ln in records.step_lines(prof) if "->" in ln]
  assert line == ("  10 -> 9 saves 9.1% (1 ms; timed apart: 2026-12-05 10:00:00.000 and "
                  "2026-12-07 15:00:00.123 UTC)")
  table = runner.summary_table(prof).splitlines()
  assert table[table.index(line) + 1] == "  " + steps.APART_NOTE
  one = _profile([dataclasses.replace(p, measured_at=later) for p in _staircase_points()])
  assert one.steps[0]["measured_apart"] == []
  # A flat stretch two measurements timed says so too (its counts' marks, in token order).
  mid = _profile([dataclasses.replace(p, measured_at=earlier if p.tokens > 13 else later)
                  for p in _staircase_points()])
  assert [f["measured_apart"] for f in mid.flats if f["n_hi"] > 13 > f["n_lo"]] == [
      [earlier, later]]
  # Not in the measurement's digest (a vitprune from before the mark reads the file without
  # it and must find the digest a solution recorded); points without it write no key.
  assert records.measurement_sha256(prof) == records.measurement_sha256(
      _profile(_staircase_points()))
  assert all("measured_at" not in q for q in records.to_json(_profile(_staircase_points()))[
      "points"])
  assert _profile(_staircase_points()).steps[0]["measured_apart"] == []


@pytest.mark.parametrize("mark", ["yesterday", 5, "", ["2026-12-07T15:00:00+00:00"], None,
                                  "2026-12-07", "2026-12-07T15:00:00"])
def test_a_bad_measured_at_mark_is_refused_naming_it(tmp_path, mark):
  """A date alone or a time without its UTC offset is no instant (a probe's edited file loaded
  "2026-12-07" as a measurement mark)."""
  path = records.save(_profile(_staircase_points()), str(tmp_path), stem="p")["json"]
  d = json.load(open(path))
  d["points"][3]["measured_at"] = mark
  with open(path, "w") as f:
    json.dump(d, f)
  if mark in (None, ""):                # (null or empty: not recorded, as if absent)
    assert records.load(path).points[3].measured_at == ""
    return
  with pytest.raises(ValueError, match=r"p\.json: point 3: measured_at must be an ISO 8601 date "
                                       r"and time with its UTC offset \(or ''\), got "
                                       rf"{re.escape(repr(mark))}$"):
    records.load(path)


def test_one_instant_is_one_mark_however_it_is_spelled(tmp_path):
  """Marks were compared as text: the same instant written with 'Z' and with '+00:00' (an
  edited or foreign file) was reported as two measurements either side of a step."""
  spellings = {n: "2026-12-07T15:00:00Z" if n > 9 else "2026-12-07T16:00:00.000+01:00"
               for n in range(17, 1, -1)}
  prof = _profile([dataclasses.replace(p, measured_at=spellings[p.tokens])
                   for p in _staircase_points()])
  assert {p.measured_at for p in prof.points} == {"2026-12-07T15:00:00.000+00:00"}
  assert prof.steps[0]["measured_apart"] == []
  path = records.save(_profile(_staircase_points()), str(tmp_path), stem="p")["json"]
  d = json.load(open(path))
  d["points"][0]["measured_at"] = "2026-12-07T15:00:00.5Z"
  with open(path, "w") as f:
    json.dump(d, f)
  assert records.load(path).points[0].measured_at == "2026-12-07T15:00:00.500+00:00"


@pytest.mark.parametrize("columns_added", [1, 3])
def test_a_profile_folder_written_before_the_newer_columns_still_merges(tmp_path,
                                                                         columns_added):
  """Its CSV header lacks measured_at (and before that retimed_samples / retimed_scale): it
  was refused as a file vitprune did not write, and no run could merge into the folder."""
  paths = records.save(_profile(_staircase_points()), str(tmp_path), stem="p")
  with open(paths["csv"]) as f:
    rows = [r.split(",")[:-columns_added] for r in f.read().splitlines()]
  with open(paths["csv"], "w") as f:
    f.write("".join(",".join(r) + "\n" for r in rows))
  records.save(_profile([_point("model", 10, 0.05)]), str(tmp_path), stem="p")
  with open(paths["csv"]) as f:
    assert f.readline().rstrip("\n") == ",".join(records.CSV_COLUMNS)


@pytest.mark.parametrize("retimed", [
    {"samples": 0, "scale": 0.9}, {"samples": 3, "scale": 0.9}, {"samples": 1},
    {"samples": 1, "scale": -1.0}, {"samples": 1, "scale": "0.9"}, {"samples": True,
                                                                      "scale": 0.9},
    {"samples": 1, "scale": 0.9, "note": "x"}, [1, 0.9], None])
def test_a_bad_retimed_mark_is_refused_naming_it(tmp_path, retimed):
  path = records.save(_profile(_staircase_points()), str(tmp_path), stem="p")["json"]
  d = json.load(open(path))
  d["points"][3]["retimed"] = retimed
  with open(path, "w") as f:
    json.dump(d, f)
  if retimed is None:                   # (null: as if absent, like the other optional keys)
    assert records.load(path).points[3].retimed_samples == 0
    return
  with pytest.raises(ValueError, match=r"point 3: retimed must be \{\"samples\": 1\.\.2, "):
    records.load(path)


def test_point_validation():
  with pytest.raises(ValueError, match="exactly when its component is 'schedule'"):
    _point("schedule", 17, 1.0)
  with pytest.raises(ValueError, match="exactly when"):
    _point("model", 17, 1.0, schedule=(17, 17, 17))
  for samples, scale in ((3, 1.0), (-1, 1.0), (1, None), (0, 1.0), (1, float("nan")),
                        (1, 0.0)):
    with pytest.raises(ValueError, match="retimed_samples|timed again"):
      dataclasses.replace(_point("model", 17, 1.0), retimed_samples=samples,
                          retimed_scale=scale)


def test_plot_writes_png_and_rejects_missing_component(tmp_path):
  prof = records.merge([_profile(_staircase_points()), _profile(_staircase_points(batch=4))])
  out = plot.plot_profile(prof, str(tmp_path / "p.png"))
  with open(out, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(ValueError, match="no 'block' points"):
    plot.plot_profile(prof, str(tmp_path / "q.png"), component="block")
  with pytest.raises(ValueError, match="can plot only"):
    plot.plot_profile(prof, str(tmp_path / "q.png"), component="head")
  assert sorted(os.listdir(tmp_path)) == ["p.png"]


def test_a_block_profile_plots_its_block_curve_beside_its_predictor_checks(tmp_path,
                                                                          monkeypatch):
  """The PNG of a --mode=block profile drew its 3 whole-graph predictor checks joined as the
  'model' latency curve, and never the per-block curve B(n) the mode measures."""
  from vitprune import figure  # pylint: disable=g-import-not-at-top
  drawn = []
  real = figure.png_bytes
  monkeypatch.setattr(figure, "png_bytes", lambda fig, **kw: (drawn.append(fig),
                                                               real(fig, **kw))[1])
  pts = [_point("embed", 17, 2e-3)] + [_point("block", n, 1e-3 * n) for n in range(17, 1, -1)]
  pts += [_point("head", n, 1e-4) for n in range(17, 1, -1)]
  pts += [_point("model", n, 2e-3 + 1.5e-3 * n) for n in (17, 9, 2)]
  prof = _profile(pts, modes=("block",))
  assert len(prof.predictions) == 3
  plot.plot_profile(prof, str(tmp_path / "b.png"))
  curve, checks = drawn[-1].axes
  assert curve.get_title().startswith("test_tiny_vit block |")
  assert sorted(curve.lines[0].get_xdata()) == list(range(2, 18))
  assert checks.get_title() == "predictor checks: per-block sum vs measured graph"
  measured, predicted = checks.lines[:2]
  assert sorted(measured.get_xdata()) == [2, 9, 17]
  assert sorted(predicted.get_ydata()) == pytest.approx(sorted(
      1e3 * p["predicted_s"] for p in prof.predictions))
  plot.plot_profile(prof, str(tmp_path / "m.png"), component="model")   # asked for: one panel
  assert len(drawn[-1].axes) == 1 and drawn[-1].axes[0].get_title().startswith(
      "test_tiny_vit model |")
  # A --mode=schedule profile's checks are schedules (all at N entering block 0): no panel.
  sched = _profile([p for p in pts if p.component != "model"] + [
      _point("schedule", 17, 0.02, schedule=(17, 9, 2))], modes=("schedule",))
  assert [c["component"] for c in sched.predictions] == ["schedule"]
  plot.plot_profile(sched, str(tmp_path / "s.png"))
  assert len(drawn[-1].axes) == 1

def test_a_profile_of_numpy_numbers_saves_as_plain_json(tmp_path):
  """Points with np.int64 batch sizes and counts (a library user's arrays): save() failed with a
  raw 'Object of type int64 is not JSON serializable' naming no field."""
  pts = [dataclasses.replace(_point("model", n, m), batch_size=np.int64(1), tokens=np.int64(n))
         for n, m in ((17, 2e-3), (9, 1e-3))]
  paths = records.save(_profile(pts), str(tmp_path), stem="p")
  loaded = records.load(paths["json"])
  assert [(p.batch_size, p.tokens) for p in loaded.points] == [(1, 17), (1, 9)]
  assert all(type(p.tokens) is int for p in loaded.points)


def test_modes_that_do_not_match_the_points_are_refused(tmp_path):
  """A --mode=block profile relabelled `"modes": ["model"]` loaded, and paper mode read its 3
  predictor checks as the whole-model curve L(n)."""
  pts = [_point("embed", 17, 2e-3)] + [_point("block", n, 1e-3 * n) for n in (17, 9, 2)]
  pts += [_point("head", n, 1e-4) for n in (17, 9, 2)] + [_point("model", 17, 0.02)]
  records.save(_profile(pts, modes=("block",)), str(tmp_path), stem="b")
  doc = json.loads((tmp_path / "b.json").read_text())
  assert records.load(str(tmp_path / "b.json")).modes == ("block",)
  for modes, why in (
      (["model"], r"\['model'\] do not match its points: block points but no mode of "
                  r"\['block', 'schedule'\]; embed points"),
      (["schedule"], r"mode 'schedule' but no schedule points \(edited\?\)$"),
      (["block", "model", "schedule"], "mode 'schedule' but no schedule points")):
    (tmp_path / "e.json").write_text(json.dumps(dict(doc, modes=modes)))
    with pytest.raises(ValueError, match=r"e.json: modes .*" + why):
      records.load(str(tmp_path / "e.json"))
  (tmp_path / "e.json").write_text(json.dumps(dict(doc, modes=["model", "block"])))
  assert records.load(str(tmp_path / "e.json")).modes == ("model", "block")  # checks: model


def test_batch_sizes_that_are_not_the_points_are_refused(tmp_path):
  """A point's batch size edited 1 -> 2 loaded: the solver, at batch 1, then left that point out
  of the curve without a word (a probe moved a choice's predicted latency so)."""
  pts = [_point("model", n, 1e-3 * n) for n in (17, 9, 2)]
  records.save(_profile(pts, modes=("model",)), str(tmp_path), stem="m")
  doc = json.loads((tmp_path / "m.json").read_text())
  assert doc["batch_sizes"] == [1] and records.load(str(tmp_path / "m.json")).batch_sizes == (1,)
  moved = json.loads(json.dumps(doc))
  moved["points"][0]["batch_size"] = 2
  for bad, what in ((moved, r"batch_sizes \[1\] but its points are at batch \[1, 2\]"),
                    (dict(doc, batch_sizes=[]), r"batch_sizes \[\] but its points are at batch "
                                                r"\[1\]"),
                    (dict(doc, batch_sizes=[1, 2]), r"batch_sizes \[1, 2\] but its points are "
                                                    r"at batch \[1\]"),
                    (dict(doc, batch_sizes=[True]), r"batch_sizes \[True\] but its points are "
                                                    r"at batch \[1\]")):
    (tmp_path / "e.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"e.json: " + what + r" \(edited\?\)"):
      records.load(str(tmp_path / "e.json"))


def test_a_block_profiles_predictor_checks_are_not_a_curve_with_steps():
  """`--mode=block` printed '-- steps of model curve ... 37 -> 5 saves 68.3%' and recorded it
  in `steps`, from its 3 whole-graph predictor checks."""
  from vitprune.profile import runner  # pylint: disable=g-import-not-at-top
  pts = [_point("embed", 17, 2e-3)] + [_point("block", n, 1e-3) for n in range(17, 1, -1)]
  pts += [_point("head", n, 1e-4) for n in range(17, 1, -1)]
  pts += [_point("model", 17, 0.03), _point("model", 13, 0.03), _point("model", 9, 0.03),
          _point("model", 2, 0.005)]             # (4 counts: 3 are too few to call a step)
  block = _profile(pts, modes=("block",))
  assert records.curve_components(block) == ("block",)
  assert not [s for s in block.steps if s["component"] == "model"]
  assert "steps of model curve" not in runner.summary_table(block)
  both = _profile(pts, modes=("model", "block"))        # a real model curve merged in
  assert records.curve_components(both) == ("model", "block")
  assert [(s["n_from"], s["n_to"]) for s in both.steps if s["component"] == "model"] == [(9, 2)]


def test_a_lone_slow_count_is_recorded_apart_from_the_steps(tmp_path):
  """A count slower than both neighbours is `lone_counts`, not a step (it was one, in the
  summary, the plot and the CSV's step_to); the file keeps it, a file without the key (written
  before it) loads with it recomputed, and the measurement digest does not count it."""
  pts = [_point("model", n, 1e-2 + 1e-4 * n + (2e-3 if n == 11 else 0.0))
         for n in range(17, 1, -1)]
  prof = _profile(pts)
  assert prof.steps == ()
  assert prof.lone_counts == (dict(component="model", batch_size=1, n=11, n_above=12,
                                   n_below=10, latency_s=1e-2 + 1.1e-3 + 2e-3,
                                   latency_above_s=1e-2 + 1.2e-3, latency_below_s=1.1e-2,
                                   slow=True, measured_apart=[]),)
  rows = [dict(zip(records.CSV_COLUMNS, r.split(",")))
          for r in records.to_csv(prof).splitlines()[1:]]
  assert len(rows) == 16 and all(r["step_to"] == "" for r in rows)   # no step_to on any row
  paths = records.save(prof, str(tmp_path))
  d = json.load(open(paths["json"]))
  assert d["lone_counts"] == [dict(c) for c in prof.lone_counts]
  digest = records.measurement_sha256(prof)
  del d["lone_counts"]
  with open(paths["json"], "w") as f:
    json.dump(d, f)
  back = records.load(paths["json"])
  assert back.lone_counts == prof.lone_counts and records.measurement_sha256(back) == digest
  # The digest is of what was measured: no analysis field counts (a better detector would
  # otherwise change the identity solutions and deployments recorded), a measurement does.
  for key in records.ANALYSIS_KEYS:
    assert records.measurement_sha256(dataclasses.replace(
        prof, **{key: ({"component": "model", "edited": True},)})) == digest, key
  faster = dataclasses.replace(prof.points[0], median_s=prof.points[0].median_s * 0.5)
  assert records.measurement_sha256(dataclasses.replace(
      prof, points=(faster,) + prof.points[1:])) != digest
  plot.plot_profile(back, str(tmp_path / "p.png"))               # marked, not a KeyError


def test_a_table_of_someone_else_beside_a_profile_is_not_replaced(tmp_path):
  """Fault probe: a file of the user's at the profile's CSV name (beside a profile JSON, e.g. the
  board's copied in) was replaced by the profile table without a word. A CSV there must start
  with the profile table's header; ours (and a CRLF copy of it) is replaced as before."""
  prof = _profile(_staircase_points())
  paths = records.save(prof, str(tmp_path), stem="p")
  ours = open(paths["csv"]).read()
  with open(paths["csv"], "w", newline="") as f:
    f.write(ours.replace("\n", "\r\n"))
  records.save(prof, str(tmp_path), stem="p")
  assert open(paths["csv"]).read() == ours
  open(paths["csv"], "w", encoding="utf-8-sig").write(ours)      # re-saved with a BOM
  records.save(prof, str(tmp_path), stem="p")
  assert open(paths["csv"]).read() == ours
  open(paths["csv"], "w").write("my,data\n1,2\n")
  for check in (lambda: records.check_save(prof, str(tmp_path), "p"),
                lambda: records.save(prof, str(tmp_path), stem="p")):
    with pytest.raises(ValueError, match=r"refusing to replace .*p.csv: it does not start with "
                                         r"a profile table's header"):
      check()
  assert open(paths["csv"]).read() == "my,data\n1,2\n"


def test_a_file_of_someone_else_at_the_plots_name_is_not_replaced(tmp_path):
  """Fault probe: notes of the user's at the profile's PNG name were replaced by the plot unsaid
  (a CSV of theirs there was refused). A PNG there must be a PNG image; ours is replaced."""
  from vitprune.profile import plot as plot_lib  # pylint: disable=g-import-not-at-top
  prof = _profile(_staircase_points())
  extra = {"png": plot_lib.plot_profile}
  paths = records.save(prof, str(tmp_path), stem="p", extra=extra)
  records.save(prof, str(tmp_path), stem="p", extra=extra)          # ours: replaced
  open(paths["png"], "w").write("my notes\n")
  for check in (lambda: records.check_save(prof, str(tmp_path), "p", extra=["png"]),
                lambda: records.save(prof, str(tmp_path), stem="p", extra=extra)):
    with pytest.raises(ValueError, match=r"refusing to replace .*p.png: it is not a PNG image, "
                                         r"so vitprune did not write it \(a file of yours beside "
                                         r"the profile\?\); move it away"):
      check()
  assert open(paths["png"]).read() == "my notes\n"


def test_a_killed_keep_of_refused_points_is_swept_by_the_next_save(tmp_path):
  """A probe killed a run while it kept refused points beside the profile (a fresh
  `.kept-XXXXXXXX.json` name each): its staging folder and lock file stayed for good, as no
  later writer looked for that name."""
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  from vitprune.profile import runner  # pylint: disable=g-import-not-at-top
  prof = _profile(_staircase_points())
  stem = records.file_stem(prof)
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  stale = tmp_path / f".{stem}.kept-55a38fec.json.tmp-{int(dead.stdout)}-abc"
  lock = tmp_path / f".{stem}.kept-55a38fec.json.lock"
  other = tmp_path / f".{stem}x.kept-55a38fec.json.lock"          # another profile's name
  stale.mkdir()
  lock.write_text("")
  other.write_text("")
  runner._write_or_keep(prof, str(tmp_path))
  assert not stale.exists() and not lock.exists() and other.exists()
  assert records.load(str(tmp_path / f"{stem}.json")).points == prof.points


def test_a_run_whose_points_the_file_refuses_keeps_them_beside_it(tmp_path):
  """Two runs of other timing settings started on an empty --out_dir: both passed the up-front
  check, the second to save was refused by the first's file and every point it measured was
  discarded (a probe)."""
  from vitprune.profile import runner  # pylint: disable=g-import-not-at-top
  first = _profile(_staircase_points())
  paths = records.save(first, str(tmp_path))
  other = dataclasses.replace(first, timing={"min_run_time": 0.05})
  with pytest.raises(ValueError, match=r"timed with different settings .*; this run's \d+ "
                     r"points are kept in .*\.kept-[0-9a-f]{8}\.json$") as e:
    runner._write_or_keep(other, str(tmp_path))
  kept = str(e.value).rsplit("kept in ", 1)[1]
  assert os.path.dirname(kept) == str(tmp_path) and os.path.isfile(kept[:-5] + ".csv")
  assert records.load(kept).points == other.points and records.load(kept).timing == other.timing
  assert records.load(paths["json"]) == first                 # the first run's file untouched


def test_schedules_from_one_count_are_distinct_graphs():
  """Two schedules entering block 0 with the same count are two graphs: a point's key holds its
  schedule (both load and merge; the same schedule twice is one graph timed twice)."""
  a = _point("schedule", 17, 0.02, schedule=(17, 9, 2))
  b = _point("schedule", 17, 0.03, schedule=(17, 17, 2))
  prof = _profile([a, b], modes=("schedule",))
  assert records.from_json(records.to_json(prof), "s.json").points == (a, b)
  assert records.merge([prof, _profile([a], modes=("schedule",))]).points == (a, b)
  doc = records.to_json(prof)
  doc["points"].append(dict(doc["points"][0]))
  with pytest.raises(ValueError, match=re.escape(
      "s.json: point 2 (schedule, batch 1, 17 tokens [17, 9, 2]) repeats point 0")):
    records.from_json(doc, "s.json")


def test_a_point_from_a_measurement_keeps_its_fields():
  from vitprune.profile import protocol  # pylint: disable=g-import-not-at-top
  m = protocol.Measurement(median=2.0, q25=1.0, q75=3.0, samples=(1.0, 2.0, 3.0), compile_s=4.5,
                           retries=2)
  p = records.Point.from_measurement(m, component="schedule", batch_size=np.int64(4), tokens=17,
                                     schedule=[17, 9, 2])
  assert (p.component, p.batch_size, p.tokens, p.schedule) == ("schedule", 4, 17, (17, 9, 2))
  assert (p.median_s, p.q25_s, p.q75_s, p.num_samples, p.samples_s) == (
      2.0, 1.0, 3.0, 3, (1.0, 2.0, 3.0))
  assert (p.compile_s, p.retries, p.retimed_samples, p.retimed_scale) == (4.5, 2, 0, None)


def test_curve_is_sorted_by_tokens_descending_and_merged_line_counts_the_others():
  prof = _profile([_point("model", n, 1e-2) for n in (2, 9, 5, 17)] +
                  [_point("model", 3, 1e-2, batch=2)])
  assert [p.tokens for p in prof.curve("model", 1)] == [17, 9, 5, 2]
  assert records.merged_line("p.json", prof, prof) is None
  one = _profile([_point("model", 3, 1e-2, batch=2)])
  assert records.merged_line("p.json", prof, one) == (
      "p.json holds 5 points: this run's 1 merged into the 4 others it held (the summary is of "
      "them all; they are an earlier run's: a step between its counts and this run's may be the "
      "machine's drift between the runs)")
  four = _profile([_point("model", n, 1e-2) for n in (2, 9, 5, 17)])
  assert records.merged_line("p.json", prof, four).endswith(
      "this run's 4 merged into the 1 other it held (the summary is of them all; it is an "
      "earlier run's: a step between its counts and this run's may be the machine's drift "
      "between the runs)")


def test_a_dispatch_point_is_the_predictors_per_call_overhead(tmp_path):
  """The dispatch graph times the per-call overhead (tokens 1, outside the model's counts): it
  loads, and each prediction takes it off once per part (depth + 1)."""
  pts = [_point("embed", 17, 2e-3), _point("dispatch", 1, 1e-4)]
  pts += [_point("block", n, 1e-3 * n) for n in (17, 9, 2)]
  pts += [_point("head", n, 1e-4) for n in (17, 9, 2)] + [_point("model", 17, 0.03)]
  prof = _profile(pts, modes=("block",))
  back = records.load(records.save(prof, str(tmp_path), stem="d")["json"])
  assert back == prof
  assert [p["predicted_s"] for p in back.predictions] == pytest.approx(
      [2e-3 + 2 * 0.017 + 1e-4 - 3 * 1e-4])
  doc = records.to_json(prof)
  doc["points"][0]["tokens"] = 1                       # (only dispatch has no token count)
  with pytest.raises(ValueError, match=r"point 0: tokens 1 is outside \[2, 17\]"):
    records.from_json(doc, "e.json")


def test_a_document_of_the_wrong_shape_is_refused_naming_it():
  """Shapes a hand edit can give: each a ValueError naming the entry (a list for `timing`, or a
  number for a point, was a raw AttributeError / TypeError)."""
  good = records.to_json(_profile(_staircase_points()))
  for edit, message in (
      (dict(timing=[]), "s.json: timing must be an object, got list"),
      (dict(config="x"), "s.json: config must be an object, got str"),
      (dict(points="x"), "s.json: points must be a list"),
      (dict(points=[5]), "s.json: point 0 is not an object"),
      (dict(steps="x"), "s.json: steps must be a list of objects"),
      (dict(lone_counts=[1]), "s.json: lone_counts must be a list of objects")):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
      records.from_json(dict(good, **edit), "s.json")


@pytest.mark.parametrize("edit, message", [
    (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
    (dict(tokens=0), "tokens must be a positive integer, got 0"),
    (dict(retries=-1), "retries must be a non-negative integer, got -1"),
    (dict(num_samples=-1), "num_samples must be a non-negative integer, got -1"),
    (dict(component=5), "component must be a string, got 5"),
    (dict(compile_s=float("inf")), "compile_s must be a finite number >= 0 seconds, got inf"),
    (dict(component="schedule", schedule=[17, 9, 0]),
     "schedule must be null or a list of positive integers, got [17, 9, 0]"),
    (dict(component="schedule", schedule=[17, 9, 10]),
     "schedule [17, 9, 10] increases: token counts never grow between blocks"),
    (dict(median_s=0.011000011), "median_s 0.011000011 is not its 3 samples' (0.011)"),
    # (coverage probe: these two checks were never reached)
    (dict(median_s="x"), "median_s must be a number, got 'x'"),
    (dict(q25_s=True), "q25_s must be a number, got True"),
    (dict(samples_s="x"), "samples_s must be a list of numbers"),
    (dict(samples_s=[0.011, "a", 0.011]), "samples_s must be a list of numbers"),
])
def test_a_bad_point_field_is_refused_naming_it(edit, message):
  doc = records.to_json(_profile(_staircase_points()))
  doc["points"][0].update(edit)
  if "schedule" in edit:
    doc["modes"] = ["schedule"]
    doc["points"] = doc["points"][:1]
  with pytest.raises(ValueError, match="^" + re.escape("s.json: point 0: " + message)):
    records.from_json(doc, "s.json")


def test_csv_rows_of_another_batch_size_keep_their_steps_and_rel_iqr():
  pts = _staircase_points(batch=2)
  pts[0] = _point("model", 17, pts[0].median_s, batch=2, spread=1e-3)
  rows = records.to_csv(_profile(pts)).splitlines()
  assert rows[1] == "test_tiny_vit,cpu,cpu,float32,model,2,17,,11,10.5,11.5,1,0.09091,3,0.5,0,,,,"
  assert rows[8] == "test_tiny_vit,cpu,cpu,float32,model,2,10,,11,11,11,0,0,3,0.5,0,9,,,"


def test_a_name_part_with_no_letters_is_unknown():
  assert records.slug("NVIDIA H200 (x)") == "nvidia-h200-x" and records.slug(" / ") == "unknown"
  prof = dataclasses.replace(_profile([_point("model", 17, 1e-2)]), device_kind="???")
  assert records.file_stem(prof) == "test-tiny-vit_model_b1_float32_unknown"


def test_a_file_whose_name_says_other_batch_sizes_is_not_merged_into(tmp_path):
  b2 = _profile(_staircase_points(batch=2))
  stem = records.file_stem(b2, batch_sizes=[1])                 # (renamed from ..._b2_...)
  path = records.save(b2, str(tmp_path), stem=stem)["json"]
  with pytest.raises(ValueError, match=re.escape(
      f"refusing to merge into {path}: it holds batch [2] points, but its name says batch [1] "
      "(edited or renamed?)")):
    records.save(_profile(_staircase_points(batch=1)), str(tmp_path), stem=stem)
  assert records.load(path) == b2


def test_save_combines_its_fields_with_the_files_by_merge_fields(tmp_path):
  def union(doc, new):
    if new["edge"].get("bad"):
      raise ValueError("edge entries disagree")
    return {"edge": sorted(set(doc.get("edge", [])) | set(new["edge"]["targets"]))}
  path = records.save(_profile(_staircase_points()), str(tmp_path), stem="p",
                      fields={"edge": ["a"]})["json"]
  records.save(_profile(_staircase_points(batch=2)), str(tmp_path), stem="p",
               fields={"edge": {"targets": ("c", "b")}}, merge_fields=union)
  assert json.load(open(path))["edge"] == ["a", "b", "c"]
  with pytest.raises(ValueError, match=re.escape(
      f"cannot merge into {path}: edge entries disagree")):
    records.save(_profile(_staircase_points(batch=4)), str(tmp_path), stem="p",
                 fields={"edge": {"bad": True}}, merge_fields=union)


def test_setup_mismatch_names_the_platform_and_a_config_field_only_one_has():
  import types  # pylint: disable=g-import-not-at-top
  a = _profile(_staircase_points())
  gpu = dataclasses.replace(a, platform="gpu")
  assert records.setup_mismatch(a, gpu) == ("platform", "cpu", "gpu")
  with pytest.raises(ValueError, match="different platform: 'cpu' vs 'gpu'"):
    records.merge([a, gpu])
  setup = dict(model="m", device_kind="d", platform="p", dtype="float32")
  old = types.SimpleNamespace(config={"depth": 2}, **setup)
  new = types.SimpleNamespace(config={"depth": 2, "extra": 1}, **setup)
  assert records.setup_mismatch(old, new) == ("model config", "m (extra None)", "m (extra 1)")


def test_a_profile_without_points_reads_back():
  """A setup without points yet (its modes name what it will measure) is a readable profile."""
  empty = _profile([], modes=("model", "block"))
  back = records.from_json(records.to_json(empty), "e.json")
  assert (back.points, back.modes, back.batch_sizes) == ((), ("model", "block"), ())


def test_predictions_skip_only_the_graphs_the_block_table_does_not_cover():
  pts = [_point("embed", 17, 2e-3)] + [_point("block", n, 1e-3 * n) for n in (17, 9, 2)]
  pts += [_point("head", n, 1e-4) for n in (17, 9, 2)]
  pts += [_point("model", n, 0.03) for n in (17, 12, 9)]           # (no block point at 12)
  pts += [_point("schedule", 17, 0.03, schedule=s) for s in ((17, 12, 2), (17, 9, 2))]
  prof = _profile(pts, modes=("model", "block", "schedule"))
  assert [(p["component"], p["schedule"]) for p in prof.predictions] == [
      ("model", [17, 17, 17]), ("model", [9, 9, 9]), ("schedule", [17, 9, 2])]


def test_an_incomplete_block_table_names_what_it_lacks():
  """solve's refusal of a per-block profile said the table was incomplete, not what it lacked
  (a coverage probe)."""
  pts = [_point("block", n, 1e-3 * n) for n in (17, 9)] + [_point("model", 17, 0.03, batch=8)]
  prof = _profile(pts, modes=("model", "block"))
  assert records.missing_table_parts(prof, 1) == "no embed and head points"
  assert records.missing_table_parts(prof, 8) == "no embed, block or head points"  # (a model one)
  whole = _profile(pts + [_point("embed", 17, 2e-3), _point("head", 9, 1e-4)],
                   modes=("model", "block"))
  assert records.missing_table_parts(whole, 1) == ""
  assert records.block_table(whole, 1) is not None and records.block_table(prof, 1) is None


def test_step_lines_go_on_past_a_curve_too_short_for_steps():
  """A batch whose model curve has one point still reports its block curve."""
  pts = [_point("model", 17, 1e-2)]
  pts += [_point("block", n, 1e-2 + (1e-3 if n > 9 else 0.0)) for n in range(17, 1, -1)]
  lines = records.step_lines(_profile(pts, modes=("model", "block")))
  assert lines[:2] == ["-- steps of block curve, batch 1 (curve noise 0 ms, trend 0 ms/token)",
                       "  10 -> 9 saves 9.1% (1 ms)"]


def test_a_merge_is_created_now_and_its_batch_sizes_are_sorted(monkeypatch):
  monkeypatch.setattr(records, "now_iso", lambda: "2030-06-01T00:00:00+00:00")
  m = records.merge([_profile(_staircase_points(batch=8)), _profile(_staircase_points())])
  assert m.created == "2030-06-01T00:00:00+00:00"
  assert m.batch_sizes == (1, 8) and records.file_stem(m).endswith("_b1-8_float32_cpu")
  assert _profile(_staircase_points(batch=8) + _staircase_points(batch=2)).batch_sizes == (2, 8)


def test_the_json_point_writes_its_spread():
  p = _point("model", 17, 0.011, spread=1e-3)
  d = records.to_json(_profile([p]))["points"][0]
  assert (d["q25_s"], d["q75_s"]) == pytest.approx((0.0105, 0.0115))
  assert (d["iqr_s"], d["rel_iqr"]) == pytest.approx((1e-3, 1e-3 / 0.011))


def test_a_profile_without_a_creation_time_reads_back():
  """`created` may be empty (Profile's default), the other strings may not."""
  prof = dataclasses.replace(_profile(_staircase_points()), created="")
  assert records.from_json(records.to_json(prof), "p.json").created == ""
  with pytest.raises(ValueError, match=re.escape("p.json: created must be a non-empty string, "
                                                 "got 5")):
    records.from_json(dict(records.to_json(prof), created=5), "p.json")


def test_a_timing_mismatch_lists_every_setting_that_differs():
  prof = _profile(_staircase_points())
  other = dataclasses.replace(prof, timing={"min_run_time": 0.05, "rounds": 3})
  with pytest.raises(ValueError, match=re.escape(
      "timed with different settings (min_run_time 0.1 vs 0.05, rounds None vs 3; write")):
    records.merge([prof, other])


def test_a_save_refuses_links_and_files_of_its_names_without_a_profile(tmp_path):
  """A linked profile was read through, merged, and the link replaced by a file; a CSV at the
  profile's name with no JSON beside it is not one vitprune wrote."""
  prof = _profile(_staircase_points())
  real = records.save(prof, str(tmp_path / "real"), stem="p")["json"]
  out = tmp_path / "out"
  out.mkdir()
  os.symlink(real, out / "p.json")
  with pytest.raises(ValueError, match=re.escape(
      f"refusing to replace {out / 'p.json'}: it is a symbolic link, not a file vitprune wrote")):
    records.save(prof, str(out), stem="p")
  assert os.path.islink(out / "p.json")
  os.remove(out / "p.json")
  (out / "p.csv").write_text("x\n")
  with pytest.raises(ValueError, match=re.escape(
      f"refusing to replace ['{out / 'p.csv'}']: no profile {out / 'p.json'} beside them")):
    records.save(prof, str(out), stem="p")
  assert sorted(os.listdir(out)) == ["p.csv"]


def test_merge_of_profiles_in_other_preprocessing_names_the_nested_field():
  other = dataclasses.replace(CFG, preprocessing=dataclasses.replace(CFG.preprocessing,
                                                                     crop_pct=0.5))
  crop = CFG.preprocessing.crop_pct
  with pytest.raises(ValueError, match=re.escape(
      f"different model config: 'test_tiny_vit (preprocessing.crop_pct {crop!r})' vs "
      "'test_tiny_vit (preprocessing.crop_pct 0.5)'")):
    records.merge([_profile(_staircase_points()), _profile(_staircase_points(), cfg=other)])


# ------------------------------------------------------------------------------------------------
# plot_profile: what it draws (a mutation audit: series, error bars, marks, labels pinned).

def _drawn_profile_figures(monkeypatch):
  """[(figure, png_bytes kwargs)] of every figure `plot_profile` renders (still rendered)."""
  drawn, real = [], figure.png_bytes
  monkeypatch.setattr(figure, "png_bytes",
                      lambda fig, **kw: (drawn.append((fig, kw)), real(fig, **kw))[1])
  return drawn


def test_plot_profile_draws_each_batch_with_its_iqr_steps_and_lone_counts(tmp_path,
                                                                        monkeypatch):
  drawn = _drawn_profile_figures(monkeypatch)
  # batch 1: a step 10 -> 9, IQR 0.01 ms below and 0.03 ms above; batch 4: a lone slow count 11
  step = [dataclasses.replace(p, q25_s=p.median_s - 1e-5, q75_s=p.median_s + 3e-5)
          for p in _staircase_points()]
  lone = [_point("model", n, 1e-2 + 1e-4 * n + (2e-3 if n == 11 else 0.0), batch=4)
          for n in range(17, 1, -1)]
  prof = _profile(step + lone + [_point("embed", 17, 1e-3, batch=2)])
  assert [(s["batch_size"], s["n_from"]) for s in prof.steps] == [(1, 10)]
  assert [(c["batch_size"], c["n"]) for c in prof.lone_counts] == [(4, 11)]
  path = str(tmp_path / "p.png")
  assert plot.plot_profile(prof, path) == path
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  ((fig, kw),) = drawn
  assert kw == {"dpi": 120} and tuple(fig.get_size_inches()) == (8, 4.5)
  (ax,) = fig.axes
  assert ax.get_title() == "test_tiny_vit model | float32 | cpu (cpu)"
  assert ax.get_xlabel() == "tokens kept (entering block 0)"
  assert ax.get_ylabel() == "latency, median (ms); bars: IQR"
  # (each mark explained once in the legend: a probe found an 'x' unexplained)
  assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == [
      "batch 1", "batch 4", "lone count (x: out of line with both neighbours, not a step)",
      "step (v: the count above it)"]
  one, four = ax.containers         # (batch 2 has no model points: no curve)
  data, _, (bars,) = one.lines
  assert list(data.get_xdata()) == list(range(17, 1, -1))
  assert list(data.get_ydata()) == pytest.approx([11.0] * 8 + [10.0] * 8)
  assert bars.get_segments()[0].ravel().tolist() == pytest.approx([17, 10.99, 17, 11.03])
  assert bars.get_segments()[-1].ravel().tolist() == pytest.approx([2, 9.99, 2, 10.03])
  color1, color4 = one.lines[0].get_color(), four.lines[0].get_color()
  assert color1 != color4
  marks = [(ln.get_marker(), list(ln.get_xdata()), list(ln.get_ydata()), ln.get_color())
           for ln in ax.lines if ln.get_marker() in ("v", "x")]
  assert marks == [("v", [10], [pytest.approx(11.0)], color1),
                   ("x", [11], [pytest.approx(13.1)], color4)]
  (vline,) = [ln for ln in ax.lines if list(ln.get_xdata()) == [10, 10]]
  assert vline.get_color() == color1


def _block_points(batch):
  pts = [_point("embed", 17, 2e-3, batch=batch)]
  pts += [_point("block", n, 1e-3 * n * batch, batch=batch) for n in range(17, 1, -1)]
  pts += [_point("head", n, 1e-4, batch=batch) for n in range(17, 1, -1)]
  return pts + [_point("model", n, 2e-3 + 1.5e-3 * n * batch, batch=batch) for n in (9, 17, 2)]


def test_plot_profile_of_a_block_profile_labels_both_panels(tmp_path, monkeypatch):
  drawn = _drawn_profile_figures(monkeypatch)
  prof = _profile(_block_points(1) + _block_points(2), modes=("block",))
  plot.plot_profile(prof, str(tmp_path / "b.png"))
  ((fig, _),) = drawn
  assert tuple(fig.get_size_inches()) == (12, 4.5)
  curve, checks = fig.axes
  assert curve.get_title() == "test_tiny_vit block | float32 | cpu (cpu)"
  assert curve.get_xlabel() == "tokens entering the block"
  assert curve.get_ylabel() == "latency, median (ms) per block; bars: IQR"
  assert checks.get_xlabel() == "tokens kept (entering block 0)"
  assert checks.get_ylabel() == "whole-model latency, median (ms)"
  assert [t.get_text() for t in checks.get_legend().get_texts()] == [
      "batch 1 measured graph", "batch 1 per-block sum (predicted)",
      "batch 2 measured graph", "batch 2 per-block sum (predicted)"]
  by_batch = {(c["batch_size"], c["schedule"][0]): c for c in prof.predictions}
  for i, b in enumerate((1, 2)):
    measured, predicted = checks.lines[2 * i:2 * i + 2]
    assert measured.get_color() == predicted.get_color()
    assert list(measured.get_xdata()) == [2, 9, 17] == list(predicted.get_xdata())
    assert list(measured.get_ydata()) == pytest.approx(
        [1e3 * by_batch[b, n]["measured_s"] for n in (2, 9, 17)])
    assert list(predicted.get_ydata()) == pytest.approx(
        [1e3 * by_batch[b, n]["predicted_s"] for n in (2, 9, 17)])
  assert checks.lines[0].get_color() != checks.lines[2].get_color()


def test_plot_profile_default_component_is_the_measured_curve(tmp_path, monkeypatch):
  drawn = _drawn_profile_figures(monkeypatch)

  def component(prof):
    plot.plot_profile(prof, str(tmp_path / "c.png"))
    return drawn[-1][0].axes[0].get_title().split(" | ")[0]

  blocks = [p for p in _block_points(1) if p.component != "model"]
  models = [_point("model", n, 1e-3 * n) for n in range(17, 1, -1)]
  assert component(_profile(blocks + models, modes=("block", "model"))) == "test_tiny_vit model"
  assert component(_profile(models, modes=("block",))) == "test_tiny_vit model"  # no block pts
  assert component(_profile(blocks, modes=("model",))) == "test_tiny_vit block"  # no model pts
  assert component(_profile(blocks, modes=("block",))) == "test_tiny_vit block"
  assert len(drawn[-1][0].axes) == 1       # (no whole-model checks: one panel)
  with pytest.raises(ValueError, match=r"^profile of test_tiny_vit has no 'model' points to "
                                       r"plot$"):
    plot.plot_profile(_profile(blocks), str(tmp_path / "m.png"), component="model")
  with pytest.raises(ValueError, match=r"^can plot only \('model', 'block'\), got 'embed'$"):
    plot.plot_profile(_profile(blocks), str(tmp_path / "m.png"), component="embed")
  assert not os.path.exists(tmp_path / "m.png")


def test_a_profiles_own_table_and_plot_left_without_its_json_are_replaced(tmp_path):
  """A user removed a corrupt profile JSON to measure again and was refused for the CSV and PNG
  it had left ('not written by vitprune'): the table with our header, and a PNG image beside
  it, are replaced; a PNG that is not one, or either beside a table not ours, still refuse."""
  from vitprune.profile import plot as plot_lib  # pylint: disable=g-import-not-at-top
  prof = _profile(_staircase_points())
  extra = {"png": plot_lib.plot_profile}
  paths = records.save(prof, str(tmp_path), stem="p", extra=extra)
  os.remove(paths["json"])
  records.check_save(prof, str(tmp_path), "p", extra=["png"])
  assert records.save(prof, str(tmp_path), stem="p", extra=extra) == paths
  assert records.load(paths["json"]).points == prof.points
  os.remove(paths["json"])
  plot = open(paths["png"], "rb").read()
  notes = tmp_path / "p.png"
  notes.write_text("my notes\n")
  with pytest.raises(ValueError, match=re.escape(
      f"refusing to replace ['{paths['png']}']: no profile {paths['json']} beside them")):
    records.save(prof, str(tmp_path), stem="p", extra=extra)
  notes.write_bytes(plot)                                  # a plot again, beside a table of theirs
  (tmp_path / "p.csv").write_text("my,data\n")
  with pytest.raises(ValueError, match=re.escape(
      f"refusing to replace ['{paths['csv']}', '{paths['png']}']: no profile {paths['json']} "
      "beside them")):
    records.check_save(prof, str(tmp_path), "p", extra=["png"])
  assert sorted(os.listdir(tmp_path)) == ["p.csv", "p.png"]
  assert (tmp_path / "p.csv").read_text() == "my,data\n"


def test_a_point_from_a_measurement_keeps_when_it_was_measured():
  """Mutation audit: `Point.from_measurement` carries the measurement's `measured_at` (a point
  profiled without it lost the mark every step's `measured_apart` reads)."""
  from vitprune.profile import protocol  # pylint: disable=g-import-not-at-top
  at = "2026-12-07T15:00:03.250+00:00"
  m = protocol.Measurement(median=2.0, q25=1.0, q75=3.0, samples=(1.0, 2.0, 3.0),
                           measured_at=at)
  p = records.Point.from_measurement(m, component="model", batch_size=1, tokens=17)
  assert p.measured_at == at
  assert records.to_json(_profile([p]))["points"][0]["measured_at"] == at
