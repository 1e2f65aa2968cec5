"""vitprune.prune (the library entry point) and experiments/prune.py (the CLI, in-process with its
flags parsed into a fresh FlagValues by `common.parse`)."""
import json
import os
import re
import shutil

import numpy as np
import pytest
from vitprune import data as data_lib
from vitprune import model
from vitprune import prune as prune_lib
from vitprune import schedule as S
from vitprune.reduce import make_reducer
from vitprune.registry import get_config

from experiments import common
from experiments import prune
from tests.conftest import run_cli_in_process


CFG = get_config("test_tiny_vit")


def test_default_schedules_are_valid_for_every_method():
  for cfg in (CFG, get_config("deit_small_patch16_224")):
    for method in ("pomt", "topk", "tome", "evit", "random"):
      s = prune_lib.default_schedule(cfg, method)
      assert S.check_schedule(cfg, s, make_reducer(method)) == s
      assert s != S.full_schedule(cfg)
  assert prune_lib.default_schedule(CFG, "pomt").counts == (17, 17, 13)  # 16 // 4 at block 1
  for method in ("random", "tome"):          # 'Random' got POMT's schedule, ' TOME ' a keep@
    assert prune_lib.default_schedule(CFG, f" {method.title()} ") == \
        prune_lib.default_schedule(CFG, method)
  # A 2x2 grid: one can go; one patch token: nothing to prune, said as such (a schedule nobody
  # gave was named; ToMe's timed the unpruned graph against itself).
  four = CFG.replace(img_size=16)
  assert four.num_patches == 4 and S.reduces_tokens(four, prune_lib.default_schedule(four, "tome"))
  one = CFG.replace(img_size=8)
  for method in ("pomt", "topk", "tome", "evit", "random"):
    with pytest.raises(ValueError, match=r"^test_tiny_vit at img_size 8 has 1 patch token \(patch "
                       r"size 8\): no schedule can prune it, one patch token must remain$"):
      prune_lib.default_schedule(one, method)


def test_run_prune_full_schedule_agrees_exactly():
  params = model.init_params(CFG, 0)
  images = prune.synthetic_images(CFG, 3, seed=1)
  assert images.shape == (3, 32, 32, 3) and np.isfinite(images).all()
  np.testing.assert_array_equal(images, prune.synthetic_images(CFG, 3, seed=1))
  r = prune_lib.run_prune(CFG, params, images, method="pomt", schedule=S.full_schedule(CFG),
                      labels=np.array([-1, -1, -1]), warmup=0, repeats=2)
  assert r["agreement"] == 1.0 and r["counts"] == [17, 17, 17] and r["schedule"] == "full"
  assert r["full"]["median_s"] > 0 and r["pruned"]["compile_s"] > 0
  assert "accuracy_full" not in r
  text = prune.format_result(r)
  assert "tokens entering block: 0:17 1:17  | leaving the last: 17" in text


def test_a_speed_up_within_the_timing_spread_says_so():
  """'speed-up: 0.895x' of medians 534 / 597 ms with IQRs of 156 / 97 ms read as a result: a
  ratio whose medians differ by less than the larger IQR is marked as within the spread."""
  params = model.init_params(CFG, 0)
  r = prune_lib.run_prune(CFG, params, prune.synthetic_images(CFG, 1, seed=0), method="pomt",
                          schedule=S.parse_schedule(CFG, "keep@0:9"),
                          labels=np.array([-1]), warmup=0, repeats=1)
  for (full, pruned), noted in ((((0.534, 0.156), (0.597, 0.097)), True),
                                (((0.534, 0.010), (0.400, 0.020)), False),
                                (((0.534, 0.134), (0.400, 0.020)), False),   # exactly the IQR
                                (((0.534, 0.135), (0.400, 0.020)), True)):
    for k, (median, iqr) in zip(("full", "pruned"), (full, pruned)):
      r[k] = dict(r[k], median_s=median, iqr_s=iqr)
    last = prune.format_result(r).splitlines()[-1]
    ratio = f"speed-up: {full[0] / pruned[0]:.3f}x"
    assert last == (ratio + " (within the timing spread: the medians differ by less than the "
                    "larger IQR)" if noted else ratio), last


