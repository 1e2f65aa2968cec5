"""Accuracy estimation of pruned ViTs: A(n) curves, per-layer sensitivity, label-free fidelity.

Evaluation streams fixed-shape batches `(images [B, S, S, C], labels [B], indices [B])` (as
`vitprune.data.iterate_batches` yields them; padding rows have index -1 and are masked out). For
every batch the unpruned reference logits are computed once and each evaluation point (a static
`Schedule` + reducer, compiled once) is compared with it:

  accuracy   top-1 accuracy against the labels (labelled data only),
  agreement  top-1 agreement with the unpruned model (fidelity, needs no labels),
  kl         mean KL(unpruned || pruned) of the softmax outputs, in nats (fidelity).

Per-example values are brought to the host and summed in float64 in dataset order, so results do
not depend on the batch size, the padding or the number of devices. With several devices the batch
is sharded across `Mesh(jax.devices(), ('data',))` (`NamedSharding(mesh, P('data'))` on the batch
axis, parameters replicated); on one device nothing is placed explicitly.

Points (see `token_points` / `sensitivity_points`):
  * layer None ("embed"): `counts = [n] * (depth + 1)`, tokens dropped right after the embedding
    (the paper's A(n) estimate with the `random` reducer);
  * layer l: `counts = [N] * (l + 1) + [n] * (depth - l)`, the reducer brings the tokens to n in
    block l (the paper's POMT schedule for l = 3) -- the per-layer sensitivity S[l, n].

Estimate file (JSON, written atomically by `save_estimate`, checked by `load_estimate`):

  {
    "format": "vitprune-estimate", "version": 1,
    "created": ISO-8601 time,
    "kind": "tokens" | "sensitivity",
    "model": {"name": str, "config": ViTConfig fields (vitprune.checkpoint.config_to_dict)},
    "weights": {"source": str (directory, or "init_params(seed=S)"), "sha256": hex (params_sha256)},
    "data": {"kind", "source", "num_examples", "classes", "labelled", "fingerprint"
             (vitprune.data.DatasetInfo), "selection": {free-form: split, subset seed, ...}},
    "method": {"name": str, "kwargs": {...}},
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
    "versions": {"estimate_format": 1, "python", "jax", "jaxlib", "numpy", "platform", "backend"}
  }

"tokens" files have a single layer (the A(n) curve, `curve`); "sensitivity" files have every
requested layer (the table S[l, n], `sensitivity_table`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vitprune import atomic
from vitprune.digest import params_sha256
from vitprune import schedule as schedule_lib
from vitprune.checkpoint import config_from_dict, config_to_dict
from vitprune.config import ViTConfig
from vitprune.model import Params, jitted_forward
from vitprune.reduce.base import TokenReducer
from vitprune.schedule import Schedule, check_schedule, full_schedule

FORMAT = "vitprune-estimate"
VERSION = 1
KINDS = ("tokens", "sensitivity")
LABELLED_METRICS = ("accuracy", "agreement", "kl")
FIDELITY_METRICS = ("agreement", "kl")

Batch = Tuple[np.ndarray, np.ndarray, np.ndarray]


# ----------------------------------------------------------------------------------------------
# Evaluation points.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EvalPoint:
  """One evaluated configuration: a static schedule and the reducer that realises it.

  Attributes:
    schedule: the token schedule (validated against the model by `evaluate`).
    reducer: the token reducer; may be None only when the schedule reduces nothing.
    tokens: the grid value n this point stands for.
    layer: the reduction block index, or None when tokens are dropped after the embedding.
  """
  schedule: Schedule
  reducer: Optional[TokenReducer]
  tokens: int
  layer: Optional[int]


def embed_schedule(cfg: ViTConfig, n: int) -> Schedule:
  """`n` tokens (prefix included) kept right after the embedding: `[n] * (depth + 1)`."""
  return check_schedule(cfg, Schedule((int(n),) * (cfg.depth + 1)))


def layer_schedule(cfg: ViTConfig, n: int, layer: int) -> Schedule:
  """All tokens up to block `layer`, which reduces to `n`: `[N] * (layer + 1) + [n] * rest`."""
  if not isinstance(layer, (int, np.integer)) or not 0 <= layer < cfg.depth:
    raise ValueError(f"reduction layer must be an int in [0, {cfg.depth - 1}] for {cfg.name} "
                     f"(depth {cfg.depth}), got {layer!r}")
  counts = (cfg.num_tokens,) * (layer + 1) + (int(n),) * (cfg.depth - layer)
  return check_schedule(cfg, Schedule(counts))


def check_tokens(cfg: ViTConfig, tokens: Sequence[int]) -> Tuple[int, ...]:
  """Validates a token grid: unique ints in [prefix + 1, N]; returns it sorted ascending."""
  ns = list(tokens)
  if not ns:
    raise ValueError("token grid is empty")
  bad = [n for n in ns if not isinstance(n, (int, np.integer))]
  if bad:
    raise ValueError(f"token counts must be ints, got {bad}")
  lo, hi = cfg.num_prefix_tokens + 1, cfg.num_tokens
  out = [n for n in ns if not lo <= n <= hi]
  if out:
    raise ValueError(f"token counts {sorted(out)} outside [{lo}, {hi}] for {cfg.name} "
                     f"(prefix {cfg.num_prefix_tokens} + at least one patch, at most all "
                     f"{hi} tokens)")
  if len(set(ns)) != len(ns):
    raise ValueError(f"token grid has duplicates: {ns}")
  return tuple(sorted(int(n) for n in ns))


def token_points(cfg: ViTConfig, tokens: Sequence[int], reducer: Optional[TokenReducer], *,
                 layer: Optional[int] = None) -> List[EvalPoint]:
  """A(n) grid: one point per n, dropping after the embedding (layer None) or in block `layer`."""
  ns = check_tokens(cfg, tokens)
  make = (lambda n: embed_schedule(cfg, n)) if layer is None else (
      lambda n: layer_schedule(cfg, n, layer))
  return [EvalPoint(make(n), reducer, n, layer) for n in ns]


def sensitivity_points(cfg: ViTConfig, tokens: Sequence[int], layers: Sequence[Optional[int]],
                       reducer: Optional[TokenReducer]) -> List[EvalPoint]:
  """S[l, n] grid: layer-major, n ascending; `None` in `layers` means after the embedding."""
  layers = list(layers)
  if not layers:
    raise ValueError("no layers given for the sensitivity table")
  if len(set(layers)) != len(layers):
    raise ValueError(f"layers have duplicates: {layers}")
  return [p for l in layers for p in token_points(cfg, tokens, reducer, layer=l)]


# ----------------------------------------------------------------------------------------------
# Streaming evaluation.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PointResult:
  """Sums over the evaluated (non-padding) examples of one point.

  Attributes:
    num_examples: evaluated examples.
    correct: top-1 correct against the labels, None when unlabelled.
    agree: top-1 agreements with the unpruned model.
    kl_sum: sum over examples of KL(unpruned || pruned) (nats, float64 on the host).
  """
  num_examples: int
  correct: Optional[int]
  agree: int
  kl_sum: float

  @property
  def accuracy(self) -> Optional[float]:
    return None if self.correct is None else self.correct / self.num_examples

  @property
  def agreement(self) -> float:
    return self.agree / self.num_examples

  @property
  def kl(self) -> float:
    return self.kl_sum / self.num_examples


def log_softmax64(logits: np.ndarray) -> np.ndarray:
  """float64 log-softmax over the last axis of `[B, K]` (host side)."""
  z = np.asarray(logits, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def compare_logits(logits: np.ndarray, ref_logits: np.ndarray, labels: np.ndarray
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per-example comparison of `[B, K]` logits with the unpruned `[B, K]` and labels `[B]`.

  Computed on the host in float64 (the KL of nearly equal distributions cancels badly in
  float32).

  Returns:
    `(correct [B] bool, agree [B] bool, kl [B] float64)` with
    `kl = sum_k p_ref * (log p_ref - log p)`; exactly 0 when the logits are identical.
  """
  logits, ref_logits = np.asarray(logits), np.asarray(ref_logits)
  logp, ref_logp = log_softmax64(logits), log_softmax64(ref_logits)
  kl = np.sum(np.exp(ref_logp) * (ref_logp - logp), axis=-1)
  pred = logits.argmax(-1)
  return pred == np.asarray(labels), pred == ref_logits.argmax(-1), kl


