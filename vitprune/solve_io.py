"""Solver glue: read a latency profile and an accuracy estimate, check they belong together, run
`vitprune.solve`, and write the solution JSON + plot (both atomically).

Inputs are the files of `vitprune.profile.records` (latency profile, schema 1) and
`vitprune.estimate` (estimate, version 1). They must describe the same model (name and config)
and, unless `allow_batch_mismatch`, the profile batch size used must equal the estimate's
evaluation batch size. Accuracy values are the estimate's `metric` ('accuracy' for labelled data,
else 'agreement'; 'kl' is lower-is-better and rejected).

  paper mode: L(n) = the profile's whole-model curve at the batch size ("model" points; predicted
    from the per-block table when only that was profiled), A(n) = the estimate's curve (a 'tokens'
    file, or the row of `layer` in a sensitivity file).
  multi mode: the per-block table (embed/block/head points; profile with --mode=block) and the
    per-layer sensitivity rows of the estimate (rows of integer layers; the after-embedding row is
    not a block reduction and is ignored), on the common token grid plus the full count.

Solution JSON (`format` "vitprune-solution", version 1):

  {"format", "version", "created", "mode": "paper" | "multi",
   "model": {"name", "config"},
   "profile": {"path", "sha256", "device_kind", "platform", "dtype", "batch_size",
               "latency_source": "measured" | "predicted_from_blocks" | "blocks"},
   "estimate": {"path", "sha256", "kind", "method", "metric", "layers", "eval_batch_size",
                "weights_sha256", "data_fingerprint"},
   "settings": {...solver options...},
   "chosen": {"schedule": compact text (vitprune.schedule.format_schedule), "counts": [...],
              "method": reducer to deploy with, "criterion", "predicted_latency_s",
              "predicted_accuracy", paper mode also "tokens" (n*), "utility" and
              "schedule_latency_s" (the POMT schedule's per-block prediction, or null)},
   "full": {"counts", "predicted_latency_s", "predicted_accuracy"},
   "frontier": [{"schedule", "counts", "predicted_latency_s", "predicted_accuracy"}, ...],
               latency ascending; paper mode: the non-dominated (L(n), A(n)) points,
   paper mode only: "curve": {"tokens", "latency_s", "accuracy", "utility"}}

`vitprune.deploy.read_solution` reads `chosen.schedule` / `chosen.counts` / `chosen.method` and
`model.name` from it.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from vitprune import atomic
from vitprune.digest import file_sha256
from vitprune import schedule as schedule_lib
from vitprune import solve
from vitprune.checkpoint import config_from_dict
from vitprune.config import ViTConfig
from vitprune.profile import predict as predict_lib
from vitprune.profile import records
from vitprune.profile import steps as steps_lib

FORMAT = "vitprune-solution"
VERSION = 1
METRICS = ("accuracy", "agreement")   # higher is better


class SolveInputError(ValueError):
  """Profile/estimate files that cannot be used together (or at all)."""


# ----------------------------------------------------------------------------------------------
# Reading and checking.

def load_profile(path: str) -> records.Profile:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"profile file {path!r} does not exist")
  return records.load(path)


def load_estimate(path: str) -> Dict[str, Any]:
  from vitprune import estimate as estimate_lib  # pylint: disable=g-import-not-at-top (jax)
  return estimate_lib.load_estimate(path)


def _norm(d: Any) -> Any:
  return json.loads(json.dumps(d))


def check_same_model(profile: records.Profile, doc: Dict[str, Any], profile_path: str,
                     estimate_path: str) -> ViTConfig:
  """The model config both files describe; SolveInputError naming both otherwise."""
  p_name, e_name = profile.model, doc["model"]["name"]
  if p_name != e_name:
    raise SolveInputError(f"profile {profile_path} is for model {p_name!r} but estimate "
                          f"{estimate_path} is for model {e_name!r}")
  a, b = _norm(profile.config), _norm(doc["model"]["config"])
  if a != b:
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    shown = ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in diff)
    raise SolveInputError(f"profile {profile_path} and estimate {estimate_path} are both for "
                          f"{p_name!r} but their configs differ ({shown})")
  return config_from_dict(doc["model"]["config"])


def resolve_batch(profile: records.Profile, doc: Dict[str, Any], batch_size: Optional[int],
                  profile_path: str, estimate_path: str, components: Tuple[str, ...],
                  allow_batch_mismatch: bool = False) -> int:
  """The profile batch size to solve for, checked against the estimate's evaluation batch."""
  have = sorted({p.batch_size for p in profile.points if p.component in components})
  if not have:
    raise SolveInputError(f"profile {profile_path} has no {'/'.join(components)} points")
  eval_batch = int(doc["eval"]["batch_size"])
  if batch_size is None:
    if len(have) == 1:
      batch_size = have[0]
    elif eval_batch in have:
      batch_size = eval_batch
    else:
      raise SolveInputError(f"profile {profile_path} has batch sizes {have}; pass batch_size "
                            f"(the estimate {estimate_path} was evaluated at batch {eval_batch})")
  if batch_size not in have:
    raise SolveInputError(f"profile {profile_path} has no {'/'.join(components)} points at "
                          f"batch size {batch_size} (has {have})")
  if batch_size != eval_batch and not allow_batch_mismatch:
    raise SolveInputError(f"batch sizes differ: profile {profile_path} at batch {batch_size}, "
                          f"estimate {estimate_path} at batch {eval_batch} (pass "
                          f"allow_batch_mismatch / --allow_batch_mismatch to combine them)")
  return int(batch_size)


