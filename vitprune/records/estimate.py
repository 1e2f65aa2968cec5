"""The accuracy estimate record: A(n) curves and per-layer sensitivity S[l, n] (stage 2).

Built by `vitprune.estimate.estimate_record` from an evaluation run; read by the solver. The
file (JSON, written atomically by `write_estimate`, checked field by field by `read_estimate`):

  {
    "format": "vitprune-estimate", "version": 2 (version 1 is read too),
    "created": ISO-8601 time,
    "kind": "tokens" | "sensitivity",
    "model": {"name": str, "config": ViTConfig fields (vitprune.config.config_to_dict)},
    "weights": {"source": str (directory, or "init_params(seed=S)"), "sha256": hex (params_sha256)},
    "data": {"kind", "source", "num_examples", "classes", "labelled", "fingerprint"
             (vitprune.data.DatasetInfo), "selection": {free-form: split, subset seed, ...}},
    "method": {"name": str, "kwargs": {...}} (the reducer's options; in version 1 random drop
               drew each layer's own subset, as "nested": false does now: `reducer_kwargs`),
    "seed": int (reducer / subset seed),
    "layers": [int | null, ...]   (the reduction layers evaluated; null = after the embedding),
    "tokens": [int, ...]          (the token grid n, ascending, unique),
    "eval": {"batch_size": int, "dtype": str, "precision": str, "num_devices": int},
    "metrics": ["accuracy", "agreement", "kl"] (labelled) | ["agreement", "kl"] (unlabelled),
    "reference": {"counts": [...], "schedule": str, "num_examples": int,
                  "accuracy": float | null, "agreement": 1.0, "kl": 0.0},
    "points": [{"layer": int | null, "tokens": int, "counts": [depth + 1 ints], "schedule": str,
                "num_examples": int, "accuracy": float | null, "agreement": float, "kl": float},
               ...]  one per (layer, n) of layers x tokens, layer-major, n ascending,
    "versions": {"estimate_format": 2, "python", "jax", "jaxlib", "numpy", "platform", "backend"}
  }

Points: layer None ("embed") means `counts = [n] * (depth + 1)`, tokens dropped right after the
embedding (the paper's A(n) with the `random` reducer); layer l means `counts = [N] * (l + 1) +
[n] * (depth - l)`, block l reduces to n (S[l, n]). "tokens" records have a single layer (the
curve, `Estimate.curve`); "sensitivity" records have every requested layer (`Estimate.table`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from vitprune import atomic
from vitprune import jsonio
from vitprune import schedule as schedule_lib
from vitprune.console import counted
from vitprune.config import (COMPUTE_DTYPES, PRECISIONS, ViTConfig, check_config_types,
                             config_from_dict, config_to_dict, check_switch, is_method_name,
                             method_label, method_options_problem, not_a_method,
                             record_method_kwargs)
from vitprune.digits import SPLITS as DIGITS_SPLITS

FORMAT = "vitprune-estimate"
VERSION = 2
READ_VERSIONS = (1, 2)    # 2: random drop's `nested` option (1 ran it per layer: nested=False)
KINDS = ("tokens", "sensitivity")
LABELLED_METRICS = ("accuracy", "agreement", "kl")
FIDELITY_METRICS = ("agreement", "kl")
HIGHER_IS_BETTER = ("accuracy", "agreement")


class EstimateError(jsonio.FormatError):
  """An estimate document or file that does not follow the format."""


def default_metric(labelled: bool) -> str:
  """The metric a choice rests on: 'accuracy' with labels, else top-1 'agreement'."""
  return "accuracy" if labelled else "agreement"


@dataclasses.dataclass(frozen=True)
class Scores:
  """Metric values over `num_examples` images (accuracy None when unlabelled)."""
  num_examples: int
  accuracy: Optional[float]
  agreement: float
  kl: float

  def get(self, metric: str) -> float:
    return getattr(self, metric)

  def to_json(self) -> Dict[str, Any]:
    return {"num_examples": self.num_examples, "accuracy": self.accuracy,
            "agreement": self.agreement, "kl": self.kl}


@dataclasses.dataclass(frozen=True)
class EstimatePoint:
  """One evaluated schedule: `tokens` kept from block `layer` (None: after the embedding)."""
  layer: Optional[int]
  tokens: int
  counts: Tuple[int, ...]
  schedule: str
  scores: Scores


@dataclasses.dataclass(frozen=True)
class Estimate:
  """An estimate run: what was evaluated (model, weights, data, method) and the scores."""
  kind: str
  config: ViTConfig
  weights_source: str
  weights_sha256: str
  data: Dict[str, Any]
  method: str
  method_kwargs: Dict[str, Any]
  seed: int
  layers: Tuple[Optional[int], ...]
  tokens: Tuple[int, ...]
  eval_batch_size: int
  dtype: str
  precision: str
  num_devices: int
  metrics: Tuple[str, ...]
  reference: Scores
  points: Tuple[EstimatePoint, ...]
  versions: Dict[str, Any]
  created: str
  version: int = VERSION      # the format version its `method_kwargs` mean (`reducer_kwargs`)
  source: str = dataclasses.field(default="estimate", compare=False)  # file it was read from

  def __post_init__(self):
    # A record built in Python is checked as a file is: the solver reads its tokens, layers
    # and points as a table, and fields that disagree would silently change its predictions.
    try:        # (numpy scalars, e.g. an np.int64 layer, as the numbers they hold: `plain`)
      doc = jsonio.json_form(self.to_json())
    except (AttributeError, TypeError, ValueError) as e:
      raise EstimateError(f"{self.source}: not an estimate record ({e})") from None
    _validate(doc, self.source)

  @property
  def model(self) -> str:
    return self.config.name

  @property
  def reducer_kwargs(self) -> Dict[str, Any]:
    """The options the points ran the method with (`method_kwargs` as this record's format
    version means them: `config.record_method_kwargs`); what a reducer rebuilt from it takes."""
    return record_method_kwargs(self.method, self.method_kwargs, self.version)

  @property
  def labelled(self) -> bool:
    return bool(self.data["labelled"])

  @property
  def data_fingerprint(self) -> Optional[str]:
    return self.data.get("fingerprint")

  def metric(self, metric: Optional[str] = None, *, higher_is_better: bool = False) -> str:
    """`metric` (default `default_metric`) checked against this record's metrics; with
    `higher_is_better`, 'kl' is refused (a floor or a utility needs higher = better)."""
    metric = metric or default_metric(self.labelled)
    if higher_is_better and metric not in HIGHER_IS_BETTER:
      raise EstimateError(f"metric {metric!r} is not usable (higher must be better): use one of "
                          f"{HIGHER_IS_BETTER}")
    if metric not in self.metrics:
      raise EstimateError(f"estimate {self.source} has no {metric!r} values: metric {metric!r} "
                          f"not in this estimate's metrics {list(self.metrics)}"
                          + ("; accuracy needs labelled data" if metric == "accuracy" else ""))
    return metric

  def curve(self, metric: Optional[str] = None, layer: Any = "auto"
            ) -> Tuple[np.ndarray, np.ndarray]:
    """A(n) for one layer: `(tokens int64 [T], values float64 [T])`; `layer` defaults to the
    only layer of a 'tokens' record (required for 'sensitivity' records)."""
    metric = self.metric(metric)
    if layer == "auto":
      if len(self.layers) != 1:
        raise EstimateError(f"estimate {self.source} has layers {list(self.layers)}; pass layer=")
      layer = self.layers[0]
    if layer not in self.layers:
      raise EstimateError(f"layer {layer!r} not in this estimate's layers {list(self.layers)}")
    pts = [p for p in self.points if p.layer == layer]
    return (np.asarray([p.tokens for p in pts], np.int64),
            np.asarray([p.scores.get(metric) for p in pts], np.float64))

  def table(self, metric: Optional[str] = None
            ) -> Tuple[List[Optional[int]], np.ndarray, np.ndarray]:
    """`(layers [L], tokens int64 [T], S float64 [L, T])`: the metric when reducing to
    `tokens[j]` at `layers[i]` (None = after the embedding)."""
    metric = self.metric(metric)
    values = np.asarray([p.scores.get(metric) for p in self.points], np.float64)
    return (list(self.layers), np.asarray(self.tokens, np.int64),
            values.reshape(len(self.layers), len(self.tokens)))

  def measured(self, metric: str) -> Dict[Tuple[int, ...], float]:
    """`{counts: metric}` of every evaluated schedule, the unpruned one included."""
    out = {p.counts: float(p.scores.get(metric)) for p in self.points}
    out[schedule_lib.full_schedule(self.config).counts] = float(self.reference.get(metric))
    return out

  def sha256(self) -> str:
    """Identity of this record: sha256 of its canonical JSON."""
    return jsonio.canonical_sha256(self.to_json())

  def to_json(self) -> Dict[str, Any]:
    full = schedule_lib.full_schedule(self.config)
    return {
        "format": FORMAT, "version": self.version, "created": self.created, "kind": self.kind,
        "model": {"name": self.model, "config": config_to_dict(self.config)},
        "weights": {"source": self.weights_source, "sha256": self.weights_sha256},
        "data": dict(self.data),
        "method": {"name": self.method, "kwargs": dict(self.method_kwargs)},
        "seed": self.seed, "layers": list(self.layers), "tokens": list(self.tokens),
        "eval": {"batch_size": self.eval_batch_size, "dtype": self.dtype,
                 "precision": self.precision, "num_devices": self.num_devices},
        "metrics": list(self.metrics),
        "reference": {"counts": list(full.counts),
                      "schedule": schedule_lib.format_schedule(full, self.config),
                      **self.reference.to_json()},
        "points": [{"layer": p.layer, "tokens": p.tokens, "counts": list(p.counts),
                    "schedule": p.schedule, **p.scores.to_json()} for p in self.points],
        "versions": dict(self.versions),
    }

  @classmethod
  def from_json(cls, doc: Any, where: str = "estimate") -> "Estimate":
    """Checks `doc` field by field (`EstimateError` naming `where` and the field) and builds
    the record."""
    cfg = _validate(doc, where)

    def scores(d):
      return Scores(d["num_examples"], d["accuracy"], d["agreement"], d["kl"])

    return cls(
        kind=doc["kind"], config=cfg, weights_source=str(doc["weights"].get("source", "")),
        weights_sha256=doc["weights"]["sha256"], data=dict(doc["data"]),
        method=doc["method"]["name"], method_kwargs=dict(doc["method"].get("kwargs", {})),
        seed=doc["seed"], layers=tuple(doc["layers"]), tokens=tuple(doc["tokens"]),
        eval_batch_size=doc["eval"]["batch_size"], dtype=str(doc["eval"].get("dtype", "")),
        precision=str(doc["eval"].get("precision", "")),
        num_devices=int(doc["eval"].get("num_devices", 1)), metrics=tuple(doc["metrics"]),
        reference=scores(doc["reference"]),
        points=tuple(EstimatePoint(p["layer"], p["tokens"], tuple(p["counts"]), p["schedule"],
                                   scores(p)) for p in doc["points"]),
        versions=dict(doc["versions"]), created=doc["created"], version=doc["version"],
        source=where)


def table_text(estimate: Estimate) -> str:
  """Fixed-width table: one row per token count, one column group per layer."""
  metrics, ref = estimate.metrics, estimate.reference
  lines = [f"{estimate.model}  method={method_label(estimate.method, estimate.reducer_kwargs)}  "
           f"{counted(estimate.data['num_examples'], 'image')}  labelled={estimate.labelled}",
           "unpruned: " + "  ".join(f"{m}={ref.get(m):.4f}" for m in metrics)]
  layers, tokens, _ = estimate.table(metrics[0])
  tables = {m: estimate.table(m)[2] for m in metrics}
  names = [[("embed" if l is None else f"L{l}") + ":" + m for m in metrics] for l in layers]
  widths = [[max(13, len(name)) for name in row] for row in names]   # (cut: 'embed:accur')
  lines.append(f"{'n':>5}" + "".join(f" {name:>{w}}" for row, ws in zip(names, widths)
                                     for name, w in zip(row, ws)))
  for j, n in enumerate(tokens):
    lines.append(f"{n:>5}" + "".join(f" {tables[m][i, j]:>{w}.4f}"
                                     for i, ws in enumerate(widths)
                                     for m, w in zip(metrics, ws)))
  return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Validation.


def _require(cond: bool, where: str, msg: str):
  jsonio.require(cond, where, msg, EstimateError)


_TOP_KEYS = {"format": str, "version": int, "created": str, "kind": str, "model": dict,
             "weights": dict, "data": dict, "method": dict, "seed": int, "layers": list,
             "tokens": list, "eval": dict, "metrics": list, "reference": dict, "points": list,
             "versions": dict}


def _check_scores(p: Dict[str, Any], where: str, labelled: bool, num_examples: int):
  for key in ("num_examples", "accuracy", "agreement", "kl"):
    _require(key in p, where, f"missing {key!r}")
  _require(jsonio.is_int(p["num_examples"]), where,
           f"num_examples must be an integer, got {p['num_examples']!r}")   # ('50': "50 != 50")
  _require(p["num_examples"] == num_examples, where,
           f"num_examples {p['num_examples']} != data.num_examples {num_examples}")
  if labelled:
    _require(jsonio.is_num(p["accuracy"]) and 0 <= p["accuracy"] <= 1, where,
             f"accuracy must be a number in [0, 1] for labelled data, got {p['accuracy']!r}")
  else:
    _require(p["accuracy"] is None, where,
             f"accuracy must be null for unlabelled data, got {p['accuracy']!r}")
  _require(jsonio.is_num(p["agreement"]) and 0 <= p["agreement"] <= 1, where,
           f"agreement must be a number in [0, 1], got {p['agreement']!r}")
  _require(jsonio.is_num(p["kl"]) and p["kl"] >= 0, where,
           f"kl must be a finite number >= 0, got {p['kl']!r}")
  for key in ("accuracy", "agreement") if labelled else ("agreement",):
    _require(jsonio.is_share(p[key], num_examples), where,
             f"{key} {p[key]!r} is not a count of {num_examples} images (k / {num_examples})")


def _validate(doc: Any, where: str) -> ViTConfig:
  jsonio.check_format(doc, where, FORMAT, READ_VERSIONS, EstimateError)
  for key, typ in _TOP_KEYS.items():
    _require(key in doc, where, f"missing key {key!r}")
    ok = jsonio.is_int(doc[key]) if typ is int else isinstance(doc[key], typ)
    _require(ok, where, f"{key!r} must be {typ.__name__}, got {type(doc[key]).__name__}")
  _require(doc["kind"] in KINDS, where, f"kind {doc['kind']!r} not in {KINDS}")
  try:
    cfg = config_from_dict(doc["model"].get("config", {}))
  except (ValueError, TypeError) as e:
    raise EstimateError(f"{where}: model.config is invalid: {e}") from None
  check_config_types(cfg, where, EstimateError)
  _require(doc["model"].get("name") == cfg.name, where,
           f"model.name {doc['model'].get('name')!r} != config name {cfg.name!r}")
  sha = doc["weights"].get("sha256")
  _require(jsonio.is_sha256(sha), where,
           f"weights.sha256 must be a 64-digit hex string, got {sha!r}")
  data = doc["data"]
  for key in ("fingerprint", "num_examples", "labelled"):
    _require(key in data, where, f"data is missing {key!r}")
  _require(jsonio.is_int(data["num_examples"]) and data["num_examples"] > 0, where,
           f"data.num_examples must be a positive int, got {data['num_examples']!r}")
  labelled = data["labelled"]
  _require(isinstance(labelled, bool), where, "data.labelled must be true or false")
  want_metrics = list(LABELLED_METRICS if labelled else FIDELITY_METRICS)
  _require(doc["metrics"] == want_metrics, where,
           f"metrics {doc['metrics']} != {want_metrics} for labelled={labelled}")
  _require(is_method_name(doc["method"].get("name")), where,
           not_a_method("method.name", doc["method"].get("name")))
  _require(isinstance(doc["method"].get("kwargs", {}), dict), where,
           "method.kwargs must be an object")
  problem = method_options_problem(doc["method"]["name"], doc["method"].get("kwargs", {}))
  _require(not problem, where, f"method.kwargs: {problem}")
  batch = doc["eval"].get("batch_size")
  _require(jsonio.is_int(batch) and batch > 0, where,
           f"eval.batch_size must be > 0, got {batch!r}")
  devices = doc["eval"].get("num_devices", 1)
  _require(jsonio.is_int(devices) and devices > 0, where,
           f"eval.num_devices must be a positive int, got {devices!r}")
  for key in ("dtype", "precision"):     # absent in files written before they were recorded
    value = doc["eval"].get(key, "")
    _require(isinstance(value, str), where, f"eval.{key} must be a string, got {value!r}")
  dtype = doc["eval"].get("dtype")
  _require(dtype in (None, "", *COMPUTE_DTYPES), where,
           f"eval.dtype must be one of {list(COMPUTE_DTYPES)}, got {dtype!r}")
  precision = doc["eval"].get("precision")
  _require(precision in (None, "", *PRECISIONS), where,
           f"eval.precision must be one of {list(PRECISIONS)}, got {precision!r}")
  _require(data["fingerprint"] is None or jsonio.is_sha256(data["fingerprint"]), where,
           f"data.fingerprint must be a 64-digit hex string or null, got "
           f"{data['fingerprint']!r}")
  _require(jsonio.is_sha256(data.get("content_sha256", "0" * 64)), where,   # (absent: older,
           f"data.content_sha256 must be a 64-digit hex string, got "     # or arrays)
           f"{data.get('content_sha256')!r}")
  for key in ("source", "kind"):       # (what a reader shows as the data's name)
    _require(key not in data or (isinstance(data[key], str) and data[key].strip()), where,
             f"data.{key} must be a non-empty string, got {data.get(key)!r}")
  classes = data.get("classes")
  _require(classes is None or (isinstance(classes, list) and
                               all(isinstance(c, str) for c in classes) and
                               len(set(classes)) == len(classes)), where,
           f"data.classes must be a list of distinct class names, got {classes!r}")
  _require(data.get("selection") is None or isinstance(data["selection"], dict), where,
           f"data.selection must be an object, got {data.get('selection')!r}")
  split = (data.get("selection") or {}).get("split", "test")   # (a digits estimate's; its
  _require(split in DIGITS_SPLITS, where, f"data.selection.split must be one of "  # training
           f"{list(DIGITS_SPLITS)}, got {split!r}")    # split is refused by the solver by name)
  _require(isinstance(doc["weights"].get("source", ""), str), where,
           f"weights.source must be a string, got {doc['weights'].get('source')!r}")
  _require(0 <= doc["seed"] < 2 ** 32, where,
           f"seed must be in [0, 2**32) as the command lines take it, got {doc['seed']}")
  layers, tokens = doc["layers"], doc["tokens"]
  _require(bool(layers) and all(l is None or (jsonio.is_int(l) and 0 <= l < cfg.depth)
                                for l in layers), where,
           f"layers must be non-empty, each null or an int in [0, {cfg.depth - 1}]: {layers}")
  _require(len(set(layers)) == len(layers), where, f"layers have duplicates: "
           f"{['embed' if l is None else l for l in layers]}")
  _require(doc["kind"] == "sensitivity" or len(layers) == 1, where,
           f"a 'tokens' estimate has exactly one layer, got {layers}")
  _require(bool(tokens) and all(jsonio.is_int(n) for n in tokens), where,
           f"tokens must be a non-empty list of ints: {tokens}")
  _require(tokens == sorted(set(tokens)), where, f"tokens must be ascending and unique: {tokens}")
  try:
    schedule_lib.check_token_grid(cfg, tokens)
  except (ValueError, TypeError) as e:
    raise EstimateError(f"{where}: {e}") from None
  ref = doc["reference"]
  full = schedule_lib.full_schedule(cfg)
  _require(ref.get("counts") == list(full.counts), where,   # (an edited depth: named no further)
           f"reference.counts {ref.get('counts')!r} is not the unpruned schedule of "
           f"{cfg.name} (depth {cfg.depth}): {list(full.counts)} (edited?)")
  full_text = schedule_lib.format_schedule(full, cfg)
  _require("schedule" not in ref or ref["schedule"] == full_text, where,
           f"reference.schedule {ref.get('schedule')!r} is not the unpruned schedule's "
           f"{full_text!r} (edited?)")
  _check_scores(ref, f"{where}: reference", labelled, data["num_examples"])
  _require(ref["agreement"] == 1.0 and ref["kl"] == 0.0, where,
           "the reference must agree with itself (agreement 1, kl 0)")
  pts = doc["points"]
  grid = [(l, n) for l in layers for n in tokens]
  _require(len(pts) == len(grid), where, f"{len(pts)} points for a grid of {len(layers)} "
           f"layers x {len(tokens)} token counts = {len(grid)}")
  for i, (p, (l, n)) in enumerate(zip(pts, grid)):
    pw = f"{where}: points[{i}]"
    _require(isinstance(p, dict), pw, "must be an object")
    _require("layer" in p and p["layer"] == l and p.get("tokens") == n and
             jsonio.is_int(p["tokens"]) and
             (l is None or jsonio.is_int(p["layer"])), pw,        # 17.0 and true are not ints
             f"expected layer {l} tokens {n} (layer-major grid), got layer {p.get('layer')!r} "
             f"tokens {p.get('tokens')!r}")
    counts = p.get("counts")
    _require(isinstance(counts, list) and all(jsonio.is_int(c) for c in counts), pw,
             "counts must be a list of ints")
    try:
      schedule_lib.check_schedule(cfg, schedule_lib.Schedule(tuple(counts)))
    except ValueError as e:
      raise EstimateError(f"{pw}: {e}") from None
    want = list(schedule_lib.embed_counts(n, cfg.depth) if l is None else
                schedule_lib.layer_counts(cfg.num_tokens, n, cfg.depth, l))
    _require(counts == want, pw, f"counts {counts} do not reduce to {n} tokens at "
             f"{'the embedding' if l is None else f'layer {l}'} (expected {want})")
    _require(isinstance(p.get("schedule"), str), pw, "schedule must be a string")
    try:
      parsed = list(schedule_lib.parse_schedule(cfg, p["schedule"]).counts)
    except ValueError as e:
      raise EstimateError(f"{pw}: {e}") from None      # the error names the schedule text
    _require(parsed == counts, pw, f"schedule {p['schedule']!r} is counts {parsed}, not the "
             f"counts {counts} recorded with it (edited?)")
    _check_scores(p, pw, labelled, data["num_examples"])
    if counts == ref["counts"]:     # nothing removed: the reference's graph, the same scores
      _require(p["accuracy"] == ref["accuracy"] and p["agreement"] == 1.0, pw,
               f"{n} tokens is the unpruned model, but its accuracy {p['accuracy']} / "
               f"agreement {p['agreement']} are not the reference's {ref['accuracy']} / 1.0")
    if labelled:     # accuracy moves only on the images whose prediction moved
      num = data["num_examples"]
      moved = round(abs(p["accuracy"] - ref["accuracy"]) * num)
      _require(moved <= round((1 - p["agreement"]) * num), pw,
               f"accuracy {p['accuracy']} differs from the reference's {ref['accuracy']} on "
               f"{moved} of {num} images, but agreement {p['agreement']} leaves only "
               f"{round((1 - p['agreement']) * num)} predictions changed (edited?)")
  return cfg


# ----------------------------------------------------------------------------------------------
# Files.


def write_estimate(path: str, estimate: Estimate, *, overwrite: bool = False,
                   replaces: Any = atomic.ANY_OUTPUT) -> str:
  """Checks `estimate` (as `read_estimate` would) and writes it to `path` atomically; with
  `replaces` (the `atomic.file_stamp` of `path` when the run began) only over that file."""
  check_switch("overwrite", overwrite)
  path = os.path.abspath(path)
  doc = estimate.to_json()
  _validate(doc, path)
  if os.path.exists(path) and not overwrite:      # (early; checked again under the lock)
    raise FileExistsError(f"{path} already exists (pass overwrite=True / --overwrite)")
  return atomic.replace_json(path, doc, FORMAT, overwrite=overwrite,  # estimates only
                             replaces=replaces)


def read_estimate(path: str) -> Estimate:
  """The estimate in `path`; FileNotFoundError / `EstimateError` naming the file and field."""
  return Estimate.from_json(jsonio.read_json(path, "estimate", EstimateError), where=path)