def data_mesh(devices: Optional[Sequence[jax.Device]] = None) -> jax.sharding.Mesh:
  """A 1-D data-parallel mesh over `devices` (default all), axis name 'data'."""
  return jax.sharding.Mesh(np.asarray(list(devices or jax.devices())), ("data",))


@dataclasses.dataclass(frozen=True)
class _Placement:
  """Where batches and parameters go: nowhere special (None) or a data-parallel mesh."""
  mesh: Optional[jax.sharding.Mesh]

  @property
  def num_devices(self) -> int:
    return 1 if self.mesh is None else self.mesh.devices.size

  def params(self, params: Params) -> Params:
    if self.mesh is None:
      return params
    rep = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    return jax.device_put(params, rep)

  def batch(self, x: np.ndarray) -> jax.Array:
    if self.mesh is None:
      return jnp.asarray(x)
    spec = jax.sharding.PartitionSpec("data", *([None] * (x.ndim - 1)))
    return jax.device_put(x, jax.sharding.NamedSharding(self.mesh, spec))


def _placement(shard: bool, batch_size: int) -> _Placement:
  if not shard or jax.device_count() == 1:
    return _Placement(None)
  mesh = data_mesh()
  if batch_size % mesh.devices.size:
    raise ValueError(f"batch size {batch_size} is not divisible by the {mesh.devices.size} "
                     f"devices it is sharded over; pick a multiple of {mesh.devices.size} "
                     f"(or shard=False)")
  return _Placement(mesh)


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """`reference`: the unpruned model (agreement 1, KL 0); `points`: one result per point."""
  reference: PointResult
  points: Tuple[PointResult, ...]
  batch_size: int
  num_devices: int


