"""Smoke tests of the scripts under benchmarks/ (their numbers are not asserted: only that they
run end to end and print their tables)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_profile_speed_runs_on_a_tiny_grid():
  r = subprocess.run([sys.executable, "-m", "benchmarks.profile_speed", "--tokens=17,9",
                      "--min_run_time=0.005"], cwd=ROOT, capture_output=True, text=True,
                     timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 0, r.stderr[-2000:]
  for row in ("default (model, 1 thread)", "per-block + parallel",
              "adaptive + parallel + cache (warm)", "step reproducibility"):
    assert row in r.stdout


def test_gpu_suite_rejects_unknown_stages():
  r = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "nosuch"], cwd=ROOT,
                     capture_output=True, text=True, timeout=30)
  assert r.returncode == 2 and "unknown stage nosuch" in r.stderr


def test_edge_speed_runs_on_a_tiny_model(tmp_path):
  out = tmp_path / "edge.json"
  r = subprocess.run([sys.executable, "-m", "benchmarks.edge_speed", "--models=test_tiny_vit",
                      "--batch_sizes=1", "--schedules=test_tiny_vit=keep@1:9", "--baked=",
                      "--min_run_time=0.01", f"--out={out}"], cwd=ROOT, capture_output=True,
                     text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 0, r.stderr[-2000:]
  assert "| test_tiny_vit | 1 | keep@1:9 | args |" in r.stdout
  import json  # pylint: disable=g-import-not-at-top
  rows = json.loads(out.read_text())["rows"]
  assert [(x["schedule"], x["weights"]) for x in rows] == [("full", "args"), ("keep@1:9", "args")]
  assert all(x["iree_median_ms"] > 0 and x["module_mb"] > 0 for x in rows)


def test_predictor_accuracy_quick(tmp_path):
  out = tmp_path / "pred.json"
  r = subprocess.run([sys.executable, "-m", "benchmarks.predictor_accuracy", "--quick",
                      f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=900,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 0, r.stderr[-2000:]
  assert "| vit_digits | 1 | pomt |" in r.stdout and "block sum" in r.stdout
  import json  # pylint: disable=g-import-not-at-top
  (row,) = json.loads(out.read_text())["rows"]
  held = {tuple(s["counts"]) for s in row["schedules"]}
  cal = {tuple(c) for c in row["latency_model"].get("calibration", [])}
  assert len(held) == row["num_heldout"] >= 3 and not held & cal
  for key in ("calibrated", "interleaved", "block_sum"):
    e = row["heldout"][key]
    assert e["count"] == row["num_heldout"] and 0 <= e["within10"] <= 1 and e["p90"] >= e["median"]
  acc = row["frontier"]["accuracy_error_points"]
  assert 0 <= acc["mean"] <= acc["max"]
  assert row["choice"]["meets_floor"] == (row["choice"]["measured_accuracy"] >=
                                          row["choice"]["floor"])