def test_run_prune_pruned_with_labels():
  params = model.init_params(CFG, 0)
  images = prune.synthetic_images(CFG, 4, seed=0)
  full = np.asarray(model.jitted_forward(params, images, cfg=CFG)).argmax(-1)
  labels = np.array([full[0], full[1], -1, (full[3] + 1) % 10])
  r = prune_lib.run_prune(CFG, params, images, method="tome", schedule=S.parse_schedule(CFG, "r8"),
                      labels=labels, warmup=0, repeats=1)
  assert r["counts"] == [17, 9, 5] and 0.0 <= r["agreement"] <= 1.0
  assert r["accuracy_full"] == pytest.approx(2 / 3)
  # The change on the 3 labelled images, paired: pruned minus unpruned, its images lost/gained.
  change = r["accuracy_change"]
  assert change["value"] == pytest.approx(r["accuracy_pruned"] - r["accuracy_full"], abs=1e-12)
  assert (change["images_gained"] - change["images_lost"]) / 3 == pytest.approx(change["value"])
  assert change["interval_95"][0] <= change["value"] <= change["interval_95"][1]
  assert "; change " in prune.format_result(r)
  # The record is JSON as the docstring says (a numpy seed broke json.dumps), with the method
  # named as the reducer names it (' Random ' was kept as typed).
  r = prune_lib.run_prune(CFG, params, images, method=" Random ",
                          schedule=S.parse_schedule(CFG, "embed:9"),
                          reducer_options={"seed": np.int64(3)}, warmup=0, repeats=1)
  assert (r["method"], r["options"]) == ("random", {"seed": 3, "nested": True})
  assert json.loads(json.dumps(r))["options"]["seed"] == 3


def test_run_prune_accuracies_count_every_labelled_image_of_each_graph():
  """Both accuracies and the paired change by hand from the two graphs' predictions: class 0
  is a class like any other, -1 and padding rows are left out, and the unpruned accuracy is
  the unpruned graph's (the earlier test's two accuracies happened to be equal)."""
  params = model.init_params(CFG, 0)
  images = prune.synthetic_images(CFG, 8, seed=0)
  sched, red = S.parse_schedule(CFG, "keep@0:3"), make_reducer("topk")
  f = np.asarray(model.jitted_forward(params, images, cfg=CFG)).argmax(-1)
  p = np.asarray(model.jitted_forward(params, images, cfg=CFG, schedule=sched,
                                      reducer=red)).argmax(-1)
  differ = np.flatnonzero(f != p)
  assert differ.size >= 1
  labels = np.where(f == 0, 1, 0)            # class 0 wherever the unpruned graph says other
  labels[differ[0]] = f[differ[0]]           # one image only the unpruned graph gets right
  labels[-1] = -1
  valid = np.ones(8, bool)
  valid[-2] = False
  r = prune_lib.run_prune(CFG, params, images, method="topk", schedule=sched, labels=labels,
                          valid=valid, warmup=0, repeats=1)
  use = valid & (labels >= 0)
  right_f, right_p = f[use] == labels[use], p[use] == labels[use]
  assert (r["accuracy_full"], r["accuracy_pruned"]) == (right_f.mean(), right_p.mean())
  assert r["accuracy_full"] != r["accuracy_pruned"] or (right_f != right_p).any()
  assert (r["accuracy_change"]["images_lost"], r["accuracy_change"]["images_gained"]) == (
      int((right_f & ~right_p).sum()), int((right_p & ~right_f).sum()))
  assert r["accuracy_change"]["images_lost"] >= 1


def test_agreement_metrics():
  a = np.array([[0., 1.], [1., 0.], [1., 0.]])
  b = np.array([[0., 2.], [0., 1.], [3., 0.]])
  assert prune_lib.agreement(a, b, np.ones(3, bool), True) == pytest.approx(2 / 3)
  assert prune_lib.agreement(a, b, np.array([True, False, True]), True) == 1.0
  assert prune_lib.agreement(a, b, np.ones(3, bool), False) == pytest.approx(2 / 3)


