"""Reducers on hand-built inputs: kept / merged indices, fill values, NumPy references, errors."""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitprune.reduce import (AttentionStats, EViT, KeepFirst, POMT, RandomDrop, ToMe, TopK,
                             make_reducer, pomt_scores)
from vitprune.reduce import common
from vitprune.registry import get_config
from vitprune.reduce.tome import bipartite_matching


@functools.partial(jax.jit, static_argnames=("red", "num_keep", "num_prefix", "layer"))
def _reduce(red, x, size, stats, *, num_keep, num_prefix, layer):
  """`red.reduce` compiled (one XLA program instead of dozens of eager ops)."""
  return red.reduce(x, size, stats, num_keep=num_keep, num_prefix=num_prefix, layer=layer)


def _stats(probs, keys=None, values=None):
  probs = np.asarray(probs, np.float32)
  b, h, n, _ = probs.shape
  keys = np.ones((b, n, h, 2), np.float32) if keys is None else keys
  values = np.zeros((b, n, h, 2), np.float32) if values is None else values
  return AttentionStats(jnp.asarray(probs), jnp.asarray(keys, jnp.float32),
                        jnp.asarray(values, jnp.float32))


def _tokens(b, n, c=3, seed=0):
  return np.random.default_rng(seed).normal(size=(b, n, c)).astype(np.float32)


def _random_stats(b, h, n, d, seed):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(b, h, n, n)) * 2
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  return _stats(probs, rng.normal(size=(b, n, h, d)), rng.normal(size=(b, n, h, d)))


# ----------------------------------------------------------------------------- POMT


def pomt_scores_ref(probs, values, num_prefix):
  """Loop-by-loop NumPy reference of the POMT importance."""
  b, h, n, _ = probs.shape
  out = np.zeros((b, n - num_prefix))
  for bi in range(b):
    att = np.zeros(n)
    for j in range(num_prefix, n):
      att[j] = sum(max(probs[bi, hh, i, j] for hh in range(h)) for i in range(num_prefix, n))
    att = att[num_prefix:] / att[num_prefix:].max()
    v = np.array([values[bi, j].max(axis=0).sum() for j in range(n)])
    v = np.exp(v - v.max()) / np.exp(v - v.max()).sum()
    out[bi] = att + v[num_prefix:]
  return out


@pytest.mark.parametrize("num_prefix", [1, 2, 3])
def test_pomt_scores_match_numpy_reference(num_prefix):
  st = _random_stats(2, 3, 9, 4, seed=num_prefix)
  got = np.asarray(pomt_scores(st, num_prefix))
  want = pomt_scores_ref(np.asarray(st.probs), np.asarray(st.values), num_prefix)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_pomt_hand_case():
  # N = 5, prefix 1, two heads. Column j receives attention; head max then sum over queries 1..4.
  probs = np.full((1, 2, 5, 5), 0.0, np.float32)
  probs[0, 0, :, 3] = 0.5   # token 3: 0.5 from each of 4 non-prefix queries -> 2.0 (max)
  probs[0, 1, :, 1] = 0.25  # token 1: 1.0
  probs[0, 0, 0, 2] = 1.0   # token 2: attended only by the cls query -> 0 (prefix rows excluded)
  probs[0, 1, :, 4] = 0.1   # token 4: 0.4
  x = _tokens(1, 5)
  out, size = _reduce(POMT(), jnp.asarray(x), None, _stats(probs), num_keep=4, num_prefix=1,
                            layer=3)
  # scores (+ equal softmax 1/5 from zero values): tok1 0.5, tok2 0, tok3 1, tok4 0.2 -> keep 3, 1
  assert size is None
  np.testing.assert_array_equal(out[0, :3], x[0, [0, 1, 3]])   # prefix, kept in order
  np.testing.assert_allclose(out[0, 3], (x[0, 2] + x[0, 4]) / 2, rtol=1e-6)  # fill = mean
  sel = POMT().select(_stats(probs), num_keep=4, num_prefix=1)
  np.testing.assert_array_equal(sel, [[0, 2]])  # patch indices (token - prefix)


