"""Schedules: constructors, ToMe's parse_r, the text form (round trip, errors), validation."""
import re
import warnings

import numpy as np
import pytest

from vitprune import schedule as S
from vitprune.reduce import make_reducer
from vitprune.registry import get_config

DEIT_S = get_config("deit_small_patch16_224")  # 197 tokens, depth 12, prefix 1
TINY = get_config("test_tiny_vit")             # 17 tokens, depth 2, prefix 1
REG = get_config("test_tiny_dinov2_reg")       # 19 tokens, depth 2, prefix 3


def test_schedule_basics_and_str():
  s = S.Schedule([197, 197, 150])
  assert s.counts == (197, 197, 150) and s.depth == 2
  assert s.reduction_layers == (1,) and s.removed_at(1) == 47 and s.removed_at(0) == 0
  assert str(s) == "list:197,197,150"  # shorter than embed:197+keep@1:150
  assert str(S.Schedule((197,) * 4 + (120,) * 9)) == "embed:197+keep@3:120"
  with pytest.raises(ValueError, match="not an integer"):
    S.Schedule([197, 150.5])
  with pytest.raises(ValueError, match="at least one count"):
    S.Schedule([])


def test_prune_at_keep_and_remove():
  want = (197,) * 4 + (120,) * 9
  assert S.prune_at(DEIT_S, keep=120).counts == want  # default layer 3
  assert S.prune_at(DEIT_S, remove=77, layer=3).counts == want
  assert S.prune_at(DEIT_S, keep=197, layer=3) == S.full_schedule(DEIT_S)  # remove 0
  assert S.prune_at(DEIT_S, keep=2, layer=11).counts == (197,) * 12 + (2,)  # the maximum
  two = S.prune_at(DEIT_S, keep=80, layer=6, base=S.prune_at(DEIT_S, keep=120, layer=3))
  assert two.counts == (197,) * 4 + (120,) * 3 + (80,) * 6
  assert S.prune_layers(DEIT_S, {6: 80, 3: 120}) == two


@pytest.mark.parametrize("kwargs,match", [
    (dict(keep=120, remove=77), "exactly one"),
    (dict(), "exactly one"),
    (dict(keep=120, layer=12), "out of range"),
    (dict(keep=120, layer=-1), "out of range"),
    (dict(keep=1), "below prefix tokens"),
    (dict(remove=-1), ">= 0"),
    (dict(remove=196), "below prefix tokens"),
])
def test_prune_at_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    S.prune_at(DEIT_S, **kwargs)


def test_prune_at_type_and_increase_errors():
  with pytest.raises(TypeError, match="keep must be an int"):
    S.prune_at(DEIT_S, keep=120.0)
  with pytest.raises(ValueError, match="only 120 are scheduled"):
    S.prune_at(DEIT_S, keep=150, layer=5, base=S.prune_at(DEIT_S, keep=120, layer=3))


def test_prune_at_remove_down_to_exactly_prefix_plus_one():
  assert S.prune_at(DEIT_S, remove=195).counts == (197,) * 4 + (2,) * 9
  with pytest.raises(ValueError, match=re.escape(
      "block 3 cannot remove 196 tokens: the 197 leaving the last block would fall to 1, "
      "below prefix tokens + 1 = 2")):
    S.prune_at(DEIT_S, remove=196)


def test_prune_layers_applies_layers_in_block_order_not_dict_order():
  with pytest.raises(ValueError, match="cannot keep 120 tokens after block 6: only 80"):
    S.prune_layers(DEIT_S, {6: 120, 3: 80})


def test_a_tome_inflection_is_a_plain_decimal():
  """float() read 'r8,0_5' as inflection 5.0 (then 'got 5.0') and 'r8,0.2_5' as 0.25."""
  assert S.parse_schedule(REG, "r8,.5") == S.parse_schedule(REG, "r8,0.5")
  assert S.parse_schedule(REG, "r8,5e-1") == S.parse_schedule(REG, "r8,0.5")
  for bad in ("0_5", "0.2_5", "nan", "inf", "0x1"):
    with pytest.raises(ValueError, match=f"inflection '{bad}' is not a number"):
      S.parse_schedule(REG, f"r8,{bad}")


