"""The registry reproduces timm's architectures and preprocessing (fixture written by timm)."""
import json
import os

import jax
import numpy as np
import pytest

from vitprune.config import (Preprocessing, ViTConfig, check_config, check_path,
                             config_differences, config_field, config_from_dict, config_to_dict,
                             configs_shown)
from vitprune.model import param_shapes
from vitprune.registry import REGISTRY, get_config, list_models

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "timm_registry.json")
with open(FIXTURE) as f:
  TIMM = json.load(f)["models"]


def _num_params(cfg):
  shapes = jax.tree.leaves(param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))
  return sum(int(np.prod(s)) for s in shapes)


def test_every_timm_name_is_registered():
  assert set(TIMM) <= set(REGISTRY)
  assert len(TIMM) == 21


@pytest.mark.parametrize("name", sorted(TIMM))
def test_architecture_matches_timm(name):
  cfg, arch = get_config(name), TIMM[name]["arch_fields"]
  assert cfg.img_size == arch["img_size"]
  assert cfg.patch_size == arch["patch_size"]
  assert cfg.embed_dim == arch["embed_dim"]
  assert cfg.depth == arch["depth"]
  assert cfg.num_heads == arch["num_heads"]
  assert cfg.mlp_hidden == arch["mlp_hidden"]
  assert cfg.mlp_type == {"gelu": "gelu", "swiglu_packed": "swiglu"}[arch["mlp_type"]]
  assert cfg.num_classes == arch["num_classes"]
  assert cfg.class_token == arch["has_cls_token"]
  assert cfg.dist_token == arch["has_dist_token"]
  assert cfg.num_reg_tokens == arch["num_reg_tokens"]
  assert cfg.no_embed_class == arch["no_embed_class"]
  assert cfg.layerscale == arch["layerscale"]
  assert cfg.global_pool == arch["global_pool"]
  assert cfg.use_fc_norm == arch["fc_norm"]
  assert cfg.norm_eps == arch["ln_eps"]
  assert cfg.num_prefix_tokens == arch["num_prefix_tokens"]
  assert (1, cfg.pos_embed_len, cfg.embed_dim) == tuple(arch["pos_embed_shape"])
  assert _num_params(cfg) == TIMM[name]["param_count"]


@pytest.mark.parametrize("name", sorted(TIMM))
def test_preprocessing_matches_timm_pretrained_cfg(name):
  prep, want = get_config(name).preprocessing, TIMM[name]["default_pretrained_cfg"]
  assert want["crop_mode"] == "center"
  assert prep.input_size == want["input_size"][1] == want["input_size"][2]
  assert prep.mean == tuple(want["mean"])
  assert prep.std == tuple(want["std"])
  assert prep.crop_pct == want["crop_pct"]
  assert prep.interpolation == want["interpolation"]


def test_configs_are_hashable_static_arguments():
  a, b = get_config("deit_small_patch16_224"), get_config("deit_small_patch16_224")
  assert a == b and hash(a) == hash(b)
  assert len({get_config(n) for n in list_models()}) == len(list_models())


def test_unknown_model_suggests_close_names():
  with pytest.raises(KeyError, match="deit_small_patch16_224"):
    get_config("deit_smal_patch16_224")
  with pytest.raises(KeyError, match="unknown model 'resnet50'") as e:
    get_config("resnet50")
  assert str(e.value).startswith("unknown model 'resnet50'. Known models: deit3_base")
  for bad in (None, 1, ["vit_digits"]):     # difflib's TypeError / 'unhashable type: list'
    with pytest.raises(TypeError, match=r"model name must be a str, e\.g\. "
                                        r"'deit_small_patch16_224', got "):
      get_config(bad)
  # The three closest names, not only the closest one.
  with pytest.raises(KeyError, match=r"^unknown model 'deit_smal_patch16_224'\. Did you mean: "
                     r"deit_small_patch16_224, deit3_small_patch16_224, vit_small_patch16_224\?"):
    get_config("deit_smal_patch16_224")


def test_get_config_applies_its_overrides():
  cfg = get_config("vit_digits", depth=3, img_size=64)
  assert (cfg.depth, cfg.img_size, cfg.preprocessing.input_size) == (3, 64, 64)
  assert get_config("vit_digits").depth == 6


