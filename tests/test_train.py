"""Tests of vitprune/train.py and of the shipped weights/vit_digits checkpoint."""
import dataclasses
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitprune import checkpoint
from vitprune import console
from vitprune import model
from vitprune import train as td
from vitprune.digits import digits_preprocessing, digits_split
from vitprune.registry import get_config
from tests.conftest import run_cli_in_process

vit_digits = get_config("vit_digits")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.join(REPO, "weights", "vit_digits")
TINY = get_config("test_tiny_vit")


def test_vit_digits_architecture():
  assert vit_digits.num_tokens == 65 and vit_digits.num_prefix_tokens == 1
  assert vit_digits.depth == 6 and vit_digits.num_classes == 10
  assert vit_digits.preprocessing == digits_preprocessing(32)


def test_background_value_and_shift():
  fill = td.background_value(vit_digits)
  np.testing.assert_array_equal(fill, [-1.0, -1.0, -1.0])
  rng = np.random.default_rng(0)
  imgs = rng.normal(size=(6, 8, 8, 3)).astype(np.float32)
  same = td.random_shift(jax.random.key(0), jnp.asarray(imgs), 0, jnp.asarray(fill))
  np.testing.assert_array_equal(same, imgs)
  out = np.asarray(td.random_shift(jax.random.key(1), jnp.asarray(imgs), 2, jnp.asarray(fill)))
  assert out.shape == imgs.shape
  # Every output is exactly one of the 25 shifts of its input, filled with the background.
  padded = np.pad(imgs, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=-1.0)
  seen = set()
  for b in range(6):
    matches = [(dy, dx) for dy in range(5) for dx in range(5)
               if np.array_equal(out[b], padded[b, dy:dy + 8, dx:dx + 8])]
    assert len(matches) == 1, b
    seen.add(matches[0])
  assert len(seen) > 1  # not the same shift for the whole batch
  # Over many images every shift of [-2, 2] x [-2, 2] is drawn, both signs.
  many = np.asarray(td.random_shift(jax.random.key(2), jnp.asarray(
      np.repeat(imgs[:1], 400, axis=0)), 2, jnp.asarray(fill)))
  drawn = {(dy, dx) for img in many for dy in range(5) for dx in range(5)
           if np.array_equal(img, padded[0, dy:dy + 8, dx:dx + 8])}
  assert drawn == {(dy, dx) for dy in range(5) for dx in range(5)}


def test_decay_mask():
  mask = td.decay_mask(model.init_params(TINY))
  flat = {jax.tree_util.keystr(k): v for k, v in jax.tree.flatten_with_path(mask)[0]}
  decayed = sorted(k for k, v in flat.items() if v)
  assert decayed == sorted(
      ["['head']['kernel']", "['patch_embed']['kernel']"]
      + [f"['blocks'][{i}]['{a}']['{b}']['kernel']" for i in range(2)
         for a, b in (("attn", "qkv"), ("attn", "proj"), ("mlp", "fc1"), ("mlp", "fc2"))])


def test_learning_rate_warms_up_then_decays_to_its_floor():
  tc = td.TrainConfig(epochs=10, warmup_epochs=2, lr=2e-3, min_lr_ratio=0.01)
  lr = td.learning_rate(tc, steps_per_epoch=5)
  assert float(lr(0)) == 0.0 and float(lr(5)) == pytest.approx(1e-3)
  assert float(lr(10)) == pytest.approx(2e-3)                       # the peak, warm-up done
  assert float(lr(50)) == pytest.approx(2e-5)                        # the floor at the end
  after = [float(lr(s)) for s in range(10, 51)]
  assert all(a > b for a, b in zip(after, after[1:]))               # decaying all the way
  assert float(lr(30)) == pytest.approx(2e-5 + (2e-3 - 2e-5) / 2)   # cosine: half way at half
  whole = td.TrainConfig(epochs=3, warmup_epochs=3)                  # warm-up of every epoch
  assert float(td.learning_rate(whole, 4)(12)) == pytest.approx(whole.lr)


