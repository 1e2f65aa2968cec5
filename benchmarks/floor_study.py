r"""The main job's choice under an accuracy floor, over seeds: is the floor met, does the choice
hold when re-timed, and what do calibration and in-loop timing cost?

  python -m benchmarks.floor_study                          # 10 seeds (~35 min, 2 idle cores)
  python -m benchmarks.floor_study --seeds=1 --job_flags='--tokens=65,33,17 --num_images=40'

For each seed S the main job runs exactly as
`python -m experiments.profile --solver=multi --accuracy_floor=F --method=M --seed=S` (the seed
draws the calibration schedules and the timing order, and with --num_images in --job_flags the
evaluation subset too: then each seed's row is measured on its own images, which the summary
says); then
  1. floor: the chosen schedule's accuracy measured by the job's verify stage (all images the
     job evaluates) is compared with the floor;
  2. re-timed: every schedule the job checked on the data whose measured accuracy meets the
     floor is compiled and timed again, together, in one fresh shuffled measurement; the chosen
     schedule's median over the fastest one's (target <= 1.05). Where that is above 1, the row
     says whether the job's in-loop timing timed the fastest one too and, if so, the ratio it
     measured (the JSON keeps every checked schedule with its in-loop latency);
  3. cost: the uniform curve alone (stage 1 without calibration schedules: same counts, same
     timing protocol) is measured right after the job; overhead = (stage-1 seconds - uniform
     curve seconds) + in-loop timing seconds, as a share of the job's wall time (target <= 30 %).

Prints a markdown table and writes JSON (--out). Run on an idle machine.
"""
from __future__ import annotations

import contextlib
import io
import os
import shlex
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from absl import flags

from experiments import common
from experiments import profile as profile_cli
from vitprune import atomic
from vitprune import pipeline
from vitprune import solve, solve_loop
from vitprune.profile import latency_model
from vitprune.profile import runner
from vitprune.records.solution import meets_measured_floor, read_solution
from vitprune.reduce.methods import make_reducer

