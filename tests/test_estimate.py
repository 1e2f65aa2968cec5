"""Tests of vitprune.estimate: streaming accuracy/fidelity, sharding, estimate files."""
import copy
import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from vitprune import estimate
from vitprune.records import estimate as record_lib
from vitprune.model import init_params, jitted_forward
from vitprune.registry import get_config
from vitprune.reduce import KeepFirst, RandomDrop
from vitprune.schedule import Schedule, embed_schedule, full_schedule, layer_schedule

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = get_config("test_tiny_vit")  # 16 patches + cls = 17 tokens, depth 2, 10 classes


@pytest.fixture(scope="module")
def params():
  return init_params(CFG, seed=1)


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(0).normal(size=(7, 32, 32, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def labels(params, images):
  """Labels equal to the unpruned prediction on even rows, wrong on odd rows: accuracy 4/7."""
  pred = np.asarray(jitted_forward(params, jnp.asarray(images), cfg=CFG)).argmax(-1)
  return np.where(np.arange(7) % 2 == 0, pred, (pred + 1) % 10).astype(np.int32)


def batches_of(images, labels, batch_size):
  """Fixed-shape batches, the last one padded (index -1, label -1, zero image)."""
  out = []
  for s in range(0, len(images), batch_size):
    x, y = images[s:s + batch_size], labels[s:s + batch_size]
    idx = np.arange(s, s + len(x))
    pad = batch_size - len(x)
    out.append((np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]),
                np.concatenate([y, np.full(pad, -1, np.int32)]),
                np.concatenate([idx, np.full(pad, -1)])))
  return out


def points():
  return estimate.token_points(CFG, [5, 11, 17], KeepFirst(), layer=None) + \
      estimate.token_points(CFG, [9], KeepFirst(), layer=1)


# ---------------------------------------------------------------------------------- schedules


def test_schedules_of_points():
  assert embed_schedule(CFG, 9).counts == (9, 9, 9)
  assert layer_schedule(CFG, 9, 0).counts == (17, 9, 9)
  assert layer_schedule(CFG, 9, 1).counts == (17, 17, 9)
  pts = estimate.sensitivity_points(CFG, [17, 3], [None, 1], KeepFirst())
  assert [(p.layer, p.tokens, p.schedule.counts) for p in pts] == [
      (None, 3, (3, 3, 3)), (None, 17, (17, 17, 17)), (1, 3, (17, 17, 3)), (1, 17, (17, 17, 17))]


@pytest.mark.parametrize("tokens, match", [
    ([], "empty"), ([1], r"outside \[2, 17\]"), ([18], r"outside \[2, 17\]"),
    ([5, 5], "duplicates"), ([5.0], "must be ints")])
def test_bad_token_grid(tokens, match):
  with pytest.raises(ValueError, match=match):
    estimate.token_points(CFG, tokens, KeepFirst())


@pytest.mark.parametrize("layer", [-1, 2, "1"])
def test_bad_layer(layer):
  with pytest.raises(ValueError, match=r"reduction layer must be an int in \[0, 1\]"):
    layer_schedule(CFG, 9, layer)


def test_bad_layers_list():
  with pytest.raises(ValueError, match="duplicates"):
    estimate.sensitivity_points(CFG, [9], [1, 1], KeepFirst())
  with pytest.raises(ValueError, match="no layers"):
    estimate.sensitivity_points(CFG, [9], [], KeepFirst())


# ---------------------------------------------------------------------------------- evaluation


def test_unpruned_self_fidelity_is_exact(params, images, labels):
  pts = [estimate.EvalPoint(full_schedule(CFG), None, 17, None),
         estimate.token_points(CFG, [17], KeepFirst(), layer=0)[0]]
  res = estimate.evaluate(CFG, params, batches_of(images, labels, 4), pts, labelled=True)
  assert res.reference == estimate.PointResult(7, 4, 7, 0.0)
  for r in res.points:
    assert r.agreement == 1.0 and r.kl == 0.0 and r.accuracy == 4 / 7
  assert res.batch_size == 4 and res.num_devices == 1


def test_matches_direct_computation(params, images, labels):
  res = estimate.evaluate(CFG, params, batches_of(images, labels, 4), points(), labelled=True)
  ref = np.asarray(jitted_forward(params, jnp.asarray(images), cfg=CFG), np.float64)
  for p, r in zip(points(), res.points):
    out = np.asarray(jitted_forward(params, jnp.asarray(images), cfg=CFG, schedule=p.schedule,
                                    reducer=p.reducer), np.float64)
    lp = out - np.log(np.exp(out).sum(-1, keepdims=True))
    lq = ref - np.log(np.exp(ref).sum(-1, keepdims=True))
    assert r.num_examples == 7
    assert r.correct == int((out.argmax(-1) == labels).sum())
    assert r.agree == int((out.argmax(-1) == ref.argmax(-1)).sum())
    np.testing.assert_allclose(r.kl, (np.exp(lq) * (lq - lp)).sum(-1).mean(), rtol=1e-4,
                               atol=1e-7)
  # 5 of 17 tokens is a real change: the KL is positive.
  assert res.points[0].kl > 0


@pytest.mark.parametrize("batch_size", [3, 4])
def test_padded_batches_equal_image_by_image(params, images, labels, batch_size):
  one = estimate.evaluate(CFG, params, batches_of(images, labels, 1), points(), labelled=True)
  padded = estimate.evaluate(CFG, params, batches_of(images, labels, batch_size), points(),
                             labelled=True)
  assert padded.reference == one.reference
  for a, b in zip(padded.points, one.points):
    assert (a.num_examples, a.correct, a.agree) == (b.num_examples, b.correct, b.agree)
    np.testing.assert_allclose(a.kl_sum, b.kl_sum, rtol=1e-5, atol=1e-9)


def test_padding_rows_are_ignored(params, images, labels):
  """Garbage in padding rows (index -1) changes nothing."""
  clean = batches_of(images, labels, 4)
  dirty = [(x.copy(), y.copy(), i) for x, y, i in clean]
  dirty[-1][0][-1] = 100.0
  dirty[-1][1][-1] = 3
  a = estimate.evaluate(CFG, params, clean, points(), labelled=True)
  b = estimate.evaluate(CFG, params, dirty, points(), labelled=True)
  assert a == b


def test_top1_margins_by_hand():
  logits = np.array([[1.0, 3.0, 2.0], [0.0, 0.0, 5.0], [2.0, 2.0, 0.0], [2.0, 2.0, 0.0]])
  m = estimate.top1_margins(logits, np.array([1, 0, 1, 0]))
  # Ties go where argmax puts them: class 1 tied with class 0 loses (margin 0), class 0 tied
  # with class 1 wins (the smallest positive margin).
  np.testing.assert_array_equal(m, [1.0, -5.0, 0.0, np.nextafter(0.0, 1.0)])
  assert ((m > 0) == (logits.argmax(-1) == [1, 0, 1, 0])).all()


def test_margins_are_each_examples_top1_margin(params, images, labels):
  """`margins=True` keeps, in data order, every example's margin against its label (> 0 exactly
  where it is correct); unlabelled, against the unpruned model's class (> 0 where it agrees)."""
  pts = points()
  res = estimate.evaluate(CFG, params, batches_of(images, labels, 4), pts, labelled=True,
                          margins=True)
  assert res.margins.shape == (1 + len(pts), 7)
  ref = np.asarray(jitted_forward(params, jnp.asarray(images), cfg=CFG))
  np.testing.assert_allclose(res.margins[0], estimate.top1_margins(ref, labels), atol=1e-4)
  for i, p in enumerate(pts):
    out = np.asarray(jitted_forward(params, jnp.asarray(images), cfg=CFG, schedule=p.schedule,
                                    reducer=p.reducer))
    np.testing.assert_allclose(res.margins[1 + i], estimate.top1_margins(out, labels), atol=1e-4)
  for r, m in zip((res.reference,) + res.points, res.margins):
    assert int((m > 0).sum()) == r.correct
  unl = estimate.evaluate(CFG, params, batches_of(images, np.full(7, -1, np.int32), 3), pts,
                          labelled=False, margins=True)
  assert np.all(unl.margins[0] > 0)
  assert [int((m > 0).sum()) for m in unl.margins[1:]] == [r.agree for r in unl.points]
  assert estimate.evaluate(CFG, params, batches_of(images, labels, 4), pts,
                           labelled=True).margins is None


def test_unlabelled_gives_fidelity_only(params, images):
  unl = np.full(7, -1, np.int32)
  res = estimate.evaluate(CFG, params, batches_of(images, unl, 4), points(), labelled=False)
  assert res.reference.accuracy is None and res.reference.agreement == 1.0
  assert all(r.accuracy is None and r.correct is None for r in res.points)


def test_evaluate_errors(params, images, labels):
  good = batches_of(images, labels, 4)
  with pytest.raises(ValueError, match="same \\(padded\\) size"):
    estimate.evaluate(CFG, params, good[:1] + batches_of(images, labels, 3), points(),
                      labelled=True)
  with pytest.raises(ValueError, match="labelled=False"):
    estimate.evaluate(CFG, params, batches_of(images, np.full(7, -1, np.int32), 4), points(),
                      labelled=True)
  with pytest.raises(ValueError, match="has 10 classes"):
    estimate.evaluate(CFG, params, batches_of(images, labels + 10, 4), points(), labelled=True)
  edge = np.asarray(labels).copy()
  edge[0] = 10                               # one past the last class: refused, not scored
  with pytest.raises(ValueError, match=r"labels up to 10 but \S+ has 10 classes"):
    estimate.evaluate(CFG, params, batches_of(images, edge, 4), points(), labelled=True)
  edge[0] = 9                                # the last class: scored
  estimate.evaluate(CFG, params, batches_of(images, edge, 4), points(), labelled=True)
  with pytest.raises(ValueError, match="no examples"):
    estimate.evaluate(CFG, params, [], points(), labelled=True)
  pad_only = [(np.zeros((4, 32, 32, 3), np.float32), np.full(4, -1, np.int32), np.full(4, -1))]
  with pytest.raises(ValueError, match="no examples"):
    estimate.evaluate(CFG, params, pad_only, points(), labelled=True)
  with pytest.raises(ValueError, match="no reducer"):
    estimate.evaluate(CFG, params, good, [estimate.EvalPoint(Schedule((9, 9, 9)), None, 9,
                                                             None)], labelled=True)
  for name in ("labelled", "shard", "whole_graphs", "margins", "agreement_margins"):
    kw = {"labelled": True, name: "no"}       # ('no' is truthy: labelled='no' labelled)
    with pytest.raises(TypeError, match=f"^{name} must be True or False, got 'no'$"):
      estimate.evaluate(CFG, params, good, points(), **kw)
  # Margins against target -1 (unlabelled) indexed the last class and counted as right.
  logits = np.array([[0.0, 1.0], [1.0, 0.0]])
  for target in ([0, -1], [0, 2], [0.0, 1.0], [0]):
    with pytest.raises(ValueError, match=r"top1_margins needs \[B, K\] logits and \[B\] target"):
      estimate.top1_margins(logits, np.array(target))
  assert (estimate.top1_margins(logits, np.array([1, 0])) > 0).all()
  # A schedule of None reduces nothing (it was said to reduce tokens without a reducer).
  res = estimate.evaluate(CFG, params, good, [estimate.EvalPoint(None, None, 17, None)],
                          labelled=True)
  assert res.points[0] == res.reference
  for labelled in (True, False):     # every image may be asked for, one more may not
    assert len(estimate.subset_indices(labels, labelled, len(labels), 0)) == len(labels)
    with pytest.raises(ValueError, match=f"num_images={len(labels) + 1} exceeds the "
                       f"{len(labels)} images available"):
      estimate.subset_indices(labels, labelled, len(labels) + 1, 0)
  for seed in (-1, 1.5, True):      # (numpy's "expected non-negative integer")
    with pytest.raises(ValueError, match=f"^seed must be an int >= 0, got {seed!r}$"):
      estimate.subset_indices(labels, True, 3, seed)
    with pytest.raises(ValueError, match=f"^seed must be an int >= 0, got {seed!r}$"):
      estimate.subset_indices(labels, False, 3, seed)
  with pytest.raises(ValueError, match="labels"):
    estimate.evaluate(CFG, params, [(images[:4], labels[:3], np.arange(4))], points(),
                      labelled=True)
  feat_cfg = CFG.replace(num_classes=0)
  with pytest.raises(ValueError, match="num_classes=0"):
    estimate.evaluate(feat_cfg, init_params(feat_cfg), good, [], labelled=True)


