"""vitprune/memory.py (the batch-fits check) and the up-front checks of experiments/common.py."""
import dataclasses
import os

import jax
import numpy as np
import pytest

from experiments import common
from experiments import profile as profile_cli
from vitprune import atomic
from vitprune import memory
from vitprune.model import init_params
from vitprune.registry import get_config
from vitprune.schedule import parse_schedule

TINY = get_config("test_tiny_vit")
DEIT = get_config("deit_small_patch16_224")


def test_param_count_matches_the_initialised_tree():
  leaves = jax.tree_util.tree_leaves(init_params(TINY, 0))
  assert memory.param_count(TINY) == sum(x.size for x in leaves)


def test_forward_bytes_is_affine_in_the_batch_and_follows_tokens_and_dtype():
  f = [memory.forward_bytes(DEIT, b) for b in (1, 2, 3)]
  assert f[2] - f[1] == f[1] - f[0] > 0
  assert f[0] > 4 * memory.param_count(DEIT)
  # The peak is the largest block: reducing inside block 0 keeps it, reducing before it does not.
  late = parse_schedule(DEIT, "keep@0:50")
  assert memory.forward_bytes(DEIT, 8, schedule=late) == memory.forward_bytes(DEIT, 8)
  early = parse_schedule(DEIT, "embed:50")
  assert memory.forward_bytes(DEIT, 8, schedule=early) < memory.forward_bytes(DEIT, 8)
  assert (memory.forward_bytes(DEIT, 9, "bfloat16") - memory.forward_bytes(DEIT, 8, "bfloat16")
          < f[1] - f[0])
  with pytest.raises(ValueError, match="batch size must be >= 1"):
    memory.forward_bytes(DEIT, 0)
  with pytest.raises(ValueError, match="dtype must be one of"):
    memory.forward_bytes(DEIT, 1, "float16")


def test_forward_bytes_of_deit_small_by_hand():
  """DeiT-S (22,050,664 parameters; 197 tokens of 384, 6 heads, MLP 1536): the float32
  parameters (+ a bfloat16 cast copy), the float32 image, and the largest block's activations:
  197 x (6 x 384 + 2 x 1536) token values plus 2 x 6 x 197^2 attention logits/probabilities."""
  params, image = 22_050_664, 4 * 224 * 224 * 3
  block = 197 * (6 * 384 + 2 * 1536) + 2 * 6 * 197 * 197
  assert memory.param_count(DEIT) == params
  for dtype, size, cast in (("float32", 4, 0), ("bfloat16", 2, 2)):
    for batch in (1, 8):
      want = (4 + cast) * params + batch * (image + size * block)
      assert memory.forward_bytes(DEIT, batch, dtype) == want, (dtype, batch)
      memory.check_batch_fits(DEIT, [batch], dtype, available=want)        # exactly fits
      with pytest.raises(ValueError, match=f"--batch_size={batch} cannot fit"):
        memory.check_batch_fits(DEIT, [batch], dtype, available=want - 1)


def test_a_given_parameter_count_replaces_the_model_code(monkeypatch):
  """`num_params` (run_deployed: the loaded weights' size) is used instead of `param_count`,
  which imports the model code."""
  n = memory.param_count(DEIT)
  want = memory.forward_bytes(DEIT, 8)
  monkeypatch.setattr(memory, "param_count", lambda cfg: pytest.fail("model code used"))
  assert memory.forward_bytes(DEIT, 8, num_params=n) == want
  assert memory.forward_bytes(DEIT, 8, num_params=n + 10) == want + 40
  assert memory.max_batch(DEIT, want, num_params=n) == 8
  with pytest.raises(ValueError, match="at most 8 fit"):
    memory.check_batch_fits(DEIT, [9], available=want, num_params=n)


def test_max_batch_and_check_batch_fits():
  avail = memory.forward_bytes(DEIT, 40) + 1
  n = memory.max_batch(DEIT, avail)
  assert n == 40 and memory.forward_bytes(DEIT, n + 1) > avail
  memory.check_batch_fits(DEIT, [1, 40], available=avail)
  with pytest.raises(ValueError, match=r"--eval_batch_size=41 cannot fit in memory: a float32 "
                                       r"forward of deit_small_patch16_224 needs .* \(at most "
                                       r"40 fit; see /proc/meminfo MemAvailable\)"):
    memory.check_batch_fits(DEIT, [41, 2], available=avail, flag="--eval_batch_size")
  with pytest.raises(ValueError, match="not even batch 1 fits"):
    memory.check_batch_fits(DEIT, [1], available=1000)
  with pytest.raises(ValueError, match=r"^--verify \(one image\) cannot fit in memory"):
    memory.check_batch_fits(DEIT, [1], available=1000, what="--verify (one image)")