def _check_batch(batch: Batch, batch_size: Optional[int], labelled: bool, cfg: ViTConfig
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  if not isinstance(batch, (tuple, list)) or len(batch) != 3:
    raise ValueError("each batch must be (images [B, S, S, C], labels [B], indices [B])")
  images, labels, indices = (np.asarray(a) for a in batch)
  b = images.shape[0] if images.ndim else 0
  if labels.shape != (b,) or indices.shape != (b,):
    raise ValueError(f"batch has {b} images but labels {labels.shape} and indices "
                     f"{indices.shape}")
  if batch_size is not None and b != batch_size:
    raise ValueError(f"batch of {b} rows after batches of {batch_size}: every batch must have "
                     "the same (padded) size so one graph is compiled; pad the last batch")
  valid = indices >= 0
  if labelled and np.any(labels[valid] < 0):
    raise ValueError("labelled evaluation got unlabelled examples (label -1); pass "
                     "labelled=False for fidelity only")
  if labelled and np.any(labels[valid] >= max(cfg.num_classes, 1)):
    raise ValueError(f"labels up to {labels[valid].max()} but {cfg.name} has "
                     f"{cfg.num_classes} classes")
  return images, labels.astype(np.int32), valid


def evaluate(cfg: ViTConfig, params: Params, batches: Iterable[Batch],
             points: Sequence[EvalPoint], *, labelled: bool, dtype: str = "float32",
             precision: str = "highest", shard: bool = True) -> EvalResult:
  """Streams `batches` once, comparing every point with the unpruned model on each batch.

  Args:
    cfg, params: the model (a classifier: `cfg.num_classes > 0`).
    batches: `(images [B, S, S, C], labels [B] int, indices [B] int)` with one fixed B; rows with
      index -1 are padding and are ignored.
    points: what to evaluate (`token_points`, `sensitivity_points` or hand-made).
    labelled: compute accuracy (labels must be >= 0 on real rows); else fidelity only.
    dtype, precision: forwarded to `vitprune.model.forward` (the reference uses the same).
    shard: with several devices, shard each batch over `data_mesh()` (B divisible by the count).

  Returns:
    An `EvalResult`; raises ValueError for empty data, bad batches or invalid schedules.
  """
  if cfg.num_classes == 0:
    raise ValueError(f"{cfg.name} has no classification head (num_classes=0): accuracy and "
                     "softmax fidelity need logits")
  points = list(points)
  for p in points:
    check_schedule(cfg, p.schedule, p.reducer)
    if p.schedule != full_schedule(cfg) and p.reducer is None:
      raise ValueError(f"point n={p.tokens} layer={p.layer} reduces tokens but has no reducer")
  ref_schedule = full_schedule(cfg)
  placement, batch_size = None, None
  dev_params = None
  n = 0
  ref_correct = 0
  correct = np.zeros(len(points), np.int64)
  agree = np.zeros(len(points), np.int64)
  kl = np.zeros(len(points), np.float64)
  for batch in batches:
    images, labels, valid = _check_batch(batch, batch_size, labelled, cfg)
    if batch_size is None:
      batch_size = images.shape[0]
      placement = _placement(shard, batch_size)
      dev_params = placement.params(params)
    if not valid.any():
      continue
    x = placement.batch(images)
    fwd = dict(cfg=cfg, dtype=dtype, precision=precision)
    ref = np.asarray(jax.device_get(jitted_forward(dev_params, x, schedule=ref_schedule, **fwd)))
    n += int(valid.sum())
    ref_correct += int((ref.argmax(-1) == labels)[valid].sum())
    for i, p in enumerate(points):
      logits = jax.device_get(jitted_forward(dev_params, x, schedule=p.schedule,
                                             reducer=p.reducer, **fwd))
      c, a, k = compare_logits(logits, ref, labels)
      correct[i] += int(c[valid].sum())
      agree[i] += int(a[valid].sum())
      kl[i] += float(np.sum(k[valid]))
  if n == 0:
    raise ValueError("no examples to evaluate (empty data or only padding rows)")

  def result(c, a, k):
    return PointResult(n, int(c) if labelled else None, int(a), float(k))

  return EvalResult(reference=result(ref_correct, n, 0.0),
                    points=tuple(result(*v) for v in zip(correct, agree, kl)),
                    batch_size=batch_size, num_devices=placement.num_devices)


# ----------------------------------------------------------------------------------------------
# Data selection.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class EvalData:
  """A dataset, the sample indices to evaluate and their identity.

  Attributes:
    dataset: an `ImageFolder` or `ArrayDataset` (anything `iterate_batches` takes).
    indices: int64 `[M]` sorted sample indices.
    labelled: whether accuracy can be computed.
    info: the `data` entry of the estimate file (`DatasetInfo` fields + `selection`).
  """
  dataset: Any
  indices: np.ndarray
  labelled: bool
  info: Dict[str, Any]

  def batches(self, cfg: ViTConfig, batch_size: int, num_workers: int = 0
              ) -> Iterable[Batch]:
    """Fixed-shape padded batches with `cfg.preprocessing` (the model's eval transform)."""
    from vitprune import data as data_lib  # pylint: disable=g-import-not-at-top
    return data_lib.iterate_batches(self.dataset, cfg.preprocessing, batch_size,
                                    indices=self.indices, num_workers=num_workers)


def subset_indices(labels: np.ndarray, labelled: bool, num_images: Optional[int], seed: int
                   ) -> np.ndarray:
  """All indices (`num_images` None), a seeded class-balanced sample (labelled), or a seeded
  uniform sample without replacement (unlabelled); int64 sorted."""
  from vitprune import data as data_lib  # pylint: disable=g-import-not-at-top
  n = len(labels)
  if num_images is None:
    return np.arange(n, dtype=np.int64)
  if not isinstance(num_images, (int, np.integer)) or num_images < 1:
    raise ValueError(f"num_images must be a positive int, got {num_images!r}")
  if num_images > n:
    raise ValueError(f"num_images={num_images} exceeds the {n} images available")
  if labelled:
    return data_lib.balanced_subset(labels, int(num_images), seed)
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(n, int(num_images), replace=False)).astype(np.int64)