def resolve_metric(doc: Dict[str, Any], metric: Optional[str], estimate_path: str) -> str:
  metric = metric or ("accuracy" if doc["data"]["labelled"] else "agreement")
  if metric not in METRICS:
    raise SolveInputError(f"metric {metric!r} is not usable (higher must be better): use one of "
                          f"{METRICS}")
  if metric not in doc["metrics"]:
    raise SolveInputError(f"estimate {estimate_path} has no {metric!r} values (metrics "
                          f"{doc['metrics']}; accuracy needs labelled data)")
  return metric


def _finite(values: np.ndarray, what: str, path: str, tokens: np.ndarray) -> np.ndarray:
  bad = ~np.isfinite(values)
  if bad.any():
    raise SolveInputError(f"{path}: {what} is NaN/inf at token counts "
                          f"{tokens[bad].tolist()[:10]}")
  return values


def _curve(profile: records.Profile, component: str, batch: int, path: str):
  """(tokens int64 [P] ascending, median [P], iqr [P], samples [P]) of one profile curve."""
  pts = sorted(profile.curve(component, batch), key=lambda p: p.tokens)
  t = np.array([p.tokens for p in pts], np.int64)
  med = _finite(np.array([p.median_s for p in pts], np.float64), f"{component} latency", path, t)
  iqr = _finite(np.array([p.iqr_s for p in pts], np.float64), f"{component} IQR", path, t)
  return t, med, iqr, np.array([p.num_samples for p in pts], np.float64)


def _block_table(profile: records.Profile, batch: int, path: str):
  table = records.block_table(profile, batch)
  if table is None:
    return None
  for name, vals in (("embed", [table.embed_s]), ("block", list(table.block_s.values())),
                     ("head", list(table.head_s.values()))):
    if not np.all(np.isfinite(vals)):
      raise SolveInputError(f"{path}: {name} latency has NaN/inf values")
  return table


def latency_curve(profile: records.Profile, cfg: ViTConfig, batch: int,
                  path: str) -> Tuple[np.ndarray, np.ndarray, str]:
  """Whole-model L(n): (tokens [P], seconds [P], source) from measured 'model' points, else
  predicted by the per-block table."""
  if profile.curve("model", batch):
    t, med, _, _ = _curve(profile, "model", batch, path)
    return t, med, "measured"
  table = _block_table(profile, batch, path)
  if table is None:
    raise SolveInputError(f"profile {path} has neither a whole-model curve nor a complete "
                          f"per-block table at batch {batch}")
  tokens = sorted(set(table.block_s) & set(table.head_s))
  pred = predict_lib.predict_curve(table, cfg.depth, tokens)
  return (np.array(tokens, np.int64), np.array([pred[n] for n in tokens]),
          "predicted_from_blocks")