def test_the_profilers_block_inputs_count_against_the_batch():
  """--mode=block holds a [B, n, C] input per count of a chunk: a batch the forward's estimate
  accepted needed ~3.5x it (vit_digits, every count) and was killed (a probe)."""
  from vitprune.profile import runner  # pylint: disable=g-import-not-at-top
  digits = get_config("vit_digits")
  block = runner.ProfileSpec(cfg=digits, mode="block")
  c = digits.embed_dim
  assert block.held_input_bytes() == c * (4 * sum(range(2, 66)) + 8 * 65)
  assert dataclasses.replace(block, chunk_points=3).held_input_bytes() == \
      c * (4 * (65 + 64 + 63) + 8 * 65)
  # (an adaptive run with max_points: the whole grid was counted, a review)
  adaptive = dataclasses.replace(block, adaptive=True, max_points=20, coarse_stride=4)
  assert adaptive.held_input_bytes() == c * (4 * sum(range(46, 66)) + 8 * 65)
  assert dataclasses.replace(block, dtype="bfloat16").held_input_bytes() == \
      c * (2 * sum(range(2, 66)) + 8 * 65)
  assert dataclasses.replace(block, mode="model").held_input_bytes() == 0
  sched = dataclasses.replace(block, mode="schedule",
                              schedules=(parse_schedule(digits, "keep@3:35"),))
  assert sched.held_input_bytes() == c * (4 * (65 + 35) + 8 * 65)
  held = block.held_input_bytes()
  avail = memory.forward_bytes(digits, 1000) + 1          # the forward alone fits ...
  memory.check_batch_fits(digits, [1000], available=avail)
  with pytest.raises(ValueError, match=r"^--batch_size=1000 cannot fit in memory: .*\(at most "
                                       r"\d+ fit"):                     # ... its inputs do not
    memory.check_batch_fits(digits, [1000], available=avail, held_per_example=held)
  fits = memory.max_batch(digits, avail, held_per_example=held)
  assert memory.forward_bytes(digits, fits, held_per_example=held) <= avail < \
      memory.forward_bytes(digits, fits + 1, held_per_example=held)


def test_available_bytes_reads_meminfo(tmp_path):
  p = tmp_path / "meminfo"
  p.write_text("MemTotal:       1000 kB\nMemAvailable:     512 kB\n")
  assert memory.available_bytes(str(p)) == 512 * 1024
  p.write_text("MemTotal:       1000 kB\n")
  assert memory.available_bytes(str(p)) is None
  assert memory.available_bytes(str(tmp_path / "missing")) is None


def test_output_checks(tmp_path):
  (tmp_path / "f").write_text("x")
  (tmp_path / "d").mkdir()
  (tmp_path / "d" / "x").write_text("x")
  common.check_output_dir(str(tmp_path / "new" / "deeper"))
  with pytest.raises(NotADirectoryError, match=r"--out_dir=.*/f is a regular file, not a dir"):
    common.check_output_dir(str(tmp_path / "f"))
  with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
    common.check_output_dir(str(tmp_path / "f" / "sub"))
  os.symlink(tmp_path / "gone", tmp_path / "dangling")     # was described as "a file"
  with pytest.raises(NotADirectoryError, match="dangling is a dangling symbolic link, not a dir"):
    common.check_output_dir(str(tmp_path / "dangling"))
  with pytest.raises(NotADirectoryError, match="dangling is a dangling symbolic link, not a dir"):
    common.check_new_dir(str(tmp_path / "dangling"))
  with pytest.raises(IsADirectoryError, match="--output=.* is a directory, not a file"):
    atomic.check_output_file(str(tmp_path / "d"))
  with pytest.raises(FileExistsError, match="pass --overwrite"):
    atomic.check_output_file(str(tmp_path / "f"), overwrite=False)
  atomic.check_output_file(str(tmp_path / "f"))
  with pytest.raises(FileExistsError, match="--out=.* already exists"):
    common.check_new_dir(str(tmp_path / "d"))
  common.check_new_dir(str(tmp_path / "d"), overwrite=True)
  common.check_new_dir(str(tmp_path / "absent"))
  assert not (tmp_path / "new").exists() and not (tmp_path / "absent").exists()