def test_run_prune_errors():
  params = model.init_params(CFG, 0)
  images = prune.synthetic_images(CFG, 1, seed=0)
  with pytest.raises(ValueError, match="tome can remove at most 8"):
    prune_lib.run_prune(CFG, params, images, method="tome", schedule=S.Schedule([17, 8, 8]))
  with pytest.raises(ValueError, match="valid: evit, pomt"):
    prune_lib.run_prune(CFG, params, images, method="dynamicvit", schedule=None)
  for kw, match in ((dict(repeats=0), "repeats must be an int >= 1, got 0"),
                    (dict(repeats=1.5), "repeats must be an int >= 1, got 1.5"),   # (accepted)
                    (dict(warmup=None), "warmup must be an int >= 0, got None")):  # (TypeError)
    with pytest.raises(ValueError, match=re.escape(match)):
      prune_lib.run_prune(CFG, params, images, method="pomt", schedule=None, **kw)


@pytest.mark.parametrize("kw, match", [
    (dict(images="uint8"), "images must be floating point"),       # was cast and ran
    (dict(images="list"), "images must be an array"),
    (dict(labels=np.array([0, 99])), r"labels must be -1 \(unknown\) or classes 0..9"),  # 0.0
    (dict(labels=np.array([0, 1, 2])), r"labels must have one entry per image \[2\]"),
    (dict(valid=np.array([False, False])), "valid is False for every image"),   # nan
    (dict(valid=np.array([True])), r"valid must have one entry per image \[2\]"),
    (dict(valid=np.array([1, 1])), "valid must be booleans, got int64"),   # (an index array)
])
def test_run_prune_checks_its_inputs_as_the_forward_and_evaluate_do(kw, match):
  params = model.init_params(CFG, 0)
  images = prune.synthetic_images(CFG, 2, seed=0)
  images = {"uint8": np.zeros(images.shape, np.uint8), "list": images.tolist()}.get(
      kw.pop("images", None), images)
  with pytest.raises(ValueError, match=match):
    prune_lib.run_prune(CFG, params, images, method="pomt", schedule=None, warmup=0, repeats=1,
                        **kw)


@pytest.mark.parametrize("argv,match", [
    (["--model=test_tiny_vit", "--schedule=keep@5:3"], "layer 5 is out of range"),
    (["--model=test_tiny_vit", "--method=tome", "--schedule=list:17,8,8"],
     "tome can remove at most 8"),
    (["--method=pomt", "--schedule=embed:10"], "which pomt cannot do"),
    (["--model=deit_tiny"], "Did you mean"),
    (["--batch_size=0"], "--batch_size must be >= 1"),
    (["--images=/nonexistent/dir"], "does not exist"),
    (["--weights=/nonexistent/dir"], "nonexistent"),
    (["--repeats=0"], "--repeats must be >= 1"),
    (["--batch_size=1000000000"], "cannot fit in memory"),
])
def test_cli_errors(argv, match):
  with pytest.raises((ValueError, KeyError, OSError), match=match):
    prune.main(common.parse(prune.define_flags, argv))


