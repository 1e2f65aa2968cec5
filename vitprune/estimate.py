"""Accuracy estimation of pruned ViTs: A(n) curves, per-layer sensitivity, label-free fidelity.

Evaluation streams fixed-shape batches `(images [B, S, S, C], labels [B], indices [B])` (as
`vitprune.data.iterate_batches` yields them; padding rows have index -1 and are masked out). For
every batch the unpruned reference logits are computed once and each evaluation point (a static
`Schedule` + reducer, run as cached compiled pieces, `vitprune.piecewise`) is compared with it:

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

The run becomes an `Estimate` record (`estimate_record`; format, file reading and writing in
`vitprune.records.estimate`).
"""
from __future__ import annotations

import dataclasses
import reprlib
import os
import platform
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from vitprune import data as data_lib
from vitprune import digits as digits_lib
from vitprune import intervals
from vitprune import jsonio
from vitprune import schedule as schedule_lib
from vitprune.config import ViTConfig, check_switch
from vitprune.digest import params_sha256
from vitprune.model import Params, check_params
from vitprune.piecewise import PiecewiseForward, WholeGraphs
from vitprune.records.estimate import (FIDELITY_METRICS, LABELLED_METRICS, VERSION, Estimate,
                                       EstimatePoint, Scores, default_metric)
from vitprune.reduce.base import TokenReducer
from vitprune.reduce.methods import check_named, make_reducer, reducer_fields
from vitprune.schedule import Schedule, check_schedule, full_schedule

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


def token_points(cfg: ViTConfig, tokens: Sequence[int], reducer: Optional[TokenReducer], *,
                 layer: Optional[int] = None) -> List[EvalPoint]:
  """A(n) grid: one point per n, dropping after the embedding (layer None) or in block `layer`."""
  ns = schedule_lib.check_token_grid(cfg, tokens)
  make = (lambda n: schedule_lib.embed_schedule(cfg, n)) if layer is None else (
      lambda n: schedule_lib.layer_schedule(cfg, n, layer))
  return [EvalPoint(make(n), reducer, n, layer) for n in ns]


def sensitivity_points(cfg: ViTConfig, tokens: Sequence[int], layers: Sequence[Optional[int]],
                       reducer: Optional[TokenReducer]) -> List[EvalPoint]:
  """S[l, n] grid: layer-major, n ascending; `None` in `layers` means after the embedding."""
  layers = list(layers)
  if not layers:
    raise ValueError("no layers given for the sensitivity table")
  if len(set(layers)) != len(layers):
    raise ValueError(f"layers have duplicates: {['embed' if l is None else l for l in layers]}")
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
  kl[(kl < 0) & (kl > -1e-9)] = 0.0     # KL >= 0: nearly equal terms round a little below 0
  pred = logits.argmax(-1)
  return pred == np.asarray(labels), pred == ref_logits.argmax(-1), kl


