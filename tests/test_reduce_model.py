"""Reducers inside the ViT forward: equivalence, batch independence, finiteness, prefix order,
compile-once, multi-layer POMT."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import visible_params
from vitprune import model
from vitprune import schedule as S
from vitprune.reduce import make_reducer
from vitprune.registry import get_config

CONFIGS = ["test_tiny_vit", "test_tiny_distilled", "test_tiny_dinov2_reg"]
METHODS = ["pomt", "topk", "tome", "evit", "random"]


def _setup(name, batch=4, seed=0):
  cfg = get_config(name)
  params = visible_params(cfg, seed)
  images = jnp.asarray(np.random.default_rng(seed).normal(size=(batch, 32, 32, 3)), jnp.float32)
  return cfg, params, images


def _schedule(cfg, method):
  if method == "random":
    return S.parse_schedule(cfg, f"embed:{cfg.num_tokens - 3}+keep@1:{cfg.num_prefix_tokens + 4}")
  if method == "tome":
    return S.remove_per_layer(cfg, 5)
  return S.prune_at(cfg, keep=cfg.num_prefix_tokens + 6, layer=0)


@pytest.mark.parametrize("name,method", zip(CONFIGS, ["pomt", "tome", "random"]))
def test_no_reduction_gives_unpruned_logits_exactly(name, method):
  cfg, params, images = _setup(name)
  ref = model.jitted_forward(params, images, cfg=cfg)
  sch = S.parse_schedule(cfg, "keep@0:%d" % cfg.num_tokens)  # remove 0 tokens
  out = model.jitted_forward(params, images, cfg=cfg, schedule=sch, reducer=make_reducer(method))
  np.testing.assert_array_equal(out, ref)


# cls-only (test_tiny_vit) runs POMT / ToMe in the tests below; here the prefix-2 and -3 configs.
@pytest.mark.parametrize("name", CONFIGS[1:])
@pytest.mark.parametrize("method", METHODS)
def test_pruned_forward_finite_and_batch_independent(name, method):
  cfg, params, images = _setup(name)
  red, sch = make_reducer(method), _schedule(cfg, method)
  S.check_schedule(cfg, sch, red)
  logits = model.jitted_forward(params, images, cfg=cfg, schedule=sch, reducer=red)
  full = model.jitted_forward(params, images, cfg=cfg)
  assert np.isfinite(logits).all() and not np.allclose(logits, full, atol=1e-4)
  # Image 2 again, first in a batch whose other images are different: same graph, same answer.
  others = jnp.asarray(np.random.default_rng(9).normal(size=(3, 32, 32, 3)), jnp.float32)
  moved = model.jitted_forward(params, jnp.concatenate([images[2:3], others]), cfg=cfg,
                               schedule=sch, reducer=red)
  np.testing.assert_allclose(moved[0], logits[2], rtol=1e-5, atol=1e-6)


def _after_block0(cfg, params, images, keep):
  """Tokens after block 0's attention residual [B, N, C] and each method's reduction of them."""
  x = model.embed(params, images, cfg)
  bp = params["blocks"][0]
  h = model.layer_norm(bp["norm1"], x, cfg.norm_eps)
  a, stats = model.attention_with_stats(bp["attn"], h, None, cfg.num_heads)
  x = x + model.layer_scale(bp.get("ls1"), a)
  return x, [make_reducer(m).reduce(x, None, stats, num_keep=keep,
                                    num_prefix=cfg.num_prefix_tokens, layer=0)[0]
             for m in METHODS]


@pytest.mark.parametrize("name", CONFIGS[1:])
def test_prefix_tokens_kept_in_order_in_model(name):
  cfg, params, images = _setup(name, batch=2)
  p = cfg.num_prefix_tokens
  x, outs = jax.jit(_after_block0, static_argnums=(0, 3))(cfg, params, images, cfg.num_tokens - 6)
  for out in outs:
    assert out.shape == (2, cfg.num_tokens - 6, cfg.embed_dim)
    np.testing.assert_array_equal(out[:, :p], x[:, :p])


class _PrefixSpy:
  """Random dropping that records the prefix count the model passes it, at trace time."""
  name = "random"
  needs_attention = False
  tracks_size = False
  supports_embedding = True
  layer_dependent = True

  def __init__(self, tag, seen):
    self.tag, self.seen, self.inner = tag, seen, make_reducer("random")

  def __hash__(self):
    return hash(("prefix-spy", self.tag))

  def __eq__(self, other):
    return isinstance(other, _PrefixSpy) and other.tag == self.tag

  def max_remove(self, n, p):
    return self.inner.max_remove(n, p)

  def reduce(self, x, size, stats, *, num_keep, num_prefix, layer):
    self.seen.append(("block", num_prefix))
    return self.inner.reduce(x, size, stats, num_keep=num_keep, num_prefix=num_prefix,
                             layer=layer)

  def reduce_embedding(self, x, *, num_keep, num_prefix):
    self.seen.append(("embed", num_prefix))
    return self.inner.reduce_embedding(x, num_keep=num_keep, num_prefix=num_prefix)


@pytest.mark.parametrize("name", CONFIGS)
def test_the_model_tells_every_reduction_its_prefix_tokens(name):
  """Class, distillation and register tokens are never pruned: the forward passes the config's
  prefix count to the embedding's and to every block's reduction (with 1, a register token was
  dropped and the logits of a random model moved by only ~1e-6)."""
  cfg, params, images = _setup(name, batch=2)
  seen = []
  sch = S.parse_schedule(cfg, f"embed:{cfg.num_tokens - 3}+keep@1:{cfg.num_prefix_tokens + 4}")
  out = model.jitted_forward_features(params, images, cfg=cfg, schedule=sch,
                                      reducer=_PrefixSpy(name, seen))
  assert out.shape == (2, cfg.num_prefix_tokens + 4, cfg.embed_dim)
  assert sorted(set(seen)) == [("block", cfg.num_prefix_tokens), ("embed", cfg.num_prefix_tokens)]


def test_average_pooling_leaves_out_every_prefix_token():
  """timm's `*_reg4_gap_*` layout: the mean is over patch tokens only, registers excluded."""
  cfg = get_config("test_tiny_dinov2_reg").replace(global_pool="avg", class_token=False)
  params = model.init_params(cfg, 0)
  p = cfg.num_prefix_tokens
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, p + 5, cfg.embed_dim)), jnp.float32)
  x = x.at[:, :p].set(1e3)                      # prefix tokens far from the patches
  got = model.forward_head(params, x, cfg=cfg, pre_logits=True)
  want = model.layer_norm(params["fc_norm"], x[:, p:].mean(1), cfg.norm_eps)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_compiles_once_per_schedule():
  cfg, params, images = _setup("test_tiny_vit", batch=2)
  red = make_reducer("pomt")
  sch = S.prune_at(cfg, keep=9, layer=1)
  model.jitted_forward(params, images, cfg=cfg, schedule=sch, reducer=red)
  n = model.jitted_forward._cache_size()
  model.jitted_forward(params, images + 1, cfg=cfg, schedule=S.parse_schedule(cfg, "keep@1:9"),
                       reducer=make_reducer("pomt"))
  assert model.jitted_forward._cache_size() == n  # equal static args hash equal: no recompile
  # Defaults spelled out are the same static arguments as defaults left out.
  model.jitted_forward(params, images, cfg=cfg, schedule=sch, reducer=red, dtype="float32",
                       precision="highest")
  assert model.jitted_forward._cache_size() == n
  # What jit keys on is checked first: jax's own message about hashing names neither.
  with pytest.raises(TypeError, match=r"schedule must be a vitprune Schedule .* got list"):
    model.jitted_forward(params, images, cfg=cfg, schedule=[17, 9, 9], reducer=red)
  with pytest.raises(TypeError,
                     match=r"reducer must be a token reducer \(make_reducer\('pomt'\)\)"):
    model.jitted_forward(params, images, cfg=cfg, schedule=sch, reducer="pomt")
  model.jitted_forward(params, images, cfg=cfg, schedule=S.prune_at(cfg, keep=8, layer=1),
                       reducer=red)
  assert model.jitted_forward._cache_size() == n + 1
  # bfloat16 runs at the default precision whatever is asked: one graph (it compiled two)
  outs = [model.jitted_forward(params, images, cfg=cfg, schedule=sch, reducer=red,
                               dtype="bfloat16", precision=p) for p in ("highest", "default")]
  assert model.jitted_forward._cache_size() == n + 2
  np.testing.assert_array_equal(outs[0], outs[1])