def test_weight_decay_reaches_only_the_masked_leaves():
  """One AdamW step on zero gradients moves only what `decay_mask` decays (biases, norms and
  the position embedding were decayed when the mask was left out)."""
  tc = td.TrainConfig(epochs=2, warmup_epochs=0, weight_decay=0.5)
  params = model.init_params(TINY, 0)
  params = jax.tree.map(lambda v: v + 1.0, params)        # (zero-initialised leaves too)
  opt = td.make_optimizer(tc, steps_per_epoch=1)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = opt.update(zeros, opt.init(params), params)
  moved = jax.tree.map(lambda u: bool(jnp.any(u != 0)), updates)
  assert moved == td.decay_mask(params)


def test_epoch_batches():
  a = td.epoch_batches(10, 3, seed=0, epoch=1)
  assert [len(b) for b in a] == [3, 3, 3]
  assert len(set(np.concatenate(a).tolist())) == 9
  assert all(np.array_equal(x, y) for x, y in zip(a, td.epoch_batches(10, 3, 0, 1)))
  assert not all(np.array_equal(x, y) for x, y in zip(a, td.epoch_batches(10, 3, 0, 2)))
  with pytest.raises(ValueError, match="smaller than batch_size"):
    td.epoch_batches(2, 3, 0, 0)


@pytest.mark.parametrize("kw, match", [
    (dict(epochs=0), "epochs must be >= 1"), (dict(batch_size=0), "batch_size must be >= 1"),
    (dict(warmup_epochs=50), "warmup_epochs"), (dict(lr=0.0), "lr must be > 0"),
    (dict(label_smoothing=1.0), "label_smoothing"), (dict(max_shift=-1), "max_shift"),
    (dict(weight_decay=-1.0), "weight_decay"),
    (dict(lr=1e308), "^lr 1e\\+308 overflows float32, the dtype training computes in$"),
    (dict(weight_decay=1e39), "^weight_decay 1e\\+39 overflows float32"),
    (dict(lr=1e-46), r"^lr 1e-46 is below float32's smallest normal number \(1.18e-38\): "
                     "training, in float32, would not move$"),
    (dict(lr=1e-40), r"^lr 1e-40 is below float32's smallest normal number")])
def test_train_config_errors(kw, match):
  with pytest.raises(ValueError, match=match):
    td.TrainConfig(**kw)
  if "warmup_epochs" in kw:         # ... while a warm-up of every epoch is a valid config
    assert td.TrainConfig(epochs=4, warmup_epochs=4).warmup_epochs == 4


@pytest.fixture(scope="module")
def one_batch():
  x, y = td.load_split("train", TINY)
  return x[:16], y[:16]


def test_load_split():
  x, y = td.load_split("test", vit_digits)
  assert x.shape == (len(digits_split(0)[1]), 32, 32, 3) and x.dtype == np.float32
  assert y.dtype == np.int32 and sorted(set(y.tolist())) == list(range(10))


def test_a_train_step_uses_the_configs_label_smoothing(one_batch):
  """The loss a step reports is the label-smoothed one of the config (0.1 by default; a step
  that ignored it trained on hard labels while the checkpoint recorded 0.1)."""
  x, y = (jnp.asarray(a) for a in one_batch)
  for smoothing in (0.0, 0.1, 0.3):
    tc = td.TrainConfig(epochs=1, batch_size=16, warmup_epochs=0, max_shift=0,
                        label_smoothing=smoothing)
    opt = td.make_optimizer(tc, 1)
    state = td.init_state(TINY, tc, opt)
    want, _ = td.loss_and_accuracy(state.params, x, y, cfg=TINY, label_smoothing=smoothing)
    _, loss, _ = td.make_train_step(TINY, tc, opt)(state, x, y, jax.random.key(0))
    assert float(loss) == pytest.approx(float(want), rel=1e-6), smoothing


