"""Smoke tests of the scripts under benchmarks/ (their numbers are not asserted: only that they
run end to end and print their tables)."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import gpu_report
from benchmarks import predictor_accuracy
from experiments import common
from vitprune import benchmark as bench
from vitprune import solve
from vitprune.profile import records
from vitprune.registry import get_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_profile_speed_runs_on_a_tiny_grid(tmp_path):
  out = tmp_path / "speed.json"
  r = subprocess.run([sys.executable, "-m", "benchmarks.profile_speed", "--tokens=17,9",
                      "--min_run_time=0.005", f"--out={out}"], cwd=ROOT, capture_output=True,
                     text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 0, r.stderr[-2000:]
  for row in ("default (model, 1 thread)", "per-block + parallel",
              "adaptive + parallel + cache (warm)", "step reproducibility"):
    assert row in r.stdout
  # The JSON holds the table's rows, as printed (it wrote none: a table on stdout alone).
  doc = json.loads(out.read_text())
  assert doc["format"] == "vitprune-profile-speed" and len(doc["rows"]) == 7
  for row in doc["rows"]:
    assert f"{row['name']:<36} {row['wall']:>8.2f} {row['compile']:>10.2f}" in r.stdout
  assert r.stdout.endswith(f"wrote {out}\n")


def test_profile_speed_refuses_a_warm_cache_for_its_cold_row(tmp_path):
  """A reused --compile_cache_dir made the 'cache (cold)' row as fast as the warm one, still
  labelled cold."""
  from benchmarks import profile_speed  # pylint: disable=g-import-not-at-top
  from experiments import common  # pylint: disable=g-import-not-at-top
  (tmp_path / "entry").write_text("x")
  with pytest.raises(ValueError, match=f"--compile_cache_dir={tmp_path} is not empty: the "
                     "'cache \\(cold\\)' row starts from an empty cache"):
    profile_speed.main(common.parse(profile_speed.define_flags, [
        "--tokens=17,9", f"--compile_cache_dir={tmp_path}", f"--out={tmp_path / 'o.json'}"]))
  with pytest.raises(ValueError, match=r"^--tokens=17 gives one token count: the table "
                     r"compares curves"):                # (seven rows of one graph, unsaid)
    profile_speed.main(common.parse(profile_speed.define_flags, [
        "--tokens=17", f"--out={tmp_path / 'o.json'}"]))


def test_gpu_suite_rejects_unknown_stages(tmp_path):
  out = tmp_path / "gpu"                        # it was created (empty) before the refusal
  r = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "nosuch", str(out)], cwd=ROOT,
                     capture_output=True, text=True, timeout=30)
  assert r.returncode == 2 and r.stderr == ("error: unknown stage 'nosuch' (one of speed, "
                                            "profile, bench-small, bench-base, all)\n")
  assert not out.exists()
  r = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "all", str(out), "9m"], cwd=ROOT,
                     capture_output=True, text=True, timeout=30)
  assert r.returncode == 2 and r.stderr == "error: SECONDS '9m' is not a whole number\n"
  r = subprocess.run(["bash", "benchmarks/gpu_suite.sh"], cwd=ROOT, capture_output=True,
                     text=True, timeout=30)
  assert r.returncode == 2 and r.stderr.startswith("error: no stage given; usage: gpu_suite.sh")
  for args, message in (   # (empty: the default taken unsaid; 20 digits: overflowed, then ran)
      ([str(out), ""], "error: SECONDS is empty (leave it out for 540)\n"),
      (["", "60"], "error: OUT_DIR is empty (leave it out for outputs/gpu)\n"),
      ([str(out), "9" * 20], f"error: SECONDS {'9' * 20} is more than a day (at most 86400)\n"),
      ([str(out), "86401"], "error: SECONDS 86401 is more than a day (at most 86400)\n"),
      # every stage started, and each failed to write there
      (["/proc/gpu", "60"], "error: cannot write in OUT_DIR '/proc/gpu'\n")):
    r = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "all", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr == message and r.stdout == "", (args, r.stderr)
  assert not out.exists()


def test_gpu_suite_all_runs_every_stage_under_one_deadline(tmp_path):
  """A stand-in `python` that fails for the method benchmarks: every stage runs in order, logs
  to OUT_DIR/log-<stage>.txt, and a failed stage does not stop the later ones; with less than
  20 s left before the deadline the stages are skipped, not started."""
  import os  # pylint: disable=g-import-not-at-top
  fake, out = tmp_path / "bin", tmp_path / "gpu"
  fake.mkdir()
  (fake / "python").write_text('#!/bin/sh\necho "$@" | cut -c1-40\n'
                               'case "$*" in *experiments.benchmark*) exit 3;; esac\n')
  (fake / "python").chmod(0o755)
  env = dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}")
  r = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "all", str(out), "600"], cwd=ROOT,
                     capture_output=True, text=True, timeout=60, env=env)
  assert r.returncode == 1 and r.stderr == (          # (a timeout, 124, is not a failure)
      f"error: stage(s) failed other than by their timeout: bench-b1 bench-b8 bench-b64 (see "
      f"{out}/log-<stage>.txt)\n"), r.stderr
  stages = [ln.split(":")[0][3:] for ln in r.stdout.splitlines()
            if ln.startswith("== ") and "rc=" in ln]
  assert stages == ["versions", "profile-b1", "bench-b1", "bench-b8", "bench-b64", "profile-b64",
                    "profile-b1-bf16", "predictor-pomt"]
  assert "== bench-b8: rc=3 after" in r.stdout
  assert sorted(os.listdir(out)) == sorted(f"log-{s}.txt" for s in stages)
  first_log = (out / "log-predictor-pomt.txt").read_text().splitlines()
  assert first_log[0].startswith("== predictor-pomt: call at ") and first_log[0].endswith(
      "Z, up to 200s") and first_log[1].startswith("-m benchmarks.predictor_acc"), first_log
  # A deadline that leaves no stage its 20 s is refused (0 skipped every stage, exit 0) ...
  for budget in ("0", "29"):
    r = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "all", str(tmp_path / "no"), budget],
                       cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and r.stderr == (
        f"error: SECONDS {budget} leaves no stage its 20 s (at least 30: 10 are kept for packing "
        "up)\n") and not (tmp_path / "no").exists(), r.stderr
  r = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "all", str(out), "600", "x"], cwd=ROOT,
                     capture_output=True, text=True, timeout=60, env=env)
  assert r.returncode == 2 and r.stderr.startswith("error: unexpected argument 'x'; usage:")
  # ... and one that runs out after the first stage skips the rest, not starting them.
  (fake / "python").write_text('#!/bin/sh\nsleep 2\n')
  r = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "all", str(out), "30"], cwd=ROOT,
                     capture_output=True, text=True, timeout=60, env=env)
  assert r.returncode == 0 and r.stdout.count("skipped (") == 7, r.stdout
  assert "== versions: rc=0 after" in r.stdout
  # A leading zero is base 10 (it was octal: '0540' a deadline of 352 s, '090' an error).
  r = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "all", str(out), "030"], cwd=ROOT,
                     capture_output=True, text=True, timeout=60, env=env)
  assert r.returncode == 0 and "== versions: up to 20s" in r.stdout, r.stdout + r.stderr
  # A package the stages import that does not load stops everything before measuring (a
  # missing matplotlib failed every profile and table after its measurements).
  (fake / "python").write_text('#!/bin/sh\ncase "$*" in -c*) exit 1;; esac\necho ran "$@"\n')
  r = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "all", str(out), "600"], cwd=ROOT,
                     capture_output=True, text=True, timeout=60, env=env)
  assert r.returncode == 1 and r.stderr == (
      f"error: the packages the stages import did not all load, or jax found no GPU (see "
      f"{out}/log-versions.txt): nothing measured\n") and "ran " not in r.stdout, r.stdout
  # A second call goes on where the first stopped: a method table of this model or a finished
  # predictor result there is kept and its stage skipped (the tables were measured again and
  # replaced); a cut predictor result is replaced only by a finished one (it was replaced phase
  # by phase by a shorter cut); a dry run's files do not count for the real model.
  (fake / "python").write_text('#!/bin/sh\ncase "$2" in *"import jax"*) exit 0;; esac\n'
                               '[ "$1" = -c ] && exec python3 "$@"\n'   # (the completeness test)
                               'echo "$@" | cut -c1-40\n')
  (out / "benchmark" / "b8").mkdir(parents=True)
  (out / "benchmark" / "b8" / "deit_small_patch16_224_cpu.csv").write_text("table")
  (out / "benchmark" / "b64").mkdir(parents=True)
  (out / "benchmark" / "b64" / "vit_digits_cpu.csv").write_text("a dry run's table")
  predictor = out / "predictor_accuracy_deit_small_patch16_224_pomt.json"
  runs, outs = [], []
  for complete in ("false", "true"):
    predictor.write_text(f'{{"complete": {complete}}}')
    r = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "all", str(out), "600"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60,
                       env=env)
    runs.append([ln.split(":")[0][3:] for ln in r.stdout.splitlines() if "rc=" in ln])
    outs.append(r.stdout)
    assert f"== bench-b8: done before ({out}/benchmark/b8), skipped" in r.stdout
    assert predictor.read_text() == f'{{"complete": {complete}}}'     # (the stand-in wrote
  assert runs[0] == ["versions", "profile-b1", "bench-b1", "bench-b64", "profile-b64",  # none)
                     "profile-b1-bf16", "predictor-pomt"], runs
  assert runs[1] == runs[0][:-1]
  assert "== predictor-pomt: kept the earlier cut result" in outs[0]
  assert f"== predictor-pomt: finished before ({predictor}), skipped" in outs[1]
  assert (out / "benchmark" / "b8" / "deit_small_patch16_224_cpu.csv").read_text() == "table"
  # Each call's log is appended under its own line (a second call replaced the first's log).
  log = (out / "log-predictor-pomt.txt").read_text().splitlines()
  assert [ln.startswith("== predictor-pomt: call at ") for ln in log] == [
      True, False, True, False], log
  assert log[1] == first_log[1] and log[3].startswith("-m benchmarks.predictor_acc"), log
  # With no earlier result and none written, it says so (it claimed to keep an earlier one).
  predictor.unlink()
  r = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "all", str(out), "600"], cwd=ROOT,
                     capture_output=True, text=True, timeout=60, env=env)
  assert "== predictor-pomt: wrote no result" in r.stdout, r.stdout
  assert "kept the earlier" not in r.stdout and not predictor.exists()


def test_gpu_suite_stops_when_jax_finds_no_gpu(tmp_path):
  """CUDA failing to start left jax on the CPU: the suite measured DeiT-S there for its whole
  deadline and exited 0. Without GPU_SUITE_MODEL (a dry run) it needs a GPU (none here)."""
  import os  # pylint: disable=g-import-not-at-top
  out = tmp_path / "gpu"
  env = {k: v for k, v in os.environ.items() if k != "GPU_SUITE_MODEL"}
  r = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "all", str(out), "60"], cwd=ROOT,
                     capture_output=True, text=True, timeout=120, env=env)
  assert r.returncode == 1 and "jax found no GPU" in r.stderr, r.stdout + r.stderr
  assert "AssertionError: jax runs on cpu, not a GPU" in (out / "log-versions.txt").read_text()
  assert os.listdir(out) == ["log-versions.txt"] and "profile-b1" not in r.stdout


def test_gpu_suite_speed_keeps_the_last_table_when_a_run_fails(tmp_path):
  """The speed stage shared the profile stage's cache (its 'cache (cold)' row refuses a used
  one) and tee truncated the previous table before the run was refused. A stand-in `python`
  records the cache it is given and fails, then succeeds."""
  import os  # pylint: disable=g-import-not-at-top
  fake, out = tmp_path / "bin", tmp_path / "gpu"
  fake.mkdir(), out.mkdir()
  (out / "profile_speed.txt").write_text("previous table\n")
  env = dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}",
             JAX_CACHE_DIR=str(tmp_path / "shared"))
  runs = []
  for rc in (1, 0):
    (fake / "python").write_text(f'#!/bin/sh\n[ "$1" = -c ] && exit 0\n'   # (the imports)
                                 f'echo "$@" > {tmp_path}/argv\necho table {rc}\nexit {rc}\n')
    (fake / "python").chmod(0o755)
    r = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "speed", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=30, env=env)
    runs.append((r.returncode, (out / "profile_speed.txt").read_text(), sorted(os.listdir(out))))
    cache = next(a for a in (tmp_path / "argv").read_text().split()
                 if a.startswith("--compile_cache_dir="))
    assert "shared" not in cache and not os.path.exists(cache.split("=", 1)[1])   # removed
    assert f"--out={out}/profile_speed.json" in (tmp_path / "argv").read_text().split()
  logs = ["log-speed.txt", "log-versions.txt"]
  assert runs == [(1, "previous table\n", logs + ["profile_speed.txt"]),
                  (0, "table 0\n", logs + ["profile_speed.txt"])]


def test_edge_speed_runs_on_a_tiny_model(tmp_path, capsys, monkeypatch):
  import json  # pylint: disable=g-import-not-at-top
  from benchmarks import edge_speed  # pylint: disable=g-import-not-at-top
  from experiments import common  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  from vitprune import iree_build  # pylint: disable=g-import-not-at-top
  from vitprune.flops import forward_gflop  # pylint: disable=g-import-not-at-top
  from vitprune.registry import get_config  # pylint: disable=g-import-not-at-top
  from vitprune.schedule import parse_schedule  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(iree_build, "usable_cores", lambda: 2)   # the artifact's choice: 2 shards
  out = tmp_path / "edge.json"
  res = edge_speed.main(common.parse(edge_speed.define_flags, [
      "--models=test_tiny_vit", "--batch_sizes=2", "--schedules=test_tiny_vit=keep@1:9",
      "--baked=", "--min_run_time=0.01", f"--out={out}"]))
  printed = capsys.readouterr().out          # (the method: said in the JSON alone)
  assert "| test_tiny_vit | 2 | keep@1:9 (pomt) | args | local-sync x2 shards (auto) |" in printed
  assert "| test_tiny_vit | 2 | full | args |" in printed
  rows = json.loads(out.read_text())["rows"]
  assert rows == json.loads(json.dumps(res["rows"]))
  assert [(x["schedule"], x["weights"], x["shards"]) for x in rows] == [
      ("full", "args", 2), ("keep@1:9", "args", 2)]
  assert all(x["iree_median_ms"] > 0 and x["module_mb"] > 0 for x in rows)
  # each row's own work (the pruned row had the unpruned figure), the cores the plan used
  cfg = get_config("test_tiny_vit")
  assert [x["gflop"] for x in rows] == [
      forward_gflop(cfg, 2), forward_gflop(cfg, 2, parse_schedule(cfg, "keep@1:9").counts)]
  assert rows[1]["gflop"] < rows[0]["gflop"]
  assert rows[0]["plan_gflop"] == rows[1]["plan_gflop"] == pytest.approx(rows[0]["gflop"],
                                                                        abs=1e-3)
  assert json.loads(out.read_text())["machine"]["cores"] == 2


def _assert_refused(script, cases, tmp_path):
  """Each (argv, message) of `cases` makes `script.main` raise an input error matching
  `message` before it writes anything under `tmp_path`."""
  import pytest  # pylint: disable=g-import-not-at-top
  from experiments import common  # pylint: disable=g-import-not-at-top
  for argv, message in cases:
    with pytest.raises(common.INPUT_ERRORS, match=message):
      script.main(common.parse(script.define_flags, argv))
  assert list(tmp_path.iterdir()) == []


def test_edge_speed_refuses_bad_input_before_any_work(tmp_path):
  from benchmarks import edge_speed  # pylint: disable=g-import-not-at-top
  out = f"--out={tmp_path / 'e.json'}"
  _assert_refused(edge_speed, [
      ([f"--out={tmp_path}"], "is a directory, not a file"),
      ([f"--out={tmp_path}/e.json/"], "ends in '/'"),     # was refused only at the write
      (["--batch_sizes=1000000000000", out], "^--batch_sizes=1000000000000 cannot fit in memory"),
      (["--drivers=local-turbo", out], "--drivers takes auto"),
      (["--drivers=local-task,auto,local-task", out],      # the repeat was dropped unsaid
       r"^--drivers must name each driver once, got \['local-task', 'auto', 'local-task'\]$"),
      (["--min_run_time=0", out], r"^--min_run_time must be > 0 and finite, got 0\.0$"),
      (["--batch_sizes=0", out], "--batch_sizes: 0 must be >= 1"),
      # timed the unpruned models only, reporting --method=tome in the JSON; without
      # --method the unpruned model was timed twice, once as a "pruned" row
      (["--models=vit_digits", "--schedules=vit_digits=full", "--method=tome", out],
       r"^--schedules: vit_digits=full removes no token; it would time the unpruned model "
       r"again$"),
      (["--models=vit_digits", "--schedules=vit_digits=keep@3:65", out], "removes no token"),
      (["--models=test_tiny_vit", "--method=tome", out], "none of --models"),
      (["--schedules=keep@1:9", out], "is not model=schedule"),
      (["--models=vit_digits", "--schedules=vit_digits=keep@9:9", out],
       r"^--schedules: vit_digits=keep@9:9: schedule 'keep@9:9': layer 9"),   # (flag named)
      (["--models=vit_digits", "--method=tome", "--schedules=vit_digits=keep@3:5", out],
       "tome can remove at most 32 of the 65 tokens entering block 3"),   # was after timing
      (["--models=nosuch", out], "unknown model 'nosuch'"),
      (["--method=nosuch", out], "unknown token-reduction method 'nosuch'"),
      (["--models=vit_digits", "--schedules=deit_small_patch16_224=full", out],
       r"--schedules names \['deit_small_patch16_224'\], which --models"),
      (["--models=vit_digits", "--baked=vit_digit", out], "--baked names"),
      (["--models=vit_digits", "--baked=vit_digits,vit_digits", out],
       r"^--baked must name each model once, got \['vit_digits', 'vit_digits'\]$"),
      (["--models=", out], r"--models must name each model once, got \[\]"),
      (["--models=vit_digits,vit_digits", out], "--models must name each model once"),
      (["--schedules=vit_digits=keep@3:35,vit_digits=keep@3:20", out],
       "--schedules gives 'vit_digits' twice")], tmp_path)


def test_calibration_size_fits_every_set_on_one_measurement(tmp_path, capsys, monkeypatch):
  import json  # pylint: disable=g-import-not-at-top
  from benchmarks import calibration_size as cs  # pylint: disable=g-import-not-at-top
  from experiments import common  # pylint: disable=g-import-not-at-top
  from vitprune.profile import latency_model  # pylint: disable=g-import-not-at-top
  calls = []
  measure = latency_model.measure_calibration

  def spy(*args, **kwargs):
    calls.append((sorted(kwargs["tokens"]), [tuple(c) for c in kwargs["schedules"]]))
    return measure(*args, **kwargs)

  monkeypatch.setattr(latency_model, "measure_calibration", spy)
  out = tmp_path / "cs.json"
  doc = cs.main(common.parse(cs.define_flags, [
      "--methods=pomt", "--sizes=4,5", "--draws=1", "--num_heldout=2", "--tokens=65,33,17",
      "--min_run_time=0.005", f"--out={out}"]))
  printed = capsys.readouterr().out
  assert "| pomt | 4 |" in printed
  assert json.loads(out.read_text()) == json.loads(json.dumps(doc))
  # The latencies name what measured them (a probe: no device, CPU or jax in the JSON).
  from vitprune.profile import runner  # pylint: disable=g-import-not-at-top
  assert doc["machine"] == runner.machine_info() and doc["machine"]["cores"] >= 1
  assert doc["machine"]["cpu"] and doc["machine"]["device_kind"]
  assert runner.machine_line(doc["machine"]) + "\n" in printed
  (held,) = doc["heldout"].values()
  held_counts = [tuple(h["counts"]) for h in held]
  assert len(held) == 2 and all(h["measured_s"] > 0 for h in held)
  nf = doc["summary"][0]["noise_floor"]
  assert nf["count"] == 2 and 0 <= nf["median"] <= nf["p90"]
  # ONE measurement of the curve, both sets and the held-out graphs; then the held-out graphs
  # alone (the noise floor).
  sets = [tuple(c) for r in doc["rows"] for c in r["calibration"]]
  assert len(calls) == 2
  assert calls[0] == ([17, 33, 65], sorted(set(sets)) + held_counts)
  assert calls[1] == ([65], held_counts)
  assert [(r["size"], len(r["calibration"])) for r in doc["rows"]] == [(4, 4), (5, 5)]
  for r in doc["rows"]:
    fitted = {tuple(c) for c in r["fitted"]}
    # What the fit saw: the set and the 3 uniform graphs, never a held-out schedule.
    assert fitted == {tuple(c) for c in r["calibration"]} | {(n,) * 7 for n in (17, 33, 65)}
    assert not fitted & set(held_counts)
    err = [abs(p - h["measured_s"]) / h["measured_s"] for p, h in zip(r["predicted_s"], held)]
    assert r["heldout"]["median"] == pytest.approx(float(np.median(err)))


def test_calibration_size_refuses_bad_input_before_any_work(tmp_path):
  from benchmarks import calibration_size  # pylint: disable=g-import-not-at-top
  out = f"--out={tmp_path / 'c.json'}"
  _assert_refused(calibration_size, [
      ([f"--out={tmp_path}"], "is a directory, not a file"),
      (["--sizes=3,10", out], r"--sizes must be >= 4 \(one per reduction term of the latency "
                              r"model\), got 3"),
      (["--sizes=x", out], "--sizes"),
      (["--sizes=6,100000", out], r"^--sizes must be <= 1000 \(each is a graph compiled and "
                                  r"timed\), got 100000$"),     # (refused after ~26 s of draws)
      (["--methods=nosuch", out], "unknown token-reduction method 'nosuch'"),
      (["--methods=pomt,pomt", out], r"--methods must name each method once"),
      (["--methods=POMT,pomt", out], r"--methods must name each method once"),
      (["--tokens=", out], r"^--tokens is empty \(leave it out for the default: the main "   # ran
                           r"job's --solver=multi grid\)$"),                     # the default grid
      (["--batch_size=1000000000000", out], "^--batch_size=1000000000000 cannot fit in memory"),
      (["--methods=pomt,tome", "--tokens=65,17,9", out],
       "tome removes at most 32 of 65 tokens in one block"),
      (["--methods=pomt", "--tokens=65,33", "--sizes=40", out],
       r"--sizes / --tokens: pomt: could only draw"),
      (["--methods=pomt", "--tokens=65,33", "--sizes=4", "--draws=1", "--num_heldout=40", out],
       r"--num_heldout / --tokens: pomt: could only draw"),
      (["--tokens=70", out], r"counts \[70\] are outside"),
      (["--min_run_time=0", out], r"^--min_run_time must be > 0 and finite, got 0\.0$")],
      tmp_path)


def test_predictor_accuracy_quick(tmp_path, capsys, monkeypatch):
  import json  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import predictor_accuracy as pa  # pylint: disable=g-import-not-at-top
  from experiments import common  # pylint: disable=g-import-not-at-top
  import copy  # pylint: disable=g-import-not-at-top
  from benchmarks import gpu_report  # pylint: disable=g-import-not-at-top
  out = tmp_path / "pred.json"
  cache = jax.config.jax_compilation_cache_dir       # the test session's (conftest), if any
  written, write = [], common.write_result

  def recording(path, doc, *a, **kw):     # every write, as the file held it then
    written.append(copy.deepcopy(doc))
    return write(path, doc, *a, **kw)
  monkeypatch.setattr(common, "write_result", recording)
  doc = pa.main(common.parse(pa.define_flags, ["--quick", f"--out={out}"] + (
      [f"--compile_cache_dir={cache}"] if cache else [])))
  assert jax.config.jax_compilation_cache_dir == cache or not cache
  # Written after every phase (it wrote once, at the end: a GPU stage cut by its deadline lost
  # everything): the calibrated model on the held-out schedules first (the block table, whose
  # 2 graphs per count came first, after it), then the interleaved refit, then the frontier.
  assert [d["complete"] for d in written] == [False, False, False, False, True]
  assert [sorted(d["rows"][0]["heldout"]) for d in written[:3]] == [
      ["anchored", "calibrated"], ["anchored", "block_sum", "calibrated"],
      ["anchored", "block_sum", "calibrated", "interleaved"]]
  assert ["profile_s" in d["rows"][0] for d in written] == [False, True, True, True, True]
  assert ["frontier" in d["rows"][0] for d in written] == [False, False, False, True, True]
  cut = tmp_path / "cut"
  cut.mkdir()                                  # what a cut stage leaves: tabulated, and said
  (cut / "predictor_accuracy_pomt.json").write_text(json.dumps(written[0]))
  report = gpu_report.collect(str(cut))
  assert report["predictor_accuracy_cut"] == ["predictor_accuracy_pomt.json"]
  said = gpu_report.to_markdown(report)
  assert ("(predictor accuracy cut before the end, rows hold the phases measured: "
          "predictor_accuracy_pomt.json)") in said
  # Cut before its first row: the line alone says so (it was silent); complete with no rows is
  # a contradiction, refused (it printed only the device).
  (cut / "predictor_accuracy_pomt.json").write_text(json.dumps(dict(written[0], rows=[])))
  assert ("(predictor accuracy cut before the end, rows hold the phases measured: "
          "predictor_accuracy_pomt.json)") in gpu_report.to_markdown(gpu_report.collect(str(cut)))
  (cut / "predictor_accuracy_pomt.json").write_text(json.dumps(dict(written[0], rows=[],
                                                                    complete=True)))
  with pytest.raises(ValueError, match="predictor_accuracy_pomt.json says it is complete but "
                                       r"holds no rows \(edited\?\)"):
    gpu_report.collect(str(cut))
  (cut / "predictor_accuracy_pomt.json").write_text(json.dumps(written[0]))
  row_line = next(ln for ln in said.splitlines() if ln.startswith("| vit_digits | 1 | pomt |"))
  cells = row_line.split(" | ")
  assert cells[6] == cells[7] == "-"            # interleaved and block sum: not measured yet
  assert cells[-1].endswith("s / - |")          # nor the block table's profile time
  stdout = capsys.readouterr().out
  assert "| vit_digits | 1 | pomt |" in stdout and "block sum" in stdout
  assert json.loads(out.read_text()) == json.loads(json.dumps(doc))
  (row,) = json.loads(out.read_text())["rows"]
  held = {tuple(s["counts"]) for s in row["schedules"]}
  cal = {tuple(c) for c in row["latency_model"].get("calibration", [])}
  assert len(held) == row["num_heldout"] >= 3 and not held & cal
  # --quick's 5 calibration schedules (it said 9: the graphs, full and curve included)
  assert row["num_calibration"] == 5 < row["num_calibration_graphs"]
  for key in ("calibrated", "anchored", "interleaved", "block_sum"):
    e = row["heldout"][key]
    assert e["count"] == row["num_heldout"] and 0 <= e["within10"] <= 1 and e["p90"] >= e["median"]
  ratio = row["heldout"]["anchored"]["speed_ratio"]       # the anchored column is the
  assert 0 < ratio < np.inf        # calibrated one rescaled (by how fast the machine ran: 5.5x
                                   # under a loaded 2-core run, so no bound on it)
  for s in row["schedules"]:
    assert s["calibrated_s"] > 0
  anchored = [s["calibrated_s"] * ratio for s in row["schedules"]]
  measured = [s["measured_s"] for s in row["schedules"]]
  want = float(np.median(np.abs(np.array(anchored) - measured) / measured))
  assert abs(row["heldout"]["anchored"]["median"] - want) < 1e-12
  acc = row["frontier"]["accuracy_error_points"]
  assert 0 <= acc["mean"] <= acc["max"]
  assert row["choice"]["meets_floor"] == (row["choice"]["measured_accuracy"] >=
                                          row["choice"]["floor"])
  # A re-run cut after its first phase replaced the finished result with that phase alone: a
  # finished result is replaced only by another finished one.
  from vitprune.profile import runner  # pylint: disable=g-import-not-at-top
  finished = out.read_text()

  def interrupt(*a, **kw):
    raise KeyboardInterrupt
  monkeypatch.setattr(runner, "profile_batch", interrupt)
  capsys.readouterr()
  with pytest.raises(KeyboardInterrupt):
    pa.main(common.parse(pa.define_flags, ["--quick", f"--out={out}"] + (
        [f"--compile_cache_dir={cache}"] if cache else [])))
  assert out.read_text() == finished and len(written) == 5       # (no write made)
  assert f"note: {out} holds a finished result: this run replaces it when it finishes" in (
      capsys.readouterr().out)


def test_predictor_accuracy_table_says_a_missed_floor_with_the_right_sign():
  """'NO (0.9333 >= 0.95)': a missed floor was printed with '>='."""
  from benchmarks import predictor_accuracy  # pylint: disable=g-import-not-at-top
  err = {"median": 0.1, "p90": 0.2, "within10": 0.5}
  row = {"model": "vit_digits", "batch_size": 1, "method": "pomt", "num_heldout": 3,
         "heldout": {"calibrated": err, "interleaved": err, "block_sum": err},
         "frontier": None, "calibration_s": 1.0, "profile_s": 2.0, "calibration_share": 0.5,
         "choice": {"meets_floor": False, "measured_accuracy": 0.9333, "floor": 0.95}}
  assert "| NO (0.9333 < 0.95) |" in predictor_accuracy.table([row]).splitlines()[-1]
  row["choice"].update(meets_floor=True, measured_accuracy=0.96)
  assert "| yes (0.9600 >= 0.95) |" in predictor_accuracy.table([row]).splitlines()[-1]
  # A run that ended with FloorNotMetError (nothing checked met the floor) is a row too.
  row["choice"] = {"floor": 0.99, "meets_floor": False, "floor_not_met": "accuracy floor ..."}
  assert "| NO (nothing checked met 0.99) |" in predictor_accuracy.table([row]).splitlines()[-1]


def test_predictor_accuracy_refuses_bad_input_before_any_work(tmp_path):
  from benchmarks import predictor_accuracy  # pylint: disable=g-import-not-at-top
  out = f"--out={tmp_path / 'p.json'}"
  _assert_refused(predictor_accuracy, [
      ([f"--out={tmp_path}"], "is a directory, not a file"),
      (["--methods=nosuch", out], "unknown token-reduction method 'nosuch'"),
      (["--models=deit_smal", out], "unknown model 'deit_smal'"),
      (["--batch_sizes=0", out], "--batch_sizes: 0 must be >= 1"),
      (["--threads=0", out], "--threads must be >= 1"),
      (["--calibration_schedules=3", out], r"--calibration_schedules must be >= 4 \(one per "
                                           r"reduction term of the latency model\), got 3"),
      (["--accuracy_floor=1.5", out], r"--accuracy_floor must be in \(0, 1\]"),
      (["--min_run_time=-1", out], r"^--min_run_time must be > 0 and finite, got -1\.0$"),
      (["--models=", out], r"--models must name each entry once, got \[\]"),
      (["--methods=pomt,pomt", out], "--methods must name each entry once"),
      (["--methods=pomt,POMT", out], "--methods must name each entry once"),   # one method
      (["--batch_sizes=1000000000000", out], "^--batch_sizes=1000000000000 cannot fit in memory"),
      ([f"--out={tmp_path}/p.json/"], "ends in '/': that names a directory, not a file"),
      (["--batch_sizes=", out], "--batch_sizes is empty"),        # ran with batch 1
      (["--models=test_tiny_vit", "--accuracy_floor=0.5", out],
       "--accuracy_floor applies to vit_digits"),                  # written nowhere
      ([f"--compile_cache_dir={__file__}", out], "is a regular file, not a directory"),
      # more schedules than --quick's grid holds: refused after the block profile and the
      # calibration had been measured
      (["--quick", "--num_schedules=200", out], r"^--num_schedules=200: could only draw \d+ of "
                                                r"200 distinct schedules on this grid besides "
                                                r"the 5 calibration ones \(vit_digits, pomt\)$"),
      (["--quick", "--methods=tome", "--calibration_schedules=200", out],
       r"^--calibration_schedules=200: could only draw \d+ of 200 .* \(vit_digits, tome\)$"),
      # a model too small for --quick's grid: named, not blamed on --calibration_schedules
      (["--quick", "--models=test_tiny_vit", out],
       r"^test_tiny_vit has 17 tokens: the benchmark's token grid \(--quick: every 16th count\) "
       r"holds none below the full count; choose a larger model or drop --quick$")],
      tmp_path)


def test_accuracy_combination_conditional_model_by_hand():
  import numpy as np  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  from benchmarks import accuracy_combination as ac  # pylint: disable=g-import-not-at-top
  from vitprune import solve  # pylint: disable=g-import-not-at-top
  from vitprune.registry import get_config  # pylint: disable=g-import-not-at-top
  from vitprune.schedule import Schedule  # pylint: disable=g-import-not-at-top
  cfg = get_config("vit_digits")                    # N = 65, depth 6
  ns = np.array([17, 33, 49, 57, 65])
  sens = np.array([[0.50, 0.80, 0.90, 0.95, 1.0], [0.70, 0.90, 0.95, 0.99, 1.0],
                   [0.80, 0.95, 1.0, 1.0, 1.0], [0.90, 1.0, 1.0, 1.0, 1.0],
                   [0.97, 0.99, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
  model = solve.make_cost_model(ns, ns.astype(float), sens, 1.0, depth=6, num_tokens=65)
  base = (0, 49)
  scheds = ac.conditional_schedules(cfg, base, ns.tolist(), lambda n: n)
  assert scheds[0] == (65, 49, 17, 17, 17, 17, 17) and scheds[1] == (65, 49, 33, 33, 33, 33, 33)
  assert scheds[-1] == (65, 49, 49, 49, 49, 49, 33) and len(scheds) == 5 * 2
  # A method that removes at most 20 tokens per block cannot go from 49 to 17.
  assert all(c[-1] == 33 for c in ac.conditional_schedules(cfg, base, ns.tolist(),
                                                             lambda n: 20))
  base_sched = (65, 49, 49, 49, 49, 49, 49)
  # Measured: the base 0.88; block 1 -> 33: 0.80, -> 17: 0.60; block 4 -> 33: 0.86, -> 17:
  # 0.83; block 5 -> 33: 0.85, -> 17: 0.87 (better than at 33: the envelope keeps the drop at
  # 17 >= the drop at 33).
  meas = {c: 0.88 for c in scheds}
  meas.update({scheds[1]: 0.80, scheds[0]: 0.60, scheds[7]: 0.86, scheds[6]: 0.83,
               scheds[9]: 0.85, scheds[8]: 0.87})
  rows = ac.conditional_rows(cfg, base, [base_sched] + scheds,
                             [0.88] + [meas[c] for c in scheds])
  assert rows[1] == pytest.approx({33: 0.08, 17: 0.28, 49: 0.0})
  assert rows[4] == pytest.approx({33: 0.02, 17: 0.05, 49: 0.0})
  assert rows[5] == pytest.approx({33: 0.03, 17: 0.03, 49: 0.0})
  # Block 0 -> 49 (single-layer drop 0.10), block 1 49 -> 33 (conditional 0.08), block 4
  # 33 -> 17 (conditional 0.05 - 0.02; the single-layer increment would be 0.03 - 0.01).
  c = (65, 49, 33, 33, 33, 17, 17)
  assert ac.conditional_drop(model, base, rows, c) == pytest.approx(0.10 + 0.08 + 0.03)
  assert solve.predict_schedule(model, c)[1] == pytest.approx(
      1.0 - (0.10 + (0.10 - 0.05) + (0.03 - 0.01)))
  # Without an earlier reduction block 1 is charged its single-layer drop (0.10 at 33); after a
  # first reduction to 57 > M the conditional rows do not apply: single-layer increments
  # (block 0 -> 57: 0.05, block 1 57 -> 33: 0.10 - 0.01).
  assert ac.conditional_drop(model, base, rows, (65, 65, 33, 33, 33, 33, 33)) == pytest.approx(
      0.10)
  assert ac.conditional_drop(model, base, rows, (65, 57, 33, 33, 33, 33, 33)) == pytest.approx(
      0.05 + 0.09)
  assert len(Schedule((65, 57, 33, 33, 33, 17, 17)).reduction_layers) == 3
  e = ac.errors([0.9, 0.5], [0.95, 0.45], 1.0)
  assert e["all"] == pytest.approx({"count": 2, "mean": 5.0, "max": 5.0, "mean_signed": 0.0})
  assert e["drop_lt_10"] == pytest.approx({"count": 1, "mean": 5.0, "max": 5.0,
                                           "mean_signed": -5.0})
  for bad, msg in (("x", "is not BLOCK:COUNT"), ("5:49", "block 5 must be in 0..4"),
                   ("0:65", "count 65 must be in 2..64")):
    with pytest.raises(ValueError, match=msg):
      ac.parse_conditional(bad, cfg)


def test_accuracy_combination_pairwise_model_by_hand():
  import numpy as np  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  from benchmarks import accuracy_combination as ac  # pylint: disable=g-import-not-at-top
  from vitprune import solve  # pylint: disable=g-import-not-at-top
  from vitprune.registry import get_config  # pylint: disable=g-import-not-at-top
  cfg = get_config("vit_digits")                    # N = 65, depth 6
  ns = [17, 33, 49, 65]
  assert ac.parse_pairwise("", ns) is None
  assert ac.parse_pairwise("49,33,49:8", ns) == ((33, 49), 8)
  for bad, msg in (("x", "is not COUNT"), ("49", "is not COUNT"), ("49:x", "is not COUNT"),
                   (":8", "is not COUNT"), ("49:0", "step 0 must be >= 1"),
                   ("41:8", "first-cut count 41 must be a count of the grid"),
                   ("65:8", "first-cut count 65"), ("17:8", "first-cut count 17")):
    with pytest.raises(ValueError, match=msg):
      ac.parse_pairwise(bad, ns)
  # First cut to 33 or 49 at every block that has a later one, second to every 16th count
  # below it and 17 (the fewest); a method removing at most 20 tokens per block reaches neither
  # 17 from 49 nor 33 from 65.
  pairs = ac.pair_schedules(cfg, ns, (33, 49), 16, lambda n: n)
  assert len(pairs) == 15 * (1 + 2) and pairs[0] == (65, 33, 17, 17, 17, 17, 17)
  assert pairs[1:3] == [(65, 49, 33, 33, 33, 33, 33), (65, 49, 17, 17, 17, 17, 17)]
  assert ac.pair_schedules(cfg, ns, (33, 49), 16, lambda n: 20) == [
      s for s in pairs if s[-1] == 33 and 49 in s]
  # Margins of 2 examples: block l reducing to ns[k] alone moves them by (l + 1) * (k - 3) / 10.
  ref = np.array([0.5, 0.3])
  single = np.array([[ref + (l + 1) * (k - 3) / 10 for k in range(3)] for l in range(6)])
  table = solve.MarginTable.build(ns, ref, single)
  a_33 = (65, 49, 49, 33, 33, 33, 33)           # block 0 -> 49, block 2 -> 33
  a_17 = (65, 49, 49, 17, 17, 17, 17)
  plain = solve.per_image_margins(table, [a_33, a_17])
  np.testing.assert_allclose(plain, [ref - 0.4, ref - 0.7])    # block 2: 49 -> 33, -> 17
  b_17 = (65, 33, 33, 17, 17, 17, 17)           # block 0 -> 33, block 2 -> 17
  pm = ac.PairInteractions(table, {a_33: plain[0] + [1.0, -2.0], a_17: plain[1] + [3.0, 0.0],
                                   b_17: solve.per_image_margins(table, [b_17])[0] + [2.0, 2.0]})
  # By the tokens the second cut removes: from 49, 16 -> (1, -2), 32 -> (3, 0); from 33,
  # 16 -> (2, 2).
  assert pm.at(0, 49, 2, 33) == pytest.approx([1.0, -2.0])
  assert pm.at(0, 49, 2, 17) == pytest.approx([3.0, 0.0])
  assert pm.at(0, 49, 2, 41) == pytest.approx([0.5, -1.0])   # removes 8: half way to 0
  assert pm.at(0, 49, 2, 9) == pytest.approx([3.0, 0.0])     # removes 40: clamped
  assert pm.at(0, 57, 2, 33) == pytest.approx([1.0, -0.5])   # 49's (2, -1) half way to 0 at N
  assert pm.at(0, 17, 2, 5) == pytest.approx([1.5, 1.5])     # below 33: its row, 12 removed
  # Between two measured first counts, by the tokens removed: a 1-token cut is near 0 (it
  # took half of 49's row at 33 - 1 = 32 removed, 8 tokens more than the cut).
  assert pm.at(0, 41, 2, 33) == pytest.approx([0.75, 0.0])   # (1, 1) and (0.5, -1)
  assert pm.at(0, 41, 2, 40) == pytest.approx([0.09375, 0.0])
  assert pm.at(1, 49, 2, 33) == pytest.approx([0.0, 0.0])    # not measured: none
  # The measured schedules predict themselves; one cut, or none, is the per-image model.
  meas = [a_33, a_17]
  assert pm.accuracy(meas) == pytest.approx(
      [((plain[0] + [1.0, -2.0]) > 0).mean(), ((plain[1] + [3.0, 0.0]) > 0).mean()])
  one = [(65, 49, 49, 49, 49, 49, 49), (65,) * 7, (65, 65, 65, 17, 17, 17, 17)]
  assert pm.accuracy(one) == pytest.approx(solve.per_image_accuracy(table, one))
  # Three cuts: each consecutive pair's interaction (block 2 -> 33 then 4 -> 17: not measured).
  three = (65, 49, 49, 33, 33, 17, 17)
  m = solve.per_image_margins(table, [three])[0] + [1.0, -2.0]
  assert pm.accuracy([three])[0] == pytest.approx((m > 0).mean())
  assert pm.accuracy([three] * 5000).tolist() == [pm.accuracy([three])[0]] * 5000  # chunks
  assert pm.accuracy([]).shape == (0,)
  with pytest.raises(TypeError, match="schedule count must be an int"):
    pm.accuracy([(65, 49.7, 49, 33, 33, 17, 17)])


def test_accuracy_combination_pairwise_model_matches_a_slow_reference():
  """The vectorised scoring (interactions grouped by (previous cut, this cut) per block, in
  chunks) against a per-schedule sum over consecutive cuts, on random margins: interactions
  measured at every block pair, schedules of 0 to 5 cuts."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from benchmarks import accuracy_combination as ac  # pylint: disable=g-import-not-at-top
  from vitprune import solve  # pylint: disable=g-import-not-at-top
  from vitprune.registry import get_config  # pylint: disable=g-import-not-at-top
  cfg = get_config("vit_digits")                    # N = 65, depth 6
  rng = np.random.default_rng(0)
  ns, m = [5, 17, 33, 49, 65], 50
  ref = rng.normal(1.0, 1.0, m)
  table = solve.MarginTable.build(ns, ref, ref + rng.normal(0, 0.7, (6, 4, m)))
  pairs = ac.pair_schedules(cfg, ns, (17, 33, 49), 16, lambda n: n)
  pm = ac.PairInteractions(table, {c: rng.normal(0.5, 1.0, m) for c in pairs})
  scheds = []
  while len(scheds) < 300:
    c = [65]
    for _ in range(6):
      c.append(int(rng.choice([n for n in ns if n <= c[-1]])) if rng.random() < 0.4 else c[-1])
    scheds.append(tuple(c))

  def slow(c):
    marg = solve.per_image_margins(table, [c])[0]
    cuts = [(l, c[l + 1]) for l in range(6) if c[l + 1] < c[l]]
    for (i, a), (j, b) in zip(cuts, cuts[1:]):
      marg = marg + pm.at(i, a, j, b)
    return (marg > 0).mean()

  assert max(len([l for l in range(6) if c[l + 1] < c[l]]) for c in scheds) >= 4
  np.testing.assert_array_equal(pm.accuracy(scheds, chunk=7), [slow(c) for c in scheds])


