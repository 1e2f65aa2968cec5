"""Deployment artifacts: export round trip, validation errors, fresh-process loading, CLIs."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from vitprune import atomic, deploy, intervals, orbax_io
from vitprune.checkpoint import save_weights
from vitprune.data import ImageFolder, iterate_batches
from vitprune.model import init_params, jitted_forward
from vitprune.registry import get_config
from vitprune.digest import params_sha256
from vitprune.records.solution import read_solution
from vitprune.schedule import Schedule, format_schedule
from tests.conftest import lose_inventory_beside_notes, run_cli_in_process, solution_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = get_config("test_tiny_vit")  # 16 patches + cls = 17 tokens, depth 2
SCHED = Schedule((17, 17, 9))      # block 1 reduces 17 -> 9


@dataclasses.dataclass(frozen=True)
class KeepLastPatches:
  """Test reducer independent of the methods module: keeps the prefix and the last patches.
  Implements the whole `TokenReducer` protocol (class attributes are not dataclass fields)."""
  needs_attention: bool = False
  tracks_size: bool = False
  name = "keep_last"
  supports_embedding = True
  layer_dependent = False

  def max_remove(self, num_tokens, num_prefix):
    return num_tokens - num_prefix - 1

  def reduce(self, x, size, stats, *, num_keep, num_prefix, layer):
    return jnp.concatenate([x[:, :num_prefix], x[:, x.shape[1] - (num_keep - num_prefix):]],
                           axis=1), size

  def reduce_embedding(self, x, *, num_keep, num_prefix):
    return self.reduce(x, None, None, num_keep=num_keep, num_prefix=num_prefix, layer=-1)[0]


REDUCER = KeepLastPatches()


def _images(n, seed=1):
  return np.random.default_rng(seed).normal(size=(n, 32, 32, 3)).astype(np.float32)


def _ref(params, x):
  return np.asarray(jitted_forward(params, x, cfg=CFG, schedule=SCHED, reducer=REDUCER))


def _env():
  return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
              JAX_PLATFORMS="cpu")


@pytest.fixture(scope="module")
def params():
  return init_params(CFG, seed=0)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, params):
  out = tmp_path_factory.mktemp("art") / "fixed"
  return deploy.export_artifact(str(out), CFG, params, schedule=SCHED, reducer=REDUCER,
                                reducer_name="keep_last", reducer_options={"k": 1},
                                batch_size=3, provenance={"note": "test"},
                                class_names=[f"c{i}" for i in range(10)])


def _copy(artifact, tmp_path):
  dst = str(tmp_path / "copy")
  shutil.copytree(artifact, dst)
  return dst


def _edit_manifest(path, fn):
  mf = os.path.join(path, deploy.MANIFEST_FILE)
  with open(mf) as f:
    doc = json.load(f)
  fn(doc)
  with open(mf, "w") as f:
    json.dump(doc, f)


def _resave_params(path, params):
  pdir = os.path.join(path, deploy.PARAMS_DIR)
  shutil.rmtree(pdir)
  ckptr = orbax_io.checkpointer()
  ckptr.save(pdir, jax.tree.map(np.asarray, params))
  ckptr.wait_until_finished()


# ----------------------------------------------------------------------------- round trip


def test_round_trip_fixed_batch_equals_jitted_forward(artifact, params):
  assert sorted(os.listdir(artifact)) == [".vitprune-files.json", "forward.jax_export",
                                          "manifest.json", "params"]
  model = deploy.load(artifact)
  x = _images(3)
  got = np.asarray(model(x))
  assert got.shape == (3, 10) and got.dtype == np.float32
  np.testing.assert_array_equal(got, _ref(params, x))
  # The reduction actually happens: the exported graph carries 9 tokens of width 32 after it.
  # (Not "the unpruned graph gives other logits": block 1, the last, drops tokens after its
  # attention, so the class token's output is the same in exact arithmetic, and on some CPUs
  # in float32 too.)
  hlo = model.exported.mlir_module()
  assert "tensor<3x9x32xf32>" in hlo and "tensor<3x17x32xf32>" in hlo
  assert model.batch_size == 3 and model.input_shape == (3, 32, 32, 3)
  assert model.preprocessing == CFG.preprocessing
  assert model.platforms == ("cpu",) and model.num_outputs == 10
  assert model.class_names == [f"c{i}" for i in range(10)]
  m = model.manifest.to_json()
  assert m == deploy.read_manifest(artifact).to_json()
  assert (m["format"], m["version"]) == ("vitprune-deploy", 2)
  assert m["schedule"]["counts"] == [17, 17, 9]
  assert m["schedule"]["text"] == format_schedule(SCHED, CFG)
  assert m["reducer"]["name"] == "keep_last" and m["reducer"]["options"] == {"k": 1}
  assert m["reducer"]["fields"] == {"needs_attention": False, "tracks_size": False}
  assert m["input"] == {"layout": "NHWC", "shape": [3, 32, 32, 3], "dtype": "float32",
                        "batch_size": 3, "symbolic_batch": False}
  assert m["output"] == {"shape": [3, 10], "dtype": "float32", "kind": "logits"}
  assert m["model"]["config"]["name"] == "test_tiny_vit"
  assert m["model"]["config"]["embed_dim"] == 32
  assert m["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
  assert m["weights"]["sha256"] == deploy.params_sha256(params)
  assert m["weights"]["num_params"] == sum(np.size(v) for v in jax.tree.leaves(params))
  assert m["weights"]["leaves"]["['pos_embed']"] == {"shape": [1, 17, 32], "dtype": "float32"}
  assert m["platforms"] == ["cpu"] and m["provenance"] == {"note": "test"}
  assert m["compute"] == {"dtype": "float32", "precision": "highest"}
  assert m["versions"]["jax"] == jax.__version__ and m["versions"]["vitprune"] == "0.1.0"
  assert m["created"].endswith("+00:00")
  # Params are arguments of the exported function, not baked-in constants.
  assert len(model.exported.in_avals) == len(jax.tree.leaves(params)) + 1
  assert os.path.getsize(os.path.join(artifact, deploy.FORWARD_FILE)) < 100_000


def test_call_rejects_wrong_shapes(artifact):
  model = deploy.load(artifact)
  with pytest.raises(ValueError, match="batch size 3, got 2"):
    model(_images(2))
  with pytest.raises(ValueError, match=r"expects images \[B, 32, 32, 3\]"):
    model(np.zeros((3, 16, 16, 3), np.float32))


@pytest.mark.parametrize("images, match", [
    (np.zeros((3, 32, 32, 3), np.uint8), "images must be floating point, .* got uint8 pixels"),
    (np.zeros((3, 32, 32, 3), bool), "got bool pixels"),
    (np.zeros((3, 32, 32, 3), np.int32).tolist(), "got int64 pixels"),
    (np.full((3, 32, 32, 3), np.nan, np.float32), "images hold NaN or inf values"),
    (np.full((3, 32, 32, 3), None, object),
     r"^images must be one \[B, H, W, C\] array of numbers, got objects among them \(None\?\)$"),
    (np.array([np.zeros((32, 32, 3)), "x"], object),       # (numpy's ValueError about sequences)
     r"^images must be one \[B, H, W, C\] array of numbers \(setting an array element"),
    ([np.zeros((32, 32, 3))] * 2 + [np.zeros((31, 32, 3))],               # (ragged: numpy's)
     r"^images must be one \[B, H, W, C\] array of numbers \(.*inhomogeneous"),
    (np.zeros((3, 32, 32, 3), np.int64).astype(object),    # (raw pixels: a float32 cast took
     "got int64 pixels"),                                  # them as preprocessed)
])
def test_call_rejects_raw_pixels_and_non_finite_images(artifact, images, match):
  """Raw 0..255 digits ran as floats and gave wrong classes; NaN gave NaN logits (argmax 0)."""
  with pytest.raises(ValueError, match=match):
    deploy.load(artifact)(images)


def test_call_refuses_outputs_that_are_not_finite(artifact):
  """Finite images of 3e38 (no preprocessing) gave all-NaN logits, read as class 0."""
  x = _images(3)
  x[1] = 3e38
  with pytest.raises(FloatingPointError, match=r"^the model's outputs are NaN/inf for 1 of 3 "
                     r"images \(first: batch row 1\), whose values reach 3e\+38: are they "
                     r"preprocessed"):
    deploy.load(artifact)(x)


def test_one_non_finite_output_in_a_row_is_enough_to_refuse_it():
  """A row with a single NaN or inf logit among finite ones is refused like an all-NaN row (a
  check of whole rows only let it through, read as whatever class the finite logits gave)."""
  from vitprune.edge.runtime import check_finite_outputs  # pylint: disable=g-import-not-at-top
  images = np.zeros((3, 4, 4, 3), np.float32)
  good = np.arange(30, dtype=np.float32).reshape(3, 10)
  assert check_finite_outputs(good, images) is good
  for bad in (np.nan, np.inf, -np.inf):
    out = good.copy()
    out[2, 7] = bad
    with pytest.raises(FloatingPointError, match=r"NaN/inf for 1 of 3 images \(first: batch "
                                                 r"row 2\)"):
      check_finite_outputs(out, images)


def test_call_takes_lists_and_other_float_dtypes(artifact, params):
  model, x = deploy.load(artifact), _images(3)
  want = np.asarray(model(x))
  np.testing.assert_array_equal(np.asarray(model(x.tolist())), want)
  np.testing.assert_array_equal(np.asarray(model(x.astype(np.float64))), want)


def test_symbolic_batch_runs_at_several_batch_sizes(tmp_path, params):
  path = deploy.export_artifact(str(tmp_path / "sym"), CFG, params, schedule=SCHED,
                                reducer=REDUCER, batch_size=None, verify=False)
  model = deploy.load(path)
  assert model.batch_size is None and model.input_shape == (None, 32, 32, 3)
  assert model.manifest.to_json()["input"]["shape"] == ["b", 32, 32, 3]
  assert model.manifest.to_json()["input"]["symbolic_batch"] is True
  for n in (1, 4):
    x = _images(n, seed=n)
    np.testing.assert_array_equal(np.asarray(model(x)), _ref(params, x))
  with pytest.raises(ValueError, match="^empty batch$"):     # (only a symbolic batch takes 0
    model(np.zeros((0, 32, 32, 3), np.float32))             # rows to the check: mutation audit)


def test_multi_platform_export_on_cpu(tmp_path, params):
  path = deploy.export_artifact(str(tmp_path / "multi"), CFG, params, schedule=SCHED,
                                reducer=REDUCER, platforms=("cpu", "cuda"), batch_size=2,
                                verify=False)
  with open(os.path.join(path, deploy.FORWARD_FILE), "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  assert exported.platforms == ("cpu", "cuda")
  model = deploy.load(path)
  assert model.manifest.to_json()["platforms"] == ["cpu", "cuda"]
  x = _images(2)
  np.testing.assert_array_equal(np.asarray(model(x)), _ref(params, x))


def test_artifact_for_other_platform_is_refused(tmp_path, params):
  path = deploy.export_artifact(str(tmp_path / "gpu"), CFG, params, schedule=SCHED,
                                reducer=REDUCER, platforms=["cuda", "tpu"])
  with open(os.path.join(path, deploy.MANIFEST_FILE)) as f:
    assert json.load(f)["platforms"] == ["cuda", "tpu"]
  with pytest.raises(deploy.ArtifactError, match=r"exported for platforms \['cuda', 'tpu'\], "
                     r"but this host runs 'cpu'"):
    deploy.load(path)


def test_params_sha256_depends_on_names_and_values(params):
  h = deploy.params_sha256(params)
  assert h == deploy.params_sha256(jax.tree.map(np.asarray, params))
  bumped = jax.tree.map(lambda a: a, params)
  bumped["head"] = {"kernel": params["head"]["kernel"].at[0, 0].add(1e-3),
                    "bias": params["head"]["bias"]}
  assert deploy.params_sha256(bumped) != h
  renamed = dict(params)
  renamed["head2"] = renamed.pop("head")
  assert deploy.params_sha256(renamed) != h


def test_normalize_platforms():
  assert deploy.normalize_platforms(None) == ("cpu",)
  assert deploy.normalize_platforms("CPU, cuda") == ("cpu", "cuda")
  with pytest.raises(ValueError, match="unknown platform 'gpu'"):
    deploy.normalize_platforms(["gpu"])
  with pytest.raises(ValueError, match="given twice"):
    deploy.normalize_platforms(["cpu", "cpu"])
  with pytest.raises(ValueError, match="no platform"):
    deploy.normalize_platforms([])


# ----------------------------------------------------------------------------- validation


def test_tampered_weights_fail_the_hash(artifact, params, tmp_path):
  path = _copy(artifact, tmp_path)
  bumped = jax.tree.map(lambda a: a, params)
  bumped["pos_embed"] = params["pos_embed"] + 1e-4
  _resave_params(path, bumped)
  with pytest.raises(deploy.ArtifactError, match="weights sha256 .* does not match"):
    deploy.load(path)


def test_tampered_manifest_hash_fails(artifact, tmp_path):
  path = _copy(artifact, tmp_path)
  _edit_manifest(path, lambda d: d["weights"].__setitem__("sha256", "0" * 64))
  with pytest.raises(deploy.ArtifactError, match="does not match the manifest's 0000"):
    deploy.load(path)


def test_weights_of_another_shape_fail(artifact, tmp_path):
  path = _copy(artifact, tmp_path)
  wide = init_params(CFG.replace(num_classes=7), seed=0)  # head [32, 7] instead of [32, 10]
  _resave_params(path, wide)
  with pytest.raises(deploy.ArtifactError, match=r"\['head'\]\['bias'\]: \{'shape': \[7\]"):
    deploy.load(path)


def test_manifest_leaf_listing_must_match_exported(artifact, tmp_path):
  path = _copy(artifact, tmp_path)

  def drop_cls_token(d):                  # num_params kept consistent (else that is refused)
    gone = d["weights"]["leaves"].pop("['cls_token']")
    d["weights"]["num_params"] -= int(np.prod(gone["shape"]))

  _edit_manifest(path, drop_cls_token)
  with pytest.raises(deploy.ArtifactError, match=r"weight listing .* missing "
                     r"\[\"\['cls_token'\]\"\]"):
    deploy.load(path)


def test_manifest_platforms_must_match_exported(artifact, tmp_path):
  path = _copy(artifact, tmp_path)
  _edit_manifest(path, lambda d: d.__setitem__("platforms", ["cpu", "cuda"]))
  with pytest.raises(deploy.ArtifactError, match=r"manifest platforms \['cpu', 'cuda'\] do "
                     r"not match the exported forward's \['cpu'\]"):
    deploy.load(path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.__setitem__("version", 3), r"unsupported format version 3 \(this vitprune "
                                            r"reads versions 1 and 2\)"),
    (lambda d: d.__setitem__("version", True), "unsupported format version True"),
    (lambda d: d["input"].__setitem__("dtype", "float64"), "input.dtype 'float64' is not"),
    (lambda d: d["output"].__setitem__("dtype", "int8"), "output.dtype 'int8' is not"),
    (lambda d: d.__setitem__("format", "other"), "format 'other' is not 'vitprune-deploy'"),
    (lambda d: d.pop("weights"), r"lacks required entries \['weights'\]"),
    # (each key: a bare KeyError naming no file otherwise; mutation audit)
    (lambda d: [d.pop(k) for k in ("platforms", "files")],
     r"lacks required entries \['platforms', 'files'\]"),
    (lambda d: d.__setitem__("reducer", None), "reducer is null but schedule.counts reduce "
                                              "tokens"),
    (lambda d: d["compute"].__setitem__("precision", "bogus"),
     r"compute.precision 'bogus' not in \("),
    (lambda d: d.__setitem__("provenance", [1, 2]), r"provenance must be an object, got \[1, 2\]"),
    (lambda d: d.__setitem__("versions", "x"), "versions must be an object, got 'x'"),
    (lambda d: d.__setitem__("platforms", []), r"platforms must be a non-empty list of names, "
                                               r"got \[\]"),
    (lambda d: d.__setitem__("platforms", ["cpu", 3]), r"platforms must be a non-empty list"),
    (lambda d: d["input"].__setitem__("symbolic_batch", True),   # said "must be ... an int
     "input.batch_size must be null with symbolic_batch true, else an int >= 1; got 3 with "
     "symbolic_batch true"),                                    # >= 1, got 3"
])
def test_bad_manifest_is_refused(artifact, tmp_path, edit, message):
  path = _copy(artifact, tmp_path)
  _edit_manifest(path, edit)
  with pytest.raises(deploy.ArtifactError, match=message):
    deploy.load(path)


def test_a_schedule_text_is_checked_by_the_counts_it_parses_to(artifact, tmp_path):
  """A manifest's schedule text must parse to its counts, not equal today's compact form:
  an artifact of 2026-12-05 wrote a constant-r schedule as list:..., which is now rN, and would
  have been refused as edited."""
  for text in ("keep@1:9", "list:17,17,9", "embed:17+keep@1:9", "remove@1:8"):
    path = _copy(artifact, tmp_path / text.replace(":", "_"))
    _edit_manifest(path, lambda d, text=text: d["schedule"].__setitem__("text", text))
    assert deploy.load(path).manifest.counts == SCHED.counts
  for text, why in (("r8", "'r8'"), ("keep@1:", "'keep@1:'"), (9, "9")):
    path = _copy(artifact, tmp_path / f"bad{why}")
    _edit_manifest(path, lambda d, text=text: d["schedule"].__setitem__("text", text))
    with pytest.raises(deploy.ArtifactError, match=re.escape(
        f"schedule.text {why} does not describe schedule.counts [17, 17, 9] ('keep@1:9')")):
      deploy.load(path)


EDITED = "identity does not match the manifest's fields|does not describe the exported forward"


@pytest.mark.parametrize("edit, message", [
    # What the graph computes cannot be re-described: each edit is refused by name.
    (lambda d: d["schedule"].__setitem__("text", "full"), "schedule.text 'full' does not describe"),
    (lambda d: d["schedule"].update(counts=[17, 17, 17], text="full"),
     EDITED),
    (lambda d: d["preprocessing"].__setitem__("mean", [0.1, 0.2, 0.3]),
     "preprocessing does not match model.config.preprocessing"),
    (lambda d: (d["preprocessing"].__setitem__("mean", [0.1, 0.2, 0.3]),
                d["model"]["config"]["preprocessing"].__setitem__("mean", [0.1, 0.2, 0.3])),
     EDITED),
    (lambda d: d["input"].__setitem__("shape", [4, 32, 32, 3]), r"input.shape \[4, 32, 32, 3\]"),
    (lambda d: d["class_names"].reverse(), EDITED),
    # Without its identity entry, the exported forward's own identity still refuses it.
    (lambda d: (d.pop("identity"), d["class_names"].reverse()),
     "the manifest does not describe the exported forward"),
    (lambda d: d["reducer"].__setitem__("name", "pomt"),
     EDITED),
    (lambda d: d["compute"].__setitem__("dtype", "float64"), "compute.dtype 'float64'"),
    (lambda d: d["compute"].__setitem__("precision", "default"), EDITED),   # (it loaded)
    (lambda d: d["model"].__setitem__("name", "vit_digits"), "model.name 'vit_digits' != config "
     "name 'test_tiny_vit'"),
    (lambda d: (d.pop("identity"), d["input"].update(batch_size=0, shape=[0, 32, 32, 3]),
                d["output"].update(shape=[0, 10])),
     r"input.batch_size must be null with symbolic_batch true, else an int >= 1; got 0"),
    (lambda d: d.__setitem__("class_names", list(range(10))), "class_names must be null or 10 "
     "strings"),
    (lambda d: d["files"].__setitem__("params", ".."), "must be a plain name"),
    (lambda d: d["model"]["config"].__setitem__("depth", None), "model.config"),
    (lambda d: d["files"].__setitem__("forward", "../x"), "must be a plain name"),
    (lambda d: d.__setitem__("class_names", ["a"]), "class_names must be null or 10 strings"),
    (lambda d: d.__setitem__("identity", "0" * 64), "identity does not match"),
    # Digests are held to vitprune's form: 64 lower-case hex digits, not any 64 characters.
    (lambda d: d["weights"].__setitem__("sha256", "z" * 64),
     "weights.sha256 must be a sha256 hex digest .* got 'zzz"),
    (lambda d: d["weights"].__setitem__("sha256", d["weights"]["sha256"].upper()),
     "weights.sha256 must be a sha256 hex digest"),
    (lambda d: d["files"].__setitem__("forward_sha256", "x" * 64),
     "files.forward_sha256 must be a sha256 hex digest"),
    # Fields that describe the graph or the weights were taken as given (a probe's edits).
    (lambda d: d["input"].__setitem__("layout", "NCHW"), "input.layout 'NCHW' is not 'NHWC'"),
    (lambda d: d["output"].__setitem__("kind", "features"),
     "output.kind 'features' is not 'logits' for num_classes=10"),
    (lambda d: d["weights"].__setitem__("num_params", 5),
     r"weights.num_params 5 is not the \d+ parameters its leaves list"),
    (lambda d: d["weights"].__setitem__("sha256_of", "bananas"),
     "weights.sha256_of 'bananas' is not"),
    # A leaf listing edited huge was reported as a memory error by run_deployed.
    (lambda d: next(iter(d["weights"]["leaves"].values())).__setitem__("shape", [10 ** 12]),
     r"weights.num_params \d+ is not the 1000000\d+ parameters its leaves list"),
    # The training-data guard reads the weights' split from the source: no longer editable.
    (lambda d: d["weights"].__setitem__("source", {"meta": {"split": {"seed": 7}}}),
     "weights.source no longer hashes to weights.source_sha256"),
    # ... nor by deleting the digest too (version 2 records it), nor any field every version
    # wrote.
    (lambda d: (d["weights"].pop("source_sha256"), d["weights"].update(source={})),
     r"lacks \['weights.source_sha256'\]"),
    (lambda d: (d["weights"].pop("num_params"), d["output"].pop("kind")),
     r"lacks \['weights.num_params', 'output.kind'\]"),
    (lambda d: d["input"].pop("layout"), r"lacks \['input.layout'\]"),
    (lambda d: d["weights"].update(source="x"), "weights.source must be an object, got str"),
    (lambda d: d["schedule"].__setitem__("counts", [17, 17, 9.0]),
     r"schedule.counts must be a list of ints, got \[17, 17, 9.0\]"),
    (lambda d: d["weights"].__setitem__("num_params", d["weights"]["num_params"] + 1),
     r"weights.num_params \d+ is not the \d+ parameters its leaves list"),
    (lambda d: d.__setitem__("targets", ["iree:host"]),
     r"targets must be a list of target names starting with 'jax', got \['iree:host'\]"),
    (lambda d: d["reducer"]["options"].__setitem__("k", 2), EDITED),
    (lambda d: d["files"].__setitem__("params", ""), "files.params must be a non-empty string"),
    # From a mutation audit (each check's removal passed every test):
    (lambda d: d["files"].__setitem__("forward", ""), "files.forward must be a non-empty string"),
    (lambda d: d.__setitem__("targets", ["jax", 3]),
     r"targets must be a list of target names starting with 'jax', got \['jax', 3\]"),
    (lambda d: d["output"].__setitem__("shape", [3, 11]),
     r"output.shape \[3, 11\] is not \[3, 10\] for test_tiny_vit"),
    (lambda d: d["input"].__setitem__("symbolic_batch", "no"),
     "input.symbolic_batch must be true or false"),
    (lambda d: d["input"].__setitem__("symbolic_batch", 0),
     "input.symbolic_batch must be true or false, got 0$"),
    (lambda d: d["weights"].__setitem__("leaves", []), "weights.leaves must be an object"),
    (lambda d: d["reducer"].__setitem__("name", 3), "reducer must be null or an object with a "
                                                    "name"),
])
def test_edited_manifest_is_refused(artifact, tmp_path, edit, message):
  path = _copy(artifact, tmp_path)
  _edit_manifest(path, edit)
  with pytest.raises(deploy.ArtifactError, match=message):
    deploy.load(path)


@pytest.mark.parametrize("shape", [[-3, 5], [True, 5], ["8"], None])
def test_listed_param_count_refuses_a_bad_listing(artifact, tmp_path, shape):
  # read_manifest leaves a malformed leaf shape to the check against the exported forward;
  # run_deployed's memory check counted [-3, 5] as -15 parameters and [True, 5] as 5.
  path = _copy(artifact, tmp_path)
  _edit_manifest(path, lambda d: next(iter(d["weights"]["leaves"].values())).__setitem__(
      "shape", shape))
  manifest = deploy.read_manifest(path)
  with pytest.raises(deploy.ArtifactError, match=r"weights.leaves is not a listing of leaf "
                     r"shapes \(edited\?\)$"):
    deploy.listed_param_count(manifest)
  assert deploy.listed_param_count(deploy.read_manifest(artifact)) == sum(
      int(np.prod(leaf["shape"])) for leaf in deploy.read_manifest(artifact).weights[
          "leaves"].values())


def test_a_features_manifest_is_read_and_written_as_features(artifact):
  """A headless model's manifest: output [B, embed_dim] of kind 'features' (every artifact
  tested had a classifier head)."""
  doc = deploy.read_manifest(artifact).to_json()
  doc["model"]["config"]["num_classes"] = 0
  doc["output"].update(shape=[3, CFG.embed_dim], kind="features")
  doc.update(class_names=None)
  doc.pop("identity")
  m = deploy.Manifest.from_json(doc)
  assert m.config.num_classes == 0 and m.output_shape == (3, CFG.embed_dim)
  assert m.to_json()["output"] == {"shape": [3, CFG.embed_dim], "dtype": "float32",
                                   "kind": "features"}


def test_listed_count_counts_empty_and_scalar_leaves():
  from vitprune.records.manifest import listed_count  # pylint: disable=g-import-not-at-top
  assert listed_count({"a": {"shape": [0, 4]}, "b": {"shape": [2, 3]}, "c": {"shape": []}}) == 7
  assert listed_count({"a": {"shape": [2, -1]}}) is None


def test_null_provenance_and_versions_read_as_empty(artifact, tmp_path):
  path = _copy(artifact, tmp_path)
  _edit_manifest(path, lambda d: d.update(provenance=None, versions=None))
  m = deploy.read_manifest(path)
  assert m.provenance == {} and m.versions == {}


def test_corrupt_manifest_json(artifact, tmp_path):
  path = _copy(artifact, tmp_path)
  with open(os.path.join(path, deploy.MANIFEST_FILE), "w") as f:
    f.write("{not json")
  with pytest.raises(deploy.ArtifactError, match="manifest.json is corrupted"):
    deploy.load(path)


@pytest.mark.parametrize("victim, message", [
    ("manifest.json", "manifest.json is missing"),
    ("forward.jax_export", "exported forward forward.jax_export is missing"),
    ("params", r"weights checkpoint params/ is missing"),
])
def test_missing_files(artifact, tmp_path, victim, message):
  path = _copy(artifact, tmp_path)
  target = os.path.join(path, victim)
  shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
  with pytest.raises(deploy.ArtifactError, match=message):
    deploy.load(path)


def test_a_folder_where_the_exported_forward_was_is_named_as_one(artifact, tmp_path):
  """An edited manifest naming a folder as the forward (files.forward='params') was told
  "the exported forward params is missing"."""
  path = _copy(artifact, tmp_path)
  doc = json.load(open(os.path.join(path, deploy.MANIFEST_FILE)))
  doc["files"]["forward"] = "params"
  with open(os.path.join(path, deploy.MANIFEST_FILE), "w") as f:
    json.dump(doc, f)
  with pytest.raises(deploy.ArtifactError, match=r": the exported forward params is a folder, "
                     r"not a file$"):
    deploy.load(path)


def test_missing_directory(tmp_path):
  with pytest.raises(deploy.ArtifactError, match="is not a deployment artifact directory"):
    deploy.load(str(tmp_path / "nope"))


def test_corrupt_forward_file(artifact, tmp_path):
  path = _copy(artifact, tmp_path)
  fwd = os.path.join(path, deploy.FORWARD_FILE)
  blob = bytearray(open(fwd, "rb").read())
  blob[len(blob) // 2] ^= 0xFF
  open(fwd, "wb").write(bytes(blob))
  with pytest.raises(deploy.ArtifactError, match="sha256 .* does not match the manifest"):
    deploy.load(path)
  # A garbage file whose hash was "fixed up" in the manifest still fails clearly.
  open(fwd, "wb").write(b"garbage")
  import hashlib
  _edit_manifest(path, lambda d: d["files"].__setitem__(
      "forward_sha256", hashlib.sha256(b"garbage").hexdigest()))
  with pytest.raises(deploy.ArtifactError, match="cannot be deserialized"):
    deploy.load(path)


def test_a_forward_of_a_calling_convention_this_jax_does_not_run_is_refused(artifact,
                                                                           monkeypatch):
  """An artifact exported by a newer jax (calling convention 11 for a jax running 9..10) was
  deserialized and called: jax checks the version only when it exports."""
  import jax  # pylint: disable=g-import-not-at-top
  version = int(deploy.load(artifact).exported.calling_convention_version)
  monkeypatch.setattr(jax.export, "maximum_supported_calling_convention_version", version - 1)
  monkeypatch.setattr(jax.export, "minimum_supported_calling_convention_version", version - 2)
  with pytest.raises(deploy.ArtifactError, match=rf": the exported forward uses jax.export "
                     rf"calling convention version {version}, this jax \S+ runs versions "
                     rf"{version - 2}\.\.{version - 1}: re-export it with this jax"):
    deploy.load(artifact)


# ----------------------------------------------------------------------------- atomicity


class _FailingCheckpointer:

  def save(self, path, tree):
    os.makedirs(path)
    with open(os.path.join(path, "partial"), "w") as f:
      f.write("x")
    raise OSError("disk full (simulated)")


def test_an_artifact_a_killed_deploy_moved_aside_is_put_back_before_the_export(
    tmp_path, params, artifact, monkeypatch):
  """A deploy killed while replacing left the old artifact aside and `--out` empty: the next
  deploy (no --overwrite) passed the check, exported, then put the old one back and was refused
  after the work (a review)."""
  out = tmp_path / "art"
  aside = tmp_path / ".art.old-999999999-abc"          # no such process
  shutil.copytree(artifact, aside / "art")
  out.mkdir()
  monkeypatch.setattr(deploy, "export_forward", lambda *a, **k: pytest.fail("exported"))
  with pytest.raises(FileExistsError, match="already exists"):
    deploy.export_artifact(str(out), CFG, params, schedule=SCHED, reducer=REDUCER,
                           reducer_name="keep_last", batch_size=2)
  assert deploy.read_manifest(str(out)) and not aside.exists()


def test_failed_export_leaves_nothing(tmp_path, params, monkeypatch):
  monkeypatch.setattr(orbax_io, "checkpointer", _FailingCheckpointer)
  with pytest.raises(OSError, match="disk full"):
    deploy.export_artifact(str(tmp_path / "art"), CFG, params, schedule=SCHED,
                           reducer=REDUCER)
  assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_old_artifact(artifact, tmp_path, params, monkeypatch):
  path = _copy(artifact, tmp_path)
  before = {n: os.path.getmtime(os.path.join(path, n)) for n in os.listdir(path)}
  monkeypatch.setattr(orbax_io, "checkpointer", _FailingCheckpointer)
  with pytest.raises(OSError, match="disk full"):
    deploy.export_artifact(path, CFG, params, overwrite=True)
  monkeypatch.undo()
  assert sorted(os.listdir(tmp_path)) == ["copy"]
  assert {n: os.path.getmtime(os.path.join(path, n)) for n in os.listdir(path)} == before
  assert deploy.load(path).manifest.to_json()["schedule"]["counts"] == [17, 17, 9]


def test_export_argument_errors(artifact, tmp_path, params):
  with pytest.raises(FileExistsError, match="already exists"):
    deploy.export_artifact(artifact, CFG, params)
  with pytest.raises(ValueError, match="batch_size must be a positive int or None"):
    deploy.export_artifact(str(tmp_path / "a"), CFG, params, batch_size=0)
  with pytest.raises(ValueError, match="reduces tokens but no reducer"):
    deploy.export_artifact(str(tmp_path / "a"), CFG, params, schedule=SCHED)
  with pytest.raises(ValueError, match=r"^IREE targets need a fixed batch size: a symbolic "
                     r"batch \(batch_size=None\) exports for jax only, not for iree:host$"):
    deploy.export_artifact(str(tmp_path / "a"), CFG, params, batch_size=None,
                           targets=["jax", "iree:host"])
  with pytest.raises(ValueError, match=r"^IREE targets compile float32 graphs only \(a bfloat16 "
                     r"dot_general does not legalize for iree:cuda:sm_87\); export bfloat16 for "
                     r"targets=\['jax'\] alone$"):      # (after the export and each compile)
    deploy.export_artifact(str(tmp_path / "a"), CFG, params, batch_size=1, dtype="bfloat16",
                           targets=["jax", "iree:cuda:sm_87"])
  with pytest.raises(ValueError, match="class_names has 3 names but the model has 10 classes"):
    deploy.export_artifact(str(tmp_path / "a"), CFG, params, class_names=["a", "b", "c"])
  # A NaN in the provenance failed when the manifest was written, after the export (and every
  # IREE compile), as json's anonymous "Out of range float values are not JSON compliant".
  for kw, said in (({"provenance": {"acc": float("nan")}}, r"provenance\['acc'\] is nan"),
                   ({"weights_source": {"x": [float("inf")]}},
                    r"weights_source\['x'\]\[0\] is inf")):
    with pytest.raises(ValueError, match=f"^{said}, which a JSON file cannot hold$"):
      deploy.export_artifact(str(tmp_path / "a"), CFG, params, **kw)
  assert not os.path.exists(tmp_path / "a")
  with pytest.raises(ValueError, match="class_names must be a list of non-empty strings, got "
                     "'0123456789'"):          # (was taken as ten one-letter names)
    deploy.export_artifact(str(tmp_path / "a"), CFG, params, class_names="0123456789")
  # As weights hold them: distinct non-empty names (ten 'a', '' or None were exported, and
  # None loaded back as 'None').
  for names, match in ((["a"] * 10, r"class_names repeats \['a'\]"),
                       ([""] * 10, "non-empty strings"), ([None] * 10, "non-empty strings")):
    with pytest.raises(ValueError, match=match):
      deploy.export_artifact(str(tmp_path / "a"), CFG, params, class_names=names)
  # A switch given as a string ('no' is truthy: it replaced the artifact there).
  for kw in (dict(overwrite="no"), dict(verify="no")):
    with pytest.raises(TypeError, match=f"^{next(iter(kw))} must be True or False, got 'no'$"):
      deploy.export_artifact(artifact, CFG, params, **kw)
  assert deploy.load(artifact).manifest.to_json()["schedule"]["counts"] == [17, 17, 9]
  with pytest.raises(ValueError, match="parameters do not match"):
    deploy.export_artifact(str(tmp_path / "a"), CFG, {"head": params["head"]})
  # A config built without its preprocessing (224 px for a 32 px model): refused up front, not
  # by the manifest reader after the whole export, naming the staging folder.
  odd = dataclasses.replace(CFG, preprocessing=dataclasses.replace(CFG.preprocessing,
                                                                   input_size=224))
  with pytest.raises(ValueError, match=rf"^{CFG.name}: preprocessing.input_size 224 differs "
                                       rf"from img_size {CFG.img_size}: the images it makes "
                                       "would not fit the model$"):
    deploy.export_artifact(str(tmp_path / "a"), odd, params)
  assert os.listdir(tmp_path) == []
  with pytest.raises(OSError, match="^/ is a mount point, which cannot be replaced"):
    deploy.export_artifact("/", CFG, params, overwrite=True)


def test_export_into_an_empty_directory(tmp_path, params):
  """The CLI accepted an empty --out and the library then refused it ('already exists'); the
  CLI itself takes an empty one without --overwrite, with the --precision it is given."""
  from experiments import common  # pylint: disable=g-import-not-at-top
  from experiments import deploy as deploy_cli  # pylint: disable=g-import-not-at-top
  (tmp_path / "a").mkdir()
  deploy.export_artifact(str(tmp_path / "a"), CFG, params)
  assert deploy.load(str(tmp_path / "a")).manifest.to_json()["model"]["name"] == CFG.name
  weights = save_weights(str(tmp_path / "w"), CFG, params)
  (tmp_path / "b").mkdir()
  common.run_in_process(deploy_cli.main, deploy_cli.define_flags, [
      f"--weights={weights}", "--schedule=keep@1:9", "--method=pomt", "--noverify",
      "--precision=default", f"--out={tmp_path / 'b'}"])
  assert deploy.load(str(tmp_path / "b")).manifest.precision == "default"
  common.check_new_dir(str(tmp_path / "empty_too"), "out")
  (tmp_path / "empty_too").mkdir()
  common.check_new_dir(str(tmp_path / "empty_too"), "out")          # empty: no --overwrite
  (tmp_path / "empty_too" / "x").write_text("x")
  with pytest.raises(FileExistsError, match="already exists \\(pass --overwrite"):
    common.check_new_dir(str(tmp_path / "empty_too"), "out")


def test_run_deployed_times_a_symbolic_artifact_at_batch_8_unless_told():
  from experiments import run_deployed  # pylint: disable=g-import-not-at-top
  assert run_deployed.choose_batch_size(None, None) == 8       # symbolic batch: the default
  assert run_deployed.choose_batch_size(None, 3) == 3
  assert run_deployed.choose_batch_size(4, None) == 4          # fixed: the artifact's own
  with pytest.raises(ValueError, match="exported for batch size 4, --batch_size=3 differs"):
    run_deployed.choose_batch_size(4, 3)
  with pytest.raises(ValueError, match="--batch_size must be >= 1, got 0"):
    run_deployed.choose_batch_size(None, 0)


# ----------------------------------------------------------------------------- fresh process


def test_fresh_process_loads_without_model_code(artifact, params, tmp_path):
  x = _images(3, seed=7)
  np.save(tmp_path / "x.npy", x)
  code = f"""