def top1_margins(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
  """`[B, K]` logits, `[B]` target classes -> `[B]` float64 margins: the target's logit minus
  the largest other logit, > 0 exactly where `argmax` picks the target (a tie goes to the lower
  class index, as argmax breaks it: a tie with a higher class is the smallest positive margin)."""
  logits = np.asarray(logits, np.float64)
  target = np.asarray(target)
  if logits.ndim != 2 or target.shape != logits.shape[:1] or target.dtype.kind not in "iu" or (
      target.size and not 0 <= target.min() <= target.max() < logits.shape[1]):
    raise ValueError(f"top1_margins needs [B, K] logits and [B] target classes in 0..K-1, got "
                     f"{logits.shape} and {target.dtype} {reprlib.repr(target.tolist())}")
    # (a target of -1, unlabelled, indexed the last class and counted as right)
  rows = np.arange(logits.shape[0])
  target_logit = logits[rows, target]
  classes = np.arange(logits.shape[1])
  lower = np.where(classes < target[:, None], logits, -np.inf).max(axis=-1)
  higher = np.where(classes > target[:, None], logits, -np.inf).max(axis=-1)
  above_higher = target_logit - higher
  above_higher[above_higher == 0] = np.nextafter(0.0, 1.0)
  return np.minimum(target_logit - lower, above_higher)


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
    return jax.device_put(x, self.token_sharding(x.ndim))

  @property
  def token_sharding(self) -> Optional[Callable[[int], jax.sharding.Sharding]]:
    """ndim -> the sharding of a batch-major array (batch axis over the mesh); None: no mesh."""
    if self.mesh is None:
      return None
    return lambda ndim: jax.sharding.NamedSharding(
        self.mesh, jax.sharding.PartitionSpec("data", *([None] * (ndim - 1))))


def _placement(shard: bool, batch_size: int) -> _Placement:
  if not shard or jax.device_count() == 1:
    return _Placement(None)
  mesh = data_mesh()
  if batch_size % mesh.devices.size:
    raise ValueError(f"batch size {batch_size} is not divisible by the {mesh.devices.size} "
                     f"devices it is sharded over; pick a multiple of {mesh.devices.size} "
                     f"(or shard=False: --noshard on the command line)")
  return _Placement(mesh)


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """`reference`: the unpruned model (agreement 1, KL 0); `points`: one result per point.
  `margins` (`evaluate(..., margins=True)`, else None): `[1 + P, M]` float64 top-1 margins
  (`top1_margins`) of the reference and each point on the M examples in data order, against
  the labels (labelled) or the reference's top-1 class (unlabelled, or `evaluate(...,
  agreement_margins=True)`: the agreement metric's target)."""
  reference: PointResult
  points: Tuple[PointResult, ...]
  batch_size: int
  num_devices: int
  margins: Optional[np.ndarray] = None


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
                     "the same (padded) size so each piece is compiled once; pad the last batch")
  if labels.dtype.kind not in "iu" or indices.dtype.kind not in "iu":   # (2.9 was label 2)
    raise ValueError(f"labels and indices must be integers, got {labels.dtype} and "
                     f"{indices.dtype}")
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
             precision: str = "highest", shard: bool = True, threads: int = 2,
             pieces: Optional[Dict[Any, Any]] = None, whole_graphs: bool = False,
             margins: bool = False, agreement_margins: bool = False) -> EvalResult:
  """Streams `batches` once, comparing every point with the unpruned model on each batch.

  Each schedule runs as separately compiled pieces (`vitprune.piecewise`: embedding, one block
  per (tokens in, tokens out), head), every distinct piece compiled once on the first batch,
  `threads` at a time: D x K sensitivity points need about 3K small compiles, not D x K whole
  graphs. The logits equal the whole graph's (`jitted_forward`) up to float rounding (fusion
  across blocks); `whole_graphs=True` runs the whole compiled graph of each schedule instead
  (what is timed and deployed: the pipeline's verification).

  Args:
    cfg, params: the model (a classifier: `cfg.num_classes > 0`).
    batches: `(images [B, S, S, C], labels [B] int, indices [B] int)` with one fixed B; rows with
      index -1 are padding and are ignored.
    points: what to evaluate (`token_points`, `sensitivity_points` or hand-made).
    labelled: compute accuracy (labels must be >= 0 on real rows); else fidelity only.
    dtype, precision: forwarded to `vitprune.model.forward` (the reference uses the same).
    shard: with several devices, shard each batch over `data_mesh()` (B divisible by the count).
    threads: pieces (graphs) compiled at once.
    pieces: a dict the caller keeps between calls ((reducer, mesh) -> compiled pieces): reused
      when built for the same params object (not mutated in place since), dtype and precision,
      else replaced.
    whole_graphs: one whole compiled graph per schedule (`model.forward`) instead of pieces.
    margins: also keep every example's top-1 margin (`EvalResult.margins`; the per-image
      accuracy model of `vitprune.solve.per_image_accuracy`), against the label (unlabelled or
      `agreement_margins`: against the unpruned model's class, the agreement metric's target).

  Returns:
    An `EvalResult`; raises ValueError for empty data, bad batches or invalid schedules.
  """
  for name, value in (("labelled", labelled), ("shard", shard), ("whole_graphs", whole_graphs),
                      ("margins", margins), ("agreement_margins", agreement_margins)):
    check_switch(name, value)        # ('no' is truthy)
  if cfg.num_classes == 0:
    raise ValueError(f"{cfg.name} has no classification head (num_classes=0): accuracy and "
                     "softmax fidelity need logits")
  # (a schedule of None, no reduction, was said to "reduce tokens but has no reducer")
  points = [dataclasses.replace(p, schedule=check_schedule(cfg, p.schedule, p.reducer))
            for p in points]
  for p in points:
    if p.schedule != full_schedule(cfg) and p.reducer is None:
      raise ValueError(f"point n={p.tokens} layer={p.layer} reduces tokens but has no reducer")
  ref_schedule = full_schedule(cfg)
  placement, batch_size = None, None
  n = 0
  ref_correct = 0
  correct = np.zeros(len(points), np.int64)
  agree = np.zeros(len(points), np.int64)
  kl = np.zeros(len(points), np.float64)
  margin_parts: List[np.ndarray] = []   # [1 + P, B valid] per batch
  # One key per distinct schedule (one that reduces nothing runs no reducer: the reference).
  ref_key = (ref_schedule, None)
  keys = [ref_key if p.schedule == ref_schedule else (p.schedule, p.reducer) for p in points]
  forwards = {} if pieces is None else pieces   # reducer -> its pieces, built on the first batch
  compiled = False
  for batch in batches:
    images, labels, valid = _check_batch(batch, batch_size, labelled, cfg)
    if batch_size is None:
      batch_size = images.shape[0]
      placement = _placement(shard, batch_size)
    if not valid.any():
      continue
    x = placement.batch(images)
    if not compiled:
      _compile_pieces(forwards, cfg, params, x, [ref_key] + keys, placement,
                      dtype=dtype, precision=precision, threads=threads,
                      kind=WholeGraphs if whole_graphs else PiecewiseForward)
      compiled = True
    ref = np.asarray(jax.device_get(forwards[(None, placement.mesh)](ref_schedule, x)))
    _check_finite_logits(ref, valid, batch, "the unpruned model",
                         "NaN/inf in the parameters or the preprocessed images (preprocessing "
                         "std/mean?)")
    n += int(valid.sum())
    ref_correct += int((ref.argmax(-1) == labels)[valid].sum())
    target = labels if labelled and not agreement_margins else ref.argmax(-1)
    target = np.where(valid, target, 0)     # (padding rows: label -1, dropped below)
    batch_margins = [top1_margins(ref, target)[valid]] if margins else None
    for i, logits in enumerate(_run_points(forwards, keys, placement.mesh, x)):
      schedule, reducer = keys[i]
      _check_finite_logits(logits, valid, batch, f"schedule {schedule.counts}",
                           f"the unpruned model's are finite, so the reduction made them "
                           f"({type(reducer).__name__})")
      c, a, k = compare_logits(logits, ref, labels)
      correct[i] += int(c[valid].sum())
      agree[i] += int(a[valid].sum())
      kl[i] += float(np.sum(k[valid]))
      if margins:
        batch_margins.append(top1_margins(logits, target)[valid])
    if margins:
      margin_parts.append(np.stack(batch_margins))
  if n == 0:
    raise ValueError("no examples to evaluate (empty data or only padding rows)")

  def result(c, a, k):
    return PointResult(n, int(c) if labelled else None, int(a), float(k))

  return EvalResult(reference=result(ref_correct, n, 0.0),
                    points=tuple(result(*v) for v in zip(correct, agree, kl)),
                    batch_size=batch_size, num_devices=placement.num_devices,
                    margins=np.concatenate(margin_parts, axis=1) if margins else None)


