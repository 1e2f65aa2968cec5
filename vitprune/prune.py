"""Prune a ViT with a static token schedule and compare it with the unpruned model.

    result = run_prune(cfg, params, images, method="tome", schedule=parse_schedule(cfg, "r8"))

Both forwards are AOT-compiled and run on one batch `[B, S, S, C]`; the result holds the top-1
agreement of the pruned model with the unpruned one (a model without classifier: the mean
cosine similarity of the features), top-1 accuracies when labels are given (and the change,
pruned minus unpruned, with its paired 95 % interval: `intervals.change_record`), and the latency of
both graphs with the profiler's timing protocol (`vitprune.profile.timing`), interleaved in up to
5 rounds so that load drift reaches both alike (`time_compiled`). `experiments/prune.py`
is the command line around it.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, Optional

import jax
import numpy as np

from vitprune import intervals
from vitprune import jsonio
from vitprune import model as vit
from vitprune import schedule as S
from vitprune.config import ViTConfig
from vitprune.estimate import compare_logits
from vitprune.profile import protocol, timing
from vitprune.reduce import make_reducer
from vitprune.reduce.methods import reducer_fields


def default_schedule(cfg: ViTConfig, method: str) -> S.Schedule:
  """A valid, modest schedule for any model: a quarter of the patches removed, at the embedding
  for 'random', with ToMe's r form for 'tome', else at block min(3, depth - 1) (POMT's default).
  ValueError for a model of one patch token (one must remain: there is nothing to prune)."""
  if cfg.num_patches < 2:     # (it failed naming a schedule nobody gave; ToMe's timed no cut)
    raise ValueError(f"{cfg.name} at img_size {cfg.img_size} has {cfg.num_patches} patch "
                     f"token (patch size {cfg.patch_size}): no schedule can prune it, one "
                     "patch token must remain")
  remove = max(1, cfg.num_patches // 4)
  method = str(method).strip().lower()       # as make_reducer reads it ('Random' got POMT's)
  if method == "random":
    return S.embed_schedule(cfg, cfg.num_tokens - remove)
  if method == "tome":
    return S.remove_per_layer(cfg, max(1, -(-remove // cfg.depth)))
  return S.prune_at(cfg, remove=remove, layer=min(S.DEFAULT_POMT_LAYER, cfg.depth - 1))


MAX_ROUNDS = 5     # interleaved rounds of the two graphs' timing (as the main job's verify)


def timing_rounds(repeats: int) -> int:
  """The most rounds (<= MAX_ROUNDS) that split `repeats` calls evenly, >= 3 calls each (a
  median and an IQR per burst); 1 when none does (7 calls: one burst)."""
  return max(r for r in range(1, MAX_ROUNDS + 1) if repeats % r == 0 and repeats // r >= 3
             or r == 1)


def time_compiled(graphs: Dict[str, Any], params, images, *, warmup: int, repeats: int
                  ) -> Dict[str, Dict[str, float]]:
  """{name: {median_s, iqr_s}} of `repeats` calls of each `graphs[name](params, images)`
  (device-resident inputs), with the profiler's timing protocol, the graphs interleaved in
  `timing_rounds(repeats)` rounds of a fresh shuffled order each (`warmup` calls before each
  burst): timed one after the other, load drift reached one graph only (the default run
  printed x1.56 for a x1.12 FLOP cut; reruns x0.97..1.08)."""
  repeats = max(3, repeats)
  rounds = timing_rounds(repeats)
  cfg = dataclasses.replace(protocol.repeat_timing(repeats // rounds, warmup, max_retries=2),
                            rounds=rounds)
  got = timing.measure_all({k: (fn, (params, images)) for k, fn in graphs.items()}, cfg)
  return {k: {"median_s": m.median, "iqr_s": m.iqr} for k, m in got.items()}


def agreement(pruned: np.ndarray, full: np.ndarray, valid: np.ndarray, classifier: bool) -> float:
  """Top-1 agreement of logits [B, K] with the unpruned ones (`estimate.compare_logits`), or the
  mean cosine similarity of features [B, C] (no classifier), over the `valid` [B] rows."""
  pruned, full = np.asarray(pruned)[valid], np.asarray(full)[valid]
  if classifier:
    _, agree, _ = compare_logits(pruned, full, np.full(len(pruned), -1))
    return float(np.mean(agree))
  num = (pruned * full).sum(-1)
  den = np.linalg.norm(pruned, axis=-1) * np.linalg.norm(full, axis=-1)
  return float(np.mean(num / np.maximum(den, 1e-12)))


def _top1_right(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """`[B]` bools: top-1 of `logits` [B, K] is the label."""
  correct, _, _ = compare_logits(logits, logits, labels)
  return np.asarray(correct, bool)


def _check_rows(cfg: ViTConfig, b: int, valid, labels):
  """-> (valid bool [B], labels int [B], -1 unknown): ValueError unless each has one entry per
  image, some row is valid and every known label is one of the model's classes."""
  valid = np.ones(b, bool) if valid is None else np.asarray(valid)
  labels = np.full(b, -1) if labels is None else np.asarray(labels)
  for name, a in (("valid", valid), ("labels", labels)):
    if a.shape != (b,):
      raise ValueError(f"{name} must have one entry per image [{b}], got shape {a.shape}")
  if valid.dtype != bool:
    raise ValueError(f"valid must be booleans, got {valid.dtype}")
  if not valid.any():
    raise ValueError("valid is False for every image: nothing to compare")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be integers (-1: unknown), got {labels.dtype}")
  known = labels[valid & (labels >= 0)]
  if labels.min() < -1 or (known.size and known.max() >= max(cfg.num_classes, 1)):
    classes = (f"classes 0..{cfg.num_classes - 1} of {cfg.name}" if cfg.num_classes else
               f"nothing else: {cfg.name} has no classifier head")
    raise ValueError(f"labels must be -1 (unknown) or {classes}, got "
                     f"{labels.min()}..{labels.max()}")
  return valid, labels