import json, sys, numpy as np
import vitprune
model = vitprune.load({artifact!r})
out = np.asarray(model(np.load({str(tmp_path / 'x.npy')!r})))
np.save({str(tmp_path / 'y.npy')!r}, out)
print(json.dumps({{"model": "vitprune.model" in sys.modules,
                  "checkpoint": "vitprune.checkpoint" in sys.modules,
                  "reduce": any(m.startswith("vitprune.reduce") for m in sys.modules)}}))
"""
  res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=_env(), cwd=str(tmp_path), timeout=120)
  assert res.returncode == 0, res.stderr[-3000:]
  assert json.loads(res.stdout.strip().splitlines()[-1]) == {
      "model": False, "checkpoint": False, "reduce": False}
  np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), _ref(params, x))


def test_a_constant_r_schedule_is_read_without_jax_or_reducers(params, tmp_path):
  """Checking a manifest's rN text (or an older list:... of the same counts) imported ToMe and
  with it jax: a board reading a ToMe artifact's manifest failed ('import of jax halted')."""
  path = deploy.export_artifact(str(tmp_path / "r2"), CFG, params,
                                schedule=Schedule((17, 15, 13)), reducer=REDUCER, batch_size=1,
                                verify=False)
  assert json.load(open(os.path.join(path, deploy.MANIFEST_FILE)))["schedule"]["text"] == "r2"
  old = _copy(path, tmp_path / "old")
  _edit_manifest(old, lambda d: d["schedule"].__setitem__("text", "list:17,15,13"))
  code = f"""
import json, sys
for m in ('jax', 'jaxlib', 'flax', 'orbax', 'orbax.checkpoint'):
  sys.modules[m] = None
from vitprune.records.manifest import read_manifest
print(json.dumps([list(read_manifest(p).counts) for p in ({path!r}, {old!r})]
                 + [any(m.startswith("vitprune.reduce") for m in sys.modules)]))
"""
  res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=_env(), cwd=str(tmp_path), timeout=120)
  assert res.returncode == 0, res.stderr[-3000:]
  assert json.loads(res.stdout.strip().splitlines()[-1]) == [[17, 15, 13], [17, 15, 13], False]