def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this benchmark's flags (only when run as a script)."""
  flags.DEFINE_integer("seeds", 10, "Seeds 0..seeds-1, one main job each.", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_float("accuracy_floor", 0.97, "The main job's --accuracy_floor.", flag_values=fv)
  flags.DEFINE_string("method", "pomt", "The main job's --method.", flag_values=fv)
  flags.DEFINE_string("job_flags", "", "Further flags of the main job, space-separated (e.g. "
                      "'--tokens=65,33,17 --num_images=40' for a smoke run).", flag_values=fv)
  flags.DEFINE_string("out", "outputs/benchmark/floor_study.json", "JSON output.",
                      flag_values=fv)


RESULT_FORMAT = "vitprune-floor-study"    # marks --out files this script may replace


def job_argv(seed: int, floor: float, method: str, job_flags: Sequence[str],
             out_dir: Optional[str] = None) -> List[str]:
  """The main job's command line for one seed (without --out_dir when `out_dir` is None)."""
  out = [] if out_dir is None else [f"--out_dir={out_dir}"]
  return ["--solver=multi", f"--accuracy_floor={floor}", f"--method={method}", f"--seed={seed}",
          *out, "--noprogress", *job_flags]


def check_study_floor(floor: float) -> None:
  """ValueError unless `floor` (--accuracy_floor) is in (0, 1]: every schedule meets 0."""
  if not 0.0 < floor <= 1.0:
    raise ValueError(f"--accuracy_floor={floor}: the study needs a floor in (0, 1] (every "
                     "schedule meets a floor of 0)")


def check_job(floor: float, method: str, job_flags: Sequence[str]) -> None:
  """ValueError before any job runs when the main job would refuse its flags: the study's own
  (--accuracy_floor, --method) as the job words it, --job_flags' named as theirs."""
  check_study_floor(floor)

  def check(extra: Sequence[str]) -> None:
    f = common.parse(profile_cli.define_flags, job_argv(0, floor, method, extra))
    profile_cli.check_mode_flags(f)
    profile_cli.pipeline_from_flags(f)

  try:                          # (one load of the model and data when the flags are right)
    check(job_flags)
  except (ValueError, KeyError, OSError) as e:
    if not job_flags:
      raise
    check([])                   # the study's own flags (their error as the job words it)
    raise ValueError(f"--job_flags: {common.one_line(e)}") from None


def run_seed(seed: int, floor: float, method: str, job_flags: Sequence[str], out_dir: str
             ) -> Dict[str, Any]:
  """One main job + its checks -> a result row."""
  f = common.parse(profile_cli.define_flags, job_argv(seed, floor, method, job_flags, out_dir))
  t0 = time.perf_counter()
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      summary = profile_cli.main(f)
  except solve_loop.FloorNotMetError as e:      # an outcome of the study, not a crash
    return {"seed": seed, "floor": floor, "meets_floor": False, "floor_not_met": str(e),
            "retime": None, "wall_s": time.perf_counter() - t0}
  wall = time.perf_counter() - t0
  cfg, params, _, spec, _ = profile_cli.pipeline_from_flags(f)
  solution = read_solution(summary["files"]["solution"])
  metric = summary["metric"]
  measured = summary["pruned"][metric]

  t0 = time.perf_counter()
  latency_model.measure_calibration(
      cfg, params, method=method, batch_size=spec.batch_size, dtype=spec.dtype,
      tokens=sorted(set(spec.grid(cfg)) | {cfg.num_tokens}), schedules=[],
      timing_cfg=spec.timing, threads=spec.threads, seed=seed)
  uniform_s = time.perf_counter() - t0
  seconds = summary["seconds"]
  overhead = max(seconds["profile"] - uniform_s, 0.0) + seconds.get("in_loop", 0.0)

  meeting = {c.counts: c for c in solution.checked      # (by the job's own rule: with
             if meets_measured_floor(c, solution.settings)}  # --floor_confidence, intervals)
  chosen = tuple(summary["counts"])
  retime = None
  if chosen in meeting and len(meeting) > 1:
    order = sorted(meeting)
    medians = pipeline.ScheduleTimer(cfg, params, spec, make_reducer(method))(order)
    fastest = int(np.argmin(medians))
    loop_s = meeting[order[fastest]].measured_latency_s   # None: the loop did not time it
    chosen_s = meeting[chosen].measured_latency_s         # (nor the chosen: no ratio either)
    retime = {"schedules": len(order),
              "chosen_ms": 1e3 * medians[order.index(chosen)],
              "fastest_ms": 1e3 * medians[fastest],
              "fastest": meeting[order[fastest]].schedule,
              "ratio": medians[order.index(chosen)] / medians[fastest],
              "all_ms": {meeting[c].schedule: 1e3 * m for c, m in zip(order, medians)},
              "fastest_timed_in_loop": loop_s is not None,
              "loop_ratio": (chosen_s / loop_s
                             if loop_s is not None and chosen_s is not None else None)}
  return {"seed": seed, "schedule": summary["schedule"], "counts": list(chosen),
          "basis": summary["basis"], "metric": metric, "floor": floor,
          "measured_accuracy": measured, "meets_floor": bool(solve.meets_floor(measured, floor)),
          "predicted_accuracy": summary["predicted"][metric],
          "unpruned_accuracy": summary["unpruned"][metric], "speedup": summary["speedup"],
          "checked": len(solution.checked), "meeting_floor": len(meeting), "retime": retime,
          "checked_schedules": [{"schedule": c.schedule, "counts": list(c.counts),
                                 "measured_accuracy": c.measured_accuracy,
                                 "loop_ms": (None if c.measured_latency_s is None
                                             else 1e3 * c.measured_latency_s)}
                                for c in solution.checked],
          "calibration_schedules": spec.calibration_schedules,
          "accuracy_refinement": solution.settings.get("accuracy_refinement"),
          "wall_s": wall, "seconds": seconds, "uniform_curve_s": uniform_s,
          "overhead_s": overhead, "overhead_share": overhead / wall}


def _loop_note(rt: Dict[str, Any]) -> str:
  """Where the re-timing found a faster schedule: what the in-loop timing said of the two."""
  if rt["ratio"] <= 1.0:
    return ""
  if not rt.get("fastest_timed_in_loop"):
    return "; the loop did not time the fastest"
  if rt["loop_ratio"] is None:
    return "; the loop did not time the chosen"
  return f"; in the loop x{rt['loop_ratio']:.3f}"


def table(rows: List[Dict[str, Any]]) -> str:
  lines = ["| seed | chosen | measured acc | meets | re-timed chosen / fastest | wall s | "
           "stage 1 s (uniform only) | in-loop s | overhead share |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    rt = r["retime"]
    if "floor_not_met" in r:
      lines.append(f"| {r['seed']} | none: {r['floor_not_met']} | - | NO | n/a | "
                   f"{r['wall_s']:.0f} | - | - | - |")
      continue
    lines.append(
        f"| {r['seed']} | {r['schedule']} | {r['measured_accuracy']:.4f} | "
        f"{'yes' if r['meets_floor'] else 'NO'} | "
        + (f"{rt['ratio']:.3f} ({rt['schedules']} schedules{_loop_note(rt)})" if rt else
           "n/a") + " | "
        f"{r['wall_s']:.0f} | {r['seconds']['profile']:.1f} ({r['uniform_curve_s']:.1f}) | "
        f"{r['seconds'].get('in_loop', 0.0):.1f} | {100 * r['overhead_share']:.1f}% |")
  return "\n".join(lines)


def pooled_errors(rounds: Sequence[Dict[str, Any]], key: Optional[str] = None
                  ) -> Dict[str, Any]:
  """Pools per-round accuracy errors (`settings['accuracy_refinement']['rounds']`, or each
  round's `key` entry, e.g. "anchored") -> {"n", "mean", "max"} in points (mean weighted by the
  schedules each round measured)."""
  parts = [e for e in (r if key is None else r.get(key, {}) for r in rounds)
           if e.get("num_schedules")]
  n = sum(p["num_schedules"] for p in parts)
  if not n:
    return {"n": 0, "mean": None, "max": None}
  return {"n": n, "mean": sum(p["num_schedules"] * p["mean_abs_points"] for p in parts) / n,
          "max": max(p["max_abs_points"] for p in parts)}


def refinement_summary(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
  """Where the jobs refined the accuracy model (--job_flags=--refine_accuracy_rounds=R): the
  errors predicted before measuring, round 0 (the uncorrected frontier) and later rounds, of
  the corrected model and of the anchored per-image prediction, per seed and pooled."""
  def cells(first, later):
    return {"round0": pooled_errors(first), "round0_anchored": pooled_errors(first, "anchored"),
            "later": pooled_errors(later), "later_anchored": pooled_errors(later, "anchored")}

  per_seed, all_first, all_later = [], [], []
  for r in rows:
    ref = r.get("accuracy_refinement")
    if not ref:
      continue
    first, later = ref["rounds"][:1], ref["rounds"][1:]
    all_first += first
    all_later += later
    per_seed.append(dict(cells(first, later), seed=r["seed"]))
  if not per_seed:
    return {}
  return {"seeds": per_seed, "pooled": cells(all_first, all_later)}


def refinement_table(summary: Dict[str, Any]) -> str:
  """Markdown: per seed and pooled, the refinement's errors predicted before measuring."""
  def cell(e):
    return "-" if not e["n"] else f"{e['mean']:.2f} / {e['max']:.2f} ({e['n']})"

  lines = ["| seed | round 0: corrected model | round 0: anchored | later rounds: corrected "
           "model | later rounds: anchored |", "|---|---|---|---|---|"]
  for row in summary["seeds"] + [dict(summary["pooled"], seed="all")]:
    lines.append(f"| {row['seed']} | {cell(row['round0'])} | {cell(row['round0_anchored'])} | "
                 f"{cell(row['later'])} | {cell(row['later_anchored'])} |")
  return "\n".join(lines)


def totals(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
  ratios = [r["retime"]["ratio"] for r in rows if r["retime"]]
  shares = [r["overhead_share"] for r in rows if "overhead_share" in r]
  return {"seeds": len(rows), "meets_floor": sum(r["meets_floor"] for r in rows),
          "retimed": len(ratios), "within_5pct": sum(x <= 1.05 for x in ratios),
          "ratio_median": float(np.median(ratios)) if ratios else None,
          "ratio_max": float(max(ratios)) if ratios else None,
          "overhead_share_median": float(np.median(shares)) if shares else None,
          "overhead_share_max": float(max(shares)) if shares else None}


# The main job's flags the study owns (a --job_flags copy would override them unseen).
STUDY_FLAGS = ("solver", "accuracy_floor", "latency_budget", "max_accuracy_drop", "method", "seed",
               "out_dir", "mode")


def split_job_flags(text: str, study_flags: Sequence[str] = STUDY_FLAGS) -> List[str]:
  """--job_flags split as a shell would, checked (`check_job_flags`); errors name --job_flags."""
  try:
    job_flags = shlex.split(text)
  except ValueError as e:                       # e.g. "No closing quotation"
    raise ValueError(f"--job_flags={text!r}: {e}") from None
  check_job_flags(job_flags, study_flags)
  return job_flags


def check_job_flags(job_flags: Sequence[str], study_flags: Sequence[str] = STUDY_FLAGS
                    ) -> None:
  """ValueError when `job_flags` (parsed as the main job parses them: `-flag`, `--noflag`
  alike) are not the main job's flags, hold other arguments (ignored: the study would run
  without them), or set a flag the study owns (`study_flags`: STUDY_FLAGS and any a study adds):
  its rows would report the study's floor, method and seed while the jobs ran with others."""
  try:
    given = common.parse(profile_cli.define_flags, list(job_flags))
  except (flags.Error, ValueError) as e:
    raise ValueError(f"--job_flags: {common.one_line(e)}") from None
  owned = [n for n in study_flags if given[n].present]
  if owned:
    added = "".join(f", --{n}" for n in study_flags if n not in STUDY_FLAGS)
    raise ValueError(f"--job_flags sets {', '.join('--' + n for n in owned)}, which the study "
                     "owns (the criterion: --accuracy_floor, --latency_budget, "
                     "--max_accuracy_drop; --method, seeds 0..--seeds-1, the multi solver, "
                     f"a temporary output folder{added})")


def main(f: flags.FlagValues) -> List[Dict[str, Any]]:
  """Runs the study, prints the table and writes --out -> the rows."""
  atomic.check_output_json(f.out, RESULT_FORMAT, "out")
  job_flags = split_job_flags(f.job_flags)
  check_job(f.accuracy_floor, f.method, job_flags)
  rows = []
  with tempfile.TemporaryDirectory(prefix="floor_study_") as tmp:
    for seed in range(f.seeds):
      row = run_seed(seed, f.accuracy_floor, f.method, job_flags,
                     os.path.join(tmp, f"seed{seed}"))
      rows.append(row)
      print(f"seed {seed}: {row['floor_not_met']}" if "floor_not_met" in row else
            f"seed {seed}: {row['schedule']} {row['measured_accuracy']:.4f} "
            f"(floor {row['floor']}), wall {row['wall_s']:.0f} s, overhead "
            f"{100 * row['overhead_share']:.1f}%", file=sys.stderr)
  tot = totals(rows)
  print(table(rows))
  ratio = ("n/a" if tot["ratio_median"] is None else
           f"median ratio {tot['ratio_median']:.3f}, max {tot['ratio_max']:.3f}")
  print(f"\nfloor met on measurement: {tot['meets_floor']}/{tot['seeds']} seeds; re-timed "
        f"chosen within 5% of the fastest schedule meeting the floor: {tot['within_5pct']}/"
        f"{tot['retimed']} ({ratio})" + (
            "" if tot["overhead_share_median"] is None else
            f"; calibration + in-loop timing: median {100 * tot['overhead_share_median']:.1f}%, "
            f"max {100 * tot['overhead_share_max']:.1f}% of the main job's wall time"))
  subset = common.parse(profile_cli.define_flags, list(job_flags)).num_images
  if subset is not None:
    print(f"(each seed drew its own {subset}-image subset: --num_images in --job_flags)")
  refined = refinement_summary(rows)
  if refined:
    print("\naccuracy |error| mean / max points (schedules), predicted before measuring:")
    print(refinement_table(refined))
  machine = runner.machine_info()
  print(runner.machine_line(machine))
  common.write_result(f.out, {
      "format": RESULT_FORMAT, "command": common.command_line("benchmarks.floor_study", f),
      "machine": machine, "method": f.method, "floor": f.accuracy_floor, "job_flags": f.job_flags,
      "subset_per_seed": subset is not None,
      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "totals": tot,
      "refinement": refined or None, "rows": rows},
      RESULT_FORMAT, indent=1)
  print(f"wrote {f.out}")
  return rows


if __name__ == "__main__":
  common.run(main, define_flags)
