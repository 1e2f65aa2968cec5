r"""The README's GPU tables from what `benchmarks/gpu_suite.sh` wrote (run where the files are).

  python -m benchmarks.gpu_report --dir=outputs/gpu          # markdown on stdout
  python -m benchmarks.gpu_report --dir=outputs/gpu --out=outputs/gpu/report.json

Reads every profile (`profile/*.json`, `vitprune.profile.records`), the method benchmarks
(`benchmark/**/*.csv`, `vitprune.benchmark`: gpu_suite.sh writes one per batch size) and the
latency-model check (`predictor_accuracy_*.json`) under --dir, whichever exist (a stage cut
by its deadline wrote nothing, or the chunks it finished), and prints, for the README:
  * the device each file names (they must agree: one device per report);
  * per profile (model, dtype, batch): token counts measured, latency at the most and the
    fewest tokens, the largest steps (n -> n' saves x %), the lone slow or fast counts
    (`vitprune.profile.steps.Lone`: out of line with both neighbours), compile seconds per shape
    (median / p90 / max; wall times, which overlap when --threads compiled in parallel);
  * the benchmark table (latency median +- IQR and change vs unpruned, compile s per graph);
  * the predictor-accuracy rows.
Writes the same as JSON with --out. Refuses a --dir holding none of these files, files of
several devices, a predictor result that is not one or names no device, a row that cannot be
tabulated or shows an impossible number (a NaN or negative latency, an error share above 1), a
table cut mid-write or without rows, and an --out among the files it reads. Profiles of other
modes (block, schedule) are named, not tabulated.
"""
from __future__ import annotations

import fnmatch
import glob
import os
import reprlib
from typing import Any, Callable, Dict, Iterable, List, Tuple

import numpy as np
from absl import flags

from benchmarks import predictor_accuracy
from experiments import common
from vitprune import atomic
from vitprune import jsonio
from vitprune import solve
from vitprune import benchmark as bench
from vitprune.profile import latency_model as lm_lib
from vitprune.profile import records

RESULT_FORMAT = "vitprune-gpu-report"
TOP_STEPS = 5


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  flags.DEFINE_string("dir", "outputs/gpu", "What gpu_suite.sh wrote (its OUT_DIR).",
                      flag_values=fv)
  flags.DEFINE_string("out", None, "Also write the report as JSON here.", flag_values=fv)


def profile_rows(profiles: Dict[str, records.Profile]) -> List[Dict[str, Any]]:
  """One row per (profile file, batch size) of whole-model curves (mode model): counts,
  latencies, steps, compile seconds per shape."""
  rows = []
  paths = sorted(profiles)
  for path in paths:
    prof = records.analyze(profiles[path])
    for b in prof.batch_sizes:
      curve = sorted(prof.curve("model", b), key=lambda p: -p.tokens)
      if not curve or _single_exists(path, prof, b, paths):
        continue
      compile_s = np.array([p.compile_s for p in curve])
      steps = sorted((s for s in prof.steps if s["batch_size"] == b and
                      s["component"] == "model"), key=lambda s: -s["saving_frac"])
      rows.append({
          "file": os.path.basename(path), "model": prof.model, "dtype": prof.dtype,
          "batch_size": int(b), "device_kind": prof.device_kind, "platform": prof.platform,
          "jax_version": prof.jax_version, "counts": len(curve),
          "tokens_max": curve[0].tokens, "latency_max_ms": 1e3 * curve[0].median_s,
          "tokens_min": curve[-1].tokens, "latency_min_ms": 1e3 * curve[-1].median_s,
          "steps": [{"n_from": s["n_from"], "n_to": s["n_to"],
                     "saving_pct": 100 * s["saving_frac"],
                     "saving_ms": 1e3 * s["saving_s"]} for s in steps[:TOP_STEPS]],
          "num_steps": len(steps),
          "lone_counts": sorted((c["n"] for c in prof.lone_counts
                                 if c["batch_size"] == b and c["component"] == "model"),
                                reverse=True),
          "compile_s_median": float(np.median(compile_s)),
          "compile_s_p90": float(np.percentile(compile_s, 90)),
          "compile_s_max": float(compile_s.max()),
      })
  # The markdown names no file: two curves of one key read as one twice (the device is part of
  # the key: two devices are refused as such by `collect`).
  _each_key_once([((r["model"], r["dtype"], r["batch_size"], r["device_kind"]), r["file"])
                  for r in rows],
                 lambda k, first, other: f"{first} and {other} both hold {k[0]} {k[1]} batch "
                 f"{k[2]} curves, which the table cannot tell apart: report one of them")
  return rows