# ----------------------------------------------------------------------------- CLIs


def _cli(module, *args, cwd=REPO):
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                        env=_env(), cwd=cwd, timeout=180)


def _cli_here(module, *args):
  """`_cli` run in this process (no python + jax start-up): a CompletedProcess-like result."""
  code, out, err = run_cli_in_process(REPO, module.split(".", 1)[1], list(args))
  return subprocess.CompletedProcess([module, *args], code, out, err)


def _write_pngs(root, layout):
  rng = np.random.default_rng(0)
  for rel in layout:
    os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(
        os.path.join(root, rel))


def test_classify_reports_every_image_once_with_its_softmax_probability(artifact, tmp_path):
  """4 images at batch 3: the padded rows of the last batch are left out (a mask that kept
  them passed, since the per-file lines zip with the files), and each probability is the
  largest softmax probability of that image's logits (dropping the normalisation gave 1.0)."""
  images = str(tmp_path / "imgs")
  _write_pngs(images, ["a.png", "b.png", "c.png", "d.png"])
  model = deploy.load(artifact)
  ds = ImageFolder(images)
  out = deploy.classify(model, ds, 3)
  logits = []
  for x, _, idx in iterate_batches(ds, model.preprocessing, 3):
    logits.append(np.asarray(model(x), np.float64)[idx >= 0])
  logits = np.concatenate(logits)
  z = np.exp(logits - logits.max(-1, keepdims=True))
  assert out["pred"] == np.argmax(logits, -1).tolist() and len(out["pred"]) == 4
  np.testing.assert_allclose(out["prob"], (z / z.sum(-1, keepdims=True)).max(-1), rtol=1e-12)
  assert all(0 < p < 1 for p in out["prob"])
  assert out["first_batch"].shape == (3, CFG.img_size, CFG.img_size, 3)
  assert out["first_call_s"] > 0



