"""vitprune.flax_module: the linen Module owns the same pytree and computes the same forward."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vitprune.flax_module import VisionTransformer
from vitprune.model import init_params, jitted_forward, param_shapes
from vitprune.reduce import make_reducer
from vitprune.registry import get_config
from vitprune.schedule import parse_schedule

CFG = get_config("test_tiny_dinov2_reg")   # cls + 2 registers, LayerScale, no_embed_class


def _images(b=2):
  return jnp.asarray(np.random.default_rng(0).normal(size=(b, 32, 32, 3)), jnp.float32)


def test_init_has_exactly_the_vitprune_tree():
  variables = VisionTransformer(CFG).init(jax.random.key(0), _images())
  shapes = jax.tree.map(lambda a: a.shape, variables["params"])
  want = param_shapes(CFG)
  assert jax.tree.structure(shapes, is_leaf=lambda x: isinstance(x, tuple)) == \
      jax.tree.structure(want, is_leaf=lambda x: isinstance(x, tuple))
  assert jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(x, tuple)) == \
      jax.tree.leaves(want, is_leaf=lambda x: isinstance(x, tuple))
  p = variables["params"]
  assert float(jnp.abs(p["blocks"][0]["attn"]["qkv"]["bias"]).max()) == 0.0
  assert float(p["blocks"][1]["ls2"]["gamma"][0]) == np.float32(1e-5)
  assert 0.0 < float(p["pos_embed"].std()) < 0.05
  # The same law as init_params (init_rule: N(0, 0.02) clipped at 2 std): the module drew a
  # truncated normal (std 0.0176, nothing at +-0.04) where init_params clips (std 0.019, 4.6 %
  # of the values at +-0.04).
  ours = np.asarray(p["blocks"][0]["mlp"]["fc1"]["kernel"])
  numpy_drawn = np.asarray(init_params(CFG, 0)["blocks"][0]["mlp"]["fc1"]["kernel"])
  for v in (ours, numpy_drawn):
    assert np.abs(v).max() == np.float32(0.04)
    assert 0.02 < np.mean(np.isclose(np.abs(v), 0.04)) < 0.08, np.mean(np.abs(v) == 0.04)
    assert 0.0185 < v.std() < 0.0195, v.std()
  # Every leaf its own draw: same-shaped kernels of different blocks differ (one key for all
  # made every block start identical).
  blocks = p["blocks"]
  assert not np.array_equal(blocks[0]["mlp"]["fc1"]["kernel"], blocks[1]["mlp"]["fc1"]["kernel"])
  assert not np.array_equal(blocks[0]["attn"]["qkv"]["kernel"], blocks[1]["attn"]["qkv"]["kernel"])
  # The patch kernel: U(-1, 1) / sqrt(fan_in), symmetric around 0 (fan_in 8 * 8 * 3 = 192).
  patch = np.asarray(p["patch_embed"]["kernel"]) * np.sqrt(192)
  assert -1.0 <= patch.min() < -0.9 and 0.9 < patch.max() <= 1.0
  assert abs(patch.mean()) < 0.05 and 0.55 < patch.std() < 0.6     # U(-1, 1): std 0.577


def test_apply_equals_forward_with_and_without_pruning():
  params = init_params(CFG, seed=3)   # e.g. weights from vitprune.convert / load_weights
  x = _images()
  want = jitted_forward(params, x, cfg=CFG)
  apply = VisionTransformer(CFG).apply
  np.testing.assert_array_equal(jax.jit(apply)({"params": params}, x), want)   # same graph
  np.testing.assert_allclose(apply({"params": params}, x), want, rtol=1e-5, atol=1e-6)  # eager
  sched, pomt = parse_schedule(CFG, "keep@0:9"), make_reducer("pomt")
  module = VisionTransformer(CFG, schedule=sched, reducer=pomt)
  np.testing.assert_array_equal(
      jax.jit(module.apply)({"params": params}, x),
      jitted_forward(params, x, cfg=CFG, schedule=sched, reducer=pomt))
  feats = module.apply({"params": params}, x, features=True)
  assert feats.shape == (2, 9, CFG.embed_dim)
  with pytest.raises(TypeError, match=r"^features must be True or False, got 'no'"):
    module.apply({"params": params}, x, features="no")     # ('no' is truthy: features came)
  # The tree given is checked whole, as `forward` checks it: entries the module does not read
  # were dropped unsaid (a distillation head), and a wrong shape was flax's error on 'head'.
  for bad, said in (({**params, "head_dist": params["head"]},
                     r"unexpected: \['head_dist\.bias', 'head_dist\.kernel'\]"),
                    ({**params, "head": {"kernel": np.zeros((CFG.embed_dim, 5), np.float32),
                                         "bias": np.zeros(5, np.float32)}},
                     r"'head\.bias: expected \(10,\), got \(5,\)'")):
    for fn in (apply, jax.jit(apply)):
      with pytest.raises(ValueError, match=r"(?s)^parameters do not match test_tiny_dinov2_reg:"
                         r".*" + said):
        fn({"params": bad}, x)
  # ... unless params may be made: a new head for fine-tuning (apply with params mutable) is
  # created as init creates it (a review: the check refused the tree without its head).
  headless = {k: v for k, v in params.items() if k != "head"}
  logits, made = apply({"params": headless}, x, mutable=["params"],
                       rngs={"params": jax.random.key(1)})
  assert made["params"]["head"]["kernel"].shape == (CFG.embed_dim, 10) and logits.shape == (2, 10)


def test_trains_with_optax_through_a_pruned_graph():
  module = VisionTransformer(CFG, schedule=parse_schedule(CFG, "keep@0:9"),
                             reducer=make_reducer("topk"))
  x, y = _images(4), jnp.array([0, 1, 2, 3])
  params = module.init(jax.random.key(1), x)["params"]
  opt = optax.adam(1e-2)
  state = opt.init(params)

  def loss_fn(p):
    logits = module.apply({"params": p}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(p, s):
    loss, g = jax.value_and_grad(loss_fn)(p)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s, loss

  losses = []
  for _ in range(10):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_a_config_that_is_not_a_vitconfig_is_one_type_error():
  """A model name or a dict as cfg failed deep inside ("'str' object has no attribute
  'embed_dim'")."""
  import pytest  # pylint: disable=g-import-not-at-top
  cfg = get_config("test_tiny_vit")
  params = init_params(cfg, 0)
  x = jnp.zeros((2, cfg.img_size, cfg.img_size, cfg.in_chans))
  for bad in ("test_tiny_vit", {"embed_dim": 32}):
    with pytest.raises(TypeError, match="cfg must be a vitprune ViTConfig .* got "
                       "(str 'test_tiny_vit'|FrozenDict FrozenDict)"):
      VisionTransformer(bad).apply({"params": params}, x)
    with pytest.raises(TypeError, match="cfg must be a vitprune ViTConfig"):
      jitted_forward(params, x, cfg=bad)


def test_dtype_and_precision_reach_the_forward():
  """The module's dtype and precision are the forward's (features come back float32)."""
  params = init_params(CFG, seed=3)
  x = _images()
  bf16 = VisionTransformer(CFG, dtype="bfloat16")
  np.testing.assert_array_equal(
      bf16.apply({"params": params}, x),
      jitted_forward(params, x, cfg=CFG, dtype="bfloat16"))
  feats = bf16.apply({"params": params}, x, features=True)
  assert feats.dtype == jnp.float32 and feats.shape == (2, CFG.num_tokens, CFG.embed_dim)
  with pytest.raises(ValueError, match=r"^precision must be one of \('highest', 'high', "
                                       r"'default'\), got 'bogus'"):
    VisionTransformer(CFG, precision="bogus").apply({"params": params}, x)