def _each_key_once(held: Iterable[Tuple[Any, str]], message: Callable[[Any, str, str], str]
                   ) -> None:
  """ValueError(`message(key, first file, other file)`) when two files hold one key: the
  report's rows would show it twice, alike (`held`: (key, file) pairs, in reading order)."""
  first: Dict[Any, str] = {}
  for key, path in held:
    if first.setdefault(key, path) != path:
      raise ValueError(message(key, first[key], path))


def _single_exists(path: str, prof: records.Profile, b: int, paths: List[str]) -> bool:
  """Whether batch `b` of a profile of several batch sizes, `path`, has its own file among
  `paths` (the same points: reported once, from that file)."""
  own = os.path.join(os.path.dirname(path), records.file_stem(prof, [b]) + ".json")
  return len(prof.batch_sizes) > 1 and own in paths


TEXT_COLUMNS = ("model", "device_kind", "platform", "dtype", "variant", "method", "source",
                "schedule", "counts")


def benchmark_rows(paths: List[str]) -> List[Dict[str, Any]]:
  """The rows of every benchmark CSV (`vitprune.benchmark.CSV_COLUMNS`), numbers as numbers
  (an empty cell: None), by model and batch size (as a number: b8 before b64), each table's
  dtypes and variants in its order."""
  rows, held = [], []
  for path in sorted(paths):
    table = bench.read_table_rows(path)
    if table is None:
      raise ValueError(f"{path} is not a benchmark table of this version (its header "
                       "differs from vitprune.benchmark.CSV_COLUMNS)")
    if not table:
      raise ValueError(f"{path} holds no rows (a run cut before its first row?)")
    mine: List[Dict[str, Any]] = []        # this table's rows
    for i, row in enumerate(table, start=2):
      try:
        row = {k: v if k in TEXT_COLUMNS else None if v == "" else
               int(v) if v.lstrip("-").isdigit() else float(v) for k, v in row.items()}
      except (TypeError, ValueError):
        raise ValueError(f"{path}, line {i}: not a benchmark row (a number column holds "
                         "text)") from None
      for k, ok, what in _ROW_CHECKS:
        if not ok(row[k]):
          raise ValueError(f"{path}, line {i}: {k} {row[k]!r} is not {what}")
      _check_row_consistent(path, i, row, mine)
      mine.append(row)
      held.append(((row["model"], row["batch_size"], row["dtype"], row["variant"],
                    row["device_kind"]), path))
    rows += mine
  # (two tables of one batch, e.g. a rerun under benchmark/b32/: its rows twice)
  _each_key_once(held, lambda k, first, other: f"{first} and {other} both hold {k[0]} batch "
                 f"{k[1]} {k[2]} '{k[3]}' rows, which the table cannot tell apart: report one "
                 "of them")
  return sorted(rows, key=lambda r: (r["model"], r["batch_size"]))  # (stable: dtypes as run)


def _check_row_consistent(path: str, line: int, row: Dict[str, Any],
                          earlier: List[Dict[str, Any]]) -> None:
  """ValueError naming the line when a benchmark row disagrees with itself or with its table
  (`earlier`: the rows above it in the same file): its spread is not q75 - q25, its median is
  outside its quartiles, it repeats a (batch, dtype, variant) row, or its change is not against
  the unpruned row of its batch and dtype, which comes first (an edited change was printed as
  measured; a table without its baseline printed changes against nothing). The CSV keeps 6
  significant digits."""
  q25, q75 = row.get("latency_q25_ms"), row.get("latency_q75_ms")
  quartiles = isinstance(q25, (int, float)) and isinstance(q75, (int, float))
  if quartiles and abs(row["latency_iqr_ms"] - (q75 - q25)) > 2e-5 * max(abs(q25), abs(q75)) + 1e-9:
    raise ValueError(f"{path}, line {line}: latency_iqr_ms {row['latency_iqr_ms']!r} is not "
                     f"latency_q75_ms - latency_q25_ms ({q75} - {q25}) (edited?)")
  median = row["latency_median_ms"]
  if quartiles and not q25 - 1e-5 * abs(q25) <= median <= q75 + 1e-5 * abs(q75):  # (6 digits)
    raise ValueError(f"{path}, line {line}: latency_median_ms {median!r} is not between "
                     f"latency_q25_ms {q25} and latency_q75_ms {q75} (edited?)")
  key = (row["batch_size"], row["dtype"])
  if any((r["batch_size"], r["dtype"], r["variant"]) == (*key, row["variant"]) for r in earlier):
    raise ValueError(f"{path}, line {line}: a second {row['variant']!r} row of batch "
                     f"{key[0]} {key[1]} (the table would show it twice)")
  base = [r for r in earlier if (r["batch_size"], r["dtype"]) == key
          and r["variant"] == bench.UNPRUNED]
  if row["variant"] == bench.UNPRUNED:
    base = [row]
  elif not base:
    raise ValueError(f"{path}, line {line}: no {bench.UNPRUNED!r} row of batch {key[0]} "
                     f"{key[1]} above it: its change_pct has no baseline")
  want = 100.0 * (row["latency_median_ms"] / base[0]["latency_median_ms"] - 1.0)
  if abs(row["change_pct"] - want) > 0.01 + 1e-4 * abs(want):
    raise ValueError(f"{path}, line {line}: change_pct {row['change_pct']!r} is not "
                     f"{want:.4f}, its latency against the unpruned row's (edited?)")