def test_classify_keeps_the_first_batch_it_ran(artifact, tmp_path):
  """`first_batch` is the first batch of images (that `first_call_s` timed), not a later one of
  the same padded shape (a mutation audit: keeping every batch, so the last, passed the suite)."""
  images = str(tmp_path / "imgs")
  _write_pngs(images, ["a.png", "b.png", "c.png", "d.png"])
  model = deploy.load(artifact)
  ds = ImageFolder(images)
  batches = [x for x, _, _ in iterate_batches(ds, model.preprocessing, 3)]
  assert len(batches) == 2 and not np.array_equal(batches[0], batches[1])
  np.testing.assert_array_equal(deploy.classify(model, ds, 3)["first_batch"], batches[0])


def test_an_artifact_replaced_while_read_is_read_again(artifact, tmp_path, monkeypatch):
  """Read during another deploy's --overwrite, an artifact's weights were reported corrupt
  (orbax read the old index with the new data; a probe): it is read again."""
  path = _copy(artifact, tmp_path)
  restore, calls = deploy._restore_params, []

  def replaced_while_read(*args):
    calls.append(args[0])
    if len(calls) == 1:
      os.rename(path, str(tmp_path / "old"))
      shutil.copytree(artifact, path)
      raise deploy.ArtifactError("could not restore the weights: Truncated Zstd stream")
    return restore(*args)
  monkeypatch.setattr(deploy, "_restore_params", replaced_while_read)
  assert deploy.load(path).manifest.counts == SCHED.counts and len(calls) == 2


def test_run_results_another_run_wrote_meanwhile_are_not_replaced(artifact, tmp_path,
                                                                  monkeypatch):
  """Two run_deployed runs into one --output both exited 0 saying they wrote it, and one's
  results were gone (a probe): the later one is refused and keeps its results beside it."""
  from experiments import run_deployed  # pylint: disable=g-import-not-at-top
  images, out = str(tmp_path / "imgs"), tmp_path / "r.json"
  _write_pngs(images, ["a.png", "b.png", "c.png"])
  run = run_deployed.run

  def another_run_writes_meanwhile(f):
    result = run(f)
    out.write_text(json.dumps({"format": run_deployed.RESULT_FORMAT, "run": "other"}))
    return result
  monkeypatch.setattr(run_deployed, "run", another_run_writes_meanwhile)
  code, _, err = run_cli_in_process(REPO, "run_deployed", [
      f"--artifact={artifact}", f"--images={images}", "--repeats=3", "--warmup=0", "--quiet",
      f"--output={out}"])
  assert code == 1, err
  (kept,) = [p for p in tmp_path.iterdir() if p.name.startswith("r.kept-")]
  assert err.splitlines()[-1] == (
      f"error: {out} was written by another run after this one began (two runs writing one "
      "output at once): this run does not replace that run's output; give each run its own "
      f"output; the results are kept in {kept}")
  assert json.loads(out.read_text())["run"] == "other"
  assert len(json.loads(kept.read_text())["predictions"]) == 3


def test_run_deployed_says_when_its_latency_is_spread_wide(artifact, tmp_path, monkeypatch):
  """A latency whose IQR stayed at 63 % of its median printed as any other (a probe of the
  edge runner on a busy machine); the line after it now says so, and the results keep it."""
  from vitprune.profile import protocol  # pylint: disable=g-import-not-at-top
  images, out = str(tmp_path / "imgs"), tmp_path / "r.json"
  _write_pngs(images, ["a.png", "b.png", "c.png"])
  for samples, said in (((1.0, 1.0, 1.5, 2.0, 3.0), True), ((1.0, 1.02, 1.05), False)):
    monkeypatch.setattr(deploy, "time_model",
                        lambda *_, s=samples: protocol.summarize([t * 1e-3 for t in s]))
    code, stdout, err = run_cli_in_process(REPO, "run_deployed", [
        f"--artifact={artifact}", f"--images={images}", "--repeats=3", "--warmup=0",
        "--quiet", f"--output={out}"])
    assert code == 0, err
    note = ("note: the latency has an IQR of 66.7% of its median, above 10%: the machine was "
            "busy or the call's time varies, so the median is uncertain; time it again on a "
            "quieter machine before comparing it")
    assert (note in stdout.splitlines()) == said, stdout
    assert json.loads(out.read_text())["latency"].get("note") == (note[6:] if said else None)
    out.unlink()


def test_an_export_that_does_not_reproduce_the_forward_is_refused(tmp_path, params,
                                                                  monkeypatch):
  """The staged artifact's outputs are compared with the in-process forward before it is
  published: one that differs is refused, and nothing is left."""
  from vitprune import model as model_lib  # pylint: disable=g-import-not-at-top
  real = model_lib.jitted_forward
  monkeypatch.setattr(model_lib, "jitted_forward", lambda *a, **k: real(*a, **k) + 1.0)
  with pytest.raises(deploy.ArtifactError, match=r"exported forward does not reproduce the "
                                                 r"in-process forward: max abs difference 1$"):
    deploy.export_artifact(str(tmp_path / "art"), CFG, params, schedule=SCHED,
                           reducer=REDUCER, batch_size=2)
  assert os.listdir(tmp_path) == []


def test_an_artifact_without_its_inventory_keeps_a_users_notes(artifact, tmp_path, params):
  """`cp -r art/* copy/` leaves the inventory behind (a dotfile): `--overwrite` then deleted a
  NOTES.txt beside the artifact. The artifact's layout decides instead; without the notes the
  copy is replaced."""
  for how in ("missing", "truncated"):
    dst = _copy(artifact, tmp_path / how)
    lose_inventory_beside_notes(dst, deploy.is_artifact_dir, how)
    with pytest.raises(atomic.ForeignOutputError, match=r"it holds NOTES\.txt, which vitprune "
                       r"did not write there \(its list of what vitprune wrote"):
      deploy.export_artifact(dst, CFG, params, schedule=SCHED, reducer=REDUCER,
                             batch_size=3, overwrite=True, verify=False)
    assert open(os.path.join(dst, "NOTES.txt")).read() == "mine"
    with pytest.raises(atomic.ForeignOutputError, match=r"it holds NOTES\.txt"):   # the default
      atomic.check_replaceable(dst, atomic.is_vitprune_output)
  os.remove(os.path.join(dst, "NOTES.txt"))
  atomic.check_replaceable(dst, atomic.is_vitprune_output)
  deploy.export_artifact(dst, CFG, params, batch_size=3, overwrite=True, verify=False)
  assert deploy.load(dst).manifest.to_json()["schedule"]["text"] == "full"   # the new one


def test_a_symbolic_export_is_verified_at_batch_1_and_an_odd_batch(tmp_path, params,
                                                                  monkeypatch):
  """A symbolic-batch artifact is checked at batch 1 and at batch 3 before it is published: one
  that goes wrong at either alone is refused, naming the batch (it was checked at batch 2)."""
  from vitprune import model as model_lib  # pylint: disable=g-import-not-at-top
  real = model_lib.jitted_forward
  for bad in (1, 3):
    seen = []

    def off_at(p, x, *a, bad=bad, seen=seen, **k):
      seen.append(x.shape[0])
      return real(p, x, *a, **k) + (1.0 if x.shape[0] == bad else 0.0)
    monkeypatch.setattr(model_lib, "jitted_forward", off_at)
    with pytest.raises(deploy.ArtifactError, match=r"exported forward does not reproduce the "
                       rf"in-process forward at batch {bad} \(symbolic batch\): max abs "
                       r"difference 1$"):
      deploy.export_artifact(str(tmp_path / "art"), CFG, params, schedule=SCHED,
                             reducer=REDUCER, batch_size=None)
    assert seen == [1, 3][:[1, 3].index(bad) + 1] and os.listdir(tmp_path) == []


def test_a_board_profiles_solution_deployed_for_jax_alone_says_so(tmp_path, params, capsys):
  """A schedule chosen on an IREE board's profile deployed without an IREE target: the artifact
  held the JAX export only, and nothing said the board's module was missing."""
  from experiments import common  # pylint: disable=g-import-not-at-top
  from experiments import deploy as deploy_cli  # pylint: disable=g-import-not-at-top
  weights = save_weights(str(tmp_path / "w"), CFG, params)
  said = {}
  for platform, out in (("iree-local-task", "board"), ("cpu", "here")):
    sol = solution_file(tmp_path / f"{out}.json", CFG, [17, 9, 9], platform=platform,
                        weights_sha256=params_sha256(params))
    common.run_in_process(deploy_cli.main, deploy_cli.define_flags, [
        f"--weights={weights}", f"--solution={sol}", "--noverify", f"--out={tmp_path / out}"])
    said[out] = capsys.readouterr().out
  assert said["board"].endswith(
      f"note: {tmp_path / 'board.json'} chose its schedule on a profile of cpu "
      "(iree-local-task), an IREE board; this artifact holds the JAX export only: add "
      "--target=iree:... to build the module that board runs\n"), said["board"]
  assert said["board"].startswith("wrote ")                  # (after the artifact is written)
  assert "note:" not in said["here"] and said["here"].startswith("wrote ")
  assert list(deploy.load(str(tmp_path / "board")).manifest.targets) == ["jax"]
  # A schedule chosen on a GPU's latency deployed for the CPU alone said nothing (a probe).
  sol = solution_file(tmp_path / "gpu.json", CFG, [17, 9, 9], platform="gpu",
                      weights_sha256=params_sha256(params))
  for platforms, out in (("cpu", "gpu_cpu"), ("cpu,cuda", "gpu_both")):
    common.run_in_process(deploy_cli.main, deploy_cli.define_flags, [
        f"--weights={weights}", f"--solution={sol}", "--noverify", f"--platforms={platforms}",
        f"--out={tmp_path / out}"])
    said[out] = capsys.readouterr().out
  assert said["gpu_cpu"].endswith(
      f"note: {sol} chose its schedule on a profile of cpu (gpu); this artifact exports for "
      "cpu: its latency steps were measured on another device\n"), said["gpu_cpu"]
  assert "note:" not in said["gpu_both"]
  # A board's solution deployed with its IREE module, as the note above asks: no note (a review:
  # the new one said its latency steps were measured on another device; `note` below, the
  # device kind as kits name it) ... but one of another board: any IREE target silenced the
  # note (a probe: an sm_87 board's latencies deployed for the host CPU said nothing).
  from vitprune.edge.targets import host_cpu, parse_targets  # pylint: disable=g-import-not-at-top
  here = host_cpu()["model"]
  orin = solution_file(tmp_path / "orin.json", CFG, [17, 9, 9], platform="iree-cuda",
                       device_kind="iree:cuda:sm_87", weights_sha256=params_sha256(params))
  common.run_in_process(deploy_cli.main, deploy_cli.define_flags, [
      f"--weights={weights}", f"--solution={orin}", "--noverify", "--target=iree:host",
      f"--out={tmp_path / 'orin'}"])
  assert capsys.readouterr().out.endswith(
      f"note: {orin} chose its schedule on a profile of iree:cuda:sm_87 (iree-cuda); this "
      "artifact's IREE modules are for iree:host: its latency steps were measured on another "
      "device\n")
  # A review: the same target spelled otherwise is no other device; another CPU target is
  # code generated for another CPU; iree:host timed on another host's CPU says so.
  def note(kind, *texts):
    return deploy_cli._board_note(kind, parse_targets(texts))
  a78 = "iree:llvm-cpu:aarch64-linux-gnu:cortex-a78ae"
  assert note("IREE:LLVM-CPU:aarch64-linux-gnu:cortex-a78ae Cortex-A78AE", a78) is None
  assert note(f"iree:host {here}", "iree:host") is None and note("cpu", "iree:host") is None
  assert note("iree:host ARMv8 Processor rev 1 (v8l)", "iree:host") == (
      f"this artifact's iree:host module is built for this machine's CPU ({here}): its latency "
      "steps were measured on another CPU")
  assert note("iree:host ARMv8 Processor rev 1 (v8l)", a78) == (
      f"its latency steps were timed on a module for iree:host, this artifact's are for {a78}: "
      "code generated for another CPU may move them")
  assert note("iree:cuda:sm_87", "jax") is None            # (the JAX-only note's case)


def test_a_board_profile_given_for_provenance_says_the_artifact_is_not_its_module(tmp_path,
                                                                                  params, capsys):
  """A --profile timed on an IREE board, deployed as a JAX export only: the note a solution of
  that profile gets (a probe: a --profile alone said nothing, its board recorded as provenance
  of a CPU artifact); one of this machine's JAX platform says nothing."""
  from experiments import common  # pylint: disable=g-import-not-at-top
  from experiments import deploy as deploy_cli  # pylint: disable=g-import-not-at-top
  from vitprune.profile import records  # pylint: disable=g-import-not-at-top
  weights = save_weights(str(tmp_path / "w"), CFG, params)
  point = records.Point("model", 1, CFG.num_tokens, 1e-3, 1e-3, 1e-3, 1, (1e-3,))
  said = {}
  for platform, kind in (("iree-local-sync", "iree:host Some CPU"), ("cpu", "cpu")):
    prof = records.Profile(
        model=CFG.name, config=dataclasses.asdict(CFG), device_kind=kind, platform=platform,
        jax_version="none", jaxlib_version="none", dtype="float32", modes=("model",),
        reducer="keep_first", timing={"min_run_time": 0.1}, points=(point,),
        created="2026-12-07T00:00:00+00:00")
    path = records.save(prof, str(tmp_path / platform))["json"]
    common.run_in_process(deploy_cli.main, deploy_cli.define_flags, [
        f"--weights={weights}", f"--profile={path}", "--noverify",
        f"--out={tmp_path / ('a' + platform)}"])
    said[platform] = (path, capsys.readouterr().out)
  path, out = said["iree-local-sync"]
  assert out.endswith(f"note: --profile={path} was timed on iree:host Some CPU (iree-local-sync), "
                      "an IREE board; this artifact holds the JAX export only: add "
                      "--target=iree:... to build the module that board runs\n"), out
  assert "note:" not in said["cpu"][1]