def test_accuracy_combination_quick(tmp_path, capsys):
  import json  # pylint: disable=g-import-not-at-top
  import math  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  from benchmarks import accuracy_combination as ac  # pylint: disable=g-import-not-at-top
  from experiments import common  # pylint: disable=g-import-not-at-top
  from vitprune.schedule import Schedule  # pylint: disable=g-import-not-at-top
  out = tmp_path / "acc.json"
  res = ac.main(common.parse(ac.define_flags, ["--quick", "--conditional=3:41",
                                                "--num_random=2", "--pairwise=41:8",
                                                f"--out={out}"]))
  text = capsys.readouterr().out
  assert "| frontier | incremental |" in text and "| random | conditional |" in text
  assert json.loads(out.read_text())["families"].keys() == {"random", "frontier",
                                                            "per-image frontier",
                                                            "cautious frontier",
                                                            "pairwise frontier"}
  assert "| per-image frontier | per-image |" in text and "| pairwise frontier | pairwise |" in text
  # Quick grid 65, 41, 17: a first cut to 41 at 5 blocks, then one to 17 at each later block.
  assert res["pairwise"] == {"firsts": [41], "step": 8, "schedules": 15}
  assert res["method"] == "pomt" and res["method_options"] == {}     # (POMT has none)
  for name, fam in res["families"].items():
    assert set(fam["errors"]) == {"incremental", "additive", "per-image", "cautious",
                                  "pairwise"} | (
        set() if name.endswith(" frontier") else {"conditional"})
    for s in fam["schedules"]:
      assert 0 <= s["measured"] <= 1 and s["counts"][0] == 65
      # the cautious model: the least of the three combinations, schedule by schedule
      assert s["cautious"] == min(s["incremental"], s["additive"], s["per-image"])
  # The per-image model scored every schedule of the quick grid (non-increasing choices of the
  # grid's counts over 6 blocks, POMT reducing anywhere) and spread its own frontier's 3
  # schedules from the cheapest (block 0 to the fewest tokens) up, accuracy rising.
  own = res["families"]["per-image frontier"]["schedules"]
  assert res["per_image_enumerated"] == math.comb(len(res["grid"]) + 5, 6)
  assert len(own) == 3 and own[0]["counts"] == [65] + [min(res["grid"])] * 6
  assert own[0]["per-image"] < own[1]["per-image"] < own[2]["per-image"]
  cautious = res["families"]["cautious frontier"]["schedules"]
  assert len(cautious) == 3 and cautious[0]["cautious"] < cautious[-1]["cautious"]
  rand = res["families"]["random"]["schedules"]
  # --num_random=2 given: --quick's 3 is not imposed
  assert len(rand) == 2 and all(len(Schedule(s["counts"]).reduction_layers) >= 2 for s in rand)
  # The base of the conditional rows is the table's own point S[3, 41]: the same graph on the
  # same images measures exactly the same (checks how the measurements are split).
  assert res["conditional"]["base_accuracy"] == res["sensitivity"]["3"]["41"]
  assert set(res["conditional"]["rows"]) == {"4", "5"}
  # The refinement: round 0 measures the uncorrected frontier (the DP's own, so the frontier
  # family's schedules are among them); later rounds fit on what is measured.
  ref = res["refinement"]
  assert ref["rounds"][0]["fitted_on"] == 0 and len(ref["rounds"]) <= 3
  # (a single reduction on a frontier is the sensitivity table's own point: not scored)
  first_round = ref["rounds"][0]
  assert first_round["errors"]["all"]["count"] + first_round["unscored"] == first_round["frontier"]
  assert ref["measured"] == sum(r["errors"]["all"]["count"] + r["unscored"] for r in ref["rounds"])
  assert all(solve.is_multi_reduction(s["counts"]) for r in ref["rounds"] for s in r["schedules"])
  assert (f"Not scored: {sum(r['unscored'] for r in ref['rounds'])} single reduction"
          in text) == any(r["unscored"] for r in ref["rounds"])
  assert [row["floor"] for row in ref["floors"]] == [0.95, 0.96, 0.97]
  for row in ref["floors"]:
    for side in ("before", "after"):
      if row[side]:
        assert row[side]["measured"] >= row["floor"] and row[side]["counts"][0] == 65
    if row["uncorrected_choice"]:    # the uncorrected model's own pick, as predicted/measured
      assert row["uncorrected_choice"]["predicted"] >= row["floor"]
  assert "| round | frontier | fitted on |" in text
  # Round 0's anchored predictions have no measured schedule to start from: the per-image
  # model's, on the same schedules (the frontier family holds those it spread over).
  per_image = {tuple(s["counts"]): s["per-image"]
               for s in res["families"]["frontier"]["schedules"]
               if solve.is_multi_reduction(s["counts"])}      # (the others are not scored)
  first = {tuple(s["counts"]): s["anchored"] for s in ref["rounds"][0]["schedules"]}
  assert per_image and set(per_image) <= set(first)
  for c, v in per_image.items():
    assert first[c] == pytest.approx(v, abs=1e-12)
  for r in ref["rounds"]:
    assert r["anchored_errors"]["all"]["count"] == len(r["schedules"]) == \
        r["errors"]["all"]["count"]
  assert set(ref["random_held_out"]) == {"incremental", "refined", "anchored"}
  assert "| anchored |" in text
  later = [s for r in ref["rounds"] if r["round"] >= 1 for s in r["schedules"]]
  pooled = ref["pooled"]["from_round_1"]["anchored"]["all"]
  assert pooled["count"] == len(later) and (not later or "| from round 1 on, pooled |" in text)
  with pytest.raises(ValueError, match="tome keeps at least 33 of 65 tokens in one block, so "
                                       "block 0 cannot reduce to 21"):
    ac.main(common.parse(ac.define_flags, ["--method=tome", "--conditional=0:21",
                                           f"--out={out}"]))