def _number(lo: float, hi: float = np.inf, optional: bool = False):
  """A check: a finite number in [lo, hi] (None too where `optional`)."""
  return lambda v: (v is None and optional) or (
      isinstance(v, (int, float)) and np.isfinite(v) and lo <= v <= hi)


# What the report shows of a benchmark row, checked (an edited or damaged table printed
# 'nan', negative latencies or ended in a traceback on an empty cell).
_ROW_CHECKS = (
    *((k, bool, "a name") for k in ("model", "device_kind", "platform", "dtype",
                                             "variant", "schedule")),
    ("batch_size", lambda v: isinstance(v, int) and v >= 1, "a batch size >= 1"),
    ("latency_median_ms", lambda v: _number(0)(v) and v > 0, "a latency > 0 ms"),
    ("latency_iqr_ms", _number(0), "a spread >= 0 ms"),
    ("compile_s", _number(0), "a compile time >= 0 s"),
    ("change_pct", _number(-100), "a change >= -100 %"),
    *((k, _number(0, 1, optional=True), "a fraction in [0, 1] (or empty)")
      for k in ("accuracy", "agreement")))


def check_predictor_rows(path: str, rows: List[Any]) -> None:
  """ValueError naming `path` when a row of a predictor_accuracy result cannot be tabulated or
  shows an error that is not a finite share >= 0 (within 10 %: at most 1) or a negative time."""
  for i, r in enumerate(rows):
    try:
      predictor_accuracy.table([r])                # every cell the table reads is there
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as e:
      raise ValueError(f"{path}: row {i} is not a predictor_accuracy row ({type(e).__name__}: "
                       f"{e})") from None
    fr = r.get("frontier") or {}
    stats = [(name, d, r.get("num_heldout")) for name, d in r["heldout"].items()] + [
        (name, d, fr.get("num")) for name, d in (fr.get("latency") or {}).items()]
    for name, d, num in stats:
      if not isinstance(d, dict):      # (an entry the table never reads: a traceback below)
        raise ValueError(f"{path}: row {i}: {name} {reprlib.repr(d)} is not an error summary")
      if "count" in d and d["count"] != num:   # (0 passed beside a median of 3 schedules)
        raise ValueError(f"{path}: row {i}: {name} count {d['count']!r} is not the "
                         f"{num!r} schedules it summarises (edited?)")
      for k in ("median", "p90"):
        if not _number(0)(d.get(k)):
          raise ValueError(f"{path}: row {i}: {name} {k} {d.get(k)!r} is not an error >= 0")
      if not _number(0, 1)(d.get("within10")):
        raise ValueError(f"{path}: row {i}: {name} within10 {d.get('within10')!r} is not a "
                         "share in [0, 1]")
      if "speed_ratio" in d and not (_number(0)(d["speed_ratio"]) and d["speed_ratio"] > 0):
        raise ValueError(f"{path}: row {i}: {name} speed_ratio {d['speed_ratio']!r} is not a "
                         "ratio > 0")
    times = [("calibration_s", r.get("calibration_s"))] + (
        [("profile_s", r["profile_s"])] if "profile_s" in r else [])
    points = [(f"accuracy error {k}", (fr.get("accuracy_error_points") or {}).get(k, 0))
              for k in ("mean", "max")] if fr else []
    for name, v in times + points:
      if not _number(0)(v):
        raise ValueError(f"{path}: row {i}: {name} {v!r} is not a number >= 0")
    _check_predictor_row(path, i, r, dict(points))