def _run_on_cpu_devices(script: str, devices: int, timeout: float):
  """Runs `script` in a subprocess with `devices` forced CPU devices -> the JSON of its last
  line (its exit code must be 0)."""
  xla_flags = (os.environ.get("XLA_FLAGS", "")
               + f" --xla_force_host_platform_device_count={devices}")
  env = dict(os.environ, XLA_FLAGS=xla_flags.strip(), JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        env=env, cwd=REPO, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sharded_equals_unsharded(tmp_path):
  """4 forced CPU devices in a subprocess: data-parallel estimates equal single-device ones."""
  script = textwrap.dedent("""
    import dataclasses, json, sys
    import jax, numpy as np
    sys.path.insert(0, %r)
    from tests.test_estimate import CFG, KeepFirst, batches_of, points
    from vitprune import estimate
    from vitprune.model import init_params
    from vitprune.reduce.methods import make_reducer
    from vitprune.schedule import Schedule
    assert jax.device_count() == 4, jax.devices()
    params = init_params(CFG, seed=1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(13, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, 13).astype(np.int32)
    pts = points() + estimate.token_points(CFG, [3, 9], make_reducer("random", seed=2))
    pts += estimate.sensitivity_points(CFG, [9, 13], [0, 1], make_reducer("tome"))
    pts += [estimate.EvalPoint(Schedule((17, 13, 9)), make_reducer("topk"), 9, 0)]
    out = {}
    for shard in (True, False):
      r = estimate.evaluate(CFG, params, batches_of(x, y, 8), pts, labelled=True, shard=shard)
      out[str(shard)] = dict(ndev=r.num_devices, ref=dataclasses.astuple(r.reference),
                             pts=[dataclasses.astuple(p) for p in r.points])
    try:
      estimate.evaluate(CFG, params, batches_of(x, y, 6), pts, labelled=True)
    except ValueError as e:
      out["error"] = str(e)
    print(json.dumps(out))
  """ % REPO)
  out = _run_on_cpu_devices(script, 4, timeout=300)
  assert out["True"]["ndev"] == 4 and out["False"]["ndev"] == 1
  assert out["True"]["ref"] == out["False"]["ref"]
  for a, b in zip(out["True"]["pts"], out["False"]["pts"]):
    assert a[:3] == b[:3]  # examples, correct, agreements: exactly equal
    np.testing.assert_allclose(a[3], b[3], rtol=1e-6, atol=1e-9)
  assert "not divisible by the 4 devices" in out["error"]


# ---------------------------------------------------------------------------------- identity


def test_params_sha256(params):
  h = estimate.params_sha256(params)
  assert len(h) == 64 and h == estimate.params_sha256(params)
  assert h == estimate.params_sha256(jax.tree.map(np.asarray, params))
  reordered = dict(reversed(list(params.items())))
  assert estimate.params_sha256(reordered) == h
  changed = jax.tree.map(lambda a: a, params)
  changed["head"] = dict(changed["head"], bias=changed["head"]["bias"].at[3].add(1e-6))
  assert estimate.params_sha256(changed) != h
  assert estimate.params_sha256(init_params(CFG, seed=2)) != h


# ---------------------------------------------------------------------------------- files


@pytest.fixture(scope="module")
def doc(params, images, labels):
  pts = estimate.sensitivity_points(CFG, [5, 17], [None, 0, 1], RandomDrop(seed=0))
  res = estimate.evaluate(CFG, params, batches_of(images, labels, 4), pts, labelled=True)
  info = {"kind": "arrays", "source": "synthetic", "num_examples": 7, "classes": [],
          "labelled": True, "fingerprint": "f" * 64}
  return estimate.estimate_record(cfg=CFG, params=params, weights_source="init", data_info=info,
                                  method="random", method_kwargs={"seed": 0}, seed=0, points=pts,
                                  result=res, labelled=True), res


def test_record_names_the_reducer_its_points_ran(params, images, labels):
  """estimate_record wrote whatever method it was given: random-drop accuracies recorded as
  ToMe's (the solver then applied ToMe's limits, deploy ToMe's graphs), or seed 5's for seed 0."""
  pts = estimate.token_points(CFG, [9, 17], RandomDrop(seed=0), layer=1)
  res = estimate.evaluate(CFG, params, batches_of(images, labels, 4), pts, labelled=True)
  info = {"kind": "arrays", "source": "synthetic", "num_examples": 7, "classes": [],
          "labelled": True, "fingerprint": "f" * 64}
  record = lambda method, kwargs: estimate.estimate_record(
      cfg=CFG, params=params, weights_source="init", data_info=info, method=method,
      method_kwargs=kwargs, seed=0, points=pts, result=res, labelled=True)
  # Every option is recorded, defaults too (the default seed is seed 0; random drop's `nested`
  # default changed once, and a record saying nothing then meant the new default).
  assert record("random", {}).method_kwargs == {"seed": 0, "nested": True}
  one = record("random", {"seed": 0})        # one layer: an A(n) curve; several: a table
  assert (one.kind, one.layers, one.dtype, one.precision) == ("tokens", (1,), "float32",
                                                              "highest")
  assert one.to_json()["eval"]["precision"] == "highest"
  with pytest.raises(ValueError, match=r"^the points ran RandomDrop\(seed=0, nested=True\), not "
                     r"method "
                     r"'tome' with options \{\} \(ToMe\(\)\): the record would name another"):
    record("tome", {})
  with pytest.raises(ValueError, match=r"not method 'random' with options \{'seed': 5\}"):
    record("random", {"seed": 5})
  with pytest.raises(ValueError, match="unknown token-reduction method 'nosuch'"):
    record("nosuch", {})
  with pytest.raises(TypeError, match="seed must be an int, got 2.7"):   # (recorded as 2)
    estimate.estimate_record(cfg=CFG, params=params, weights_source="init", data_info=info,
                             method="random", method_kwargs={}, seed=2.7, points=pts,
                             result=res, labelled=True)
  with pytest.raises(TypeError, match="weights_source must be a string naming the weights, "
                                      "got None"):     # (recorded as the text 'None')
    estimate.estimate_record(cfg=CFG, params=params, weights_source=None, data_info=info,
                             method="random", method_kwargs={}, seed=0, points=pts,
                             result=res, labelled=True)
  for what, bad in (("data_info", None), ("method_kwargs", None), ("method_kwargs", "seed=0")):
    kwargs = {"data_info": info, "method_kwargs": {}}
    kwargs[what] = bad             # (None was "'NoneType' object is not iterable")
    with pytest.raises(TypeError, match=f"^{what} must be a dict "):
      estimate.estimate_record(cfg=CFG, params=params, weights_source="init", method="random",
                               seed=0, points=pts, result=res, labelled=True, **kwargs)
  other = init_params(get_config("test_tiny_distilled"), 0)    # (its digest was recorded as
  with pytest.raises(ValueError, match=r"^parameters do not match test_tiny_vit:"):  # CFG's)
    estimate.estimate_record(cfg=CFG, params=other, weights_source="init", data_info=info,
                             method="random", method_kwargs={}, seed=0, points=pts,
                             result=res, labelled=True)


def test_the_table_header_counts_one_image_in_the_singular(params, images, labels):
  """`estimate --num_images=1` headed its table 'vit_digits  method=...  1 images'."""
  pts = estimate.token_points(CFG, [9, 17], RandomDrop(seed=0), layer=1)
  res = estimate.evaluate(CFG, params, batches_of(images[:1], labels[:1], 1), pts,
                          labelled=True)
  info = {"kind": "arrays", "source": "synthetic", "num_examples": 1, "classes": [],
          "labelled": True, "fingerprint": "f" * 64}
  rec = estimate.estimate_record(cfg=CFG, params=params, weights_source="init", data_info=info,
                                 method="random", method_kwargs={}, seed=0, points=pts,
                                 result=res, labelled=True)
  assert record_lib.table_text(rec).splitlines()[0].endswith("  1 image  labelled=True")


def test_version1_records_ran_random_drop_per_layer(params, images, labels):
  """Version 1 predates random drop's `nested` option: its random drop drew each layer's own
  subset, so a reducer rebuilt from such a record must too (the default now nests), and the
  record writes back as read (a solution's digest of it still matches)."""
  pts = estimate.token_points(CFG, [9, 17], RandomDrop(seed=3), layer=1)
  res = estimate.evaluate(CFG, params, batches_of(images, labels, 4), pts, labelled=True)
  info = {"kind": "arrays", "source": "synthetic", "num_examples": 7, "classes": [],
          "labelled": True, "fingerprint": "f" * 64}
  new = estimate.estimate_record(cfg=CFG, params=params, weights_source="init", data_info=info,
                                 method="random", method_kwargs={"seed": 3}, seed=3, points=pts,
                                 result=res, labelled=True)
  doc = new.to_json()
  assert doc["version"] == 2 and new.reducer_kwargs == {"seed": 3, "nested": True}
  # (the record keeps its seed and batch: a mutation audit, every fixture recorded seed 0)
  assert new.seed == 3 and new.eval_batch_size == 4 and new.num_devices == res.num_devices
  old_doc = copy.deepcopy(dict(doc, version=1))
  del old_doc["method"]["kwargs"]["nested"]       # (version 1 had no such option)
  old = record_lib.Estimate.from_json(copy.deepcopy(old_doc), "old.json")
  assert old.version == 1 and old.method_kwargs == {"seed": 3}
  assert old.reducer_kwargs == {"seed": 3, "nested": False}
  assert estimate.make_reducer(old.method, **old.reducer_kwargs).layer_dependent
  assert "method=random(nested=false,seed=3)  7 images" in record_lib.table_text(old)
  assert "method=random(nested=true,seed=3)  7 images" in record_lib.table_text(new)
  assert old.to_json() == old_doc and old.sha256() == record_lib.jsonio.canonical_sha256(old_doc)
  said = copy.deepcopy(old_doc)                 # (an option a file states is kept)
  said["method"]["kwargs"]["nested"] = True
  assert record_lib.Estimate.from_json(said).reducer_kwargs == {"seed": 3, "nested": True}
  other = copy.deepcopy(old_doc)                # other methods have no such option
  other["method"] = {"name": "pomt", "kwargs": {}}
  assert record_lib.Estimate.from_json(other).reducer_kwargs == {}
  with pytest.raises(record_lib.EstimateError,
                     match=r"^x: unsupported version 3 \(this vitprune reads 1, 2\)$"):
    record_lib.Estimate.from_json(dict(doc, version=3), "x")


def test_numpy_numbers_in_a_record_are_written_as_plain_json(params, images, labels, tmp_path):
  """An np.int64 layer (token_points accepts one), an np.int64 count in the data info or an
  np.bool_ option gave json's raw TypeError after the whole evaluation."""
  pts = estimate.token_points(CFG, [9, 17], estimate.make_reducer("evit", normalize=np.True_),
                              layer=np.int64(1))
  res = estimate.evaluate(CFG, params, batches_of(images, labels, 4), pts, labelled=True)
  info = {"kind": "arrays", "source": "synthetic", "num_examples": np.int64(7), "classes": [],
          "labelled": True, "fingerprint": "f" * 64}
  rec = estimate.estimate_record(cfg=CFG, params=params, weights_source="init",
                                 data_info=info, method="evit",
                                 method_kwargs={"normalize": np.True_}, seed=0, points=pts,
                                 result=res, labelled=True)
  back = record_lib.read_estimate(record_lib.write_estimate(str(tmp_path / "e.json"), rec))
  assert back == rec and back.layers == (1,) and type(back.layers[0]) is int
  assert back.method_kwargs == {"normalize": True}


def test_non_finite_logits_are_an_error_not_class_0(params, images, labels):
  """NaN logits (a NaN in the parameters or preprocessed images) were read by argmax as class
  0: an accuracy of the label-0 images, an agreement of 1.0 that passed any floor."""
  bad = jax.tree.map(lambda a: a, params)
  bad["head"] = dict(bad["head"], bias=bad["head"]["bias"].at[3].set(jnp.nan))
  pts = estimate.token_points(CFG, [9], RandomDrop(seed=0), layer=1)
  with pytest.raises(FloatingPointError, match=r"^the unpruned model gave NaN/inf logits for 4 "
                     r"of 4 images of a batch \(first: example 0\): NaN/inf in the parameters"):
    estimate.evaluate(CFG, bad, batches_of(images, labels, 4), pts, labelled=True)
  x = images.copy()
  x[5, 0, 0, 0] = np.inf                 # one image: only its row; the padding row is ignored
  with pytest.raises(FloatingPointError, match=r"for 1 of 3 images of a batch \(first: "
                     r"example 5\)"):
    estimate.evaluate(CFG, params, batches_of(x, labels, 4), pts, labelled=True)
  # NaN made by a reduction (the unpruned logits are finite): the reducer is named, not the
  # parameters or preprocessing.
  nan_reducer = dataclasses.replace(RandomDrop(seed=0))
  object.__setattr__(nan_reducer, "reduce", lambda x, size, stats, **kw: (
      RandomDrop.reduce(nan_reducer, x, size, stats, **kw)[0] * jnp.nan, size))
  with pytest.raises(FloatingPointError, match=r"^schedule \(17, 17, 9\) gave NaN/inf logits "
                     r".*the unpruned model's are finite, so the reduction made them "
                     r"\(RandomDrop\)$"):
    estimate.evaluate(CFG, params, batches_of(images, labels, 4),
                      estimate.token_points(CFG, [9], nan_reducer, layer=1), labelled=True)


def test_record_structure(doc):
  rec, res = doc
  d = rec.to_json()
  assert d["kind"] == "sensitivity" and d["layers"] == [None, 0, 1] and d["tokens"] == [5, 17]
  assert d["metrics"] == ["accuracy", "agreement", "kl"]
  assert d["reference"]["accuracy"] == 4 / 7 and d["reference"]["kl"] == 0.0
  layers, tokens, table = rec.table()
  assert layers == [None, 0, 1] and tokens.tolist() == [5, 17] and table.shape == (3, 2)
  assert table[:, 1].tolist() == [4 / 7] * 3  # n = N reduces nothing
  np.testing.assert_array_equal(table.ravel(), [r.accuracy for r in res.points])
  ns, kl = rec.curve("kl", layer=0)
  assert ns.tolist() == [5, 17] and kl[1] == 0.0 and kl[0] == res.points[2].kl
  with pytest.raises(ValueError, match="pass layer="):
    rec.curve()
  with pytest.raises(ValueError, match="not in this estimate's layers"):
    rec.curve(layer=5)
  with pytest.raises(ValueError, match="metric 'top5'"):
    rec.curve("top5", layer=0)


def test_round_trip_and_atomic_write(doc, tmp_path):
  rec, _ = doc
  path = record_lib.write_estimate(str(tmp_path / "sub" / "e.json"), rec)
  assert record_lib.read_estimate(path) == rec
  assert record_lib.read_estimate(path).to_json() == json.loads(json.dumps(rec.to_json()))
  assert record_lib.read_estimate(path).sha256() == rec.sha256()
  assert os.listdir(tmp_path / "sub") == ["e.json"]
  four = dataclasses.replace(rec, num_devices=4)          # (read back as 1 device: its digest
  path4 = record_lib.write_estimate(str(tmp_path / "e4.json"), four)      # changed unsaid)
  assert record_lib.read_estimate(path4).num_devices == 4
  assert record_lib.read_estimate(path4).sha256() == four.sha256() != rec.sha256()
  with pytest.raises(FileExistsError, match="overwrite"):
    record_lib.write_estimate(path, rec)
  with pytest.raises(record_lib.EstimateError, match="agreement must be a number in"):
    dataclasses.replace(rec, points=(dataclasses.replace(    # refused when built
        rec.points[0], scores=dataclasses.replace(rec.points[0].scores, agreement=2.0)),
        *rec.points[1:]))
  assert record_lib.read_estimate(path) == rec  # untouched
  assert os.listdir(tmp_path / "sub") == ["e.json"]


@pytest.mark.parametrize("edit, match", [
    (lambda r: dict(tokens=r.tokens[::-1]), "tokens"),            # the solver read it as is
    (lambda r: dict(points=r.points[1:]), "points"),              # numpy's reshape error
    (lambda r: dict(layers=tuple(str(l) for l in r.layers)), "layers"),
])
def test_a_record_built_in_python_is_checked_as_a_file_is(doc, edit, match):
  """`Estimate(...)` was never validated: reversed tokens changed the solver's predictions
  without a word (write_estimate would have refused the same record)."""
  rec, _ = doc
  with pytest.raises(record_lib.EstimateError, match=match):
    dataclasses.replace(rec, **edit(rec))


def _mutate(d, fn):
  d = copy.deepcopy(d)
  fn(d)
  return d


@pytest.mark.parametrize("fn, match", [
    (lambda d: d.update(format="x"), "format 'x'"),
    (lambda d: d.update(version=3), "unsupported version 3"),
    (lambda d: d.pop("seed"), "missing key 'seed'"),
    (lambda d: d.update(seed="0"), "'seed' must be int"),
    (lambda d: d.update(kind="curve"), "kind 'curve'"),
    (lambda d: d["model"]["config"].update(depth="x"),
     "model.config is invalid: test_tiny_vit: depth must be a positive integer, got 'x'"),
    (lambda d: d["model"]["config"].update(colour=1), "model.config is invalid"),
    (lambda d: d["model"].update(name="other"), "model.name 'other'"),
    (lambda d: d["weights"].update(sha256="abc"), "weights.sha256"),
    (lambda d: d["data"].pop("fingerprint"), "data is missing 'fingerprint'"),
    (lambda d: d.update(metrics=["agreement", "kl"]), "metrics"),
    (lambda d: d.update(tokens=[17, 5]), "ascending"),
    (lambda d: d.update(tokens=[5, 18]), "outside"),
    (lambda d: d.update(layers=[None, 0, 2]), r"layers must be non-empty"),
    (lambda d: d.update(kind="tokens"), "exactly one layer"),
    (lambda d: d["points"].pop(), "5 points for a grid of 3 layers x 2"),
    (lambda d: d["points"][2].update(tokens=6), "expected layer 0 tokens 5"),
    (lambda d: d["points"][2].update(counts=[17, 6, 5]), "do not reduce to 5 tokens at layer 0"),
    (lambda d: d["points"][2].update(counts=[17, 5, 9]), "never increase"),
    (lambda d: d["points"][1].update(tokens=17.0), r"points\[1\]: expected layer None tokens 17"),
    (lambda d: d["points"][4].update(layer=True), r"points\[4\]: expected layer 1 tokens 5"),
    (lambda d: d["points"][1].update(accuracy=1.5), "accuracy must be a number in"),
    (lambda d: d["points"][1].update(accuracy=None), "accuracy must be a number in"),
    (lambda d: d["points"][1].update(kl=-0.1), "kl must be a finite number >= 0"),
    (lambda d: d["points"][1].update(kl=float("nan")), "kl must be a finite number"),
    (lambda d: d["points"][1].update(num_examples=6), "num_examples 6"),
    (lambda d: d["reference"].update(num_examples="7"), "reference: num_examples must be an "
     "integer, got '7'"),     # (said "num_examples 7 != data.num_examples 7")
    (lambda d: d["points"][0].update(num_examples=7.0), r"points\[0\]: num_examples must be an "
     "integer, got 7.0"),
    (lambda d: d["reference"].update(agreement=6 / 7), "agree with itself"),
        (lambda d: d["points"][1].update(accuracy=0.5), "points\\[1\\]: accuracy 0.5 is not a "
         "count of 7 images \\(k / 7\\)"),
        (lambda d: d["points"][0].update(agreement=0.9), "points\\[0\\]: agreement 0.9 is not a "
         "count of 7 images"),
    (lambda d: d["eval"].update(batch_size=0), "eval.batch_size"),
    (lambda d: d["eval"].update(num_devices=[1]), r"eval.num_devices must be a positive int, "
     r"got \[1\]"),
    (lambda d: d["eval"].update(num_devices="x"), "eval.num_devices must be a positive int"),
    (lambda d: d["eval"].update(dtype=32), "eval.dtype must be a string, got 32"),
    (lambda d: d["eval"].update(dtype="float16"), r"eval.dtype must be one of \['float32', "
     r"'bfloat16'\], got 'float16'"),
    (lambda d: d["eval"].update(precision="bogus"), r"eval.precision must be one of "    # probe
     r"\['highest', 'high', 'default'\], got 'bogus'"),
    (lambda d: d["data"].update(fingerprint=5), "data.fingerprint must be a 64-digit hex "
     "string or null, got 5"),
    (lambda d: d["data"].update(fingerprint="zz"), "data.fingerprint must be a 64-digit hex"),
    (lambda d: d["data"].update(content_sha256=None), "data.content_sha256 must be a 64-digit "
     "hex string, got None"),
    (lambda d: d["data"].update(source=""), "data.source must be a non-empty string, got ''"),
    (lambda d: d["data"].update(classes=["a", "a"]), "data.classes must be a list of distinct"),
    # (from a mutation audit: each of these loaded without its check)
    (lambda d: d["data"].update(classes=[0, 1]), r"data.classes must be a list of distinct "
     r"class names, got \[0, 1\]$"),
    (lambda d: d["data"].update(labelled=1), r"data.labelled must be true or false$"),
    (lambda d: d["method"].update(kwargs=[]), r"method.kwargs must be an object$"),
    (lambda d: d["data"].update(kind=""), r"data.kind must be a non-empty string, got ''$"),
    (lambda d: d.update(metrics=["kl", "agreement", "accuracy"]), r"metrics \['kl', "
     r"'agreement', 'accuracy'\] != \['accuracy', 'agreement', 'kl'\] for labelled=True$"),
    (lambda d: d.update(tokens=[5, 17.0]), r"tokens must be a non-empty list of ints: "
     r"\[5, 17.0\]$"),
    (lambda d: d["data"].update(selection="all"), "data.selection must be an object, got .all."),
    (lambda d: d["data"].update(selection={"split": "Train"}), r"data.selection.split must be "
     r"one of \['train', 'test', 'all'\], got 'Train'"),   # (solve's held-out check reads it)
    (lambda d: d["weights"].update(source=None), "weights.source must be a string, got None"),
    (lambda d: d.update(seed=2 ** 40), r"seed must be in \[0, 2\*\*32\) as the command lines "
     "take it, got 1099511627776"),
    (lambda d: d.update(seed=-1), r"seed must be in \[0, 2\*\*32\)"),
    (lambda d: d.update(seed=2 ** 32), r"seed must be in \[0, 2\*\*32\) as the command lines "
     "take it, got 4294967296"),                       # (the end itself: mutation audit)
    (lambda d: d["reference"].update(schedule="keep@0:5"), "reference.schedule 'keep@0:5' is "
     "not the unpruned schedule's"),
    (lambda d: d["reference"].update(counts=[17, 9, 9]), r"reference.counts \[17, 9, 9\] is not "
     r"the unpruned schedule of test_tiny_vit \(depth 2\): \[17, 17, 17\] \(edited\?\)$"),
    (lambda d: d["model"]["config"].update(depth=3), r"reference.counts \[17, 17, 17\] is not the "
     r"unpruned schedule of test_tiny_vit \(depth 3\): \[17, 17, 17, 17\] \(edited\?\)$"),
    (lambda d: d["points"][2].update(schedule="keep@0:9"), r"points\[2\]: schedule 'keep@0:9' "
     r"is counts \[17, 9, 9\], not the counts \[17, 5, 5\] recorded with it"),
    (lambda d: d["points"][2].update(schedule="pomt"), r"points\[2\]: schedule 'pomt': cannot "
     "parse 'pomt'"),
    (lambda d: d["points"][1].update(accuracy=1 / 7), "points\\[1\\]: 17 tokens is the "
     "unpruned model, but its accuracy 0.142857"),
    (lambda d: d["points"][3].update(agreement=5 / 7), "points\\[3\\]: 17 tokens is the unpruned"),
    (lambda d: d["method"].update(name="pmot"), "method.name 'pmot' is not a token-reduction "
     "method \\(evit, pomt, random, tome, topk\\)"),
    (lambda d: d["method"].update(name=3), "method.name 3 is not a token-reduction method"),
    (lambda d: d["method"].update(kwargs={"sigma": 1}), r"method.kwargs: method 'random' "
     r"accepts \['nested', 'seed'\], got \['sigma'\]"),
    (lambda d: d["method"].update(kwargs={"seed": "0"}), "method.kwargs: method 'random' option "
     "seed must be int, got '0'"),
    (lambda d: d["method"].update(kwargs={"seed": -5}), "method.kwargs: method 'random' option "
     "seed must be a non-negative int, got -5"),     # (solve wrote it on; deploy refused it)
    (lambda d: d["method"].update(name="pomt"), r"method 'pomt' accepts no options, got "
     r"\['nested', 'seed'\]"),
    (lambda d: d["points"][0].update(agreement=1.0, accuracy=2 / 7), r"points\[0\]: accuracy "
     r"0.2857\d+ differs from the reference's 0.5714\d+ on 2 of 7 images, but agreement 1.0 "
     "leaves only 0 predictions changed"),
    # From a mutation audit (each check's removal passed every test):
    (lambda d: d["reference"].update(kl=0.25), "agree with itself"),
    (lambda d: (d.update(layers=[None, 0, 0]),
                d["points"].__setitem__(slice(4, 6), copy.deepcopy(d["points"][2:4]))),
     r"layers have duplicates: \['embed', 0, 0\]"),
    (lambda d: d["eval"].update(num_devices=0), "eval.num_devices must be a positive int, got 0"),
    (lambda d: d["points"].append(copy.deepcopy(d["points"][-1])),
     "7 points for a grid of 3 layers x 2"),
    (lambda d: d.pop("versions"), "missing key 'versions'"),      # (a bare KeyError)
    (lambda d: d.update(versions=[]), "'versions' must be dict, got list"),   # (read as {})
    (lambda d: d["data"].update(num_examples=0), "data.num_examples must be a positive int, "
     "got 0"),                 # (said "reference: num_examples 7 != data.num_examples 0")
    # (each a bare KeyError / TypeError / AttributeError, or accepted, without its check)
    (lambda d: d["points"][1].pop("kl"), r"points\[1\]: missing 'kl'"),
    (lambda d: d["data"].pop("labelled"), "data is missing 'labelled'"),
    (lambda d: d["points"].__setitem__(1, 5), r"points\[1\]: must be an object"),
    (lambda d: d["points"][2].update(schedule=5), r"points\[2\]: schedule must be a string"),
    (lambda d: d["data"].update(source="  "), "data.source must be a non-empty string, got '  '"),
])
def test_validation_errors(doc, fn, match):
  with pytest.raises(record_lib.EstimateError, match=match):
    record_lib.Estimate.from_json(_mutate(doc[0].to_json(), fn))


def test_the_record_kind_and_a_change_at_the_limit_of_agreement(doc):
  assert doc[0].kind == "sensitivity" and doc[0].precision == "highest"
  # Accuracy may move on exactly as many images as the agreement lets predictions change.
  d = doc[0].to_json()
  ref = d["reference"]["accuracy"]
  i = next(i for i, p in enumerate(d["points"]) if p["counts"] != d["reference"]["counts"])
  for moved, ok in ((2, True), (3, False)):
    e = _mutate(d, lambda d: d["points"][i].update(
        agreement=5 / 7, accuracy=ref + moved / 7 if ref + moved / 7 <= 1 else ref - moved / 7))
    if ok:
      record_lib.Estimate.from_json(e)
    else:
      with pytest.raises(record_lib.EstimateError, match=f"on {moved} of 7 images, but "
                         "agreement 0.714285.* leaves only 2 predictions changed"):
        record_lib.Estimate.from_json(e)


def test_a_record_written_before_dtype_and_precision_loads(doc):
  """eval.dtype / eval.precision absent (files before they were recorded): the check's message
  was built from the missing key and the file was refused as 'dtype'."""
  d = _mutate(doc[0].to_json(), lambda d: (d["eval"].pop("dtype"), d["eval"].pop("precision")))
  est = record_lib.Estimate.from_json(d)
  # (not filled in: a default 'highest' or 'float32' claimed what the file never said)
  assert (est.dtype, est.precision) == ("", "")
  assert record_lib.Estimate.from_json(est.to_json()) == est


def test_a_record_without_a_weights_source_says_none(doc):
  """weights.source absent: read as '' (none said), not filled in with a source it never named
  (a mutation audit: a default 'init_params(seed=0)' passed every test)."""
  d = _mutate(doc[0].to_json(), lambda d: d["weights"].pop("source"))
  est = record_lib.Estimate.from_json(d)
  assert est.weights_source == "" and est.weights_sha256 == doc[0].weights_sha256
  assert est.to_json()["weights"] == {"source": "", "sha256": doc[0].weights_sha256}


def test_unlabelled_record_needs_null_accuracy(doc):
  d = _mutate(doc[0].to_json(), lambda d: (d["data"].update(labelled=False),
                                           d.update(metrics=["agreement", "kl"])))
  with pytest.raises(record_lib.EstimateError, match="accuracy must be null"):
    record_lib.Estimate.from_json(d)


def test_load_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    record_lib.read_estimate(str(tmp_path / "missing.json"))
  p = tmp_path / "broken.json"
  p.write_text("{not json")
  with pytest.raises(record_lib.EstimateError, match="not valid JSON"):
    record_lib.read_estimate(str(p))
  p.write_text("[1, 2]")
  with pytest.raises(record_lib.EstimateError, match="expected a JSON object"):
    record_lib.read_estimate(str(p))


# ---------------------------------------------------------------------------------- data


def test_load_eval_data_digits_balanced():
  d = estimate.load_eval_data("digits", num_images=30, seed=3)
  assert d.labelled and len(d.indices) == 30 and d.info["num_examples"] == 30
  assert np.bincount(d.dataset.labels[d.indices], minlength=10).tolist() == [3] * 10
  from vitprune.digits import digits_split
  assert set(d.indices) <= set(digits_split(0)[1])
  again = estimate.load_eval_data("digits", num_images=30, seed=3)
  assert again.info["fingerprint"] == d.info["fingerprint"]
  assert estimate.load_eval_data("digits", num_images=30, seed=4).info["fingerprint"] != \
      d.info["fingerprint"]
  assert len(estimate.load_eval_data("digits").indices) == len(digits_split(0)[1])
  with pytest.raises(ValueError, match="exceeds"):
    estimate.load_eval_data("digits", num_images=10_000)
  with pytest.raises(ValueError, match="split"):
    estimate.load_eval_data("digits", split="val")
  with pytest.raises(FileNotFoundError, match="neither 'digits'"):
    estimate.load_eval_data("/nonexistent/dir")


def _write_random_pngs(folder, count, shape=(8, 8, 3)):
  """`count` PNGs of seeded random pixels, `0.png`.., in `folder` (made if absent)."""
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  for i in range(count):
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(folder / f"{i}.png")


def test_unlabelled_folder_fidelity_only(tmp_path, params):
  _write_random_pngs(tmp_path, 5, (20, 24, 3))
  d = estimate.load_eval_data(str(tmp_path), num_images=3, seed=0)
  assert not d.labelled and len(d.indices) == 3 and d.info["labelled"] is False
  batches = list(d.batches(CFG, 2))
  assert [b[0].shape for b in batches] == [(2, 32, 32, 3)] * 2
  res = estimate.evaluate(CFG, params, batches, points(), labelled=d.labelled)
  assert res.reference.num_examples == 3 and res.points[0].accuracy is None


def test_flag_names_the_folders_refusal_alone(tmp_path):
  """`flag` ('--data') is named by a refusal of the image folder itself, not by a refusal of
  another argument after it (a subset larger than the folder is --num_images's)."""
  _write_random_pngs(tmp_path / "two", 2)
  (tmp_path / "none").mkdir()
  with pytest.raises(ValueError, match=r"^num_images=5 exceeds the 2 images available"):
    estimate.load_eval_data(str(tmp_path / "two"), num_images=5, flag="--data")
  with pytest.raises(FileNotFoundError, match=r"^--data: no image files \(extensions "):
    estimate.load_eval_data(str(tmp_path / "none"), flag="--data")


def test_the_cli_says_why_a_folder_gives_no_accuracy(tmp_path):
  """A probe: one class's folder given as --data printed 'labelled=False' and agreement only,
  without saying why (run_deployed and the board's run say it)."""
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  _write_random_pngs(tmp_path / "3", 4)
  code, out, err = run_cli_in_process(REPO, "estimate", [
      "--model=test_tiny_vit", f"--data={tmp_path / '3'}", "--tokens=17",
      f"--out_dir={tmp_path}/e"])
  assert code == 0, err
  assert ("note: no accuracy: the images were read unlabelled (only a folder of class folders, "
          "DIR/<class>/<image>, labels them; one image file or one class's folder does not): "
          "agreement and KL against the unpruned model only\n") in out


def test_the_cli_names_its_default_layer_when_the_model_is_too_shallow(tmp_path):
  """--method=topk prunes at block 3 by default: on a 2-block model the refusal says that the
  layer was the default (not given), and a given --layer=3 gets the plain range message."""
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  argv = ["--model=test_tiny_vit", "--method=topk", "--data=digits", f"--out_dir={tmp_path}/e"]
  assert run_cli_in_process(REPO, "estimate", argv) == (
      1, "", "error: --layer: layer 3 outside [0, 1] (model depth 2): the default --layer for "
             "--method=topk; pass one\n")
  assert run_cli_in_process(REPO, "estimate", argv + ["--layer=3"]) == (
      1, "", "error: --layer: layer 3 outside [0, 1] (model depth 2)\n")
  assert not os.path.exists(tmp_path / "e")


# ---------------------------------------------------------------------------------- CLI helpers


def test_cli_parsers(doc):
  from experiments import estimate as cli
  tiny, digits = get_config("test_tiny_vit"), get_config("vit_digits")
  assert cli.parse_tokens(tiny, "3,9,17") == [3, 9, 17]
  assert cli.parse_tokens(tiny, "5:17:4") == [5, 9, 13, 17]
  assert cli.parse_tokens(tiny, "17:5:-4") == [5, 9, 13, 17]
  assert cli.parse_tokens(tiny, "all") == list(range(2, 18))
  default = cli.parse_tokens(digits, None)
  assert default[0] == 2 and default[-1] == 65 and len(default) == 16
  for bad in ("a:b", "9:5:1", "5:9:0", "1,x", "1:17", "18"):
    with pytest.raises(ValueError, match="--tokens"):
      cli.parse_tokens(tiny, bad)
  assert cli.parse_layer("embed", 6) is None and cli.parse_layer("3", 6) == 3
  assert cli.parse_layers("all", 3) == [0, 1, 2] and cli.parse_layers("embed,2", 3) == [None, 2]
  with pytest.raises(ValueError, match=r"outside \[0, 5\]"):
    cli.parse_layer("6", 6)
  with pytest.raises(ValueError, match="neither 'embed'"):
    cli.parse_layer("first", 6)
  table = record_lib.table_text(doc[0]).splitlines()
  assert table[1] == "unpruned: accuracy=0.5714  agreement=1.0000  kl=0.0000"
  assert table[3].split()[0] == "5" and len(table) == 5 and len(table[3].split()) == 1 + 3 * 3
  head = table[2].split()         # whole metric names ('embed:accur' was cut), columns aligned
  layer = head[1].split(":")[0]
  assert head[:4] == ["n", f"{layer}:accuracy", f"{layer}:agreement", f"{layer}:kl"]
  assert all(len(row) == len(table[2]) for row in table[3:])
  assert [table[2].index(h) + len(h) for h in head[1:4]] == [
      m.end() for m in re.finditer(r"-?\d+\.\d{4}", table[3])][:3]


def test_kl_is_never_negative():
  """The KL of nearly equal distributions rounds to tiny negative sums (-0.0000 in a benchmark
  table); a divergence is >= 0."""
  rng = np.random.default_rng(0)
  ref = rng.normal(size=(4000, 10)) * 30
  near = ref + rng.normal(size=ref.shape) * 1e-9
  p = np.exp(estimate.log_softmax64(ref))
  raw = np.sum(p * (estimate.log_softmax64(ref) - estimate.log_softmax64(near)), axis=-1)
  assert raw.min() < 0                       # the rounding this guards against
  _, _, kl = estimate.compare_logits(near, ref, np.zeros(4000, np.int64))
  assert kl.min() >= 0.0
  np.testing.assert_allclose(kl, np.maximum(raw, 0.0))
  assert raw.min() > -1e-9                   # only rounding is clamped, not a real error

def test_load_eval_data_digits_follow_the_model_class_names(tmp_path):
  """--data=digits took the digits' own labels whatever the weights named their outputs; a
  folder of the same images was matched by name (two accuracies for one set of images)."""
  plain = estimate.load_eval_data("digits", num_images=30, seed=3)
  names = [str(d) for d in (3, 1, 4, 0, 5, 9, 2, 6, 8, 7)]
  mapped = estimate.load_eval_data("digits", num_images=30, seed=3, class_names=names,
                                   num_classes=10)
  np.testing.assert_array_equal(mapped.indices, plain.indices)
  want = np.array([names.index(str(l)) for l in plain.dataset.labels[plain.indices]])
  np.testing.assert_array_equal(mapped.dataset.labels[mapped.indices], want)
  assert mapped.info["fingerprint"] != plain.info["fingerprint"]
  same = estimate.load_eval_data("digits", num_images=30, seed=3,
                                 class_names=[str(d) for d in range(10)], num_classes=10)
  assert same.info["fingerprint"] == plain.info["fingerprint"]
  # Outputs that are not the digits (an ImageNet model): unlabelled, never shifted labels.
  for kw, why in (({"num_classes": 12}, "it has 12 classes and records no class names"),
                  ({"class_names": [str(d) for d in range(1, 11)]},
                   r"its class names \['1', .*'10'\] lack the digits \['0'\]")):
    with pytest.warns(UserWarning, match=r"^the model's outputs are not the digits 0-9 \("
                      f"{why}\\): the digits are used unlabelled, for agreement and KL"):
      got = estimate.load_eval_data("digits", num_images=30, seed=3, **kw)
    assert not got.labelled and (got.dataset.labels == -1).all()
    np.testing.assert_array_equal(got.indices, plain.indices)
  assert estimate.load_eval_data("digits", num_classes=10).labelled     # by position
  with pytest.raises(ValueError, match=r"has class folders but the model has no classification "
                                       r"head \(num_classes=0\)"):
    (tmp_path / "3").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "3" / "a.png")
    estimate.load_eval_data(str(tmp_path), num_classes=0)


