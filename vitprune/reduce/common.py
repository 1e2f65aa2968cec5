"""Shared, loop-free building blocks of the token-reduction methods.

Conventions: tokens are `[B, N, C]` with the `num_prefix` prefix tokens (cls, dist, registers)
first; "patch" tokens are the `P = N - num_prefix` others (a fill/merged token from an earlier
reduction counts as a patch token). Every selection is per image (no op mixes images), kept
tokens stay in their original order, and `jax.lax.top_k` breaks ties towards the lower index.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from vitprune.reduce.base import AttentionStats


def leave_one_patch(num_tokens: int, num_prefix: int) -> int:
  """The most tokens a block may remove: all but the prefix and one patch (or fill) token."""
  return max(0, num_tokens - num_prefix - 1)


class AttentionReducer:
  """What the methods that read a block's attention share: they need `AttentionStats`, cannot
  drop tokens right after the embedding, and may reduce down to the prefix plus one token."""
  needs_attention = True
  tracks_size = False
  supports_embedding = False
  layer_dependent = False
  needs_class_token = False     # True: scores tokens by the class token's attention (row 0)

  def max_remove(self, num_tokens: int, num_prefix: int) -> int:
    return leave_one_patch(num_tokens, num_prefix)

  def reduce_embedding(self, x: jax.Array, *, num_keep: int, num_prefix: int) -> jax.Array:
    raise ValueError(f"{type(self).__name__} needs attention and cannot drop tokens right after "
                     "the embedding; use the 'random' method for that")


def check_reduce_args(name: str, x: jax.Array, *, num_keep: int, num_prefix: int,
                      fill: int = 0) -> None:
  """Static checks shared by all reducers; `fill` is 1 when the method appends a fill token."""
  if x.ndim != 3:
    raise ValueError(f"{name}: tokens must be [B, N, C], got shape {tuple(x.shape)}")
  for arg, v in (("num_keep", num_keep), ("num_prefix", num_prefix)):
    if not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_)):
      raise TypeError(f"{name}: {arg} must be an int (a static token count), got "
                      f"{type(v).__name__} {v!r}")   # (a float failed deep in jax, and a
  n = x.shape[1]                                      # later valid call with it)
  if num_prefix < 0:
    raise ValueError(f"{name}: num_prefix must be >= 0, got {num_prefix}")
  if not num_prefix + 1 <= num_keep <= n:
    raise ValueError(f"{name}: num_keep must be in [num_prefix + 1, N] = [{num_prefix + 1}, "
                     f"{n}], got {num_keep}")
  if fill and num_keep == n:
    raise ValueError(f"{name}: num_keep == N == {n} removes nothing; the model only calls a "
                     "reducer when a block reduces")


def require_stats(name: str, stats: Optional[AttentionStats], x: jax.Array) -> AttentionStats:
  """`stats` of the tokens x [B, N, C]: probs [B, H, N, N], keys and values [B, N, H, D] (stats
  of another batch were broadcast: one image pruned by another's attention)."""
  if stats is None:
    raise ValueError(f"{name} needs AttentionStats (attention probabilities / keys / values) "
                     "at its reduction layer, got None")
  b, n = x.shape[0], x.shape[1]
  probs, keys, values = (tuple(a.shape) for a in stats)
  heads = probs[1] if len(probs) == 4 else None
  if len(probs) != 4 or probs[0] != b or probs[2:] != (n, n):
    raise ValueError(f"{name}: attention probs {probs} do not match the {b} images of {n} "
                     f"tokens ([B, H, N, N] = [{b}, H, {n}, {n}])")
  for what, shape in (("keys", keys), ("values", values)):
    if len(shape) != 4 or shape[:3] != (b, n, heads):
      raise ValueError(f"{name}: attention {what} {shape} do not match the {b} images of {n} "
                       f"tokens and {heads} heads ([B, N, H, D] = [{b}, {n}, {heads}, D])")
  return stats


def top_k_sorted(scores: jax.Array, k: int) -> jax.Array:
  """[B, P] scores -> [B, k] int32 indices of the k highest, in increasing index order.

  Ties: `jax.lax.top_k` prefers the lower index, so equal scores keep the earlier token.
  """
  if k == 0:
    return jnp.zeros(scores.shape[:1] + (0,), jnp.int32)
  _, idx = jax.lax.top_k(scores, k)
  # Ascending distinct indices as a second top_k (of -idx) rather than a sort: the same values,
  # and IREE's CUDA backend cannot bufferize a sort of a length that is not a power of two.
  return -jax.lax.top_k(-idx, k)[0]


def gather_tokens(x: jax.Array, idx: jax.Array) -> jax.Array:
  """x [B, N, ...], idx [B, K] -> [B, K, ...] (per-image gather along the token axis)."""
  idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, idx, axis=1)