def _check_predictor_row(path: str, i: int, r: Dict[str, Any], points: Dict[str, Any]
                         ) -> None:
  """The rest of a predictor row the table prints: its key (a list as batch size ended in a
  traceback), counts, the share the times give, the error mean within its max, and a choice
  said to meet its floor only when its measured accuracy does (edits printed 'yes (0.5000 >=
  0.95)' and a -300 % share)."""
  def bad(what):
    return ValueError(f"{path}: row {i}: {what} (edited?)")

  for k in ("model", "method"):
    if not (isinstance(r[k], str) and r[k]):
      raise bad(f"{k} {reprlib.repr(r[k])} is not a name")
  for k, lo in (("batch_size", 1), ("num_heldout", 0)):
    if not (jsonio.is_int(r[k]) and r[k] >= lo):
      raise bad(f"{k} {reprlib.repr(r[k])} is not an integer >= {lo}")
  _check_heldout_schedules(bad, r)
  if "profile_s" in r:
    share = r.get("calibration_share")
    if not (_number(0)(share) and r["profile_s"] > 0 and
            np.isclose(share, r["calibration_s"] / r["profile_s"], rtol=1e-9, atol=0)):
      raise bad(f"calibration_share {share!r} is not calibration_s / profile_s")
  if points and points["accuracy error mean"] > points["accuracy error max"] * (1 + 1e-12):
    raise bad(f"accuracy error mean {points['accuracy error mean']!r} is above its max "
              f"{points['accuracy error max']!r}")
  ch = r.get("choice")
  if ch and "floor_not_met" not in ch:
    acc, floor = ch.get("measured_accuracy"), ch.get("floor")
    if not (_number(0, 1)(acc) and _number(0, 1)(floor) and floor > 0):
      raise bad(f"choice: measured accuracy {acc!r} and floor {floor!r} must be in [0, 1]")
    if ch.get("meets_floor") is not bool(solve.meets_floor(acc, floor)):
      raise bad(f"choice: meets_floor {ch.get('meets_floor')!r} but measured accuracy {acc} "
                f"and floor {floor}")


# Held-out summaries the report prints and the per-schedule prediction each is made of.
_HELDOUT_FROM = {"calibrated": "calibrated_s", "block_sum": "block_sum_s"}


def _check_heldout_schedules(bad: Callable[[str], ValueError], r: Dict[str, Any]) -> None:
  """A predictor row's held-out schedules (where it lists them) are `num_heldout` schedules
  with times > 0, and its calibrated and block-sum summaries are theirs (an edited summary or
  a negative time was tabulated)."""
  scheds = r.get("schedules")
  if scheds is None:
    return
  if not isinstance(scheds, list) or len(scheds) != r["num_heldout"]:
    raise bad(f"num_heldout {r['num_heldout']} but {reprlib.repr(scheds)} schedules listed")
  for j, s in enumerate(scheds):
    times = {k: v for k, v in (s.items() if isinstance(s, dict) else ()) if k.endswith("_s")}
    if "measured_s" not in times or not all(_number(0)(v) and v > 0 for v in times.values()):
      raise bad(f"held-out schedule {j}: times {reprlib.repr(times)} must include measured_s, "
                "all seconds > 0")
  for name, key in _HELDOUT_FROM.items():
    d = r["heldout"].get(name)
    if d is None or not all(key in s for s in scheds) or not scheds:
      continue
    err = lm_lib.relative_errors([s[key] for s in scheds], [s["measured_s"] for s in scheds])
    for k in ("median", "p90", "within10"):
      if not np.isclose(d[k], err[k], rtol=1e-9, atol=1e-12):
        raise bad(f"heldout {name} {k} {d[k]!r} is not its schedules' ({err[k]!r})")


def _table_files(folder: str) -> List[str]:
  """The *.csv files under `folder`, sorted, as glob's `**/*.csv` finds them (hidden names
  left out: a killed writer's temporaries), but links to folders are not walked (a link loop
  was read 40 levels deep into a 2-KB error)."""
  out = []
  for d, dirs, names in os.walk(folder):
    dirs[:] = [n for n in dirs if not n.startswith(".")]
    out += [os.path.join(d, n) for n in names if n.endswith(".csv") and not n.startswith(".")]
  return sorted(out)