def test_pieces_kept_between_calls_are_not_served_to_another_config(params, images, labels):
  """`evaluate(pieces=...)` with cfg and then cfg.replace(norm_eps=0.5): the second call ran
  the first config's compiled pieces and reported its numbers (40/39 instead of 11/6)."""
  from vitprune.reduce.methods import make_reducer  # pylint: disable=g-import-not-at-top
  other = CFG.replace(norm_eps=0.5)
  pomt = make_reducer("pomt")

  def run(cfg, pieces):
    res = estimate.evaluate(cfg, params, batches_of(images, labels, 4),
                            estimate.token_points(cfg, [9], pomt, layer=1), labelled=True,
                            pieces=pieces)
    return res.reference.kl, res.points[0].kl, res.points[0].agreement

  pieces = {}
  first = run(CFG, pieces)
  assert run(other, pieces) == run(other, {}) != first


def test_labels_must_be_integers(params, images, labels):
  """Labels of 2.9 were read as class 2 (astype)."""
  bad = [(x, y + 0.9, i) for x, y, i in batches_of(images, labels, 4)]
  with pytest.raises(ValueError, match="labels and indices must be integers, got float64"):
    estimate.evaluate(CFG, params, bad, [], labelled=True)


def test_a_negative_num_workers_is_refused_before_any_work(tmp_path, monkeypatch):
  """--num_workers=-1 passed the flag check and failed after the model and data were loaded,
  in the data loader, naming no flag."""
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(estimate, "load_eval_data", lambda *a, **k: pytest.fail("data loaded"))
  code, out, err = run_cli_in_process(REPO, "estimate", [
      "--model=test_tiny_vit", "--num_images=4", "--num_workers=-1", f"--out_dir={tmp_path}/e"])
  assert (code, out, err) == (1, "", "error: --num_workers must be >= 0, got -1\n")
  assert not os.path.exists(tmp_path / "e")