def test_pomt_value_term_breaks_even_attention():
  probs = np.full((1, 1, 4, 4), 0.25, np.float32)  # every patch receives the same attention
  values = np.zeros((1, 4, 1, 2), np.float32)
  values[0, 2] = 3.0  # token 2's value sum is the largest -> highest softmax share
  out, _ = _reduce(POMT(), jnp.asarray(_tokens(1, 4)), None, _stats(probs, values=values),
                         num_keep=3, num_prefix=1, layer=0)
  x = _tokens(1, 4)
  np.testing.assert_array_equal(out[0, :2], x[0, [0, 2]])
  np.testing.assert_allclose(out[0, 2], (x[0, 1] + x[0, 3]) / 2, rtol=1e-6)


def test_pomt_ties_prefer_lower_index_and_extremes():
  probs = np.full((1, 1, 6, 6), 1 / 6, np.float32)
  x = _tokens(1, 6)
  out, _ = _reduce(POMT(), jnp.asarray(x), None, _stats(probs), num_keep=4, num_prefix=1, layer=0)
  np.testing.assert_array_equal(out[0, :3], x[0, [0, 1, 2]])
  np.testing.assert_allclose(out[0, 3], x[0, 3:].mean(0), rtol=1e-6)
  # the maximum: prefix + fill token only; "one more token": N - 1 merges two tokens.
  out, _ = _reduce(POMT(), jnp.asarray(x), None, _stats(probs), num_keep=2, num_prefix=1, layer=0)
  np.testing.assert_allclose(out[0], np.stack([x[0, 0], x[0, 1:].mean(0)]), rtol=1e-6)
  out, _ = _reduce(POMT(), jnp.asarray(x), None, _stats(probs), num_keep=5, num_prefix=1, layer=0)
  np.testing.assert_allclose(out[0, 4], x[0, 4:].mean(0), rtol=1e-6)


# ----------------------------------------------------------------------------- Top-K / EViT


def _cls_probs(cls_row, n_heads=2):
  n = len(cls_row)
  probs = np.full((1, n_heads, n, n), 1.0 / n, np.float32)
  probs[0, :, 0] = cls_row
  return probs


def test_topk_hand_case():
  probs = _cls_probs([0.3, 0.1, 0.05, 0.3, 0.05, 0.2])
  probs[0, 1, 0] = [0.3, 0.3, 0.05, 0.1, 0.05, 0.2]  # head mean: 0.2, .05, .2, .05, .2
  x = _tokens(1, 6)
  out, size = _reduce(TopK(), jnp.asarray(x), None, _stats(probs), num_keep=3, num_prefix=1,
                            layer=0)
  assert size is None
  np.testing.assert_array_equal(out[0], x[0, [0, 1, 3]])  # tie .2/.2/.2 -> lowest indices
  out, _ = _reduce(TopK(), jnp.asarray(x), None, _stats(probs), num_keep=2, num_prefix=1, layer=0)
  np.testing.assert_array_equal(out[0], x[0, [0, 1]])


def test_evit_hand_case():
  probs = _cls_probs([0.2, 0.1, 0.4, 0.05, 0.25], n_heads=1)
  x = _tokens(1, 5)
  out, _ = _reduce(EViT(), jnp.asarray(x), None, _stats(probs), num_keep=4, num_prefix=1, layer=0)
  assert out.shape == (1, 4, 3)
  # keep token 2 (0.4), token 4 (0.25); fuse tokens 1 (0.1) and 3 (0.05), unnormalised (paper).
  np.testing.assert_array_equal(out[0, :3], x[0, [0, 2, 4]])
  np.testing.assert_allclose(out[0, 3], 0.1 * x[0, 1] + 0.05 * x[0, 3], rtol=1e-6)
  out, _ = _reduce(EViT(normalize=True), jnp.asarray(x), None, _stats(probs), num_keep=4,
                                       num_prefix=1, layer=0)
  np.testing.assert_allclose(out[0, 3], (0.1 * x[0, 1] + 0.05 * x[0, 3]) / 0.15, rtol=1e-5)
  # select: the kept patch indices (token - prefix), one fewer than num_keep - prefix (the fill)
  np.testing.assert_array_equal(EViT().select(_stats(probs), num_keep=4, num_prefix=1), [[1, 3]])