def test_accuracy_combination_pools_later_rounds_against_the_target_by_hand():
  """Rounds 1+ and 2+ pooled, each model's errors in points, and the 0.5 / 2-point verdict:
  a mean of exactly 0.5 meets it, a max above 2 misses it, no schedule says nothing."""
  from benchmarks import accuracy_combination as ac  # pylint: disable=g-import-not-at-top

  def sched(measured, corrected, anchored):
    return {"counts": [65] * 7, "measured": measured, "corrected": corrected,
            "anchored": anchored}

  rounds = [{"round": 0, "schedules": [sched(0.90, 0.99, 0.99)]},       # never pooled
            {"round": 1, "schedules": [sched(0.95, 0.98, 0.955)]},      # 3 / 0.5 points
            {"round": 2, "schedules": [sched(0.96, 0.96, 0.955), sched(0.50, 0.50, 0.525)]}]
  got = ac.pooled_rounds(rounds, full=0.97)
  a1, a2 = got["from_round_1"]["anchored"], got["from_round_2"]["anchored"]
  assert a1["all"]["count"] == 3 and a2["all"]["count"] == 2
  assert abs(a1["all"]["mean"] - 3.5 / 3) < 1e-9 and abs(a1["all"]["max"] - 2.5) < 1e-9
  assert a1["all"]["meets_target"] is False            # max 2.5 > 2
  assert a1["drop_lt_10"]["count"] == 2 and abs(a1["drop_lt_10"]["mean"] - 0.5) < 1e-9
  assert a1["drop_lt_10"]["meets_target"] is True      # exactly 0.5 / 0.5
  c1 = got["from_round_1"]["corrected"]["drop_lt_10"]
  assert abs(c1["mean"] - 1.5) < 1e-9 and c1["meets_target"] is False
  assert got["from_round_2"]["corrected"]["drop_lt_10"]["meets_target"] is True   # 0 points
  assert ac.pooled_rounds(rounds[:1], 0.97)["from_round_1"]["anchored"]["all"] == {
      "count": 0, "meets_target": None}
  assert ac._verdict(a1["all"]) == " (target missed)" and ac._verdict({"meets_target": None}) == ""


def test_accuracy_combination_measures_with_the_options_given(tmp_path, monkeypatch):
  """--method_opts reach the reducer every schedule is measured with, and the JSON names every
  option (defaults too) and the flag (a mutant measuring with the defaults survived)."""
  from benchmarks import accuracy_combination as ac  # pylint: disable=g-import-not-at-top
  from experiments import common  # pylint: disable=g-import-not-at-top
  from vitprune.reduce.methods import make_reducer  # pylint: disable=g-import-not-at-top
  seen, real = [], ac.estimate_lib.schedule_evaluator

  def spy(cfg, params, data, reducer, **kw):
    seen.append(reducer)
    return real(cfg, params, data, reducer, **kw)

  monkeypatch.setattr(ac.estimate_lib, "schedule_evaluator", spy)
  res = ac.main(common.parse(ac.define_flags, [
      "--quick", "--method=random", "--method_opts=nested=false", "--num_random=2",
      "--refine_rounds=0", "--conditional=", "--enumerate_limit=0",
      f"--out={tmp_path / 'a.json'}"]))
  assert seen == [make_reducer("random", seed=0, nested=False)]
  assert res["method_options"] == {"seed": 0, "nested": False}     # (the seed: a default)
  assert "--method_opts=nested=false" in res["command"]