def test_an_unpruned_artifact_names_no_reducer_and_an_unverified_one_says_so(tmp_path, params,
                                                                           capsys):
  """The unpruned schedule with the default --method was written as "reducer pomt"; with
  --platforms lacking this machine's, --verify (the default) was skipped unsaid."""
  from experiments import common  # pylint: disable=g-import-not-at-top
  from experiments import deploy as deploy_cli  # pylint: disable=g-import-not-at-top
  weights = save_weights(str(tmp_path / "w"), CFG, params)
  common.run_in_process(deploy_cli.main, deploy_cli.define_flags, [
      f"--weights={weights}", f"--out={tmp_path / 'full'}"])
  said = capsys.readouterr().out
  assert ", reducer none\n" in said and "note:" not in said
  assert deploy.read_manifest(str(tmp_path / "full")).reducer_name is None
  full = (CFG.num_tokens,) * (CFG.depth + 1)      # a solution choosing the unpruned schedule
  sol = solution_file(tmp_path / "s.json", CFG, full, mode="multi", frontier=[full],
                      weights_sha256=params_sha256(params))
  common.run_in_process(deploy_cli.main, deploy_cli.define_flags, [
      f"--weights={weights}", f"--solution={sol}", f"--out={tmp_path / 'solved'}"])
  assert ", reducer none\n" in capsys.readouterr().out
  assert (deploy.read_manifest(str(tmp_path / "solved")).identity() ==
          deploy.read_manifest(str(tmp_path / "full")).identity())   # one graph, one identity
  common.run_in_process(deploy_cli.main, deploy_cli.define_flags, [
      f"--weights={weights}", "--platforms=cuda", f"--out={tmp_path / 'cuda'}"])
  assert capsys.readouterr().out.endswith(
      "note: not verified: the export holds no cpu module to run here (--verify checks it on "
      "this machine)\n")
  assert deploy.read_manifest(str(tmp_path / "cuda")).platforms == ("cuda",)


def test_a_paper_solution_deploys_its_method_with_the_options_it_records(tmp_path, params,
                                                                          capsys):
  """The main job verified EViT(normalize=True) on a random-drop estimate, and deploy rebuilt
  EViT(normalize=False): the options travel in chosen.method_options, and others are refused."""
  from experiments import common  # pylint: disable=g-import-not-at-top
  from experiments import deploy as deploy_cli  # pylint: disable=g-import-not-at-top
  weights = save_weights(str(tmp_path / "w"), CFG, params)
  path = solution_file(tmp_path / "s.json", CFG, [17, 9, 9], method="random",
                       weights_sha256=params_sha256(params), method_kwargs={"seed": 0})
  doc = json.load(open(path))
  doc["chosen"].update(method="evit", method_options={"normalize": True})
  json.dump(doc, open(path, "w"))
  common.run_in_process(deploy_cli.main, deploy_cli.define_flags, [
      f"--weights={weights}", f"--solution={path}", "--noverify", f"--out={tmp_path / 'a'}"])
  assert deploy.load(str(tmp_path / "a")).manifest.reducer["fields"] == {"normalize": True}
  assert ", reducer evit(normalize=true)\n" in capsys.readouterr().out
  with pytest.raises(SystemExit):
    common.run_in_process(deploy_cli.main, deploy_cli.define_flags, [
        f"--weights={weights}", f"--solution={path}", "--noverify",
        "--method_opts=normalize=false", f"--out={tmp_path / 'b'}"])
  assert capsys.readouterr().err == (f"error: --method_opts gives normalize=false, but the "
                                     f"solver output {path} chose evit with normalize=true: its "
                                     "schedule was chosen for those (leave them out)\n")
  assert not (tmp_path / "b").exists()


def test_a_random_drop_solution_deploys_with_the_seed_it_was_measured_with(tmp_path, params,
                                                                          capsys):
  """The solution did not keep the estimate's method options: a random-drop schedule measured
  with seed 3 was deployed (and benchmarked) with seed 0, other tokens dropped."""
  from experiments import common  # pylint: disable=g-import-not-at-top
  from experiments import deploy as deploy_cli  # pylint: disable=g-import-not-at-top
  from vitprune import benchmark  # pylint: disable=g-import-not-at-top
  weights = save_weights(str(tmp_path / "w"), CFG, params)
  sol = solution_file(tmp_path / "s.json", CFG, [17, 9, 9], method="random",
                      weights_sha256=params_sha256(params), method_kwargs={"seed": 3})
  assert read_solution(sol).method_kwargs == {"seed": 3}
  common.run_in_process(deploy_cli.main, deploy_cli.define_flags, [
      f"--weights={weights}", f"--solution={sol}", "--noverify", f"--out={tmp_path / 'a'}"])
  assert deploy.load(str(tmp_path / "a")).manifest.reducer["options"] == {"seed": 3}
  assert ", reducer random(nested=true,seed=3)\n" in capsys.readouterr().out
  with pytest.raises(SystemExit):
    common.run_in_process(deploy_cli.main, deploy_cli.define_flags, [
        f"--weights={weights}", f"--solution={sol}", "--noverify", "--method_opts=seed=0",
        f"--out={tmp_path / 'b'}"])
  assert capsys.readouterr().err == (f"error: --method_opts gives seed=0, but the solver "
                                     f"output {sol} measured random with seed=3: its "
                                     "accuracy is for those (leave them out)\n")
  assert not (tmp_path / "b").exists()
  common.run_in_process(deploy_cli.main, deploy_cli.define_flags, [   # the same options given
      f"--weights={weights}", f"--solution={sol}", "--noverify", "--method_opts=seed=3",
      f"--out={tmp_path / 'c'}"])
  (variant,) = benchmark.solution_variants(CFG, sol, multi=False)
  assert variant.reducer_for(CFG).seed == 3
  old = solution_file(tmp_path / "old.json", CFG, [17, 9, 9], method="random",
                      weights_sha256=params_sha256(params))    # a file from before: no options
  assert "method_kwargs" not in json.load(open(old))["estimate"]
  assert read_solution(old).method_kwargs is None
  # A version-1 file of that kind fixes one option unsaid: its random drop drew per layer. The
  # deployment builds that reducer (it built today's nested default), under --method_opts.
  doc = json.load(open(old))
  json.dump(dict(doc, version=1), open(tmp_path / "old1.json", "w"))
  common.run_in_process(deploy_cli.main, deploy_cli.define_flags, [
      f"--weights={weights}", f"--solution={tmp_path / 'old1.json'}", "--noverify",
      "--method_opts=seed=4", f"--out={tmp_path / 'd'}"])
  assert deploy.load(str(tmp_path / "d")).manifest.reducer["fields"] == {"seed": 4,
                                                                         "nested": False}
  (variant,) = benchmark.solution_variants(CFG, str(tmp_path / "old1.json"), multi=False)
  from vitprune.reduce.methods import make_reducer  # pylint: disable=g-import-not-at-top
  assert variant.reducer_for(CFG) == make_reducer("random", seed=0, nested=False)
  # --method_opts may repeat what the solution fixes, said or not, never change it; an option
  # the method lacks is refused as such (it was ignored where the solution said its options).
  json.dump(dict(json.load(open(sol)), version=1), open(tmp_path / "said1.json", "w"))
  for path, opts, err in (
      (tmp_path / "old1.json", "nested=true", "--method_opts gives nested=true, but the solver "
       f"output {tmp_path / 'old1.json'} measured random with nested=false: its accuracy is "
       "for those (leave them out)"),
      (sol, "seed=3,nested=false", f"--method_opts gives nested=false, but the solver output "
       f"{sol} measured random with nested=true: its accuracy is for those (leave them out)"),
      (sol, "seed=5,nested=false", f"--method_opts gives nested=false,seed=5, but the solver "
       f"output {sol} measured random with nested=true,seed=3: its accuracy is for those "
       "(leave them out)"),
      (sol, "sigma=1", "method 'random' accepts ['nested', 'seed'], got ['sigma']")):
    with pytest.raises(SystemExit):
      common.run_in_process(deploy_cli.main, deploy_cli.define_flags, [
          f"--weights={weights}", f"--solution={path}", "--noverify", f"--method_opts={opts}",
          f"--out={tmp_path / 'e'}"])
    assert capsys.readouterr().err == f"error: {err}\n"
    assert not (tmp_path / "e").exists()
  for opts in ("--method_opts=seed=3", "--method_opts="):     # (repeating it, or an empty flag)
    common.run_in_process(deploy_cli.main, deploy_cli.define_flags, [
        f"--weights={weights}", f"--solution={tmp_path / 'said1.json'}", "--noverify", opts,
        f"--out={tmp_path / 'f'}", "--overwrite"])
    assert deploy.load(str(tmp_path / "f")).manifest.reducer["fields"] == {"seed": 3,
                                                                           "nested": False}
  doc = json.load(open(sol))
  doc["estimate"]["method_kwargs"] = ["seed", 3]
  json.dump(doc, open(tmp_path / "bad.json", "w"))
  with pytest.raises(ValueError, match=r"estimate.*: method_kwargs must be an object of option "
                     r"values, got \['seed', 3\]"):
    read_solution(str(tmp_path / "bad.json"))
  for kwargs, match in (({"sigma": 3}, r"method 'random' accepts \['nested', 'seed'\], got "
                                      r"\['sigma'\]"),
                        ({"seed": 3.5}, "method 'random' option seed must be int, got 3.5"),
                        ({"seed": -5}, "method 'random' option seed must be a non-negative "
                                       "int, got -5")):
    doc["estimate"]["method_kwargs"] = kwargs       # refused when read, not when deployed
    json.dump(doc, open(tmp_path / "bad.json", "w"))
    with pytest.raises(ValueError, match=r"estimate.*: method_kwargs: " + match):
      read_solution(str(tmp_path / "bad.json"))
  paper = dataclasses.replace(read_solution(sol), method="pomt")   # estimated with random drop
  assert paper.method_kwargs is None                               # (paper mode), chose POMT


def test_clis_end_to_end(tmp_path, params):
  names = [str(i) for i in range(10)]
  weights = save_weights(str(tmp_path / "w"), CFG, params, meta={"source": "test"},
                         class_names=names)
  sha = params_sha256(params)
  sol = solution_file(tmp_path / "solution.json", CFG, [17, 17, 9], batch_size=2,
                      weights_sha256=sha)
  out = str(tmp_path / "art")
  # The solution's checks: other weights, another batch size (refused before any work).
  other = solution_file(tmp_path / "other.json", CFG, [17, 17, 9], batch_size=2)
  res = _cli_here("experiments.deploy", f"--weights={weights}", f"--solution={other}",
                  f"--out={out}")
  assert res.returncode == 1 and "was estimated on other weights" in res.stderr
  res = _cli_here("experiments.deploy", f"--weights={weights}", f"--solution={sol}",
                  "--batch_size=4", f"--out={out}")
  assert res.returncode == 1 and ("--batch_size=4, but the solver output" in res.stderr
                                  and "chose its schedule for batch 2" in res.stderr)
  assert not os.path.exists(out)
  res = _cli_here("experiments.deploy", f"--weights={weights}", f"--solution={sol}",
                  "--batch_size=4", "--allow_batch_mismatch", "--noverify", f"--out={out}4")
  assert res.returncode == 0 and deploy.read_manifest(out + "4").input_shape[0] == 4
  # The dtype its profile was timed in: another is refused, none given takes it.
  res = _cli_here("experiments.deploy", f"--weights={weights}", f"--solution={sol}",
                  "--dtype=bfloat16", f"--out={out}")
  assert res.returncode == 1 and ("--dtype=bfloat16, but the solver output" in res.stderr
                                  and "timed its schedule in float32" in res.stderr)
  bf16 = solution_file(tmp_path / "bf16.json", CFG, [17, 17, 9], batch_size=2,
                       weights_sha256=sha, dtype="bfloat16")
  res = _cli_here("experiments.deploy", f"--weights={weights}", f"--solution={bf16}",
                  "--noverify", f"--out={out}b")
  assert res.returncode == 0 and deploy.read_manifest(out + "b").dtype == "bfloat16"
  res = _cli_here("experiments.deploy", f"--weights={weights}", f"--solution={sol}",
                  "--symbolic_batch", "--noverify", f"--out={out}s")   # covers the chosen batch
  assert res.returncode == 0, res.stderr[-2000:]
  assert deploy.read_manifest(out + "s").to_json()["input"]["symbolic_batch"] is True
  res = _cli("experiments.deploy", f"--weights={weights}", f"--solution={sol}",
             "--platforms=cpu,cuda", "--noverify", f"--out={out}")   # batch 2 from the solution
  assert res.returncode == 0, res.stderr[-3000:]
  assert f"wrote {out}" in res.stdout and "reducer pomt" in res.stdout
  m = deploy.read_manifest(out).to_json()
  assert m["schedule"]["counts"] == [17, 17, 9] and m["platforms"] == ["cpu", "cuda"]
  assert m["reducer"]["name"] == "pomt" and m["input"]["batch_size"] == 2
  assert m["provenance"]["solution"]["sha256"] == read_solution(sol).sha256()
  assert m["provenance"]["solution"]["settings"]["alpha"] == 0.5
  assert m["provenance"]["solution"]["path"] == sol and "frontier" not in m["provenance"][
      "solution"]
  assert m["weights"]["source"]["meta"] == {"source": "test"}

  # Labelled folder (5 images: the last batch of 2 is padded) -> per-file lines + accuracy.
  images = str(tmp_path / "imgs")
  _write_pngs(images, ["0/a.png", "0/b.png", "3/c.png", "3/d.png", "3/e.png"])
  pred_json = str(tmp_path / "pred.json")
  res = _cli("experiments.run_deployed", f"--artifact={out}", f"--images={images}",
             "--repeats=5", "--warmup=1", f"--output={pred_json}")
  assert res.returncode == 0, res.stderr[-3000:]
  with open(pred_json) as f:
    got = json.load(f)
  from vitprune.reduce.methods import make_reducer
  ds = ImageFolder(images)
  want = []
  for x, _, idx in iterate_batches(ds, CFG.preprocessing, 2):
    logits = jitted_forward(params, x, cfg=CFG, schedule=SCHED, reducer=make_reducer("pomt"))
    want.extend(np.argmax(np.asarray(logits), -1)[idx >= 0].tolist())
  assert [r["file"] for r in got["predictions"]] == list(ds.files)
  assert [r["pred"] for r in got["predictions"]] == want
  # Labels by class name, not by folder position: folders 0/ and 3/ are classes 0 and 3.
  assert [r["label"] for r in got["predictions"]] == [0, 0, 3, 3, 3]
  names = (deploy.read_manifest(out).to_json()["class_names"] or
           [str(i) for i in range(CFG.num_classes)])
  assert [r["label_class"] for r in got["predictions"]] == [names[i] for i in (0, 0, 3, 3, 3)]
  labels = [0, 0, 3, 3, 3]
  assert got["accuracy"] == pytest.approx(np.mean(np.asarray(want) == labels))
  right = int(np.sum(np.asarray(want) == labels))
  assert got["accuracy_record"] == intervals.accuracy_record(right, 5)
  assert f"accuracy {intervals.describe_accuracy(got['accuracy_record'])}\n" in res.stdout
  lat = got["latency"]
  assert lat["batch_size"] == 2 and len(lat["samples_s"]) == 5
  assert 0 < lat["q25_s"] <= lat["median_s"] <= lat["q75_s"]
  assert lat["median_s"] == pytest.approx(float(np.median(lat["samples_s"])))
  assert f"0/a.png\t{want[0]}\t{names[want[0]]}\t" in res.stdout
  assert f"\tlabel=3\t{names[3]}\n" in res.stdout          # the index and its class name
  assert "accuracy" in res.stdout and "latency batch 2: median" in res.stdout
  # What the latency and the predictions were measured in: the artifact's dtype and this
  # device (a probe: float32 and bfloat16 results of one schedule printed and read alike).
  assert (got["dtype"], got["platform"]) == (deploy.read_manifest(out).dtype, "cpu")
  assert got["device_kind"] == jax.devices()[0].device_kind
  assert (f"model {CFG.name} schedule {got['schedule']} ({got['dtype']}, cpu "
          f"{got['device_kind']}): 5 images\n") in res.stdout

  # Flat folder: predictions without labels or accuracy.
  flat = str(tmp_path / "flat")
  _write_pngs(flat, ["x.png", "y.png"])
  res = _cli_here("experiments.run_deployed", f"--artifact={out}", f"--images={flat}",
                  "--repeats=3", "--warmup=0")
  assert res.returncode == 0, res.stderr[-3000:]
  assert "x.png\t" in res.stdout and "accuracy " not in res.stdout
  # (a walkthrough: a single class folder given as --images printed no accuracy, and no why)
  assert ("\nno accuracy: the images were read unlabelled (only a folder of class folders, "
          "DIR/<class>/<image>, labels them; one image file or one class's folder does not)\n"
          ) in res.stdout
  # A symbolic-batch artifact takes any --batch_size: one that cannot fit is refused up front,
  # from the loaded weights' size (the model code is not imported), before any image is read.
  res = _cli_here("experiments.run_deployed", f"--artifact={out}s", f"--images={flat}",
                  "--batch_size=1000000000")
  assert res.returncode == 1 and "Traceback" not in res.stderr
  assert ("error: --batch_size=1000000000 cannot fit in memory: a float32 forward of "
          f"{CFG.name} needs") in res.stderr


