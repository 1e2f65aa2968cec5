"""Random token dropping: a fixed random subset of patch tokens, the same for every image.

The subset is drawn at trace time with NumPy from `(seed, stream)` (stream 0: right after the
embedding, stream l + 1: block l), so it is a compile-time constant gather: no PRNG in the graph,
no dependence on the batch. Kept tokens stay in their original order; prefix tokens stay first.
Used for the reference accuracy of a token count (`reduce_embedding`), and usable mid-block.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vitprune.reduce import common
from vitprune.reduce.base import AttentionStats


@dataclasses.dataclass(frozen=True)
class RandomDrop:
  seed: int = 0
  name = "random"
  needs_attention = False
  tracks_size = False
  supports_embedding = True
  layer_dependent = True      # each layer drops its own fixed random subset

  def __post_init__(self):
    if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) \
        or self.seed < 0:
      raise ValueError(f"RandomDrop seed must be a non-negative int, got {self.seed!r}")

  def max_remove(self, num_tokens: int, num_prefix: int) -> int:
    return common.leave_one_patch(num_tokens, num_prefix)

  def kept_indices(self, num_patches: int, num_keep_patches: int, stream: int) -> np.ndarray:
    """Sorted [num_keep_patches] patch indices kept out of `num_patches` (NumPy constant)."""
    return common.static_random_subset(self.seed, stream, num_patches, num_keep_patches)

  def _drop(self, x: jax.Array, num_keep: int, num_prefix: int, stream: int) -> jax.Array:
    common.check_reduce_args("RandomDrop", x, num_keep=num_keep, num_prefix=num_prefix)
    idx = self.kept_indices(x.shape[1] - num_prefix, num_keep - num_prefix, stream)
    return jnp.concatenate([x[:, :num_prefix], x[:, num_prefix + idx]], axis=1)

  def reduce(self, x: jax.Array, size: Optional[jax.Array], stats: Optional[AttentionStats],
             *, num_keep: int, num_prefix: int, layer: int
             ) -> Tuple[jax.Array, Optional[jax.Array]]:
    """x [B, N, C] -> ([B, num_keep, C], None); the subset depends on (seed, layer) only."""
    return self._drop(x, num_keep, num_prefix, layer + 1), None

  def reduce_embedding(self, x: jax.Array, *, num_keep: int, num_prefix: int) -> jax.Array:
    """x [B, N, C] -> [B, num_keep, C] right after the embedding."""
    return self._drop(x, num_keep, num_prefix, 0)