def test_accuracy_combination_refuses_bad_floors_and_seeds_before_measuring(tmp_path):
  from benchmarks import accuracy_combination as ac  # pylint: disable=g-import-not-at-top
  out = f"--out={tmp_path / 'a.json'}"
  _assert_refused(ac, [
      (["--quick", "--floors=abc", out], "--floors: 'abc' is not a number"),
      (["--quick", "--floors=0.95,1.5", out], r"--floors: 1.5 is not an accuracy in \(0, 1\]"),
      (["--quick", "--floors=-1", out], "--floors: -1.0 is not an accuracy"),
      (["--quick", "--floors=0.95,0.95", out], "--floors gives 0.95 twice"),
      (["--quick", "--floors=", out], r"--floors is empty \(leave it out for the default"),
      (["--quick", "--floors= , ", out], r"^--floors=' , ' has an empty entry$"),
      (["--quick", "--floors=0.9,,0.8", out], "has an empty entry"),    # (dropped unsaid)
      (["--quick", "--floors=0.9,", out], "has an empty entry"),
      (["--quick", "--step=64", out], r"^--step=64 leaves no count below all 65 tokens on the "
                                      "grid: give a smaller --step$"),    # named no --step
      (["--quick", "--refine_rounds=0", "--floors=0.9", out],
       "^--floors sets the refinement's floor table, and --refine_rounds=0 runs no refinement$"),
      # refused after the sensitivity table had been measured ("drew only 40 of 100000")
      (["--quick", "--num_random=10000", out], r"^--num_random=10000: only \d+ of the \d+ "
                                                "distinct random schedules drawn on this grid "
                                                "have 2 or more reductions; ask for fewer$"),
      # printed "conditional" rows that were the incremental numbers, measuring none
      (["--quick", "--conditional=0:10", out], r"^--conditional=0:10: no count of the grid "
       r"\[65, 41, 17\] below 10 is reachable from it in one later block"),
      (["--quick", "--pairwise=49:8", out], r"^--pairwise: first-cut count 49 must be a count "
                                            r"of the grid between 17 and 65 \(exclusive\)"),
      (["--quick", "--pairwise=41", out], r"^--pairwise: '41' is not COUNT,...:STEP"),
      (["--quick", "--method_opts=seed", out], r"^--method_opts entry 'seed' is not key=value$"),
      (["--quick", "--method_opts=sigma=1", out],
       r"^method 'pomt' accepts no options, got \['sigma'\]$"),
      (["--quick", "--method=random", "--method_opts=nested=0", out],
       r"^method 'random' option nested must be bool, got 0$"),
  ], tmp_path)
  from experiments import common  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  with pytest.raises(Exception, match=r"-1 is not an integer in the range \[0, 4294967295\]"):
    common.parse(ac.define_flags, ["--seed=-1", out])


def test_every_benchmark_refuses_to_replace_a_file_it_did_not_write(tmp_path):
  """--out replaced any file (a user's notes.txt was overwritten by calibration_size's JSON):
  results are marked with their format, and only a file of that format is replaced."""
  import importlib  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  from experiments import common  # pylint: disable=g-import-not-at-top
  notes = tmp_path / "notes.txt"
  notes.write_text("my notes")
  for name in ("accuracy_combination", "calibration_size", "edge_speed", "floor_study",
               "holdout_study", "predictor_accuracy"):
    script = importlib.import_module(f"benchmarks.{name}")
    with pytest.raises(common.INPUT_ERRORS, match=f"refusing to replace {notes}: it is a "
                       "regular file that is not a vitprune-"):
      script.main(common.parse(script.define_flags, [f"--out={notes}"]))
    assert notes.read_text() == "my notes"
    other = tmp_path / f"{name}.json"      # a result of another script is not replaced either
    other.write_text('{"format": "vitprune-other"}')
    with pytest.raises(common.INPUT_ERRORS, match="refusing to replace"):
      script.main(common.parse(script.define_flags, [f"--out={other}"]))


def test_floor_study_pools_the_refinement_errors_by_hand():
  from benchmarks import floor_study  # pylint: disable=g-import-not-at-top

  def err(n, mean, top):
    return {"num_schedules": n, "mean_abs_points": mean, "max_abs_points": top}

  rows = [{"seed": 0, "accuracy_refinement": {"rounds": [
              dict(err(4, 3.0, 9.0), anchored=err(4, 2.0, 5.0)),
              dict(err(2, 1.0, 1.5), anchored=err(2, 0.5, 0.8)),
              dict(err(6, 0.5, 2.5), anchored=err(6, 0.3, 1.1)),
              dict(err(0, 0.0, 0.0), anchored=err(0, 0.0, 0.0))]}},
          {"seed": 1, "accuracy_refinement": None},                # not refined: left out
          {"seed": 2, "accuracy_refinement": {"rounds": [err(2, 1.0, 2.0)]}}]   # no margins
  s = floor_study.refinement_summary(rows)
  assert [r["seed"] for r in s["seeds"]] == [0, 2]
  assert s["seeds"][0]["later"] == {"n": 8, "mean": (2 * 1.0 + 6 * 0.5) / 8, "max": 2.5}
  assert s["seeds"][0]["later_anchored"] == {"n": 8, "mean": (2 * 0.5 + 6 * 0.3) / 8,
                                             "max": 1.1}
  assert s["seeds"][1]["round0_anchored"] == {"n": 0, "mean": None, "max": None}
  assert s["pooled"]["round0"] == {"n": 6, "mean": (4 * 3.0 + 2 * 1.0) / 6, "max": 9.0}
  assert s["pooled"]["round0_anchored"]["n"] == 4
  text = floor_study.refinement_table(s)
  assert "| 0 | 3.00 / 9.00 (4) | 2.00 / 5.00 (4) | 0.62 / 2.50 (8) | 0.35 / 1.10 (8) |" in text
  assert "| 2 | 1.00 / 2.00 (2) | - | - | - |" in text and "| all |" in text
  assert floor_study.refinement_summary([{"seed": 0, "accuracy_refinement": None}]) == {}


def test_floor_study_records_a_seed_whose_floor_is_not_met(tmp_path, monkeypatch):
  """A main job refusing a floor nothing met on measurement (FloorNotMetError) is a row of the
  study (meets: NO), not a crash that loses the seeds before it."""
  from benchmarks import floor_study  # pylint: disable=g-import-not-at-top
  from vitprune import solve_loop  # pylint: disable=g-import-not-at-top

  def refuse(f):
    raise solve_loop.FloorNotMetError("accuracy floor 0.99 is not met on measurement: x")

  monkeypatch.setattr(floor_study.profile_cli, "main", refuse)
  row = floor_study.run_seed(3, 0.99, "pomt", [], str(tmp_path))
  assert row["meets_floor"] is False and row["floor_not_met"].startswith("accuracy floor 0.99")
  assert "| 3 | none: accuracy floor 0.99 is not met on measurement: x | - | NO | n/a |" in \
      floor_study.table([row])
  assert floor_study.totals([row])["meets_floor"] == 0
  assert floor_study.totals([row])["overhead_share_median"] is None
  from experiments import common  # pylint: disable=g-import-not-at-top
  rows = floor_study.main(common.parse(floor_study.define_flags, [
      "--seeds=2", "--accuracy_floor=0.99", f"--out={tmp_path / 'f.json'}"]))
  assert [r["seed"] for r in rows] == [0, 1] and (tmp_path / "f.json").exists()
  import json  # pylint: disable=g-import-not-at-top
  from vitprune.profile import runner  # pylint: disable=g-import-not-at-top
  assert json.loads((tmp_path / "f.json").read_text())["machine"] == runner.machine_info()

def test_the_benchmarks_on_the_bundled_weights_check_their_digits_split(tmp_path, monkeypatch):
  """predictor_accuracy and accuracy_combination scored weights/vit_digits on the digits test
  split unchecked: retrained in place with another --split_seed, they would report inflated
  accuracies (every CLI refuses that)."""
  import pytest  # pylint: disable=g-import-not-at-top
  from benchmarks import accuracy_combination  # pylint: disable=g-import-not-at-top
  from benchmarks import predictor_accuracy  # pylint: disable=g-import-not-at-top
  from experiments import common  # pylint: disable=g-import-not-at-top
  checked = []

  def check(source, data):
    checked.append((source, data))
    raise ValueError("trained on another split")

  monkeypatch.setattr(common, "check_digits_split", check)
  for script in (accuracy_combination, predictor_accuracy):
    with pytest.raises(ValueError, match="trained on another split"):
      script.main(common.parse(script.define_flags, ["--quick", f"--out={tmp_path / 'o.json'}"]))
  assert checked == [(common.EMBEDDED_WEIGHTS, "digits")] * 2
  assert list(tmp_path.iterdir()) == []


def test_gpu_report_tabulates_what_the_suite_wrote(tmp_path, capsys):
  """The README's GPU tables from a suite's OUT_DIR: profiles (one row per batch, a combined
  profile's batches not twice), the benchmark table, one device; refusals name the problem."""
  import json  # pylint: disable=g-import-not-at-top
  from benchmarks import gpu_report  # pylint: disable=g-import-not-at-top
  from experiments import benchmark as bench_cli  # pylint: disable=g-import-not-at-top
  from experiments import common  # pylint: disable=g-import-not-at-top
  from experiments import profile as profile_cli  # pylint: disable=g-import-not-at-top
  # (a kept output's mark in the folder's path is not in its files' names: all are reported)
  out = tmp_path / "lease.kept-1" / "gpu"
  fast = ["--model=test_tiny_vit", "--min_run_time=0.005", "--max_retries=0", "--noprogress"]
  with pytest.raises(ValueError, match=f"--dir '{out}' is not a directory"):
    gpu_report.collect(str(out))
  out.mkdir(parents=True)
  with pytest.raises(ValueError, match="holds no profile/.*nothing to report"):
    gpu_report.collect(str(out))
  profile_cli.main(common.parse(profile_cli.define_flags, [
      "--mode=model", "--tokens=17,13,9,5,2", "--batch_size=1,2", f"--out_dir={out}/profile",
      *fast]))
  bench_cli.main(common.parse(bench_cli.define_flags, [
      "--data=none", "--batch_size=1", "--variants=tome-r2=tome:r2",
      f"--out_dir={out}/benchmark/b1",
      *fast[:2], "--noprogress"]))
  capsys.readouterr()
  doc = gpu_report.main(common.parse(gpu_report.define_flags, [
      f"--dir={out}", f"--out={tmp_path / 'r.json'}"]))
  said = capsys.readouterr().out
  assert [(r["batch_size"], r["counts"]) for r in doc["profiles"]] == [(1, 5), (2, 5)]
  assert all(r["tokens_max"] == 17 and r["tokens_min"] == 2 and r["compile_s_max"] > 0
             for r in doc["profiles"])
  assert [r["variant"] for r in doc["benchmark"]] == ["unpruned", "pomt", "tome-r2"]
  assert [r["batch_size"] for r in doc["benchmark"]] == [1, 1, 1]          # numbers, not text
  assert all(r["latency_median_ms"] > 0 and r["accuracy"] is None for r in doc["benchmark"])
  assert said.startswith(f"device: {doc['device']['device_kind']} (cpu), jax ")
  assert said.count("| test_tiny_vit | float32 | ") == 2 and "| tome-r2 | " in said
  assert json.loads((tmp_path / "r.json").read_text())["profiles"] == doc["profiles"]
  # A block profile is named, not read as a 3-count curve; predictor results are checked.
  profile_cli.main(common.parse(profile_cli.define_flags, [
      "--mode=block", "--tokens=17,9,5", f"--out_dir={out}/profile", *fast]))
  os.symlink("..", out / "benchmark" / "loop")     # (walked 40 levels deep: a 2-KB error)
  (out / "benchmark" / ".t.tmp-1.csv").write_text("half,written")   # (hidden: not read)
  doc = gpu_report.collect(str(out))
  assert len(doc["profiles"]) == 2 and doc["skipped"] == [
      "test-tiny-vit_block_b1_float32_cpu.json"]
  assert [r["variant"] for r in doc["benchmark"]] == ["unpruned", "pomt", "tome-r2"]
  (out / "benchmark" / "loop").unlink()
  (out / "benchmark" / ".t.tmp-1.csv").unlink()
  bad = out / "predictor_accuracy_pomt.json"
  for content, message in (("[1]", "expected a JSON object .*got list"),
                           ('{"format": "x", "rows": []}', "is not a benchmarks.predictor_acc"),
                           ('{"format": "vitprune-predictor-accuracy", "version": 1, '
                            '"complete": false, "rows": []}',
                            "does not say which device it measured")):
    bad.write_text(content)
    with pytest.raises(ValueError, match=message):
      gpu_report.collect(str(out))
  bad.write_text(json.dumps({"format": "vitprune-predictor-accuracy", "version": 1,
                             "complete": False, "rows": [],
                             "device": {"device_kind": "NVIDIA H200", "platform": "gpu"}}))
  with pytest.raises(ValueError, match="holds measurements of several devices"):
    gpu_report.collect(str(out))
  bad.unlink()
  # One profile under two names (a copy or a link) was tabulated twice.
  (path,) = [p for p in (out / "profile").glob("*_model_b1-2_*.json")]
  os.symlink(path.name, out / "profile" / "again.json")
  with pytest.raises(ValueError, match=r"holds the same measurements as .* \(a copy or a "
                                       r"link\): report each once"):
    gpu_report.collect(str(out))
  (out / "profile" / "again.json").unlink()
  # Another measurement of the same model, dtype and batch: its row would look like the first.
  (single,) = [p for p in (out / "profile").glob("*_model_b1_*.json")]
  rerun = json.loads(single.read_text())
  rerun["created"] = "2030-01-01T00:00:00+00:00"
  (out / "profile" / "rerun.json").write_text(json.dumps(rerun))
  with pytest.raises(ValueError, match=r"both hold test_tiny_vit float32 batch 1 curves, which "
                                       r"the table cannot tell apart: report one of them"):
    gpu_report.collect(str(out))
  # ... unless a run refused at writing kept it beside (<name>.kept-XXXXXXXX.*): listed, not
  # tabulated (the folder was refused as holding one curve twice).
  (out / "profile" / "rerun.json").rename(out / "profile" / f"{single.stem}.kept-0a1b2c3d.json")
  (table,) = (out / "benchmark").glob("**/*.csv")
  shutil.copy(table, table.with_name(f"{table.stem}.kept-0a1b2c3d.csv"))
  predicted = sorted(out.glob("predictor_accuracy_*.json"))
  for p in predicted:
    shutil.copy(p, p.with_name(f"{p.stem}.kept-0a1b2c3d.json"))
  doc = gpu_report.collect(str(out))
  assert doc["kept_aside"] == sorted(
      [f"profile/{single.stem}.kept-0a1b2c3d.json",
       os.path.relpath(table.with_name(f"{table.stem}.kept-0a1b2c3d.csv"), out)]
      + [f"{p.stem}.kept-0a1b2c3d.json" for p in predicted])
  assert "(kept beside by runs refused at writing, not tabulated: " in gpu_report.to_markdown(doc)
  for p in [*out.glob("profile/*.kept-*"), *out.glob("benchmark/**/*.kept-*"),
            *out.glob("*.kept-*")]:
    p.unlink()
  # Two devices in one report: refused (each table names one device).
  (path,) = [p for p in (out / "profile").glob("*_model_b1_*.json")]
  other = json.loads(path.read_text())
  other["device_kind"] = "NVIDIA H200"
  (out / "profile" / "other.json").write_text(json.dumps(other))
  with pytest.raises(ValueError, match=r"holds measurements of several devices .*NVIDIA H200.*"
                                       "report one device at a time"):
    gpu_report.collect(str(out))


