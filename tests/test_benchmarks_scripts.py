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