def dropped_mask(kept: jax.Array, p: int) -> jax.Array:
  """kept [B, k] indices into P tokens -> [B, P] float32, 1 where a token is NOT kept."""
  if kept.shape[-1] == 0:
    return jnp.ones(kept.shape[:1] + (p,), jnp.float32)
  return 1.0 - jax.nn.one_hot(kept, p, dtype=jnp.float32).sum(axis=1)


def weighted_fill(patches: jax.Array, weights: jax.Array, *, normalize: bool) -> jax.Array:
  """patches [B, P, C], weights [B, P] (0 for kept tokens) -> one fill token [B, 1, C].

  `normalize=True`: weighted mean (sum w x / sum w); False: plain weighted sum (sum w x).
  Computed in float32, returned in the tokens' dtype.
  """
  w = weights.astype(jnp.float32)
  out = jnp.einsum("bp,bpc->bc", w, patches.astype(jnp.float32))
  if normalize:
    out = out / jnp.maximum(w.sum(axis=1, keepdims=True), jnp.finfo(jnp.float32).tiny)
  return out[:, None, :].astype(patches.dtype)


def cls_attention(probs: jax.Array, num_prefix: int, name: str) -> jax.Array:
  """probs [B, H, N, N] -> [B, P]: head-mean attention from token 0 (cls) to each patch token."""
  if num_prefix < 1:
    raise ValueError(f"{name} scores tokens by class-token attention, but the model has no "
                     "prefix (class) token")
  return probs[:, :, 0, num_prefix:].astype(jnp.float32).mean(axis=1)


def cls_scores(name: str) -> Callable[[AttentionStats, int], jax.Array]:
  """A `prune_by_score` score function: (stats, num_prefix) -> [B, P] class-token attention."""
  def score(stats: AttentionStats, num_prefix: int) -> jax.Array:
    return cls_attention(stats.probs, num_prefix, name)
  return score


def keep_patches(x: jax.Array, scores: jax.Array, k: int, num_prefix: int):
  """Keeps the prefix and the k best-scoring patches, in order.

  x [B, N, C], scores [B, P] -> (tokens [B, prefix + k, C], kept [B, k] patch indices,
  dropped [B, P] float32 mask of the other patches).
  """
  p = x.shape[1] - num_prefix
  kept = top_k_sorted(scores, k)
  patches = x[:, num_prefix:]
  out = jnp.concatenate([x[:, :num_prefix], gather_tokens(patches, kept)], axis=1)
  return out, kept, dropped_mask(kept, p)


def static_random_subset(seed: int, stream: int, p: int, k: int) -> np.ndarray:
  """A fixed, sorted random subset of k of p indices; `stream` separates layers (0: embedding)."""
  rng = np.random.default_rng([int(seed), int(stream)])
  return np.sort(rng.permutation(p)[:k]).astype(np.int32)


_NESTED_STREAM = 1 << 20     # (the per-layer subsets use streams 0..depth)


def nested_random_subset(seed: int, p: int, k: int) -> np.ndarray:
  """The sorted k of p indices kept by a fixed random elimination order (the same for every p).

  Going from q + 1 indices to q removes the r_q-th of those left, r_q = floor(u_q (q + 1)) with
  u = the seed's fixed uniform sequence, so r_q depends on (seed, q) only. Hence subsets nest
  under composition: p -> m -> k keeps exactly what p -> k keeps (for every p >= m >= k), and
  each subset is uniformly random over the seeds (every step removes a uniform survivor).
  """
  if not 0 <= k <= p:
    raise ValueError(f"cannot keep {k} of {p} indices")
  u = np.random.default_rng([int(seed), _NESTED_STREAM]).random(p)    # (a prefix of random(p'))
  kept = list(range(p))
  for q in range(p - 1, k - 1, -1):
    del kept[int(u[q] * (q + 1))]
  return np.asarray(kept, np.int32)


FillFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def prune_by_score(name: str, x: jax.Array, stats: Optional[AttentionStats],
                   score_fn: Callable[[AttentionStats, int], jax.Array], *, num_keep: int,
                   num_prefix: int, fill: Optional[FillFn] = None) -> jax.Array:
  """Score-then-keep (POMT, Top-K, EViT): x [B, N, C] -> [B, num_keep, C].

  `score_fn(stats, num_prefix)` -> [B, P] patch scores; the prefix and the best-scoring patches
  are kept, in order. Without `fill`, `num_keep - num_prefix` patches are kept; with it, one
  fewer, and `fill(patches [B, P, C], dropped [B, P], scores [B, P])` -> [B, 1, C] summarises
  the dropped patches in one token appended last.
  """
  extra = int(fill is not None)
  check_reduce_args(name, x, num_keep=num_keep, num_prefix=num_prefix, fill=extra)
  stats = require_stats(name, stats, x)
  scores = score_fn(stats, num_prefix)
  kept, _, dropped = keep_patches(x, scores, num_keep - num_prefix - extra, num_prefix)
  if fill is None:
    return kept
  return jnp.concatenate([kept, fill(x[:, num_prefix:], dropped, scores)], axis=1)