def test_one_line_and_finite_flags():
  assert common.one_line(KeyError("unknown model 'x'")) == "unknown model 'x'"
  assert common.one_line(ValueError("a\n  b")) == "a b"
  with pytest.raises(ValueError, match="--alpha=nan is not a finite number"):
    common.parse(profile_cli.define_flags, ["--alpha=nan"])
  with pytest.raises(ValueError, match="must be >= 1, got 0"):
    common.positive(0, "jobs")
  assert common.parse_ints(["2", " 3"], "b") == [2, 3]
  with pytest.raises(ValueError, match="duplicate"):
    common.parse_ints(["2", "2"], "b")


def test_gflop_counts_the_distillation_head():
  """A distilled DeiT has one more token in every block and a second head (head_dist)."""
  from vitprune import flops  # pylint: disable=g-import-not-at-top
  dist = get_config("deit_small_distilled_patch16_224")
  assert dist.num_tokens == DEIT.num_tokens + 1 and dist.num_classes == DEIT.num_classes
  blocks = dist.depth * (flops.block_flop(dist, 198) - flops.block_flop(DEIT, 197))
  head_dist = 2 * 384 * 1000                                 # the head_dist kernel [384, 1000]
  assert round((flops.forward_gflop(dist, 2) - flops.forward_gflop(DEIT, 2)) * 1e9) == \
      2 * (blocks + head_dist)


def test_gflop_of_deit_small_and_a_swiglu_block_by_hand():
  """Every term by hand: DeiT-S (patch embedding 2 * 196 * 16^2 * 3 * 384, 12 blocks on 197
  tokens, head 2 * 384 * 1000), and a SwiGLU MLP, whose fc2 takes half the hidden width (the
  gated pair of fc1's outputs)."""
  from vitprune import flops  # pylint: disable=g-import-not-at-top
  n, c, h = 197, 384, 1536
  block = 8 * n * c * c + 4 * n * n * c + 2 * n * (c * h + h * c)
  assert flops.block_flop(DEIT, n) == block
  embed, head = 2 * 196 * 16 * 16 * 3 * 384, 2 * 384 * 1000
  assert round(flops.forward_gflop(DEIT) * 1e9) == embed + 12 * block + head
  giant = get_config("vit_giant_patch14_dinov2")
  assert giant.mlp_type == "swiglu" and (giant.embed_dim, giant.mlp_hidden) == (1536, 8192)
  assert flops.mlp_flop(giant, 100) == 2 * 100 * (1536 * 8192 + 4096 * 1536)


def test_gflop_of_a_schedule_counts_each_blocks_halves_on_its_tokens():
  """A reducing block attends over the tokens entering it and runs its MLP on those leaving it;
  the other blocks run on their count; the unpruned counts give the unpruned figure."""
  from vitprune import flops  # pylint: disable=g-import-not-at-top
  digits = get_config("vit_digits")
  counts = parse_schedule(digits, "keep@3:35").counts           # 65 x 4, then 35 x 3
  assert counts == (65,) * 4 + (35,) * 3
  blocks = (3 * flops.block_flop(digits, 65) + flops.attention_flop(digits, 65)
            + flops.mlp_flop(digits, 35) + 2 * flops.block_flop(digits, 35))
  unpruned = flops.forward_gflop(digits, 3)
  assert flops.forward_gflop(digits, 3, (65,) * 7) == unpruned
  # A Schedule is its counts (it was a bare "'Schedule' object is not iterable").
  assert flops.forward_gflop(digits, 3, parse_schedule(digits, "keep@3:35")) == \
      flops.forward_gflop(digits, 3, counts)
  assert round((unpruned - flops.forward_gflop(digits, 3, counts)) * 1e9) == \
      3 * (6 * flops.block_flop(digits, 65) - blocks)
  with pytest.raises(ValueError, match=r"counts \[65, 35\] must give 7 token counts"):
    flops.forward_gflop(digits, 1, (65, 35))
  # Counts no graph runs got a figure (one above the unpruned one for an increasing schedule).
  with pytest.raises(ValueError, match=r"^tokens 650 is above the 65 tokens of vit_digits$"):
    flops.block_flop(digits, 650)                    # (a figure, ten times the model's tokens)
  for bad, why in [((65, 80) + (65,) * 5, "above|never increase"),
                   ((65,) * 6 + (70,), "never increase"), ((66,) * 7, "only 65"),
                   ((65,) + (1,) * 6, "below prefix tokens"), ((65.5,) * 7, "not an integer")]:
    with pytest.raises(ValueError, match=why):
      flops.forward_gflop(digits, 1, bad)