def test_the_test_configs_and_the_embedded_default_have_their_documented_sizes():
  """Tests and the trained weights (weights/vit_digits) rely on these toy shapes."""
  d = get_config("vit_digits")
  assert (d.img_size, d.patch_size, d.embed_dim, d.depth, d.num_heads, d.mlp_hidden,
          d.num_classes, d.num_tokens) == (32, 4, 64, 6, 4, 128, 10, 65)
  reg = get_config("test_tiny_dinov2_reg")
  assert (reg.num_reg_tokens, reg.num_prefix_tokens, reg.pos_embed_len, reg.layerscale,
          reg.no_embed_class) == (2, 3, 16, True, True)
  for name in ("test_tiny_vit", "test_tiny_distilled", "test_tiny_dinov2_reg"):
    c = get_config(name)
    assert (c.img_size, c.patch_size, c.embed_dim, c.depth, c.num_heads, c.mlp_hidden,
            c.num_classes) == (32, 8, 32, 2, 2, 64, 10), name
  assert get_config("test_tiny_distilled").num_prefix_tokens == 2


def test_replace_keeps_preprocessing_in_sync():
  cfg = get_config("vit_small_patch14_dinov2").replace(img_size=224)
  assert cfg.img_size == cfg.preprocessing.input_size == 224
  assert cfg.num_patches == 16 * 16
  # A preprocessing given with the new img_size is kept as given, not rebuilt from the old one.
  import dataclasses  # pylint: disable=g-import-not-at-top
  prep = dataclasses.replace(get_config("vit_digits").preprocessing, input_size=64, crop_pct=0.5)
  assert get_config("vit_digits").replace(img_size=64, preprocessing=prep).preprocessing == prep


@pytest.mark.parametrize("changes, message", [
    (dict(img_size=100), "not a multiple of patch_size"),
    (dict(num_heads=5), "not divisible by num_heads"),
    (dict(mlp_type="relu"), "unknown mlp_type"),
    (dict(global_pool="max"), "unknown global_pool"),
    (dict(class_token=False), "needs a class token"),
    (dict(patch_size=0), "patch_size must be a positive integer, got 0"),   # ZeroDivisionError
    (dict(num_heads=0), "num_heads must be a positive integer, got 0"),     # (before)
    (dict(img_size="224"), "img_size must be a positive integer, got '224'"),
    (dict(depth=2**63), "depth must be at most 2147483647, got 9223372036854775808"),
    # A string is truthy: 'False' switched LayerScale on and shortened the position embedding
    # (only check_config looked, and neither the forward nor the flax module calls it).
    (dict(layerscale="False"), "deit_tiny_patch16_224: layerscale must be true or false, got "
                               "'False'"),
    (dict(no_embed_class=0), "no_embed_class must be true or false, got 0"),
    (dict(class_token="no", global_pool="avg"), "class_token must be true or false, got 'no'"),
    (dict(dist_token=1), "dist_token must be true or false, got 1"),
    (dict(name=None), "config.name must be a non-empty str, got None"),
    (dict(name=""), "config.name must be a non-empty str, got ''"),
    (dict(num_reg_tokens=-1), "num_reg_tokens must be a non-negative integer, got -1"),
    (dict(norm_eps=0.0), "norm_eps must be a finite number > 0, got 0.0"),
    # (with avg pooling the missing class token, not the pooling, is what it names)
    (dict(dist_token=True, class_token=False, global_pool="avg"),
     "deit_tiny_patch16_224: a distillation token needs a class token$"),
])
def test_invalid_configs_are_rejected(changes, message):
  with pytest.raises(ValueError, match=message):
    get_config("deit_tiny_patch16_224").replace(**changes)


@pytest.mark.parametrize("changes, got", [
    (dict(global_pool="avg"), "global_pool='avg', 0 register tokens"),   # (pooled the patches,
    (dict(num_reg_tokens=4), "global_pool='token', 4 register tokens"),  # unlike timm)
])
def test_a_distilled_model_pools_its_class_and_distillation_tokens(changes, got):
  """timm's VisionTransformerDistilled asserts global_pool 'token' and has two prefix tokens."""
  with pytest.raises(ValueError, match="deit_tiny_distilled_patch16_224: a distillation token "
                                       f"needs global_pool='token' and no register tokens "
                                       rf"\(timm's distilled DeiT\), got {got}"):
    get_config("deit_tiny_distilled_patch16_224").replace(**changes)