def load_eval_data(spec: str, *, num_images: Optional[int] = None, seed: int = 0,
                   split: str = "test", split_seed: int = 0) -> EvalData:
  """`spec` 'digits' (scikit-learn digits, `split` of `digits_split(split_seed)`) or an image
  folder (labelled `root/<class>/...` or a flat unlabelled folder); optionally a seeded subset of
  `num_images` (class-balanced when labelled)."""
  from vitprune import data as data_lib  # pylint: disable=g-import-not-at-top
  if spec == "digits":
    ds = data_lib.digits_dataset()
    if split not in ("train", "test", "all"):
      raise ValueError(f"unknown digits split {split!r}; expected train, test or all")
    if split == "all":
      base = np.arange(len(ds), dtype=np.int64)
    else:
      train, test = data_lib.digits_split(split_seed)
      base = train if split == "train" else test
    idx = base[subset_indices(ds.labels[base], True, num_images, seed)]
    info = data_lib.dataset_info(ds, idx, name="sklearn_digits").to_dict()
    info["selection"] = {"split": split, "split_seed": split_seed, "num_images": num_images,
                         "subset_seed": seed}
    return EvalData(ds, idx, True, info)
  if not os.path.isdir(spec):
    raise FileNotFoundError(f"data {spec!r} is neither 'digits' nor an existing directory")
  ds = data_lib.ImageFolder(spec)
  idx = subset_indices(ds.labels, ds.labelled, num_images, seed)
  info = data_lib.dataset_info(ds, idx).to_dict()
  info["selection"] = {"num_images": num_images, "subset_seed": seed}
  return EvalData(ds, idx, ds.labelled, info)


