"""The interface between the ViT forward and token-reduction methods.

A reducer is a frozen (hashable) dataclass, so it is a static argument of `jax.jit`. The forward
calls it only in blocks whose schedule reduces tokens; other blocks never compute the explicit
attention matrix and take the fast attention path. Each method owns its limits: whether it can
drop tokens right after the embedding and how many tokens one block may remove
(`vitprune.schedule.check_schedule` asks the reducer, it knows no method by name).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Protocol, Tuple, runtime_checkable

import jax


class AttentionStats(NamedTuple):
  """What a block exposes to a reducer at its reduction point.

  probs: [B, H, N, N] softmax attention (float32), query i attends to key j (row i, column j).
  keys: [B, N, H, D] keys of the block's attention.
  values: [B, N, H, D] values of the block's attention.
  """
  probs: jax.Array
  keys: jax.Array
  values: jax.Array


@runtime_checkable
class TokenReducer(Protocol):
  """Reduces `[B, N, C]` tokens to `[B, num_keep, C]`; prefix tokens are kept, in order.

  `isinstance(obj, TokenReducer)` checks that every member below is present.
  """

  # Short lower-case name (the `make_reducer` key), used in messages and records.
  name: str
  # The block must build AttentionStats (explicit attention) when it reduces.
  needs_attention: bool
  # Carry per-token sizes [B, N] and use proportional attention (log size added to logits).
  tracks_size: bool
  # `reduce_embedding` works: tokens can be dropped right after the embedding (no attention).
  supports_embedding: bool
  # `reduce`'s output depends on `layer` (not only on its inputs): e.g. a per-layer random
  # subset. False lets one compiled block serve every layer (`vitprune.piecewise`, which treats
  # a reducer without this attribute as layer-dependent).
  layer_dependent: bool

  # Optional (absent reads as False): the reducer ranks tokens by the class token's attention,
  # so a model without a class token is refused (`check_schedule`), not ranked by a register.

  def max_remove(self, num_tokens: int, num_prefix: int) -> int:
    """The most tokens one block may remove from `num_tokens` (`num_prefix` protected)."""
    ...

  def reduce(self, x: jax.Array, size: Optional[jax.Array], stats: Optional[AttentionStats],
             *, num_keep: int, num_prefix: int, layer: int
             ) -> Tuple[jax.Array, Optional[jax.Array]]:
    """x [B, N, C] (after the attention residual), size [B, N] or None -> ([B, K, C], [B, K])."""
    ...

  def reduce_embedding(self, x: jax.Array, *, num_keep: int, num_prefix: int) -> jax.Array:
    """Drops tokens right after the embedding: x [B, N, C] -> [B, num_keep, C]."""
    ...