def _profile_info(profile, path, batch, source):
  return {"path": os.path.abspath(path), "sha256": file_sha256(path),
          "device_kind": profile.device_kind, "platform": profile.platform,
          "dtype": profile.dtype, "batch_size": batch, "latency_source": source}


def _estimate_info(doc, path, metric, layers):
  return {"path": os.path.abspath(path), "sha256": file_sha256(path), "kind": doc["kind"],
          "method": doc["method"]["name"], "metric": metric, "layers": layers,
          "eval_batch_size": doc["eval"]["batch_size"],
          "weights_sha256": doc["weights"]["sha256"],
          "data_fingerprint": doc["data"].get("fingerprint")}


# ----------------------------------------------------------------------------------------------
# Paper mode.

def solve_paper_files(profile_path: str, estimate_path: str, *, alpha: float = 0.5,
                      layer: int = 3, batch_size: Optional[int] = None,
                      metric: Optional[str] = None, method: Optional[str] = None,
                      allow_batch_mismatch: bool = False):
  """Paper mode from files -> (PaperSolution, solution JSON dict, ViTConfig)."""
  profile, doc = load_profile(profile_path), load_estimate(estimate_path)
  cfg = check_same_model(profile, doc, profile_path, estimate_path)
  batch = resolve_batch(profile, doc, batch_size, profile_path, estimate_path,
                        ("model", "block"), allow_batch_mismatch)
  metric = resolve_metric(doc, metric, estimate_path)
  lt, lat, source = latency_curve(profile, cfg, batch, profile_path)
  layers = list(doc["layers"])
  if len(layers) == 1:
    est_layer = layers[0]
  elif layer in layers:
    est_layer = layer
  else:
    raise SolveInputError(f"estimate {estimate_path} has layers {layers}; paper mode needs a "
                          f"'tokens' estimate or one with layer {layer}")
  pts = [p for p in doc["points"] if p["layer"] == est_layer]
  at = np.array([p["tokens"] for p in pts], np.int64)
  acc = np.array([p[metric] for p in pts], np.float64)
  try:
    ns, lat_c, acc_c = solve.intersect_grid(lt, lat, at, acc)
  except ValueError as e:
    raise SolveInputError(f"profile {profile_path} and estimate {estimate_path}: {e}") from None
  sol = solve.solve_paper(ns, lat_c, acc_c, alpha, depth=cfg.depth, num_tokens=cfg.num_tokens,
                          layer=layer)
  table = _block_table(profile, batch, profile_path)
  sched_lat = None
  if table is not None:
    try:
      sched_lat = predict_lib.predict(table, schedule_lib.Schedule(sol.counts))
    except KeyError:
      sched_lat = None
  if method is None:
    method = "pomt" if est_layer is None else doc["method"]["name"]
  keep = solve.nondominated(sol.latency, sol.accuracy, sol.ns)
  frontier = []
  for i in keep:
    counts = solve.pomt_counts(cfg.num_tokens, int(sol.ns[i]), cfg.depth, layer)
    frontier.append({"schedule": schedule_lib.format_schedule(schedule_lib.Schedule(counts), cfg), "counts": list(counts),
                     "tokens": int(sol.ns[i]), "predicted_latency_s": float(sol.latency[i]),
                     "predicted_accuracy": float(sol.accuracy[i])})
  full = [i for i in range(sol.ns.size) if sol.ns[i] == cfg.num_tokens]
  record = {
      "format": FORMAT, "version": VERSION, "created": records.now_iso(), "mode": "paper",
      "model": {"name": cfg.name, "config": _norm(profile.config)},
      "profile": _profile_info(profile, profile_path, batch, source),
      "estimate": _estimate_info(doc, estimate_path, metric, [est_layer]),
      "settings": {"alpha": sol.alpha, "layer": layer, "metric": metric,
                   "allow_batch_mismatch": allow_batch_mismatch},
      "chosen": {"schedule": schedule_lib.format_schedule(schedule_lib.Schedule(sol.counts), cfg), "counts": list(sol.counts),
                 "method": method, "criterion": "utility", "tokens": sol.n_star,
                 "utility": sol.utility_star, "predicted_latency_s": sol.latency_star,
                 "predicted_accuracy": sol.accuracy_star, "schedule_latency_s": sched_lat},
      "full": ({"counts": [cfg.num_tokens] * (cfg.depth + 1),
                "predicted_latency_s": float(sol.latency[full[0]]),
                "predicted_accuracy": float(sol.accuracy[full[0]])} if full else None),
      "frontier": frontier,
      "curve": {"tokens": sol.ns.tolist(), "latency_s": sol.latency.tolist(),
                "accuracy": sol.accuracy.tolist(), "utility": sol.utility.tolist()},
  }
  return sol, record, cfg