# ----------------------------------------------------------------------------------------------
# Identity of what was evaluated.
# ----------------------------------------------------------------------------------------------


def versions() -> Dict[str, Any]:
  import jaxlib  # pylint: disable=g-import-not-at-top
  return {"estimate_format": VERSION, "python": platform.python_version(),
          "jax": jax.__version__, "jaxlib": jaxlib.__version__, "numpy": np.__version__,
          "platform": platform.platform(), "backend": jax.default_backend()}


def _metric_values(r: PointResult) -> Dict[str, Any]:
  return {"num_examples": r.num_examples, "accuracy": r.accuracy, "agreement": r.agreement,
          "kl": r.kl}


def estimate_record(*, cfg: ViTConfig, params: Params, weights_source: str,
                    data_info: Dict[str, Any], method: str, method_kwargs: Dict[str, Any],
                    seed: int, points: Sequence[EvalPoint], result: EvalResult,
                    labelled: bool, dtype: str = "float32", precision: str = "highest",
                    created: Optional[str] = None) -> Dict[str, Any]:
  """The estimate-file document (see the module docstring) of an `evaluate` run."""
  points = list(points)
  if len(points) != len(result.points):
    raise ValueError(f"{len(points)} points but {len(result.points)} results")
  layers = list(dict.fromkeys(p.layer for p in points))
  tokens = sorted({p.tokens for p in points})
  doc = {
      "format": FORMAT, "version": VERSION,
      "created": created or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
      "kind": "tokens" if len(layers) == 1 else "sensitivity",
      "model": {"name": cfg.name, "config": config_to_dict(cfg)},
      "weights": {"source": weights_source, "sha256": params_sha256(params)},
      "data": dict(data_info),
      "method": {"name": method, "kwargs": dict(method_kwargs)},
      "seed": int(seed),
      "layers": layers,
      "tokens": tokens,
      "eval": {"batch_size": result.batch_size, "dtype": dtype, "precision": precision,
               "num_devices": result.num_devices},
      "metrics": list(LABELLED_METRICS if labelled else FIDELITY_METRICS),
      "reference": {"counts": list(full_schedule(cfg).counts),
                    "schedule": schedule_lib.format_schedule(full_schedule(cfg), cfg),
                    **_metric_values(result.reference)},
      "points": [{"layer": p.layer, "tokens": p.tokens, "counts": list(p.schedule.counts),
                  "schedule": schedule_lib.format_schedule(p.schedule, cfg), **_metric_values(r)}
                 for p, r in zip(points, result.points)],
      "versions": versions(),
  }
  validate_estimate(doc)
  return doc


# ----------------------------------------------------------------------------------------------
# Files.
# ----------------------------------------------------------------------------------------------


class EstimateError(ValueError):
  """An estimate document or file that does not follow the schema."""


def _require(cond: bool, where: str, msg: str):
  if not cond:
    raise EstimateError(f"{where}: {msg}")


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


_TOP_KEYS = {"format": str, "version": int, "created": str, "kind": str, "model": dict,
             "weights": dict, "data": dict, "method": dict, "seed": int, "layers": list,
             "tokens": list, "eval": dict, "metrics": list, "reference": dict, "points": list,
             "versions": dict}


def _check_values(p: Dict[str, Any], where: str, labelled: bool, num_examples: int):
  for key in ("num_examples", "accuracy", "agreement", "kl"):
    _require(key in p, where, f"missing {key!r}")
  _require(p["num_examples"] == num_examples, where,
           f"num_examples {p['num_examples']} != data.num_examples {num_examples}")
  if labelled:
    _require(_is_num(p["accuracy"]) and 0 <= p["accuracy"] <= 1, where,
             f"accuracy must be a number in [0, 1] for labelled data, got {p['accuracy']!r}")
  else:
    _require(p["accuracy"] is None, where,
             f"accuracy must be null for unlabelled data, got {p['accuracy']!r}")
  _require(_is_num(p["agreement"]) and 0 <= p["agreement"] <= 1, where,
           f"agreement must be a number in [0, 1], got {p['agreement']!r}")
  _require(_is_num(p["kl"]) and p["kl"] >= 0, where,
           f"kl must be a finite number >= 0, got {p['kl']!r}")