def test_class_attention_is_the_mean_over_heads():
  """Two heads that disagree: head 0 looks at token 1, head 1 at token 3, both at token 2 by
  0.4. The mean over heads (0.3, 0.4, 0.3) keeps token 2; the max (0.6, 0.4, 0.6) would keep
  token 1 (a max over heads passed every other test)."""
  probs = np.full((1, 2, 4, 4), 0.25, np.float32)
  probs[0, 0, 0] = [0.0, 0.6, 0.4, 0.0]
  probs[0, 1, 0] = [0.0, 0.0, 0.4, 0.6]
  np.testing.assert_array_equal(TopK().select(_stats(probs), num_keep=2, num_prefix=1), [[1]])
  x = np.zeros((1, 4, 1), np.float32)
  x[0, :, 0] = [0, 1, 2, 3]
  out, _ = _reduce(EViT(), jnp.asarray(x), None, _stats(probs), num_keep=3, num_prefix=1,
                   layer=0)                      # the fill: 0.3 * token 1 + 0.3 * token 3
  np.testing.assert_allclose(out[0, :, 0], [0.0, 2.0, 1.2], rtol=1e-6)


def test_class_attention_is_the_class_tokens_row_with_registers():
  """Prefix 3 (cls + 2 registers): tokens are ranked by row 0 (the class token), not by a
  register's row. Here the class token prefers tokens 5, 4 and the registers tokens 3, 4."""
  probs = np.full((1, 1, 6, 6), 0.2, np.float32)
  probs[0, 0, 0] = [0.0, 0.0, 0.0, 0.1, 0.2, 0.7]
  probs[0, 0, 1:3] = [0.0, 0.0, 0.0, 0.7, 0.2, 0.1]
  st = _stats(probs)
  np.testing.assert_array_equal(TopK().select(st, num_keep=5, num_prefix=3), [[1, 2]])
  np.testing.assert_array_equal(EViT().select(st, num_keep=5, num_prefix=3), [[2]])
  x = _tokens(1, 6)
  out, _ = _reduce(TopK(), jnp.asarray(x), None, st, num_keep=4, num_prefix=3, layer=0)
  np.testing.assert_array_equal(out[0], x[0, [0, 1, 2, 5]])
  out, _ = _reduce(EViT(), jnp.asarray(x), None, st, num_keep=5, num_prefix=3, layer=0)
  np.testing.assert_array_equal(out[0, :4], x[0, [0, 1, 2, 5]])
  np.testing.assert_allclose(out[0, 4], 0.1 * x[0, 3] + 0.2 * x[0, 4], rtol=1e-6)

def test_fill_tokens_keep_the_tokens_dtype():
  """POMT and EViT compute their fill token in float32 and return it in the tokens' dtype:
  bfloat16 in, bfloat16 out (a float32 fill promoted the whole block)."""
  x = jnp.asarray(_tokens(2, 6)).astype(jnp.bfloat16)
  st = _random_stats(2, 2, 6, 2, seed=3)
  for red in (POMT(), EViT(), EViT(normalize=True)):
    out, _ = _reduce(red, x, None, st, num_keep=4, num_prefix=1, layer=0)
    assert out.dtype == jnp.bfloat16 and out.shape == (2, 4, 3), red


def test_cls_attention_methods_need_a_class_token():
  probs = _cls_probs([0.2, 0.3, 0.5], n_heads=1)
  for r in (TopK(), EViT()):
    with pytest.raises(ValueError, match="no prefix \\(class\\) token"):
      _reduce(r, jnp.asarray(_tokens(1, 3)), None, _stats(probs), num_keep=2, num_prefix=0,
               layer=0)


# ----------------------------------------------------------------------------- ToMe


def tome_ref(x, keys, size, r, num_prefix):
  """NumPy port of facebookresearch/ToMe bipartite_soft_matching + merge_wavg (one image),
  official output order [unmerged A, B]: A sorted by position with a class token (here: any
  prefix token), else in descending best-match order (`merge.py`: `if class_token: unm_idx =
  unm_idx.sort(dim=1)[0]`)."""
  n = x.shape[0]
  metric = keys.mean(1)
  metric = metric / np.linalg.norm(metric, axis=-1, keepdims=True)
  a, b = metric[0::2], metric[1::2]
  scores = a @ b.T
  scores[np.arange(0, n, 2) < num_prefix, :] = -np.inf
  scores[:, np.arange(1, n, 2) < num_prefix] = -np.inf
  node_max, node_idx = scores.max(-1), scores.argmax(-1)
  edge_idx = np.argsort(-node_max, kind="stable")
  unm, src = edge_idx[r:], edge_idx[:r]
  if num_prefix:
    unm = np.sort(unm)
  dst = node_idx[src]
  xs = x * size[:, None]
  xa, xb = xs[0::2].copy(), xs[1::2].copy()
  sa, sb = size[0::2].copy(), size[1::2].copy()
  for s, d in zip(src, dst):
    xb[d] += xa[s]
    sb[d] += sa[s]
  out_x = np.concatenate([xa[unm], xb])
  out_s = np.concatenate([sa[unm], sb])
  return out_x / out_s[:, None], out_s