def test_a_huge_tome_r_is_a_value_error_not_an_overflow():
  """`--schedule=r1000...0` (309+ digits) was a 45-line OverflowError traceback."""
  for r in (10 ** 400, (10 ** 400, 0.5)):
    with pytest.raises(ValueError, match=r"r must be at most 2147483647 tokens per layer, got "
                                         r"1000.*000$"):
      S.tome_r_list(12, r)
  with pytest.raises(ValueError, match="r '9.*9' is far beyond any token count"):
    S.parse_schedule(REG, "r" + "9" * 309)
  with pytest.raises(ValueError, match="r must be at most"):
    S.parse_schedule(REG, "r" + "9" * 18)
  assert S.tome_r_list(2, S.MAX_R) == [S.MAX_R] * 2
  with pytest.raises(ValueError, match=r"r must be at most 2147483647 tokens per layer, got "
                                       r"2147483648$"):
    S.tome_r_list(2, S.MAX_R + 1)


def test_an_r_the_cap_lowers_is_said_naming_each_block():
  """ToMe's cap lowered `r100` to 32, 16, ... per block, and `rlist:40` to 32, while the run was
  named after the r asked, unsaid (a probe; `remove@0:40` is refused). It is the reference's
  semantics (`r16` on DeiT-S meets the cap in its last blocks), so it is said, not refused."""
  with pytest.warns(S.ToMeCapWarning) as said:
    assert S.parse_schedule(TINY, "R100").counts == (17, 9, 5)
  assert [str(w.message) for w in said] == [
      "schedule 'R100' removes fewer tokens than its r asks at 2 block(s) (ToMe's cap: a block "
      "removes at most half of the non-prefix tokens entering it): 8 of 100 at block 0, 4 of "
      "100 at block 1"]
  with pytest.warns(S.ToMeCapWarning, match=r"at 1 block\(s\) .*: 5 of 6 at block 1$"):
    S.parse_schedule(TINY, "embed:12+rlist:1,6")     # (12 -> 11 -> 11 - 5: block 1's r only)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    for cfg, text in ((DEIT_S, "r8"), (TINY, "r4"), (TINY, "rlist:8,4"), (DEIT_S, "r8,-0.5"),
                      (TINY, "r4+keep@1:7"), (TINY, "keep@0:9,1:5")):
      S.parse_schedule(cfg, text)
    # The canonical text of a capped schedule never asks for more than it removes.
    capped = S.remove_per_layer(TINY, 100)
    assert S.format_schedule(capped, TINY) == "list:17,9,5"
    # Nor does the r form format_schedule tries and drops (r6 of 17, 11, 5 is capped at block 1:
    # a warning for a schedule nobody wrote as r; a review).
    assert S.format_schedule(S.Schedule((17, 11, 5)), TINY) == "list:17,11,5"
    S.parse_schedule(TINY, S.format_schedule(capped, TINY))