def test_bad_arguments_are_refused_by_name():
  from vitprune import flops  # pylint: disable=g-import-not-at-top
  digits = get_config("vit_digits")
  with pytest.raises(ValueError, match="schedule has 7 counts, deit_small_patch16_224 needs"):
    memory.forward_bytes(DEIT, 1, schedule=parse_schedule(digits, "keep@3:35"))
  with pytest.raises(ValueError, match="--batch_size: no batch size given"):
    memory.check_batch_fits(DEIT, [])                      # max() of an empty sequence
  with pytest.raises(ValueError, match="batch_size must be >= 1, got -3"):
    flops.forward_gflop(DEIT, -3)                          # -0.097 GFLOP
  with pytest.raises(ValueError, match="tokens must be >= 1, got -5"):
    flops.block_flop(DEIT, -5)
  with pytest.raises(TypeError, match="batch_size must be an int, got 1.5"):
    flops.forward_gflop(DEIT, 1.5)
  with pytest.raises(TypeError, match="--batch_size must be an int, got 2.5"):
    memory.check_batch_fits(DEIT, [2.5], available=10 ** 12)       # estimated as 2.5 images
  for bad in ([0, 4], [-3, 4]):                            # only the largest was checked
    with pytest.raises(ValueError, match=f"--batch_size must be >= 1, got {bad[0]}"):
      memory.check_batch_fits(DEIT, bad, available=10 ** 12)
  memory.check_batch_fits(DEIT, np.array([1, 4]), available=10 ** 12)   # (was "ambiguous")
  with pytest.raises(ValueError, match="no batch size given"):
    memory.check_batch_fits(DEIT, np.array([], int), available=10 ** 12)
  for call in (lambda: flops.forward_gflop("deit_small_patch16_224"),   # (an AttributeError)
               lambda: flops.block_flop("deit_small_patch16_224", 5)):
    with pytest.raises(TypeError, match="cfg must be a vitprune ViTConfig"):
      call()
  with pytest.raises(TypeError, match="batch size must be an int, got True"):
    memory.forward_bytes(DEIT, True)


def test_conversion_fits_by_hand():
  cfg = get_config("test_tiny_vit").replace(img_size=800)      # 100x100 patches of 8 px
  assert cfg.embed_dim == 32
  need = 4 * memory.param_count(cfg) + 5_120_000     # 100 * 100 * 32 elements, 16 bytes each
  memory.check_conversion_fits(cfg, what="--img_size=800", available=need)
  with pytest.raises(ValueError, match=r"^--img_size=800 cannot fit in memory: converting "
                     r"test_tiny_vit at img_size 800 \(100x100 patches\) needs ~"):
    memory.check_conversion_fits(cfg, what="--img_size=800", available=need - 1)