# ----------------------------------------------------------------------------------------------
# Multi-layer mode.

@dataclasses.dataclass(frozen=True, eq=False)
class MultiInputs:
  """Arrays for `solve.solve_multilayer` on the common grid ns [K] (ascending, ends at N)."""
  ns: np.ndarray
  block: np.ndarray
  head: Any            # float or [K]
  embed: float
  layers: Tuple[int, ...]
  sensitivity: np.ndarray   # [len(layers), K]
  full_accuracy: float
  pair_noise: np.ndarray    # [K - 1] seconds, k * max(pair standard error, curve noise)


def multilayer_inputs(profile: records.Profile, doc: Dict[str, Any], cfg: ViTConfig, batch: int,
                      metric: str, profile_path: str, estimate_path: str,
                      step_k: float = 4.0) -> MultiInputs:
  """Aligns the per-block table and the sensitivity table on their common grid (+ N)."""
  table = _block_table(profile, batch, profile_path)
  if table is None:
    raise SolveInputError(f"profile {profile_path} has no complete per-block table (embed, block "
                          f"and head points) at batch {batch}; profile with --mode=block")
  n_full = cfg.num_tokens
  if n_full not in table.block_s:
    raise SolveInputError(f"profile {profile_path}: the per-block table lacks the full count "
                          f"{n_full} (block 0 always sees all tokens)")
  rows = [(l, r) for r, l in enumerate(doc["layers"]) if l is not None]
  if not rows:
    raise SolveInputError(f"estimate {estimate_path} has no per-layer sensitivity (layers "
                          f"{doc['layers']}: only drops after the embedding); estimate with "
                          f"reduction layers for multi mode")
  tokens = np.asarray(doc["tokens"], np.int64)
  values = np.asarray([p[metric] for p in doc["points"]], np.float64)
  values = values.reshape(len(doc["layers"]), tokens.size)
  head_single = len(table.head_s) == 1
  common = set(table.block_s) & set(tokens.tolist())
  if not head_single:
    common &= set(table.head_s)
  common.discard(n_full)
  if not common:
    raise SolveInputError(f"profile {profile_path} (block counts {min(table.block_s)}.."
                          f"{max(table.block_s)}) and estimate {estimate_path} (tokens "
                          f"{tokens.min()}..{tokens.max()}) share no token count below "
                          f"{n_full}")
  ns = np.array(sorted(common) + [n_full], np.int64)
  full_acc = float(doc["reference"][metric])
  pos = {int(n): i for i, n in enumerate(tokens)}
  sens = np.array([[values[r, pos[int(n)]] if int(n) in pos else full_acc for n in ns[:-1]]
                   + [full_acc] for _, r in rows])
  bt, bmed, biqr, bcnt = _curve(profile, "block", batch, profile_path)
  bpos = {int(n): i for i, n in enumerate(bt)}
  sel = [bpos[int(n)] for n in ns]
  med, iqr, cnt = bmed[sel], biqr[sel], bcnt[sel]
  drops = med[1:] - med[:-1]
  curve_noise = (1.4826 * float(np.median(np.abs(drops - np.median(drops))))
                 if drops.size >= 3 else 0.0)
  noise = step_k * np.maximum(steps_lib.pair_noise(iqr, cnt), curve_noise)
  # Each separately timed part holds one per-call overhead, the whole forward pays it once: keep
  # it in the embedding, take it out of the blocks and the head (as predict.predict does).
  ovh = float(table.overhead_s)
  head = (float(next(iter(table.head_s.values()))) - ovh if head_single
          else np.array([table.head_s[int(n)] for n in ns]) - ovh)
  return MultiInputs(ns=ns, block=np.maximum(med - ovh, 0.0), head=np.maximum(head, 0.0),
                     embed=float(table.embed_s),
                     layers=tuple(l for l, _ in rows), sensitivity=sens,
                     full_accuracy=full_acc, pair_noise=noise)