def test_tome_r_list_matches_parse_r():
  # ToMe parse_r: min = int(r (1 - inflect)), max = 2 r - min, linear over layers, truncated.
  assert S.tome_r_list(12, 8) == [8] * 12
  assert S.tome_r_list(12, (8, -0.5)) == [12, 11, 10, 9, 9, 8, 7, 6, 6, 5, 4, 4]
  assert S.tome_r_list(12, (8, 0.5)) == [4, 4, 5, 6, 6, 7, 8, 9, 9, 10, 11, 12]
  assert S.tome_r_list(4, (3, -1.0)) == [6, 4, 2, 0]
  assert S.tome_r_list(4, [5, 1]) == [5, 1, 0, 0]
  assert S.tome_r_list(1, (3, 0.5)) == [1]
  assert S.tome_r_list(4, (3, 1.0)) == [0, 2, 4, 6]        # inflection 1 is inside [-1, 1]
  with pytest.raises(ValueError, match=r"inflection must be in \[-1, 1\]"):
    S.tome_r_list(12, (8, 1.5))
  with pytest.raises(ValueError, match="r must be >= 0"):
    S.tome_r_list(12, -1)
  with pytest.raises(ValueError, match="5 entries for 4 layers"):
    S.tome_r_list(4, [1] * 5)
  with pytest.raises(ValueError, match=r"\(r, inflection\)"):
    S.tome_r_list(4, (1, 2, 3))
  with pytest.raises(ValueError, match=r"r values must be >= 0, got \[-1\]"):
    S.tome_r_list(3, [-1])
  with pytest.raises(TypeError, match="inflection must be a number, got True"):
    S.tome_r_list(12, (8, True))
  for bad in ("0.5", np.array("0.5"), np.array([0.5])):       # (text read as 0.5 now refused)
    with pytest.raises(TypeError, match="inflection must be a number, got "):
      S.tome_r_list(12, (8, bad))
  assert S.tome_r_list(12, (8, np.array(0.5))) == S.tome_r_list(12, (8, 0.5))
  # A mapping was read as the list of its keys: {3: 8} was r=3 at block 0, not r=8 at block 3.
  for bad in ({3: 8}, {8}, b"\x03"):
    with pytest.raises(TypeError, match=r"r must be an int, an \(r, inflection\) tuple or a "
                                        "per-layer list, got "):
      S.tome_r_list(4, bad)


def test_a_schedule_dropping_after_the_embedding_needs_a_reducer():
  """Tokens dropped right after the embedding are a reduction too (only block reductions
  were counted, so a schedule starting below all tokens ran with no reducer)."""
  S.check_reducer_given(REG, S.full_schedule(REG), None)
  for sched in (S.embed_schedule(REG, 16), S.parse_schedule(REG, "keep@1:10")):
    assert S.reduces_tokens(REG, sched)
    with pytest.raises(ValueError, match="reduces tokens but no reducer was given"):
      S.check_reducer_given(REG, sched, None)


def test_remove_per_layer_caps_at_half():
  assert S.remove_per_layer(DEIT_S, 8).counts == tuple(197 - 8 * i for i in range(13))
  # 17 -> 17 - min(100, 16 // 2) = 9 -> 9 - 8 // 2 = 5 (ToMe's cap keeps >= prefix + 1).
  assert S.remove_per_layer(TINY, 100).counts == (17, 9, 5)
  # registers are protected too: 19 tokens, prefix 3 -> 19 - 8 = 11 -> 11 - 4 = 7.
  assert S.remove_per_layer(REG, 100).counts == (19, 11, 7)
  dec = S.remove_per_layer(DEIT_S, 8, inflection=-0.5)
  assert np.array_equal(-np.diff(dec.counts), S.tome_r_list(12, (8, -0.5)))
  base = S.drop_after_embedding(DEIT_S, 150)
  assert S.remove_per_layer(DEIT_S, 2, base=base).counts == tuple(150 - 2 * i for i in range(13))
  with pytest.raises(ValueError, match="without reduction layers"):
    S.remove_per_layer(DEIT_S, 2, base=S.prune_at(DEIT_S, keep=120))