def test_default_file_names_tell_grids_and_dtypes_apart(tmp_path):
  """The default name left out --tokens and --dtype: a second estimate over another grid or in
  bfloat16 was refused as 'already exists' (naming --out_name, which was not given), and with
  --overwrite replaced the first."""
  from experiments.estimate import grid_tag  # pylint: disable=g-import-not-at-top
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  assert grid_tag([5, 9, 13, 17]) == "t5-17by4" and grid_tag([9, 17]) == "t9.17"
  assert grid_tag([1, 2, 4, 8, 16, 32, 64]).startswith("t1-64x7-")
  assert grid_tag([1, 2, 4, 8, 16, 32, 64]) != grid_tag([1, 2, 4, 8, 16, 33, 64])
  from vitprune.digest import params_sha256  # pylint: disable=g-import-not-at-top
  from experiments import common  # pylint: disable=g-import-not-at-top
  from experiments.estimate import weights_tag  # pylint: disable=g-import-not-at-top
  from vitprune.checkpoint import load_weights  # pylint: disable=g-import-not-at-top
  w0, w3 = (params_sha256(init_params(CFG, s))[:8] for s in (0, 3))
  # The embedded default weights, however given (--weights=weights/vit_digits too), get no tag.
  assert weights_tag(load_weights(common.EMBEDDED_WEIGHTS)[1]) == ""
  assert weights_tag(init_params(CFG, 0)) == w0
  # The embedded parameters under other class names label the images otherwise (a probe: that
  # estimate took the default's name, and --overwrite replaced the labelled one).
  embedded = load_weights(common.EMBEDDED_WEIGHTS)[1]
  assert weights_tag(embedded, common.class_names(common.EMBEDDED_WEIGHTS)) == ""
  other = weights_tag(embedded, [f"c{i}" for i in range(10)])
  assert re.fullmatch(r"c[0-9a-f]{6}", other)
  assert weights_tag(init_params(CFG, 0), [f"c{i}" for i in range(10)]) == w0 + other
  base = ["--model=test_tiny_vit", "--num_images=4", "--batch_size=4", f"--out_dir={tmp_path}"]
  for extra in ([], ["--tokens=17,9"], ["--tokens=9:17:4"],
                ["--tokens=17,9", "--dtype=bfloat16"], ["--init_seed=3"],
                ["--method_opts=nested=false"]):
    code, _, err = run_cli_in_process(REPO, "estimate", base + extra)
    assert code == 0, err
  # (other weights, --init_seed or --weights, were refused as "already exists, an estimate with
  # these flags", and --overwrite replaced the other model's estimate; options other than the
  # reducer's defaults are named too, the defaults not: nested=true is the default's estimate)
  per_layer = f"test_tiny_vit_random_nested-false_embed_digits-test_n4_s0_float32_w{w0}.json"
  assert sorted(os.listdir(tmp_path)) == sorted(
      [f"test_tiny_vit_random_embed_digits-test_n4_s0{grid}_w{w0}.json" for grid in (
          "_float32", "_t9-17by4_float32", "_t9.17_bfloat16", "_t9.17_float32")]
      + [f"test_tiny_vit_random_embed_digits-test_n4_s0_float32_w{w3}.json", per_layer])
  assert record_lib.read_estimate(str(tmp_path / per_layer)).method_kwargs == {
      "seed": 0, "nested": False}
  code, _, err = run_cli_in_process(REPO, "estimate", base + ["--method_opts=nested=true"])
  assert code == 1 and "already exists, an estimate with these flags" in err, err
  # The default name held by a version-1 estimate (written before random drop nested): not
  # "these flags" (a walkthrough: the per-layer file passed for the nested one).
  nested = tmp_path / f"test_tiny_vit_random_embed_digits-test_n4_s0_float32_w{w0}.json"
  doc = json.loads(nested.read_text())
  doc["version"] = 1
  del doc["method"]["kwargs"]["nested"]
  nested.write_text(json.dumps(doc))
  code, _, err = run_cli_in_process(REPO, "estimate", base)
  assert (code, err) == (1, f"error: {nested} already exists, an estimate of "
                            "random(nested=false,seed=0) (format version 1), not "
                            "random(nested=true,seed=0) (pass --out_name to write another "
                            "file, or --overwrite to replace it)\n")
  code, _, err = run_cli_in_process(REPO, "estimate", base + ["--tokens=9,17"])
  assert code == 1 and err.count("\n") == 1 and err.startswith(
      f"error: {tmp_path}/test_tiny_vit_random_embed_digits-test_n4_s0_t9.17_float32_w{w0}.json "
      "already exists, an estimate with these flags (pass --overwrite to replace it, or --out_name")
  # Two folders of one name (A/val, B/val): the second said "an estimate with these flags",
  # though its --data differs (a probe).
  from vitprune import digits  # pylint: disable=g-import-not-at-top
  for parent in ("A", "B"):
    digits.write_digits_imagefolder(tmp_path / parent / "val", limit=10)
  fold = ["--model=test_tiny_vit", "--num_images=4", "--batch_size=4",
          f"--out_dir={tmp_path / 'fold'}", "--tokens=17,9"]
  code, _, err = run_cli_in_process(REPO, "estimate", fold + [f"--data={tmp_path}/A/val"])
  assert code == 0, err
  code, _, err = run_cli_in_process(REPO, "estimate", fold + [f"--data={tmp_path}/B/val"])
  assert code == 1 and err.count("\n") == 1 and re.search(
      rf"already exists, an estimate of {tmp_path}/A/val, another folder of the same name "
      r"\(pass --out_name", err), err
  # A folder named like the bundled digits' tag: not called a folder (a review).
  digits.write_digits_imagefolder(tmp_path / "digits-test", limit=10)
  code, _, err = run_cli_in_process(REPO, "estimate", base + [f"--data={tmp_path}/digits-test"])
  assert code == 1 and "already exists, an estimate of the bundled digits (--data=digits) " \
      "(pass --out_name" in err, err
  # Someone else's file or a folder at the derived name: refused as such, with or without
  # --overwrite, naming no flag that was not given.
  other = tmp_path / f"test_tiny_vit_random_embed_digits-test_n4_s0_t9.12.17_float32_w{w0}.json"
  for make in (lambda: other.write_text('{"mine": 1}'), other.mkdir):
    make()
    for extra in ([], ["--overwrite"]):
      code, _, err = run_cli_in_process(REPO, "estimate", base + ["--tokens=9,12,17"] + extra)
      assert code == 1 and err.startswith(f"error: refusing to replace {other}: it is "), err
      assert "--out_name" not in err and err.count("\n") == 1
    other.unlink() if other.is_file() else other.rmdir()