def test_cli_errors(tmp_path, artifact):
  res = _cli("experiments.run_deployed", f"--artifact={tmp_path / 'missing'}",
             f"--images={tmp_path}")
  assert res.returncode != 0
  assert "error:" in res.stderr and "is not a deployment artifact directory" in res.stderr
  res = _cli("experiments.run_deployed", f"--artifact={artifact}", f"--images={tmp_path}",
             "--batch_size=4")
  assert res.returncode != 0 and "exported for batch size 3, --batch_size=4" in res.stderr
  sol = solution_file(tmp_path / "s.json", get_config("deit_tiny_patch16_224"), [197] * 13)
  weights = save_weights(str(tmp_path / "w"), CFG, init_params(CFG, 1))
  res = _cli("experiments.deploy", f"--weights={weights}", f"--solution={sol}",
             f"--out={tmp_path / 'o'}")
  assert res.returncode != 0
  assert "is for model 'deit_tiny_patch16_224'" in res.stderr
  assert not os.path.exists(tmp_path / "o")


def test_method_opts_parse_booleans_and_json_and_keep_other_text():
  """--method_opts: JSON values, true/false in any case (Python's False is not the truthy string
  'False'), anything else as text for the reducer's type check to refuse."""
  from experiments.common import parse_method_options  # pylint: disable=g-import-not-at-top
  assert parse_method_options(["normalize=False", "a=TRUE", "seed=3", "x=[1, 2]",
                               "s=maybe"]) == {
      "normalize": False, "a": True, "seed": 3, "x": [1, 2], "s": "maybe"}
  with pytest.raises(ValueError, match=r"^--method_opts entry 'seed' is not key=value$"):
    parse_method_options(["seed"])
  with pytest.raises(ValueError, match=r"^--x gives 'seed' twice$"):
    parse_method_options(["seed=1", " seed=2"], "--x")
  with pytest.raises(ValueError, match=r"^--x entry 'seed' is not key=value$"):
    parse_method_options(["seed"], "--x")
  with pytest.raises(ValueError, match=r"^--method_opts entry ' =false' has no key "
                                       r"\(key=value\)$"):
    parse_method_options([" =false"])
  # the first '=' splits (a text value may hold more); spaces around a boolean are not text
  assert parse_method_options(["s=a=b", "nested= false "]) == {"s": "a=b", "nested": False}


def test_deploy_refuses_a_profile_or_estimate_of_something_else():
  """--profile / --estimate are recorded as where a deployment came from: they must be of its
  model, its weights (estimate), its batch and dtype (profile)."""
  from experiments.deploy import check_inputs_match   # pylint: disable=g-import-not-at-top
  prof = {"path": "p.json", "model": "vit_digits", "dtype": "float32", "batch_sizes": [1]}
  est = {"path": "e.json", "model": "vit_digits", "weights_sha256": "a" * 64, "method": "pomt"}
  ok = {"profile": prof, "estimate": est}
  check_inputs_match(ok, "vit_digits", "a" * 64, 1, "float32")
  check_inputs_match(ok, "vit_digits", "a" * 64, None, "float32")      # symbolic batch
  check_inputs_match(ok, "vit_digits", "a" * 64, 1, "float32", "POMT")
  with pytest.raises(ValueError, match=r"^--estimate=e.json measured --method=pomt, the "
                     r"artifact prunes with --method=random$"):    # (recorded as its own)
    check_inputs_match(ok, "vit_digits", "a" * 64, 1, "float32", "random")
  # An estimate of the artifact's method measured with other options: a version-1 estimate's
  # per-layer random drop deployed with today's nested draws (or another seed).
  from vitprune.reduce.methods import make_reducer  # pylint: disable=g-import-not-at-top
  per_layer = {"estimate": dict(est, method="random", method_kwargs={"seed": 2,
                                                                     "nested": False})}
  check_inputs_match(per_layer, "vit_digits", "a" * 64, 1, "float32", "random",
                     make_reducer("random", seed=2, nested=False))
  for other in (make_reducer("random", seed=2), make_reducer("random", seed=3, nested=False)):
    with pytest.raises(ValueError, match=r"^--estimate=e.json measured "
                       r"random\(nested=false,seed=2\), the artifact prunes with random\(.*\): "
                       r"its accuracy is for those \(give --method_opts=nested=false,seed=2\)$"):
      check_inputs_match(per_layer, "vit_digits", "a" * 64, 1, "float32", "random", other)
  check_inputs_match(dict(per_layer, estimate=dict(per_layer["estimate"], method_kwargs=None)),
                     "vit_digits", "a" * 64, 1, "float32", "random", make_reducer("random"))
  with pytest.raises(ValueError, match=r"^--estimate=e.json measured Random\(nes"):  # (names as
    check_inputs_match(per_layer, "vit_digits", "a" * 64, 1, "float32", "Random",  # readers
                       make_reducer("random", seed=2))                             # take them)
  upper = {"estimate": dict(per_layer["estimate"], method=" RANDOM", kind="tokens")}
  check_inputs_match(upper, "vit_digits", "a" * 64, 1, "float32", "pomt")   # (the A(n) stand-in)
  # With --solution the solution's own checks apply (method None): no options check here.
  check_inputs_match(per_layer, "vit_digits", "a" * 64, 1, "float32", None,
                     make_reducer("random", seed=2))
  # A profile that timed pruned schedules (calibration) timed one method's graphs.
  calibrated = {"profile": dict(prof, schedules_of="pomt")}
  check_inputs_match(calibrated, "vit_digits", "a" * 64, 1, "float32", " POMT")
  check_inputs_match(calibrated, "vit_digits", "a" * 64, 1, "float32")       # unpruned
  with pytest.raises(ValueError, match=r"^--profile=p.json timed pomt schedules, the artifact "
                     r"prunes with --method=tome: their latency is of other graphs$"):
    check_inputs_match(calibrated, "vit_digits", "a" * 64, 1, "float32", "tome")
  for args, match in (
      (("deit_tiny", "a" * 64, 1, "float32"), r"--profile=p.json is of model 'vit_digits'"),
      (("vit_digits", "b" * 64, 1, "float32"), r"--estimate=e.json was measured on other "
       r"weights \(sha256 aaaaaaaaaaaa\.\.\., these are bbbbbbbbbbbb\.\.\.\)"),
      (("vit_digits", "a" * 64, 4, "float32"), r"holds batch sizes \[1\], the artifact runs "
       r"batch 4"),
      (("vit_digits", "a" * 64, 1, "bfloat16"), "was timed in float32, the artifact computes "
       "in bfloat16")):
    with pytest.raises(ValueError, match=match):
      check_inputs_match(ok, *args)


def test_a_profile_of_another_methods_schedules_is_refused_by_deploy(tmp_path):
  """A calibrated profile (`--solver=multi`: 'schedule' points, pomt graphs) was recorded as
  the latency of a ToMe artifact: the provenance names which method's graphs it timed."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from experiments import deploy as deploy_cli  # pylint: disable=g-import-not-at-top
  from vitprune.profile import records  # pylint: disable=g-import-not-at-top
  pts = [records.Point(component="model", batch_size=1, tokens=17, median_s=2e-3, q25_s=2e-3,
                       q75_s=2e-3, num_samples=1, samples_s=(2e-3,), compile_s=0.1, retries=0)]
  pts.append(dataclasses.replace(pts[0], component="schedule", tokens=17,
                                 schedule=(17, 17, 9)))
  prof = records.Profile(
      model=CFG.name, config=dataclasses.asdict(CFG), device_kind="cpu", platform="cpu",
      jax_version="0", jaxlib_version="0", dtype="float32", modes=("model", "schedule"),
      reducer="pomt+random", timing={"min_run_time": 0.1}, points=tuple(pts),
      created="2026-01-01T00:00:00+00:00")
  path = str(tmp_path / "p.json")
  with open(path, "w") as f:
    json.dump(records.to_json(records.analyze(prof)), f)
  prov = deploy_cli.input_provenance(path)
  assert prov["profile"]["schedules_of"] == "pomt"
  deploy_cli.check_inputs_match(prov, CFG.name, "a" * 64, 1, "float32", "pomt")
  with pytest.raises(ValueError, match=r"timed pomt schedules, the artifact prunes with "
                                       r"--method=tome"):
    deploy_cli.check_inputs_match(prov, CFG.name, "a" * 64, 1, "float32", "tome")
  # A --mode=schedule profile (no uniform curve) is no calibration: its block table stands in
  # for any method, as the solver reads it (a review: deploy refused what solve accepted).
  with open(path, "w") as f:
    json.dump(records.to_json(records.analyze(dataclasses.replace(
        prof, modes=("schedule",), reducer="random", points=tuple(pts[1:])))), f)
  prov = deploy_cli.input_provenance(path)
  assert "schedules_of" not in prov["profile"]
  deploy_cli.check_inputs_match(prov, CFG.name, "a" * 64, 1, "float32", "tome")


def test_deploy_refuses_a_profile_or_estimate_the_solution_was_not_solved_from():
  """Deploy recorded a --profile whose sha256 differed from the one in its own embedded
  solution (the profile file had been replaced after solving)."""
  import types  # pylint: disable=g-import-not-at-top
  from experiments.deploy import check_solution_inputs  # pylint: disable=g-import-not-at-top
  prov = {"profile": {"path": "/p.json", "sha256": "a" * 64},
          "estimate": {"path": "/e.json", "sha256": "c" * 64}}
  same_p, other_p = (types.SimpleNamespace(path="/p.json", sha256=h) for h in ("a" * 64, "b" * 64))
  est = types.SimpleNamespace(path="/e.json", sha256="c" * 64)
  check_solution_inputs(prov, same_p, est, "s.json")
  check_solution_inputs({}, other_p, est, "s.json")       # nothing given: nothing to match
  with pytest.raises(ValueError, match=r"^--profile=/p.json \(sha256 aaaaaaaaaaaa\.\.\.\) is not "
                                       r"the profile the solver output s.json was solved from "
                                       r"\(/p.json, sha256 bbbbbbbbbbbb\.\.\.\)"):
    check_solution_inputs(prov, other_p, est, "s.json")
  with pytest.raises(ValueError, match=r"^--estimate=/e.json .* is not the estimate"):
    check_solution_inputs(prov, same_p, types.SimpleNamespace(path="/e.json", sha256="d" * 64),
                          "s.json")


def test_a_solution_names_its_profile_by_what_was_measured(tmp_path):
  """The profile digest covered the steps recomputed on load: with a better step detector every
  solution of an uneven grid (`--tokens=65,33`) was refused by `deploy --profile` as 'not the
  profile it was solved from'. Solutions now record the measurement's digest; one written
  before (of the whole file, as read then) is still accepted."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  from experiments import deploy as deploy_cli  # pylint: disable=g-import-not-at-top
  from vitprune import jsonio  # pylint: disable=g-import-not-at-top
  from vitprune.profile import records  # pylint: disable=g-import-not-at-top
  pts = [records.Point(component="model", batch_size=1, tokens=n, median_s=m, q25_s=m, q75_s=m,
                       num_samples=3, samples_s=(m, m, m), compile_s=0.1, retries=0)
         for n, m in ((17, 2e-3), (9, 1e-3))]
  prof = records.analyze(records.Profile(
      model=CFG.name, config=dataclasses.asdict(CFG), device_kind="cpu", platform="cpu",
      jax_version="0", jaxlib_version="0", dtype="float32", modes=("model",), reducer="random",
      timing={"min_run_time": 0.1}, points=tuple(pts), created="2026-01-01T00:00:00+00:00"))
  edited = dataclasses.replace(prof, steps=({"n_from": 17, "n_to": 9},))
  assert records.measurement_sha256(edited) == records.measurement_sha256(prof)
  path = str(tmp_path / "p.json")
  with open(path, "w") as f:
    json.dump(records.to_json(edited), f)       # as an older detector wrote it
  prov = deploy_cli.input_provenance(path)
  assert prov["profile"]["sha256"] == records.measurement_sha256(prof)
  assert "schedules_of" not in prov["profile"]            # (a curve of token counts: any method)
  est = types.SimpleNamespace(path="/e.json", sha256="c" * 64)
  for recorded in (records.measurement_sha256(prof),
                   jsonio.canonical_sha256(records.to_json(edited))):   # a solution from before
    deploy_cli.check_solution_inputs(prov, types.SimpleNamespace(path=path, sha256=recorded),
                                     est, "s.json")
  with pytest.raises(ValueError, match="is not the profile the solver output s.json was solved"):
    deploy_cli.check_solution_inputs(prov, types.SimpleNamespace(path=path, sha256="b" * 64),
                                     est, "s.json")
  # A board profile (python -m vitprune.edge profile) holds an 'edge' entry, which the record
  # (`to_json`), and so the digest solutions recorded of it before, left out.
  with open(path, "w") as f:
    json.dump(dict(records.to_json(prof), edge={"kit": "k"}), f)
  deploy_cli.check_solution_inputs(
      deploy_cli.input_provenance(path),
      types.SimpleNamespace(path=path, sha256=jsonio.canonical_sha256(records.to_json(prof))),
      est, "s.json")