def test_tome_hand_case():
  # tokens 0..4: A = {0 (cls), 2, 4}, B = {1, 3}. key 2 == key 1 (cosine 1); key 4 is at 45
  # degrees to both 1 and 3 (tie -> B index 0 = token 1). r = 1 merges token 2 into token 1.
  keys = np.array([[1, 0], [0, 1], [0, 2], [1, 0], [1, 1]], np.float32)[None, :, None, :]
  x = _tokens(1, 5)
  out, size = _reduce(ToMe(), jnp.asarray(x), None, _stats(np.full((1, 1, 5, 5), .2), keys),
                            num_keep=4, num_prefix=1, layer=0)
  np.testing.assert_array_equal(size, [[1, 1, 2, 1]])
  np.testing.assert_allclose(out[0], np.stack([x[0, 0], x[0, 4], (x[0, 1] + x[0, 2]) / 2,
                                               x[0, 3]]), rtol=1e-6)
  src, dst, unm = jax.jit(bipartite_matching, static_argnums=(1, 2))(jnp.asarray(keys), 1, 1)
  np.testing.assert_array_equal(src, [[1]])
  np.testing.assert_array_equal(dst, [[0]])
  np.testing.assert_array_equal(unm, [[0, 2]])
  # with sizes: weighted average, sizes summed; r = 2 merges 4 into its tie-broken match 1
  size_in = np.array([[1, 3, 1, 2, 2]], np.float32)
  out, size = _reduce(ToMe(), jnp.asarray(x), jnp.asarray(size_in),
                            _stats(np.full((1, 1, 5, 5), .2), keys),
                            num_keep=3, num_prefix=1, layer=1)
  np.testing.assert_array_equal(size, [[1, 6, 2]])
  np.testing.assert_allclose(out[0, 1], (3 * x[0, 1] + x[0, 2] + 2 * x[0, 4]) / 6, rtol=1e-5)
  np.testing.assert_array_equal(out[0, [0, 2]], x[0, [0, 3]])


@pytest.mark.parametrize("n,num_prefix,r", [(9, 1, 0), (9, 1, 4), (10, 2, 4), (11, 2, 3),
                                            (13, 5, 4), (9, 0, 3), (12, 0, 6), (11, 0, 1)])