def test_cli_refuses_a_seed_that_samples_nothing(tmp_path):
  """Trained weights and an --images folder no larger than the batch: every image is used and
  --seed is read nowhere (it ran and said nothing)."""
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  from vitprune.data import UNLABELLED_NOTE  # pylint: disable=g-import-not-at-top
  from vitprune.digits import write_digits_imagefolder  # pylint: disable=g-import-not-at-top
  images = write_digits_imagefolder(str(tmp_path / "imgs"), limit=6)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  base = ["--repeats=3", "--warmup=0", f"--images={images}"]
  code, out, err = run_cli_in_process(root, "prune", base + ["--batch_size=6", "--seed=5"])
  assert code == 1 and out == "" and err == (
      "error: --seed=5 changes nothing here: the weights are trained and all 6 images of "
      "--images fit in --batch_size=6; it seeds random-init weights, synthetic images and the "
      "sample of an --images folder larger than --batch_size\n")
  code, out, err = run_cli_in_process(root, "prune", base + ["--batch_size=4", "--seed=5"])
  assert code == 0 and "4 of the 6 images of" in out and "sample, seed 5" in out, err
  assert "no accuracy" not in out and "top-1 accuracy: unpruned" in out
  # A flat folder (one class's images) is read unlabelled, and the run says so (it printed
  # agreement alone without a word, where estimate and run_deployed say why).
  code, out, err = run_cli_in_process(root, "prune", [
      "--repeats=3", "--warmup=0", f"--images={images}/0", "--batch_size=4"])
  assert code == 0 and "top-1 accuracy" not in out, err
  assert f"; {UNLABELLED_NOTE}\nweights: " in out
  one = tmp_path / "one"                     # (it said "all 1 images of")
  one.mkdir()
  shutil.copy(next((tmp_path / "imgs" / "0").iterdir()), one / "a.png")
  code, out, err = run_cli_in_process(root, "prune", [
      "--repeats=3", "--warmup=0", f"--images={one}", "--batch_size=4"])
  assert code == 0 and f"the one image of {one}" in out and "all 1 " not in out, err
  code, out, err = run_cli_in_process(root, "prune", [
      "--model=test_tiny_vit", "--repeats=3", "--warmup=0", "--batch_size=1"])
  assert code == 0 and "images: 1 synthetic image (seed 0)\n" in out, err


def test_cli_default_prunes_the_embedded_model_on_digits(capsys):
  prune.main(common.parse(prune.define_flags, ["--batch_size=8", "--repeats=3", "--warmup=1"]))
  out = capsys.readouterr().out
  assert "vit_digits  method=pomt  schedule=keep@3:49  batch=8" in out
  assert "tokens entering block: 0:65 1:65 2:65 3:65 4:49 5:49  | leaving the last: 49" in out
  assert "top-1 accuracy: unpruned" in out and "speed-up:" in out


def test_cli_method_options_reach_the_reducer(monkeypatch):
  """--random_seed / --random_nested / --evit_normalize are the options run_prune builds the
  reducer with."""
  seen = []

  class Stop(Exception):
    pass

  def spy(*a, reducer_options=None, method=None, **k):
    seen.append((method, reducer_options))
    raise Stop
  monkeypatch.setattr(prune, "run_prune", spy)
  for argv, want in (
      (["--method=random", "--schedule=embed:40", "--random_seed=2", "--norandom_nested"],
       ("random", {"seed": 2, "nested": False})),
      (["--method=random", "--schedule=embed:40"], ("random", {"seed": 0, "nested": True})),
      (["--method=evit", "--evit_normalize"], ("evit", {"normalize": True}))):
    with pytest.raises(Stop):
      prune.main(common.parse(prune.define_flags, ["--batch_size=2"] + argv))
    assert seen[-1] == want


def test_load_images_matches_folder_labels_to_the_model_class_names(tmp_path):
  # Folders named after a subset of the classes: labels are the class indices, not folder order.
  from vitprune.digits import write_digits_imagefolder
  root = write_digits_imagefolder(str(tmp_path / "d"), split="test", limit=20)
  dirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  keep = dirs[-2:]
  for name in dirs:
    if name not in keep:
      shutil.rmtree(os.path.join(root, name))
  cfg = get_config("vit_digits")
  names = common.class_names(common.EMBEDDED_WEIGHTS)
  _, labels, valid, note = prune.load_images(cfg, root, 8, 0, names)
  assert set(labels[valid].tolist()) <= {names.index(k) for k in keep}
  assert set(labels[valid].tolist()) != {0, 1}
  assert note.startswith("all ") and valid.sum() == int(note.split()[1])


