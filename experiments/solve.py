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

from absl import flags

from experiments import common
from vitprune import solve_stage
from vitprune.profile import records
from vitprune.records.estimate import read_estimate
from vitprune.records.solution import summary_lines, write_solution


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this CLI's flags on `fv` (only when run as a script, or into a fresh FlagValues
  via `common.parse`)."""
  flags.DEFINE_string("profile", None, "Latency profile JSON (experiments.profile).", flag_values=fv)
  flags.DEFINE_string("estimate", None, "Estimate JSON (experiments.estimate).", flag_values=fv)
  flags.DEFINE_enum("mode", "paper", ["paper", "multi"],
                            "paper: utility argmax over n (one reduction at --layer); multi: "
                            "per-layer schedules by dynamic programming.", flag_values=fv)
  flags.DEFINE_float("alpha", 0.5, "Utility weight of latency, in [0, 1].", flag_values=fv)
  flags.DEFINE_integer("layer", 3, "Paper mode: the reducing block.", flag_values=fv)
  flags.DEFINE_float("accuracy_floor", None,
                              "Multi mode: fastest schedule with predicted accuracy >= this.", flag_values=fv)
  flags.DEFINE_float("latency_budget", None,
                               "Multi mode: most accurate schedule with predicted latency <= this "
                               "many seconds.", flag_values=fv)
  flags.DEFINE_integer("batch_size", None,
                                "Profile batch size (default: the profile's only one, else the "
                                "estimate's).", flag_values=fv)
  flags.DEFINE_enum("metric", None, ["accuracy", "agreement"],
                              "Estimate metric (default: accuracy if labelled, else agreement).", flag_values=fv)
  flags.DEFINE_string("method", None,
                                "Paper mode: reducer recorded for deployment (default: the "
                                "estimate's method when it reduced in a block, else pomt).", flag_values=fv)
  flags.DEFINE_enum("accuracy_model", "incremental", ["incremental", "additive"],
                                 "Multi mode: how per-layer sensitivities combine.", flag_values=fv)
  flags.DEFINE_bool("monotone", True,
                                "Multi mode: pessimistic monotone envelope of the drops.", flag_values=fv)
  flags.DEFINE_bool("step_bottoms_only", False,
                               "Multi mode: only counts at the bottom of a latency step (+ all).", flag_values=fv)
  flags.DEFINE_float("step_k", 4.0, "Step-bottom noise multiplier.", flag_values=fv)
  flags.DEFINE_bool("allow_batch_mismatch", False,
                                   "Combine a profile and an estimate of different batch sizes.", flag_values=fv)
  flags.DEFINE_string("out_dir", "outputs/solve", "Output directory.", flag_values=fv)


def main(f: flags.FlagValues):
  """Checks the flags and the output directory, reads the two records, solves, writes the
  outputs; returns (Solution, paths)."""
  if not f.profile or not f.estimate:
    raise ValueError("--profile and --estimate are required")
  if f.mode == "paper":
    for name in ("accuracy_floor", "latency_budget"):
      if f[name].value is not None:
        raise ValueError(f"--{name} applies to --mode=multi only")
  common.check_output_dir(f.out_dir)
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


if __name__ == "__main__":
  common.run(main, define_flags)