def test_every_step_draws_its_own_augmentation_key(one_batch, monkeypatch):
  """Within an epoch too: a key per epoch shifted every batch of the epoch alike."""
  keys, real = [], td.make_train_step

  def spy(cfg, tc, optimizer):
    step = real(cfg, tc, optimizer)

    def recorded(state, images, labels, key):
      keys.append(np.asarray(jax.random.key_data(key)).tobytes())
      return step(state, images, labels, key)
    return recorded
  monkeypatch.setattr(td, "make_train_step", spy)
  x, y = (np.concatenate([a, a]) for a in one_batch)         # 2 batches of 16 per epoch
  tc = td.TrainConfig(epochs=2, batch_size=16, warmup_epochs=0, max_shift=1)
  td.train(TINY, tc, (x, y), None, log=lambda s: None)
  assert len(keys) == 4 and len(set(keys)) == 4


def test_train_steps_fit_a_batch_and_are_deterministic(one_batch):
  """15 jitted steps on one fixed batch of 16 digits: the loss drops well below chance."""
  tc = td.TrainConfig(epochs=15, batch_size=16, lr=1e-2, warmup_epochs=1, max_shift=0,
                      label_smoothing=0.0, seed=3)
  logs = []
  p1, hist = td.train(TINY, tc, one_batch, one_batch, log=logs.append)
  assert len(hist) == 15 and len(logs) == 15 and hist[-1]["steps"] == 15
  assert all(np.isfinite(h["loss"]) for h in hist)
  np.testing.assert_allclose(hist[0]["loss"], np.log(10), atol=0.05)  # near-uniform at init
  assert hist[-1]["loss"] < hist[0]["loss"] - 0.3
  assert hist[-1]["test_accuracy"] >= 0.3  # chance is 0.1
  init = model.init_params(TINY, 3)
  assert not np.allclose(p1["head"]["kernel"], init["head"]["kernel"])
  _, h3 = td.train(TINY, tc, one_batch, None, max_steps=5, log=lambda s: None)
  assert [h["steps"] for h in h3] == [1, 2, 3, 4, 5]
  assert [h["loss"] for h in h3] == [h["loss"] for h in hist[:5]]  # same seed, same steps


def test_shipped_checkpoint_matches_its_metrics():
  """weights/vit_digits loads as vit_digits and reproduces the held-out accuracy it reports."""
  cfg, params = checkpoint.load_weights(WEIGHTS)
  assert cfg == vit_digits
  with open(os.path.join(WEIGHTS, "metrics.json")) as f:
    metrics = json.load(f)
  _, meta = checkpoint.read_weights_config(WEIGHTS)
  x, y = td.load_split("test", cfg, seed=metrics["split_seed"])
  acc = td.accuracy(params, cfg, x, y)
  assert acc == metrics["test_accuracy"] == meta["test_accuracy"]
  assert acc >= 0.95
  assert metrics["command"].startswith("python -m experiments.train_digits")
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(WEIGHTS) for f in fs)
  assert size < 2 * 1024 * 1024


def test_a_diverging_run_stops_with_an_error(one_batch):
  """A learning rate float32 holds but training cannot (the loss goes NaN) ended 40 epochs of
  NaN losses with saved garbage weights; it stops after the first such epoch. Epoch 1's one
  step computed its loss before the update that blew up: the model's logits after it are
  checked too (with --max_steps=1 a probe saved such weights, scored 0.1003 by NaN's argmax)."""
  tc = td.TrainConfig(epochs=40, batch_size=16, lr=1e30, warmup_epochs=0, max_shift=0, seed=3)
  for test_data in (None, one_batch):
    logs = []
    with pytest.raises(FloatingPointError, match=r"^training diverged: after epoch 1 \(1 steps\) "
                       r"the model gives non-finite logits; lower the learning rate \(lr "
                       r"1e\+30\)$"):
      td.train(TINY, tc, one_batch, test_data, log=logs.append, max_steps=1)
    assert logs == []
  with pytest.raises(FloatingPointError, match="the model gives non-finite logits"):
    td.accuracy(jax.tree.map(lambda a: a * np.nan, model.init_params(TINY, 0)), TINY, *one_batch)