def test_a_version_1_manifest_without_the_source_digest_still_loads(params, tmp_path,
                                                                    monkeypatch):
  """Artifacts exported before weights.source_sha256 was recorded (manifest version 1, the
  forward's identity without it), as that code wrote them."""
  plan = deploy.plan_manifest

  def before_the_digest(*args, **kwargs):
    m = plan(*args, **kwargs)
    return dataclasses.replace(m, weights={k: v for k, v in m.weights.items()
                                           if k != "source_sha256"})

  monkeypatch.setattr(deploy, "plan_manifest", before_the_digest)
  path = deploy.export_artifact(str(tmp_path / "v1"), CFG, params, batch_size=2, verify=False)
  monkeypatch.undo()
  assert json.loads(open(os.path.join(path, "manifest.json")).read())["version"] == 1
  loaded = deploy.load(path)
  assert "source_sha256" not in loaded.manifest.weights
  doc = loaded.manifest.to_json()             # written again: still version 1, as it was
  assert doc["version"] == 1 and "source_sha256" not in doc["weights"]
  assert deploy.Manifest.from_json(doc) == loaded.manifest


def test_a_version_2_manifest_set_back_to_version_1_is_refused(artifact, tmp_path):
  """Version 1 has no source digest: a version-2 manifest set back to 1, its digest deleted
  and its source edited, passed every check and lifted the training-data guard."""
  def downgrade(d):
    d.update(version=1)
    d["weights"].pop("source_sha256")
    d["weights"]["source"] = {"meta": {"split": {"seed": 7}}}

  path = _copy(artifact, tmp_path)
  _edit_manifest(path, downgrade)
  with pytest.raises(deploy.ArtifactError, match="identity does not match the manifest's "
                                                 "fields"):
    deploy.load(path)
  _edit_manifest(path, lambda d: d.pop("identity"))      # the forward's own identity refuses
  with pytest.raises(deploy.ArtifactError, match="does not describe the exported forward"):
    deploy.load(path)


def test_deploy_takes_the_estimate_a_deployment_came_from(tmp_path, params):
  """The estimate's method is the artifact's: a POMT estimate recorded as a random-drop
  artifact's origin was refused (a fault probe), but random drop's one curve is the paper's
  stand-in for any method (a paper solution's own estimate was then refused), and an artifact
  that prunes nothing prunes with no method."""
  weights = save_weights(str(tmp_path / "w"), CFG, params)
  made = {}
  for method, layer in (("random", "embed"), ("topk", "1")):
    est_dir = tmp_path / f"est_{method}"
    r = _cli_here("experiments.estimate", f"--weights={weights}", f"--method={method}",
                  f"--layer={layer}", "--tokens=9,17", "--num_images=4", "--batch_size=4",
                  f"--out_dir={est_dir}")
    assert r.returncode == 0, r.stderr
    (made[method],) = [str(p) for p in est_dir.glob("*.json")]
  base = [f"--weights={weights}", "--batch_size=1"]
  r = _cli_here("experiments.deploy", *base, "--schedule=keep@1:9", f"--estimate={made['topk']}",
                f"--out={tmp_path / 'a'}")
  assert r.returncode == 1 and r.stderr == (
      f"error: --estimate={made['topk']} measured --method=topk, the artifact prunes with "
      "--method=pomt\n") and not (tmp_path / "a").exists()
  for name, extra in (("stand_in", ["--schedule=keep@1:9", f"--estimate={made['random']}"]),
                      ("unpruned", [f"--estimate={made['topk']}"])):
    r = _cli_here("experiments.deploy", *base, *extra, f"--out={tmp_path / name}")
    assert r.returncode == 0, r.stderr
  # A random-drop artifact from a random-drop estimate: the options it measured (the manifest's
  # provenance keeps them); a version-1 copy measured per-layer draws, which must be asked for.
  doc = json.load(open(made["random"]))
  doc["version"] = 1
  del doc["method"]["kwargs"]["nested"]
  json.dump(doc, open(tmp_path / "old.json", "w"))
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for name, est, opts, code, err in (
      ("r_new", made["random"], [], 0, ""),
      ("r_old", str(tmp_path / "old.json"), [], 1, f"error: --estimate={tmp_path / 'old.json'} "
       "measured random(nested=false,seed=0), the artifact prunes with "
       "random(nested=true,seed=0): its accuracy is for those (give "
       "--method_opts=nested=false,seed=0)\n"),
      ("r_old2", str(tmp_path / "old.json"), ["--method_opts=nested=false"], 0, "")):
    got = run_cli_in_process(root, "deploy", [*base, "--method=random", "--schedule=keep@1:9",
                                              f"--estimate={est}", "--noverify", *opts,
                                              f"--out={tmp_path / name}"])
    assert got[0] == code and (not err or got[2] == err), got
    assert (tmp_path / name).exists() == (code == 0)
  kept = {n: deploy.read_manifest(str(tmp_path / n)).provenance["estimate"]["method_kwargs"]
          for n in ("r_new", "r_old2")}
  assert kept == {"r_new": {"seed": 0, "nested": True}, "r_old2": {"seed": 0, "nested": False}}
  # An estimate that said no options ran the defaults, and the hint names them.
  import re  # pylint: disable=g-import-not-at-top
  from experiments import deploy as deploy_cli  # pylint: disable=g-import-not-at-top
  from vitprune.reduce.methods import make_reducer  # pylint: disable=g-import-not-at-top
  prov = {"estimate": {"path": "e.json", "model": "m", "kind": "sensitivity", "method": "evit",
                       "method_kwargs": {}, "weights_sha256": "a" * 64}}
  with pytest.raises(ValueError, match=re.escape(
      "--estimate=e.json measured evit(normalize=false), the artifact prunes with "
      "evit(normalize=true): its accuracy is for those (give --method_opts=normalize=false)")):
    deploy_cli.check_inputs_match(prov, "m", "a" * 64, 1, "float32", "evit",
                                  make_reducer("evit", normalize=True))


def test_the_manifest_records_what_the_graph_runs(tmp_path, params):
  """bfloat16 runs at its one precision ('highest' was recorded) and an unpruned schedule runs
  no reducer (one was recorded): the manifest described a graph other than the one exported,
  and identical graphs had other identities (a probe)."""
  from vitprune.reduce.methods import make_reducer  # pylint: disable=g-import-not-at-top
  bf16 = deploy.export_artifact(str(tmp_path / "bf16"), CFG, params, schedule=SCHED,
                                reducer=make_reducer("pomt"), reducer_name="pomt",
                                dtype="bfloat16", batch_size=2)
  assert deploy.load(bf16).manifest.precision == "default"
  full = deploy.export_artifact(str(tmp_path / "full"), CFG, params,
                                reducer=make_reducer("pomt"), reducer_name="pomt", batch_size=2)
  assert deploy.load(full).manifest.reducer is None
  plain = deploy.export_artifact(str(tmp_path / "plain"), CFG, params, batch_size=2)
  assert deploy.read_manifest(full).identity() == deploy.read_manifest(plain).identity()
  with pytest.raises(ValueError, match=r"^precision must be one of .*, got 'banana'$"):
    deploy.export_artifact(str(tmp_path / "bad"), CFG, params, dtype="bfloat16",
                           precision="banana")
  # The method and options recorded must make the reducer exported: a manifest naming 'tome'
  # with options {'bogus': 1} held a POMT graph and loaded (a library caller's; a probe).
  from vitprune.reduce.methods import reducer_fields  # pylint: disable=g-import-not-at-top

  class MyPOMT(type(make_reducer("pomt"))):
    pass

  for name, opts, reducer, why in (
      ("tome", {}, make_reducer("pomt"), r"the graph runs POMT\(\), not method 'tome' with "
       r"options \{\} \(ToMe\(.*\)\): the manifest \(reducer_name 'tome'\) would name another "
       r"reducer than the one that ran$"),
      ("random", {"seed": 3}, make_reducer("random", seed=7), r"the graph runs RandomDrop\(seed=7"
       r".*, not method 'random' with options \{'seed': 3\}"),
      ("pomt", {"bogus": 1}, make_reducer("pomt"), r"not method 'pomt' with options "
       r"\{'bogus': 1\} \(.*bogus.*\): the manifest \(reducer_name 'pomt'\) would name"),
      (None, {"seed": 3}, make_reducer("random", seed=7), r"not method 'random' with options "
       r"\{'seed': 3\} \(RandomDrop\(seed=3.*\): the manifest would name another"),
      ("pomt", None, make_reducer("random", seed=7), r"not method 'pomt' with options "
       r"\{'seed': 7, 'nested': True\}"),
      ("pomt", None, REDUCER, r"the graph runs KeepLastPatches\(.*\), not method 'pomt'"),
      # (a mutation audit: a method's name in another spelling is the method's name too)
      ("POMT", None, REDUCER, r"the graph runs KeepLastPatches\(.*\), not method 'pomt'"),
      (" Pomt ", None, MyPOMT(), r"^reducer .*MyPOMT\(\) subclasses POMT: give it a method name "
       r"of its own \(reducer_name\), not ' Pomt '$"),
      (None, None, MyPOMT(), r"^reducer .*MyPOMT\(\) subclasses POMT: give it a method name of its "
       r"own \(reducer_name\), not 'pomt'$"),
      ("tome", None, None, r"reduces tokens but no reducer was given")):
    with pytest.raises(ValueError, match=why):
      deploy.export_artifact(str(tmp_path / "named"), CFG, params, schedule=SCHED,
                             reducer=reducer, reducer_name=name, reducer_options=opts)
    assert not os.path.exists(tmp_path / "named")
  # Named as make_reducer spells it; a reducer given alone is recorded with its fields as its
  # options (its options need not be the method's defaults, and {} read as seed 0, a review);
  # a subclass of its own name is the user's own reducer.
  for i, (name, opts, reducer, recorded) in enumerate((
      (" ToMe ", {"seed": 7}, make_reducer("random", seed=7), None),
      (None, None, make_reducer("random", seed=3), "random"),
      (None, None, make_reducer("evit", normalize=True), "evit"),
      ("mine", {"k": 2}, MyPOMT(), "mine"),
      ("random", {"seed": 7}, make_reducer("random", seed=7), "random"))):
    if recorded is None:
      with pytest.raises(ValueError, match=r"not method 'tome' with options \{'seed': 7\}"):
        deploy.export_artifact(str(tmp_path / f"ok{i}"), CFG, params, schedule=SCHED,
                               reducer=reducer, reducer_name=name, reducer_options=opts)
      continue
    path = deploy.export_artifact(str(tmp_path / f"ok{i}"), CFG, params, schedule=SCHED,
                                  reducer=reducer, reducer_name=name, reducer_options=opts,
                                  batch_size=2, verify=False)
    entry = deploy.load(path).manifest.reducer
    assert (entry["name"], entry["options"]) == (recorded, opts or reducer_fields(reducer))
    assert recorded == "mine" or make_reducer(entry["name"], **entry["options"]) == reducer
  tome = deploy.export_artifact(str(tmp_path / "tome"), CFG, params, schedule=SCHED,
                                reducer=make_reducer("tome"), reducer_name=" ToMe ",
                                batch_size=2, verify=False)
  assert deploy.load(tome).manifest.reducer["name"] == "tome"


def test_deploy_names_the_config_field_of_a_same_name_solution(tmp_path):
  # ("(same name, different config)" named no field)
  wider = dataclasses.replace(CFG, mlp_hidden=CFG.mlp_hidden * 2)
  sol = solution_file(tmp_path / "s.json", wider, [CFG.num_tokens] * (CFG.depth + 1))
  weights = save_weights(str(tmp_path / "w"), CFG, init_params(CFG, 1))
  code, _, err = run_cli_in_process(tmp_path, "deploy", [f"--weights={weights}",
                                                         f"--solution={sol}", "--out=o"])
  assert code == 1 and f"is for model {CFG.name} (mlp_hidden {CFG.mlp_hidden * 2}), the " \
      "weights " in err and err.endswith(f" are {CFG.name} (mlp_hidden {CFG.mlp_hidden})\n"), err
  assert not (tmp_path / "o").exists()