def test_pomt_multi_layer_and_maximum():
  cfg, params, images = _setup("test_tiny_vit")
  red = make_reducer("pomt")
  for sch in (S.prune_layers(cfg, {0: 12, 1: 5}), S.prune_at(cfg, keep=2, layer=0)):
    out = model.jitted_forward_features(params, images, cfg=cfg, schedule=sch, reducer=red)
    assert out.shape == (4, sch.counts[-1], cfg.embed_dim) and np.isfinite(out).all()


def test_tome_sizes_flow_into_proportional_attention():
  cfg, params, images = _setup("test_tiny_vit", batch=2)
  sch = S.remove_per_layer(cfg, 8)  # 17 -> 9 -> 5: the cap at both blocks
  out = model.jitted_forward(params, images, cfg=cfg, schedule=sch, reducer=make_reducer("tome"),
                             dtype="bfloat16")
  assert np.isfinite(out).all()
  # The forward validates the schedule against the method before tracing.
  with pytest.raises(ValueError, match="tome can remove at most 8 of the 17 tokens"):
    model.jitted_forward(params, images, cfg=cfg, schedule=S.Schedule([17, 8, 8]),
                         reducer=make_reducer("tome"))


def test_embedding_drop_needs_random():
  cfg, params, images = _setup("test_tiny_vit", batch=1)
  with pytest.raises(ValueError, match="drops tokens after the embedding, which pomt cannot do"):
    model.jitted_forward(params, images, cfg=cfg, schedule=S.drop_after_embedding(cfg, 10),
                         reducer=make_reducer("pomt"))