def test_holdout_split_is_a_seeded_class_balanced_partition():
  """(selection, holdout): disjoint, together every image; the holdout class-balanced and drawn
  by the seed; each part identified by its own fingerprint; `load_eval_data(holdout_images=K)`
  is the selection part; a holdout leaving nothing to choose on is refused."""
  data = estimate.load_eval_data("digits", num_images=100, seed=1)
  sel, held = estimate.holdout_split(data, 30, seed=4)
  assert len(sel.indices) == 70 and len(held.indices) == 30
  assert not set(sel.indices) & set(held.indices)
  np.testing.assert_array_equal(np.union1d(sel.indices, held.indices), data.indices)
  labels = np.asarray(data.dataset.labels)
  assert np.bincount(labels[held.indices], minlength=10).tolist() == [3] * 10
  again = estimate.holdout_split(data, 30, seed=4)
  np.testing.assert_array_equal(again[1].indices, held.indices)
  assert not np.array_equal(estimate.holdout_split(data, 30, seed=5)[1].indices, held.indices)
  assert len({data.info["fingerprint"], sel.info["fingerprint"], held.info["fingerprint"]}) == 3
  assert sel.info["num_examples"] == 70 and held.info["num_examples"] == 30
  assert sel.info["selection"] == dict(data.info["selection"], holdout_images=30,
                                       part="selection")
  assert held.info["selection"]["part"] == "holdout"
  loaded = estimate.load_eval_data("digits", num_images=100, seed=4, holdout_images=30)
  want = estimate.holdout_split(estimate.load_eval_data("digits", num_images=100, seed=4), 30,
                                seed=4)[0]
  np.testing.assert_array_equal(loaded.indices, want.indices)
  assert loaded.info == want.info
  for bad in (0, 100, 101, True, 2.5, "3"):
    with pytest.raises(ValueError, match=r"holdout_images must be an int in 1\.\.99 \(of the 100 "
                                         r"evaluation images, some must be left to choose on\)"):
      estimate.holdout_split(data, bad, seed=0)
  # (-1: numpy's "expected non-negative integer", 1.5: "seed must be integer"; '2' was drawn)
  for bad in (-1, 1.5, "2", None, True):
    with pytest.raises(ValueError, match=r"^seed must be an int >= 0, got "):
      estimate.holdout_split(data, 30, seed=bad)
  np.testing.assert_array_equal(estimate.holdout_split(data, 30, seed=np.int64(4))[1].indices,
                                held.indices)