def _run_points(forwards: Dict[Any, Any], keys: Sequence[Tuple[Schedule, Any]], mesh,
                x: jax.Array, chunk: int = 64) -> List[np.ndarray]:
  """Logits [B, K] (host) of every (schedule, reducer) of `keys` on images `x`, in order: each
  reducer's schedules by `run_many` in the order of their counts (what they share is computed
  once), `chunk` schedules at a time (the logits on the device are bounded)."""
  by_reducer: Dict[Any, List[int]] = {}
  for i, (_, reducer) in enumerate(keys):
    by_reducer.setdefault(reducer, []).append(i)
  out: List[Optional[np.ndarray]] = [None] * len(keys)
  for reducer, idx in by_reducer.items():
    idx = sorted(idx, key=lambda i: keys[i][0].counts)
    for start in range(0, len(idx), chunk):
      part = idx[start:start + chunk]
      logits = forwards[(reducer, mesh)].run_many([keys[i][0] for i in part], x)
      for i, v in zip(part, jax.device_get(logits)):
        out[i] = np.asarray(v)
  return out


def _check_finite_logits(logits: np.ndarray, valid: np.ndarray, batch: Batch, what: str,
                         cause: str) -> None:
  """FloatingPointError naming `what`, the first example whose `[B, K]` logits hold NaN/inf
  (argmax would read them as class 0: a wrong accuracy, an agreement of 1) and the likely
  `cause`."""
  bad = valid & ~np.isfinite(logits).all(axis=-1)
  if bad.any():
    first = int(np.asarray(batch[2])[bad][0])
    raise FloatingPointError(
        f"{what} gave NaN/inf logits for {int(bad.sum())} of {int(valid.sum())} images of a "
        f"batch (first: example {first}): {cause}")