def test_gpu_report_names_the_lone_slow_counts():
  """The profile row's lone counts: its batch size's, of the whole-model curve only, from most
  tokens down; the table's column lists them, '-' for none."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from benchmarks import gpu_report  # pylint: disable=g-import-not-at-top
  from vitprune.profile import records  # pylint: disable=g-import-not-at-top
  from vitprune.registry import get_config  # pylint: disable=g-import-not-at-top
  cfg = get_config("test_tiny_vit")

  def point(component, n, batch, slow):
    med = 1e-2 + 1e-4 * n + (2e-3 if n in slow else 0.0)
    return records.Point(component=component, batch_size=batch, tokens=n, median_s=med,
                         q25_s=med, q75_s=med, num_samples=3, samples_s=(med,) * 3,
                         compile_s=0.5, retries=0)

  points = ([point("model", n, 1, (6, 11)) for n in range(17, 1, -1)]
            + [point("model", n, 2, (8,)) for n in range(17, 1, -1)]
            + [point("block", n, 1, (14,)) for n in range(17, 1, -1)])
  prof = records.analyze(records.Profile(
      model=cfg.name, config=dataclasses.asdict(cfg), device_kind="cpu", platform="cpu",
      jax_version="0.0", jaxlib_version="0.0", dtype="float32", modes=("model", "block"),
      reducer="keep_first", timing={"min_run_time": 0.1}, points=tuple(points),
      created="2025-01-01T00:00:00+00:00"))
  assert {c["n"] for c in prof.lone_counts} == {6, 11, 8, 14}
  rows = gpu_report.profile_rows({"p.json": prof})
  assert [(r["batch_size"], r["lone_counts"]) for r in rows] == [(1, [11, 6]), (2, [8])]
  doc = {"device": {"device_kind": "NVIDIA H200", "platform": "gpu"}, "profiles": rows,
         "benchmark": [], "skipped": [], "predictor_accuracy": []}
  lines = gpu_report.to_markdown(doc).splitlines()
  assert "| none above noise | 0 | 11, 6 | 0.50 / 0.50 / 0.50 |" in lines[-2]
  assert "| none above noise | 0 | 8 | 0.50 / 0.50 / 0.50 |" in lines[-1]
  rows[1]["lone_counts"] = []
  assert "| 0 | - | 0.50" in gpu_report.to_markdown(doc).splitlines()[-1]


def test_gpu_report_orders_the_benchmark_tables_by_batch_size(tmp_path):
  """gpu_suite.sh writes benchmark/b1, b8, b64: read in path order, batch 64 came before 8."""
  from benchmarks import gpu_report  # pylint: disable=g-import-not-at-top
  from vitprune import benchmark as bench  # pylint: disable=g-import-not-at-top
  for batch in (1, 8, 64):
    rows = [{k: "" for k in bench.CSV_COLUMNS} for _ in range(3)]
    for row, (dtype, variant) in zip(rows, (("float32", "unpruned"), ("float32", "pomt"),
                                            ("bfloat16", "unpruned"))):
      row.update(model="deit_small_patch16_224", dtype=dtype, batch_size=batch,
                 variant=variant, latency_median_ms=1.0, device_kind="H200", platform="gpu",
                 schedule="full", latency_iqr_ms=0.1, compile_s=1.0, change_pct=0.0)
    (tmp_path / f"b{batch}").mkdir()
    (tmp_path / f"b{batch}" / "t.csv").write_text(bench.to_csv(rows))
  got = gpu_report.benchmark_rows([str(p) for p in tmp_path.glob("*/t.csv")])
  assert [(r["batch_size"], r["dtype"][0], r["variant"]) for r in got] == [   # dtypes as run
      (b, d, v) for b in (1, 8, 64) for d, v in (("f", "unpruned"), ("f", "pomt"),
                                                ("b", "unpruned"))]
  # pomt's 1.0 ms against the unpruned 1.0 ms, IQRs 0.1 ms: a change the spread swallows.
  said = gpu_report.to_markdown({"device": None, "profiles": [], "benchmark": got,
                                 "skipped": [], "predictor_accuracy": []})
  assert said.count("| full | 1 ± 0.1 | +0.0% (within spread) | 1.00 |") == 3
  assert said.count("| full | 1 ± 0.1 | +0.0% | 1.00 |") == 6
  assert said.rstrip().endswith(bench.SPREAD_LEGEND)


def test_gpu_report_names_a_cut_or_ragged_benchmark_table(tmp_path):
  """Review: a row with cells missing (a file cut mid-write) or extra ended in a traceback
  (AttributeError on None), bytes that are not UTF-8 in an error that did not name the file."""
  from benchmarks import gpu_report  # pylint: disable=g-import-not-at-top
  from vitprune import benchmark as bench  # pylint: disable=g-import-not-at-top
  rows = [{k: "" for k in bench.CSV_COLUMNS} for _ in range(2)]
  for row in rows:
    row.update(model="m", dtype="float32", batch_size=1, variant="unpruned",
               latency_median_ms=1.0, device_kind="cpu", platform="cpu", schedule="full",
               latency_iqr_ms=0.1, compile_s=1.0, change_pct=0.0)
  rows[1]["variant"] = "pomt"
  text = bench.to_csv(rows)
  path = tmp_path / "t.csv"
  n = len(bench.CSV_COLUMNS)
  left = text[:-30].splitlines()[-1].count(",") + 1      # the cells of the cut row
  assert 1 < left < n
  for content, message in (
      (text[:-30], rf"t.csv, line 3: {left} cells, the header has {n} \(a file cut"),
      (text.rstrip("\n") + ",x,y\n", rf"t.csv, line 3: {n + 2} cells, the header has {n}"),
      (text.encode() + b"m,\xff\n", r"t.csv: not a readable CSV table \('utf-8' codec")):
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(ValueError, match=message):
      gpu_report.benchmark_rows([str(path)])
    assert bench.replaced_table_note(str(path), rows) is None     # a note never fails a run
  path.write_text(text)
  assert len(gpu_report.benchmark_rows([str(path)])) == 2
  # A table re-saved with a byte-order mark was not ours ("not a benchmark table of this
  # version"), while the profile's CSV reader took one: both take it.
  path.write_bytes(b"\xef\xbb\xbf" + text.encode())
  assert gpu_report.benchmark_rows([str(path)]) == gpu_report.benchmark_rows(
      [str(tmp_path / "t.csv")]) and len(bench.read_table_rows(str(path))) == 2


def test_gpu_report_checks_what_it_tabulates(tmp_path):
  """Fault probe: an empty number cell ended in a traceback, NaN and negative latencies and
  errors were tabulated, a predictor row that is no row gave a traceback or 'error: model', a
  FIFO named t.csv hung the report, a header-only table made an empty report, and --out inside
  --dir broke every later report."""
  from benchmarks import gpu_report  # pylint: disable=g-import-not-at-top
  from experiments import common  # pylint: disable=g-import-not-at-top
  from vitprune import benchmark as bench  # pylint: disable=g-import-not-at-top
  row = {k: "" for k in bench.CSV_COLUMNS}
  row.update(model="m", device_kind="cpu", platform="cpu", batch_size=1, dtype="float32",
             variant="unpruned", schedule="full", latency_median_ms=1.0, latency_iqr_ms=0.1,
             compile_s=0.5, change_pct=0.0)
  path = tmp_path / "t.csv"
  path.write_text(bench.to_csv([row]))
  assert gpu_report.benchmark_rows([str(path)])[0]["latency_median_ms"] == 1.0
  for k, v, message in (("latency_median_ms", "", r"latency_median_ms None is not a latency"),
                        ("latency_median_ms", "nan", r"latency_median_ms nan is not a latency"),
                        ("latency_median_ms", -5, r"latency_median_ms -5 is not a latency > 0"),
                        ("latency_iqr_ms", -0.3, r"latency_iqr_ms -0.3 is not a spread >= 0"),
                        ("compile_s", "inf", r"compile_s inf is not a compile time"),
                        ("change_pct", -150, r"change_pct -150 is not a change >= -100"),
                        ("accuracy", 1.5, r"accuracy 1.5 is not a fraction in \[0, 1\]"),
                        ("batch_size", 0, r"batch_size 0 is not a batch size >= 1"),
                        ("model", "", r"model '' is not a name")):
    path.write_text(bench.to_csv([{**row, k: v}]))
    with pytest.raises(ValueError, match=rf"t.csv, line 2: {message}"):
      gpu_report.benchmark_rows([str(path)])
  # A row that disagrees with itself or its table (edited, or a table without its baseline).
  pomt = {**row, "variant": "pomt", "latency_median_ms": 0.75, "change_pct": -25.0,
          "latency_q25_ms": 0.7, "latency_q75_ms": 0.8, "latency_iqr_ms": 0.1}
  path.write_text(bench.to_csv([row, pomt]))
  assert [r["change_pct"] for r in gpu_report.benchmark_rows([str(path)])] == [0, -25.0]
  for rows, message in (
      ([row, {**pomt, "change_pct": -60.0}], r"line 3: change_pct -60 is not -25.0000, its "
                                             r"latency against the unpruned row's \(edited\?\)"),
      ([pomt], r"line 2: no 'unpruned' row of batch 1 float32 above it: its change_pct has no "
               "baseline"),
      ([row, pomt, pomt], r"line 4: a second 'pomt' row of batch 1 float32 \(the table would "
                          r"show it twice\)"),
      ([row, {**pomt, "latency_iqr_ms": 50}], r"line 3: latency_iqr_ms 50 is not latency_q75_ms"
                                              r" - latency_q25_ms \(0.8 - 0.7\)"),
      ([row, {**pomt, "latency_q25_ms": 2.25, "latency_q75_ms": 2.35}],   # (a probe: printed)
       r"line 3: latency_median_ms 0.75 is not between latency_q25_ms 2.25 and latency_q75_ms "
       r"2.35 \(edited\?\)"),
      ([row, {**pomt, "latency_q25_ms": 0.5, "latency_q75_ms": 0.6}],
       r"line 3: latency_median_ms 0.75 is not between")):
    path.write_text(bench.to_csv(rows))
    with pytest.raises(ValueError, match=rf"t.csv, {message}"):
      gpu_report.benchmark_rows([str(path)])
  path.write_text(bench.to_csv([row]).splitlines()[0] + "\n")
  with pytest.raises(ValueError, match=r"t.csv holds no rows \(a run cut before its first"):
    gpu_report.benchmark_rows([str(path)])
  path.unlink()
  os.mkfifo(path)
  with pytest.raises(ValueError, match=r"t.csv is not a regular file \(a device, FIFO"):
    gpu_report.benchmark_rows([str(path)])
  # Predictor rows: each can be tabulated, its errors are shares >= 0.
  good = {"model": "m", "batch_size": 1, "method": "pomt", "num_heldout": 3,
          "heldout": {"calibrated": {"median": 0.1, "p90": 0.2, "within10": 0.5}},
          "calibration_s": 1.0, "profile_s": 2.0, "calibration_share": 0.5}
  gpu_report.check_predictor_rows("p.json", [good])
  # Errors 0.25, 0.5 and 0 of 1 ms: median 0.25, p90 0.45, 1 of 3 within 10 %.
  scheds = [{"counts": [1], "measured_s": 1e-3, "calibrated_s": c} for c in (1.25e-3, 0.5e-3,
                                                                            1e-3)]
  listed = {**good, "schedules": scheds, "heldout": {"calibrated": {
      "median": 0.25, "p90": 0.45, "within10": 1 / 3}}}
  gpu_report.check_predictor_rows("p.json", [listed])
  frontier = {"latency": {"calibrated": {"median": 0.1, "p90": 0.2, "within10": 0.5}},
              "accuracy_error_points": {"mean": 0.5, "max": 1.0}}
  choice = {"floor": 0.95, "measured_accuracy": 0.96, "meets_floor": True}
  gpu_report.check_predictor_rows("p.json", [{**good, "frontier": frontier, "choice": choice}])
  counted = {**good, "heldout": {"calibrated": {**good["heldout"]["calibrated"], "count": 3}}}
  gpu_report.check_predictor_rows("p.json", [counted])          # (relative_errors says it)
  for bad, message in (
      (1, r"row 0 is not a predictor_accuracy row \(AttributeError"),
      ({}, r"row 0 is not a predictor_accuracy row \(KeyError: 'model'\)"),
      ({**good, "heldout": {"calibrated": {"median": -3, "p90": 0.2, "within10": 0.5}}},
       r"row 0: calibrated median -3 is not an error >= 0"),
      ({**good, "heldout": {"calibrated": {"median": 0.1, "p90": float("inf"),
                                           "within10": 0.5}}},
       r"row 0: calibrated p90 inf is not an error >= 0"),
      ({**good, "heldout": {"calibrated": {"median": 0.1, "p90": 0.2, "within10": 7}}},
       r"row 0: calibrated within10 7 is not a share in \[0, 1\]"),
      ({**good, "calibration_s": -1.0}, r"row 0: calibration_s -1.0 is not a number >= 0"),
      ({**good, "heldout": {**good["heldout"], "bogus": 3}},      # (a traceback: never read
       r"row 0: bogus 3 is not an error summary"),                 # by the table)
      ({**good, "heldout": {**good["heldout"], "anchored": {**good["heldout"]["calibrated"],
                                                             "speed_ratio": 0}}},
       r"row 0: anchored speed_ratio 0 is not a ratio > 0"),
      # (a probe's edits: a traceback, or printed as if true)
      ({**good, "batch_size": [1]}, r"row 0: batch_size \[1\] is not an integer >= 1"),
      ({**good, "model": {"a": 1}}, r"row 0: model \{'a': 1\} is not a name"),
      ({**good, "num_heldout": -3}, r"row 0: num_heldout -3 is not an integer >= 0"),
      ({**good, "calibration_share": 3.0}, r"row 0: calibration_share 3.0 is not "
                                           r"calibration_s / profile_s"),
      ({**good, "frontier": frontier, "choice": {**choice, "measured_accuracy": 0.5}},
       r"row 0: choice: meets_floor True but measured accuracy 0.5 and floor 0.95"),
      ({**good, "frontier": frontier, "choice": {**choice, "measured_accuracy": 7}},
       r"row 0: choice: measured accuracy 7 and floor 0.95 must be in \[0, 1\]"),
      ({**good, "frontier": {**frontier, "accuracy_error_points": {"mean": 250, "max": 1.0}},
        "choice": choice}, r"row 0: accuracy error mean 250 is above its max 1.0"),
      # Its summaries against its own schedules (edits were tabulated as measured).
      ({**listed, "num_heldout": 30}, r"row 0: num_heldout 30 but \[.*\] schedules listed"),
      ({**listed, "schedules": [scheds[0], {**scheds[1], "measured_s": -1.0}, scheds[2]]},
       r"row 0: held-out schedule 1: times \{.*\} must include measured_s, all seconds > 0"),
      ({**listed, "heldout": {"calibrated": {**listed["heldout"]["calibrated"], "median": 0.01}}},
       r"row 0: heldout calibrated median 0.01 is not its schedules' \(0.25\)"),
      # A count of 0 beside the median of 3 held-out schedules (a probe's edit) passed.
      ({**good, "heldout": {"calibrated": {**good["heldout"]["calibrated"], "count": 0}}},
       r"row 0: calibrated count 0 is not the 3 schedules it summarises \(edited\?\)"),
      ({**good, "frontier": {**frontier, "num": 4, "latency": {"calibrated": {
          **frontier["latency"]["calibrated"], "count": 5}}}},
       r"row 0: calibrated count 5 is not the 4 schedules it summarises")):
    with pytest.raises(ValueError, match=rf"^p.json: {message}"):
      gpu_report.check_predictor_rows("p.json", [good, bad][1:])
  # A result file: its version, completeness and device stated (version 99 or none was
  # tabulated, a device of no name crashed the report), each row once (a copy printed twice).
  from benchmarks import predictor_accuracy  # pylint: disable=g-import-not-at-top
  res = {"format": predictor_accuracy.RESULT_FORMAT, "version": 1, "complete": True,
         "device": {"device_kind": "cpu", "platform": "cpu"}, "rows": [good]}
  pdir = tmp_path / "pdir"
  pdir.mkdir()
  target = pdir / "predictor_accuracy_pomt.json"
  target.write_text(json.dumps(res))
  assert gpu_report.collect(str(pdir))["predictor_accuracy"] == [good]
  # A result a refused run kept beside (predictor_accuracy_pomt.kept-XXXXXXXX.json) is listed,
  # not read as a second copy of the rows (the folder was refused: "both hold").
  kept = pdir / "predictor_accuracy_pomt.kept-0a1b2c3d.json"
  kept.write_text(json.dumps(res))
  report = gpu_report.collect(str(pdir))
  assert report["predictor_accuracy"] == [good] and report["kept_aside"] == [kept.name]
  kept.unlink()
  for change, message in (
      (dict(version=99), r"is version 99 of a benchmarks.predictor_accuracy result; this "
                         r"vitprune reads version 1"),
      (dict(version=None), r"is version None of a benchmarks.predictor_accuracy result"),
      (dict(complete="yes"), r"needs a list of rows and complete true or false \(absent: "
                             r"written whole, before it was recorded\), got rows list and "
                             r"complete 'yes'"),
      (dict(device={}), r"does not say which device it measured"),
      (dict(device={"device_kind": "cpu", "platform": None}), r"does not say which device")):
    target.write_text(json.dumps({**res, **change}))
    with pytest.raises(ValueError, match=message):
      gpu_report.collect(str(pdir))
  # A result from before "complete" was recorded was written whole, at the end: read.
  target.write_text(json.dumps({k: v for k, v in res.items() if k != "complete"}))
  doc = gpu_report.collect(str(pdir))
  assert doc["predictor_accuracy"] == [good] and doc["predictor_accuracy_cut"] == []
  target.write_text(json.dumps(res))
  (pdir / "predictor_accuracy_copy.json").write_text(json.dumps(res))
  with pytest.raises(ValueError, match=r"predictor_accuracy_copy.json and .*predictor_accuracy_"
                     r"pomt.json both hold predictor rows of m batch 1 pomt \(a copy\?\)"):
    gpu_report.collect(str(pdir))
  # --out where --dir keeps measurements: refused before anything is read or written.
  out = tmp_path / "gpu"
  (out / "profile").mkdir(parents=True)
  for target in ("predictor_accuracy_report.json", "profile/r.json", "benchmark/b1/r.csv"):
    with pytest.raises(ValueError, match=rf"--out=.*{target} is a file --dir=.* holds as a "
                                         r"measurement .*write it elsewhere"):
      gpu_report.main(common.parse(gpu_report.define_flags, [
          f"--dir={out}", f"--out={out / target}"]))
  assert not (out / "predictor_accuracy_report.json").exists()
  gpu_report.check_out_not_read(str(out / "report.json"), str(out))        # the documented one
  gpu_report.check_out_not_read(str(out / "profile" / "sub" / "r.json"), str(out))


def test_step_detection_benchmark_scores_the_detector(tmp_path, monkeypatch, capsys):
  """benchmarks.step_detection: simulated staircases judged by steps.detect_steps; without
  counts out of line every step is found on a unit grid, and a detector that finds nothing
  is scored as missing every step."""
  import json  # pylint: disable=g-import-not-at-top
  from benchmarks import step_detection as sd  # pylint: disable=g-import-not-at-top
  from experiments import common  # pylint: disable=g-import-not-at-top
  from vitprune.profile import steps  # pylint: disable=g-import-not-at-top
  out = tmp_path / "sd.json"

  def run(*extra):
    return sd.main(common.parse(sd.define_flags, ["--curves=20", f"--out={out}", *extra]))

  doc = run("--strides=1,2", "--burst_share=0")
  clean = {r["stride"]: r for r in doc["rows"]}
  assert clean[1]["found"] == clean[1]["true"] > 60 and clean[1]["false"] == 0
  assert clean[1]["exact"] == 20 and clean[1]["out_of_line"] == 0
  assert json.loads(out.read_text())["rows"] == doc["rows"]
  doc = run("--strides=1", "--burst_share=0.1", "--fast_share=0.05")
  (row,) = doc["rows"]
  assert row["found"] + row["missed"] == row["true"] and 0 < row["named_lone"] <= row[
      "out_of_line"]
  said = capsys.readouterr().out
  assert f"| 1 | 20 | {row['true']} | {row['found']} | {row['missed']} | {row['false']} |" in said
  monkeypatch.setattr(steps, "detect_steps", lambda *a, **k: steps.StepReport((), (), 0.0, 0.0))
  (row,) = run("--strides=1")["rows"]
  assert row["found"] == 0 and row["missed"] == row["true"] > 0 and row["named_lone"] == 0
  with pytest.raises(ValueError, match="--strides: duplicate values"):
    run("--strides=2,2")
  with pytest.raises(ValueError, match=r"--strides=100 leaves fewer than 4 counts below "
                                       r"--max_tokens=200"):
    run("--strides=100")


def test_gpu_report_reads_its_own_dir_whatever_its_name(tmp_path):
  """Review: --dir was a glob pattern: '/x/r[1]' held nothing to report, or read '/x/r1'."""
  from benchmarks import gpu_report  # pylint: disable=g-import-not-at-top
  from vitprune import benchmark as bench  # pylint: disable=g-import-not-at-top
  row = {k: "" for k in bench.CSV_COLUMNS}
  row.update(device_kind="cpu", platform="cpu", batch_size=1, dtype="float32",
             variant="unpruned", schedule="full", latency_median_ms=1.0, latency_iqr_ms=0.1,
             compile_s=0.5, change_pct=0.0)
  for name, model in (("r[1]", "ours"), ("r1", "the sibling's")):
    (tmp_path / name / "benchmark").mkdir(parents=True)
    (tmp_path / name / "benchmark" / "t.csv").write_text(bench.to_csv([{**row, "model": model}]))
  doc = gpu_report.collect(str(tmp_path / "r[1]"))
  assert [r["model"] for r in doc["benchmark"]] == ["ours"]


def test_holdout_study_rows_and_refusals(tmp_path, monkeypatch):
  """A row per seed from the main job's summary (the optimism: how much more the chosen
  schedule lost on the held-out images than the unpruned one did); a seed whose floor nothing
  met is a row, not a crash; --job_flags may not set the study's own --holdout_images."""
  import pytest  # pylint: disable=g-import-not-at-top
  from benchmarks import holdout_study  # pylint: disable=g-import-not-at-top
  from experiments import common  # pylint: disable=g-import-not-at-top
  from vitprune import solve_loop  # pylint: disable=g-import-not-at-top
  seen = []

  def job(f):
    seen.append((f.seed, f.holdout_images, f.accuracy_floor))
    if f.seed == 1:
      raise solve_loop.FloorNotMetError("accuracy floor 0.97 is not met on measurement: x")
    return {"metric": "accuracy", "schedule": "keep@1:41", "counts": [65, 65, 41], "speedup": 1.2,
            "num_images": 239, "pruned": {"accuracy": 0.975}, "unpruned": {"accuracy": 0.98},
            "holdout": {"num_images": 120, "floor_met": False, "floor_status": "straddles",
                        "pruned": {"accuracy": 0.95, "interval_95": [0.89, 0.98]},
                        "unpruned": {"accuracy": 0.975}}}

  monkeypatch.setattr(holdout_study.profile_cli, "main", job)
  rows = holdout_study.main(common.parse(holdout_study.define_flags, [
      "--seeds=2", "--holdout_images=120", f"--out={tmp_path / 'h.json'}"]))
  assert seen == [(0, 120, 0.97), (1, 120, 0.97)]
  assert rows[0]["optimism_points"] == pytest.approx(100 * ((0.975 - 0.95) - (0.98 - 0.975)))
  assert rows[0]["floor_met_selection"] and not rows[0]["floor_met_holdout"]
  assert rows[0]["unpruned_floor_met_holdout"]
  assert rows[1]["floor_not_met"].startswith("accuracy floor 0.97")
  tot = holdout_study.totals(rows)
  assert (tot["chosen"], tot["floor_met_selection"], tot["floor_met_holdout"]) == (1, 1, 0)
  assert tot["holdout_status"] == {"meets": 0, "straddles": 1, "fails": 0}
  text = holdout_study.table(rows)
  assert ("| 0 | keep@1:41 | 0.9750 / 0.9800 | 0.9500 (0.890..0.980) / 0.9750 | yes / no (yes) "
          "| +2.00 |") in text
  assert "| 1 | none: accuracy floor 0.97" in text
  with pytest.raises(ValueError, match="--job_flags sets --holdout_images, which the study owns"):
    holdout_study.main(common.parse(holdout_study.define_flags, [
        "--job_flags=--holdout_images=5", f"--out={tmp_path / 'x.json'}"]))
  seen.clear()
  for floor in ("0", "-0.5"):          # (0 started every main job: a probe)
    with pytest.raises(ValueError, match=rf"^--accuracy_floor={float(floor)}: the study needs a "
                       r"floor in \(0, 1\]"):
      holdout_study.main(common.parse(holdout_study.define_flags, [
          f"--accuracy_floor={floor}", f"--out={tmp_path / 'x.json'}"]))
  assert not seen
  # --max_accuracy_drop: the jobs run with it; each set of images has its own floor (the
  # unpruned model's accuracy there minus the drop), and the unpruned column is empty.
  seen.clear()

  def drop_job(f):
    seen.append((f.seed, f.max_accuracy_drop, f.accuracy_floor))
    doc = job(f)
    doc["accuracy_floor"] = 0.98 - 0.01
    doc["holdout"].update(floor=0.975 - 0.01, floor_met=False)
    return doc

  monkeypatch.setattr(holdout_study.profile_cli, "main", drop_job)
  rows = holdout_study.main(common.parse(holdout_study.define_flags, [
      "--seeds=1", "--max_accuracy_drop=0.01", f"--out={tmp_path / 'd.json'}"]))
  assert seen[0] == (0, 0.01, None)        # (then job()'s own entry)
  assert rows[0]["floor"] == 0.98 - 0.01 and rows[0]["holdout"]["floor"] == 0.975 - 0.01
  assert rows[0]["floor_met_selection"] and rows[0]["unpruned_floor_met_holdout"] is None
  assert "| yes / no (-) |" in holdout_study.table(rows)
  assert holdout_study.totals(rows)["unpruned_floor_met_holdout"] is None   # (not "0 of 1")
  with pytest.raises(ValueError, match="give --accuracy_floor or --max_accuracy_drop, not both"):
    holdout_study.main(common.parse(holdout_study.define_flags, [
        "--max_accuracy_drop=0.01", "--accuracy_floor=0.9", f"--out={tmp_path / 'y.json'}"]))
  with pytest.raises(ValueError, match="--job_flags sets --max_accuracy_drop, which the study "
                     "owns"):
    holdout_study.main(common.parse(holdout_study.define_flags, [
        "--job_flags=--max_accuracy_drop=0.02", f"--out={tmp_path / 'z.json'}"]))