def test_a_train_step_shifts_by_the_configs_max_shift_filling_the_background(monkeypatch):
  """The step augments with `tc.max_shift` and fills with what a black pixel normalises to:
  -mean / std per channel (a zero fill is mid-grey after normalisation)."""
  seen = []

  def shift(key, images, max_shift, fill):
    seen.append((max_shift, np.asarray(fill)))
    return images
  monkeypatch.setattr(td, "random_shift", shift)
  tc = td.TrainConfig(epochs=1, batch_size=2, warmup_epochs=0, max_shift=3)
  opt = td.make_optimizer(tc, 1)
  x = jnp.zeros((2, TINY.img_size, TINY.img_size, TINY.in_chans))
  td.make_train_step(TINY, tc, opt)(td.init_state(TINY, tc, opt), x, jnp.zeros(2, jnp.int32),
                                    jax.random.key(0))
  prep = TINY.preprocessing
  want = [-m / s for m, s in zip(prep.mean, prep.std)]
  assert len(seen) == 1 and seen[0][0] == 3
  np.testing.assert_allclose(seen[0][1], want, rtol=1e-6)


def test_the_optimizer_clips_gradients_to_the_configs_norm():
  """A first AdamW step (no warm-up, no decay) moves each weight by lr * g / (|g| + 1e-8) of
  the gradient clipped to global norm `clip_norm`: with a clip far below Adam's epsilon the
  step shrinks in proportion, so a clip ignoring the config's norm shows."""
  grads = {"head": {"bias": jnp.asarray([3.0, -4.0])}}          # global norm 5
  params = {"head": {"bias": jnp.zeros(2)}}
  for clip in (1e-10, 2.0):
    tc = td.TrainConfig(epochs=1, warmup_epochs=0, lr=1e-2, weight_decay=0.0, clip_norm=clip)
    opt = td.make_optimizer(tc, steps_per_epoch=1)
    updates, _ = opt.update(grads, opt.init(params), params)
    g = np.asarray([3.0, -4.0]) * clip / 5.0
    want = -1e-2 * g / (np.abs(g) + 1e-8)
    np.testing.assert_allclose(np.asarray(updates["head"]["bias"]), want, rtol=1e-4)


def test_the_test_accuracy_of_an_epoch_is_measured_on_the_held_out_images(one_batch):
  """`test_accuracy` in the history is the model's accuracy on `test_data` after the epoch,
  not on the training batch (here the training batch relabelled: the two differ)."""
  x, y = one_batch
  test_data = (x, (y + 1) % 10)
  tc = td.TrainConfig(epochs=10, batch_size=16, lr=1e-2, warmup_epochs=1, max_shift=0,
                      label_smoothing=0.0, seed=3)       # fits the batch (well above chance)
  params, hist = td.train(TINY, tc, one_batch, test_data, log=lambda s: None)
  want = td.accuracy(params, TINY, *test_data)
  assert want != td.accuracy(params, TINY, x, y)     # (else the check below checks nothing)
  assert hist[-1]["test_accuracy"] == want


def test_the_default_train_config_is_the_one_the_shipped_weights_were_trained_with():
  """weights/vit_digits was trained by `train_digits` with no hyper-parameter flag: its flag
  defaults (TrainConfig's) must be what its meta records, so the command reproduces it."""
  with open(os.path.join(WEIGHTS, "metrics.json")) as f:
    metrics = json.load(f)
  _, meta = checkpoint.read_weights_config(WEIGHTS)
  assert metrics["command"] == "python -m experiments.train_digits --out=weights/vit_digits "\
      "--overwrite"
  assert dataclasses.asdict(td.TrainConfig()) == meta["train_config"] == metrics["train_config"]
  per_epoch = meta["split"]["num_train"] // 64                       # 1438 // 64 = 22
  assert [h["steps"] for h in metrics["history"]] == [per_epoch * e for e in range(1, 41)]