def test_holdout_split_of_an_unlabelled_folder_is_uniform(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for i in range(12):
    Image.fromarray(np.full((8, 8, 3), i * 10, np.uint8)).save(tmp_path / f"{i:02d}.png")
  data = estimate.load_eval_data(str(tmp_path))
  assert not data.labelled
  sel, held = estimate.holdout_split(data, 5, seed=0)
  assert len(held.indices) == 5 and len(sel.indices) == 7
  np.testing.assert_array_equal(np.union1d(sel.indices, held.indices), np.arange(12))


def test_an_estimate_on_the_images_a_holdout_leaves_is_named_apart(tmp_path):
  """`--num_images=8 --holdout_images=4` measures 4 images, as `--num_images=4` does, but not
  the same ones: the default name says so (_h4), and the file records the holdout."""
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  base = ["--model=test_tiny_vit", "--batch_size=4", f"--out_dir={tmp_path}"]
  for extra in (["--num_images=4"], ["--num_images=8", "--holdout_images=4"]):
    code, _, err = run_cli_in_process(REPO, "estimate", base + extra)
    assert code == 0, err
  names = sorted(os.listdir(tmp_path))
  from vitprune.digest import params_sha256  # pylint: disable=g-import-not-at-top
  w = params_sha256(init_params(CFG, 0))[:8]
  assert names == [f"test_tiny_vit_random_embed_digits-test_n4_h4_s0_float32_w{w}.json",
                   f"test_tiny_vit_random_embed_digits-test_n4_s0_float32_w{w}.json"]
  with open(tmp_path / names[0]) as f:
    rec = json.load(f)
  assert rec["data"]["num_examples"] == 4
  assert rec["data"]["selection"]["holdout_images"] == 4
  assert rec["data"]["selection"]["part"] == "selection"


def test_the_holdout_is_its_own_draw_over_the_images_own_classes():
  """The held-out draw reused the --num_images subset's seed, so it mirrored that draw (the
  first images of a class held out far more often; the holdout of K images was exactly the
  --num_images=K subset); and it was balanced over the model's names for the digits, so a model
  naming them in another order held other images out (an ImageNet model, unbalanced ones)."""
  every = estimate.load_eval_data("digits")
  for seed in (0, 3):
    held = estimate.holdout_split(every, 120, seed)[1].indices
    assert not np.array_equal(held, estimate.load_eval_data("digits", num_images=120,
                                                            seed=seed).indices)
  # Over many seeds every image of a 60-image subset is held out about a third of the time.
  sub = estimate.load_eval_data("digits", num_images=60, seed=0)
  counts = np.zeros(len(sub.indices))
  for seed in range(600):
    counts += np.isin(sub.indices, estimate.holdout_split(sub, 20, seed)[1].indices)
  assert 0.25 < counts.min() / 600 and counts.max() / 600 < 0.42, (counts.min(), counts.max())
  digits = estimate.load_eval_data("digits", num_images=100, seed=2)
  reversed_names = estimate.load_eval_data("digits", num_images=100, seed=2,
                                           class_names=list("9876543210"), num_classes=10)
  with pytest.warns(UserWarning, match="the digits are used unlabelled"):
    unnamed = estimate.load_eval_data("digits", num_images=100, seed=2,
                                      class_names=[f"c{i}" for i in range(1000)],
                                      num_classes=1000)
  assert not unnamed.labelled
  want = estimate.holdout_split(digits, 30, 7)[1].indices
  for other in (reversed_names, unnamed):
    np.testing.assert_array_equal(other.indices, digits.indices)
    np.testing.assert_array_equal(estimate.holdout_split(other, 30, 7)[1].indices, want)
  true_digit = np.asarray(digits.dataset.labels)
  assert np.bincount(true_digit[want], minlength=10).tolist() == [3] * 10


def test_a_folder_subset_is_drawn_over_its_class_folders_whatever_the_model_calls_them(
    tmp_path):
  """--num_images on an image folder was balanced over the model's label indices, so two models
  ordering the same classes otherwise were evaluated on other images of the same folder (and a
  --holdout_images draw too); the draw is over the class folders now, as for the digits."""
  names = ["ant", "bee", "cat", "dog"]
  for k, name in enumerate(names):
    for i in range(5 + k):
      os.makedirs(tmp_path / name, exist_ok=True)
      Image.fromarray(np.full((4, 4), 10 * k + i, np.uint8)).save(tmp_path / name / f"{i}.png")
  plain = estimate.load_eval_data(str(tmp_path), num_images=9, seed=4, class_names=names,
                                  num_classes=4)
  other = estimate.load_eval_data(str(tmp_path), num_images=9, seed=4,
                                  class_names=names[::-1], num_classes=4)
  np.testing.assert_array_equal(other.indices, plain.indices)
  # (the labels follow each model's names: the same images, other label indices)
  assert (other.dataset.labels[other.indices] == 3 - plain.dataset.labels[plain.indices]).all()
  folder_of = np.array([names.index(f.split("/")[0]) for f in plain.dataset.files])
  assert sorted(np.bincount(folder_of[plain.indices], minlength=4)) == [2, 2, 2, 3]
  np.testing.assert_array_equal(estimate.holdout_split(other, 4, 1)[1].indices,
                                estimate.holdout_split(plain, 4, 1)[1].indices)


def test_a_paired_evaluation_counts_images_against_the_unpruned_graph():
  """measure(..., paired=True): per schedule (both right, lost, gained, both wrong) against the
  unpruned graph on the same images: right + gained is its accuracy, right + lost the unpruned
  one's (lost and gained swapped, or the unpruned margins taken from another schedule, passed
  the fast tests)."""
  from experiments import common  # pylint: disable=g-import-not-at-top
  cfg, params, source = common.load_model("vit_digits", None)
  data = estimate.load_eval_data("digits", num_images=60, class_names=common.class_names(source),
                                 num_classes=cfg.num_classes)
  measure = estimate.schedule_evaluator(cfg, params, data, RandomDrop(seed=0), batch_size=30)
  scheds = [(65, 65, 65, 9, 9, 9, 9), (65, 33, 17, 9, 5, 5, 5)]
  (full_acc, *accs), margins = measure([(65,) * 7] + scheds, margins=True)
  values, pairs = measure(scheds, paired=True)
  assert values == accs
  for acc, m, pair in zip(accs, margins[1:], pairs):
    right, lost, gained, wrong = pair
    assert right + lost + gained + wrong == 60
    assert (right + gained) / 60 == pytest.approx(acc) and (right + lost) / 60 == \
        pytest.approx(full_acc)
    assert pair == (int(np.sum((margins[0] > 0) & (m > 0))), int(np.sum((margins[0] > 0) &
                    (m <= 0))), int(np.sum((margins[0] <= 0) & (m > 0))),
                    int(np.sum((margins[0] <= 0) & (m <= 0))))
  assert any(p[1] > 0 for p in pairs)                 # (images are lost: the check bites)
  assert any(p[1] != p[2] for p in pairs)


def test_many_points_on_sharded_data_do_not_hang(tmp_path):
  """2 forced CPU devices, a 3-block sensitivity table of 24 POMT points: the reducing blocks
  all-gather across the devices, and queueing every schedule's pieces without waiting hung the
  runtime's rendezvous (XLA aborted with 'Termination timeout for all gather' after 40 s)."""
  script = textwrap.dedent("""
    import dataclasses, json, sys
    import jax, numpy as np
    sys.path.insert(0, %r)
    from vitprune import estimate
    from vitprune.model import init_params
    from vitprune.reduce.methods import make_reducer
    from vitprune.registry import get_config
    assert jax.device_count() == 2, jax.devices()
    cfg = dataclasses.replace(get_config("test_tiny_vit"), depth=3)
    params = init_params(cfg, seed=1)
    pts = estimate.sensitivity_points(cfg, list(range(9, 17)), [0, 1, 2], make_reducer("pomt"))
    x = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype(np.float32)
    y = np.arange(8, dtype=np.int32) %% 10
    out = {}
    for shard in (True, False):
      r = estimate.evaluate(cfg, params, [(x, y, np.arange(8))], pts, labelled=True,
                            shard=shard)
      out[str(shard)] = [r.num_devices, [dataclasses.astuple(p)[:3] for p in r.points]]
    print(json.dumps(out))
  """ % REPO)
  out = _run_on_cpu_devices(script, 2, timeout=240)
  assert out["True"][0] == 2 and out["False"][0] == 1 and len(out["True"][1]) == 24
  assert out["True"][1] == out["False"][1]


def _meanwhile_estimate(out, run):
  """Another run's estimate written at `out` (renamed there, as a write does)."""
  tmp = out.parent / (out.name + ".other")
  tmp.write_text(json.dumps({"format": record_lib.FORMAT, "run": run}))
  os.replace(tmp, out)


_ANOTHER_RUN = ("{x} was written by another run meanwhile (two runs of one --out_name at once: "
                "give each run its own); the results are kept in {kept}")
# (what x.json is as the run begins, what appears there while it evaluates, --overwrite, the
# error line's start, its end, what x.json is afterwards)
MEANWHILE = {
    # Two runs of one set of flags: the second to finish failed with the library's 'pass
    # overwrite=True / --overwrite' and lost its evaluation (a probe); not "pass --overwrite":
    # that would replace the other run's estimate.
    "another run": (None, _meanwhile_estimate, False, _ANOTHER_RUN, "", "other"),
    # --overwrite replaces the estimate there when the run began, not one written since (a
    # mutation audit: the race was tested without --overwrite only).
    "another run, --overwrite": ("earlier", _meanwhile_estimate, True, _ANOTHER_RUN, "",
                                 "other"),
    # A file that is no estimate, made there meanwhile: --overwrite cannot replace it, so the
    # error is the refusal itself (it advised --overwrite).
    "a user's file, --overwrite": (None, lambda x, _: x.write_text('{"mine": 1}'), True,
                                   "refusing to replace {x}", "the results are kept in {kept}",
                                   '{"mine": 1}'),
    # A dangling link is no run's estimate, and is not said to be one (a mutation audit).
    "a dangling link": (None, lambda x, _: os.symlink(x.parent / "gone.json", x), False,
                        "{x} already exists (pass overwrite=True / --overwrite); the results "
                        "are kept in {kept}", "", "-> gone.json"),
}


@pytest.mark.parametrize("case", list(MEANWHILE))
def test_an_estimate_whose_file_was_written_meanwhile_is_kept_beside_it(tmp_path, monkeypatch,
                                                                        case):
  """An estimate whose output file changed while it evaluated is not written over it: the error
  says what happened in the CLI's words, and the results are kept beside the file."""
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  before, meanwhile, overwrite, start, end, after = MEANWHILE[case]
  out = tmp_path / "e"
  out.mkdir()
  x = out / "x.json"
  if before:
    _meanwhile_estimate(x, before)
  evaluate = estimate.evaluate

  def evaluate_then_write(*args, **kwargs):
    result = evaluate(*args, **kwargs)
    meanwhile(x, "other")
    return result
  monkeypatch.setattr(estimate, "evaluate", evaluate_then_write)
  code, _, err = run_cli_in_process(REPO, "estimate", [
      "--num_images=20", "--tokens=17,65", f"--out_dir={out}", "--out_name=x.json"]
      + ["--overwrite"] * overwrite)
  (kept,) = [p for p in out.iterdir() if p.name.startswith("x.kept-")]
  line = err.splitlines()[0]
  assert code == 1 and line.startswith("error: " + start.format(x=x, kept=kept)), err
  assert line.endswith(end.format(kept=kept)) and "--overwrite to" not in line
  assert [p.tokens for p in record_lib.read_estimate(str(kept)).points] == [17, 65]
  if after.startswith("-> "):
    assert os.readlink(x) == str(out / after[3:])
  else:
    assert x.read_text() == after or json.loads(x.read_text()).get("run") == after


# ------------------------------------------------------------- from a mutation audit (estimate)


def test_the_table_is_layer_major(doc):
  rec, res = doc
  _, _, kl = rec.table("kl")
  np.testing.assert_array_equal(kl.ravel(), [r.kl for r in res.points])
  assert kl[:, 0].tolist() == [rec.curve("kl", layer=l)[1][0] for l in (None, 0, 1)]
  assert len(set(kl[:, 0].tolist())) == 3     # (distinct values: a transposed table shows)


def test_measured_includes_the_unpruned_schedule(doc):
  """The unpruned schedule's measurement is the reference's, also where the grid stops short
  of all tokens (its counts are then no point's)."""
  short = record_lib.Estimate.from_json(_mutate(doc[0].to_json(), lambda d: (
      d.update(tokens=[5]), d.update(points=d["points"][0::2]))))
  assert short.measured("accuracy") == {**{p.counts: p.scores.accuracy for p in short.points},
                                        full_schedule(CFG).counts: 4 / 7}


def test_a_floor_metric_must_be_higher_is_better(doc):
  rec, _ = doc
  assert rec.metric("kl") == "kl"
  with pytest.raises(record_lib.EstimateError, match="metric 'kl' is not usable"):
    rec.metric("kl", higher_is_better=True)
  assert rec.metric(higher_is_better=True) == "accuracy"


def test_paired_counts_a_zero_margin_is_wrong():
  """A margin of exactly 0 is a tie argmax breaks towards a lower class: not the target."""
  ref = np.array([0.0, 1.0, -1.0, 0.0, 2.0])
  pruned = np.array([1.0, 0.0, 0.0, -1.0, 0.5])
  assert estimate.paired_counts(ref, pruned) == (1, 1, 1, 2)


@pytest.mark.parametrize("labelled", [True, False])
def test_subset_indices_refuses_no_images(labelled):
  labels = np.repeat(np.arange(3), 4)
  for bad in (0, -2, 2.0, True):           # (True was taken for 1 image: a bool is an int)
    with pytest.raises(ValueError, match="num_images must be a positive int"):
      estimate.subset_indices(labels, labelled, bad, 0)
  assert len(estimate.subset_indices(labels, labelled, 1, 0)) == 1


def test_non_finite_padding_rows_are_ignored(params, images, labels):
  """NaN/inf in a padding row (index -1) is not an error and changes nothing: only real rows'
  logits are checked for NaN (a mutation audit: checking every row passed)."""
  clean = batches_of(images, labels, 4)
  dirty = [(x.copy(), y, i) for x, y, i in clean]
  dirty[-1][0][-1] = np.nan
  a = estimate.evaluate(CFG, params, clean, points(), labelled=True)
  b = estimate.evaluate(CFG, params, dirty, points(), labelled=True)
  assert a == b


def test_an_unlabelled_subset_is_distinct_sorted_and_seeded():
  """Unlabelled: `num_images` distinct indices in ascending order, drawn by the seed (drawn with
  replacement or left unsorted passed the tests)."""
  labels = np.full(50, -1)
  for seed in range(20):
    idx = estimate.subset_indices(labels, False, 40, seed)
    assert idx.dtype == np.int64 and len(idx) == 40
    assert np.all(np.diff(idx) > 0) and 0 <= idx.min() and idx.max() < 50
  assert not np.array_equal(estimate.subset_indices(labels, False, 10, 0),
                            estimate.subset_indices(labels, False, 10, 1))


def test_holdout_parts_keep_the_strata_and_the_labels():
  """Both parts of `holdout_split` keep the data's strata (a second split of a part is balanced
  over the same classes) and its labelled flag."""
  data = estimate.load_eval_data("digits", num_images=100, seed=2,
                                 class_names=list("9876543210"), num_classes=10)
  for part in estimate.holdout_split(data, 30, 7):
    assert part.labelled and part.dataset is data.dataset
    np.testing.assert_array_equal(part.strata, data.strata)


def test_compare_logits_by_hand():
  """Accuracy is the pruned graph's prediction against the label, agreement against the
  unpruned graph's prediction, KL(unpruned || pruned). (On the tiny model every point agrees
  with the unpruned one on every image, so the evaluate tests did not tell these apart.)"""
  logits = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
  ref = np.array([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 0.0, 0.0]])
  correct, agree, kl = estimate.compare_logits(logits, ref, np.array([0, 0, 2, 1]))
  np.testing.assert_array_equal(correct, [True, False, True, False])
  np.testing.assert_array_equal(agree, [True, False, False, True])
  p, q = np.exp(ref[3]) / np.exp(ref[3]).sum(), np.exp(logits[3]) / np.exp(logits[3]).sum()
  assert kl[0] == 0.0
  np.testing.assert_allclose(kl[3], np.sum(p * np.log(p / q)), rtol=1e-12)
  assert abs(kl[3] - np.sum(q * np.log(q / p))) > 0.05      # (not the reverse divergence)