def test_tome_matches_official_reference(n, num_prefix, r):
  st = _random_stats(3, 2, n, 4, seed=n + r)
  x = _tokens(3, n, 5, seed=r)
  size = np.random.default_rng(n).integers(1, 4, size=(3, n)).astype(np.float32)
  out, out_s = _reduce(ToMe(), jnp.asarray(x), jnp.asarray(size), st, num_keep=n - r,
                             num_prefix=num_prefix, layer=0)
  for bi in range(3):
    want_x, want_s = tome_ref(x[bi], np.asarray(st.keys[bi]), size[bi], r, num_prefix)
    # official order [unmerged A, B]; ours moves the prefix tokens (even: A, odd: B) first.
    n_unm = (n + 1) // 2 - r
    pos = [t // 2 if t % 2 == 0 else n_unm + t // 2 for t in range(num_prefix)]
    order = pos + [i for i in range(n - r) if i not in pos]
    np.testing.assert_allclose(out[bi], want_x[order], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out_s[bi], want_s[order])
    np.testing.assert_allclose(out[bi, :num_prefix], x[bi, :num_prefix], rtol=1e-6)


def test_tome_cap_and_zero_keys():
  st = _random_stats(1, 2, 9, 4, seed=0)
  x = jnp.asarray(_tokens(1, 9))
  out, _ = _reduce(ToMe(), x, None, st, num_keep=5, num_prefix=1, layer=0)  # r = 4 = cap
  assert out.shape == (1, 5, 3)
  with pytest.raises(ValueError, match="at most 4 of 9 tokens at layer 2"):
    _reduce(ToMe(), x, None, st, num_keep=4, num_prefix=1, layer=2)
  zero = st._replace(keys=jnp.zeros_like(st.keys))  # cosine of zero vectors: no NaN
  out, size = _reduce(ToMe(), x, None, zero, num_keep=6, num_prefix=1, layer=0)
  assert np.isfinite(out).all() and np.isfinite(size).all()


@pytest.mark.parametrize("n,num_prefix,r", [(10, 2, 4), (11, 3, 4), (9, 1, 4), (9, 0, 3)])
def test_tome_iree_form_merges_as_the_xla_form(n, num_prefix, r):
  """Inside `iree_lowering` ToMe protects prefix tokens by an additive -inf bias instead of a
  select: the same merges, sizes and order (nothing merges into a register in set B)."""
  from vitprune import lowering  # pylint: disable=g-import-not-at-top
  st = _random_stats(2, 2, n, 4, seed=n)
  x = jnp.asarray(_tokens(2, n, 5, seed=n))
  size = jnp.asarray(np.random.default_rng(n).integers(1, 4, size=(2, n)), jnp.float32)
  want = ToMe().reduce(x, size, st, num_keep=n - r, num_prefix=num_prefix, layer=0)
  token = lowering.IREE.set(True)
  try:
    got = ToMe().reduce(x, size, st, num_keep=n - r, num_prefix=num_prefix, layer=0)
  finally:
    lowering.IREE.reset(token)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(got[1], want[1])
  np.testing.assert_allclose(got[0][:, :num_prefix], x[:, :num_prefix], rtol=1e-6)

# ----------------------------------------------------------------------------- random


def test_per_layer_random_drop_is_fixed_per_seed_and_stream():
  x = _tokens(4, 12)
  r = RandomDrop(seed=7, nested=False)
  assert r.layer_dependent
  out = r.reduce_embedding(jnp.asarray(x), num_keep=6, num_prefix=2)
  idx = r.kept_indices(10, 4, 0)
  assert list(idx) == sorted(idx) and len(set(idx)) == 4
  np.testing.assert_array_equal(out, np.concatenate([x[:, :2], x[:, 2 + idx]], axis=1))
  np.testing.assert_array_equal(out, r.reduce_embedding(jnp.asarray(x), num_keep=6, num_prefix=2))
  mid, size = _reduce(r, jnp.asarray(x), None, None, num_keep=6, num_prefix=2, layer=4)
  assert size is None
  np.testing.assert_array_equal(mid[:, 2:], x[:, 2 + r.kept_indices(10, 4, 5)])
  picks = {tuple(RandomDrop(seed=s).kept_indices(100, 10, 0)) for s in range(5)}
  assert len(picks) == 5  # different seeds, different subsets
  # ... and different layers of one seed (the embedding is stream 0): every reduction drew
  # the same subset when the stream was left out of the generator's seed.
  layers = {tuple(RandomDrop(seed=7, nested=False).kept_indices(100, 10, s)) for s in range(5)}
  assert len(layers) == 5
  with pytest.raises(ValueError, match="non-negative int"):
    RandomDrop(seed=-1)
  for bad in ("no", 0, 1, None):             # (0 / 1 are not bools here, as for records)
    with pytest.raises(ValueError, match=rf"^RandomDrop nested must be a bool, got {bad!r}$"):
      RandomDrop(nested=bad)
  assert RandomDrop(nested=np.bool_(False)).layer_dependent      # (numpy's bool is one)


def test_nested_random_drop_keeps_one_subset_per_count_whatever_the_layer():
  r = RandomDrop(seed=3)
  assert r == RandomDrop(seed=3, nested=True) and not r.layer_dependent
  # Golden: the subset is part of what a record's seed means (a changed stream would silently
  # deploy other tokens than the estimate measured).
  np.testing.assert_array_equal(r.kept_indices(10, 4, 0), [0, 2, 3, 7])
  np.testing.assert_array_equal(RandomDrop(seed=0).kept_indices(10, 4, 0), [1, 4, 5, 7])
  for stream in range(1, 6):
    np.testing.assert_array_equal(r.kept_indices(10, 4, stream), r.kept_indices(10, 4, 0))
  x = jnp.asarray(_tokens(2, 12))
  mid, size = _reduce(r, x, None, None, num_keep=6, num_prefix=2, layer=4)
  assert size is None
  np.testing.assert_array_equal(mid, r.reduce_embedding(x, num_keep=6, num_prefix=2))
  assert len({tuple(RandomDrop(seed=s).kept_indices(100, 10, 0)) for s in range(5)}) == 5


def test_nested_random_subsets_compose():
  """p -> m -> k keeps what p -> k keeps, for every m between: a multi-layer schedule's blocks
  see the tokens its single reductions leave."""
  for p in (7, 30, 196):
    for m in range(p + 1):
      for k in range(0, m + 1, max(1, m // 7)):
        direct = common.nested_random_subset(11, p, k)
        np.testing.assert_array_equal(
            common.nested_random_subset(11, p, m)[common.nested_random_subset(11, m, k)],
            direct, err_msg=f"{p} -> {m} -> {k}")
  with pytest.raises(ValueError, match=r"^cannot keep 5 of 4 indices$"):
    common.nested_random_subset(0, 4, 5)


def test_nested_random_subsets_are_uniform_over_seeds():
  """Each of the 15 two-of-six subsets is drawn about 3000 / 15 = 200 times (a drop that favoured
  positions, e.g. always removing the last, would draw one subset every time)."""
  counts = {}
  for seed in range(3000):
    key = tuple(common.nested_random_subset(seed, 6, 2))
    counts[key] = counts.get(key, 0) + 1
  assert len(counts) == 15 and 150 <= min(counts.values()) and max(counts.values()) <= 250


# ----------------------------------------------------------------------------- shared


ALL = [POMT(), TopK(), ToMe(), EViT(), RandomDrop()]


@pytest.mark.parametrize("red", ALL, ids=lambda r: r.name)
def test_prefix_first_batch_independent_finite(red):
  n, p = 11, 3
  st = _random_stats(4, 2, n, 4, seed=1)
  x = _tokens(4, n, 6, seed=2)
  out, _ = _reduce(red, jnp.asarray(x), None, st, num_keep=7, num_prefix=p, layer=1)
  assert out.shape == (4, 7, 6) and np.isfinite(out).all()
  np.testing.assert_array_equal(out[:, :p], x[:, :p])
  for i in range(4):  # the same image alone gives the same tokens
    one = jax.tree.map(lambda a: a[i:i + 1], st)
    alone, _ = _reduce(red, jnp.asarray(x[i:i + 1]), None, one, num_keep=7, num_prefix=p, layer=1)
    np.testing.assert_allclose(alone[0], out[i], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("red", ALL, ids=lambda r: r.name)
def test_reducer_argument_errors(red):
  x = jnp.asarray(_tokens(1, 6))
  st = _random_stats(1, 1, 6, 2, seed=0)
  with pytest.raises(ValueError, match=r"num_keep must be in \[num_prefix \+ 1, N\] = \[2, 6\]"):
    _reduce(red, x, None, st, num_keep=1, num_prefix=1, layer=0)
  with pytest.raises(ValueError, match="tokens must be \\[B, N, C\\]"):
    _reduce(red, x[0], None, st, num_keep=3, num_prefix=1, layer=0)
  if red.needs_attention:
    with pytest.raises(ValueError, match="needs AttentionStats"):
      _reduce(red, x, None, None, num_keep=3, num_prefix=1, layer=0)
    with pytest.raises(ValueError, match="cannot drop tokens right after the embedding"):
      red.reduce_embedding(x, num_keep=3, num_prefix=1)
    with pytest.raises(ValueError, match=r"attention probs \(1, 1, 5, 5\) do not match the 1 "
                       r"images of 6 tokens"):
      _reduce(red, x, None, _random_stats(1, 1, 5, 2, 0), num_keep=3, num_prefix=1, layer=0)
    # another batch's stats (one image's, broadcast: image 1 pruned by image 0's attention),
    # keys of other heads
    x2 = jnp.asarray(_tokens(2, 6))
    st2 = _random_stats(2, 2, 6, 2, seed=1)
    one = type(st2)(*(a[:1] for a in st2))
    with pytest.raises(ValueError, match=r"attention probs \(1, 2, 6, 6\) do not match the 2 "
                       r"images of 6 tokens"):
      _reduce(red, x2, None, one, num_keep=3, num_prefix=1, layer=0)
    with pytest.raises(ValueError, match=r"attention keys \(2, 6, 1, 2\) do not match the 2 "
                       r"images of 6 tokens and 2 heads"):
      _reduce(red, x2, None, st2._replace(keys=st2.keys[:, :, :1]), num_keep=3, num_prefix=1,
              layer=0)
  for bad in (3.0, np.float32(3), True):          # (a float failed deep in jax: every later
    with pytest.raises(TypeError, match="num_keep must be an int"):   # call with 3 too)
      _reduce(red, x, None, st, num_keep=bad, num_prefix=1, layer=0)
  with pytest.raises(TypeError, match="num_prefix must be an int"):
    _reduce(red, x, None, st, num_keep=3, num_prefix=1.0, layer=0)
  _reduce(red, x, None, st, num_keep=np.int64(4), num_prefix=1, layer=0)
  with pytest.raises(ValueError, match=r"num_prefix must be >= 0, got -1"):
    _reduce(red, x, None, st, num_keep=3, num_prefix=-1, layer=0)
  if red.name in ("pomt", "evit"):                 # (a fill token of nothing)
    with pytest.raises(ValueError, match=r"num_keep == N == 6 removes nothing"):
      _reduce(red, x, None, st, num_keep=6, num_prefix=1, layer=0)
  if isinstance(red, ToMe):                       # (a broadcasting error inside jax)
    with pytest.raises(ValueError, match=r"ToMe: size \(1, 5\) does not match the tokens: "
                       r"\[B, N\] = \[1, 6\]"):
      _reduce(red, x, jnp.ones((1, 5)), st, num_keep=4, num_prefix=1, layer=0)


def test_top_k_sorted_ties_and_empty():
  s = jnp.asarray([[1.0, 2.0, 2.0, 2.0, 0.0]])
  np.testing.assert_array_equal(common.top_k_sorted(s, 2), [[1, 2]])
  np.testing.assert_array_equal(common.top_k_sorted(jnp.asarray([[0., 5., 1., 4.]]), 2), [[1, 3]])
  assert common.top_k_sorted(s, 0).shape == (1, 0)


def test_make_reducer():
  assert make_reducer("POMT") == POMT()
  assert make_reducer("random", seed=3) == RandomDrop(seed=3)
  assert make_reducer("evit", normalize=True) == EViT(normalize=True)
  hash(make_reducer("tome"))
  with pytest.raises(ValueError, match="valid: evit, pomt, random, tome, topk"):
    make_reducer("dynamicvit")
  with pytest.raises(ValueError, match="method 'pomt' accepts no options"):
    make_reducer("pomt", seed=1)
  # Option types are checked: "False" from a command line is not False (it is truthy).
  assert make_reducer("random", seed=np.int64(4)) == RandomDrop(seed=4)
  for name, opts, bad in (("evit", dict(normalize="False"), "normalize must be bool, got 'False'"),
                          ("evit", dict(normalize=1), "normalize must be bool, got 1"),
                          ("random", dict(seed=1.5), "seed must be int, got 1.5"),
                          ("random", dict(seed=True), "seed must be int, got True"),
                          ("random", dict(seed=-5), "seed must be a non-negative int, got -5")):
    with pytest.raises(ValueError, match=f"method '{name}' option {bad}"):
      make_reducer(name, **opts)
  with pytest.raises(ValueError, match="EViT normalize must be True or False, got 'False'"):
    EViT(normalize="False")                  # built directly: ran as normalize=True
  with pytest.raises(ValueError, match="norm_eps must be a finite number > 0, got -1.0"):
    get_config("test_tiny_vit").replace(norm_eps=-1.0)     # gave NaN logits


def test_reducer_fields_name_every_option_defaults_included():
  from vitprune.reduce.methods import reducer_fields  # pylint: disable=g-import-not-at-top
  assert reducer_fields(make_reducer("random")) == {"seed": 0, "nested": True}
  assert reducer_fields(make_reducer("random", seed=4, nested=False)) == {"seed": 4,
                                                                          "nested": False}
  assert reducer_fields(make_reducer("evit")) == {"normalize": False}
  assert reducer_fields(POMT()) == reducer_fields(ToMe()) == reducer_fields(TopK()) == {}
  for name in ("evit", "pomt", "random", "tome", "topk"):    # (what a record keeps rebuilds it)
    red = make_reducer(name)
    assert make_reducer(name, **reducer_fields(red)) == red


def test_num_keep_above_n_is_refused_with_the_range():
  x, st = jnp.asarray(_tokens(1, 6)), _random_stats(1, 2, 6, 2, 0)
  for name, cls in (("evit", "EViT"), ("pomt", "POMT"), ("random", "RandomDrop"),
                    ("tome", "ToMe"), ("topk", "TopK")):
    with pytest.raises(ValueError, match=rf"^{cls}: num_keep must be in \[num_prefix \+ 1, N\] "
                                         r"= \[2, 6\], got 7"):
      _reduce(make_reducer(name), x, None, st, num_keep=7, num_prefix=1, layer=0)


def test_keep_first_checks_its_counts_as_the_methods_do():
  """The profiler's slice reducer keeps every prefix token too: a direct call asking for fewer
  (or for more tokens than there are, or a float count) is refused, not sliced silently."""
  x = jnp.asarray(_tokens(2, 5))
  red = KeepFirst()
  for call in (lambda **kw: red.reduce(x, None, None, layer=0, **kw)[0],
               lambda **kw: red.reduce_embedding(x, **kw)):
    for keep in (1, 0, 9):
      with pytest.raises(ValueError, match=r"^KeepFirst: num_keep must be in \[num_prefix \+ 1, "
                                           r"N\] = \[3, 5\], got " + str(keep)):
        call(num_keep=keep, num_prefix=2)
    with pytest.raises(TypeError, match="^KeepFirst: num_keep must be an int"):
      call(num_keep=3.0, num_prefix=2)
    np.testing.assert_array_equal(call(num_keep=3, num_prefix=2), x[:, :3])


def test_attention_values_of_other_heads_or_images_are_refused():
  x, st = jnp.asarray(_tokens(2, 6)), _random_stats(2, 2, 6, 2, seed=1)
  for values, shape in ((st.values[:, :, :1], "(2, 6, 1, 2)"), (st.values[:1], "(1, 6, 2, 2)")):
    with pytest.raises(ValueError, match=re.escape(
        f"POMT: attention values {shape} do not match the 2 images of 6 tokens and 2 heads "
        "([B, N, H, D] = [2, 6, 2, D])")):
      _reduce(POMT(), x, None, st._replace(values=values), num_keep=3, num_prefix=1, layer=0)


def test_evit_mean_of_patches_no_attention_reached_is_zero_not_nan():
  """EViT(normalize=True): the dropped patches' class attention sums to 0 -> a zero fill token
  (a plain division gave NaN)."""
  x = _tokens(1, 6)
  probs = np.full((1, 2, 6, 6), 1 / 6)
  probs[:, :, 0] = [0.5, 0.5, 0.0, 0.0, 0.0, 0.0]     # cls attends to itself and patch 0 only
  rest = _random_stats(1, 2, 6, 2, seed=0)
  st = rest._replace(probs=jnp.asarray(probs, jnp.float32))
  out = np.asarray(_reduce(EViT(normalize=True), jnp.asarray(x), None, st, num_keep=3,
                           num_prefix=1, layer=0)[0])
  np.testing.assert_array_equal(out, np.concatenate([x[:, :2], np.zeros((1, 1, 3))], axis=1))


def test_a_token_count_of_another_type_is_named_with_its_type():
  x, st = jnp.asarray(_tokens(1, 6)), _random_stats(1, 2, 6, 2, 0)
  for kw, said in ((dict(num_keep=3.0, num_prefix=1), "num_keep must be an int (a static token "
                                                      "count), got float 3.0"),
                   (dict(num_keep=3, num_prefix=True), "num_prefix must be an int (a static "
                                                       "token count), got bool True")):
    with pytest.raises(TypeError, match="^" + re.escape("TopK: " + said)):
      _reduce(TopK(), x, None, st, layer=0, **kw)


def test_method_names_are_read_as_is_method_reads_them():
  """`make_reducer` takes a method's name in any case and with surrounding blanks, as
  `is_method` / `config.is_method_name` accept it (a name they accept was refused by
  `make_reducer` when it only lower-cased it); `manifest_name` keeps a name left out as None
  (the reducer's own) and records a method's fields as its options (a mutation audit)."""
  from vitprune.reduce.methods import (  # pylint: disable=g-import-not-at-top
      is_method, manifest_name)
  for name, want in ((" Pomt ", POMT()), ("\tTOME\n", ToMe()), (" evit", EViT())):
    assert is_method(name) and make_reducer(name) == want, name
  assert make_reducer(" Random ", seed=3) == RandomDrop(seed=3)
  assert manifest_name(RandomDrop(seed=3), None, None) == (None, {"seed": 3, "nested": True})
  assert manifest_name(EViT(), " EViT ", {}) == ("evit", {})
  assert manifest_name(None, "mine", {"k": 1}) == ("mine", {"k": 1})