def test_a_warm_up_one_epoch_longer_than_training_is_refused():
  assert td.TrainConfig(epochs=4, warmup_epochs=4).warmup_epochs == 4
  with pytest.raises(ValueError, match=r"^warmup_epochs must be in \[0, epochs=4\], got 5$"):
    td.TrainConfig(epochs=4, warmup_epochs=5)



def test_train_digits_trains_and_records_what_its_flags_say(tmp_path, monkeypatch):
  """Mutation audit of experiments/train_digits.py: every hyper-parameter flag reaches the
  training and its records, the held-out accuracy is the last epoch's; a warm-up as long as
  training is allowed (TrainConfig's bound). The training itself is a stand-in."""
  from experiments import train_digits  # pylint: disable=g-import-not-at-top
  seen = {}
  history = [{"epoch": 1, "steps": 89, "test_accuracy": 0.25},     # (1438 // 16 per epoch;
             {"epoch": 2, "steps": 100, "test_accuracy": 0.5}]     # --max_steps=100 stops it)

  def fake_train(cfg, tc, train_data, test_data, max_steps=None):
    seen.update(tc=tc, max_steps=max_steps, sizes=(len(train_data[0]), len(test_data[0])))
    return model.init_params(cfg, 0), history
  monkeypatch.setattr(train_digits, "train", fake_train)
  code, out, err = run_cli_in_process(tmp_path, "train_digits", [
      "--epochs=2", "--warmup_epochs=2", "--batch_size=16", "--lr=0.0005",
      "--weight_decay=0.01", "--label_smoothing=0.05", "--max_shift=1", "--seed=3",
      "--split_seed=1", "--max_steps=100", "--out=w"])
  assert code == 0, err
  want = dict(dataclasses.asdict(td.TrainConfig()), epochs=2, warmup_epochs=2, batch_size=16,
              lr=0.0005, weight_decay=0.01, label_smoothing=0.05, max_shift=1, seed=3,
              split_seed=1)
  assert dataclasses.asdict(seen["tc"]) == want
  assert (seen["max_steps"], seen["sizes"]) == (100, (1438, 359))
  cfg, meta = checkpoint.read_weights_config(str(tmp_path / "w"))
  metrics = json.loads((tmp_path / "w" / "metrics.json").read_text())
  assert cfg == vit_digits and meta["train_config"] == metrics["train_config"] == want
  assert (meta["epochs"], meta["max_steps"], metrics["max_steps"]) == (2, 100, 100)
  assert meta["split"] == {"seed": 1, "test_fraction": 0.2, "num_train": 1438, "num_test": 359}
  assert (metrics["seed"], metrics["split_seed"], metrics["history"]) == (3, 1, history)
  train_acc = td.accuracy(model.init_params(cfg, 0), cfg, *td.load_split("train", cfg, seed=1))
  assert meta["test_accuracy"] == metrics["test_accuracy"] == 0.5
  assert meta["train_accuracy"] == metrics["train_accuracy"] == train_acc != 0.5
  assert checkpoint.read_class_names(str(tmp_path / "w")) == tuple(str(d) for d in range(10))
  devices = console.counted(jax.device_count(), jax.default_backend() + " device")
  lines = out.splitlines()
  assert lines[0] == (f"vit_digits: 65 tokens, depth {vit_digits.depth}; train 1438 / test 359 "
                      f"digits; {devices}")
  assert lines[-2] == "stopped after 100 steps of 178 (--max_steps)"
  assert re.fullmatch(rf"held-out accuracy 0\.5000; on the training digits \(unaugmented\) "
                      rf"{train_acc:.4f}; \d+s; saved to "
                      rf"{re.escape(str(tmp_path / 'w'))}", lines[-1]), lines[-1]