@pytest.mark.parametrize("text,counts", [
    ("full", (197,) * 13),
    (" None ", (197,) * 13),
    ("keep@3:120", (197,) * 4 + (120,) * 9),
    ("KEEP@3:120, 6:80", (197,) * 4 + (120,) * 3 + (80,) * 6),
    ("keep@3:120+keep@6:80", (197,) * 4 + (120,) * 3 + (80,) * 6),
    ("keep@6:80+keep@3:120", (197,) * 4 + (120,) * 3 + (80,) * 6),   # a later cut stays
    ("r8+keep@3:120", (197, 189, 181, 173) + (120,) * 6 + (117, 109, 101)),
    ("remove@3:77", (197,) * 4 + (120,) * 9),
    ("remove@3:10,6:5", (197,) * 4 + (187,) * 3 + (182,) * 6),
    ("remove@6:5,3:10", (197,) * 4 + (187,) * 3 + (182,) * 6),       # order does not matter
    ("remove@6:5+remove@3:10", (197,) * 4 + (187,) * 3 + (182,) * 6),  # (block 6's 5 was lost)
    ("keep@6:80+remove@3:10", (197,) * 4 + (187,) * 3 + (70,) * 6),  # remove@ is relative
    ("r8+remove@3:10", tuple(197 - 8 * i - 10 * (i >= 4) for i in range(13))),
    ("r8", tuple(197 - 8 * i for i in range(13))),
    ("r8,-0.5", tuple(197 - int(c) for c in np.cumsum([0, 12, 11, 10, 9, 9, 8, 7, 6, 6, 5, 4,
                                                      4]))),
    ("rlist:10,5", (197, 187, 182) + (182,) * 10),
    ("embed:150", (150,) * 13),
    ("embed:150+keep@3:120", (150,) * 4 + (120,) * 9),
    ("embed:150+r2", tuple(150 - 2 * i for i in range(13))),
    ("list:" + ",".join(["197"] * 4 + ["120"] * 9), (197,) * 4 + (120,) * 9),
    (",".join(["150"] * 13), (150,) * 13),
])
def test_parse_schedule_forms(text, counts):
  assert S.parse_schedule(DEIT_S, text).counts == counts


def test_a_single_term_that_reduces_nothing_is_the_full_schedule():
  # (only a term beside others is refused for changing nothing: r0 is ToMe's no-merge run)
  for text in ("r0", "remove@3:0", "keep@3:197", "rlist:0"):
    assert S.parse_schedule(DEIT_S, text) == S.full_schedule(DEIT_S)


@pytest.mark.parametrize("text,match", [
    ("", "empty schedule"),
    ("keep@3", "LAYER:KEEP pairs"),
    ("keep@x:120", "layer 'x' is not an integer"),
    ("keep@3:120,3:100", "layer repeated"),
    ("keep@12:120", "out of range"),
    ("keep@3:1", "below prefix tokens"),
    ("keep@3:250", "only 197 are scheduled"),
    ("remove@3:-5", "remove must be >= 0"),
    ("keep@10:5+remove@3:10", r"'keep@10:5\+remove@3:10': block 3 cannot remove 10 tokens: the 5 "
     r"leaving the last block would fall to -5, below prefix tokens \+ 1 = 2"),
    ("r8,abc", "inflection 'abc' is not a number"),
    ("r8,2", r"inflection must be in \[-1, 1\]"),
    ("keep@3:120+r8", "without reduction layers"),
    ("keep@3:120+embed:150", "embed: must be the first term"),
    ("embed:250", "has only 197"),
    ("full+keep@3:120", "cannot be combined"),
    ("list:" + ",".join(["197"] * 13) + "+keep@4:20",   # (its last count read as "197+keep@4:20")
     r"^schedule 'list:197,.*\+keep@4:20': 'list' cannot be combined with other terms$"),
    ("r8+list:197,197", "'list' cannot be combined"),
    ("list:197,197", "needs depth \\+ 1 = 13"),
    ("list:197,x", "count 'x' is not an integer"),
    ("pomt", "cannot parse 'pomt'; accepted forms"),
    (",".join(["197"] * 6 + ["198"] * 7), "never increase"),
    ("keep@3:1 20", "a space inside a number"),         # read as keep@3:120 before
    ("r8,-0. 5", "a space inside a number"),            # read as inflection -0.5 before
    ("keep@\u0663:\u0661\u0662\u0660", "only ASCII"),  # Arabic-Indic digits parsed as 3:120
    ("keep@3:\uff11\uff12\uff10", "only ASCII"),           # full-width digits
    ("keep@3:+120", "'\\+' joins terms .* numbers take no '\\+' sign"),   # was "'' is not ..."
    ("r8,+1", "numbers take no '\\+' sign"),
    ("+r8", "numbers take no '\\+' sign"),
    # Fault probe: a term another one overrides was dropped without a word
    ("remove@4:5+keep@3:40", r"^schedule 'remove@4:5\+keep@3:40': the term 'remove@4:5' changes "
     r"nothing \(the schedule is the same without it: another term sets those counts\); drop it$"),
    ("keep@3:40+keep@5:40", r"the term 'keep@5:40' changes nothing"),
    ("r8+keep@0:57", r"the term 'r8' changes nothing"),          # (keep@0 sets every count)
    ("keep@3:120:5", r"expected LAYER:KEEP pairs separated by commas, got '3:120:5'"),
    ("list:", r"^schedule 'list:': empty list$"),
    ("rlist:", r"^schedule 'rlist:': empty list$"),
    ("keep@6:120,3:80", "cannot keep 120 tokens after block 6: only 80 are scheduled"),
])
def test_parse_schedule_errors(text, match):
  with pytest.raises(ValueError, match=match):
    S.parse_schedule(DEIT_S, text)
  with pytest.raises(TypeError, match="must be a str"):
    S.parse_schedule(DEIT_S, 120)


