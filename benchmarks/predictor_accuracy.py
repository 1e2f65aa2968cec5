r"""How well the solver's predictions hold: predicted vs measured latency and accuracy.

  python -m benchmarks.predictor_accuracy                 # full run (~10-12 min, 2 idle cores)
  python -m benchmarks.predictor_accuracy --quick         # smoke run (~1 min)

For every (model, batch size, method): the latency model of the compiled graph
(`vitprune.profile.latency_model`) is calibrated (uniform curve + calibration schedules, one
shuffled measurement), then held-out random multi-layer schedules (none used for calibration)
are compiled and timed in one shuffled measurement and compared with
  * the calibrated model ("calibrated"), and
  * the old isolated per-block sum (`vitprune.profile.predict`, block table profiled alongside),
  * "anchored": the calibrated model times a speed ratio (the full graph, timed in the same
    measurement as the held-out schedules: measured / predicted): does one re-timed graph take
    the machine's speed change since the calibration out? (Measured: no, see benchmarks/RESULTS.md.)
  * "interleaved": the model refitted from a second measurement that times the curve, the
    calibration and the held-out schedules together (shuffled), so the machine's drift between
    two measurements (up to ~50 % on a shared 2-core CPU) does not count as model error.
For vit_digits (trained weights, the 359 sklearn digits test images) also the frontier: the
method's per-layer sensitivity is estimated, the multi-layer frontier solved with the calibrated
model, and its schedules measured (latency and accuracy): latency error on the frontier, and the
accuracy error (points) of the combination model vs measured; the floor choice is checked in the
loop (`solve_loop.check_in_loop`) and its measured accuracy compared with --accuracy_floor.
Calibration time is reported as a share of the profile time (the block-table profile; both after
one warm-up compile, so neither carries the process's start-up; the profile, measured after the
first calibration, loads the 3 whole-model graphs of its predictor check from the compile cache
where the calibration's curve compiled them).

Prints a markdown table and writes JSON (--out), rewritten after every phase of every row with
`"complete": false` until the run ends (a cut run keeps what it measured: the calibrated model's
held-out errors come first, the block table is profiled after them), unless --out holds a
finished result: that is replaced only when the run finishes (a cut run then keeps nothing).
Numbers depend on the machine and its load: run on an idle machine.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
from absl import flags

from experiments import common
from vitprune import atomic
from vitprune import jsonio
from vitprune import memory
from vitprune import solve, solve_loop, solve_stage
from vitprune import estimate as estimate_lib
from vitprune.model import init_params
from vitprune.pipeline import one_block_counts
from vitprune.profile import latency_model as lm_lib
from vitprune.profile import predict as predict_lib
from vitprune.profile import protocol, records, runner, timing
from vitprune.reduce.methods import make_reducer
from vitprune.registry import get_config
from vitprune.schedule import Schedule

def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this benchmark's flags."""
  flags.DEFINE_list("models", ["vit_digits", "deit_small_patch16_224"],
                    "Registered model names (vit_digits uses weights/vit_digits and the digits "
                    "data; others random weights, latency only).", flag_values=fv)
  flags.DEFINE_list("methods", ["pomt", "topk", "tome", "evit", "random"],
                    "Token-reduction methods.", flag_values=fv)
  flags.DEFINE_list("batch_sizes", None, "Batch sizes (default: vit_digits 1, other models 1 "
                    "and 8).", flag_values=fv)
  flags.DEFINE_integer("num_schedules", None, "Held-out schedules per method (default: "
                       "vit_digits 30, other models 8).", upper_bound=1000, flag_values=fv)
  flags.DEFINE_integer("calibration_schedules", lm_lib.DEFAULT_CALIBRATION_SCHEDULES,
                       "Calibration schedules per method (the main job's; DeiT-sized models: 6, "
                       "--quick: 5).", upper_bound=1000, flag_values=fv)
  flags.DEFINE_float("accuracy_floor", 0.95, "vit_digits: floor of the in-loop choice.",
                     flag_values=fv)
  flags.DEFINE_float("min_run_time", None, "Seconds of timed calls per graph (default 0.1; "
                     "0.05 for batch > 1 of large models).", flag_values=fv)
  flags.DEFINE_integer("threads", 2, "Compile threads.", flag_values=fv)
  flags.DEFINE_bool("quick", False, "Smoke mode: vit_digits, pomt, batch 1, coarse grid, few "
                    "schedules and images, short timing.", flag_values=fv)
  flags.DEFINE_string("out", "outputs/benchmark/predictor_accuracy.json", "JSON output.",
                      flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed.", lower_bound=0, upper_bound=common.MAX_SEED,
                       flag_values=fv)
  flags.DEFINE_integer("rounds", 1, "Interleaved timing rounds of every measurement "
                       "(TimingConfig.rounds; the main job's calibration uses 1).",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_string("compile_cache_dir", None, "JAX's persistent compilation cache (the "
                      "benchmark compiles many graphs twice; set process-wide); default: a "
                      "fresh temporary directory, removed at exit, so compile times start "
                      "cold.", flag_values=fv)


RESULT_FORMAT = "vitprune-predictor-accuracy"    # marks --out files this script may replace
RESULT_VERSION = 1


def _grid(cfg, quick: bool, step: int = 0):
  """Token counts of the curve (and the DP): every 4th count of vit_digits-sized models, every
  24th of DeiT-sized ones (16th in --quick)."""
  n = cfg.num_tokens
  step = step or _grid_step(cfg, quick)
  return sorted(set(range(n, cfg.num_prefix_tokens, -step)))


def _grid_step(cfg, quick: bool) -> int:
  return 16 if quick else (4 if cfg.num_tokens <= 80 else 24)


def _errors(pred, meas):
  return lm_lib.relative_errors(pred, meas)


def _measure(cfg, params, method, batch, schedules, tcfg, threads, seed):
  """(median seconds of `schedules`, of the full graph): one shuffled measurement."""
  return lm_lib.measure_with_full(cfg, params, method=method, batch_size=batch,
                                  schedules=schedules, timing_cfg=tcfg, threads=threads,
                                  seed=seed)


def _anchored(lm, schedules, full_s):
  """-> (the calibrated model's predictions times the speed ratio, the ratio): measured /
  predicted seconds of the full graph, timed (`full_s`) in the measurement of `schedules`. A
  test of whether one re-timed graph takes the machine's drift between measurements out."""
  ratio = full_s / lm.predict((lm.num_tokens,) * (lm.depth + 1))
  return [lm.predict(c) * ratio for c in schedules], ratio


def _interleaved(cfg, params, method, batch, grid, lm, held, tcfg, threads, seed):
  """The model's own error without the machine's drift between two measurements: the curve,
  the calibration schedules and the held-out ones timed in ONE shuffled measurement, the model
  refitted on the calibration part only, scored on the held-out part."""
  cal = [c for c in lm.calibration if c[0] == cfg.num_tokens]
  prof = lm_lib.measure_calibration(cfg, params, method=method, batch_size=batch,
                                    dtype="float32", tokens=grid, schedules=cal + list(held),
                                    timing_cfg=tcfg, threads=threads, seed=seed)
  refit = lm_lib.fit_on(prof, cal, batch_size=batch, method=method)
  got = {p.schedule: p.median_s for p in prof.curve("schedule", batch)}
  return _errors([refit.predict(c) for c in held], [got[tuple(c)] for c in held])


def run_one(cfg, params, batch, methods, *, num, num_cal, tcfg, threads, seed, data, floor,
            quick, log, rows: List[Dict[str, Any]], save: Callable[[], None]) -> None:
  """Appends one row per method to `rows`, filled in phase by phase (the calibrated model on the
  held-out schedules; the per-block sum, whose block table is profiled after the first method's
  held-out phase; the interleaved refit; vit_digits: the frontier and the choice), and calls
  `save()` after each phase, so that a run cut short (a GPU lease's deadline: a DeiT-S graph
  compiles in ~6 s there) keeps every phase it finished, the calibrated model's first."""
  grid = _grid(cfg, quick)
  table, profile_s = None, None
  for method in methods:
    t0 = time.perf_counter()
    lm, cal_prof = lm_lib.calibrate(cfg, params, method=method, batch_size=batch,
                                    dtype="float32", tokens=grid, timing_cfg=tcfg,
                                    num_schedules=num_cal, threads=threads, seed=seed)
    cal_s = time.perf_counter() - t0
    held = lm_lib.heldout_schedules(cfg, grid, num, method=method, exclude=lm.calibration,
                                    seed=seed + 1000)
    meas, full_s = _measure(cfg, params, method, batch, held, tcfg, threads, seed)
    anchored, ratio = _anchored(lm, held, full_s)
    row = {"model": cfg.name, "batch_size": batch, "method": method,
           "num_heldout": len(held), "num_calibration": num_cal,
           "num_calibration_graphs": len(lm.calibration),   # + the full graph and the curve's
           "calibration_s": cal_s,
           "latency_model": dict(lm.summary(),
                                 calibration=[list(c) for c in lm.calibration]),
           "heldout": {"calibrated": _errors([lm.predict(c) for c in held], meas),
                       "anchored": dict(_errors(anchored, meas), speed_ratio=ratio)},
           "schedules": [{"counts": list(c), "measured_s": m, "calibrated_s": lm.predict(c)}
                         for c, m in zip(held, meas)]}
    rows.append(row)
    save()
    if table is None:
      t0 = time.perf_counter()
      block_prof = runner.profile_batch(
          runner.ProfileSpec(cfg=cfg, batch_sizes=(batch,), mode="block", tokens=tuple(grid),
                             timing=tcfg, threads=threads, seed=seed,
                             confirm_steps=False), batch, params,  # (the table as timed)
          progress=False)
      profile_s = time.perf_counter() - t0
      table = records.block_table(block_prof, batch)
    block_sum = [predict_lib.predict(table, Schedule(c)) for c in held]
    row.update(profile_s=profile_s, calibration_share=cal_s / profile_s)
    row["heldout"]["block_sum"] = _errors(block_sum, meas)
    for sched, b in zip(row["schedules"], block_sum):
      sched["block_sum_s"] = b
    save()
    h = row["heldout"]
    log(f"{cfg.name} b{batch} {method}: held-out |err| calibrated median "
        f"{100 * h['calibrated']['median']:.1f}% p90 {100 * h['calibrated']['p90']:.1f}% | "
        f"block sum median {100 * h['block_sum']['median']:.1f}% p90 "
        f"{100 * h['block_sum']['p90']:.1f}% | calibration {cal_s:.1f}s "
        f"({100 * cal_s / profile_s:.0f}% of the profile)")
    row["heldout"]["interleaved"] = _interleaved(cfg, params, method, batch, grid, lm, held,
                                                 tcfg, threads, seed)
    save()
    if data is not None:
      try:
        row.update(_frontier(cfg, params, batch, method, lm, cal_prof, grid, data, floor, tcfg,
                             threads, seed, table, quick))
      except solve_loop.FloorNotMetError as e:    # an outcome of the benchmark, not a crash
        row.update(frontier=None, choice={"floor": floor, "meets_floor": False,
                                          "floor_not_met": str(e)})
      save()


def _frontier(cfg, params, batch, method, lm, cal_prof, grid, data, floor, tcfg, threads, seed,
              table, quick) -> Dict[str, Any]:
  """vit_digits: sensitivity estimate, frontier with the calibrated model, frontier schedules
  measured (latency + accuracy), in-loop floor choice."""
  reducer = make_reducer(method)
  # The sensitivity grid (and so the DP's): every other curve count, to keep the run short.
  reduced = one_block_counts(cfg, grid if quick else _grid(cfg, quick, step=8), reducer)
  # --quick: sensitivity of two blocks only (the DP reduces in those), to keep the smoke run short.
  layers = [1, 3] if quick else list(range(cfg.depth))
  points = estimate_lib.sensitivity_points(cfg, reduced, layers, reducer)
  result = estimate_lib.evaluate(cfg, params, data.batches(cfg, 64), points,
                                 labelled=data.labelled, dtype="float32")
  est = estimate_lib.estimate_record(
      cfg=cfg, params=params, weights_source="weights/vit_digits", data_info=data.info,
      method=method, method_kwargs={}, seed=seed, points=points, result=result,
      labelled=data.labelled, dtype="float32")
  evaluate = estimate_lib.schedule_evaluator(cfg, params, data, reducer, batch_size=64)
  sol = solve_stage.solve_multilayer(cal_prof, est, accuracy_floor=floor, latency_model=lm,
                                     allow_batch_mismatch=True, evaluate=evaluate,
                                     num_images=len(data.indices), loop_neighbours=2)
  fr = list(sol.frontier)
  k = 4 if quick else 8
  if len(fr) > k:   # spread over the frontier
    fr = [fr[round(i * (len(fr) - 1) / (k - 1))] for i in range(k)]
  acc = evaluate([c.counts for c in fr])
  meas, full_s = _measure(cfg, params, method, batch, [c.counts for c in fr], tcfg, threads,
                          seed)
  anchored, ratio = _anchored(lm, [c.counts for c in fr], full_s)
  acc_err = [100 * (c.predicted_accuracy - a) for c, a in zip(fr, acc)]

  def time_schedules(counts_list):
    return _measure(cfg, params, method, batch, list(counts_list), tcfg, threads, seed)[0]

  loop = solve_loop.check_in_loop(sol, est, None, evaluate, time_schedules,
                                  num_images=len(data.indices))
  ch = loop.chosen
  return {"frontier": {
      "num": len(fr),
      "latency": {"calibrated": _errors([c.predicted_latency_s for c in fr], meas),
                  "anchored": dict(_errors(anchored, meas), speed_ratio=ratio),
                  "block_sum": _errors([predict_lib.predict(table, Schedule(c.counts))
                                        for c in fr], meas)},
      "accuracy_error_points": {"mean": float(np.mean(np.abs(acc_err))),
                                "max": float(np.max(np.abs(acc_err))),
                                "mean_signed": float(np.mean(acc_err))},
      "schedules": [{"counts": list(c.counts), "predicted_accuracy": c.predicted_accuracy,
                     "measured_accuracy": a, "predicted_s": c.predicted_latency_s,
                     "measured_s": m} for c, a, m in zip(fr, acc, meas)]},
      "choice": {"floor": floor, "schedule": ch.schedule, "counts": list(ch.counts),
                 "measured_accuracy": ch.measured_accuracy,
                 "measured_accuracy_low": ch.measured_accuracy_low,
                 "measured_latency_s": ch.measured_latency_s,
                 "predicted_latency_s": ch.predicted_latency_s,
                 "meets_floor": bool(solve.meets_floor(ch.measured_accuracy, floor)),
                 "floor_straddles": loop.settings.get("floor_straddles", [])}}


def main(f: flags.FlagValues) -> Dict[str, Any]:
  """Runs the benchmark, prints the table, writes the JSON -> the JSON document."""
  quick = f.quick
  models = ["vit_digits"] if quick and not f["models"].present else f.models
  methods = ["pomt"] if quick and not f["methods"].present else f.methods
  # Bad input is refused before any work (each check names the flag or value).
  atomic.check_output_json(f.out, RESULT_FORMAT, "out")
  for m in methods:
    make_reducer(m)
  for name in models:
    get_config(name)
  for flag, names in (("models", models), ("methods", methods)):
    common.check_names_once(names, flag)          # a repeat was measured twice
  batch_sizes = (common.parse_ints(f.batch_sizes, "batch_sizes")
                 if f["batch_sizes"].present else None)
  for name in models if batch_sizes else ():    # else numpy's "Unable to allocate" later
    cfg = get_config(name)            # (+ the block profile's inputs, one per count: a review)
    memory.check_batch_fits(cfg, batch_sizes, flag="--batch_sizes", held_per_example=(
        runner.ProfileSpec(cfg=cfg, mode="block",
                           tokens=tuple(_grid(cfg, quick))).held_input_bytes()))
  if f["accuracy_floor"].present and "vit_digits" not in models:
    raise ValueError("--accuracy_floor applies to vit_digits (the only model with data here)")
  for flag in ("num_schedules", "calibration_schedules", "threads"):
    common.positive(f[flag].value, flag, allow_none=flag == "num_schedules")
  lm_lib.check_calibration_count(f.calibration_schedules, "--calibration_schedules")
  if not 0 < f.accuracy_floor <= 1:
    raise ValueError(f"--accuracy_floor must be in (0, 1], got {f.accuracy_floor}")
  if f.compile_cache_dir:      # JAX would only warn and run without a cache
    common.check_output_dir(f.compile_cache_dir, "compile_cache_dir")
  if f.min_run_time is not None:   # TimingConfig owns the check (> 0 and finite)
    protocol.flag_timing(min_run_time=f.min_run_time)
  # A fresh cache by default, so compile times (in the calibration and profile seconds) start cold.
  timing.enable_compilation_cache(f.compile_cache_dir or
                                  timing.temporary_cache_dir("vitprune_pred_cache_"))
  for name in models:          # drawn before measuring: more than the grid holds is refused
    check_draws(get_config(name), methods, *_schedule_counts(f, get_config(name), quick),
                quick=quick, seed=f.seed)
  rows: List[Dict[str, Any]] = []
  finished_there = _holds_finished(f.out)
  if finished_there:
    print(f"note: {common.shown(f.out)} holds a finished result: this run replaces it when it "
          "finishes, not phase by phase (if cut, it keeps nothing; choose another --out to keep "
          "its phases)")
  timing.warm_up()     # the process's first compile is no phase's (it made calibration look slow)
  t_all = time.perf_counter()

  def document(complete: bool) -> Dict[str, Any]:
    return {"format": RESULT_FORMAT, "version": RESULT_VERSION, "complete": complete,
            "total_s": time.perf_counter() - t_all, "device": runner.machine_info(),
            "command": common.command_line("benchmarks.predictor_accuracy", f),
            "quick": quick, "rounds": f.rounds, "rows": rows}

  def save():   # every finished phase, replaced whole (atomic): a cut run keeps them
    if not finished_there:
      common.write_result(f.out, document(False), RESULT_FORMAT, indent=1)

  for name in models:
    if name == "vit_digits":
      cfg, params, source = common.load_model("vit_digits", common.EMBEDDED_WEIGHTS, f.seed)
      common.check_digits_split(source, "digits")     # (retrained in place with another split)
      data = estimate_lib.load_eval_data("digits", num_images=60 if quick else None,
                                         class_names=common.class_names(source),
                                         num_classes=cfg.num_classes,
                                         seed=f.seed)
    else:
      cfg, params, data = get_config(name), init_params(get_config(name), f.seed), None
    large = cfg.num_tokens > 80
    batches = batch_sizes or ([1] if quick or not large else [1, 8])
    for b in batches:
      min_run = f.min_run_time or (0.01 if quick else 0.05 if (large and b > 1) else 0.1)
      tcfg = timing.TimingConfig(min_run_time=min_run, warmup=1 if large else 3,
                                 min_reps=3 if large and b > 1 else 5, max_retries=1,
                                 seed=f.seed, rounds=f.rounds)
      num, num_cal = _schedule_counts(f, cfg, quick)
      run_one(cfg, params, b, methods, num=num, num_cal=num_cal, tcfg=tcfg, threads=f.threads,
              seed=f.seed, data=data, floor=f.accuracy_floor, quick=quick,
              log=lambda s: print(s, file=sys.stderr), rows=rows, save=save)
  doc = document(True)
  print(table(rows))
  print(f"\ntotal {doc['total_s']:.0f} s")
  common.write_result(f.out, doc, RESULT_FORMAT, indent=1)
  print(f"wrote {f.out}")
  return doc


def _holds_finished(path: str) -> bool:
  """Whether `path` holds a finished result of this benchmark (a cut re-run, writing phase by
  phase, replaced it with less)."""
  try:
    doc = jsonio.read_json(path, "predictor accuracy results", ValueError)
  except (OSError, ValueError):
    return False
  return doc.get("format") == RESULT_FORMAT and doc.get("complete", True) is True


def _schedule_counts(f: flags.FlagValues, cfg, quick: bool) -> Tuple[int, int]:
  """(held-out, calibration) schedules per method for model `cfg`."""
  large = cfg.num_tokens > 80
  num = f.num_schedules or (3 if quick else 8 if large else 30)
  num_cal = (f.calibration_schedules if f["calibration_schedules"].present   # as given
             else 5 if quick else 6 if large else f.calibration_schedules)
  return num, num_cal


def check_draws(cfg, methods: Sequence[str], num: int, num_cal: int, *, quick: bool,
                seed: int) -> None:
  """The calibration and held-out schedules `run_one` will draw for each method, drawn now:
  ValueError naming the flag where the grid holds fewer distinct schedules."""
  grid = _grid(cfg, quick)
  if len(grid) < 2:      # else the calibration draw's "the grid needs counts below ..."
    raise ValueError(f"{cfg.name} has {cfg.num_tokens} tokens: the benchmark's token grid "
                     f"({'--quick: ' if quick else ''}every {_grid_step(cfg, quick)}th "
                     "count) holds none below the full count; choose a larger model"
                     + (" or drop --quick" if quick else ""))
  for method in methods:
    try:
      cal = lm_lib.calibration_schedules(cfg, grid, num_cal, method=method, seed=seed)
    except ValueError as e:
      raise ValueError(f"--calibration_schedules={num_cal}: {e} ({cfg.name}, {method})"
                       ) from None
    try:
      lm_lib.heldout_schedules(cfg, grid, num, method=method, exclude=cal, seed=seed + 1000)
    except ValueError as e:
      raise ValueError(f"--num_schedules={num}: {e} besides the {num_cal} calibration ones "
                       f"({cfg.name}, {method})") from None


def _anchored_cell(heldout) -> str:
  a = heldout.get("anchored")       # absent in JSON written before this column
  if not a:
    return "-"
  return (f"{100 * a['median']:.1f}% / {100 * a['p90']:.1f}% / {100 * a['within10']:.0f}% "
          f"(x{a['speed_ratio']:.2f})")


def _choice_cell(ch: Dict[str, Any]) -> str:
  """'yes (0.9600 >= 0.95) | ', 'NO (0.9333 < 0.95) | ', or 'NO (nothing checked met 0.99) | '
  where the run ended with FloorNotMetError."""
  if "floor_not_met" in ch:
    return f"NO (nothing checked met {ch['floor']}) | "
  return (f"{'yes' if ch['meets_floor'] else 'NO'} ({ch['measured_accuracy']:.4f} "
          f"{'>=' if ch['meets_floor'] else '<'} {ch['floor']}) | ")


def table(rows) -> str:
  """The markdown table of the rows."""
  head = ("| model | batch | method | held-out | calibrated \\|err\\| median / p90 / within 10% | "
          "anchored on the full graph re-timed (speed ratio) | "
          "same, calibrated and measured interleaved | "
          "block sum \\|err\\| median / p90 / within 10% | frontier calibrated median / p90 | "
          "accuracy \\|err\\| mean / max (points) | "
          "choice meets floor (measured) | calibration / profile time |")
  lines = [head, "|" + "---|" * 12]

  def e(d):
    return f"{100 * d['median']:.1f}% / {100 * d['p90']:.1f}% / {100 * d['within10']:.0f}%"

  for r in rows:
    fr = r.get("frontier")
    ch = r.get("choice")
    lines.append(
        f"| {r['model']} | {r['batch_size']} | {r['method']} | {r['num_heldout']} | "
        f"{e(r['heldout']['calibrated'])} | {_anchored_cell(r['heldout'])} | "
        f"{e(r['heldout']['interleaved']) if 'interleaved' in r['heldout'] else '-'} | "
        f"{e(r['heldout']['block_sum']) if 'block_sum' in r['heldout'] else '-'} | "
        + (f"{100 * fr['latency']['calibrated']['median']:.1f}% / "
           f"{100 * fr['latency']['calibrated']['p90']:.1f}% | "
           f"{fr['accuracy_error_points']['mean']:.2f} / "
           f"{fr['accuracy_error_points']['max']:.2f} | " if fr else "- | - | ")
        + (_choice_cell(ch) if ch else "- | ")
        + (f"{r['calibration_s']:.1f}s / {r['profile_s']:.1f}s "
           f"({100 * r['calibration_share']:.0f}%) |" if "profile_s" in r else
           f"{r['calibration_s']:.1f}s / - |"))
  return "\n".join(lines)


if __name__ == "__main__":
  common.run(main, define_flags)
