"""The TokenReducer protocol: every method declares its name, flags and limits, and the
schedule validation and the forward obey what it declares."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitprune import model
from vitprune import schedule as S
from vitprune.profile import runner
from vitprune.reduce import KeepFirst, METHODS, TokenReducer, list_methods, make_reducer
from vitprune.reduce.base import AttentionStats
from vitprune.registry import get_config

CFG = get_config("test_tiny_vit")        # 17 tokens, prefix 1, depth 2
REG = get_config("test_tiny_dinov2_reg")  # 19 tokens, prefix 3, depth 2
REDUCERS = [make_reducer(m) for m in list_methods()] + [KeepFirst()]
PROTOCOL = ("name", "needs_attention", "tracks_size", "supports_embedding", "layer_dependent",
            "max_remove", "reduce", "reduce_embedding")


def _images(cfg, b=2, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(
      size=(b, cfg.img_size, cfg.img_size, cfg.in_chans)), jnp.float32)


def _stats(b, n, heads=2, d=4, seed=0):
  rng = np.random.default_rng(seed)
  probs = jax.nn.softmax(jnp.asarray(rng.normal(size=(b, heads, n, n)), jnp.float32), -1)
  kv = jnp.asarray(rng.normal(size=(2, b, n, heads, d)), jnp.float32)
  return AttentionStats(probs, kv[0], kv[1])


@pytest.mark.parametrize("red", REDUCERS, ids=lambda r: r.name)
def test_reducers_declare_the_whole_protocol(red):
  assert isinstance(red, TokenReducer)
  for member in PROTOCOL:
    assert hasattr(red, member), member
  assert isinstance(red.name, str) and red.name == red.name.lower()
  for flag in ("needs_attention", "tracks_size", "supports_embedding", "layer_dependent"):
    assert isinstance(getattr(red, flag), bool), flag
  hash(red)


def test_the_protocol_check_needs_every_member():
  """`isinstance(obj, TokenReducer)` is False for an object lacking any one member."""
  red = make_reducer("random")
  attrs = {m: getattr(red, m) for m in PROTOCOL}
  assert isinstance(type("Whole", (), attrs)(), TokenReducer)
  for member in PROTOCOL:
    part = type("Part", (), {m: v for m, v in attrs.items() if m != member})()
    assert not isinstance(part, TokenReducer), member

def test_registered_names_match_the_registry_and_keep_first_is_not_registered():
  for key, cls in METHODS.items():
    assert cls().name == key
  assert KeepFirst.name not in METHODS
  assert runner.make_drop_reducer("keep_first") == (KeepFirst(), KeepFirst.name)
  assert runner.KeepFirst is KeepFirst


@pytest.mark.parametrize("cfg", [CFG, REG], ids=lambda c: c.name)
@pytest.mark.parametrize("red", REDUCERS, ids=lambda r: r.name)
def test_max_remove_is_the_limit_check_schedule_enforces(red, cfg):
  n, p = cfg.num_tokens, cfg.num_prefix_tokens
  limit = red.max_remove(n, p)
  if red.name == "tome":
    assert limit == (n - p) // 2          # ToMe's 50% cap of the non-prefix tokens
  else:
    assert limit == n - p - 1             # down to the prefix plus one token
  assert red.max_remove(p + 1, p) == 0    # nothing left to remove
  at_limit = S.Schedule((n, n - limit) + (n - limit,) * (cfg.depth - 1))
  assert S.check_schedule(cfg, at_limit, red) == at_limit
  if n - limit - 1 >= p + 1:              # one more is still a valid count, but over the limit
    over = S.Schedule((n, n - limit - 1) + (n - limit - 1,) * (cfg.depth - 1))
    with pytest.raises(ValueError, match=f"{red.name} can remove at most {limit} of the {n}"):
      S.check_schedule(cfg, over, red)


@pytest.mark.parametrize("red", REDUCERS, ids=lambda r: r.name)
def test_reduction_at_the_limit_runs_in_the_forward(red):
  n, p = CFG.num_tokens, CFG.num_prefix_tokens
  keep = n - red.max_remove(n, p)
  sch = S.layer_schedule(CFG, keep, 0)
  out = model.forward(model.init_params(CFG, 0), _images(CFG), cfg=CFG, schedule=sch,
                      reducer=red)
  assert out.shape == (2, CFG.num_classes) and np.isfinite(np.asarray(out)).all()


@pytest.mark.parametrize("red", REDUCERS, ids=lambda r: r.name)
def test_supports_embedding_decides_embedding_drops(red):
  sch = S.embed_schedule(CFG, CFG.num_tokens - 3)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, CFG.num_tokens, 8)), jnp.float32)
  if red.supports_embedding:
    assert S.check_schedule(CFG, sch, red) == sch
    assert red.reduce_embedding(x, num_keep=sch.counts[0], num_prefix=1).shape == (2, 14, 8)
  else:
    with pytest.raises(ValueError, match=f"which {red.name} cannot do"):
      S.check_schedule(CFG, sch, red)
    with pytest.raises(ValueError, match="cannot drop tokens right after the embedding"):
      red.reduce_embedding(x, num_keep=sch.counts[0], num_prefix=1)


@pytest.mark.parametrize("red", REDUCERS, ids=lambda r: r.name)
def test_flags_match_what_reduce_needs_and_returns(red):
  n, keep = 9, 6
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, n, 8)), jnp.float32)
  stats = _stats(2, n) if red.needs_attention else None
  y, size = red.reduce(x, None, stats, num_keep=keep, num_prefix=1, layer=0)
  assert y.shape == (2, keep, 8)
  assert (size is not None) == red.tracks_size
  if red.tracks_size:
    assert size.shape == (2, keep) and float(size.sum()) == pytest.approx(2 * n)
  if red.needs_attention:
    with pytest.raises(ValueError, match="needs AttentionStats"):
      red.reduce(x, None, None, num_keep=keep, num_prefix=1, layer=0)


def test_keep_first_equals_slicing_the_embedded_tokens():
  params, images = model.init_params(CFG, 3), _images(CFG, 3, seed=2)
  keep = CFG.num_tokens - 5
  out = model.forward(params, images, cfg=CFG, schedule=S.embed_schedule(CFG, keep),
                      reducer=KeepFirst())
  x = model.embed(params, images, CFG)[:, :keep]
  for bp in params["blocks"]:
    x, _ = model.block(bp, x, None, cfg=CFG, num_keep=keep, reducer=None, layer=0)
  want = model.forward_head(params, model.final_norm(params, x, CFG), cfg=CFG)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(want))


def test_keep_first_in_a_block_keeps_the_first_tokens_and_sizes():
  x = jnp.arange(2 * 7 * 3, dtype=jnp.float32).reshape(2, 7, 3)
  size = jnp.arange(14, dtype=jnp.float32).reshape(2, 7)
  y, s = KeepFirst().reduce(x, size, None, num_keep=4, num_prefix=1, layer=1)
  np.testing.assert_array_equal(y, x[:, :4])
  np.testing.assert_array_equal(s, size[:, :4])


def test_the_attention_methods_serve_every_layer_and_leave_one_patch():
  """`layer_dependent` False (one compiled block serves every layer): the output does not depend
  on `layer`; a block keeps the prefix and one patch token, a limit never below 0."""
  n, keep = 9, 6
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, n, 8)), jnp.float32)
  stats = _stats(2, n)
  for name in ("evit", "pomt", "topk"):
    red = make_reducer(name)
    assert red.layer_dependent is False and red.supports_embedding is False, name
    at0, at5 = (red.reduce(x, None, stats, num_keep=keep, num_prefix=1, layer=layer)[0]
                for layer in (0, 5))
    np.testing.assert_array_equal(at0, at5)
    assert [red.max_remove(t, p) for t, p in ((17, 1), (19, 3), (4, 3), (3, 3), (1, 1))] == [
        15, 15, 0, 0, 0], name


def test_numpy_option_values_make_the_reducer_python_values_make():
  """seed=np.int64(3) kept the numpy scalar: the reducer's repr (run_prune's "reducer", a
  manifest's "repr") read 'RandomDrop(seed=np.int64(3), nested=np.False_)'."""
  got = make_reducer("random", seed=np.int64(3), nested=np.bool_(False))
  assert got == make_reducer("random", seed=3, nested=False)
  assert repr(got) == "RandomDrop(seed=3, nested=False)"
  assert type(got.seed) is int and type(got.nested) is bool
  assert repr(make_reducer("evit", normalize=np.True_)) == "EViT(normalize=True)"
  # The reducers themselves do it (a review: the conversion lived in make_reducer only)
  from vitprune.reduce.evit import EViT  # pylint: disable=g-import-not-at-top
  from vitprune.reduce.random_drop import RandomDrop  # pylint: disable=g-import-not-at-top
  assert repr(RandomDrop(seed=np.int64(3), nested=np.bool_(True))) == (
      "RandomDrop(seed=3, nested=True)")
  assert repr(EViT(normalize=np.False_)) == "EViT(normalize=False)"
