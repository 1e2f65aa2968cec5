r"""Does the main job's accuracy floor hold on images the choice never saw?

  python -m benchmarks.holdout_study                        # 10 seeds (~8 min, 2 idle cores)
  python -m benchmarks.holdout_study --seeds=1 --job_flags='--tokens=65,33,17'   # smoke

For each seed S the main job runs as
`python -m experiments.profile --solver=multi --accuracy_floor=F --method=M --seed=S
--holdout_images=K`: S draws K of the evaluation images (class-balanced) that the estimate and
the solve never see; the choice is made on the others (the selection images), and the verify
stage measures the chosen schedule and the unpruned model on both. The floor is met on the
selection images by construction (the job chooses the fastest schedule whose measured accuracy
meets it); what this measures is how often it still holds on the held-out images, against the
unpruned model there, and the optimism of the selection accuracy:
(chosen's selection - held-out accuracy) - (unpruned's selection - held-out accuracy), in
points: the part of the drop on new images the choice itself made (picking, among many
schedules measured on the same images, one those images happen to favour).
With --max_accuracy_drop=D the jobs run with it instead of the floor: the floor on the selection
images is the unpruned model's accuracy there minus D, and on the held-out images the unpruned
model's accuracy there minus D (pruned and unpruned compared on the same images; the unpruned
model meets its own relative floor by definition, so that column is left empty).

Prints a markdown table and writes JSON (--out).
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from absl import flags

from benchmarks import floor_study
from experiments import common
from experiments import profile as profile_cli
from vitprune import atomic
from vitprune import solve
from vitprune import solve_loop
from vitprune import solve_stage

RESULT_FORMAT = "vitprune-holdout-study"    # marks --out files this script may replace
STUDY_FLAGS = floor_study.STUDY_FLAGS + ("holdout_images",)    # the main job's flags it sets


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this benchmark's flags (only when run as a script)."""
  flags.DEFINE_integer("seeds", 10, "Seeds 0..seeds-1, one main job each.", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_integer("holdout_images", 120, "Evaluation images held out of the choice.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_float("accuracy_floor", 0.97, "The main job's --accuracy_floor.", flag_values=fv)
  flags.DEFINE_float("max_accuracy_drop", None, "Run the jobs with this --max_accuracy_drop "
                     "instead of --accuracy_floor.", flag_values=fv)
  flags.DEFINE_string("method", "pomt", "The main job's --method.", flag_values=fv)
  flags.DEFINE_string("job_flags", "", "Further flags of the main job, space-separated.",
                      flag_values=fv)
  flags.DEFINE_string("out", "outputs/benchmark/holdout_study.json", "JSON output.",
                      flag_values=fv)


def run_seed(seed: int, floor: float, method: str, holdout: int, job_flags: Sequence[str],
             out_dir: str, max_drop: Optional[float] = None) -> Dict[str, Any]:
  """One main job -> a result row (`max_drop`: the job's --max_accuracy_drop, `floor` unused)."""
  criterion = (f"--accuracy_floor={floor}" if max_drop is None else
               f"--max_accuracy_drop={max_drop}")
  f = common.parse(profile_cli.define_flags,
                   ["--solver=multi", criterion, f"--method={method}",
                    f"--seed={seed}", f"--holdout_images={holdout}", f"--out_dir={out_dir}",
                    "--noprogress", *job_flags])
  t0 = time.perf_counter()
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      summary = profile_cli.main(f)
  except solve_loop.FloorNotMetError as e:      # an outcome of the study, not a crash
    return {"seed": seed, "floor_not_met": common.one_line(e),
            "wall_s": time.perf_counter() - t0}
  m, held = summary["metric"], summary["holdout"]
  sel_c, sel_u = summary["pruned"][m], summary["unpruned"][m]
  out_c, out_u = held["pruned"][m], held["unpruned"][m]
  if max_drop is not None:       # (the floor the job met on the selection images)
    floor = summary["accuracy_floor"]
  return {"seed": seed, "schedule": summary["schedule"], "counts": summary["counts"],
          "metric": m, "selection_images": summary["num_images"],
          "holdout_images": held["num_images"],
          "selection": {"chosen": sel_c, "unpruned": sel_u},
          "holdout": {"chosen": out_c, "unpruned": out_u,
                      "chosen_interval_95": held["pruned"]["interval_95"],
                      "floor_status": held["floor_status"], "floor": held.get("floor", floor)},
          "floor": floor,
          "floor_met_selection": bool(solve.meets_floor(sel_c, floor)),
          "floor_met_holdout": held["floor_met"],
          "unpruned_floor_met_holdout": (bool(solve.meets_floor(out_u, floor))
                                         if max_drop is None else None),
          "optimism_points": 100 * ((sel_c - out_c) - (sel_u - out_u)),
          "speedup": summary["speedup"], "wall_s": time.perf_counter() - t0}


def table(rows: List[Dict[str, Any]]) -> str:
  out = ["| seed | chosen | selection: chosen / unpruned | held out: chosen (95 % interval) / "
         "unpruned | floor met: selection / held out (unpruned held out) | optimism (points) |",
         "|---|---|---|---|---|---|"]
  yes = lambda b: "-" if b is None else "yes" if b else "no"
  for r in rows:
    if "floor_not_met" in r:
      out.append(f"| {r['seed']} | none: {r['floor_not_met']} | | | | |")
      continue
    s, h = r["selection"], r["holdout"]
    lo, hi = h["chosen_interval_95"]
    out.append(f"| {r['seed']} | {r['schedule']} | {s['chosen']:.4f} / {s['unpruned']:.4f} | "
               f"{h['chosen']:.4f} ({lo:.3f}..{hi:.3f}) / {h['unpruned']:.4f} | "
               f"{yes(r['floor_met_selection'])} / {yes(r['floor_met_holdout'])} "
               f"({yes(r['unpruned_floor_met_holdout'])}) | {r['optimism_points']:+.2f} |")
  return "\n".join(out)


def totals(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
  done = [r for r in rows if "floor_not_met" not in r]
  opt = [r["optimism_points"] for r in done]
  return {"seeds": len(rows), "chosen": len(done),
          "floor_met_selection": sum(r["floor_met_selection"] for r in done),
          "floor_met_holdout": sum(r["floor_met_holdout"] for r in done),
          "unpruned_floor_met_holdout": (   # (None with a drop: the unpruned meets its own)
              None if any(r["unpruned_floor_met_holdout"] is None for r in done) else
              sum(r["unpruned_floor_met_holdout"] for r in done)),
          # where the held-out interval put the chosen graph against the floor there (with a
          # drop: the paired interval of the change; "fails": the whole interval below it)
          "holdout_status": {k: sum(r["holdout"]["floor_status"] == k for r in done)
                             for k in ("meets", "straddles", "fails")},
          "optimism_mean": float(np.mean(opt)) if opt else None,
          "optimism_min": float(min(opt)) if opt else None,
          "optimism_max": float(max(opt)) if opt else None}


def main(f: flags.FlagValues) -> List[Dict[str, Any]]:
  """Runs the study, prints the table and writes --out -> the rows."""
  if f.max_accuracy_drop is not None:
    if f["accuracy_floor"].present:
      raise ValueError("give --accuracy_floor or --max_accuracy_drop, not both")
    solve_stage.check_accuracy_drop(f.max_accuracy_drop, "--max_accuracy_drop")
  else:               # (0 started every main job: ten of them, minutes each)
    floor_study.check_study_floor(f.accuracy_floor)
  atomic.check_output_json(f.out, RESULT_FORMAT, "out")
  job_flags = floor_study.split_job_flags(f.job_flags, STUDY_FLAGS)
  rows = []
  with tempfile.TemporaryDirectory(prefix="holdout_study_") as tmp:
    for seed in range(f.seeds):
      row = run_seed(seed, f.accuracy_floor, f.method, f.holdout_images, job_flags,
                     os.path.join(tmp, f"seed{seed}"), f.max_accuracy_drop)
      rows.append(row)
      print(f"seed {seed}: {row.get('schedule', row.get('floor_not_met'))}, wall "
            f"{row['wall_s']:.0f} s", file=sys.stderr)
  tot = totals(rows)
  print(table(rows))
  if tot["chosen"]:
    what = (f"floor {f.accuracy_floor}" if f.max_accuracy_drop is None else
            f"the floor {f.max_accuracy_drop:g} below the unpruned model (on the same images)")
    unpruned = ("" if f.max_accuracy_drop is not None else
                f" (the unpruned model there: {tot['unpruned_floor_met_holdout']}/"
                f"{tot['chosen']})")
    print(f"\n{what} met by the chosen schedule: {tot['floor_met_selection']}/"
          f"{tot['chosen']} on the selection images, {tot['floor_met_holdout']}/{tot['chosen']} "
          f"on the held-out ones{unpruned}; optimism mean {tot['optimism_mean']:+.2f} points "
          f"(min {tot['optimism_min']:+.2f}, max {tot['optimism_max']:+.2f}); the held-out "
          f"{'paired ' if f.max_accuracy_drop is not None else ''}95% interval "
          + ", ".join(f"{v} {k}" for k, v in tot["holdout_status"].items()) + " the floor")
  common.write_result(f.out, {
      "format": RESULT_FORMAT, "command": common.command_line("benchmarks.holdout_study", f),
      "method": f.method, "floor": f.accuracy_floor if f.max_accuracy_drop is None else None,
      "max_accuracy_drop": f.max_accuracy_drop, "holdout_images": f.holdout_images,
      "job_flags": f.job_flags, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
      "totals": tot, "rows": rows}, RESULT_FORMAT, indent=1)
  print(f"wrote {f.out}")
  return rows


if __name__ == "__main__":
  common.run(main, define_flags)