def collect(out_dir: str) -> Dict[str, Any]:
  """Everything under `out_dir` -> the report document (ValueError when there is nothing)."""
  if not os.path.isdir(out_dir):
    raise ValueError(f"--dir {out_dir!r} is not a directory")
  root = glob.escape(out_dir)       # (a '[1]' in --dir was a pattern: it read a sibling's)
  # (a run refused at writing keeps its output beside as <name>.kept-XXXXXXXX.*: the same
  # measurement as the output it lost to, reported once; listed, never tabulated)
  kept = lambda p: atomic.KEPT_MARK in os.path.basename(p)
  profile_paths = glob.glob(os.path.join(root, "profile", "*.json"))
  tables = _table_files(os.path.join(out_dir, "benchmark"))
  predictor = sorted(glob.glob(os.path.join(root, "predictor_accuracy_*.json")))
  kept_aside = sorted(os.path.relpath(p, out_dir) for p in profile_paths + tables + predictor
                      if kept(p))
  profile_paths = [p for p in profile_paths if not kept(p)]
  tables = [p for p in tables if not kept(p)]
  predictor = [p for p in predictor if not kept(p)]
  if not profile_paths and not tables and not predictor:
    raise ValueError(f"--dir {out_dir!r} holds no profile/*.json, benchmark/*.csv or "
                     "predictor_accuracy_*.json: nothing to report (did every stage time out?)")
  profiles = {p: records.load(p) for p in profile_paths}
  _each_key_once([(records.measurement_sha256(prof), p)   # (two names of one file, or a copy)
                  for p, prof in sorted(profiles.items())],
                 lambda _, first, other: f"{other} holds the same measurements as {first} (a "
                 "copy or a link): report each once")
  curves = {p: prof for p, prof in profiles.items() if "model" in prof.modes}
  doc = {"format": RESULT_FORMAT, "version": 1, "profiles": profile_rows(curves),
         "skipped": sorted(os.path.basename(p) for p in profiles if p not in curves),
         "benchmark": benchmark_rows(tables), "predictor_accuracy": [],
         "predictor_accuracy_cut": [], "kept_aside": kept_aside}
  devices = ({(p.device_kind, p.platform) for p in profiles.values()} |
             {(r["device_kind"], r["platform"]) for r in doc["benchmark"]})
  held: List[Tuple[Any, str]] = []        # (model, batch, method) per predictor row
  for path in predictor:
    res = jsonio.read_json(path, "predictor accuracy results", ValueError)
    if res.get("format") != predictor_accuracy.RESULT_FORMAT:
      raise ValueError(f"{path} is not a benchmarks.predictor_accuracy result (format "
                       f"{res.get('format')!r}, expected {predictor_accuracy.RESULT_FORMAT!r})")
    if res.get("version") != predictor_accuracy.RESULT_VERSION:   # (99, or none: tabulated)
      raise ValueError(f"{path} is version {res.get('version')!r} of a benchmarks."
                       f"predictor_accuracy result; this vitprune reads version "
                       f"{predictor_accuracy.RESULT_VERSION}")
    if not isinstance(res.get("rows"), list) or not isinstance(res.get("complete", True), bool):
      raise ValueError(f"{path}: a predictor_accuracy result needs a list of rows and complete "
                       f"true or false (absent: written whole, before it was recorded), got rows "
                       f"{type(res.get('rows')).__name__} and complete "
                       f"{res.get('complete')!r} (edited?)")
    device = res.get("device")
    if not (isinstance(device, dict) and all(isinstance(device.get(k), str) and device[k]
                                             for k in ("device_kind", "platform"))):
      raise ValueError(f"{path} does not say which device it measured (device kind and "
                       "platform; written before predictor_accuracy recorded them?): run it "
                       "again")
    devices.add((device.get("device_kind"), device.get("platform")))
    if not res["rows"] and res.get("complete", True) is True:
      raise ValueError(f"{path} says it is complete but holds no rows (edited?)")
    check_predictor_rows(path, res["rows"])
    held += [((r["model"], r["batch_size"], r["method"]), path) for r in res["rows"]]
    doc["predictor_accuracy"] += res["rows"]
    if res.get("complete") is False:     # rewritten after every phase: the stage was cut
      doc["predictor_accuracy_cut"].append(os.path.basename(path))
  _each_key_once(held, lambda k, first, other: f"{first} and {other} both hold predictor rows "
                 f"of {k[0]} batch {k[1]} {k[2]} (a copy?): report one of them")
  devices = sorted(devices)
  if len(devices) > 1:
    raise ValueError(f"--dir {out_dir!r} holds measurements of several devices {devices}: "
                     "report one device at a time")
  doc["device"] = dict(zip(("device_kind", "platform"), devices[0])) if devices else None
  return doc