def test_a_negative_warm_up_or_label_smoothing_is_refused_exactly():
  """Mutation audit: the lower ends of `warmup_epochs` and `label_smoothing` (0 is valid)."""
  assert td.TrainConfig(warmup_epochs=0, label_smoothing=0.0).warmup_epochs == 0
  with pytest.raises(ValueError) as e:
    td.TrainConfig(epochs=4, warmup_epochs=-1)
  assert str(e.value) == "warmup_epochs must be in [0, epochs=4], got -1"
  with pytest.raises(ValueError) as e:
    td.TrainConfig(label_smoothing=-0.1)
  assert str(e.value) == "label_smoothing must be in [0, 1), got -0.1"


def test_epoch_batches_of_an_exact_multiple_and_of_exactly_one_batch():
  """Mutation audit: `epoch_batches` at its bounds: a training set of an exact multiple of the
  batch size is used whole (the last full batch is not dropped), and one of exactly one batch
  trains (only a smaller one is refused)."""
  a = td.epoch_batches(9, 3, seed=0, epoch=0)
  assert [len(b) for b in a] == [3, 3, 3] and sorted(np.concatenate(a).tolist()) == list(range(9))
  one = td.epoch_batches(3, 3, seed=0, epoch=0)
  assert len(one) == 1 and sorted(one[0].tolist()) == [0, 1, 2]
  with pytest.raises(ValueError) as e:
    td.epoch_batches(2, 3, 0, 0)
  assert str(e.value) == "training set of 2 images is smaller than batch_size 3"


def test_a_shift_of_the_whole_image_is_refused_and_one_pixel_less_is_not():
  """Mutation audit: `check_train_config` at its bound: a `max_shift` of the image size would
  shift every training image out of the frame; one pixel less is valid."""
  size = TINY.img_size
  td.check_train_config(TINY, td.TrainConfig(max_shift=size - 1))
  with pytest.raises(ValueError) as e:
    td.check_train_config(TINY, td.TrainConfig(max_shift=size))
  assert str(e.value) == f"max_shift {size} must be below the image size {size}"


def test_an_epoch_whose_mean_loss_is_not_finite_stops_with_its_own_error(one_batch):
  """Mutation audit: an epoch of two steps whose second loss is NaN (after the first update
  blew up) stops on its mean loss, named, before any held-out check; nothing is logged."""
  x, y = one_batch
  two = (np.concatenate([x, x]), np.concatenate([y, y]))
  tc = td.TrainConfig(epochs=40, batch_size=16, lr=1e30, warmup_epochs=0, max_shift=0, seed=3)
  logs = []
  with pytest.raises(FloatingPointError) as e:
    td.train(TINY, tc, two, one_batch, log=logs.append, max_steps=2)
  assert str(e.value) == ("training diverged: the mean loss of epoch 1 is nan (after 2 steps); "
                          "lower the learning rate (lr 1e+30)")
  assert logs == []


@pytest.mark.parametrize("kw, message", [
    (dict(min_lr_ratio=float("nan")), "min_lr_ratio must be a finite number, got nan"),
    (dict(min_lr_ratio=float("inf")), "min_lr_ratio must be a finite number, got inf"),
    (dict(min_lr_ratio=-0.5), "min_lr_ratio must be >= 0, got -0.5"),
    (dict(clip_norm=0.0), "clip_norm must be > 0, got 0.0"),
    (dict(clip_norm=-1.0), "clip_norm must be > 0, got -1.0")])
def test_a_schedule_floor_or_clip_norm_that_cannot_train_is_refused(kw, message):
  """Mutation audit: a `min_lr_ratio` that is not finite made every late learning rate NaN; a
  negative one ended the cosine at a negative learning rate (the last steps ascend the loss);
  a `clip_norm` of 0 or less clipped every update to nothing (or flipped it)."""
  with pytest.raises(ValueError) as e:
    td.TrainConfig(**kw)
  assert str(e.value) == message
  td.TrainConfig(min_lr_ratio=0.0)