def _random_valid(cfg, rng):
  counts = [int(rng.integers(cfg.num_prefix_tokens + 1, cfg.num_tokens + 1))]
  for _ in range(cfg.depth):
    counts.append(counts[-1] if rng.random() < 0.6 else
                  int(rng.integers(cfg.num_prefix_tokens + 1, counts[-1] + 1)))
  if rng.random() < 0.5:
    counts[0] = cfg.num_tokens
    counts = [min(c, cfg.num_tokens) for c in counts]
  return S.from_counts(cfg, sorted(counts, reverse=True))


@pytest.mark.parametrize("cfg", [DEIT_S, TINY, REG])
def test_format_parse_round_trip(cfg):
  rng = np.random.default_rng(0)
  for _ in range(200):
    s = _random_valid(cfg, rng)
    assert S.parse_schedule(cfg, S.format_schedule(s, cfg)) == s
    assert S.parse_schedule(cfg, str(s)) == s
  assert S.format_schedule(S.full_schedule(cfg), cfg) == "full"


def test_format_prefers_readable_form():
  assert S.format_schedule(S.prune_at(DEIT_S, keep=120), DEIT_S) == "keep@3:120"
  assert S.format_schedule(S.drop_after_embedding(DEIT_S, 150), DEIT_S) == "embed:150"
  # ToMe's r when every block removes the same r (a benchmark's 'tome-r8', DeiT-S's r8 scaled
  # to vit_digits, showed list:65,60,55,50,45,40,35 beside a literal 'tome:r4' variant).
  assert S.format_schedule(S.remove_per_layer(TINY, 4), TINY) == "r4"
  assert S.format_schedule(S.remove_per_layer(DEIT_S, 8), DEIT_S) == "r8"
  assert S.format_schedule(S.remove_per_layer(TINY, 4)) == "list:17,13,9"   # no cfg: no r
  uneven = S.parse_schedule(TINY, "list:17,13,10")
  assert S.format_schedule(uneven, TINY) == "list:17,13,10"
  for text in ("r4", "r8", "list:17,13,10", "r1"):
    cfg = DEIT_S if text == "r8" else TINY
    assert S.format_schedule(S.parse_schedule(cfg, text), cfg) == text
  with pytest.raises(ValueError, match="starts with 250"):
    S.format_schedule(S.Schedule([250] * 13), DEIT_S)
  # A tie in length goes to the keep@ form.
  tie = S.Schedule((127, 127, 85, 28, 23, 23, 23, 23, 20, 10, 10, 10, 6))
  assert S.format_schedule(tie, DEIT_S) == "embed:127+keep@1:85,2:28,3:23,7:20,8:10,11:6"