def test_step_detection_noise_flag_admits_only_positive_medians():
  """--noise=0.6 was inside the flag's range [0, 1] and failed mid-run ('medians must be finite
  and non-negative'): the range ends where a median of 5 simulated calls stays positive."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from benchmarks import step_detection as sd  # pylint: disable=g-import-not-at-top
  from experiments import common  # pylint: disable=g-import-not-at-top
  with pytest.raises(Exception, match=r"0.6 is not a number in the range \[0.0, 0.25\]"):
    common.parse(sd.define_flags, ["--noise=0.6"])
  rng = np.random.default_rng(0)
  lowest = min(sd.simulate(rng, stride=1, counts=60, max_tokens=200, noise=0.25,
                           burst_share=0.0, fast_share=0.5)[1].min() for _ in range(300))
  assert lowest > 0


def test_gpu_report_refuses_rows_its_tables_cannot_tell_apart(tmp_path):
  """Two benchmark tables of one batch (a rerun under another folder) or two curves of one
  model, dtype and batch printed look-alike rows with different numbers (no file column)."""
  from benchmarks import gpu_report  # pylint: disable=g-import-not-at-top
  from vitprune import benchmark as bench  # pylint: disable=g-import-not-at-top
  rows = [{k: "" for k in bench.CSV_COLUMNS}]
  rows[0].update(model="m", dtype="float32", batch_size=1, variant="unpruned",
                 latency_median_ms=1.0, device_kind="cpu", platform="cpu", schedule="full",
                 latency_iqr_ms=0.1, compile_s=1.0, change_pct=0.0)
  for d in ("b1", "b32"):
    (tmp_path / d).mkdir()
    (tmp_path / d / "t.csv").write_text(bench.to_csv(rows))
  with pytest.raises(ValueError, match=r"b1/t.csv and .*b32/t.csv both hold m batch 1 float32 "
                                       r"'unpruned' rows, which the table cannot tell apart"):
    gpu_report.benchmark_rows(sorted(str(p) for p in tmp_path.glob("*/t.csv")))
  assert len(gpu_report.benchmark_rows([str(tmp_path / "b1" / "t.csv")])) == 1


def test_gpu_report_profile_row_and_table_text(monkeypatch):
  """A hand-made staircase (9.01234 ms down to 2.01234 ms over 17..2 tokens, steps at 14->13,
  10->9, 6->5; compile 0.01 * (18 - n)^2 s): the row's numbers and the README line, exactly."""
  cfg = get_config("test_tiny_vit")

  def med(n):
    return 1e-3 * (2.01234 + (n > 5) * 1.0 + (n > 9) * 2.0 + (n > 13) * 4.0)

  points = tuple(records.Point(
      component="model", batch_size=1, tokens=n, median_s=med(n), q25_s=med(n), q75_s=med(n),
      num_samples=3, samples_s=(med(n),) * 3, compile_s=0.01 * (18 - n) ** 2, retries=0)
                 for n in range(17, 1, -1))
  prof = records.analyze(records.Profile(
      model=cfg.name, config=dataclasses.asdict(cfg), device_kind="H200", platform="gpu",
      jax_version="0.4.1", jaxlib_version="0.4.1", dtype="float32", modes=("model",),
      reducer="keep_first", timing={"min_run_time": 0.1}, points=points,
      created="2025-01-01T00:00:00+00:00"))
  (row,) = gpu_report.profile_rows({"dir/p.json": prof})
  steps = row.pop("steps")
  assert row == pytest.approx({
      "file": "p.json", "model": "test_tiny_vit", "dtype": "float32", "batch_size": 1,
      "device_kind": "H200", "platform": "gpu", "jax_version": "0.4.1", "counts": 16,
      "tokens_max": 17, "latency_max_ms": 9.01234, "tokens_min": 2, "latency_min_ms": 2.01234,
      "num_steps": 3, "lone_counts": [], "compile_s_median": 0.725, "compile_s_p90": 2.105,
      "compile_s_max": 2.56})
  assert [(s["n_from"], s["n_to"]) for s in steps] == [(14, 13), (10, 9), (6, 5)]
  assert [s["saving_ms"] for s in steps] == pytest.approx([4.0, 2.0, 1.0])
  assert [s["saving_pct"] for s in steps] == pytest.approx(
      [400 / 9.01234, 200 / 5.01234, 100 / 3.01234])
  doc = {"device": {"device_kind": "H200", "platform": "gpu"}, "profiles": [{**row, "steps":
                                                                            steps}],
         "benchmark": [], "skipped": ["b.json"], "predictor_accuracy": []}
  assert gpu_report.to_markdown(doc).splitlines() == [
      "device: H200 (gpu), jax 0.4.1", "",
      "| model | dtype | batch | counts | ms at max tokens | ms at min tokens | largest steps "
      "(n -> n', saving) | steps | lone counts | compile s per shape (median / p90 / max; wall, "
      "threads overlap) |",
      "|---|---|---:|---:|---|---|---|---:|---|---|",
      "| test_tiny_vit | float32 | 1 | 16 | 9.012 (17) | 2.012 (2) | 14->13 44.4%, 10->9 39.9%, "
      "6->5 33.2% | 3 | - | 0.73 / 2.10 / 2.56 |", "",
      "(not whole-model curves, not tabulated: b.json)"]
  # The largest TOP_STEPS steps are listed; the steps column counts them all.
  monkeypatch.setattr(gpu_report, "TOP_STEPS", 2)
  (row,) = gpu_report.profile_rows({"p.json": prof})
  assert [s["n_from"] for s in row["steps"]] == [14, 10] and row["num_steps"] == 3


def _bench_row(**kw):
  """A benchmark CSV row (every column, the unset ones empty)."""
  row = {k: "" for k in bench.CSV_COLUMNS}
  row.update(model="m", dtype="float32", batch_size=1, variant="unpruned", device_kind="H200",
             platform="gpu", schedule="full", latency_median_ms=2.34567, latency_iqr_ms=0.0123,
             compile_s=1.234, change_pct=0.0)
  row.update(kw)
  return row


def test_gpu_report_benchmark_table_text_and_row_checks(tmp_path):
  """The benchmark table's README lines exactly (numbers as printed, no spread legend when no
  change is within the spread), tables read in path order whatever order they are given, and
  each cell the table prints checked."""
  (tmp_path / "b1").mkdir()
  pomt = _bench_row(variant="pomt", schedule="keep@1:9", latency_median_ms=1.23456,
                    latency_iqr_ms=0.0456, compile_s=0.5, change_pct=-47.3686)
  (tmp_path / "b1" / "a.csv").write_text(bench.to_csv([_bench_row(), pomt]))
  (tmp_path / "b1" / "b.csv").write_text(bench.to_csv([_bench_row(dtype="bfloat16")]))
  paths = [str(tmp_path / "b1" / n) for n in ("b.csv", "a.csv")]
  rows = gpu_report.benchmark_rows(paths)
  assert [(r["dtype"], r["variant"]) for r in rows] == [
      ("float32", "unpruned"), ("float32", "pomt"), ("bfloat16", "unpruned")]
  said = gpu_report.to_markdown({"device": None, "profiles": [], "benchmark": rows,
                                 "skipped": [], "predictor_accuracy": []})
  assert said.splitlines() == [
      "", "| model | batch | dtype | variant | schedule | latency ms (median ± IQR) | change | "
      "compile s |", "|---|---:|---|---|---|---|---:|---:|",
      "| m | 1 | float32 | unpruned | full | 2.346 ± 0.012 | +0.0% | 1.23 |",
      "| m | 1 | float32 | pomt | keep@1:9 | 1.235 ± 0.046 | -47.4% | 0.50 |",
      "| m | 1 | bfloat16 | unpruned | full | 2.346 ± 0.012 | +0.0% | 1.23 |"]
  path = tmp_path / "t.csv"
  for table, message in (
      ([_bench_row(latency_median_ms=0)], r"line 2: latency_median_ms 0 is not a latency > 0"),
      ([_bench_row(compile_s=-1)], r"line 2: compile_s -1 is not a compile time >= 0 s"),
      ([_bench_row(agreement=2)], r"line 2: agreement 2 is not a fraction in \[0, 1\]"),
      ([_bench_row(schedule="")], r"line 2: schedule '' is not a name"),
      ([_bench_row(latency_q25_ms=1.0, latency_q75_ms=1.1, latency_median_ms=1.05,
                   latency_iqr_ms=0.1001)],
       r"line 2: latency_iqr_ms 0.1001 is not latency_q75_ms - latency_q25_ms"),
      ([_bench_row(), {**pomt, "change_pct": -47.9}],
       r"line 3: change_pct -47.9 is not -47.3686, its latency against the unpruned row's")):
    path.write_text(bench.to_csv(table))
    with pytest.raises(ValueError, match=rf"^{path}, {message}"):
      gpu_report.benchmark_rows([str(path)])