def test_paired_counts_tell_lost_from_gained():
  """Lost: right unpruned, wrong pruned; gained: the other way round (the zero-margin test's
  counts are symmetric, so swapping the two graphs passed it)."""
  ref = np.array([1.0, 2.0, 0.5, -1.0, -3.0])
  pruned = np.array([1.0, -1.0, -0.5, 2.0, -1.0])
  assert estimate.paired_counts(ref, pruned) == (1, 2, 1, 1)
  assert estimate.paired_counts(pruned, ref) == (1, 1, 2, 1)


def test_a_padding_row_with_a_real_image_and_its_label_is_not_counted(params, images, labels):
  """A padding row (index -1) holding a real image and its right label: not counted as correct
  for the unpruned model nor any point (its label -1 in the other tests is never anyone's
  prediction, so counting padding rows as correct passed them)."""
  clean = batches_of(images, labels, 4)
  dirty = [(x.copy(), y.copy(), i) for x, y, i in clean]
  dirty[-1][0][-1] = images[0]
  dirty[-1][1][-1] = labels[0]               # the unpruned (and every point's) prediction
  a = estimate.evaluate(CFG, params, clean, points(), labelled=True)
  b = estimate.evaluate(CFG, params, dirty, points(), labelled=True)
  assert a == b and a.reference.correct == 4


def test_record_margins_are_each_schedules_own(params):
  """`schedule_evaluator(record_margins=...)` stores under each schedule its own `[M]` margins,
  those `measure(..., margins=True)` returns (not the unpruned graph's, shifted by one)."""
  data = estimate.load_eval_data("digits", num_images=8, seed=0)
  recorded = {}
  measure = estimate.schedule_evaluator(CFG, params, data, KeepFirst(), batch_size=4,
                                        record_margins=recorded)
  scheds = [(5, 5, 5), (17, 17, 9)]
  _, margins = measure(scheds, margins=True)
  assert sorted(recorded) == sorted(scheds) and margins.shape == (2, 8)
  for counts, m in zip(scheds, margins):
    np.testing.assert_array_equal(recorded[counts], m)
  _, (full,) = measure([(17, 17, 17)], margins=True)
  assert not np.array_equal(recorded[scheds[0]], full)


def test_default_names_at_the_grid_and_layer_tag_limits():
  """Up to 6 counts are named one by one, 7 by a digest; a layer tag of 40 characters is kept,
  one of 41 says how many layers; the reducer's options are named in key order."""
  from experiments.estimate import default_out_name, grid_tag  # pylint: disable=g-import-not-at-top
  assert grid_tag([1, 2, 4, 8, 16, 32]) == "t1.2.4.8.16.32"
  assert grid_tag([1, 2, 4, 8, 16, 32, 64]) == "t1-64x7-9747b790"
  assert grid_tag([5, 9]) == "t5.9" and grid_tag([5, 9, 14]) == "t5.9.14"
  kept = [0, 1, 2] + list(range(10, 18))                # 'L0-L1-L2-L10-...-L17': 40 characters
  assert default_out_name(CFG, "topk", kept, "imgs", 10, 2, None, "float32") == (
      "test_tiny_vit_topk_L0-L1-L2-L10-L11-L12-L13-L14-L15-L16-L17_imgs_n10_s2_float32.json")
  assert default_out_name(CFG, "topk", [0, 1] + list(range(10, 19)), "imgs", 10, 2, None,
                          "float32") == "test_tiny_vit_topk_11layers_imgs_n10_s2_float32.json"
  assert default_out_name(CFG, "evit", [None, 3], "my data", 10, 2, [9, 17], "bfloat16", 5,
                          "abc", {"normalize": True, "alpha": 0.5}) == (
      "test_tiny_vit_evit_alpha-0.5_normalize-true_embed-L3_my-data_n10_h5_s2_t9.17_bfloat16_"
      "wabc.json")


def test_the_cli_passes_its_data_method_and_eval_flags_on(tmp_path, monkeypatch):
  """--num_images, --seed, --batch_size, --dtype, --shard, --layer, --tokens and --method reach
  the evaluation and the record, the default name holds them, and the run prints the table and
  the file it wrote."""
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  from vitprune.digest import params_sha256  # pylint: disable=g-import-not-at-top
  seen, real = [], estimate.evaluate

  def spy(*args, **kwargs):
    seen.append(kwargs)
    return real(*args, **kwargs)
  monkeypatch.setattr(estimate, "evaluate", spy)
  code, out, err = run_cli_in_process(REPO, "estimate", [
      "--model=test_tiny_vit", "--num_images=6", "--batch_size=4", "--tokens=17,9",
      "--method=pomt", "--layer=1", "--seed=3", "--dtype=bfloat16", "--noshard",
      f"--out_dir={tmp_path}"])
  assert code == 0 and err == "", err
  name = (f"test_tiny_vit_pomt_L1_digits-test_n6_s3_t9.17_bfloat16_"
          f"w{params_sha256(init_params(CFG, 0))[:8]}.json")
  assert os.listdir(tmp_path) == [name]
  rec = record_lib.read_estimate(str(tmp_path / name))
  assert (rec.method, rec.method_kwargs, rec.seed, rec.layers, rec.tokens) == (
      "pomt", {}, 3, (1,), (9, 17))
  assert rec.data["selection"] == {"split": "test", "split_seed": 0, "num_images": 6,
                                   "subset_seed": 3}
  assert rec.data["num_examples"] == 6
  assert (rec.eval_batch_size, rec.dtype) == (4, "bfloat16")
  assert seen == [{"labelled": True, "dtype": "bfloat16", "shard": False}]
  lines = out.splitlines()
  assert lines[0] == "test_tiny_vit  method=pomt  6 images  labelled=True"
  assert lines[1].startswith("unpruned: accuracy=")
  assert lines[2] == f"{'n':>5} {'L1:accuracy':>13} {'L1:agreement':>13} {'L1:kl':>13}"
  assert [l.split()[0] for l in lines[3:5]] == ["9", "17"]
  assert lines[5:] == ["note: the weights are random (init_params(seed=0): --model without "
                       "--weights): these numbers are of an untrained model, for plumbing checks "
                       "only", f"wrote {tmp_path / name}"]
  # Random drop: --seed seeds the reducer (recorded in its options, not named: it is the _s5)
  # and draws the --holdout_images, which the name and the selection record.
  code, out, err = run_cli_in_process(REPO, "estimate", [
      "--model=test_tiny_vit", "--num_images=8", "--holdout_images=2", "--batch_size=4",
      "--tokens=9", "--seed=5", f"--out_dir={tmp_path / 'random'}"])
  assert code == 0 and err == "", err
  name = f"test_tiny_vit_random_embed_digits-test_n6_h2_s5_t9_float32_{name.rsplit('_', 1)[1]}"
  assert os.listdir(tmp_path / "random") == [name]
  rec = record_lib.read_estimate(str(tmp_path / "random" / name))
  assert (rec.method_kwargs, rec.seed, rec.data["num_examples"]) == (
      {"seed": 5, "nested": True}, 5, 6)
  assert rec.data["selection"] == {"split": "test", "split_seed": 0, "num_images": 8,
                                   "subset_seed": 5, "holdout_images": 2, "part": "selection"}
  assert out.splitlines()[0] == "test_tiny_vit  method=random(nested=true,seed=5)  6 images  " \
      "labelled=True"


def test_random_drops_seed_and_the_weights_class_names_on_a_folder(tmp_path):
  """--seed without --num_images or --holdout_images seeds random drop (it is refused for the
  other methods only) and names the file _s5; an unlabelled folder's run says why it gives no
  accuracy and sweeps what killed runs of the model left; weights naming other classes than
  the embedded default's are tagged so."""
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  _write_random_pngs(tmp_path / "flat", 4)
  # What a killed run of other flags left is swept, for this model's names only
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  left = [tmp_path / "e" / f".{m}_x.json.tmp-{int(dead.stdout)}-abc"
          for m in ("test_tiny_vit", "other_vit")]
  for d in left:
    d.mkdir(parents=True)
  code, out, err = run_cli_in_process(REPO, "estimate", [
      "--model=test_tiny_vit", f"--data={tmp_path / 'flat'}", "--tokens=9", "--seed=5",
      "--batch_size=4", f"--out_dir={tmp_path / 'e'}"])
  assert code == 0 and err == "", err
  assert not left[0].exists() and left[1].exists()
  left[1].rmdir()
  (name,) = os.listdir(tmp_path / "e")
  assert name.startswith("test_tiny_vit_random_embed_flat_n4_s5_t9_float32_w"), name
  assert record_lib.read_estimate(str(tmp_path / "e" / name)).method_kwargs == {
      "seed": 5, "nested": True}
  assert out.splitlines()[-2:] == [
      "note: no accuracy: the images were read unlabelled (only a folder of class folders, "
      "DIR/<class>/<image>, labels them; one image file or one class's folder does not): "
      "agreement and KL against the unpruned model only",
      f"wrote {tmp_path / 'e' / name}"]
  # Weights naming other classes than the embedded default's: their tag says so (c + 6 digits)
  from vitprune.checkpoint import save_weights  # pylint: disable=g-import-not-at-top
  from vitprune.digest import params_sha256  # pylint: disable=g-import-not-at-top
  weights = save_weights(str(tmp_path / "w"), CFG, init_params(CFG, 0),
                         class_names=[f"c{i}" for i in range(10)])
  code, _, err = run_cli_in_process(REPO, "estimate", [
      f"--weights={weights}", f"--data={tmp_path / 'flat'}", "--tokens=9",
      f"--out_dir={tmp_path / 'w_e'}"])
  assert code == 0 and err == "", err
  assert os.listdir(tmp_path / "w_e") == [
      f"test_tiny_vit_random_embed_flat_n4_s0_t9_float32_w"
      f"{params_sha256(init_params(CFG, 0))[:8]}cbeb01a.json"]