def test_class_token_methods_refuse_a_model_without_one():
  """timm's *_reg4_gap_* layout (registers, no class token): Top-K and EViT ranked patches by
  the attention of register 0, with no error; the others need no class token."""
  cfg = get_config("test_tiny_vit", class_token=False, global_pool="avg", num_reg_tokens=2,
                   no_embed_class=True)
  params = model.init_params(cfg, 0)
  images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
  sch = S.parse_schedule(cfg, "keep@0:5")
  for method in ("topk", "evit"):
    with pytest.raises(ValueError, match=f"{method} scores tokens by class-token attention, but "
                                         "test_tiny_vit has no class token"):
      model.jitted_forward(params, images, cfg=cfg, schedule=sch, reducer=make_reducer(method))
  assert model.jitted_forward(params, images, cfg=cfg, schedule=sch,
                              reducer=make_reducer("pomt")).shape == (2, cfg.num_classes)
  S.check_schedule(cfg, S.full_schedule(cfg), make_reducer("topk"))   # nothing reduced: fine


class _Reducer:
  """A third-party reducer (the public `TokenReducer` protocol) keeping the first tokens."""
  name = "first"
  needs_attention = False
  tracks_size = False
  supports_embedding = True
  layer_dependent = False

  def __init__(self, embed_short=0):
    self.embed_short = embed_short

  def __hash__(self):
    return hash(self.embed_short)

  def __eq__(self, other):
    return isinstance(other, _Reducer) and other.embed_short == self.embed_short

  def max_remove(self, n, p):
    return n - p - 1

  def reduce(self, x, size, stats, *, num_keep, num_prefix, layer):
    return x[:, :num_keep], size

  def reduce_embedding(self, x, *, num_keep, num_prefix):
    return x[:, :num_keep + self.embed_short]


def test_a_custom_reducers_embedding_count_is_checked():
  """reduce_embedding's count was never checked: 5 tokens short ran on (blocks that keep their
  count do not look); 1 too many was blamed on layer 0."""
  cfg, params, images = _setup("test_tiny_vit", batch=2)
  sch = S.parse_schedule(cfg, "embed:12")
  assert model.jitted_forward_features(params, images, cfg=cfg, schedule=sch,
                                       reducer=_Reducer()).shape[1] == 12
  for short in (-5, 1):
    with pytest.raises(ValueError, match=f"_Reducer returned {12 + short} tokens after the "
                                         "embedding, the schedule asks for 12"):
      model.jitted_forward_features(params, images, cfg=cfg, schedule=sch,
                                    reducer=_Reducer(short))