def test_load_images_samples_a_larger_folder_class_balanced(tmp_path):
  """More images than the batch: a seeded class-balanced sample, said in words (the folder's
  first 10 files hold 3 of the 10 classes)."""
  from vitprune.data import ImageFolder
  from vitprune.digits import write_digits_imagefolder
  root = write_digits_imagefolder(str(tmp_path / "d"), split="test", limit=40)
  cfg = get_config("vit_digits")
  names = common.class_names(common.EMBEDDED_WEIGHTS)
  assert len(set(ImageFolder(root, class_names=names).labels[:10].tolist())) <= 3
  images, labels, valid, note = prune.load_images(cfg, root, 10, 3, names)
  assert valid.all() and len(set(labels.tolist())) == 10
  assert note == f"10 of the 40 images of {root} (class-balanced sample, seed 3)"
  again = prune.load_images(cfg, root, 10, 3, names)
  np.testing.assert_array_equal(again[0], images)
  np.testing.assert_array_equal(again[1], labels)


def test_the_digits_follow_the_class_names_of_the_weights(tmp_path):
  """Weights naming their outputs '9'..'0' were scored on the digits as if output k were digit k
  (0.9749 for the reversed names, 0.0084 for the same images as a folder)."""
  cfg = get_config("vit_digits")
  names = tuple(reversed(common.class_names(common.EMBEDDED_WEIGHTS)))
  _, plain, valid, _ = prune.load_images(cfg, "", 16, 0, tuple(str(d) for d in range(10)))
  _, mapped, _, _ = prune.load_images(cfg, "", 16, 0, names)
  np.testing.assert_array_equal(mapped[valid], 9 - plain[valid])
  with pytest.warns(UserWarning, match=r"lack the digits \['9'\]\): the digits are used "
                                       "unlabelled"):
    _, labels, _, _ = prune.load_images(cfg, "", 16, 0, tuple("012345678a"))
  assert (labels == -1).all()


def test_a_model_without_a_head_is_compared_by_features_on_any_images(tmp_path):
  """Features weights (convert --num_classes=0) failed on the digits ('labels must be -1
  (unknown) or nothing else') and on a class folder ('a folder with exactly 0 classes')."""
  from vitprune.digits import write_digits_imagefolder
  cfg = get_config("vit_digits").replace(num_classes=0)
  root = write_digits_imagefolder(str(tmp_path / "d"), split="test", limit=20)
  for images_dir, note in (("", "the first 8 test digits"),
                           (root, f"8 of the 20 images of {root} (class-balanced sample")):
    _, labels, valid, said = prune.load_images(cfg, images_dir, 8, 0, None)
    assert (labels == -1).all() and valid.all()
    assert said.startswith(note) and said.endswith(", labels unused (no classifier head)")
  assert prune.load_images(get_config("vit_digits"), "", 1, 0, None)[3] == "the first test digit"
  r = prune_lib.run_prune(cfg, model.init_params(cfg, 0), prune.load_images(cfg, "", 4, 0)[0],
                          method="pomt", schedule=None, labels=np.full(4, -1), repeats=3,
                          warmup=1)
  assert r["metric"] == "feature_cosine"


def test_a_batch_larger_than_the_images_says_it_is_padded(tmp_path):
  """--batch_size=1000 on the 359 test digits timed 641 padding rows under 'the first 359 test
  digits', unsaid (a probe); the note now says so, and the padding rows are marked invalid."""
  from vitprune.digits import write_digits_imagefolder
  cfg = get_config("vit_digits")
  imgs, _, valid, said = prune.load_images(cfg, "", 400, 0)
  assert imgs.shape[0] == 400 and valid.sum() == 359
  assert said == ("the first 359 test digits, padded with 41 zero images to the batch of 400 "
                  "for timing (compared on the 359 alone)")
  root = write_digits_imagefolder(str(tmp_path / "d"), split="test", limit=20)
  said = prune.load_images(cfg, root, 24, 0)[3]
  assert said == (f"all 20 images of {root}, padded with 4 zero images to the batch of 24 for "
                  "timing (compared on the 20 alone)")
  assert "padded" not in prune.load_images(cfg, root, 20, 0)[3]
  one = str(tmp_path / "one")                      # (flat: one image, unlabelled)
  os.makedirs(one)
  shutil.copy(os.path.join(root, data_lib.ImageFolder(root).files[0]), one)
  assert prune.load_images(cfg, one, 2, 0)[3].startswith(  # (was 'padded with 1 zero images')
      f"the one image of {one}, padded with 1 zero image to the batch of 2 for timing (compared "
      "on the 1 alone)")