def _compile_pieces(forwards: Dict[Any, Any], cfg: ViTConfig, params: Params, x: jax.Array,
                    graphs: Sequence[Tuple[Schedule, Optional[TokenReducer]]],
                    placement: _Placement, *, dtype: str, precision: str, threads: int,
                    kind=PiecewiseForward) -> None:
  """Fills `forwards` ({(reducer, mesh): `kind` instance}; reducer None: the unpruned
  reference) so that every schedule of `graphs` ((schedule, reducer) pairs) is compiled for the
  params as `placement` places them and `x` [B, S, S, C] (shape, dtype, sharding), `threads` at
  a time. An entry built for another config or params (or dtype, precision or kind) is replaced;
  only then are the params placed (copied to the mesh) again."""
  by_reducer: Dict[Any, List[Schedule]] = {}
  for schedule, reducer in graphs:
    by_reducer.setdefault(reducer, []).append(schedule)
  for reducer, schedules in by_reducer.items():
    key = (reducer, placement.mesh)
    entry = forwards.get(key)
    if not (type(entry) is kind and entry.serves(cfg, params, dtype, precision)):
      entry = forwards[key] = kind(cfg, params, reducer, dtype=dtype, precision=precision,
                                   placed=placement.params(params),
                                   token_sharding=placement.token_sharding)
    entry.compile(schedules, x, threads=threads)


def paired_counts(reference_margins: np.ndarray, margins: np.ndarray
                  ) -> Tuple[int, int, int, int]:
  """`[M]` top-1 margins of the unpruned graph and of a pruned one on the same examples
  (`top1_margins`: > 0 exactly where right) -> the examples both get right, the unpruned one
  only ("lost" by pruning), the pruned one only ("gained"), neither."""
  return intervals.pair_counts(np.asarray(reference_margins) > 0, np.asarray(margins) > 0)


