"""ToMe (Bolya et al., ICLR 2023): bipartite soft matching, following facebookresearch/ToMe
`merge.py` (`bipartite_soft_matching` + `merge_wavg`).

At a reducing block with N tokens and r = N - num_keep:
  * metric: keys averaged over heads [B, N, D], L2-normalised (cosine similarity);
  * tokens alternate into set A (even positions) and set B (odd positions), prefix included;
  * scores = A @ B^T; prefix tokens are protected with -inf similarity (a prefix token in A is
    never merged, nothing merges into a prefix token in B), as ToMe does for cls (and dist);
  * each A token's best B match; the r A tokens with the highest best-match similarity are
    merged into their match by size-weighted averaging (sizes summed);
  * official order is [unmerged A, B], the unmerged A tokens sorted by position when there is a
    class token (here: any prefix token) and otherwise left in descending best-match order, as
    `merge.py` does (the next block's A/B split is by position, so the order decides which
    tokens it pairs); the prefix tokens (which are in both parts) are then moved to the front
    in their original order, the rest keeps that order.
Token sizes [B, N] are carried across blocks (`tracks_size=True`; the model adds log(size) to
the attention logits: proportional attention). At most half of the non-prefix tokens merge per
block (ToMe's 50% cap). Ties: the lower index wins (top_k / argmax).
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vitprune.lowering import for_iree
from vitprune.reduce import common
from vitprune.reduce.base import AttentionStats
from vitprune.schedule import tome_max_remove  # (the cap's one home: jax-free, for schedules)


def bipartite_matching(keys: jax.Array, r: int, num_prefix: int
                       ) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """keys [B, N, H, D] -> (src [B, r] A-indices merged, dst [B, r] their B-indices,
  unm [B, ceil(N/2) - r] A-indices left unmerged: sorted with prefix tokens, else in descending
  best-match order, as the official code without a class token)."""
  n = keys.shape[1]
  metric = keys.astype(jnp.float32).mean(axis=2)
  metric = metric / jnp.maximum(jnp.linalg.norm(metric, axis=-1, keepdims=True),
                                jnp.finfo(jnp.float32).tiny)
  a, b = metric[:, 0::2], metric[:, 1::2]
  prot_a = np.arange(0, n, 2) < num_prefix
  prot_b = np.arange(1, n, 2) < num_prefix
  if not for_iree():
    scores = jnp.einsum("bic,bjc->bij", a, b)  # [B, nA, nB]
    scores = jnp.where((prot_a[:, None] | prot_b[None, :])[None], -jnp.inf, scores)
  else:
    # The same scores in a form IREE 3.13 compiles with data tiling (else every ToMe module lost
    # data tiling and microkernels): a barrier keeps the head mean / norm out of the matmul
    # ("large vector sizes"), and the protected rows / columns get an additive -inf bias
    # instead of a boolean select (an i1 tensor its data tiling cannot pad).
    a, b = jax.lax.optimization_barrier((a, b))
    scores = jnp.einsum("bic,bjc->bij", a, b)
    bias_a = np.where(prot_a, -np.inf, 0.0).astype(np.float32)
    bias_b = np.where(prot_b, -np.inf, 0.0).astype(np.float32)
    scores = scores + bias_a[None, :, None] + bias_b[None, None, :]
  node_max = scores.max(axis=-1)     # [B, nA]
  node_idx = scores.argmax(axis=-1)  # [B, nA]
  n_a = a.shape[1]
  if r == 0:
    empty = jnp.zeros((keys.shape[0], 0), jnp.int32)
    return empty, empty, jnp.broadcast_to(jnp.arange(n_a, dtype=jnp.int32), (keys.shape[0], n_a))
  if num_prefix == 0:      # no class token: official keeps the best-match order
    _, edges = jax.lax.top_k(node_max, n_a)                # descending; ties: lower index
    src, unm = edges[:, :r], edges[:, r:].astype(jnp.int32)
  else:
    _, src = jax.lax.top_k(node_max, r)
    merged = jax.nn.one_hot(src, n_a, dtype=jnp.int32).sum(axis=1)  # [B, nA] 1 where merged
    unm = jnp.argsort(merged, axis=1, stable=True)[:, :n_a - r].astype(jnp.int32)
  dst = jnp.take_along_axis(node_idx, src, axis=1).astype(jnp.int32)
  return src.astype(jnp.int32), dst, unm


def output_order(n: int, r: int, num_prefix: int) -> np.ndarray:
  """Static permutation of ToMe's [unmerged A, B] output putting prefix tokens first, in order.

  Prefix token t sits at unmerged-A position t // 2 (t even; protected A tokens are never merged
  and have the lowest A indices) or at B position t // 2 (t odd).
  """
  n_unm = (n + 1) // 2 - r
  pos = [t // 2 if t % 2 == 0 else n_unm + t // 2 for t in range(num_prefix)]
  taken = set(pos)
  rest = [i for i in range(n - r) if i not in taken]
  return np.asarray(pos + rest, np.int32)


@dataclasses.dataclass(frozen=True)
class ToMe(common.AttentionReducer):
  name = "tome"
  tracks_size = True

  def max_remove(self, num_tokens: int, num_prefix: int) -> int:
    """ToMe's 50% cap (`tome_max_remove`)."""
    return tome_max_remove(num_tokens, num_prefix)

  def reduce(self, x: jax.Array, size: Optional[jax.Array], stats: Optional[AttentionStats],
             *, num_keep: int, num_prefix: int, layer: int
             ) -> Tuple[jax.Array, Optional[jax.Array]]:
    """x [B, N, C], size [B, N] or None (all ones) -> ([B, num_keep, C], sizes [B, num_keep])."""
    common.check_reduce_args("ToMe", x, num_keep=num_keep, num_prefix=num_prefix)
    n = x.shape[1]
    stats = common.require_stats("ToMe", stats, x)
    if size is not None and tuple(size.shape) != tuple(x.shape[:2]):
      raise ValueError(f"ToMe: size {tuple(size.shape)} does not match the tokens: [B, N] = "
                       f"{list(x.shape[:2])}")
    r = n - num_keep
    cap = self.max_remove(n, num_prefix)
    if r > cap:
      raise ValueError(f"ToMe can merge at most {cap} of {n} tokens at layer {layer} (half of "
                       f"the {n - num_prefix} non-prefix tokens), the schedule asks for {r}")
    if size is None:
      size = jnp.ones(x.shape[:2], jnp.float32)
    size = size.astype(jnp.float32)
    src, dst, unm = bipartite_matching(stats.keys, r, num_prefix)
    xs = x.astype(jnp.float32) * size[..., None]
    xa, xb, sb = xs[:, 0::2], xs[:, 1::2], size[:, 1::2]
    # Sizes of A tokens are gathered from `size` itself (A index i is token 2i): IREE 3.13 fails
    # to translate a gather from the strided slice size[:, 0::2] ("LLVM Translation failed ...
    # unrealized_conversion_cast"), so every ToMe graph merging in two or more blocks failed.
    def size_a(idx):     # [B, K] A indices -> [B, K] their sizes
      return common.gather_tokens(size, 2 * idx)
    onehot = jax.nn.one_hot(dst, xb.shape[1], dtype=jnp.float32)  # [B, r, nB]
    merged = jnp.einsum("brn,brc->bnc", onehot, common.gather_tokens(xa, src))
    if for_iree():   # keeps IREE from fusing the matmul into the add (see bipartite_matching)
      merged = jax.lax.optimization_barrier(merged)
    xb = xb + merged
    sb = sb + jnp.einsum("brn,br->bn", onehot, size_a(src))
    out_x = jnp.concatenate([common.gather_tokens(xa, unm), xb], axis=1)
    out_s = jnp.concatenate([size_a(unm), sb], axis=1)
    order = output_order(n, r, num_prefix)
    out_x, out_s = out_x[:, order], out_s[:, order]
    out_x = (out_x / out_s[..., None]).astype(x.dtype)
    if for_iree():   # IREE 3.13 fused the merge into the next matmul's packing: at batch 1
      # (data tiling + microkernels) the module crashed the process (SIGSEGV)
      out_x, out_s = jax.lax.optimization_barrier((out_x, out_s))
    return out_x, out_s