def test_cli_says_which_blocks_tomes_cap_lowers_r():
  """`--method=tome --schedule=r100` ran as r32, r16, ... and printed 'schedule=list:65,33,...'
  beside a speed-up, the lowering unsaid (a probe)."""
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  code, out, err = run_cli_in_process(root, "prune", ["--method=tome", "--schedule=r100",
                                                      "--batch_size=2", "--repeats=3",
                                                      "--warmup=0"])
  assert code == 0 and "schedule=list:65,33,17,9,5,3,2" in out, err
  assert ("ToMeCapWarning: schedule 'r100' removes fewer tokens than its r asks at 6 block(s) "
          "(ToMe's cap: a block removes at most half of the non-prefix tokens entering it): 32 "
          "of 100 at block 0, 16 of 100 at block 1, 8 of 100 at block 2, 4 of 100 at block 3, "
          "2 of 100 at block 4, 1 of 100 at block 5\n" in err), err


def test_the_two_graphs_are_timed_interleaved(monkeypatch):
  """The unpruned graph was timed, then the pruned one: load drift reached one of them (the
  default run printed x1.56 for a x1.12 FLOP cut; reruns x0.97..1.08; a probe). Both are now
  timed in rounds of a shuffled order, exactly --repeats calls each."""
  from vitprune.profile import protocol  # pylint: disable=g-import-not-at-top
  order = []
  real = protocol.time_calls

  def spy(fn, args, cfg, *rest, **kw):
    order.append((fn, cfg.min_reps, cfg.max_reps, cfg.warmup))
    return real(fn, args, cfg, *rest, **kw)

  monkeypatch.setattr(protocol, "time_calls", spy)
  params = model.init_params(CFG, 0)
  images = np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
  prune_lib.run_prune(CFG, params, images, method="pomt", schedule=None, warmup=1, repeats=20)
  # 5 rounds x 2 graphs (and, for a noisy graph, up to 2 re-measurements, in rounds too)
  assert len(order) in (10, 15, 20, 25, 30) and {o[1:] for o in order} == {(4, 4, 1)}
  graphs = [o[0] for o in order[:10]]
  assert len(set(graphs)) == 2 and all(set(graphs[i:i + 2]) == set(graphs[:2])
                                       for i in range(0, 10, 2))        # each round: both
  assert [prune_lib.timing_rounds(n) for n in (3, 6, 7, 9, 12, 20, 200)] == [1, 2, 1, 3, 4, 5, 5]


def test_default_tome_schedule_removes_at_least_a_quarter_of_the_patches():
  """ToMe's r is the quarter rounded up over the blocks: DeiT-S's 196 // 4 = 49 patches over 12
  blocks is r = ceil(49 / 12) = 5 (60 removed); r = 4 would remove only 48."""
  deit = get_config("deit_small_patch16_224")
  s = prune_lib.default_schedule(deit, "tome")
  assert s == S.remove_per_layer(deit, 5)
  assert s.counts[0] == 197 and s.counts[-1] == 197 - 12 * 5


@pytest.mark.parametrize("labels, match", [
    ([0, 10], r"^labels must be -1 \(unknown\) or classes 0\.\.9 of test_tiny_vit, got 0\.\.10$"),
    ([-2, 0], r"^labels must be -1 \(unknown\) or classes 0\.\.9 of test_tiny_vit, got -2\.\.0$"),
    ([0.0, 1.0], r"^labels must be integers \(-1: unknown\), got float64$"),
])
def test_run_prune_refuses_labels_just_outside_the_classes_and_non_integer_labels(labels, match):
  params = model.init_params(CFG, 0)
  images = prune.synthetic_images(CFG, 2, seed=0)
  with pytest.raises(ValueError, match=match):
    prune_lib.run_prune(CFG, params, images, method="pomt", schedule=None, warmup=0, repeats=1,
                        labels=np.array(labels))