def schedule_evaluator(cfg: ViTConfig, params: Params, data: "EvalData",
                       reducer: Optional[TokenReducer], *, batch_size: int = 64,
                       dtype: str = "float32", pieces: Optional[Dict[Any, Any]] = None,
                       record_margins: Optional[Dict[Tuple[int, ...], np.ndarray]] = None,
                       metric: Optional[str] = None
                       ) -> Callable[[Sequence[Sequence[int]]], List[float]]:
  """A function `[counts, ...] -> [metric, ...]` that measures schedules of `reducer` on `data`
  (one data pass per call; the metric is accuracy when labelled, else top-1 agreement): what the
  solve stage calls to check an accuracy floor on measurements. Compiled pieces are kept between
  calls, in `pieces` when given (e.g. the dict the estimate stage's `evaluate` filled).
  `measure(counts_list, margins=True)` -> (metrics, `[S, M]` per-example top-1 margins);
  `measure(counts_list, paired=True)` -> (metrics, per schedule the images it and the unpruned
  graph both get right, the unpruned only, it only, neither: `paired_counts`). With
  `record_margins` every call also stores each schedule's `[M]` margins there ({counts: ...}).
  `metric`: 'accuracy' (labelled data only) or 'agreement' (default: `default_metric`); the
  margins are that metric's (against the label, or the unpruned model's class)."""
  metric = metric or default_metric(data.labelled)
  if metric not in ("accuracy", "agreement") or (metric == "accuracy" and not data.labelled):
    raise ValueError(f"metric {metric!r}: schedules are measured by "
                     f"{'accuracy or ' if data.labelled else ''}agreement on this data")
  pieces = {} if pieces is None else pieces

  def measure(counts_list, margins: bool = False, paired: bool = False):
    points = [EvalPoint(Schedule(tuple(counts)), reducer, int(counts[-1]), None)
              for counts in counts_list]
    keep = margins or paired or record_margins is not None
    result = evaluate(cfg, params, data.batches(cfg, batch_size), points,
                      labelled=data.labelled, dtype=dtype, pieces=pieces, margins=keep,
                      agreement_margins=metric == "agreement")
    metrics = [float(getattr(r, metric)) for r in result.points]
    if record_margins is not None:
      record_margins.update((tuple(int(c) for c in counts), m)
                            for counts, m in zip(counts_list, result.margins[1:]))
    if paired:
      return metrics, [paired_counts(result.margins[0], m) for m in result.margins[1:]]
    return (metrics, result.margins[1:]) if margins else metrics

  return measure


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
    strata: int `[len(dataset)]` the classes a subset of it is balanced over (the digits: their
      own digit, an image folder: its class folder, whatever the model calls them); None: the
      dataset's labels when labelled, else a uniform draw.
    available: the images the `num_images` subset was drawn from (the digits: the split's),
      None where not known.
  """
  dataset: Any
  indices: np.ndarray
  labelled: bool
  info: Dict[str, Any]
  strata: Optional[np.ndarray] = None
  available: Optional[int] = None

  def batches(self, cfg: ViTConfig, batch_size: int, num_workers: int = 0
              ) -> Iterable[Batch]:
    """Fixed-shape padded batches with `cfg.preprocessing` (the model's eval transform)."""
    return data_lib.iterate_batches(self.dataset, cfg.preprocessing, batch_size,
                                    indices=self.indices, num_workers=num_workers)


def subset_indices(labels: np.ndarray, labelled: bool, num_images: Optional[int], seed: int
                   ) -> np.ndarray:
  """All indices (`num_images` None), a seeded class-balanced sample (labelled), or a seeded
  uniform sample without replacement (unlabelled); int64 sorted."""
  n = len(labels)
  if num_images is None:
    return np.arange(n, dtype=np.int64)
  if (not isinstance(num_images, (int, np.integer)) or isinstance(num_images, bool)
      or num_images < 1):
    raise ValueError(f"num_images must be a positive int, got {num_images!r}")
  if num_images > n:
    raise ValueError(f"num_images={num_images} exceeds the {n} images available")
  if labelled:
    return data_lib.balanced_subset(labels, int(num_images), seed)
  rng = np.random.default_rng(data_lib.check_seed(seed))
  return np.sort(rng.choice(n, int(num_images), replace=False)).astype(np.int64)


HOLDOUT_PARTS = ("selection", "holdout")
_HOLDOUT_STREAM = 1        # the holdout's random stream of a seed (0: the --num_images subset's)


def holdout_split(data: EvalData, holdout_images: int, seed: int) -> Tuple[EvalData, EvalData]:
  """(selection, holdout) of `data`: `holdout_images` of its images (seeded; class-balanced when
  labelled) held out, the others the selection. A choice made on the selection images (the
  estimate, the floor checks) is checked on the holdout ones, which it never saw: the fastest of
  many measured schedules meeting a floor measures optimistically on the images that chose it.
  Each part's `info` is its own (fingerprint of its images) with `selection.holdout_images` and
  `selection.part` added. ValueError unless 1 <= holdout_images < the number of images and
  `seed` is an int >= 0."""
  # (-1 was numpy's "expected non-negative integer", 1.5 "seed must be integer", and '2' a seed
  # of its own)
  seed = data_lib.check_seed(seed)
  n = len(data.indices)
  if (isinstance(holdout_images, bool) or not isinstance(holdout_images, (int, np.integer))
      or not 1 <= holdout_images < n):
    raise ValueError(f"holdout_images must be an int in 1..{n - 1} (of the {n} evaluation "
                     f"images, some must be left to choose on), got {holdout_images!r}")
  balanced = data.strata is not None or data.labelled
  strata = np.asarray(data.dataset.labels if data.strata is None else data.strata)
  # Another stream than the subset's: with the subset's own seed the draw mirrored it (the
  # first images of a class were held out far more often than the others).
  stream = int(np.random.SeedSequence([seed, _HOLDOUT_STREAM]).generate_state(1)[0])
  held = data.indices[subset_indices(strata[data.indices], balanced, int(holdout_images),
                                     stream)]
  rest = np.setdiff1d(data.indices, held)
  parts = []
  for part, idx in zip(HOLDOUT_PARTS, (rest, held)):
    info = data_lib.dataset_info(data.dataset, idx, name=data.info["source"]).to_dict()
    info["selection"] = dict(data.info.get("selection") or {},
                             holdout_images=int(holdout_images), part=part)
    parts.append(EvalData(data.dataset, idx, data.labelled, info, data.strata))
  return parts[0], parts[1]


def load_eval_data(spec: str, *, num_images: Optional[int] = None, seed: int = 0,
                   split: str = "test", split_seed: int = 0,
                   class_names: Optional[Sequence[str]] = None,
                   num_classes: Optional[int] = None,
                   holdout_images: Optional[int] = None,
                   flag: Optional[str] = None) -> EvalData:
  """`spec` 'digits' (scikit-learn digits, `split` of `digits_split(split_seed)`) or an image
  folder (labelled `root/<class>/...` or a flat unlabelled folder); optionally a seeded subset of
  `num_images` (class-balanced when labelled). Folder labels follow the model's `class_names`
  by name (a subset of the classes works); without names the folders must be exactly
  `num_classes` (else a clear error instead of silently shifted labels); so do the digits'
  (`digits.digits_for_model`). With `holdout_images`, the selection part of `holdout_split`
  (the images a choice is made on; `seed` draws the held-out ones too). `flag` (a CLI's
  '--data'): named by a refusal of the image folder (`data_lib.read_image_folder`)."""
  data = _load_eval_data(spec, num_images=num_images, seed=seed, split=split,
                         split_seed=split_seed, class_names=class_names, num_classes=num_classes,
                         flag=flag)
  return data if holdout_images is None else holdout_split(data, holdout_images, seed)[0]


def _load_eval_data(spec: str, *, num_images: Optional[int], seed: int, split: str,
                    split_seed: int, class_names: Optional[Sequence[str]],
                    num_classes: Optional[int], flag: Optional[str] = None) -> EvalData:
  if spec == "digits":
    ds = digits_lib.digits_for_model(class_names, num_classes)
    if split not in digits_lib.SPLITS:
      raise ValueError(f"unknown digits split {split!r}; expected one of "
                       f"{', '.join(digits_lib.SPLITS)}")
    if split == "all":
      base = np.arange(len(ds), dtype=np.int64)
    else:
      train, test = digits_lib.digits_split(split_seed)
      base = train if split == "train" else test
    digits = digits_lib.digits_dataset().labels     # (the subset: the same images, whatever
    idx = base[subset_indices(digits[base], True, num_images, seed)]   # the model names them)
    info = data_lib.dataset_info(ds, idx, name="sklearn_digits").to_dict()
    info["selection"] = {"split": split, "split_seed": split_seed, "num_images": num_images,
                         "subset_seed": seed}
    return EvalData(ds, idx, bool(ds.classes), info,   # (unlabelled: not the model's classes)
                    strata=digits, available=len(base))
  if not os.path.isdir(spec):
    raise FileNotFoundError(f"data {spec!r} is neither 'digits' nor an existing directory")
  ds = data_lib.read_image_folder(spec, flag, class_names=class_names, num_classes=num_classes)
  # Balanced over the class folders in their sorted order, not the model's labels: the same
  # folder and seed give the same images to models that order their classes otherwise.
  strata = None
  if ds.labelled:
    folder = {name: i for i, name in enumerate(ds.folder_classes)}
    strata = np.array([folder[f.split("/", 1)[0]] for f in ds.files], np.int64)
  idx = subset_indices(ds.labels if strata is None else strata, ds.labelled, num_images, seed)
  info = data_lib.dataset_info(ds, idx).to_dict()
  info["selection"] = {"num_images": num_images, "subset_seed": seed}
  return EvalData(ds, idx, ds.labelled, info, strata=strata, available=len(ds))


# ----------------------------------------------------------------------------------------------
# Identity of what was evaluated.
# ----------------------------------------------------------------------------------------------


def versions() -> Dict[str, Any]:
  return {"estimate_format": VERSION, "python": platform.python_version(),
          "jax": jax.__version__, "jaxlib": jaxlib.__version__, "numpy": np.__version__,
          "platform": platform.platform(), "backend": jax.default_backend()}


def _scores(r: PointResult) -> Scores:
  return Scores(r.num_examples, r.accuracy, r.agreement, r.kl)


def estimate_record(*, cfg: ViTConfig, params: Params, weights_source: str,
                    data_info: Dict[str, Any], method: str, method_kwargs: Dict[str, Any],
                    seed: int, points: Sequence[EvalPoint], result: EvalResult,
                    labelled: bool, dtype: str = "float32", precision: str = "highest",
                    created: Optional[str] = None) -> Estimate:
  """The `Estimate` record of an `evaluate` run (checked as a file read back would be; `params`
  must be `cfg`'s: their digest is the record's identity of the weights)."""
  check_params(cfg, params)      # (another model's tree was recorded as the weights measured)
  points = list(points)
  if len(points) != len(result.points):
    raise ValueError(f"{len(points)} points but {len(result.points)} results")
  if not isinstance(weights_source, str):      # (None was recorded as the text 'None')
    raise TypeError(f"weights_source must be a string naming the weights, got "
                    f"{weights_source!r}")
  seed = schedule_lib.as_int(seed, "seed")      # (2.7 was recorded as 2)
  for name, value, hint in (("data_info", data_info, "EvalData.info"),
                            ("method_kwargs", method_kwargs, "the reducer's options, {}")):
    if not isinstance(value, Mapping):           # (None: "'NoneType' object is not iterable")
      raise TypeError(f"{name} must be a dict ({hint}), got {type(value).__name__} "
                      f"{reprlib.repr(value)}")
  named = make_reducer(method, **dict(method_kwargs))    # the record says the points ran this
  for p in points:          # (the message: check_named's, which builds `named` again)
    if p.reducer is not None and p.reducer != named:
      check_named(p.reducer, method, method_kwargs, "the points ran", "the record")
  layers = tuple(dict.fromkeys(p.layer for p in points))
  record = Estimate(
      kind="tokens" if len(layers) == 1 else "sensitivity", config=cfg,
      weights_source=weights_source, weights_sha256=params_sha256(params), data=dict(data_info),
      method=method, method_kwargs=reducer_fields(named), seed=int(seed), layers=layers,
      tokens=tuple(sorted({p.tokens for p in points})), eval_batch_size=result.batch_size,
      dtype=dtype, precision=precision, num_devices=result.num_devices,
      metrics=LABELLED_METRICS if labelled else FIDELITY_METRICS,
      reference=_scores(result.reference),
      points=tuple(EstimatePoint(p.layer, p.tokens, tuple(p.schedule.counts),
                                 schedule_lib.format_schedule(p.schedule, cfg), _scores(r))
                   for p, r in zip(points, result.points)),
      versions=versions(), created=created or time.strftime("%Y-%m-%dT%H:%M:%S%z"))
  return Estimate.from_json(jsonio.json_form(record.to_json()), where="estimate_record")