def test_a_config_built_in_python_has_its_preprocessing_checked():
  """Only JSON configs were checked (check_config): one built in Python ran with a NaN std."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  cfg = get_config("vit_digits")
  with pytest.raises(ValueError, match=r"preprocessing.std must be finite numbers > 0"):
    cfg.replace(preprocessing=dataclasses.replace(cfg.preprocessing, std=(float("nan"),) * 3))
  with pytest.raises(ValueError, match=r"^vit_digits: preprocessing.crop_pct must be in \(0, "
                     r"1\], got 2.0$"):    # a model's eval crop never pads (the data layer can)
    check_config(cfg.replace(preprocessing=dataclasses.replace(cfg.preprocessing,
                                                               crop_pct=2.0)))
  with pytest.raises(ValueError, match=r"crop_pct must be in \(0, 1\], got 1.25$"):
    check_config(cfg.replace(preprocessing=dataclasses.replace(cfg.preprocessing,
                                                               crop_pct=1.25)))


def test_a_config_whose_preprocessing_makes_other_images_is_refused(tmp_path):
  """A config.json whose preprocessing made 64 px or 1-channel images for a 32 px RGB model was
  read; the images then failed as a shape error inside the jitted forward."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from vitprune import checkpoint  # pylint: disable=g-import-not-at-top
  from vitprune.model import init_params  # pylint: disable=g-import-not-at-top
  cfg = get_config("vit_digits")
  for field, value, model_field, got in (("input_size", 64, "img_size", 32),
                                          ("channels", 1, "in_chans", 3)):
    bad = dataclasses.replace(cfg.preprocessing, **{field: value},
                              **({"mean": (0.5,), "std": (0.5,)} if field == "channels" else {}))
    with pytest.raises(ValueError, match=f"^vit_digits: preprocessing.{field} {value} differs "
                       f"from {model_field} {got}: the images it makes would not fit the model$"):
      check_config(cfg.replace(preprocessing=bad))
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  doc = json.loads((tmp_path / "w" / "config.json").read_text())
  doc["config"]["preprocessing"]["input_size"] = 64
  (tmp_path / "w" / "config.json").write_text(json.dumps(doc))
  with pytest.raises(ValueError, match="preprocessing.input_size 64 differs from img_size 32"):
    checkpoint.read_weights_config(path)


def test_init_params_takes_an_int_seed():
  """A JAX PRNG key (jax.random.PRNGKey(0)) failed inside numpy's SeedSequence."""
  from vitprune.model import init_params  # pylint: disable=g-import-not-at-top
  cfg = get_config("test_tiny_vit")
  for bad in (jax.random.PRNGKey(0), 1.5, -1, True):
    with pytest.raises(TypeError, match="seed must be an int >= 0 .*not a JAX PRNG key"):
      init_params(cfg, bad)
  assert jax.tree.all(jax.tree.map(lambda a, b: (a == b).all(), init_params(cfg, np.int64(3)),
                                   init_params(cfg, 3)))


def test_swiglu_hidden_must_be_even():
  with pytest.raises(ValueError, match="must be even"):
    ViTConfig(name="x", mlp_type="swiglu", mlp_hidden=7)
  assert ViTConfig(name="x", mlp_type="swiglu", mlp_hidden=6).mlp_hidden == 6


@pytest.mark.parametrize("changes, message", [
    (dict(input_size=0), r"preprocessing.input_size must be a positive integer, got 0"),
    # True == 1 passed `channels in (1, 3)`: it then failed as "mean has 3 values".
    (dict(channels=True), r"preprocessing.channels must be 1 or 3, got True"),
    (dict(mean=(1.5, 0.5, 0.5)), r"preprocessing.mean \(1.5, 0.5, 0.5\) is in 0-255 pixel "
                                 r"units; pixels are scaled to \[0, 1\] first"),
    (dict(interpolation="cubic"), r"preprocessing.interpolation 'cubic' is unknown; expected "
                                  r"one of bicubic, bilinear, nearest, lanczos, box, hamming"),
])
def test_impossible_preprocessing_is_refused(changes, message):
  with pytest.raises(ValueError, match=f"^{message}"):
    Preprocessing(**changes)


def test_preprocessing_bounds_are_inclusive_where_timm_allows():
  """A mean or std of exactly 1 is in [0, 1] pixel units; one value serves every channel."""
  prep = Preprocessing(mean=(1.0,), std=(1.0, 1.0, 1.0), input_size=1)
  assert (prep.mean, prep.std, prep.input_size) == ((1.0,), (1.0, 1.0, 1.0), 1)