def test_a_reducer_missing_a_member_is_named():
  """A reducer without needs_attention passed the type check, then was an AttributeError."""
  cfg, params, images = _setup("test_tiny_vit", batch=1)

  class NoFlags(_Reducer):
    needs_attention = property(lambda self: (_ for _ in ()).throw(AttributeError))

  with pytest.raises(TypeError, match=r"reducer must be a token reducer \(it lacks "
                                      r"needs_attention: see vitprune\.reduce\.base"):
    model.jitted_forward(params, images, cfg=cfg, schedule=S.prune_at(cfg, keep=9, layer=0),
                         reducer=NoFlags())


def test_forward_head_checks_its_tokens():
  """Integer features cast the head to int (logits all 0); [B, C] was jax's dot_general error."""
  cfg, params, images = _setup("test_tiny_vit", batch=2)
  feats = model.jitted_forward_features(params, images, cfg=cfg)
  np.testing.assert_allclose(model.forward_head(params, feats, cfg=cfg),
                             model.jitted_forward(params, images, cfg=cfg), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="forward_head takes floating-point tokens, got int32"):
    model.forward_head(params, feats.astype(jnp.int32), cfg=cfg)
  for bad in (feats[:, 0], feats[..., :-1], feats[:, :1]):
    with pytest.raises(ValueError, match=r"forward_head takes final tokens \[B, n, 32\] \(n > 1 "
                                         r"prefix tokens\) of test_tiny_vit, got shape"):
      model.forward_head(params, bad, cfg=cfg)


class _LongBlock(_Reducer):
  """`_Reducer` whose block reduction returns one token more than asked."""

  def __hash__(self):
    return hash("long")

  def __eq__(self, other):
    return type(other) is _LongBlock

  def reduce(self, x, size, stats, *, num_keep, num_prefix, layer):
    return x[:, :num_keep + 1], size


def test_a_custom_reducers_block_count_is_checked():
  """A block's reducer must return the schedule's count: one token too many at the last block
  reached the head unnoticed (the head pools any count) when the check was dropped (a mutation
  audit of model.block)."""
  cfg, params, images = _setup("test_tiny_vit", batch=2)
  for layer in (0, 1):
    sch = S.prune_at(cfg, keep=9, layer=layer)
    assert model.jitted_forward_features(params, images, cfg=cfg, schedule=sch,
                                         reducer=_Reducer()).shape[1] == 9
    with pytest.raises(ValueError, match=f"^_LongBlock returned 10 tokens at layer {layer}, "
                                         "the schedule asks for 9"):
      model.jitted_forward_features(params, images, cfg=cfg, schedule=sch, reducer=_LongBlock())


class _BadReturn(_Reducer):
  """`_Reducer` whose block reduction returns `kind`: a bare array, or sizes of a wrong shape."""

  def __init__(self, kind):
    super().__init__()
    self.kind = kind

  def __hash__(self):
    return hash(("bad", self.kind))

  def __eq__(self, other):
    return type(other) is _BadReturn and other.kind == self.kind

  def reduce(self, x, size, stats, *, num_keep, num_prefix, layer):
    if self.kind == "bare":
      return x[:, :num_keep]
    if self.kind == "unreduced_size":
      return x[:, :num_keep], jnp.ones(x.shape[:2])
    return x[:, :num_keep], jnp.ones((x.shape[0], num_keep, 1))


def test_a_custom_reducers_returned_structure_and_sizes_are_checked():
  """A bare array was 'too many values to unpack (expected 2)'; sizes left at the input count
  were a broadcasting error inside the next block's attention, [B, K, 1] jax's 'bias ndim'."""
  cfg, params, images = _setup("test_tiny_vit", batch=2)
  sch = S.parse_schedule(cfg, "keep@0:12,1:9")
  for kind, match in (
      ("bare", r"^_BadReturn\.reduce must return \(tokens \[B, K, C\], size \[B, K\] or "
               r"None\), got an array of shape \(2, 12, 32\) at layer 0"),
      ("unreduced_size", r"^_BadReturn returned token sizes of shape \(2, 17\) at layer 0, "
                         r"not \[B, K\] = \[2, 12\]"),
      ("extra_axis", r"^_BadReturn returned token sizes of shape \(2, 12, 1\) at layer 0")):
    with pytest.raises(ValueError, match=match):
      model.jitted_forward(params, images, cfg=cfg, schedule=sch, reducer=_BadReturn(kind))


