r"""How many calibration schedules does the latency model of the compiled graph need?

  python -m benchmarks.calibration_size                       # 5 methods (~30 min, 2 idle cores)
  python -m benchmarks.calibration_size --methods=pomt --sizes=4,10 --draws=1 --num_heldout=6 \
      --tokens=65,33,17                                      # smoke run (~20 s)

For each method, ONE shuffled measurement (the main job's timing protocol) times the uniform
curve on the main job's grid, the calibration schedules the main job would draw for every
--sizes value and each of --draws seeds (`latency_model.sample_schedules`, spread over the
final counts), and --num_heldout held-out random schedules (none used for calibration). Every
(size, draw) set is then fitted (`latency_model.fit`, the uniform graphs included, as in the
main job) and scored on the held-out schedules: |relative error| median / p90 / share within
10 %. Because everything comes from one measurement, the machine's drift between measurements
does not count as model error, and sizes are compared on the same held-out timings. The noise
floor (--noise_floor): the held-out graphs timed again in a second shuffled measurement, the
relative difference between the two medians. It carries the noise of both measurements (about
sqrt(2) x one's), so a model scored within one measurement can come in below it, but not far.
Cost per size: the calibration schedules' per-graph compile seconds, summed (they are wall
times of compiles running 2 at a time, so they overlap: compare sizes by them, not with a job's
wall time), and timed seconds (samples x median), per the measurement's own records.

Prints a markdown table and writes JSON (--out). Run on an idle machine.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Dict, List, Tuple

import numpy as np
from absl import flags

from experiments import common
from vitprune import atomic
from vitprune import memory
from vitprune.pipeline import PipelineSpec
from vitprune.profile import latency_model as lm_lib
from vitprune.profile import protocol
from vitprune.profile import runner
from vitprune.schedule import parse_token_grid


RESULT_FORMAT = "vitprune-calibration-size"    # marks --out files this script may replace


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this benchmark's flags."""
  flags.DEFINE_list("methods", ["pomt", "topk", "tome", "evit", "random"],
                    "Token-reduction methods.", flag_values=fv)
  flags.DEFINE_list("sizes", ["4", "6", "8", "10"], "Calibration set sizes to compare.",
                    flag_values=fv)
  flags.DEFINE_integer("draws", 3, "Calibration sets drawn per size (seeds 0..draws-1, as the "
                       "main job's --seed draws them).", lower_bound=1, upper_bound=100,
                       flag_values=fv)
  flags.DEFINE_integer("num_heldout", 30, "Held-out random schedules per method.",
                       lower_bound=1, upper_bound=1000, flag_values=fv)
  flags.DEFINE_string("tokens", None, "Curve and schedule grid (vitprune.schedule."
                      "parse_token_grid syntax; default: the main job's --solver=multi grid).",
                      flag_values=fv)
  flags.DEFINE_integer("batch_size", 1, "Batch size.", lower_bound=1, flag_values=fv)
  flags.DEFINE_float("min_run_time", 0.25, "Seconds of timed calls per graph (the main job's "
                     "default).", flag_values=fv)
  flags.DEFINE_bool("noise_floor", True, "Time the held-out schedules again in a second "
                    "shuffled measurement: the re-measurement error (a model cannot be verified "
                    "below it against a fresh measurement on this machine).", flag_values=fv)
  flags.DEFINE_string("out", "outputs/benchmark/calibration_size.json", "JSON output.",
                      flag_values=fv)


def draw_schedules(cfg, method: str, grid: List[int], sizes: List[int], draws: int,
                   num_heldout: int) -> Tuple[Dict[Tuple[int, int], List], List, List]:
  """-> ({(size, draw): the calibration set the main job would draw with --seed=draw},
  the distinct schedules of all sets, the held-out schedules, none of them in any set).
  ValueError naming the flag when the grid cannot hold that many distinct schedules."""
  limit = lm_lib.method_limit(cfg, method)
  try:
    sets = {(k, d): lm_lib.sample_schedules(cfg.num_tokens, cfg.depth, grid, k, seed=d,
                                            max_remove=limit)
            for k in sizes for d in range(draws)}
  except ValueError as e:
    raise ValueError(f"--sizes / --tokens: {method}: {e}") from None
  pool = sorted({s for v in sets.values() for s in v})
  try:
    held = lm_lib.heldout_schedules(cfg, grid, num_heldout, method=method, exclude=pool,
                                    seed=1000)
  except ValueError as e:
    raise ValueError(f"--num_heldout / --tokens: {method}: {e}") from None
  return sets, pool, held