def test_an_evaluation_also_holds_the_tokens_after_every_block():
  """An accuracy evaluation of many schedules holds the tokens [B, n, D] after the embedding and
  after each block of a shared prefix (`PiecewiseForward.run_many`): depth + 1 streams more."""
  held = 4 * (DEIT.depth + 1) * DEIT.num_tokens * DEIT.embed_dim
  for b in (1, 8):
    assert (memory.forward_bytes(DEIT, b, evaluation=True)
            == memory.forward_bytes(DEIT, b) + b * held)
  assert (memory.forward_bytes(DEIT, 2, "bfloat16", evaluation=True)
          - memory.forward_bytes(DEIT, 2, "bfloat16")) == held    # 2 images at half the bytes
  early = parse_schedule(DEIT, "embed:50")                      # 50 tokens from the embedding
  assert (memory.forward_bytes(DEIT, 1, schedule=early, evaluation=True)
          - memory.forward_bytes(DEIT, 1, schedule=early)) == held * 50 // DEIT.num_tokens
  avail = memory.forward_bytes(DEIT, 40) + 1
  fits = memory.max_batch(DEIT, avail, evaluation=True)
  assert 0 < fits < 40 and memory.forward_bytes(DEIT, fits, evaluation=True) <= avail
  memory.check_batch_fits(DEIT, [40], available=avail)
  with pytest.raises(ValueError, match=rf"^--eval_batch_size=40 cannot fit in memory: a "
                                       rf"float32 evaluation of deit_small_patch16_224 .*at "
                                       rf"most {fits} fit"):
    memory.check_batch_fits(DEIT, [40], available=avail, flag="--eval_batch_size",
                            evaluation=True)


def test_block_and_head_keys_of_a_count_share_one_input():
  from vitprune.profile import runner  # pylint: disable=g-import-not-at-top
  digits = get_config("vit_digits")
  spec = runner.ProfileSpec(cfg=digits, mode="block")
  jobs = runner._jobs([("block", 9, None), ("head", 9, None), ("block", 17, None)], spec=spec,
                      params=init_params(digits, 0), images=np.zeros((2, 32, 32, 3), np.float32),
                      reducer=None)
  x9, x17 = jobs[("block", 9, None)][1][1], jobs[("block", 17, None)][1][1]
  assert jobs[("head", 9, None)][1][1] is x9 and x9.shape == (2, 9, 64)
  assert x17.shape == (2, 17, 64)


def test_a_device_out_of_memory_is_one_error_line(capsys):
  """jax's RESOURCE_EXHAUSTED (a batch the host-memory check let through: a GPU's memory, or
  buffers the estimate missed) was a 51-line traceback; another RuntimeError stays one (a bug)."""
  def oom(fv):
    raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 76800000 bytes.")

  with pytest.raises(SystemExit) as e:
    common.run_in_process(oom, lambda fv: None, [])
  assert e.value.code == 1
  assert capsys.readouterr().err == (
      "error: the device ran out of memory (RESOURCE_EXHAUSTED: Out of memory allocating "
      "76800000 bytes.): try a smaller batch size\n")

  def bug(fv):
    raise RuntimeError("something else")

  with pytest.raises(RuntimeError, match="something else"):
    common.run_in_process(bug, lambda fv: None, [])


def test_the_error_names_need_and_available_in_gib_exactly():
  """DeiT-S at batch 1000, float32: 4 x 22,050,664 + 1000 x (602,112 + 4 x 1,524,780) =
  6,789,434,656 bytes = 6.32 GiB; 2^30 bytes available leave room for (2^30 - 88,202,656) //
  6,701,232 = 147 images."""
  assert memory.forward_bytes(DEIT, 1000) == 6_789_434_656
  with pytest.raises(ValueError) as e:
    memory.check_batch_fits(DEIT, [1000], available=2 ** 30)
  assert str(e.value) == (
      "--batch_size=1000 cannot fit in memory: a float32 forward of deit_small_patch16_224 "
      "needs ~6.32 GiB but 1 GiB is available (at most 147 fit; see /proc/meminfo MemAvailable)")
  # Exactly one image fits: "at most 1 fit", not "not even batch 1 fits".
  with pytest.raises(ValueError, match=r"\(at most 1 fit; see"):
    memory.check_batch_fits(DEIT, [2], available=memory.forward_bytes(DEIT, 1))


def test_the_default_available_memory_is_read_and_unknown_skips_the_check(monkeypatch):
  """available=None reads `available_bytes()`; where that is unknown (None) nothing is checked,
  however large the batch or the conversion."""
  cfg = get_config("test_tiny_vit").replace(img_size=800)
  monkeypatch.setattr(memory, "available_bytes", lambda: 1000)
  with pytest.raises(ValueError, match=r"^--batch_size=4 cannot fit in memory: .*not even "
                                       r"batch 1 fits"):
    memory.check_batch_fits(DEIT, [4])
  with pytest.raises(ValueError, match=r"^--img_size=800 cannot fit in memory"):
    memory.check_conversion_fits(cfg, what="--img_size=800")
  monkeypatch.setattr(memory, "available_bytes", lambda: None)
  assert memory.check_batch_fits(DEIT, [10 ** 9]) is None
  assert memory.check_conversion_fits(cfg, what="--img_size=800") is None