def test_run_prune_ignores_the_labels_of_padding_rows():
  """A padding row (valid False) may carry any label: only the valid rows are checked/scored."""
  params = model.init_params(CFG, 0)
  images = prune.synthetic_images(CFG, 2, seed=0)
  full = np.asarray(model.jitted_forward(params, images, cfg=CFG)).argmax(-1)
  r = prune_lib.run_prune(CFG, params, images, method="pomt", schedule=S.full_schedule(CFG),
                          labels=np.array([full[0], 99]), valid=np.array([True, False]),
                          warmup=0, repeats=1)
  assert (r["accuracy_full"], r["accuracy_pruned"], r["agreement"]) == (1.0, 1.0, 1.0)


def test_run_prune_refuses_non_finite_outputs_naming_the_graph():
  params = model.init_params(CFG, 0)
  params = dict(params, head=dict(params["head"], bias=np.full(10, np.nan, np.float32)))
  with pytest.raises(FloatingPointError,
                     match=r"^the unpruned test_tiny_vit produced non-finite outputs \(float32\)$"):
    prune_lib.run_prune(CFG, params, prune.synthetic_images(CFG, 1, seed=0), method="pomt",
                        schedule=None, warmup=0, repeats=1)


def test_cli_prints_the_comparison_in_the_dtype_and_seed_it_was_given(tmp_path):
  """Mutation audit of experiments/prune.py: --dtype and --seed reach the run, and every line
  the CLI prints around the timings is pinned."""
  code, out, err = run_cli_in_process(tmp_path, "prune", [
      "--model=test_tiny_vit", "--dtype=bfloat16", "--batch_size=2", "--repeats=3",
      "--warmup=0", "--schedule=keep@1:9", "--seed=2"])
  assert (code, err) == (0, "")
  lines = out.splitlines()
  assert lines[:2] == [
      "test_tiny_vit  method=pomt  schedule=keep@1:9  batch=2  dtype=bfloat16  device=cpu",
      "tokens entering block: 0:17 1:17  | leaving the last: 9"]
  assert re.fullmatch(r"top-1 agreement with the unpruned model: \d\.\d{4}", lines[2])
  for line, k in zip(lines[3:5], ("  full", "pruned")):
    assert re.fullmatch(rf"latency {k}: +\d+\.\d{{3}} ms median per batch of 2 \(IQR "
                        r"\d+\.\d{3} ms\), compile \d+\.\d\d s", line), line
  assert re.fullmatch(r"speed-up: \d+\.\d{3}x.*", lines[5])
  assert lines[6:] == ["images: 2 synthetic images (seed 2)",
                       "weights: init_params(seed=2) (random-init, not trained: the agreement "
                       "compares two untrained graphs)"]


def test_cli_passes_its_timing_flags_to_run_prune(monkeypatch):
  """Mutation audit: --warmup, --repeats and --dtype are the ones run_prune times with."""
  seen = {}

  class Stop(Exception):
    pass

  def spy(*a, **k):
    seen.update(k)
    raise Stop
  monkeypatch.setattr(prune, "run_prune", spy)
  with pytest.raises(Stop):
    prune.main(common.parse(prune.define_flags, [
        "--model=test_tiny_vit", "--batch_size=2", "--warmup=1", "--repeats=4",
        "--dtype=bfloat16", "--schedule=keep@1:9"]))
  assert (seen["warmup"], seen["repeats"], seen["dtype"]) == (1, 4, "bfloat16")
  assert seen["schedule"].counts == (17, 17, 9) and seen["method"] == "pomt"