def run_method(cfg, params, method: str, grid: List[int], sets: Dict[Tuple[int, int], List],
               pool: List, held: List, batch: int, tcfg, threads: int,
               noise_floor: bool = True) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
  """One shuffled measurement of the curve, the `pool` of every set's schedules and the
  held-out schedules (plus one of the held-out ones alone with `noise_floor`) -> (one row per
  (size, draw), the held-out schedules with their measured median and IQR)."""
  t0 = time.perf_counter()
  prof = lm_lib.measure_calibration(cfg, params, method=method, batch_size=batch,
                                    dtype="float32", tokens=grid, schedules=pool + held,
                                    timing_cfg=tcfg, threads=threads, seed=0)
  measure_s = time.perf_counter() - t0
  sched = {p.schedule: p for p in prof.curve("schedule", batch)}
  held_s = [sched[h].median_s for h in held]
  noise = None
  if noise_floor:   # the same held-out graphs timed again: the re-measurement error
    again, _ = lm_lib.measure_with_full(cfg, params, method=method, batch_size=batch,
                                        schedules=held, timing_cfg=tcfg, threads=threads,
                                        seed=1)
    noise = lm_lib.relative_errors(again, held_s)
  rows = []
  for (k, d), cal in sets.items():
    lm = lm_lib.fit_on(prof, cal, batch_size=batch, method=method)
    predicted = [lm.predict(h) for h in held]
    rows.append({"method": method, "size": k, "draw": d,
                 "heldout": lm_lib.relative_errors(predicted, held_s),
                 "predicted_s": predicted, "params": dict(lm.params),
                 "calibration": [list(c) for c in cal],
                 "fitted": [list(c) for c in lm.calibration],
                 "reductions": float(np.mean([sum(b < a for a, b in zip(c, c[1:]))
                                              for c in cal])),
                 "compile_s": float(sum(sched[c].compile_s for c in cal)),
                 "timed_s": float(sum(sched[c].num_samples * sched[c].median_s for c in cal)),
                 "measurement_s": measure_s, "num_heldout": len(held), "noise_floor": noise})
  return rows, [{"counts": list(h), "measured_s": sched[h].median_s, "iqr_s": sched[h].iqr_s}
                for h in held]


def summarize(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """One line per (method, size): medians over the draws (and the worst draw's p90)."""
  out = []
  for key in sorted({(r["method"], r["size"]) for r in rows}):
    rs = [r for r in rows if (r["method"], r["size"]) == key]
    out.append({"method": key[0], "size": key[1], "draws": len(rs),
                "median": float(np.median([r["heldout"]["median"] for r in rs])),
                "p90": float(np.median([r["heldout"]["p90"] for r in rs])),
                "p90_worst": float(max(r["heldout"]["p90"] for r in rs)),
                "within10": float(np.median([r["heldout"]["within10"] for r in rs])),
                "compile_s": float(np.median([r["compile_s"] for r in rs])),
                "timed_s": float(np.median([r["timed_s"] for r in rs])),
                "noise_floor": rs[0]["noise_floor"]})
  return out


def table(summary: List[Dict[str, Any]]) -> str:
  lines = ["| method | calibration schedules | held-out \\|err\\| median / p90 / within 10 % "
           "(median over draws) | worst draw's p90 | summed per-graph compile s (2 "
           "threads, overlapping) | timed s | noise floor: "
           "held-out re-measured, median / p90 |",
           "|---|---|---|---|---|---|---|"]
  for s in summary:
    nf = s["noise_floor"]
    lines.append(f"| {s['method']} | {s['size']} | {100 * s['median']:.1f}% / "
                 f"{100 * s['p90']:.1f}% / {100 * s['within10']:.0f}% | "
                 f"{100 * s['p90_worst']:.1f}% | {s['compile_s']:.1f} | {s['timed_s']:.1f} | "
                 + (f"{100 * nf['median']:.1f}% / {100 * nf['p90']:.1f}% |" if nf else "- |"))
  return "\n".join(lines)


def main(f: flags.FlagValues) -> Dict[str, Any]:
  """Runs the benchmark, prints the table, writes --out -> the JSON document."""
  # Bad input is refused before any work (each check names the flag or value).
  atomic.check_output_json(f.out, RESULT_FORMAT, "out")
  sizes = sorted(set(common.parse_ints(f.sizes, "sizes")))
  for size in (sizes[0], sizes[-1]):
    lm_lib.check_calibration_count(size, "--sizes")
  common.check_names_once(f.methods, "methods", "method")
  tcfg = protocol.flag_timing(min_run_time=f.min_run_time)
  cfg = common.model_config(common.EMBEDDED_MODEL, common.EMBEDDED_WEIGHTS)
  memory.check_batch_fits(cfg, [f.batch_size])             # else numpy's "Unable to allocate"
  tokens = parse_token_grid(cfg, f.tokens) if f.tokens else None
  specs = {m: PipelineSpec(solver="multi", method=m, tokens=tokens) for m in f.methods}
  for spec in specs.values():   # the main job's checks (method, grid) for every method first,
    spec.check(cfg)
  draws = {}                    # then every schedule drawn
  for method, spec in specs.items():
    grid = sorted(set(spec.grid(cfg)) | {cfg.num_tokens})
    draws[method] = (spec, grid) + draw_schedules(cfg, method, grid, sizes, f.draws,
                                                  f.num_heldout)
  cfg, params, _ = common.load_model(common.EMBEDDED_MODEL, common.EMBEDDED_WEIGHTS, 0)
  rows: List[Dict[str, Any]] = []
  heldout: Dict[str, Any] = {}
  for method, (spec, grid, sets, pool, held) in draws.items():
    got, heldout[method] = run_method(cfg, params, method, grid, sets, pool, held,
                                      f.batch_size, tcfg, threads=spec.threads,
                                      noise_floor=f.noise_floor)
    rows += got
    print(f"{method}: measured in {got[0]['measurement_s']:.0f} s", file=sys.stderr)
  summary = summarize(rows)
  machine = runner.machine_info()
  print(table(summary))
  print(runner.machine_line(machine))
  doc = {"format": RESULT_FORMAT,
         "command": common.command_line("benchmarks.calibration_size", f),
         "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine, "model": cfg.name,
         "batch_size": f.batch_size, "summary": summary, "heldout": heldout, "rows": rows}
  common.write_result(f.out, doc, RESULT_FORMAT, indent=1)
  print(f"wrote {f.out}")
  return doc


if __name__ == "__main__":
  common.run(main, define_flags)