def test_check_schedule_original_errors():
  assert S.check_schedule(DEIT_S, None) == S.full_schedule(DEIT_S)
  with pytest.raises(ValueError, match="13"):
    S.check_schedule(DEIT_S, S.Schedule([197] * 12))
  with pytest.raises(TypeError, match=r"schedule must be a vitprune Schedule .* got tuple"):
    S.check_schedule(DEIT_S, (197,) * 13)
  with pytest.raises(TypeError,
                     match=r"reducer must be a token reducer \(make_reducer\('pomt'\)\)"):
    S.check_schedule(DEIT_S, None, "pomt")


def test_check_schedule_method_limits():
  tome = make_reducer("tome")
  at_cap = S.Schedule([17, 9, 5])
  assert S.check_schedule(TINY, at_cap, tome) == at_cap
  with pytest.raises(ValueError, match="tome can remove at most 8 of the 17 tokens entering "
                                       "block 0"):
    S.check_schedule(TINY, S.Schedule([17, 8, 8]), tome)
  with pytest.raises(ValueError, match="at most 8 of the 19 tokens entering block 0 \\(3 "
                                       "prefix"):
    S.check_schedule(REG, S.Schedule([19, 10, 10]), tome)
  # POMT / Top-K / EViT go down to prefix + 1 in one block; none of them drops at the embedding.
  for name in ("pomt", "topk", "evit"):
    S.check_schedule(TINY, S.Schedule([17, 2, 2]), make_reducer(name))
    with pytest.raises(ValueError, match=f"which {name} cannot do"):
      S.check_schedule(TINY, S.Schedule([12, 12, 12]), make_reducer(name))
  S.check_schedule(TINY, S.Schedule([12, 2, 2]), make_reducer("random"))
  # One token dropped after the embedding is a drop too.
  with pytest.raises(ValueError, match=r"schedule embed:16 drops tokens after the embedding, "
                                       r"which pomt cannot do"):
    S.check_schedule(TINY, S.Schedule([16, 16, 16]), make_reducer("pomt"))


@pytest.mark.parametrize("cfg", [TINY, REG, DEIT_S], ids=lambda c: c.name)
def test_embed_and_layer_schedules_are_the_single_reduction_rule(cfg):
  n_all, lo = cfg.num_tokens, cfg.num_prefix_tokens + 1
  assert S.token_bounds(cfg) == (lo, n_all)
  n = (lo + n_all) // 2
  assert S.embed_schedule(cfg, n).counts == (n,) * (cfg.depth + 1)
  assert S.embed_schedule(cfg, n) == S.drop_after_embedding(cfg, n)
  for layer in range(cfg.depth):
    s = S.layer_schedule(cfg, n, layer)
    assert s.counts[:layer + 1] == (n_all,) * (layer + 1)
    assert set(s.counts[layer + 1:]) == {n} and s.reduction_layers == (layer,)
    assert s == S.prune_at(cfg, keep=n, layer=layer)
    assert s.counts == S.layer_counts(n_all, n, cfg.depth, layer)
  assert S.embed_counts(n, cfg.depth) == S.embed_schedule(cfg, n).counts
  assert S.layer_schedule(cfg, n_all, 0) == S.full_schedule(cfg)


@pytest.mark.parametrize("layer", [-1, TINY.depth, "1", 1.0, True])
def test_layer_schedule_rejects_bad_layers(layer):
  with pytest.raises(ValueError, match=rf"reduction layer must be an int in \[0, "
                     rf"{TINY.depth - 1}\] for {TINY.name}"):
    S.layer_schedule(TINY, 9, layer)