def _plan_json(plan: solve.Plan, cfg: ViTConfig) -> Dict[str, Any]:
  return {"schedule": schedule_lib.format_schedule(schedule_lib.Schedule(plan.counts), cfg), "counts": list(plan.counts),
          "predicted_latency_s": plan.latency, "predicted_accuracy": plan.accuracy}


def solve_multilayer_files(profile_path: str, estimate_path: str, *,
                           accuracy_floor: Optional[float] = None,
                           latency_budget: Optional[float] = None, alpha: float = 0.5,
                           batch_size: Optional[int] = None, metric: Optional[str] = None,
                           accuracy_model: str = "incremental", monotone: bool = True,
                           step_bottoms_only: bool = False, step_k: float = 4.0,
                           allow_batch_mismatch: bool = False):
  """Multi-layer mode from files -> (MultiLayerSolution, solution JSON dict, ViTConfig)."""
  profile, doc = load_profile(profile_path), load_estimate(estimate_path)
  cfg = check_same_model(profile, doc, profile_path, estimate_path)
  batch = resolve_batch(profile, doc, batch_size, profile_path, estimate_path,
                        ("block",), allow_batch_mismatch)
  metric = resolve_metric(doc, metric, estimate_path)
  inp = multilayer_inputs(profile, doc, cfg, batch, metric, profile_path, estimate_path, step_k)
  sol = solve.solve_multilayer(
      inp.ns, inp.block, inp.sensitivity, inp.full_accuracy, depth=cfg.depth,
      num_tokens=cfg.num_tokens, layers=inp.layers, embed_latency=inp.embed,
      head_latency=inp.head, accuracy_model=accuracy_model, monotone=monotone,
      step_bottoms_only=step_bottoms_only, pair_noise=inp.pair_noise,
      accuracy_floor=accuracy_floor, latency_budget=latency_budget, alpha=alpha)
  chosen = _plan_json(sol.chosen, cfg)
  chosen.update(method=doc["method"]["name"], criterion=sol.criterion)
  record = {
      "format": FORMAT, "version": VERSION, "created": records.now_iso(), "mode": "multi",
      "model": {"name": cfg.name, "config": _norm(profile.config)},
      "profile": _profile_info(profile, profile_path, batch, "blocks"),
      "estimate": _estimate_info(doc, estimate_path, metric, list(inp.layers)),
      "settings": {"alpha": alpha, "accuracy_floor": accuracy_floor,
                   "latency_budget": latency_budget, "metric": metric,
                   "accuracy_model": accuracy_model, "monotone": monotone,
                   "step_bottoms_only": step_bottoms_only, "step_k": step_k,
                   "grid": sol.grid.tolist(), "allow_batch_mismatch": allow_batch_mismatch},
      "chosen": chosen,
      "full": {"counts": list(sol.full.counts), "predicted_latency_s": sol.full.latency,
               "predicted_accuracy": sol.full.accuracy},
      "frontier": [_plan_json(p, cfg) for p in sol.frontier],
  }
  return sol, record, cfg


# ----------------------------------------------------------------------------------------------
# Output files.

def _png_bytes(fig) -> bytes:
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
  plt.close(fig)
  return buf.getvalue()


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_paper(record: Dict[str, Any]) -> bytes:
  """PNG: U(n), L(n) (ms) and A(n) vs n, n* marked."""
  plt = _pyplot()
  c, n_star = record["curve"], record["chosen"]["tokens"]
  fig, axes = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
  series = (("utility U(n)", c["utility"], 1.0),
            (f"latency L(n) [ms] ({record['profile']['latency_source']})", c["latency_s"], 1e3),
            (f"{record['estimate']['metric']} A(n)", c["accuracy"], 1.0))
  i = c["tokens"].index(n_star)
  for ax, (label, ys, scale) in zip(axes, series):
    ax.plot(c["tokens"], [scale * y for y in ys], ".-", ms=3, lw=1)
    ax.axvline(n_star, color="C3", ls="--", lw=1)
    ax.plot([n_star], [scale * ys[i]], "o", color="C3")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
  axes[0].set_title(f"{record['model']['name']}: n* = {n_star} (alpha = "
                    f"{record['settings']['alpha']}), {record['chosen']['schedule']}")
  axes[-1].set_xlabel("tokens kept n")
  return _png_bytes(fig)


