r"""Schedule solver CLI: a latency profile + an accuracy estimate -> a token schedule.

  # The paper's utility argmax (POMT: reduce at block 3 to n*), whole-model L(n) and A(n):
  python -m experiments.solve --profile=outputs/profile/P.json --estimate=outputs/estimate/E.json
  # Multi-layer: exact Pareto frontier over per-layer schedules from the per-block table and the
  # per-layer sensitivity table, fastest schedule keeping predicted accuracy >= 0.9:
  python -m experiments.solve --mode=multi --profile=BLOCKS.json --estimate=SENS.json \
      --accuracy_floor=0.9 [--step_bottoms_only]

Writes `<out_dir>/<model>_<mode>_b<batch>.{json,png}` (format in `vitprune/records/solution.py`) and
prints the chosen schedule (compact text, usable as `--schedule` elsewhere) with its predicted
latency and accuracy.
"""
from __future__ import annotations

import sys

from absl import app
from absl import flags

from experiments import common
from vitprune import solve_stage
from vitprune.profile import records
from vitprune.records.estimate import read_estimate
from vitprune.records.solution import summary_lines, write_solution

_PROFILE = flags.DEFINE_string("profile", None, "Latency profile JSON (experiments.profile).")
_ESTIMATE = flags.DEFINE_string("estimate", None, "Estimate JSON (experiments.estimate).")
_MODE = flags.DEFINE_enum("mode", "paper", ["paper", "multi"],
                          "paper: utility argmax over n (one reduction at --layer); multi: "
                          "per-layer schedules by dynamic programming.")
_ALPHA = flags.DEFINE_float("alpha", 0.5, "Utility weight of latency, in [0, 1].")
_LAYER = flags.DEFINE_integer("layer", 3, "Paper mode: the reducing block.")
_FLOOR = flags.DEFINE_float("accuracy_floor", None,
                            "Multi mode: fastest schedule with predicted accuracy >= this.")
_BUDGET = flags.DEFINE_float("latency_budget", None,
                             "Multi mode: most accurate schedule with predicted latency <= this "
                             "many seconds.")
_BATCH = flags.DEFINE_integer("batch_size", None,
                              "Profile batch size (default: the profile's only one, else the "
                              "estimate's).")
_METRIC = flags.DEFINE_enum("metric", None, ["accuracy", "agreement"],
                            "Estimate metric (default: accuracy if labelled, else agreement).")
_METHOD = flags.DEFINE_string("method", None,
                              "Paper mode: reducer recorded for deployment (default: the "
                              "estimate's method when it reduced in a block, else pomt).")
_ACC_MODEL = flags.DEFINE_enum("accuracy_model", "incremental", ["incremental", "additive"],
                               "Multi mode: how per-layer sensitivities combine.")
_MONOTONE = flags.DEFINE_bool("monotone", True,
                              "Multi mode: pessimistic monotone envelope of the drops.")
_BOTTOMS = flags.DEFINE_bool("step_bottoms_only", False,
                             "Multi mode: only counts at the bottom of a latency step (+ all).")
_STEP_K = flags.DEFINE_float("step_k", 4.0, "Step-bottom noise multiplier.")
_ALLOW_BATCH = flags.DEFINE_bool("allow_batch_mismatch", False,
                                 "Combine a profile and an estimate of different batch sizes.")
_OUT_DIR = flags.DEFINE_string("out_dir", "outputs/solve", "Output directory.")


def run(argv_flags=flags.FLAGS):
  """Reads the two records, solves, writes the outputs; returns (Solution, paths)."""
  f = argv_flags
  if not f.profile or not f.estimate:
    raise ValueError("--profile and --estimate are required")
  if f.mode == "paper":
    for name in ("accuracy_floor", "latency_budget"):
      if f[name].value is not None:
        raise ValueError(f"--{name} applies to --mode=multi only")
  profile, estimate = records.load(f.profile), read_estimate(f.estimate)
  if f.mode == "paper":
    sol = solve_stage.solve_paper(
        profile, estimate, alpha=f.alpha, layer=f.layer, batch_size=f.batch_size,
        metric=f.metric, method=f.method, allow_batch_mismatch=f.allow_batch_mismatch)
  else:
    sol = solve_stage.solve_multilayer(
        profile, estimate, accuracy_floor=f.accuracy_floor, latency_budget=f.latency_budget,
        alpha=f.alpha, batch_size=f.batch_size, metric=f.metric,
        accuracy_model=f.accuracy_model, monotone=f.monotone,
        step_bottoms_only=f.step_bottoms_only, step_k=f.step_k,
        allow_batch_mismatch=f.allow_batch_mismatch)
  paths = write_solution(sol, f.out_dir)
  for line in summary_lines(sol):
    print(line)
  print(f"wrote {paths['json']} and {paths['png']}")
  return sol, paths


def main(argv):
  common.quiet_logging()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    run()
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