def test_a_folder_of_exactly_the_batch_is_all_its_images_and_synthetic_images_fill_the_size(
    tmp_path):
  """A mutation audit: a folder of --batch_size images is read whole (not a seeded 'sample' of
  all of them), and synthetic images of a size that is not a multiple of 4 fill it."""
  from vitprune.digits import write_digits_imagefolder
  root = write_digits_imagefolder(str(tmp_path / "d"), split="test", limit=20)
  imgs, _, valid, said = prune.load_images(get_config("vit_digits"), root, 20, 0)
  assert said == f"all 20 images of {root}" and imgs.shape[0] == 20 and valid.all()
  cfg = get_config("test_tiny_vit")
  cfg = cfg.__class__(**{**cfg.__dict__, "img_size": 30, "patch_size": 6})
  imgs = prune.synthetic_images(cfg, 2, 0)
  assert imgs.shape == (2, 30, 30, cfg.in_chans) and imgs.dtype == np.float32


def _hand_record():
  """A `run_prune` record written by hand."""
  return {"model": "m", "method": "random", "options": {"seed": 2, "nested": False},
       "schedule": "keep@1:9", "batch": 4, "dtype": "float32", "device": "cpu",
       "counts": [17, 17, 9], "metric": "top1_agreement", "agreement": 0.75,
       "accuracy_full": 0.5, "accuracy_pruned": 0.25,
       "accuracy_change": {"value": -0.25, "interval_95": [-0.5, 0.0], "images_lost": 1,
                           "images_gained": 0},
       "full": {"median_s": 0.004, "iqr_s": 0.0005, "compile_s": 1.25},
       "pruned": {"median_s": 0.002, "iqr_s": 0.00025, "compile_s": 0.5}}


def test_format_result_by_hand():
  """A mutation audit: every line of `format_result` from a record written by hand (latencies
  in ms, the options in the method, the paired change, features without a classifier)."""
  r = _hand_record()
  lines = prune.format_result(r).splitlines()
  assert lines[1:] == [
      "tokens entering block: 0:17 1:17  | leaving the last: 9",
      "top-1 agreement with the unpruned model: 0.7500",
      "top-1 accuracy: unpruned 0.5000, pruned 0.2500; change -0.2500 (paired 95% interval "
      "-0.5000..+0.0000: 1 image lost, 0 gained)",
      "latency   full:     4.000 ms median per batch of 4 (IQR 0.500 ms), compile 1.25 s",
      "latency pruned:     2.000 ms median per batch of 4 (IQR 0.250 ms), compile 0.50 s",
      "speed-up: 2.000x"]
  assert lines[0].startswith("m  method=random") and lines[0].endswith(
      "  schedule=keep@1:9  batch=4  dtype=float32  device=cpu")
  r = dict(r, metric="feature_cosine", agreement=0.5)
  for k in ("accuracy_full", "accuracy_pruned", "accuracy_change"):
    del r[k]
  lines = prune.format_result(r).splitlines()
  assert lines[2] == "feature cosine similarity with the unpruned model: 0.5000"
  assert lines[3].startswith("latency   full:")


def test_the_cli_returns_the_record_with_its_images_and_weights(monkeypatch, capsys):
  """A mutation audit: the returned record names the images and the weights, each in its own
  key, as printed."""
  monkeypatch.setattr(prune, "run_prune", lambda *a, **k: _hand_record())
  r = prune.main(common.parse(prune.define_flags, ["--batch_size=2"]))
  out = capsys.readouterr().out
  assert r["images"] == "the first 2 test digits" and "\nimages: the first 2 test digits\n" in out
  assert r["weights"] == common.load_model("vit_digits", None)[2]
  assert f"\nweights: {common.shown(r['weights'])}\n" in out


def test_a_folder_of_one_or_two_images_is_counted(tmp_path):
  """A mutation audit: 'the one image of' a folder of one, 'all 2 images of' a folder of two."""
  from vitprune.digits import write_digits_imagefolder
  for n, said in ((1, "the one image of {}"), (2, "all 2 images of {}")):
    root = write_digits_imagefolder(str(tmp_path / f"d{n}"), split="test", limit=n)
    imgs, _, valid, note = prune.load_images(get_config("vit_digits"), root, 2, 0,
                                             common.class_names(common.EMBEDDED_WEIGHTS))
    assert note.startswith(said.format(root)) and imgs.shape[0] == 2
    assert valid.tolist() == [True] * n + [False] * (2 - n)