def test_a_block_method_reduces_at_block_3_by_default(tmp_path):
  """Without --layer (or --layers) random drop reduces after the embedding, the other methods
  at block 3 (of the embedded vit_digits, depth 6); a second run of the same flags is refused,
  and replaces the estimate with --overwrite."""
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  code, _, err = run_cli_in_process(REPO, "estimate", [
      "--method=pomt", "--num_images=2", "--batch_size=2", "--tokens=33", "--seed=1",
      f"--out_dir={tmp_path}"])
  assert code == 0 and err == "", err
  (name,) = os.listdir(tmp_path)
  assert name == "vit_digits_pomt_L3_digits-test_n2_s1_t33_float32.json"
  assert record_lib.read_estimate(str(tmp_path / name)).layers == (3,)
  # The same flags again: refused, and replaced with --overwrite
  argv = ["--method=pomt", "--num_images=2", "--batch_size=2", "--tokens=33", "--seed=1",
          f"--out_dir={tmp_path}"]
  code, _, err = run_cli_in_process(REPO, "estimate", argv)
  assert (code, err) == (1, f"error: {tmp_path / name} already exists, an estimate with these "
                            "flags (pass --overwrite to replace it, or --out_name to write "
                            "another file)\n")
  before = os.stat(tmp_path / name).st_ino
  code, out, err = run_cli_in_process(REPO, "estimate", argv + ["--overwrite"])
  assert code == 0 and err == "", err
  assert os.listdir(tmp_path) == [name] and out.endswith(f"wrote {tmp_path / name}\n")
  assert os.stat(tmp_path / name).st_ino != before           # (a new file in its place)


def test_the_cli_says_random_weights_and_a_training_split(tmp_path):
  """A probe: random weights' 'accuracy 0.1031' and --split=train's scores on the digits the
  weights learnt were printed as any other estimate; each now says what it is, and only then."""
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  notes = {}
  for name, flags in (("random", ["--model=test_tiny_vit"]), ("train", ["--split=train"]),
                      ("test", []), ("all", ["--split=all", "--model=test_tiny_vit"])):
    code, out, err = run_cli_in_process(REPO, "estimate", [
        *flags, "--num_images=20", "--batch_size=20", "--tokens=9",
        f"--out_dir={tmp_path / name}"])
    assert code == 0, err
    notes[name] = [l for l in out.splitlines() if l.startswith("note:")]
  assert notes == {
      "random": ["note: the weights are random (init_params(seed=0): --model without --weights): "
                 "these numbers are of an untrained model, for plumbing checks only"],
      "train": ["note: --split=train holds the digits these weights were trained on: the "
                "accuracies are optimistic (--split=test is held out)"],
      "test": [],
      "all": ["note: the weights are random (init_params(seed=0): --model without --weights): "
              "these numbers are of an untrained model, for plumbing checks only"]}


def test_layer_flags_are_named_in_their_errors():
  """`--layers=0,9` said "layer 9 outside [0, 5]" and `--layers=3,3` "layers have duplicates",
  naming no flag (a walkthrough): each names the flag it came from (duplicates in
  `estimate.sensitivity_points`' words)."""
  from experiments import common  # pylint: disable=g-import-not-at-top
  from experiments import estimate as cli  # pylint: disable=g-import-not-at-top
  for call, message in (
      (lambda: cli.parse_layers("0,9", 6), "--layers: layer 9 outside [0, 5] (model depth 6)"),
      (lambda: cli.parse_layer("x", 6), "--layer: layer 'x' is neither 'embed' nor a block index"),
      (lambda: cli.parse_layer("6", 6), "--layer: layer 6 outside [0, 5] (model depth 6)")):
    with pytest.raises(ValueError) as e:
      call()
    assert str(e.value) == message
  fv = common.parse(cli.define_flags, ["--method=pomt", "--layers=3, 3", "--tokens=65"])
  with pytest.raises(ValueError) as e:
    cli.main(fv)
  assert str(e.value) == "--layers: layers have duplicates: [3, 3]"


def test_a_count_the_method_cannot_reach_is_refused_by_flag_before_loading(monkeypatch):
  """`--method=tome --tokens=65:5:-20` was refused by `evaluate`, after the model and the images
  had loaded, naming neither --tokens nor the count ("1 prefix tokens"): it is refused while
  the flags are checked, naming the count and the block."""
  from experiments import common as cli_common  # pylint: disable=g-import-not-at-top
  from experiments import estimate as cli  # pylint: disable=g-import-not-at-top

  def no_loading(*args, **kwargs):
    raise AssertionError("the model was loaded")
  monkeypatch.setattr(cli_common, "load_model", no_loading)
  fv = cli_common.parse(cli.define_flags, ["--method=tome", "--layers=all",
                                           "--tokens=65:5:-20"])
  with pytest.raises(ValueError) as e:
    cli.main(fv)
  assert str(e.value) == (
      "--tokens: 5 tokens at block 0: tome can remove at most 32 of the 65 tokens entering "
      "block 0 (1 prefix token protected), the schedule removes 60 (give counts from 33 up)")


@pytest.mark.parametrize("args, message", [
    (["--method=tome"],
     "the default token grid (16 counts over [2, 65]) holds 2 tokens at block 3: tome can "
     "remove at most 32 of the 65 tokens entering block 3 (1 prefix token protected), the "
     "schedule removes 63; give --tokens with counts from 33 up, e.g. --tokens=33:65:4"),
    (["--method=pomt", "--layer=embed"],
     "--layer: pomt cannot drop tokens after the embedding ('embed': it needs attention); give "
     "a block index, or --method=random"),
    (["--method=topk", "--layers=embed,3", "--tokens=65,33"],
     "--layers: topk cannot drop tokens after the embedding ('embed': it needs attention); give "
     "a block index, or --method=random"),
])
def test_a_default_grid_or_layer_the_method_cannot_take_names_the_flag_to_change(args, message):
  """`estimate --method=tome` (no --tokens) was refused as "--tokens: 2 tokens at block 3: ...",
  a flag the user never gave (ToMe cannot reach the default grid's low counts in one block);
  `--method=pomt --layer=embed` was refused the same way, its hint "start the schedule at 65
  tokens" naming no flag, when the cause is --layer. Each names the flag to change."""
  from experiments import common as cli_common  # pylint: disable=g-import-not-at-top
  from experiments import estimate as cli  # pylint: disable=g-import-not-at-top
  fv = cli_common.parse(cli.define_flags, args)
  with pytest.raises(ValueError) as e:
    cli.main(fv)
  assert str(e.value) == message


def test_the_default_layer_beyond_a_shallow_model_says_it_is_the_default():
  """`--model=test_tiny_vit --method=pomt` without --layer said "--layer: layer 3 outside
  [0, 1]", as if the user had given 3: it says the 3 is --method's default."""
  from experiments import common  # pylint: disable=g-import-not-at-top
  from experiments import estimate as cli  # pylint: disable=g-import-not-at-top
  fv = common.parse(cli.define_flags, ["--model=test_tiny_vit", "--method=pomt", "--tokens=17"])
  with pytest.raises(ValueError) as e:
    cli.main(fv)
  assert str(e.value) == ("--layer: layer 3 outside [0, 1] (model depth 2): the default --layer "
                          "for --method=pomt; pass one")


def test_agreement_margins_on_labelled_data_are_against_the_unpruned_class(params, images,
                                                                           labels):
  """`agreement_margins=True` on labelled data: every margin is against the unpruned model's
  class (> 0 exactly where a point agrees with it), not the label; accuracy still counts the
  labels (the odd rows' labels are wrong: against them 3 reference margins would be <= 0)."""
  pts = points()
  res = estimate.evaluate(CFG, params, batches_of(images, labels, 4), pts, labelled=True,
                          margins=True, agreement_margins=True)
  ref = np.asarray(jitted_forward(params, jnp.asarray(images), cfg=CFG))
  target = ref.argmax(-1)
  np.testing.assert_allclose(res.margins[0], estimate.top1_margins(ref, target), atol=1e-4)
  assert np.all(res.margins[0] > 0) and res.reference.correct == 4
  for i, p in enumerate(pts):
    out = np.asarray(jitted_forward(params, jnp.asarray(images), cfg=CFG, schedule=p.schedule,
                                    reducer=p.reducer))
    np.testing.assert_allclose(res.margins[1 + i], estimate.top1_margins(out, target),
                               atol=1e-4)
    assert int((res.margins[1 + i] > 0).sum()) == res.points[i].agree
    assert res.points[i].correct == int((out.argmax(-1) == labels).sum())


def test_an_agreement_floor_on_labelled_data_measures_agreement_margins(params):
  """schedule_evaluator(metric='agreement') on labelled digits: the values are the agreements
  and the margins are against the unpruned model's class (the unpruned graph's all > 0), not
  against the labels (this random model gets most digits wrong)."""
  data = estimate.load_eval_data("digits", num_images=20, seed=0)
  assert data.labelled
  measure = estimate.schedule_evaluator(CFG, params, data, KeepFirst(), batch_size=8,
                                        metric="agreement")
  scheds = [(17, 17, 17), (17, 17, 9), (5, 5, 5)]
  values, margins = measure(scheds, margins=True)
  assert values[0] == 1.0 and np.all(margins[0] > 0)
  assert values == [float(np.mean(m > 0)) for m in margins]
  acc = estimate.schedule_evaluator(CFG, params, data, KeepFirst(), batch_size=8)
  accs, label_margins = acc(scheds[:1], margins=True)
  assert accs[0] < 1.0 and accs[0] == float(np.mean(label_margins[0] > 0))


def test_points_run_in_chunks_get_their_own_logits():
  """_run_points runs each reducer's schedules `chunk` at a time in the order of their counts:
  every schedule of every chunk gets its own logits back in the points' order (the logits of a
  later chunk were stored under the first schedules)."""

  class Fake:
    def __init__(self):
      self.calls = []

    def run_many(self, schedules, x):
      self.calls.append([s.counts for s in schedules])
      return np.stack([np.full((2, 3), float(sum(s.counts)), np.float32) for s in schedules])

  counts = [(17, 9, 9), (17, 17, 5), (17, 5, 5), (17, 17, 17), (17, 11, 11)]
  keys = [(Schedule(c), "r") for c in counts]
  fake = Fake()
  out = estimate._run_points({("r", None): fake}, keys, None, np.zeros((2, 4)), chunk=2)
  assert [float(v[0, 0]) for v in out] == [float(sum(c)) for c in counts]
  assert all(v.shape == (2, 3) for v in out)
  assert fake.calls == [[(17, 5, 5), (17, 9, 9)], [(17, 11, 11), (17, 17, 5)], [(17, 17, 17)]]


def test_a_batch_above_the_images_is_noted_and_changes_no_number(tmp_path):
  """`--batch_size=64` over 4 images ran every point on 60 padding rows without a word; the
  results are those of `--batch_size=4`, and a note says so. A batch the images fill: none."""
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  base = ["--model=test_tiny_vit", "--num_images=4", "--tokens=17,9"]
  recs = {}
  for b in (4, 64):
    code, out, err = run_cli_in_process(REPO, "estimate", base + [
        f"--batch_size={b}", f"--out_dir={tmp_path / str(b)}"])
    assert code == 0, err
    note = ("note: --batch_size=64 is above the 4 images: each point runs one batch padded "
            "with 60 ignored rows (--batch_size=4 does the same with less work)")
    assert (note in out.splitlines()) == (b == 64), out
    if b == 64:                    # (said before the work: above the results table)
      assert out.splitlines().index(note) < out.splitlines().index(
          next(l for l in out.splitlines() if l.startswith("test_tiny_vit  method=")))
    assert "is above the" not in out or b == 64
    (path,) = (tmp_path / str(b)).iterdir()
    recs[b] = record_lib.read_estimate(str(path))
  for a, b in zip(recs[4].points, recs[64].points):      # (KL: to float rounding)
    assert (a.scores.accuracy, a.scores.agreement) == (b.scores.accuracy, b.scores.agreement)
    assert a.scores.kl == pytest.approx(b.scores.kl, rel=1e-6)
  code, out, err = run_cli_in_process(REPO, "estimate", base + [    # (was '1 ignored rows')
      "--batch_size=5", f"--out_dir={tmp_path / '5'}"])
  assert code == 0 and ("note: --batch_size=5 is above the 4 images: each point runs one batch "
                        "padded with 1 ignored row (--batch_size=4 does the same with less "
                        "work)") in out.splitlines(), out + err