def test_embed_and_layer_schedule_reject_bad_counts():
  lo, hi = S.token_bounds(TINY)
  for bad in (lo - 1, hi + 1):
    with pytest.raises(ValueError):
      S.embed_schedule(TINY, bad)
    with pytest.raises(ValueError):
      S.layer_schedule(TINY, bad, 0)
  with pytest.raises(TypeError, match="n must be an int"):
    S.embed_schedule(TINY, 9.0)
  with pytest.raises(TypeError, match="n must be an int"):
    S.layer_schedule(TINY, 9.0, 0)


def test_check_token_grid_sorts_and_accepts_numpy_ints():
  lo, hi = S.token_bounds(REG)
  assert S.check_token_grid(REG, [hi, lo, np.int64(lo + 1)]) == (lo, lo + 1, hi)
  assert all(type(n) is int for n in S.check_token_grid(REG, np.arange(lo, hi + 1)))


@pytest.mark.parametrize("tokens, match", [
    ([], "empty"),
    ([REG.num_prefix_tokens], rf"\[{REG.num_prefix_tokens}\] outside "
                              rf"\[{REG.num_prefix_tokens + 1}, {REG.num_tokens}\]"),
    ([REG.num_tokens + 1], rf"outside \[{REG.num_prefix_tokens + 1}, {REG.num_tokens}\]"),
    ([9, 9], "duplicates"), ([9.0], "must be ints"), ([True], "must be ints")])
def test_check_token_grid_errors(tokens, match):
  with pytest.raises(ValueError, match=match):
    S.check_token_grid(REG, tokens)


def test_a_token_range_whose_step_is_its_length_lists_both_ends():
  assert S.parse_token_grid(TINY, "17:12:-5") == (17, 12)
  assert S.parse_token_grid(TINY, "12:17:5") == (17, 12)


@pytest.mark.parametrize("counts, error", [
    ((float("nan"), 17, 17), "schedule count nan at position 0 is not an integer"),
    ((float("inf"), 17, 17), "schedule count inf at position 0 is not an integer"),
    ((None, 17), "schedule count None at position 0 is not an integer"),
    (("17", 9), "schedule count '17' at position 0 is not an integer"),
    ((17, 9.5), "schedule count 9.5 at position 1 is not an integer"),
    ((True, 1), "schedule count True at position 0 is not an integer"),
])
def test_schedule_counts_must_be_integers(counts, error):
  with pytest.raises(ValueError, match=re.escape(error)):
    S.Schedule(counts)
  assert S.Schedule((np.int64(17), 17.0)).counts == (17, 17)    # integral values are kept