def test_a_forward_mapping_other_shapes_than_the_manifest_says_is_refused(artifact, tmp_path):
  """Mutation audit: a forward without the identity in its name (`export_forward`'s default)
  is still checked against the manifest's input and output shapes, naming both."""
  for cfg, batch, maps in ((CFG, 2, "[2, 32, 32, 3] -> [2, 10]"),
                           (CFG.replace(num_classes=7), 3, "[3, 32, 32, 3] -> [3, 7]")):
    path = _copy(artifact, tmp_path / str(batch))
    blob = deploy.export_forward(cfg, schedule=SCHED, reducer=REDUCER,
                                 batch_size=batch).serialize()
    with open(os.path.join(path, deploy.FORWARD_FILE), "wb") as f:
      f.write(blob)
    _edit_manifest(path, lambda d: d["files"].__setitem__(
        "forward_sha256", hashlib.sha256(blob).hexdigest()))
    with pytest.raises(deploy.ArtifactError, match=re.escape(
        f"{path}: the exported forward maps {maps}, the manifest says [3, 32, 32, 3] -> [3, 10]")):
      deploy.load(path)


def test_a_boolean_batch_size_is_refused_before_the_export(tmp_path, params):
  """Mutation audit: True is an int to Python; exported as batch 1 it was not what was meant."""
  for flag in (True, False):
    with pytest.raises(ValueError, match=f"^batch_size must be a positive int or None "
                                         rf"\(symbolic\), got {flag}$"):
      deploy.export_artifact(str(tmp_path / "a"), CFG, params, batch_size=flag)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
      deploy.export_forward(CFG, batch_size=flag)
  assert os.listdir(tmp_path) == []


def test_time_model_checks_the_images_once_before_timing(artifact):
  """Mutation audit: the timed calls skip the checks, so `time_model` checks the images first:
  raw pixels or another batch are refused as a call refuses them, not timed (or failing inside
  the graph); a float64 batch is timed as the float32 one the graph takes."""
  from vitprune.profile.protocol import TimingConfig  # pylint: disable=g-import-not-at-top
  model = deploy.load(artifact)
  cfg = TimingConfig(min_run_time=0.01)
  with pytest.raises(ValueError, match="images must be floating point, .* got uint8 pixels"):
    deploy.time_model(model, np.zeros((3, 32, 32, 3), np.uint8), cfg)
  with pytest.raises(ValueError, match="batch size 3, got 2"):
    deploy.time_model(model, _images(2), cfg)
  with pytest.raises(ValueError, match="images hold NaN or inf values"):
    deploy.time_model(model, np.full((3, 32, 32, 3), np.inf, np.float32), cfg)
  got = deploy.time_model(model, _images(3).astype(np.float64), cfg)
  assert got.samples and 0 < got.median < 60


def test_on_cpu_an_export_off_by_one_ulp_is_refused(tmp_path, params, monkeypatch):
  """Mutation audit: on CPU the exported forward must reproduce the in-process one exactly (a
  tolerance there would pass a graph that computes something slightly else)."""
  if deploy.local_platform() != "cpu":      # (elsewhere the check allows 1e-4)
    pytest.skip("the exact check is the CPU's")
  from vitprune import model as model_lib  # pylint: disable=g-import-not-at-top
  real = model_lib.jitted_forward
  monkeypatch.setattr(model_lib, "jitted_forward",
                      lambda *a, **k: np.nextafter(np.asarray(real(*a, **k)), np.float32(np.inf)))
  with pytest.raises(deploy.ArtifactError, match=r"exported forward does not reproduce the "
                                                 r"in-process forward: max abs difference "):
    deploy.export_artifact(str(tmp_path / "art"), CFG, params, schedule=SCHED,
                           reducer=REDUCER, batch_size=2)
  assert os.listdir(tmp_path) == []


def test_run_deployed_prints_and_records_the_latency_it_timed(artifact, tmp_path, monkeypatch):
  """Mutation audit of experiments/run_deployed.py: the latency line's per-image time is the
  median over the batch, and the results record --warmup and the timed calls."""
  from experiments import run_deployed  # pylint: disable=g-import-not-at-top
  from vitprune.profile import protocol  # pylint: disable=g-import-not-at-top
  images, out = str(tmp_path / "imgs"), tmp_path / "r.json"
  _write_pngs(images, ["a.png", "b.png", "c.png"])
  monkeypatch.setattr(deploy, "time_model",
                      lambda *_: protocol.summarize([2e-3, 2e-3, 2e-3, 2e-3]))
  code, stdout, err = run_cli_in_process(REPO, "run_deployed", [
      f"--artifact={artifact}", f"--images={images}", "--repeats=4", "--warmup=1", "--quiet",
      f"--output={out}"])
  assert code == 0, err
  lat = json.loads(out.read_text())["latency"]
  assert (lat["warmup"], lat["repeats"], lat["samples_s"]) == (1, 4, [2e-3] * 4)
  b = lat["batch_size"]
  line = [s for s in stdout.splitlines() if s.startswith("latency batch ")]
  assert line == [f"latency batch {b}: median 2.000 ms (IQR 0.000 ms, 4 repeats), "
                  f"{2 / b:.3f} ms/image; first call {lat['first_call_s']:.3f} s"], stdout
  assert run_deployed.RESULT_FORMAT == json.loads(out.read_text())["format"]


def test_deploy_prints_the_artifact_it_wrote_and_refuses_contradicting_flags(tmp_path, params,
                                                                            capsys, monkeypatch):
  """Mutation audit of experiments/deploy.py: the summary names what the manifest holds, line
  by line; a --method against a solution's, a --schedule beside a --solution and options for
  --method=none are refused before any work; --noverify skips the check."""
  from experiments import common  # pylint: disable=g-import-not-at-top
  from experiments import deploy as deploy_cli  # pylint: disable=g-import-not-at-top
  weights = save_weights(str(tmp_path / "w"), CFG, params)
  out = tmp_path / "art"
  common.run_in_process(deploy_cli.main, deploy_cli.define_flags, [
      f"--weights={weights}", "--schedule=17,17,9", "--method=random", "--method_opts=seed=2",
      "--batch_size=2", f"--out={out}"])
  m = deploy.read_manifest(str(out))
  assert m.reducer["options"] == {"seed": 2} and m.platforms == ("cpu",)
  assert capsys.readouterr().out == (
      f"wrote {out}\n"
      f"  model test_tiny_vit, schedule {m.schedule_text} (counts 17,17,9), reducer "
      "random(nested=true,seed=2)\n"
      "  input [2, 32, 32, 3] float32 -> output [2, 10], compute float32, platforms cpu\n"
      f"  weights sha256 {params_sha256(params)}\n"
      "  targets jax\n")
  sol = solution_file(tmp_path / "s.json", CFG, [17, 9, 9], weights_sha256=params_sha256(params))
  for args, message in (
      (["--method=tome", f"--solution={sol}"],
       "--method=tome conflicts with the solver output's method 'pomt'"),
      (["--schedule=full", f"--solution={sol}"], "give either --schedule or --solution, not both"),
      (["--method=none", "--method_opts=seed=2"], "--method_opts given with --method=none")):
    with pytest.raises(SystemExit):
      common.run_in_process(deploy_cli.main, deploy_cli.define_flags, [
          f"--weights={weights}", *args, f"--out={tmp_path / 'no'}"])
    assert capsys.readouterr().err == f"error: {message}\n"
  assert not (tmp_path / "no").exists()
  full = (CFG.num_tokens,) * (CFG.depth + 1)   # a solution's unpruned choice, its method repeated
  sol = solution_file(tmp_path / "full.json", CFG, full, mode="multi", frontier=[full],
                      weights_sha256=params_sha256(params))
  def not_asked(*args, **kwargs):
    raise AssertionError("--noverify verified")
  monkeypatch.setattr(deploy, "_verify", not_asked)
  common.run_in_process(deploy_cli.main, deploy_cli.define_flags, [
      f"--weights={weights}", f"--solution={sol}", "--method=pomt", "--noverify",
      f"--out={tmp_path / 'full'}"])
  assert ", reducer none\n" in capsys.readouterr().out


def test_only_a_random_drop_token_curve_stands_in_for_another_methods_estimate():
  """Random drop's one curve (kind 'tokens') is any method's A(n) proxy; its per-layer
  sensitivity table is not (a mutation audit: any random estimate passed for a POMT artifact)."""
  from experiments.deploy import check_inputs_match   # pylint: disable=g-import-not-at-top
  est = {"path": "e.json", "model": "vit_digits", "weights_sha256": "a" * 64,
         "method": "random", "kind": "tokens"}
  check_inputs_match({"estimate": est}, "vit_digits", "a" * 64, 1, "float32", "pomt")
  with pytest.raises(ValueError, match=r"^--estimate=e.json measured --method=random, the "
                     r"artifact prunes with --method=pomt$"):
    check_inputs_match({"estimate": dict(est, kind="sensitivity")}, "vit_digits", "a" * 64, 1,
                       "float32", "pomt")


def test_run_deployed_says_the_timed_batch_was_padded(artifact, tmp_path, monkeypatch):
  """A folder smaller than the artifact's batch is timed in a batch padded with zero images:
  the per-image time is over the images classified and says the padding (2 ms over a batch of
  3 holding 2 images read 0.667 ms/image, as if 3 images were classified)."""
  from vitprune.profile import protocol  # pylint: disable=g-import-not-at-top
  images = str(tmp_path / "imgs")
  _write_pngs(images, ["a.png", "b.png"])
  monkeypatch.setattr(deploy, "time_model",
                      lambda *_: protocol.summarize([2e-3, 2e-3, 2e-3, 2e-3]))
  code, stdout, err = run_cli_in_process(REPO, "run_deployed", [
      f"--artifact={artifact}", f"--images={images}", "--repeats=4", "--quiet"])
  assert code == 0, err
  line = [s for s in stdout.splitlines() if s.startswith("latency batch ")]
  assert line[0].startswith("latency batch 3: median 2.000 ms (IQR 0.000 ms, 4 repeats), "
                            "1.000 ms/image classified (the batch held 1 zero image of "
                            "padding); first call "), stdout


def test_run_deployed_classifies_one_image_file(artifact, tmp_path):
  """`--images=cat.png` (one image, the first thing a user tries) was "dataset root '.../cat.png'
  is not a directory": it is classified, unlabelled, with the same prediction as in its folder;
  a file that is no image is named as neither."""
  images = str(tmp_path / "imgs")
  _write_pngs(images, ["c3/a.png", "c3/b.png"])
  argv = [f"--artifact={artifact}", "--repeats=3", "--warmup=0"]
  code, whole, err = run_cli_in_process(REPO, "run_deployed", argv + [f"--images={images}"])
  assert code == 0, err
  code, one, err = run_cli_in_process(
      REPO, "run_deployed", argv + [f"--images={images}/c3/b.png", f"--output={tmp_path}/r.json"])
  assert code == 0, err
  (row,) = [l for l in whole.splitlines() if l.startswith("c3/b.png\t")]
  assert one.splitlines()[0] == row.split("\tlabel=")[0].replace("c3/b.png", "b.png", 1)
  res = json.loads((tmp_path / "r.json").read_text())
  assert (res["images"], res["num_images"], [r["file"] for r in res["predictions"]]) == (
      f"{images}/c3/b.png", 1, ["b.png"])       # (the path given: its folder holds others)
  (tmp_path / "notes.txt").write_text("")
  code, _, err = run_cli_in_process(REPO, "run_deployed",
                                    argv + [f"--images={tmp_path}/notes.txt"])
  assert (code, err.splitlines()[0]) == (1, (
      f"error: --images={tmp_path}/notes.txt is a regular file, neither a folder of images nor "
      "an image file (extensions .jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, .webp)"))


def test_run_deployed_times_a_symbolic_artifact_at_no_more_than_its_images(tmp_path, params):
  """A symbolic-batch artifact on 3 images was timed at the default batch of 8, 5 of them zero
  padding, and reported about twice the time per image classified (a probe): without
  --batch_size it is timed at the number of images when they are fewer than 8."""
  path = deploy.export_artifact(str(tmp_path / "sym"), CFG, params, schedule=SCHED,
                                reducer=REDUCER, batch_size=None, verify=False)
  images = str(tmp_path / "imgs")
  _write_pngs(images, ["a.png", "b.png", "c.png"])
  batches = {}
  for extra in ([], ["--batch_size=8"]):
    code, out, err = run_cli_in_process(REPO, "run_deployed", [
        f"--artifact={path}", f"--images={images}", "--repeats=3", "--warmup=0", "--quiet",
        f"--output={tmp_path}/r{len(extra)}.json"] + extra)
    assert code == 0, err
    batches[len(extra)] = json.loads((tmp_path / f"r{len(extra)}.json").read_text())[
        "latency"]["batch_size"]
  assert batches == {0: 3, 1: 8}                  # (told: as told)


def test_run_deployed_names_its_flag_when_the_artifact_fails_to_load(artifact, tmp_path):
  """A manifest that reads but an exported program that does not (corrupt): the refusal names
  --artifact, as a missing manifest does (console.input_flag around deploy.load too)."""
  art, images = _copy(artifact, tmp_path), str(tmp_path / "imgs")
  _write_pngs(images, ["a.png", "b.png", "c.png"])
  with open(os.path.join(art, "forward.jax_export"), "r+b") as fh:
    fh.truncate(10)
  code, out, err = run_cli_in_process(str(tmp_path), "run_deployed", [
      f"--artifact={art}", f"--images={images}", "--repeats=3", "--warmup=0", "--quiet"])
  assert (code, out) == (1, ""), err
  assert err.startswith(f"error: --artifact: {art}/forward.jax_export: sha256 "), err
  assert err.endswith(" (the file is corrupted or was replaced)\n") and err.count("\n") == 1