def _check_config_types(cfg: ViTConfig, where: str):
  """JSON gives no types: each scalar config field must have its default's type."""
  for f in dataclasses.fields(ViTConfig):
    default, value = f.default, getattr(cfg, f.name)
    if isinstance(default, bool):
      ok = isinstance(value, bool)
    elif isinstance(default, int):
      ok = _is_int(value)
    elif isinstance(default, float):
      ok = _is_num(value)
    elif isinstance(default, str):
      ok = isinstance(value, str)
    else:
      continue
    _require(ok, where, f"model.config.{f.name} must be {type(default).__name__}, "
             f"got {value!r}")


def validate_estimate(doc: Any, where: str = "estimate") -> Dict[str, Any]:
  """Checks `doc` against the schema; returns it or raises `EstimateError` naming the problem."""
  _require(isinstance(doc, dict), where, f"expected a JSON object, got {type(doc).__name__}")
  _require(doc.get("format") == FORMAT, where,
           f"format {doc.get('format')!r} is not {FORMAT!r}")
  _require(doc.get("version") == VERSION, where, f"unsupported version {doc.get('version')!r} "
           f"(this code reads version {VERSION})")
  for key, typ in _TOP_KEYS.items():
    _require(key in doc, where, f"missing key {key!r}")
    ok = _is_int(doc[key]) if typ is int else isinstance(doc[key], typ)
    _require(ok, where, f"{key!r} must be {typ.__name__}, got {type(doc[key]).__name__}")
  _require(doc["kind"] in KINDS, where, f"kind {doc['kind']!r} not in {KINDS}")
  try:
    cfg = config_from_dict(doc["model"].get("config", {}))
  except (ValueError, TypeError) as e:
    raise EstimateError(f"{where}: model.config is invalid: {e}") from None
  _check_config_types(cfg, where)
  _require(doc["model"].get("name") == cfg.name, where,
           f"model.name {doc['model'].get('name')!r} != config name {cfg.name!r}")
  sha = doc["weights"].get("sha256")
  _require(isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha),
           where, f"weights.sha256 must be a 64-digit hex string, got {sha!r}")
  data = doc["data"]
  for key in ("fingerprint", "num_examples", "labelled"):
    _require(key in data, where, f"data is missing {key!r}")
  _require(_is_int(data["num_examples"]) and data["num_examples"] > 0, where,
           f"data.num_examples must be a positive int, got {data['num_examples']!r}")
  labelled = data["labelled"]
  _require(isinstance(labelled, bool), where, "data.labelled must be true or false")
  want_metrics = list(LABELLED_METRICS if labelled else FIDELITY_METRICS)
  _require(doc["metrics"] == want_metrics, where,
           f"metrics {doc['metrics']} != {want_metrics} for labelled={labelled}")
  _require(isinstance(doc["method"].get("name"), str), where, "method.name must be a string")
  batch = doc["eval"].get("batch_size")
  _require(_is_int(batch) and batch > 0, where, f"eval.batch_size must be > 0, got {batch!r}")
  layers, tokens = doc["layers"], doc["tokens"]
  _require(bool(layers) and all(l is None or (_is_int(l) and 0 <= l < cfg.depth)
                                for l in layers), where,
           f"layers must be non-empty, each null or an int in [0, {cfg.depth - 1}]: {layers}")
  _require(len(set(layers)) == len(layers), where, f"layers have duplicates: {layers}")
  _require(doc["kind"] == "sensitivity" or len(layers) == 1, where,
           f"a 'tokens' estimate has exactly one layer, got {layers}")
  _require(bool(tokens) and all(_is_int(n) for n in tokens), where,
           f"tokens must be a non-empty list of ints: {tokens}")
  _require(tokens == sorted(set(tokens)), where, f"tokens must be ascending and unique: {tokens}")
  try:
    check_tokens(cfg, tokens)
  except ValueError as e:
    raise EstimateError(f"{where}: {e}") from None
  ref = doc["reference"]
  _require(ref.get("counts") == list(full_schedule(cfg).counts), where,
           "reference.counts is not the unpruned schedule")
  _check_values(ref, f"{where}: reference", labelled, data["num_examples"])
  _require(ref["agreement"] == 1.0 and ref["kl"] == 0.0, where,
           "the reference must agree with itself (agreement 1, kl 0)")
  pts = doc["points"]
  grid = [(l, n) for l in layers for n in tokens]
  _require(len(pts) == len(grid), where, f"{len(pts)} points for a grid of {len(layers)} "
           f"layers x {len(tokens)} token counts = {len(grid)}")
  for i, (p, (l, n)) in enumerate(zip(pts, grid)):
    pw = f"{where}: points[{i}]"
    _require(isinstance(p, dict), pw, "must be an object")
    _require(p.get("layer") == l and p.get("tokens") == n, pw,
             f"expected layer {l} tokens {n} (layer-major grid), got layer {p.get('layer')!r} "
             f"tokens {p.get('tokens')!r}")
    counts = p.get("counts")
    _require(isinstance(counts, list) and all(_is_int(c) for c in counts), pw,
             "counts must be a list of ints")
    try:
      check_schedule(cfg, Schedule(tuple(counts)))
    except ValueError as e:
      raise EstimateError(f"{pw}: {e}") from None
    want = (list(embed_schedule(cfg, n).counts) if l is None
            else list(layer_schedule(cfg, n, l).counts))
    _require(counts == want, pw, f"counts {counts} do not reduce to {n} tokens at "
             f"{'the embedding' if l is None else f'layer {l}'} (expected {want})")
    _require(isinstance(p.get("schedule"), str), pw, "schedule must be a string")
    _check_values(p, pw, labelled, data["num_examples"])
  return doc