@pytest.mark.parametrize("call, error, match", [
    # Each was a raw TypeError/AttributeError from inside the function (probe findings).
    (lambda: S.Schedule(17), TypeError, "a schedule's counts must be a sequence of token "
                                        "counts .* got 17"),
    (lambda: S.Schedule({17: 1, 10: 2}), TypeError, "counts must be a sequence"),  # (its keys)
    (lambda: S.check_token_grid(TINY, 10), TypeError, "a token grid must be a sequence"),
    (lambda: S.parse_token_grid(TINY, None), TypeError, "a token grid text must be a string"),
    (lambda: S.prune_layers(TINY, {"0": 12, 1: 5}), TypeError, "layer must be an int, got '0'"),
    (lambda: S.prune_layers(TINY, [(0, 12)]), TypeError, "keeps must be a mapping"),
    (lambda: S.tome_r_list("6", 4), TypeError, "num_layers must be an int, got '6'"),
    (lambda: S.tome_r_list(6.5, 4), TypeError, "num_layers must be an int, got 6.5"),
    (lambda: S.full_schedule("test_tiny_vit"), TypeError, "cfg must be a vitprune ViTConfig"),
    (lambda: S.from_counts("test_tiny_vit", [17, 17, 17]), TypeError, "cfg must be a vitprune"),
    # (the text's characters were counts: "count '1' at position 0"; a dict's keys, unchecked)
    (lambda: S.from_counts(TINY, "17,17,9"), TypeError, "counts must be a sequence .* '17,17,9'"),
    (lambda: S.from_counts(TINY, {17: 0, 12: 1, 9: 2}), TypeError, "counts must be a sequence"),
    # ("'str' object has no attribute 'depth'")
    (lambda: S.prune_at("test_tiny_vit", keep=3), TypeError, "cfg must be a vitprune"),
    (lambda: S.layer_schedule("test_tiny_vit", 9, 1), TypeError, "cfg must be a vitprune"),
    (lambda: S.embed_schedule("test_tiny_vit", 9), TypeError, "cfg must be a vitprune"),
    (lambda: S.format_schedule([17, 17, 9], TINY), TypeError,
     r"^schedule must be a vitprune Schedule, got list \[17, 17, 9\]$"),
    (lambda: S.parse_schedule(TINY, "keep@1:" + "9" * 5000), ValueError,
     r"^schedule 'keep@1:9.*': keep '9.*' is far beyond any token count$"),
])
def test_bad_arguments_are_named(call, error, match):
  with pytest.raises(error, match=match):
    call()


def test_numpy_and_jax_integers_are_counts_and_layers():
  """np.int64 / jnp.int32 were refused by some functions and accepted by others."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  assert S.Schedule(jnp.array([17, 17, 9])).counts == (17, 17, 9)
  assert S.layer_schedule(TINY, 9, jnp.int32(1)) == S.prune_at(TINY, keep=9, layer=1)
  assert S.remove_per_layer(TINY, np.int64(4), np.float32(0.5)) == S.remove_per_layer(
      TINY, 4, 0.5)
  assert S.check_token_grid(TINY, [jnp.int32(9), np.int64(5)]) == (5, 9)
  assert S.prune_layers(TINY, {np.int64(1): np.int64(9)}).counts == (17, 17, 9)
  assert S.tome_r_list(3, jnp.int32(2)) == S.tome_r_list(3, np.array(2)) == [2, 2, 2]
  # Integral JAX floats are counts as numpy's are (jnp.array([17., 9.]) was "not an integer").
  for dt in (jnp.float32, jnp.bfloat16):
    counts = S.Schedule(jnp.array([17, 17, 9], dt)).counts
    assert counts == (17, 17, 9) and all(type(c) is int for c in counts)
  for bad in (jnp.array([17, 9.5]), jnp.array([17, jnp.nan]), jnp.array([True, False])):
    with pytest.raises(ValueError, match="at position . is not an integer"):
      S.Schedule(bad)
  # Leading zeros are not digits of the count (an 18-digit limit counted them).
  assert S.parse_schedule(TINY, "keep@1:" + "0" * 20 + "9").counts == (17, 17, 9)


def test_a_token_grid_outside_the_bounds_says_why_they_are_what_they_are():
  """'0 is outside [2, 65] for vit_digits (prefix tokens 1 + 1 .. 65 tokens)' read garbled: the
  reason is the prefix tokens kept and one patch token at least, at most all tokens."""
  digits = get_config("vit_digits")
  with pytest.raises(ValueError, match=re.escape(
      "--tokens '0:5': the range lists 0 .. 5; 0 is outside [2, 65] for vit_digits (its 1 prefix "
      "token and at least 1 patch token, at most all 65)")):
    S.parse_token_grid(digits, "0:5")
  two = get_config("test_tiny_distilled")        # (class and distillation tokens)
  with pytest.raises(ValueError, match=re.escape(
      f"--tokens '2,9': counts [2] are outside [3, {two.num_tokens}] for test_tiny_distilled (its "
      f"2 prefix tokens and at least 1 patch token, at most all {two.num_tokens})")):
    S.parse_token_grid(two, "2,9")