def test_gpu_report_checks_predictor_rows_further():
  """Predictor rows: a choice whose floor was not met is tabulated as such, and the refusals of
  a zero profile time or floor, schedules without a measured time or with a time of 0, and
  held-out summaries (p90, within10, block sum) that are not their schedules'."""
  good = {"model": "m", "batch_size": 1, "method": "pomt", "num_heldout": 3,
          "heldout": {"calibrated": {"median": 0.1, "p90": 0.2, "within10": 0.5}},
          "calibration_s": 1.0, "profile_s": 2.0, "calibration_share": 0.5}
  frontier = {"latency": {"calibrated": {"median": 0.1, "p90": 0.2, "within10": 0.5}},
              "accuracy_error_points": {"mean": 0.5, "max": 1.0}}
  gpu_report.check_predictor_rows("p.json", [{**good, "frontier": frontier, "choice": {
      "floor": 0.99, "floor_not_met": "nothing checked met 0.99"}}])
  # Errors 0.25, 0.5 and 0 of 1 ms: median 0.25, p90 0.45, 1 of 3 within 10 %.
  scheds = [{"counts": [1], "measured_s": 1e-3, "calibrated_s": c, "block_sum_s": c}
            for c in (1.25e-3, 0.5e-3, 1e-3)]
  summary = {"median": 0.25, "p90": 0.45, "within10": 1 / 3}
  listed = {**good, "schedules": scheds, "heldout": {"calibrated": summary,
                                                     "block_sum": summary}}
  gpu_report.check_predictor_rows("p.json", [listed])
  assert gpu_report.to_markdown({"device": None, "profiles": [], "benchmark": [], "skipped": [],
                                 "predictor_accuracy": [listed]}) == (
                                     "\n" + predictor_accuracy.table([listed]))
  choice = {"floor": 0.0, "measured_accuracy": 0.96, "meets_floor": True}
  for bad, message in (
      ({**good, "profile_s": 0}, r"calibration_share 0.5 is not calibration_s / profile_s"),
      ({**good, "frontier": frontier, "choice": choice},
       r"choice: measured accuracy 0.96 and floor 0.0 must be in \[0, 1\]"),
      ({**listed, "schedules": [scheds[0], {"counts": [1], "calibrated_s": 1e-3}, scheds[2]]},
       r"held-out schedule 1: times \{'calibrated_s': 0.001\} must include measured_s"),
      ({**listed, "schedules": [scheds[0], {**scheds[1], "calibrated_s": 0}, scheds[2]]},
       r"held-out schedule 1: times \{.*\} must include measured_s, all seconds > 0"),
      ({**listed, "heldout": {**listed["heldout"], "calibrated": {**summary, "p90": 0.3}}},
       r"heldout calibrated p90 0.3 is not its schedules' \(0.45"),
      ({**listed, "heldout": {**listed["heldout"], "calibrated": {**summary, "within10": 0.5}}},
       r"heldout calibrated within10 0.5 is not its schedules' \(0.33"),
      ({**listed, "heldout": {**listed["heldout"], "block_sum": {**summary, "median": 0.2}}},
       r"heldout block_sum median 0.2 is not its schedules' \(0.25\)")):
    with pytest.raises(ValueError, match=rf"^p.json: row 0: {message}"):
      gpu_report.check_predictor_rows("p.json", [bad])


def test_gpu_report_collects_exactly_what_the_dir_holds(tmp_path, capsys):
  """collect: the device as a dict of its kind and platform, hidden folders under benchmark/
  not read, a '[1]' in --dir not a pattern for profiles or predictor results either, a result
  of no rows and no 'complete' (written whole) refused, and --out checked against the real
  folder, not its spelling."""
  out = tmp_path / "r[1]"
  (out / "benchmark" / "b1").mkdir(parents=True)
  (out / "benchmark" / "b1" / "t.csv").write_text(bench.to_csv([_bench_row()]))
  (out / "benchmark" / ".partial").mkdir()
  (out / "benchmark" / ".partial" / "t.csv").write_text("half,written")
  (tmp_path / "r1" / "profile").mkdir(parents=True)   # (what the pattern 'r[1]' matched)
  (tmp_path / "r1" / "profile" / "x.json").write_text("not a profile")
  (tmp_path / "r1" / "predictor_accuracy_x.json").write_text("not a result")
  doc = gpu_report.collect(str(out))
  assert doc["device"] == {"device_kind": "H200", "platform": "gpu"}
  assert [r["variant"] for r in doc["benchmark"]] == ["unpruned"] and doc["profiles"] == []
  assert doc["predictor_accuracy"] == [] and doc["predictor_accuracy_cut"] == []
  res = {"format": "vitprune-predictor-accuracy", "version": 1, "rows": [],
         "device": {"device_kind": "H200", "platform": "gpu"}}
  (out / "predictor_accuracy_p.json").write_text(json.dumps(res))
  with pytest.raises(ValueError, match=r"predictor_accuracy_p.json says it is complete but "
                                       r"holds no rows \(edited\?\)"):
    gpu_report.collect(str(out))
  (out / "predictor_accuracy_p.json").write_text(json.dumps({**res, "complete": False}))
  doc = gpu_report.collect(str(out))
  assert doc["predictor_accuracy_cut"] == ["predictor_accuracy_p.json"]
  assert gpu_report.to_markdown(doc).splitlines()[-1] == (
      "(predictor accuracy cut before the end, rows hold the phases measured: "
      "predictor_accuracy_p.json)")
  doc = gpu_report.main(common.parse(gpu_report.define_flags, [
      f"--dir={out}", f"--out={tmp_path / 'report.json'}"]))
  assert capsys.readouterr().out == (gpu_report.to_markdown(doc) + "\n"
                                     + f"wrote {tmp_path / 'report.json'}\n")
  os.symlink(out, tmp_path / "link")
  with pytest.raises(ValueError, match=r"is a file --dir=.* holds as a measurement "
                                       r"\(profile/r.json\)"):
    gpu_report.check_out_not_read(str(tmp_path / "link" / "profile" / "r.json"), str(out))
  gpu_report.check_out_not_read(str(out / "sub" / "predictor_accuracy_r.json"), str(out))
  gpu_report.check_out_not_read(str(out / "predictor_accuracy_old" / "r.json"), str(out))


def test_gpu_suite_refuses_a_budget_that_wraps_around():
  """2^64 + 30 seconds wraps to 30 in bash arithmetic: its length alone refuses it (it was run
  as a 30-s deadline), before OUT_DIR is created."""
  huge = str(2 ** 64 + 30)
  r = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "all", "/nonexistent/gpu", huge],
                     cwd=ROOT, capture_output=True, text=True, timeout=30)
  assert r.returncode == 2 and r.stdout == "" and r.stderr == (
      f"error: SECONDS {huge} is more than a day (at most 86400)\n"), r.stderr


def test_gpu_suite_all_runs_each_stage_under_timeout_with_its_arguments(tmp_path):
  """A stand-in `python` prints the `timeout` call it runs under (/proc/$PPID/cmdline) and its
  arguments: every stage of 'all' is capped by its own seconds, each gets the documented flags
  (the profiles resumed chunk by chunk), and an exit of 124 or 137 (a timeout, then killed after
  the grace) is not a failure."""
  fake, out, cache = tmp_path / "bin", tmp_path / "gpu", tmp_path / "cache"
  fake.mkdir()
  (fake / "python").write_text(
      '#!/bin/sh\nparent=$(tr \'\\0\' \' \' < /proc/$PPID/cmdline | head -1)\n'
      'echo "ARGV $(echo "$parent" | cut -d\' \' -f1-4)|$(echo "$*" | head -1)"\n'
      'case "$*" in *experiments.benchmark*) exit 137;; *predictor_acc*) exit 124;; esac\n')
  (fake / "python").chmod(0o755)
  env = {k: v for k, v in os.environ.items() if k != "GPU_SUITE_VARIANTS"}
  env.update(PATH=f"{fake}{os.pathsep}{os.environ['PATH']}", GPU_SUITE_MODEL="vit_digits",
             JAX_CACHE_DIR=str(cache))
  r = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "all", str(out), "600"], cwd=ROOT,
                     capture_output=True, text=True, timeout=60, env=env)
  assert r.returncode == 0 and r.stderr == "", r.stdout + r.stderr
  calls = [ln[5:] for ln in r.stdout.splitlines() if ln.startswith("ARGV ")]
  under = "timeout --signal=INT --kill-after=10"
  prof = ("-m experiments.profile --mode=model --model=vit_digits --batch_size={} "
          "--dtype={} --adaptive --max_points={} --chunk_points=8 --resume --threads=8 "
          f"--compile_cache_dir={cache} --min_run_time=0.2 --out_dir={out}/profile")
  bench_call = ("-m experiments.benchmark --model=vit_digits --data=none --batch_size={0} "
                "--dtype=float32 --compile_threads=8 --min_run_time=0.3 "
                f"--out_dir={out}/benchmark/b{{0}} --variants=tome-r8=tome:r8;tome-r13=tome:r13")
  assert calls == [
      f"{under} 60|-c import jax, flax, optax, orbax.checkpoint, numpy, absl, safetensors, PIL, "
      "matplotlib",
      f"{under} 230|" + prof.format(1, "float32", 36),
      *(f"{under} 55|" + bench_call.format(b) for b in (1, 8, 64)),
      f"{under} 150|" + prof.format(64, "float32", 24),
      f"{under} 150|" + prof.format(1, "bfloat16", 24),
      f"{under} 200|-m benchmarks.predictor_accuracy --models=vit_digits --batch_sizes=8 "
      f"--methods=pomt --threads=8 --compile_cache_dir={cache} "
      f"--out={out}/next-predictor_accuracy_vit_digits_pomt.json"], calls
  assert "== bench-b8: rc=137 after" in r.stdout and "== predictor-pomt: rc=124 after" in r.stdout
  # The longer leases' stages: 'profile' both dtypes, 'bench-base' DeiT-B, up to the deadline.
  for stage, want in (
      ("profile", [prof.format("1,4,16,64", d, 0).replace(
          " --max_points=0", "") for d in ("float32", "bfloat16")]),
      ("bench-base", ["-m experiments.benchmark --model=deit_base_patch16_224 "
                      "--data=none --batch_size=1,4,16,64 --dtype=float32,bfloat16 "
                      "--compile_threads=8 --min_run_time=0.3 "
                      f"--out_dir={out}/benchmark"])):
    r = subprocess.run(["bash", "benchmarks/gpu_suite.sh", stage, str(out), "600"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, env=env)
    calls = [ln[5:] for ln in r.stdout.splitlines() if ln.startswith("ARGV ")]
    assert r.returncode == 0 and [c.split("|")[1] for c in calls[1:]] == want, calls
    # (up to the deadline less 10 s: 590, or less by the seconds that passed since the start)
    assert all(c.startswith(f"{under} 5") and 580 <= int(c.split("|")[0].split()[-1]) <= 590
               for c in calls[1:]), calls


def test_gpu_suite_replaces_a_cut_predictor_result_only_by_a_finished_one(tmp_path):
  """The stand-in predictor_accuracy writes $RESULT to its --out: a cut result goes in where
  there is none, a second cut one does not replace it (the shorter cut lost what the first
  measured), a finished one does, and then the stage is skipped."""
  fake, out = tmp_path / "bin", tmp_path / "gpu"
  fake.mkdir()
  (fake / "python").write_text(
      '#!/bin/sh\ncase "$2" in *"import jax"*) exit 0;; esac\n'
      '[ "$1" = -c ] && exec python3 "$@"\n'
      'case "$*" in *predictor_acc*) for a; do case "$a" in --out=*) echo "$RESULT" > '
      '"${a#--out=}";; esac; done;; esac\n')
  (fake / "python").chmod(0o755)
  predictor = out / "predictor_accuracy_vit_digits_pomt.json"
  said = []
  for result in ('{"complete": false, "n": 1}', '{"complete": false, "n": 2}',
                 '{"complete": true, "n": 3}', '{"complete": true, "n": 4}'):
    env = dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}",
               GPU_SUITE_MODEL="vit_digits", RESULT=result)
    r = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "all", str(out), "600"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    said.append((json.loads(predictor.read_text())["n"],
                 "== predictor-pomt: kept the earlier cut result" in r.stdout,
                 "== predictor-pomt: finished before" in r.stdout))
    assert not (out / "next-predictor_accuracy_vit_digits_pomt.json").exists()
  assert said == [(1, False, False), (1, True, False), (3, False, False), (3, False, True)]


def test_holdout_study_totals_json_and_summary_line(tmp_path, monkeypatch, capsys):
  """Mutation audit: the totals (seeds counted with the one whose floor nothing met; optimism
  mean / min / max over the chosen), each row's image counts and the unpruned model judged on
  the held-out images (not the selection ones), the JSON and the printed summary line."""
  from benchmarks import holdout_study as hs  # pylint: disable=g-import-not-at-top
  from vitprune import solve_loop  # pylint: disable=g-import-not-at-top
  seen = []

  def job(f):
    seen.append(f.seed)
    if f.seed == 1:
      raise solve_loop.FloorNotMetError("accuracy floor 0.97 is not met on measurement: x")
    sel, held, status = {0: ((0.975, 0.98), (0.95, 0.975), "straddles"),
                         2: ((0.99, 0.98), (0.98, 0.96), "meets")}[f.seed]
    return {"metric": "accuracy", "accuracy_floor": 0.97, "schedule": f"s{f.seed}",
            "counts": [65, 41 - f.seed], "speedup": 1.2, "num_images": 239,
            "pruned": {"accuracy": sel[0]}, "unpruned": {"accuracy": sel[1]},
            "holdout": {"num_images": 120, "floor_met": held[0] >= 0.97, "floor_status": status,
                        "pruned": {"accuracy": held[0], "interval_95": [0.9, 0.99]},
                        "unpruned": {"accuracy": held[1]}}}

  monkeypatch.setattr(hs.profile_cli, "main", job)
  out = tmp_path / "h.json"
  rows = hs.main(common.parse(hs.define_flags, ["--seeds=3", f"--out={out}"]))
  assert seen == [0, 1, 2]
  assert [(r.get("counts"), r.get("selection_images"), r.get("holdout_images")) for r in rows] \
      == [([65, 41], 239, 120), (None, None, None), ([65, 39], 239, 120)]
  # seed 2: the unpruned model meets 0.97 on the selection images (0.98), not held out (0.96)
  assert rows[2]["unpruned_floor_met_holdout"] is False and rows[2]["floor_met_holdout"]
  tot = hs.totals(rows)
  assert {k: v for k, v in tot.items() if not k.startswith("optimism")} == {
      "seeds": 3, "chosen": 2, "floor_met_selection": 2, "floor_met_holdout": 1,
      "unpruned_floor_met_holdout": 1,
      "holdout_status": {"meets": 1, "straddles": 1, "fails": 0}}
  assert (tot["optimism_mean"], tot["optimism_min"], tot["optimism_max"]) == pytest.approx(
      (0.5, -1.0, 2.0))
  assert ("floor 0.97 met by the chosen schedule: 2/2 on the selection images, 1/2 on the "
          "held-out ones (the unpruned model there: 1/2); optimism mean +0.50 points (min "
          "-1.00, max +2.00); the held-out 95% interval 1 meets, 1 straddles, 0 fails the "
          "floor\n") in capsys.readouterr().out
  doc = json.loads(out.read_text())
  assert (doc["floor"], doc["max_accuracy_drop"], doc["holdout_images"]) == (0.97, None, 120)
  assert doc["rows"] == json.loads(json.dumps(rows)) and doc["totals"] == tot
  rows = hs.main(common.parse(hs.define_flags, [
      "--seeds=1", "--max_accuracy_drop=0.01", f"--out={out}"]))
  doc = json.loads(out.read_text())
  assert (doc["floor"], doc["max_accuracy_drop"]) == (None, 0.01)
  seen.clear()
  with pytest.raises(ValueError, match=r"^--max_accuracy_drop must be in \[0, 1\)"):
    hs.main(common.parse(hs.define_flags, ["--max_accuracy_drop=1.5", f"--out={out}"]))
  assert not seen


def test_step_detection_row_counts_each_curve_by_hand(tmp_path, monkeypatch):
  """Mutation audit: a row's figures from a detector's answers, by hand (found / missed /
  false, a curve exact only when it finds exactly the true steps, lone counts named only among
  those put out of line); every stride gets its row; the grid's guard is exact."""
  import types  # pylint: disable=g-import-not-at-top
  from benchmarks import step_detection as sd  # pylint: disable=g-import-not-at-top
  curves = iter([({(10, 9), (5, 4)}, {7, 3}), ({(10, 9)}, set()), ({(10, 9), (5, 4)}, set())])
  answers = iter([([(10, 9), (5, 4), (8, 7), (6, 5)], [7, 6]), ([(10, 9)], []), ([(5, 4)], [])])

  def simulate(rng, **kw):
    true, odd = next(curves)
    return None, None, None, None, true, odd

  def detect(*a):
    got, lone = next(answers)
    return types.SimpleNamespace(steps=[types.SimpleNamespace(n_from=a, n_to=b) for a, b in got],
                                 lone=[types.SimpleNamespace(n=n) for n in lone])

  monkeypatch.setattr(sd, "simulate", simulate)
  monkeypatch.setattr(sd.steps_lib, "detect_steps", detect)
  f = common.parse(sd.define_flags, ["--curves=3"])
  assert sd.run_stride(3, f) == {"stride": 3, "curves": 3, "true": 5, "found": 4, "missed": 1,
                                 "false": 2, "exact": 1, "out_of_line": 2, "named_lone": 1}
  row = dict(stride=2, curves=5, true=9, found=8, missed=1, false=0, exact=4, out_of_line=0,
             named_lone=0)
  assert sd.table([row]).splitlines()[-1] == "| 2 | 5 | 9 | 8 | 1 | 0 | 4 | - |"
  monkeypatch.undo()
  out = tmp_path / "sd.json"
  # (200 - 2) // 66 + 1 = 4 counts: just enough for a step to be called
  doc = sd.main(common.parse(sd.define_flags, ["--curves=2", "--strides=66,1", f"--out={out}"]))
  assert [r["stride"] for r in doc["rows"]] == [66, 1]
  assert [r["stride"] for r in json.loads(out.read_text())["rows"]] == [66, 1]
  with pytest.raises(ValueError, match="--strides=67 leaves fewer than 4 counts"):
    sd.main(common.parse(sd.define_flags, ["--strides=67", f"--out={out}"]))
  seeded = [sd.main(common.parse(sd.define_flags, [
      "--curves=20", "--strides=1", "--burst_share=0.2", f"--seed={s}", f"--out={out}"]))["rows"]
            for s in (0, 1)]
  assert seeded[0] != seeded[1]