def check_out_not_read(out: str, out_dir: str) -> None:
  """ValueError when `--out` is a path `collect(--dir)` reads (profile/*.json, benchmark/**.csv,
  predictor_accuracy_*.json): the report written there broke every later report."""
  rel = os.path.relpath(os.path.realpath(out), os.path.realpath(out_dir)).replace(os.sep, "/")
  if (fnmatch.fnmatch(rel, "profile/*.json") and rel.count("/") == 1
      or rel.startswith("benchmark/") and rel.endswith(".csv")
      or fnmatch.fnmatch(rel, "predictor_accuracy_*.json") and "/" not in rel):
    raise ValueError(f"--out={out} is a file --dir={out_dir} holds as a measurement ({rel}): "
                     "the next report would read the report; write it elsewhere (e.g. "
                     f"{os.path.join(out_dir, 'report.json')})")


def to_markdown(doc: Dict[str, Any]) -> str:
  """The README's tables."""
  lines = []
  if doc["device"]:
    jax_versions = sorted({r["jax_version"] for r in doc["profiles"]})
    lines.append(f"device: {doc['device']['device_kind']} ({doc['device']['platform']})"
                 + (f", jax {', '.join(jax_versions)}" if jax_versions else ""))
  if doc["profiles"]:
    lines += ["", "| model | dtype | batch | counts | ms at max tokens | ms at min tokens | "
                  "largest steps (n -> n', saving) | steps | lone counts | compile s per "
                  "shape (median / p90 / max; wall, threads overlap) |",
              "|---|---|---:|---:|---|---|---|---:|---|---|"]
    for r in doc["profiles"]:
      steps = ", ".join(f"{s['n_from']}->{s['n_to']} {s['saving_pct']:.1f}%"
                        for s in r["steps"]) or "none above noise"
      lines.append(f"| {r['model']} | {r['dtype']} | {r['batch_size']} | {r['counts']} | "
                   f"{r['latency_max_ms']:.4g} ({r['tokens_max']}) | {r['latency_min_ms']:.4g} "
                   f"({r['tokens_min']}) | {steps} | {r['num_steps']} | "
                   f"{', '.join(map(str, r.get('lone_counts', []))) or '-'} | "
                   f"{r['compile_s_median']:.2f} / {r['compile_s_p90']:.2f} / "
                   f"{r['compile_s_max']:.2f} |")
  if doc["benchmark"]:
    lines += ["", "| model | batch | dtype | variant | schedule | latency ms (median ± IQR) | "
                  "change | compile s |", "|---|---:|---|---|---|---|---:|---:|"]
    changes = bench.change_cells(doc["benchmark"])
    for r, change in zip(doc["benchmark"], changes):
      lines.append(f"| {r['model']} | {r['batch_size']} | {r['dtype']} | {r['variant']} | "
                   f"{r['schedule']} | {r['latency_median_ms']:.4g} ± "
                   f"{r['latency_iqr_ms']:.2g} | {change} | {r['compile_s']:.2f} |")
    if any(c.endswith(f"({bench.WITHIN_SPREAD})") for c in changes):
      lines += ["", bench.SPREAD_LEGEND]
  if doc["skipped"]:
    lines += ["", f"(not whole-model curves, not tabulated: {', '.join(doc['skipped'])})"]
  if doc.get("kept_aside"):
    lines += ["", f"(kept beside by runs refused at writing, not tabulated: "
                  f"{', '.join(doc['kept_aside'])})"]
  if doc["predictor_accuracy"]:
    lines += ["", predictor_accuracy.table(doc["predictor_accuracy"])]
  if doc.get("predictor_accuracy_cut"):  # (cut before its first row: this line alone says so)
    lines += ["", f"(predictor accuracy cut before the end, rows hold the phases measured: "
                  f"{', '.join(doc['predictor_accuracy_cut'])})"]
  return "\n".join(lines)


def main(f: flags.FlagValues) -> Dict[str, Any]:
  """Collects, prints the markdown, writes the JSON with --out -> the document."""
  if f.out:
    check_out_not_read(f.out, f.dir)                         # before reading anything
    atomic.check_output_json(f.out, RESULT_FORMAT, "out")
  doc = collect(f.dir)
  print(to_markdown(doc))
  if f.out:
    common.write_result(f.out, doc, RESULT_FORMAT, indent=1)
    print(f"wrote {common.shown(f.out)}")
  return doc


if __name__ == "__main__":
  common.run(main, define_flags)