def save_estimate(path: str, doc: Dict[str, Any], *, overwrite: bool = False) -> str:
  """Validates `doc` and writes it to `path` atomically (temp file + `os.replace`)."""
  validate_estimate(doc)
  path = os.path.abspath(path)
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path} already exists (pass overwrite=True / --overwrite)")
  return atomic.write_json(path, doc)


def load_estimate(path: str) -> Dict[str, Any]:
  """Reads and validates an estimate file; raises FileNotFoundError / `EstimateError`."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"estimate file {path!r} does not exist")
  try:
    with open(path) as f:
      doc = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise EstimateError(f"{path}: not valid JSON: {e}") from None
  return validate_estimate(doc, where=path)


def default_metric(doc: Dict[str, Any]) -> str:
  """'accuracy' for labelled estimates, else 'agreement'."""
  return "accuracy" if doc["data"]["labelled"] else "agreement"


def _metric(doc: Dict[str, Any], metric: Optional[str]) -> str:
  metric = metric or default_metric(doc)
  if metric not in doc["metrics"]:
    raise ValueError(f"metric {metric!r} not in this estimate's metrics {doc['metrics']}")
  return metric


def curve(doc: Dict[str, Any], metric: Optional[str] = None,
          layer: Any = "auto") -> Tuple[np.ndarray, np.ndarray]:
  """A(n) of an estimate: `(tokens int64 [T], values float64 [T])` for one layer (default: the
  only layer of a 'tokens' file; required for 'sensitivity' files)."""
  metric = _metric(doc, metric)
  if layer == "auto":
    if len(doc["layers"]) != 1:
      raise ValueError(f"estimate has layers {doc['layers']}; pass layer=")
    layer = doc["layers"][0]
  if layer not in doc["layers"]:
    raise ValueError(f"layer {layer!r} not in this estimate's layers {doc['layers']}")
  pts = [p for p in doc["points"] if p["layer"] == layer]
  return (np.asarray([p["tokens"] for p in pts], np.int64),
          np.asarray([p[metric] for p in pts], np.float64))


def sensitivity_table(doc: Dict[str, Any], metric: Optional[str] = None
                      ) -> Tuple[List[Optional[int]], np.ndarray, np.ndarray]:
  """`(layers [L], tokens int64 [T], S float64 [L, T])`: the metric when reducing to
  `tokens[j]` at `layers[i]` (None = after the embedding)."""
  metric = _metric(doc, metric)
  layers, tokens = list(doc["layers"]), np.asarray(doc["tokens"], np.int64)
  values = np.asarray([p[metric] for p in doc["points"]], np.float64)
  return layers, tokens, values.reshape(len(layers), len(tokens))