def test_available_bytes_of_a_malformed_meminfo_is_unknown(tmp_path):
  p = tmp_path / "meminfo"
  for bad in ("MemAvailable:     abc kB\n", "MemAvailable:\n", "MemAvailable:   1.5 kB\n",
              "MemAvailable:     512\n", "MemAvailable:     512 mB\n"):
    p.write_text("MemTotal:       1000 kB\n" + bad)
    assert memory.available_bytes(str(p)) is None, bad


def test_an_evaluation_holds_the_embedding_tokens_whatever_the_schedule_keeps():
  """The held streams are counted at the embedding's token count (an upper bound: a schedule
  reducing in block 0 still holds 197 tokens after the embedding), not at the last count."""
  late = parse_schedule(DEIT, "keep@0:50")
  assert late.counts[0] == 197 and late.counts[-1] == 50
  held = 4 * (DEIT.depth + 1) * 197 * DEIT.embed_dim
  assert (memory.forward_bytes(DEIT, 3, schedule=late, evaluation=True)
          - memory.forward_bytes(DEIT, 3, schedule=late)) == 3 * held


def test_gflop_refuses_one_token_above_the_model_and_counts_its_input_channels():
  """The block count is refused from num_tokens + 1 on (only ten times the tokens was tested),
  and the patch embedding's kernel reads every input channel (a 1-channel model by hand)."""
  from vitprune import flops  # pylint: disable=g-import-not-at-top
  digits = get_config("vit_digits")
  n, c, h = 65, 64, 128
  assert flops.block_flop(digits, n) == 8 * n * c * c + 4 * n * n * c + 2 * n * (2 * c * h)
  for call in (flops.block_flop, flops.attention_flop, flops.mlp_flop):
    with pytest.raises(ValueError, match=r"^tokens 66 is above the 65 tokens of vit_digits$"):
      call(digits, 66)
  grey = TINY.replace(in_chans=1)                  # 4x4 patches of 8x8, dim 32, 2 blocks of 17
  n, c, h = 17, 32, 64
  embed = 2 * 16 * 8 * 8 * 1 * 32
  block = 8 * n * c * c + 4 * n * n * c + 2 * n * (2 * c * h)
  head = 2 * 32 * 10
  assert (embed, block) == (65536, 315520)
  assert round(flops.forward_gflop(grey, 3) * 1e9) == 3 * (embed + 2 * block + head)


def test_gflop_refuses_one_count_too_many_with_its_own_message():
  """A schedule one count too long is refused by `forward_gflop` itself, naming the counts it
  needs (a mutation audit: the length check letting longer counts through went unpinned)."""
  from vitprune import flops  # pylint: disable=g-import-not-at-top
  digits = get_config("vit_digits")
  with pytest.raises(ValueError, match=r"^counts \[65, 65, 65, 65, 65, 65, 65, 65\] must give 7 "
                                       r"token counts \(entering block 0, then leaving each of "
                                       r"the 6 blocks\)$"):
    flops.forward_gflop(digits, 1, (65,) * 8)


def test_the_profilers_held_inputs_are_the_smaller_of_a_chunk_and_max_points():
  """A mutation audit of `ProfileSpec.held_input_bytes`: with both --chunk_points and an
  adaptive --max_points, a measurement holds the inputs of the smaller of the two (the larger
  refused batches that fit)."""
  from vitprune.profile import runner  # pylint: disable=g-import-not-at-top
  digits = get_config("vit_digits")
  c = digits.embed_dim
  adaptive = runner.ProfileSpec(cfg=digits, mode="block", adaptive=True, max_points=20,
                                coarse_stride=4)
  assert dataclasses.replace(adaptive, chunk_points=3).held_input_bytes() == \
      c * (4 * (65 + 64 + 63) + 8 * 65)
  assert dataclasses.replace(adaptive, chunk_points=30).held_input_bytes() == \
      c * (4 * sum(range(46, 66)) + 8 * 65)