def run_prune(cfg: ViTConfig, params, images: np.ndarray, *, method: str,
              schedule: Optional[S.Schedule], labels: Optional[np.ndarray] = None,
              valid: Optional[np.ndarray] = None, dtype: str = "float32", warmup: int = 3,
              repeats: int = 20, reducer_options: Optional[Dict[str, Any]] = None
              ) -> Dict[str, Any]:
  """Compiles, runs and times the unpruned and the pruned forward on `images` [B, S, S, C].

  schedule None: `default_schedule(cfg, method)`. labels [B] (-1: unknown) and valid [B] (False:
  padding) are optional. Returns a JSON-able dict (see the module docstring).
  """
  for name, value, least in (("repeats", repeats, 1), ("warmup", warmup, 0)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
      raise ValueError(f"{name} must be an int >= {least}, got {value!r}")   # (1.5, None)
  reducer = make_reducer(method, **(reducer_options or {}))
  schedule = default_schedule(cfg, method) if schedule is None else schedule
  S.check_schedule(cfg, schedule, reducer)
  vit.check_inputs(cfg, images, dtype, "highest")   # before the float32 cast: no raw pixels
  valid, labels = _check_rows(cfg, images.shape[0], valid, labels)
  b = images.shape[0]
  params = jax.device_put(params)
  x = jax.device_put(np.asarray(images, np.float32))
  full_fn, full_compile = timing.compile_fn(
      functools.partial(vit.forward, cfg=cfg, dtype=dtype), params, x)
  pruned_fn, pruned_compile = timing.compile_fn(
      functools.partial(vit.forward, cfg=cfg, schedule=schedule, reducer=reducer, dtype=dtype),
      params, x)
  full_out, pruned_out = np.asarray(full_fn(params, x)), np.asarray(pruned_fn(params, x))
  for what, out in (("unpruned", full_out), ("pruned", pruned_out)):
    if not np.isfinite(out).all():
      raise FloatingPointError(f"the {what} {cfg.name} produced non-finite outputs ({dtype})")
  classifier = cfg.num_classes > 0
  result = {
      "model": cfg.name, "method": reducer.name,          # (' TOME ' was recorded as typed;
      "options": jsonio.json_form(reducer_fields(reducer)),   # a numpy seed broke json.dumps)
      "reducer": repr(reducer), "dtype": dtype,
      "batch": int(b), "device": jax.devices()[0].device_kind,
      "schedule": S.format_schedule(schedule, cfg), "counts": list(schedule.counts),
      "metric": "top1_agreement" if classifier else "feature_cosine",
      "agreement": agreement(pruned_out, full_out, valid, classifier),
  }
  timed = time_compiled({"full": full_fn, "pruned": pruned_fn}, params, x, warmup=warmup,
                        repeats=repeats)
  result["full"] = dict(timed["full"], compile_s=full_compile)
  result["pruned"] = dict(timed["pruned"], compile_s=pruned_compile)
  labelled = valid & (labels >= 0)
  if classifier and labelled.any():
    right_full = _top1_right(full_out[labelled], labels[labelled])
    right_pruned = _top1_right(pruned_out[labelled], labels[labelled])
    result["accuracy_full"] = float(np.mean(right_full))
    result["accuracy_pruned"] = float(np.mean(right_pruned))
    result["accuracy_change"] = intervals.change_record(
        intervals.pair_counts(right_full, right_pruned), "accuracy")
  return result