def plot_frontier(record: Dict[str, Any]) -> bytes:
  """PNG: predicted latency (ms) vs predicted accuracy of the frontier, chosen point marked."""
  plt = _pyplot()
  fr = record["frontier"]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  ax.step([1e3 * p["predicted_latency_s"] for p in fr], [p["predicted_accuracy"] for p in fr],
          where="post", marker=".", ms=3, lw=1, label="Pareto frontier")
  ch, full = record["chosen"], record["full"]
  if full is not None:
    ax.plot([1e3 * full["predicted_latency_s"]], [full["predicted_accuracy"]], "s", color="k",
            label="unpruned")
  ax.plot([1e3 * ch["predicted_latency_s"]], [ch["predicted_accuracy"]], "o", color="C3",
          label=f"chosen ({ch['criterion']}): {ch['schedule']}")
  ax.set_xlabel("predicted latency [ms]")
  ax.set_ylabel(f"predicted {record['estimate']['metric']}")
  ax.set_title(f"{record['model']['name']} ({record['mode']} mode)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return _png_bytes(fig)


def output_stem(record: Dict[str, Any]) -> str:
  return f"{record['model']['name']}_{record['mode']}_b{record['profile']['batch_size']}"


def write_solution(record: Dict[str, Any], out_dir: str,
                   stem: Optional[str] = None) -> Dict[str, str]:
  """Writes `<stem>.json` and `<stem>.png` (paper mode: the U/L/A curves; multi: the frontier)
  atomically -> {'json': path, 'png': path}. The plot is rendered before anything is written."""
  stem = stem or output_stem(record)
  png = plot_paper(record) if record["mode"] == "paper" else plot_frontier(record)
  text = json.dumps(record, indent=1, allow_nan=False).encode()
  paths = {"json": os.path.join(out_dir, stem + ".json"),
           "png": os.path.join(out_dir, stem + ".png")}
  atomic.write_bytes(paths["png"], png)
  atomic.write_bytes(paths["json"], text)
  return paths


def load_solution(path: str) -> Dict[str, Any]:
  """Reads a solution file; ValueError when it is not one."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"solution file {path!r} does not exist")
  try:
    with open(path) as f:
      doc = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not valid JSON: {e}") from None
  if not isinstance(doc, dict) or doc.get("format") != FORMAT:
    raise ValueError(f"{path}: not a solver output (format != {FORMAT!r})")
  if doc.get("version") != VERSION:
    raise ValueError(f"{path}: unsupported version {doc.get('version')!r}")
  for key in ("mode", "model", "chosen", "frontier"):
    if key not in doc:
      raise ValueError(f"{path}: missing key {key!r}")
  return doc


def summary_lines(record: Dict[str, Any]) -> List[str]:
  """Human-readable summary of a solution record."""
  ch, full = record["chosen"], record["full"]
  lines = [f"model {record['model']['name']} ({record['mode']} mode, batch "
           f"{record['profile']['batch_size']}, {record['profile']['device_kind']}, "
           f"metric {record['estimate']['metric']})",
           f"chosen schedule: {ch['schedule']}  counts {','.join(map(str, ch['counts']))}  "
           f"method {ch['method']}  ({ch['criterion']})",
           f"predicted latency {1e3 * ch['predicted_latency_s']:.4g} ms, predicted "
           f"{record['estimate']['metric']} {ch['predicted_accuracy']:.4f}"]
  if record["mode"] == "paper":
    lines[-1] += f", n* = {ch['tokens']}, U = {ch['utility']:.4f}"
    if ch.get("schedule_latency_s") is not None:
      lines.append(f"POMT schedule latency by the per-block table: "
                   f"{1e3 * ch['schedule_latency_s']:.4g} ms")
  if full is not None:
    lines.append(f"unpruned: {1e3 * full['predicted_latency_s']:.4g} ms, "
                 f"{full['predicted_accuracy']:.4f}")
  lines.append(f"frontier: {len(record['frontier'])} non-dominated schedules")
  return lines