def test_check_path_takes_a_non_empty_str_or_path_like():
  import pathlib  # pylint: disable=g-import-not-at-top

  class BytesPath:
    def __fspath__(self):
      return b"/tmp/x"

  assert check_path("--out", pathlib.Path("a") / "b") == os.path.join("a", "b")
  with pytest.raises(ValueError, match="^--out is empty$"):
    check_path("--out", "")
  with pytest.raises(TypeError, match=r"^--out must be a path as str, got bytes b'/tmp/x'$"):
    check_path("--out", BytesPath())
  with pytest.raises(TypeError, match=r"^--out must be a path \(str or os.PathLike\), got "
                                      r"NoneType None$"):
    check_path("--out", None)


def test_config_to_dict_writes_lists_and_config_from_dict_reads_it_back():
  cfg = get_config("vit_digits")
  d = config_to_dict(cfg)
  assert d["preprocessing"]["mean"] == [0.5, 0.5, 0.5] == d["preprocessing"]["std"]
  assert config_from_dict(d) == cfg
  with pytest.raises(ValueError, match=r"^config is missing fields \['depth'\]$"):
    config_from_dict({k: v for k, v in d.items() if k != "depth"})
  bad = dict(d, preprocessing=dict(d["preprocessing"], resize="shorter"))   # (a TypeError)
  with pytest.raises(ValueError, match=r"^invalid preprocessing of vit_digits: .*unexpected "
                                       r"keyword argument 'resize'"):
    config_from_dict(bad)


def test_config_differences_names_nested_fields_by_path_and_configs_shown_their_values():
  d = config_to_dict(get_config("vit_digits"))
  assert config_differences(d, d) == []
  other = dict(d, depth=d["depth"] + 1, name="x",
               preprocessing=dict(d["preprocessing"], crop_pct=0.5))
  assert config_differences(d, other) == ["depth", "name", "preprocessing.crop_pct"]
  assert config_differences(other, d) == ["depth", "name", "preprocessing.crop_pct"]
  assert config_field(other, "preprocessing.crop_pct") == 0.5
  assert config_field(d, "depth") == d["depth"]
  # a field only one side has differs, and reads None on the other (an older record)
  assert config_differences({"depth": 2}, {"depth": 2, "extra": 1}) == ["extra"]
  assert config_field({"depth": 2}, "extra") is None
  assert config_field({"depth": 2}, "depth.x") is None
  # a nested dict against a non-dict is one difference, named by its own key
  assert config_differences({"p": {"a": 1}}, {"p": None}) == ["p"]
  assert configs_shown("a", d, "b", other) == (
      f"a (depth {d['depth']}, name 'vit_digits', preprocessing.crop_pct "
      f"{d['preprocessing']['crop_pct']!r})", f"b (depth {d['depth'] + 1}, name 'x', "
      "preprocessing.crop_pct 0.5)")
  assert configs_shown("a", d, "b", other, ["depth"]) == (f"a (depth {d['depth']})",
                                                         f"b (depth {d['depth'] + 1})")


def test_the_config_defaults_are_timms_deit_base_and_list_models_is_sorted():
  """A ViTConfig or Preprocessing built with the defaults is timm's deit_base_patch16_224, the
  registry entry the fixture checks (a mutation audit: the defaults were pinned nowhere, so a
  default mean in BGR order or timm's generic crop_pct 0.875 went unseen)."""
  assert ViTConfig(name="deit_base_patch16_224") == get_config("deit_base_patch16_224")
  want = TIMM["deit_base_patch16_224"]["default_pretrained_cfg"]
  prep = Preprocessing()
  assert (prep.input_size, prep.mean, prep.std, prep.crop_pct, prep.interpolation,
          prep.channels) == (want["input_size"][1], tuple(want["mean"]), tuple(want["std"]),
                             want["crop_pct"], want["interpolation"], want["input_size"][0])
  assert list_models() == sorted(REGISTRY)


def test_the_embedded_default_is_configured_as_its_weights_and_the_digits():
  """The registry's vit_digits is what the bundled weights were trained as, and it preprocesses
  as `digits_preprocessing` (a mutation audit: its interpolation could differ unseen)."""
  from vitprune import checkpoint, digits  # pylint: disable=g-import-not-at-top
  weights = os.path.join(os.path.dirname(os.path.dirname(__file__)), "weights", "vit_digits")
  cfg = get_config("vit_digits")
  assert checkpoint.read_weights_config(weights)[0] == cfg
  assert cfg.preprocessing == digits.digits_preprocessing(cfg.img_size)


def test_a_bool_norm_eps_is_refused():
  """True is a number > 0 to Python: it ran as an epsilon of 1 (a mutation audit)."""
  with pytest.raises(ValueError, match=r"^x: norm_eps must be a finite number > 0, got True$"):
    ViTConfig(name="x", norm_eps=True)