def test_step_detection_simulates_what_its_doc_says():
  """Mutation audit: simulate() against the module doc. The medians before anything is put out
  of line come from the same draws whatever the shares, so each count's factor is read off:
  bursts +10..30 % with 3x the IQR, fast counts -5..15 % (never a burst too), pair bursts in
  neighbouring twos, none counted twice; steps +5..20 % at the true pairs only."""
  from benchmarks import step_detection as sd  # pylint: disable=g-import-not-at-top

  def sim(seed, **kw):
    kw = dict(dict(noise=0.01, burst_share=0.0, fast_share=0.0, pair_share=0.0), **kw)
    return sd.simulate(np.random.default_rng(seed), stride=4, counts=60, max_tokens=200, **kw)

  for seed in range(5):
    t, base, iqr, _, true, odd = sim(seed)
    np.testing.assert_array_equal(t, 200 - 4 * np.arange(50))     # (down to 4 >= 2)
    assert not odd and true
    _, flat, _, _, _, _ = sim(seed, noise=0.0)      # (the slope: at most 0.1 % per token)
    for (a, b), r in zip(zip(t, t[1:]), flat[:-1] / flat[1:]):
      assert (1.05 <= r <= 1.2 * 1.004) if (a, b) in true else 1 <= r <= 1.004
    _, med, iqr_b, _, _, odd = sim(seed, burst_share=1.0, fast_share=1.0)
    assert odd == set(t.tolist()) and np.all((1.1 <= med / base) & (med / base <= 1.3))
    np.testing.assert_allclose(iqr_b, 3 * iqr)
    _, med, iqr_f, _, _, odd = sim(seed, fast_share=1.0)
    assert odd == set(t.tolist()) and np.all((0.85 <= med / base) & (med / base <= 0.95))
    np.testing.assert_allclose(iqr_f, iqr)
    _, med, _, _, _, odd = sim(seed, burst_share=0.3, pair_share=0.5)
    moved = {int(n) for n, r in zip(t, med / base) if r != 1}
    assert odd == moved and np.all(med / base <= 1.3)
    _, med, _, _, _, odd = sim(seed, pair_share=0.05)
    moved = sorted(int(n) for n, r in zip(t, med / base) if r != 1)
    assert odd == set(moved) and len(moved) <= 20
    assert all(n + 4 in odd or n - 4 in odd for n in odd)    # (in neighbouring twos)


def test_calibration_size_summary_and_table_by_hand():
  """Mutation audit: one line per (method, size), sorted: medians over the draws of the median,
  p90, share within 10 %, compile and timed seconds, the worst draw's p90, the measurement's
  noise floor; the table's cells in their columns."""
  from benchmarks import calibration_size as cs  # pylint: disable=g-import-not-at-top
  nf = {"median": 0.02, "p90": 0.05, "within10": 1.0, "count": 3}

  def row(method, size, med, p90, within, compile_s, timed_s):
    return {"method": method, "size": size, "compile_s": compile_s, "timed_s": timed_s,
            "heldout": {"median": med, "p90": p90, "within10": within}, "noise_floor": nf}

  rows = [row("pomt", 6, 0.01, 0.02, 1.0, 9.0, 3.0),
          row("pomt", 4, 0.10, 0.30, 0.5, 1.0, 1.0), row("pomt", 4, 0.02, 0.10, 0.9, 2.0, 5.0),
          row("pomt", 4, 0.03, 0.20, 0.4, 6.0, 2.0),
          dict(row("evit", 4, 0.05, 0.06, 0.7, 4.0, 4.0), noise_floor=None)]
  got = cs.summarize(rows)
  assert [(s["method"], s["size"], s["draws"]) for s in got] == [
      ("evit", 4, 1), ("pomt", 4, 3), ("pomt", 6, 1)]
  assert got[1] == {"method": "pomt", "size": 4, "draws": 3, "median": 0.03, "p90": 0.2,
                    "p90_worst": 0.3, "within10": 0.5, "compile_s": 2.0, "timed_s": 2.0,
                    "noise_floor": nf}     # (the middle of three draws: exact)
  assert got[0]["noise_floor"] is None
  assert cs.table(got).splitlines()[2:] == [
      "| evit | 4 | 5.0% / 6.0% / 70% | 6.0% | 4.0 | 4.0 | - |",
      "| pomt | 4 | 3.0% / 20.0% / 50% | 30.0% | 2.0 | 2.0 | 2.0% / 5.0% |",
      "| pomt | 6 | 1.0% / 2.0% / 100% | 2.0% | 9.0 | 3.0 | 2.0% / 5.0% |"]


def test_calibration_size_draws_and_scores_each_set_by_hand(tmp_path, monkeypatch):
  """Mutation audit: every (size, draw) set is the main job's draw with --seed=draw, the
  held-out schedules are none of them; each set's row sums ITS schedules' compile seconds and
  timed seconds (samples x median), counts their reductions, and the noise floor compares the
  second measurement with the first. --sizes is checked at its least and largest value, in
  whatever order given."""
  import types  # pylint: disable=g-import-not-at-top
  from benchmarks import calibration_size as cs  # pylint: disable=g-import-not-at-top
  lm = cs.lm_lib
  cfg = common.model_config(common.EMBEDDED_MODEL, common.EMBEDDED_WEIGHTS)
  grid = [17, 33, 49, 65]
  sets, pool, held = cs.draw_schedules(cfg, "pomt", grid, [4, 5], 2, 3)
  assert set(sets) == {(4, 0), (4, 1), (5, 0), (5, 1)} and sets[(4, 0)] != sets[(4, 1)]
  for (k, d), cal in sets.items():
    assert cal == lm.sample_schedules(cfg.num_tokens, cfg.depth, grid, k, seed=d,
                                      max_remove=lm.method_limit(cfg, "pomt"))
  assert pool == sorted({s for v in sets.values() for s in v})
  assert len(held) == 3 and not set(held) & set(pool)
  with pytest.raises(ValueError, match=r"--sizes must be >= 4 .*, got 3$"):
    cs.main(common.parse(cs.define_flags, ["--sizes=10,3,6", f"--out={tmp_path / 'c.json'}"]))
  cal, held = [(65, 65, 33), (65, 49, 17), (65, 65, 65)], [(65, 33, 33), (65, 49, 49)]
  point = {c: types.SimpleNamespace(schedule=c, median_s=0.5 + i, iqr_s=0.1 * i,
                                    compile_s=2.0 ** i, num_samples=10 + i)
           for i, c in enumerate(cal + held)}
  prof = types.SimpleNamespace(curve=lambda kind, batch: list(point.values()))
  model = types.SimpleNamespace(predict=lambda c: 4.0, params={"a": 1.0}, calibration=cal)
  monkeypatch.setattr(lm, "measure_calibration", lambda *a, **k: prof)
  monkeypatch.setattr(lm, "measure_with_full", lambda *a, **k: ([3.85, 4.5], None))
  monkeypatch.setattr(lm, "fit_on", lambda *a, **k: model)
  rows, measured = cs.run_method(cfg, None, "pomt", grid, {(3, 0): cal}, cal, held, 1, None, 1)
  (r,) = rows
  assert (r["size"], r["draw"], r["compile_s"], r["timed_s"]) == (3, 0, 1 + 2 + 4,
                                                                  10 * 0.5 + 11 * 1.5 + 12 * 2.5)
  assert r["reductions"] == 1.0      # (1, 2 and 0 reductions)
  assert r["heldout"] == lm.relative_errors([4.0, 4.0], [3.5, 4.5])
  assert r["noise_floor"] == lm.relative_errors([3.85, 4.5], [3.5, 4.5])
  assert r["noise_floor"]["median"] == pytest.approx(0.05)
  assert measured == [{"counts": [65, 33, 33], "measured_s": 3.5, "iqr_s": pytest.approx(0.3)},
                      {"counts": [65, 49, 49], "measured_s": 4.5, "iqr_s": pytest.approx(0.4)}]


def test_profile_speed_rows_by_hand(tmp_path, monkeypatch, capsys):
  """Mutation audit: the seven configurations as specified (threads, adaptive, per-block, the
  cache only for the last two), each row's sums and its own component's steps, the model-mode
  rows against the default run and the adaptive repeat, on profiles made by hand."""
  import types  # pylint: disable=g-import-not-at-top
  from benchmarks import profile_speed as ps  # pylint: disable=g-import-not-at-top
  steps = [[(17, 13), (9, 5)], [(17, 13)], [(17, 13), (13, 9)], [(9, 5)], [(17, 13)],
           [(17, 13), (9, 5)], []]
  calls = []

  def run_profile(spec, compile_cache_dir=None, **kw):
    i = len(calls)
    calls.append((spec.mode, spec.threads, spec.adaptive, compile_cache_dir))
    comp, other = ("block", "model") if spec.mode == "block" else ("model", "block")
    found = [{"n_from": a, "n_to": b, "component": comp} for a, b in steps[i]]
    return (types.SimpleNamespace(
        points=[types.SimpleNamespace(compile_s=1.0 + i, samples_s=[0.25, 0.5])] * 3,
        steps=found + [{"n_from": 99, "n_to": 98, "component": other}]),)

  monkeypatch.setattr(ps.runner, "run_profile", run_profile)
  cache = str(tmp_path / "cache")
  doc = ps.main(common.parse(ps.define_flags, ["--tokens=17,9", "--threads=3",
                                               f"--compile_cache_dir={cache}",
                                               f"--out={tmp_path / 'o.json'}"]))
  assert calls == [("model", 1, False, None), ("model", 3, False, None), ("model", 3, True, None),
                   ("block", 3, False, None), ("model", 3, True, None),
                   ("model", 3, True, cache), ("model", 3, True, cache)]
  rows = doc["rows"]
  assert [(r["compile"], r["run"], r["graphs"], r["component"]) for r in rows[:2]] == [
      (3.0, 2.25, 3, "model"), (6.0, 2.25, 3, "model")]
  assert [r["steps"] for r in rows] == [[list(s) for s in v] for v in steps]
  assert rows[3]["component"] == "block" and "vs_default" not in rows[3]
  assert [tuple(r["vs_default"].values()) for r in rows if "vs_default" in r] == [
      (1, 1, 0), (1, 1, 1), (1, 1, 0), (2, 0, 0), (0, 2, 0)]
  assert doc["adaptive_repeat"] == {"identical": False, "shared": 1, "of": 2}
  assert doc["token_counts"] == [17, 9] and doc["threads"] == 3
  assert "  adaptive run 1 vs run 2: differ (1 shared of 2)\n" in capsys.readouterr().out


def test_edge_speed_rows_and_table_by_hand(tmp_path, capsys, monkeypatch):
  # Every row field from the (faked) timings, modules and plans: ms, ratio, MB, samples, the
  # weights file of the args module alone, the compile time of the module, the auto plan a
  # named driver repeats (kept as auto), the rounds, the table's lines.
  import json  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import edge_speed  # pylint: disable=g-import-not-at-top
  from experiments import common  # pylint: disable=g-import-not-at-top
  from vitprune import iree_build  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(iree_build, "usable_cores", lambda: 1)   # auto: local-sync, unsharded
  rounds = []

  def modules(cfg, params, schedule, reducer, batch, weights, plans):
    mb = 0.5 if weights == "args" else 1.5
    info = {"compile_s": 0.25 if weights == "args" else 0.75, "flags": ["--f"],
            "fallback": weights == "baked"}
    low = types.SimpleNamespace(weight_index=[0, 2])
    return {(p["profile"], p["shards"]): (low, b"\0" * int(mb * 2**20), info) for p in plans}

  def measure(calls, tcfg):
    rounds.append(tcfg.rounds)
    m = types.SimpleNamespace
    return {k: m(median=0.004, iqr=0.0005, samples=[0] * 6) if k == "jax" else
            m(median=0.001 if k[0] == "args" else 0.002, iqr=0.0003, samples=[0] * 9)
            for k in calls}

  monkeypatch.setattr(edge_speed, "_jax_call", lambda *a: (lambda: None, 1.5))
  monkeypatch.setattr(edge_speed, "_iree_modules", modules)
  monkeypatch.setattr(edge_speed, "_iree_call", lambda *a: (lambda: None))
  monkeypatch.setattr(edge_speed, "measure_interleaved", measure)
  out = tmp_path / "edge.json"
  res = edge_speed.main(common.parse(edge_speed.define_flags, [
      "--models=test_tiny_vit", "--batch_sizes=2", "--schedules=test_tiny_vit=keep@1:9",
      "--baked=test_tiny_vit", "--drivers=auto,local-sync,local-task", "--rounds=2",
      "--min_run_time=0.01", f"--out={out}"]))
  assert rounds == [2, 2] and res["rounds"] == 2 and res["min_run_time"] == 0.01
  rows = json.loads(out.read_text())["rows"]
  assert [(r["schedule"], r["weights"], r["driver"], r["auto"], r["profile"]) for r in rows] == [
      (s, w, d, d == "local-sync", p) for s in ("full", "keep@1:9") for w in ("args", "baked")
      for d, p in (("local-sync", "latency"), ("local-task", "throughput"))]
  _, params, _ = common.load_model("test_tiny_vit", None)
  leaves = jax.tree.leaves(params)
  wmb = 4 * (leaves[0].size + leaves[2].size) / 2**20
  for r in rows:
    args = r["weights"] == "args"
    assert r["jax_median_ms"] == pytest.approx(4.0) and r["jax_iqr_ms"] == pytest.approx(0.5)
    assert r["iree_median_ms"] == pytest.approx(1.0 if args else 2.0)
    assert r["iree_iqr_ms"] == pytest.approx(0.3) and r["jax_compile_s"] == 1.5
    assert r["ratio"] == pytest.approx(0.25 if args else 0.5)
    assert r["iree_compile_s"] == (0.25 if args else 0.75)
    assert r["iree_fallback"] == (not args) and r["iree_flags"] == ["--f"]
    assert r["samples"] == {"jax": 6, "iree": 9} and r["shards"] == 1
    assert r["module_mb"] == (0.5 if args else 1.5)
    assert r["weights_file_mb"] == (wmb if args else 0)
  lines = edge_speed.table(res).splitlines()
  assert lines[1] == "|" + "---|" * 11 and len(lines) == 2 + 8
  assert lines[1].count("|") == lines[0].count("|")
  assert lines[-1] == ("| test_tiny_vit | 2 | keep@1:9 (pomt) | baked | local-task | "
                       "4.000 (0.500) | 2.000 (0.300) | 0.50x | 0.8 | 1.50 | 0.00 |")
  assert lines[2] == ("| test_tiny_vit | 2 | full | args | local-sync (auto) | 4.000 (0.500) | "
                      f"1.000 (0.300) | 0.25x | 0.2 | 0.50 | {wmb:.2f} |")
  assert "\n".join(lines) in capsys.readouterr().out


def test_edge_speed_modules_lower_once_per_batch_with_the_reducer_where_it_prunes(monkeypatch):
  # A sharded plan lowers batch / shards images, each batch once; the reducer goes in where
  # the schedule removes tokens, at the embedding (no reduction layer) too, and not unpruned.
  from benchmarks import edge_speed  # pylint: disable=g-import-not-at-top
  from vitprune import iree_build  # pylint: disable=g-import-not-at-top
  from vitprune.registry import get_config  # pylint: disable=g-import-not-at-top
  from vitprune.schedule import parse_schedule  # pylint: disable=g-import-not-at-top
  lowered, compiled = [], []

  def lower(cfg, params, schedule=None, reducer=None, batch_size=None, weights=None):
    lowered.append((schedule.counts, reducer, batch_size, weights))
    return type("Low", (), {"mlir": f"m{batch_size}"})()

  def compile_module(mlir, target, profile=None):
    compiled.append((mlir, profile))
    return b"blob", {"compile_s": 0.0}

  monkeypatch.setattr(iree_build, "lower", lower)
  monkeypatch.setattr(iree_build, "compile_module", compile_module)
  cfg = get_config("test_tiny_vit")
  plans = [{"profile": "latency", "shards": 2}, {"profile": "throughput", "shards": 2},
           {"profile": "latency", "shards": 1}, {"profile": "latency", "shards": 2}]
  for text, reducer in (("embed:9", "R"), ("full", None)):
    lowered.clear()
    compiled.clear()
    mods = edge_speed._iree_modules(cfg, None, parse_schedule(cfg, text), "R", 4, "baked",
                                    plans)
    counts = parse_schedule(cfg, text).counts
    assert lowered == [(counts, reducer, 2, "baked"), (counts, reducer, 4, "baked")]
    assert compiled == [("m2", "latency"), ("m2", "throughput"), ("m4", "latency")]
    assert sorted(mods) == [("latency", 1), ("latency", 2), ("throughput", 2)]
    assert mods["latency", 1][0].mlir == "m4" and mods["throughput", 2][0].mlir == "m2"


def test_edge_speed_refuses_an_empty_driver_list(tmp_path, monkeypatch):
  from benchmarks import edge_speed  # pylint: disable=g-import-not-at-top

  def run(*a):
    raise AssertionError("timed")

  monkeypatch.setattr(edge_speed, "run", run)
  _assert_refused(edge_speed, [
      (["--drivers=", f"--out={tmp_path / 'e.json'}"],
       r"^--drivers takes auto, local-sync, local-task; got \[\]$")], tmp_path)
