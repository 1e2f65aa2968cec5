"""POMT ("Pruning One More Token is Enough", WACV 2025): attention + value importance pruning.

At a reduction block, the importance of patch token j is

    a_j = sum_{i non-prefix} max_h probs[h, i, j]          (attention received, head max)
    v_j = softmax_j'(sum_d max_h V[j', h, d])[j]           (softmax over ALL N tokens)
    score_j = a_j / max_{j' non-prefix} a_j' + v_j         (j non-prefix only)

The top-scoring `num_keep - num_prefix - 1` patch tokens are kept (in their original order) and
all the others are averaged into one fill token appended last, so the block continues with
exactly `num_keep` tokens. Prefix tokens always stay first. At a later reduction layer the fill
token is an ordinary (non-prefix) token. Ties: the lower token index wins.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import jax
import jax.numpy as jnp

from vitprune.reduce import common
from vitprune.reduce.base import AttentionStats


def pomt_scores(stats: AttentionStats, num_prefix: int) -> jax.Array:
  """AttentionStats (probs [B, H, N, N], values [B, N, H, D]) -> patch scores [B, N - prefix]."""
  probs = stats.probs.astype(jnp.float32)
  received = probs.max(axis=1)[:, num_prefix:, num_prefix:].sum(axis=1)  # [B, P]
  received = received / jnp.maximum(received.max(axis=1, keepdims=True),
                                    jnp.finfo(jnp.float32).tiny)
  v = stats.values.astype(jnp.float32).max(axis=2).sum(axis=-1)  # [B, N]
  v = jax.nn.softmax(v, axis=-1)[:, num_prefix:]
  return received + v


@dataclasses.dataclass(frozen=True)
class POMT(common.AttentionReducer):
  """The paper's reducer; reduces at whichever blocks the schedule says (default block 3).

  May reduce down to the prefix plus the fill token (what remains of the patches).
  """
  name = "pomt"

  def select(self, stats: AttentionStats, *, num_keep: int, num_prefix: int) -> jax.Array:
    """[B, num_keep - num_prefix - 1] kept patch indices (sorted) from the attention stats."""
    return common.top_k_sorted(pomt_scores(stats, num_prefix), num_keep - num_prefix - 1)

  def reduce(self, x: jax.Array, size: Optional[jax.Array], stats: Optional[AttentionStats],
             *, num_keep: int, num_prefix: int, layer: int
             ) -> Tuple[jax.Array, Optional[jax.Array]]:
    """x [B, N, C] -> ([B, num_keep, C]: prefix, kept patches, fill token; None)."""
    return common.prune_by_score("POMT", x, stats, pomt_scores, num_keep=num_keep,
                                 num_prefix=num_prefix, fill=_mean_of_dropped), None


def _mean_of_dropped(patches: jax.Array, dropped: jax.Array, scores: jax.Array) -> jax.Array:
  """The fill token: the plain mean of the dropped patches [B, P, C] -> [B, 1, C]."""
  return common.weighted_fill(patches, dropped, normalize=True)