class _Returns(_BadReturn):
  """`_BadReturn` with other returns: a triple, a list, a token short, sizes of another batch,
  sizes 1..K (not all 1: they bias the next block's attention), or no sizes."""

  def __eq__(self, other):
    return type(other) is _Returns and other.kind == self.kind

  def __hash__(self):
    return hash(("returns", self.kind))

  def reduce(self, x, size, stats, *, num_keep, num_prefix, layer):
    b, k = x.shape[0], num_keep
    sized = jnp.broadcast_to(jnp.arange(1.0, k + 1.0), (b, k))
    return {"triple": (x[:, :k], None, None), "list": [x[:, :k], None],
            "short": (x[:, :k - 1], None), "batch_one": (x[:, :k], jnp.ones((1, k))),
            "sized": (x[:, :k], sized), "none": (x[:, :k], None)}[self.kind]


def test_a_custom_reducers_return_is_checked_whole_and_its_sizes_are_used():
  """A mutation audit of `_check_reduced`: a triple was 'too many values to unpack', a list
  refused, a count short or sizes of batch 1 (which broadcast) accepted, the sizes dropped."""
  cfg, params, images = _setup("test_tiny_vit", batch=2)
  sch = S.parse_schedule(cfg, "keep@0:12,1:9")

  def run(kind):
    return model.jitted_forward(params, images, cfg=cfg, schedule=sch, reducer=_Returns(kind))

  for kind, match in (
      ("triple", r"^_Returns\.reduce must return \(tokens .* got tuple at layer 0"),
      ("short", r"^_Returns returned 11 tokens at layer 0, the schedule asks for 12"),
      ("batch_one", r"^_Returns returned token sizes of shape \(1, 12\) at layer 0")):
    with pytest.raises(ValueError, match=match):
      run(kind)
  none = np.asarray(run("none"))
  np.testing.assert_array_equal(np.asarray(run("list")), none)
  assert not np.allclose(np.asarray(run("sized")), none)



class _BlockSpy(_Reducer):
  """`_Reducer` that records what the model passes each block's reduction, at trace time."""

  def __init__(self, needs_attention, seen):
    super().__init__()
    self.needs_attention, self.seen = needs_attention, seen

  def __hash__(self):
    return hash(("block-spy", self.needs_attention))

  def __eq__(self, other):
    return type(other) is _BlockSpy and other.needs_attention == self.needs_attention

  def reduce(self, x, size, stats, *, num_keep, num_prefix, layer):
    self.seen.append((layer, x.shape[1], num_keep, None if stats is None else
                      tuple(stats.probs.shape)))
    return x[:, :num_keep], size


@pytest.mark.parametrize("needs_attention", [False, True])
def test_the_model_tells_every_reduction_its_layer_and_stats_only_if_needed(needs_attention):
  """Each reducing block passes its own layer (per-layer random drop draws its subset from it;
  with layer 0 everywhere every block dropped the same positions, no test noticed), and builds
  AttentionStats [B, H, N, N] only for a reducer that needs them (the others take the fast
  attention path and get None: a model that always built them passed every test)."""
  cfg, params, images = _setup("test_tiny_vit", batch=2)
  seen = []
  out = model.jitted_forward_features(params, images, cfg=cfg, schedule=S.Schedule([17, 12, 8]),
                                      reducer=_BlockSpy(needs_attention, seen))
  assert out.shape == (2, 8, cfg.embed_dim)
  h = cfg.num_heads
  want = [(0, 17, 12, (2, h, 17, 17)), (1, 12, 8, (2, h, 12, 12))]
  assert seen == [w[:3] + ((w[3],) if needs_attention else (None,)) for w in want]
