"""The typed records' file formats: strict readers, old files, canonical digests, and the solve
stage's measured floor check."""
import copy
import dataclasses
import json
import os
import re
import sys

import numpy as np
import pytest

from tests.conftest import solution_file
from vitprune import jsonio
from vitprune.records import solution as S
from vitprune.records import solution_text as T
from vitprune.registry import get_config

def _curve(tokens, latency_s, accuracy, alpha=0.5):
  """A paper curve whose utilities are U of its latencies and accuracies (the reader checks)."""
  from vitprune.solve import utility  # pylint: disable=g-import-not-at-top
  return {"tokens": list(tokens), "latency_s": list(latency_s), "accuracy": list(accuracy),
          "utility": utility(latency_s, accuracy, alpha).tolist()}


def _as_multi(d):
  """A paper solution document relabelled multi: without the paper mode's curve and fields,
  its chosen schedule listed on the frontier (as every multi solution lists its choice)."""
  d["mode"] = "multi"
  d.pop("curve", None)
  for k in ("utility", "schedule_latency_s", "tokens"):
    d["chosen"].pop(k, None)
  d["frontier"] = [{k: v for k, v in d["chosen"].items() if k not in ("method", "criterion",
                                                                      "basis")}]
  return d


CFG = get_config("test_tiny_vit")


def test_canonical_digest_ignores_layout():
  a = {"b": [1, 2.5, None], "a": {"y": True, "x": "s"}}
  b = json.loads(json.dumps(a, indent=3, sort_keys=False))
  assert jsonio.canonical_sha256(a) == jsonio.canonical_sha256(b)
  reordered = {"a": {"x": "s", "y": True}, "b": [1, 2.5, None]}   # (a tool re-saved the keys in
  assert list(reordered) != list(a)                                 # another order)
  assert jsonio.canonical_sha256(reordered) == jsonio.canonical_sha256(a)
  assert jsonio.canonical_sha256(a) != jsonio.canonical_sha256(dict(a, c=0))
  with pytest.raises(ValueError):
    jsonio.canonical(float("nan"))


def test_check_storable_names_what_a_json_file_cannot_hold():
  """A NaN in a deployment's provenance was json's anonymous "Out of range float values" after
  the export and every compile; a set in weights meta "Object of type set"."""
  good = {"a": [1, np.float32(0.5), np.int64(2), np.bool_(True), None, "s"], "3": {"x": 1.5}}
  jsonio.check_storable(good, "meta")
  for obj, said in (({"lr": float("nan")}, "meta['lr'] is nan"),
                    ({"a": [0, (1, float("-inf"))]}, "meta['a'][1][1] is -inf"),
                    ({"a": {"b": np.float64("inf")}}, "meta['a']['b'] is inf"),
                    ({"tags": {"x"}}, "meta['tags'] is a set"),
                    ({"w": np.zeros(2)}, "meta['w'] is a ndarray"),
                    ({(1, 2): 3}, "meta has a key (1, 2) of type tuple, not a string"),
                    ({"a": 1, 3: {}}, "meta has a key 3 of type int, not a string")):
    with pytest.raises(ValueError, match=f"^{re.escape(said)}, which a JSON file cannot hold$"):
      jsonio.check_storable(obj, "meta")


def test_read_json_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="widget file .* does not exist"):
    jsonio.read_json(str(tmp_path / "none.json"), "widget")
  os.mkfifo(tmp_path / "fifo")       # a directory or a FIFO "did not exist"
  os.symlink(tmp_path / "none.json", tmp_path / "dangling")
  os.symlink("/dev/zero", tmp_path / "device")     # (was called a dangling link)
  os.symlink(tmp_path / "loop", tmp_path / "loop")  # (so was a loop; fault probe)
  special = r"is not a regular file \(a device, FIFO or socket\)"
  for name, why in ((".", "is a directory"), ("fifo", special), ("device", special),
                    ("dangling", "is a dangling link"),
                    ("loop", r"is a loop of symbolic links \(or too long a chain of them\)"),
                    ("loop/x.json", r"lies under a loop of symbolic links \(or too long a "
                                    r"chain of them\)")):
    with pytest.raises(FileNotFoundError, match=f"widget file .* {why}$"):
      jsonio.read_json(str(tmp_path / name), "widget")
  p = tmp_path / "x.json"
  p.write_bytes(b"\xff\xfe")
  with pytest.raises(jsonio.FormatError, match="not valid JSON"):
    jsonio.read_json(str(p), "widget")
  p.write_text("[1]")
  with pytest.raises(jsonio.FormatError, match="expected a JSON object"):
    jsonio.read_json(str(p), "widget")
  p.write_text('{"seed": 0, "a": {"b": 1, "b": 2}}')     # last one won, silently
  with pytest.raises(jsonio.FormatError, match=r"x.json: not valid JSON: key 'b' appears twice"):
    jsonio.read_json(str(p), "widget")
  p.write_text('{"seed": 0, "b": {"seed": 1}}')          # the same key in two objects is fine
  assert jsonio.read_json(str(p), "widget")["b"] == {"seed": 1}
  for digits in (400, 5000):      # past float's range; past int()'s 4300-digit limit, whose
    p.write_text('{"seed": -' + "9" * digits + "}")    # message told a user to call sys.*
    with pytest.raises(jsonio.FormatError, match=rf"^{re.escape(str(p))}: not valid JSON: "
                       rf"integer of {digits} digits is out of range$"):
      jsonio.read_json(str(p), "widget")
  p.write_text('{"seed": 1' + "0" * 308 + "}")           # 309 digits in range: read
  assert jsonio.read_json(str(p), "widget")["seed"] == 10 ** 308
  p.write_text('{"seed": 2' + "0" * 308 + "}")           # 309 digits past it (2e308): not
  with pytest.raises(jsonio.FormatError, match="integer of 309 digits is out of range$"):
    jsonio.read_json(str(p), "widget")
  # A version is an integer: true == 1 in Python, and was read as version 1 (mutation audit).
  for version in (True, 1.0, "1"):
    with pytest.raises(jsonio.FormatError, match=rf"^w: unsupported version {version!r} \(this "
                       r"vitprune reads 1, 2\)$"):
      jsonio.check_format({"format": "f", "version": version}, "w", "f", (1, 2))
  assert jsonio.check_format({"format": "f", "version": 2}, "w", "f", (1, 2)) == 2
  for text in ("1e400", "-2.5e999"):       # a float past the range parsed to +-inf, silently
    p.write_text('{"seed": 0, "settings": {"x": ' + text + "}}")
    with pytest.raises(jsonio.FormatError, match=rf"^{re.escape(str(p))}: not valid JSON: "
                       rf"number {re.escape(text)} is out of range$"):
      jsonio.read_json(str(p), "widget")


def test_read_json_edges_of_its_bounds(tmp_path):
  """Mutation audit: the bound on integers is on their magnitude (a negative one past float's
  range is refused too), the largest float integer is read, the duplicate key named is the one
  written twice (not the object's first), and deep nesting is one line, not a traceback."""
  p = tmp_path / "x.json"
  p.write_text('{"seed": -2' + "0" * 308 + "}")          # -2e308: past float's range too
  with pytest.raises(jsonio.FormatError, match=rf"^{re.escape(str(p))}: not valid JSON: "
                     r"integer of 309 digits is out of range$"):
    jsonio.read_json(str(p), "widget")
  top = int(sys.float_info.max)                          # 1.797...e308 as an integer: in range
  for value in (top, -top):
    p.write_text('{"seed": ' + str(value) + "}")
    assert jsonio.read_json(str(p), "widget") == {"seed": value}
  p.write_text('{"a": 1, "b": 2, "c": 3, "b": 4}')
  with pytest.raises(jsonio.FormatError, match=rf"^{re.escape(str(p))}: not valid JSON: "
                     r"key 'b' appears twice in one object$"):
    jsonio.read_json(str(p), "widget")
  p.write_text('{"a": ' + "[" * 100000 + "]" * 100000 + "}")   # (a RecursionError in json)
  with pytest.raises(jsonio.FormatError, match=rf"^{re.escape(str(p))}: not valid JSON: "
                     r"maximum nesting depth exceeded$"):
    jsonio.read_json(str(p), "widget")


def test_sha256_digests_and_numpy_scalars_in_canonical_json():
  """Mutation audit: is_sha256 takes exactly 64 lower-case hex digits (as hexdigest writes);
  canonical JSON holds numpy scalars, np.bool_ included, as the numbers they hold."""
  assert jsonio.is_sha256("0123456789abcdef" * 4)
  for bad in ("0" * 63, "0" * 65, "A" * 64, "0" * 63 + "F", "g" * 64, b"0" * 64, None, 0):
    assert not jsonio.is_sha256(bad), bad
  assert jsonio.canonical({"b": np.bool_(True), "i": np.int64(3), "f": np.float32(0.5),
                           "u": np.uint8(7)}) == b'{"b":true,"f":0.5,"i":3,"u":7}'
  assert jsonio.plain(np.bool_(False)) is False
  with pytest.raises(TypeError, match="^Object of type complex64 is not JSON serializable$"):
    jsonio.canonical({"c": np.complex64(1)})


def test_predicted_accuracy_is_reported_within_0_and_1():
  # A raw table can add up past 1 (an edited estimate predicted 1.24) and capped plans can sum
  # their drops below 0: a candidate reports its prediction clamped to [0, 1].
  for raw, want in ((1.24, 1.0), (-0.3, 0.0), (0.5, 0.5), (0.0, 0.0), (1.0, 1.0)):
    c = S.Candidate.predicted(CFG, (17, 17, 9), 1e-3, raw)
    assert c.predicted_accuracy == want and c.schedule == "keep@1:9"
  assert S.reported_accuracy(-1e-9) == 0.0


def test_numbers_and_shares_of_records():
  for n in (7, 20, 50, 100, 359, 50000):   # every k / n is a share of n images (29 / 50 * 50 is
    assert all(jsonio.is_share(k / n, n) for k in range(n + 1))        # 28.999...: rounded)
  assert not jsonio.is_share(0.5, 359) and not jsonio.is_share(1 / 3, 359)
  assert not jsonio.is_share(0.5, 0) and not jsonio.is_share(True, 2)
  for bad in (float("inf"), float("-inf"), float("nan"), True, "1", None):
    assert not jsonio.is_num(bad) and not jsonio.is_share(bad, 1)
  assert jsonio.is_num(0) and jsonio.is_num(-1.5e308)


def test_method_names_are_the_reducers():
  """The jax-free vocabulary the readers check is the reducers' registry (case-insensitive)."""
  from vitprune.config import METHOD_NAMES, is_method_name
  from vitprune.reduce.methods import list_methods
  assert tuple(list_methods()) == METHOD_NAMES
  assert is_method_name(" POMT ") and not is_method_name("keep_first") and not is_method_name(1)


def test_is_float_dtype_is_real_floating_point_of_numpy_and_ml_dtypes():
  """The one float check (images, parameter leaves, checkpoint values): numpy floats and
  ml_dtypes' bfloat16 / float8 are floats; ints, bools, complex and structured types are not."""
  import ml_dtypes
  import numpy as np
  from vitprune.config import is_float_dtype
  for dt in (np.float16, np.float32, np.float64, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn,
             "float32"):
    assert is_float_dtype(dt), dt
  for dt in (np.int8, np.uint8, np.int32, np.bool_, np.complex64, ml_dtypes.int4,
             np.dtype([("a", np.float32)]), "V4"):
    assert not is_float_dtype(dt), dt


def test_solution_round_trip_and_provenance(tmp_path):
  path = solution_file(tmp_path / "s.json", CFG, [17, 17, 9], frontier=[[17, 17, 9], [17] * 3])
  sol = S.read_solution(path)
  assert sol.schedule.counts == (17, 17, 9) and sol.method == "pomt" and sol.model == CFG.name
  assert sol.basis == "predicted" and sol.checked == ()
  assert S.Solution.from_json(sol.to_json(), where="x") == sol
  prov = sol.provenance()
  assert prov["sha256"] == sol.sha256() and prov["path"] == path
  assert "frontier" not in prov and prov["chosen"]["counts"] == [17, 17, 9]
  # Paper mode: the chosen entry as the file has it, its utility and per-block latency too (a
  # probe: an artifact kept the uniform curve's L(n*) as the prediction with nothing saying so).
  assert {k: prov["chosen"][k] for k in ("utility", "schedule_latency_s")} == {
      k: sol.to_json()["chosen"][k] for k in ("utility", "schedule_latency_s")}
  # The digest is of the canonical JSON: re-indenting the file does not change it.
  with open(path) as f:
    doc = json.load(f)
  assert sol.sha256() == jsonio.canonical_sha256(doc)
  with open(path, "w") as f:
    json.dump(doc, f, indent=7)
  assert S.read_solution(path).sha256() == sol.sha256()


def test_a_solutions_digest_is_of_its_whole_file(tmp_path):
  """Deploy records `sha256()` as the solution's identity: the canonical digest of every field
  of the file (a mutation audit: a digest leaving `checked` out passed every test)."""
  doc = S.read_solution(solution_file(
      tmp_path / "s.json", CFG, [17, 17, 9], mode="multi",
      frontier=[[17, 17, 9], [17] * 3])).to_json()
  doc["checked"] = [dict(_MEASURED_17_17_9)]
  sol = S.Solution.from_json(copy.deepcopy(doc))
  assert sol.checked[0].measured_accuracy == 0.9
  assert sol.sha256() == sol.provenance()["sha256"] == jsonio.canonical_sha256(doc)
  assert sol.sha256() != S.Solution.from_json(dict(doc, checked=[])).sha256()


def test_version1_file_without_new_fields_loads(tmp_path):
  """Files written before `checked`, `basis` and `measured_*` (and with a `full` entry without
  a schedule text) still load; the choice is then said to rest on predictions."""
  doc = S.read_solution(solution_file(tmp_path / "s.json", CFG, [17, 17, 9])).to_json()
  for key in ("checked",):
    doc.pop(key)
  doc["chosen"].pop("basis")
  doc["full"] = {"counts": [17, 17, 17], "predicted_latency_s": 2e-3, "predicted_accuracy": 0.95}
  sol = S.Solution.from_json(doc, where="old.json")
  assert sol.basis == "predicted" and sol.checked == ()
  assert sol.full.schedule == "full" and sol.full.counts == (17, 17, 17)


def test_method_labels_name_every_option_given():
  from vitprune.config import method_label  # pylint: disable=g-import-not-at-top
  assert method_label("pomt") == method_label("pomt", {}) == "pomt"
  assert method_label("random", {"seed": 3, "nested": False}) == "random(nested=false,seed=3)"
  assert method_label("evit", {"normalize": True}) == "evit(normalize=true)"


def test_method_options_problem_names_each_refusal():
  """An unknown option (those set by another flag named apart), a wrong kind, a negative seed."""
  from vitprune.config import method_options_problem  # pylint: disable=g-import-not-at-top
  assert method_options_problem(" Random ", {"seed": 0, "nested": True}) == ""
  assert method_options_problem("random", {"seed": -1}) == (
      "method 'random' option seed must be a non-negative int, got -1")
  assert method_options_problem("random", {"depth": 1}, {"seed": "--seed"}) == (
      "method 'random' accepts ['nested'] (seed: --seed), got ['depth']")
  assert method_options_problem("tome", {"seed": 1}) == (
      "method 'tome' accepts no options, got ['seed']")
  assert method_options_problem("evit", {"normalize": "False"}) == (
      "method 'evit' option normalize must be bool, got 'False'")


def test_record_method_kwargs_of_each_version():
  """What a record's options mean: version 1 fixes random drop's per-layer draws unsaid (the
  method's name in any case and spacing, as the readers accept it); a fresh dict each time."""
  from vitprune import config  # pylint: disable=g-import-not-at-top
  assert config.record_method_kwargs(" Random ", {}, 1) == {"nested": False}
  assert config.record_method_kwargs("random", {"nested": True}, 1) == {"nested": True}
  assert config.record_method_kwargs("random", {"seed": 1}, 2) == {"seed": 1}
  assert config.record_method_kwargs("evit", {"normalize": True}, 1) == {"normalize": True}
  assert config.record_method_kwargs("random", None, 1) is None
  kw = {"seed": 1}
  assert config.record_method_kwargs("pomt", kw, 2) is not kw
  assert config.record_option_defaults("RANDOM", 1) == {"nested": False}
  assert config.record_option_defaults("random", 2) == config.record_option_defaults("pomt",
                                                                                     1) == {}


def test_version1_solutions_deploy_random_drop_per_layer(tmp_path):
  """A version-1 solution's random drop drew each layer's own subset (before the `nested`
  option): deploying it must rebuild that reducer, not today's nested default; the file's
  digest is unchanged (it writes back as read)."""
  path = solution_file(tmp_path / "s.json", CFG, [17, 17, 9], method="random",
                       method_kwargs={"seed": 2})
  sol = S.read_solution(path)
  assert sol.version == 2 and sol.method_kwargs == {"seed": 2}
  doc = dict(sol.to_json(), version=1)
  old = S.Solution.from_json(copy.deepcopy(doc), where="old.json")
  assert old.method_kwargs == {"seed": 2, "nested": False}
  assert old.estimate.method_kwargs == {"seed": 2}              # (as the file has them)
  assert old.to_json() == doc and old.sha256() == jsonio.canonical_sha256(doc)
  older = copy.deepcopy(doc)                  # a file from before method_kwargs were kept
  del older["estimate"]["method_kwargs"]
  assert S.Solution.from_json(older).method_kwargs is None       # (the seed is unsaid)
  assert S.Solution.from_json(older).reducer_options() == {"nested": False}
  assert S.Solution.from_json(older).reducer_options({"seed": 4}) == {"nested": False, "seed": 4}
  assert S.Solution.from_json(older).reducer_options({"nested": True}) == {"nested": True}
  assert old.reducer_options({"seed": 9}) == {"seed": 2, "nested": False}    # (said: kept)
  del doc["estimate"]["method_kwargs"]
  assert S.Solution.from_json(dict(doc, version=2)).reducer_options() == {}
  # A paper-mode version-1 solution that chose POMT on a random-drop estimate: the fixed option
  # is random drop's, not POMT's (POMT takes none).
  paper = copy.deepcopy(dict(sol.to_json(), version=1))
  paper["chosen"]["method"] = "pomt"
  paper = S.Solution.from_json(paper)
  assert (paper.method_kwargs, paper.method_option_defaults, paper.reducer_options()) == (
      None, {}, {})
  named = copy.deepcopy(dict(sol.to_json()))       # the two method names, as written
  named["estimate"]["method"] = " Random"
  assert S.Solution.from_json(named).method_kwargs == {"seed": 2}
  with pytest.raises(S.SolutionError, match=r"^x: unsupported version 3 \(this vitprune "
                                            r"reads 1, 2\)$"):
    S.Solution.from_json(dict(doc, version=3), where="x")


def test_measured_fields_round_trip_and_old_measured_candidates_load(tmp_path):
  """A measured candidate written before the binomial interval (measured_* without num_images)
  loads with no interval; one with it round-trips, and the summary says what was measured."""
  doc = S.read_solution(solution_file(tmp_path / "s.json", CFG, [17, 17, 9])).to_json()
  doc["chosen"].update(measured_accuracy=0.9, measured_latency_s=None)
  old = S.Solution.from_json(copy.deepcopy(doc), where="old.json")
  assert old.chosen.measured_accuracy == 0.9 and old.chosen.num_images is None
  assert old.chosen.measured_accuracy_low is None and "num_images" not in old.chosen.to_json()
  doc["chosen"].update(measured_latency_s=1e-3, measured_accuracy_low=0.85,
                       measured_accuracy_high=0.93, num_images=200)
  doc["settings"].update(accuracy_floor=0.88, floor_straddles=[doc["chosen"]["schedule"]])
  new = S.Solution.from_json(_as_multi(doc), where="new.json")
  assert (new.chosen.measured_accuracy_low, new.chosen.measured_accuracy_high,
          new.chosen.num_images) == (0.85, 0.93, 200)
  assert S.Solution.from_json(new.to_json()) == new
  text = "\n".join(T.summary_lines(new))
  assert "95% interval 0.8500..0.9300, 200 images" in text
  assert "measured latency of the chosen compiled graph: 1 ms" in text
  assert "straddles the floor 0.88" in text


@pytest.mark.parametrize("fn, match", [
    (lambda d: d.update(format="vitprune-estimate"), "format 'vitprune-estimate'"),
    (lambda d: d.update(version=7), "unsupported version 7"),
    (lambda d: d.pop("chosen"), "missing field 'chosen'"),
    (lambda d: d.pop("profile"), "missing field 'profile'"),
    (lambda d: d["profile"].pop("batch_size"), "profile: missing field 'batch_size'"),
    (lambda d: d["chosen"].pop("method"), "chosen: missing field 'method'"),
    (lambda d: d["chosen"].update(method="ToMe-r8"), "chosen.method 'ToMe-r8' is not a "
     r"token-reduction method \(evit, pomt, random, tome, topk\)"),
    (lambda d: d["estimate"].update(method=None), "estimate: method None is not a"),
    (lambda d: d["chosen"].update(counts=[17, 9.5, 9]), "counts must be a non-empty list of ints"),
    (lambda d: d["chosen"].update(counts=[17, 9, 12]), r"schedule 'list:17,17,9' is counts "
     r"\[17, 17, 9\], not the counts \[17, 9, 12\] recorded with it"),
    (lambda d: d["chosen"].update(counts=[17, 9, 12], schedule="list:17,9,12"),
     "schedule 'list:17,9,12' does not parse for test_tiny_vit"),
    (lambda d: (d["chosen"].update(counts=[17, 9, 12]), d["chosen"].pop("schedule")),
     "is not a schedule of test_tiny_vit|does not parse|never increase"),
    (lambda d: d["profile"].update(batch_size=0), "batch_size must be a positive integer, got 0"),
    (lambda d: d["profile"].update(batch_size="1"), "batch_size must be a positive integer"),
    (lambda d: d["profile"].update(dtype="float16"), r"profile: dtype must be one of "
     r"\['float32', 'bfloat16'\], got 'float16'"),
    (lambda d: d["estimate"].update(weights_sha256=None), "weights_sha256 must be a string"),
    (lambda d: d["chosen"].update(predicted_latency_s="1"), "predicted_latency_s must be a finite"),
    (lambda d: d["chosen"].update(measured_accuracy=float("inf")), "measured_accuracy must be"),
    (lambda d: d["chosen"].update(basis="hoped"), "basis 'hoped'"),
    (lambda d: d["chosen"].update(basis="measured"), "chosen.basis is 'measured' but the chosen "
     r"schedule has no measured number \(edited\?\)"),
    (lambda d: d["chosen"].update(predicted_latency_s=-1), "predicted_latency_s must be >= 0"),
    (lambda d: d["chosen"].update(measured_latency_s=-1e-3), "measured_latency_s must be >= 0"),
    (lambda d: d["chosen"].update(measured_accuracy=1.5), r"measured_accuracy must be in \[0, "
     r"1\], got 1.5"),
    (lambda d: d["chosen"].update(measured_accuracy=0.5, measured_accuracy_low=-0.1,
                                  measured_accuracy_high=0.9, num_images=2),
     r"measured_accuracy_low must be in \[0, 1\], got -0.1"),
    (lambda d: d["chosen"].update(criterion=5), "chosen.criterion and created must be strings"),
    (lambda d: d["chosen"].update(utility=[]),           # a TypeError traceback in deploy
     r"chosen.utility must be a finite number or null, got \[\]"),
    (lambda d: d["chosen"].update(schedule_latency_s={}),
     "chosen.schedule_latency_s must be a finite number or null, got {}"),
    (lambda d: d.update(created=None), "chosen.criterion and created must be strings"),
    (lambda d: d["chosen"].update(measured_accuracy_low="x"), "measured_accuracy_low must be"),
    (lambda d: d["chosen"].update(num_images=1.5), "num_images must be an int"),
    # (from a mutation audit: without the check these loaded, 9.0 even as a paper choice)
    (lambda d: d["chosen"].update(tokens=9.0), r"^bad.json: chosen: tokens must be an int, "
     r"got 9.0$"),
    (lambda d: (_as_multi(d), d["frontier"][0].update(tokens="9")),
     r"^bad.json: frontier\[0\]: tokens must be an int, got '9'$"),
    (lambda d: d["chosen"].update(measured_accuracy=0.9612, measured_accuracy_low=0.9,
                                  measured_accuracy_high=0.99, num_images=50),
     r"measured_accuracy 0.9612 is not a count of 50 images \(k / 50\)"),
    (lambda d: d["chosen"].update(measured_accuracy=0.96, measured_accuracy_low=0.97,
                                  measured_accuracy_high=0.99, num_images=50),
     r"interval \[0.97, 0.99\] does not hold 0.96"),
    (lambda d: d["chosen"].update(measured_accuracy=0.98, measured_accuracy_low=0.9,
                                  measured_accuracy_high=0.97, num_images=50),
     r"interval \[0.9, 0.97\] does not hold 0.98"),          # (above it: mutation audit)
    (lambda d: d["chosen"].update(measured_change_low=-0.02, measured_change_high=-0.03,
                                  measured_accuracy=0.96, measured_accuracy_low=0.9,
                                  measured_accuracy_high=0.99, num_images=50),
     r"measured_change_low / measured_change_high must be numbers -1 <= low <= high <= 1 "
     r"measured on num_images images, or both null, got -0.02, -0.03"),
    (lambda d: d["chosen"].update(measured_change_low=-0.02, measured_change_high=1.5,
                                  measured_accuracy=0.96, measured_accuracy_low=0.9,
                                  measured_accuracy_high=0.99, num_images=50),
     r"measured_change_high must be numbers .*, got -0.02, 1.5"),
    (lambda d: d["chosen"].update(measured_change_low=-0.02, measured_change_high=0.01),
     r"measured_change_high must be numbers .* measured on num_images images, or both null, "
     r"got -0.02, 0.01"),                                   # (no num_images)
    (lambda d: d["chosen"].update(measured_accuracy=None, num_images=50),
     "num_images 50 needs a measured_accuracy"),
    (lambda d: d["chosen"].update(measured_accuracy=0.5, num_images=0),
     "num_images 0 needs a measured_accuracy over at least one image"),
    (lambda d: d.update(mode="greedy"), "mode 'greedy'"),
    # A paper choice moved to another point of its curve, or its utility edited (a probe:
    # both deployed): the choice is the curve's utility argmax at settings.alpha.
    (lambda d: d["chosen"].update(tokens=17, counts=[17, 17, 17], schedule="list:17,17,17",
                                  predicted_latency_s=2e-3, predicted_accuracy=0.95),
     r"^bad.json: chosen list:17,17,17 \(17 tokens, U 0.5000\) is not the curve's utility "
     r"argmax: 9 tokens, U 0.7237 \(edited\?\)$"),
    (lambda d: d["chosen"].update(utility=0.99),
     r"^bad.json: chosen.utility 0.99 is not the curve's U 0.723684 at 9 tokens \(edited\?\)$"),
    (lambda d: d["chosen"].update(utility=0.7238),     # (within 1e-3: mutation audit)
     r"^bad.json: chosen.utility 0.7238 is not the curve's U 0.723684 at 9 tokens \(edited\?\)$"),
    (lambda d: d["curve"].update(utility=[0.9, 0.1]),
     r"^bad.json: curve.utility is not U of its latency_s and accuracy at settings.alpha 0.5 "
     r"\(edited\?\)$"),
    (lambda d: d["settings"].update(alpha=0.2),
     r"curve.utility is not U of its latency_s and accuracy at settings.alpha 0.2"),
    # A probe deleted the curve (and emptied the frontier), then edited the choice: deploy
    # shipped keep@3:5 (0.20 measured) as 0.99.
    (lambda d: (d.pop("curve"), d.update(frontier=[]), d["chosen"].update(
        counts=[17, 5, 5], schedule="list:17,5,5", tokens=5, predicted_accuracy=0.99)),
     r"^bad.json: mode 'paper' but the curve the choice is checked against is missing "
     r"\(edited\?\)$"),
    (lambda d: (_as_multi(d), d["chosen"].update(utility=0.5)),     # relabelled paper
     r"mode 'multi' but it holds the paper mode's chosen.utility \(edited\?\)"),
    (lambda d: (_as_multi(d), d["chosen"].update(schedule_latency_s=1e-3)),  # (mutation audit)
     r"mode 'multi' but it holds the paper mode's chosen.schedule_latency_s \(edited\?\)$"),
    (lambda d: d.update(mode="multi", curve={"tokens": [9]}), "paper mode's curve"),
    (lambda d: (_as_multi(d), d["chosen"].update(method="tome")),   # deploy would
     r"chosen.method 'tome' but estimate.method 'pomt': a multi-layer solution deploys the "
     r"method it was solved for \(edited\?\)"),                     # run another reducer
    (lambda d: (_as_multi(d), d["settings"].update(latency_model={"method": "topk"})),
     "chosen.method 'pomt' but settings.latency_model.method 'topk'"),
    (lambda d: d["model"].update(name="other"), "model.name 'other'"),
    (lambda d: d["model"]["config"].update(colour=1), "model.config is invalid"),
    (lambda d: d.update(frontier={}), "frontier must be a list"),
    (lambda d: d.update(chosen="keep@1:9"), "^bad.json: chosen must be an object, got str$"),
    (lambda d: d["frontier"].append({"counts": [17, 17, 9]}), r"frontier\[0\]: missing field"),
])
def test_solution_errors_name_the_field(tmp_path, fn, match):
  doc = S.read_solution(solution_file(tmp_path / "s.json", CFG, [17, 17, 9])).to_json()
  bad = copy.deepcopy(doc)
  fn(bad)
  with pytest.raises(S.SolutionError, match=match):
    S.Solution.from_json(bad, where="bad.json")


def test_a_paper_choice_is_the_curve_point_as_reported(tmp_path):
  """The curve keeps a raw table's accuracy (1.24 from --nomonotone); the chosen point reports
  it within [0, 1]: a genuine solution, not an edit. A curve that is not lists is named, not a
  TypeError of the choice check."""
  sol = S.read_solution(solution_file(tmp_path / "s.json", CFG, [17, 17, 9]))
  curve = _curve([17, 9], [2e-3, 1e-3], [1.3, 1.24])
  sol = dataclasses.replace(sol, curve=curve, settings=dict(sol.settings, layer=1),
                            chosen=dataclasses.replace(sol.chosen, tokens=9,
                                                       predicted_accuracy=1.0))
  assert S.Solution.from_json(sol.to_json()) == sol
  doc = sol.to_json()
  doc["chosen"]["predicted_accuracy"] = 1.24                    # (older files: as the curve)
  S.Solution.from_json(doc)
  doc["curve"]["tokens"] = 9
  with pytest.raises(S.SolutionError, match=r"curve must hold the lists \['tokens'"):
    S.Solution.from_json(doc)


_MEASURED_17_17_9 = dict(schedule="list:17,17,9", counts=[17, 17, 9], predicted_latency_s=1e-3,
                         predicted_accuracy=0.9, measured_latency_s=None,
                         measured_accuracy=0.9, measured_accuracy_low=0.5,
                         measured_accuracy_high=1.0, num_images=10)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["chosen"].update(counts=[17, 9, 9], schedule="list:17,9,9"),
     r"chosen list:17,9,9 is none of the schedules the solution lists \(frontier, checked, "
     r"full\) \(edited\?\)"),
    (lambda d: d["chosen"].update(predicted_latency_s=5e-4),
     "chosen list:17,17,9's numbers differ from those the solution lists"),
    # (a probe: the same counts written otherwise were blamed on the numbers)
    (lambda d: d["chosen"].update(schedule="keep@1:9"),
     r"chosen keep@1:9 is the entry the solution lists as list:17,17,9 \(the same counts and "
     r"numbers\) under another schedule text \(edited\?\)$"),
    (lambda d: (d["checked"].append(dict(_MEASURED_17_17_9, measured_accuracy=0.9)),
                d["chosen"].update(_MEASURED_17_17_9, measured_accuracy=0.8)),
     "chosen list:17,17,9's numbers differ from those the solution lists"),
    (lambda d: d["chosen"].update(criterion="accuracy_floor"),
     r"chosen.criterion 'accuracy_floor' needs settings.accuracy_floor \(edited\?\)"),
    (lambda d: (d["chosen"].update(criterion="accuracy_floor"),
                d["settings"].update(accuracy_floor=0.99)),
     r"criterion 'accuracy_floor', but the chosen list:17,17,9 is predicted 0.9 < the floor "
     r"0.99 \(edited\?\)"),
    (lambda d: (d["chosen"].update(criterion="latency_budget"),
                d["settings"].update(latency_budget=1e-4)),
     r"criterion 'latency_budget', but the chosen list:17,17,9 is predicted 0.001 s > the "
     r"budget 0.0001 s"),
    (lambda d: d["chosen"].update(criterion="latency_budget"),
     "chosen.criterion 'latency_budget' needs settings.latency_budget"),
    (lambda d: d["chosen"].update(measured_accuracy_low=0.9, measured_accuracy_high=0.1),
     "chosen: measured_accuracy_low 0.9 is above measured_accuracy_high 0.1"),
    (lambda d: d["estimate"].update(metric="kl"),
     r"estimate: metric must be one of \['accuracy', 'agreement'\], got 'kl'"),
    # The lists emptied, then the choice edited: the check was skipped and deploy shipped it.
    (lambda d: (d.update(frontier=[], checked=[]), d["chosen"].update(
        counts=[17, 5, 5], schedule="list:17,5,5", predicted_accuracy=0.99)),
     r"chosen list:17,5,5 is none of the schedules the solution lists \(frontier, checked, "
     r"full\) \(edited\?\)$"),
])
def test_a_multi_choice_must_be_a_listed_schedule_meeting_its_criterion(tmp_path, edit, match):
  """A probe changed chosen.schedule/counts (or its numbers) by hand: the file loaded and deploy
  built that graph under the numbers of the schedule actually chosen."""
  doc = S.read_solution(solution_file(
      tmp_path / "s.json", CFG, [17, 17, 9], mode="multi",
      frontier=[[17, 17, 9], [17] * 3])).to_json()
  S.Solution.from_json(copy.deepcopy(doc), where="good.json")
  bad = copy.deepcopy(doc)
  edit(bad)
  with pytest.raises(S.SolutionError, match="^bad.json: " + match):
    S.Solution.from_json(bad, where="bad.json")
  floor_met = copy.deepcopy(doc)          # what holds loads: a floor met, a budget kept
  floor_met["chosen"]["criterion"] = "accuracy_floor"
  floor_met["settings"]["accuracy_floor"] = 0.9
  S.Solution.from_json(floor_met)
  floor_met["chosen"]["criterion"] = "latency_budget"
  floor_met["settings"].update(accuracy_floor=None, latency_budget=1e-3)
  S.Solution.from_json(floor_met)



def test_a_drop_sets_the_floor_the_unpruned_accuracy_minus_it_to_rounding(tmp_path):
  """settings.max_accuracy_drop: the floor is the unpruned schedule's accuracy minus it, up to
  float rounding only (a mutation audit: a floor edited by 4e-4 loaded under a 1e-3 slack)."""
  doc = S.read_solution(solution_file(
      tmp_path / "s.json", CFG, [17, 17, 9], mode="multi",
      frontier=[[17, 17, 9], [17] * 3])).to_json()
  doc["full"] = {"schedule": "full", "counts": [17, 17, 17], "predicted_latency_s": 1e-3,
                 "predicted_accuracy": 0.9}
  doc["chosen"]["criterion"] = "accuracy_floor"
  doc["settings"].update(accuracy_floor=0.9 - 0.1, max_accuracy_drop=0.1)
  sol = S.Solution.from_json(copy.deepcopy(doc))
  assert (sol.settings["accuracy_floor"], sol.settings["max_accuracy_drop"]) == (0.9 - 0.1, 0.1)
  assert S.Solution.from_json(sol.to_json()) == sol
  doc["settings"]["accuracy_floor"] = 0.8004
  with pytest.raises(S.SolutionError, match=r"^bad.json: settings.max_accuracy_drop 0.1 needs "
                     r"settings.accuracy_floor = the unpruned schedule's accuracy minus it, "
                     r"above 0, got floor 0.8004 \(edited\?\)$"):
    S.Solution.from_json(doc, where="bad.json")


def test_a_measured_choice_no_entry_lists_is_refused(tmp_path):
  """A probe gave the chosen frontier schedule keep@0:9 (predicted 0.384) a measured 0.9749 on
  359 images of its own: it loaded as a floor met on measurement, as check_floor's files before
  955fc9f (a measured choice listed only as its frontier entry without measurements) did. Now
  refused, naming both; listed in `checked` with the same numbers, it loads."""
  doc = S.read_solution(solution_file(
      tmp_path / "s.json", CFG, [17, 17, 9], mode="multi",
      frontier=[[17, 17, 9], [17] * 3])).to_json()
  doc["chosen"].update(_MEASURED_17_17_9, criterion="accuracy_floor_measured", basis="measured")
  doc["settings"]["accuracy_floor"] = 0.85
  with pytest.raises(S.SolutionError, match=r"^solution: chosen list:17,17,9's measurements are "
                     r"in no entry the solution lists for that schedule \(written before "
                     r"2026-12-04, when a measured choice was first listed in checked, or "
                     r"edited\): solve again$"):
    S.Solution.from_json(copy.deepcopy(doc))
  listed = copy.deepcopy(doc)
  listed["checked"] = [dict(_MEASURED_17_17_9)]
  assert S.Solution.from_json(listed).chosen.measured_accuracy == 0.9
  doc["chosen"]["predicted_accuracy"] = 0.95
  listed["checked"][0]["measured_accuracy_low"] = 0.4     # another measured copy decides
  with pytest.raises(S.SolutionError, match="numbers differ from those the solution lists"):
    S.Solution.from_json(listed)


def test_an_unpruned_choice_must_meet_a_measured_floor_too(tmp_path):
  """The reader let the unpruned schedule pass as 'accuracy_floor_measured' below its floor (a
  probe: measured 0.9749 against a floor edited to 0.99 loaded as a floor met); check_floor
  refuses such a floor (FloorNotMetError), so no writer makes one."""
  doc = S.read_solution(solution_file(
      tmp_path / "s.json", CFG, [17, 17, 9], mode="multi",
      frontier=[[17, 17, 9], [17] * 3])).to_json()
  unpruned = dict(_MEASURED_17_17_9, schedule="full", counts=[17, 17, 17])
  doc["chosen"].update(unpruned, criterion="accuracy_floor_measured", basis="measured")
  doc["checked"] = [unpruned]
  doc["settings"]["accuracy_floor"] = 0.9
  S.Solution.from_json(copy.deepcopy(doc))
  doc["settings"]["accuracy_floor"] = 0.99
  with pytest.raises(S.SolutionError, match=r"criterion 'accuracy_floor_measured', but the "
                     r"chosen full measured 0.9 < the floor 0.99 \(edited\?\)"):
    S.Solution.from_json(doc)


def test_older_solutions_the_new_checks_must_not_refuse(tmp_path):
  """Predicted accuracies outside [0, 1] (written before they were reported within it, e.g.
  1.24 from a raw --nomonotone table) and a multi solution whose latency model summary has no
  method still load."""
  doc = S.read_solution(solution_file(tmp_path / "s.json", CFG, [17, 17, 9])).to_json()
  def raw(d, acc):         # the curve held the raw number, and the choice reported it
    d["chosen"].update(predicted_accuracy=acc)
    d["curve"]["accuracy"][d["curve"]["tokens"].index(d["chosen"]["tokens"])] = acc
    d["curve"] = _curve(d["curve"]["tokens"], d["curve"]["latency_s"], d["curve"]["accuracy"])

  for edit in (lambda d: raw(d, 1.24),
               lambda d: (_as_multi(d), d["chosen"].update(predicted_accuracy=-0.2),   # (an
                          d["frontier"][0].update(predicted_accuracy=-0.2)),   # additive model)
               lambda d: (_as_multi(d), d["settings"].update(latency_model={}))):
    old = copy.deepcopy(doc)
    edit(old)
    S.Solution.from_json(old, where="old.json")


def test_a_solution_of_numpy_numbers_writes_as_plain_json(tmp_path):
  """Counts from a numpy array, np.float32 latencies and an np.float32 floor (as solve_stage
  passes them on) gave json's raw TypeError after the whole solve."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  sol = S.read_solution(solution_file(tmp_path / "s.json", CFG, [17, 17, 9]))
  curve = _curve([17, 9], [2e-3, float(np.float32(1e-3))], [0.95, 0.9])
  sol = dataclasses.replace(sol, curve=curve, chosen=dataclasses.replace(
      sol.chosen, tokens=np.int64(9), counts=tuple(np.array([17, 17, 9])),
      predicted_latency_s=np.float32(1e-3)), settings=dict(sol.settings, layer=np.int64(1),
                                                            alpha=np.float32(0.5)))
  paths = S.write_solution(sol, str(tmp_path / "out"))
  back = S.read_solution(paths["json"])
  assert back.chosen.counts == (17, 17, 9) and type(back.chosen.counts[0]) is int
  assert back.chosen.predicted_latency_s == float(np.float32(1e-3))


@pytest.mark.parametrize("edit, match", [
    (lambda s: dict(chosen=dataclasses.replace(s.chosen, schedule="list:17,17,17")),
     r"schedule 'list:17,17,17' is counts \[17, 17, 17\], not the counts \[17, 17, 9\]"),
    (lambda s: dict(method="magic"), "chosen.method 'magic' is not a token-reduction method"),
    (lambda s: dict(chosen=dataclasses.replace(
        s.chosen, measured_accuracy=0.9612, measured_accuracy_low=0.9,
        measured_accuracy_high=0.99, num_images=50)),
     r"measured_accuracy 0.9612 is not a count of 50 images"),
    (lambda s: dict(curve=None), "mode 'paper' but the curve the choice is checked against is "
     r"missing \(edited\?\)"),
    (lambda s: dict(curve=dict(s.curve, utility=[0.5])), "curve lists .* must have one"),
    (lambda s: dict(curve=dict(s.curve, tokens=[17, 12])),
     r"chosen.tokens 9 is not among curve.tokens"),
    # A probe's hand edits the reader took: a curve point at -5 tokens, a listed n edited.
    (lambda s: dict(curve=dict(s.curve, tokens=[-5, 9])),
     r"curve.tokens holds -5, outside \[2, 17\] for test_tiny_vit \(edited\?\)"),
    (lambda s: dict(frontier=(dataclasses.replace(s.chosen, tokens=5),)),
     r"listed list:17,17,9 is not the POMT schedule of its tokens 5 at settings.layer 1: "
     r"\[17, 17, 5\] \(edited\?\)"),
    (lambda s: dict(checked=(dataclasses.replace(s.chosen, tokens=17),)),
     r"listed list:17,17,9 is not the POMT schedule of its tokens 17 at settings.layer 1: "
     r"\[17, 17, 17\] \(edited\?\)"),
    # a probe's hand edits that deploy took as a measured floor choice
    (lambda s: dict(criterion="banana"), r"chosen.criterion 'banana' not in \('utility'"),
    (lambda s: dict(settings=dict(s.settings, accuracy_floor="high")),
     r"settings.accuracy_floor must be a number in \[0, 1\] or null, got 'high'"),
    (lambda s: dict(full=dataclasses.replace(s.chosen)), r"full.counts \[17, 17, 9\] is not the "
     r"unpruned schedule \[17, 17, 17\]"),
    (lambda s: dict(criterion="accuracy_floor_measured", basis="measured", mode="multi",
                    curve=None, utility=None, settings=dict(s.settings, accuracy_floor=0.97),
                    chosen=(c := dataclasses.replace(s.chosen, measured_accuracy=0.5,
                                                     measured_accuracy_low=0.3, tokens=None,
                                                     measured_accuracy_high=0.7, num_images=50)),
                    frontier=(c,)),
     r"criterion 'accuracy_floor_measured', but the chosen .* measured 0.5 < the floor 0.97"),
    # A probe's hand edits that deploy built as another graph under the chosen one's numbers:
    (lambda s: dict(chosen=dataclasses.replace(s.chosen, counts=(17, 9, 9),
                                               schedule="list:17,9,9")),
     r"chosen list:17,9,9 is not the POMT schedule of chosen.tokens 9 at settings.layer 1: "
     r"\[17, 17, 9\] \(edited\?\)"),
    (lambda s: dict(chosen=dataclasses.replace(s.chosen, predicted_accuracy=0.97)),
     r"predicted latency and accuracy are not the curve's at 9 tokens \(edited\?\)"),
    (lambda s: dict(settings=dict(s.settings, layer=5)),
     r"settings.layer must be a block index in \[0, 2\), got 5"),
    (lambda s: dict(criterion="accuracy_floor", settings=dict(s.settings, accuracy_floor=0.5)),
     "chosen.criterion 'accuracy_floor' in paper mode, which chooses by 'utility'"),
    (lambda s: dict(frontier=(dataclasses.replace(s.chosen, predicted_latency_s=5e-4),)),
     r"chosen list:17,17,9's numbers differ from those the solution lists for that schedule"),
    # A probe's hand edits the reader took, and deploy copied into an artifact's provenance:
    (lambda s: dict(settings=dict(s.settings, accuracy_floor=-0.5)),
     r"settings.accuracy_floor must be a number in \[0, 1\] or null, got -0.5"),
    (lambda s: dict(settings=dict(s.settings, latency_budget=-1)),
     r"settings.latency_budget must be a number of seconds > 0 or null, got -1"),
    (lambda s: dict(settings=dict(s.settings, num_images=-5)),
     r"settings.num_images must be an integer >= 1 or null, got -5"),
    (lambda s: dict(settings=dict(s.settings, num_images=100), chosen=dataclasses.replace(
        s.chosen, measured_accuracy=0.9, measured_accuracy_low=0.5, measured_accuracy_high=1.0,
        num_images=10)), r"list:17,17,9 was measured on 10 images, but settings.num_images says "
     r"every schedule checked was measured on 100 \(edited\?\)"),
    (lambda s: dict(settings=dict(s.settings, timed_in_loop=-3)),
     r"settings.timed_in_loop must be an integer >= 0 or null, got -3"),
    (lambda s: dict(settings=dict(s.settings, timed_in_loop=-1)),   # (the bound: mutation
     r"settings.timed_in_loop must be an integer >= 0 or null, got -1$"),         # audit)
    (lambda s: dict(settings=dict(s.settings, grid=["a"])),
     r"settings.grid must be an ascending list of token counts or null, got \['a'\]"),
    (lambda s: dict(settings=dict(s.settings, grid=[9, 33])),
     r"settings.grid reaches 33 tokens, above the model's 17"),
    # (on the bounds: mutation audit)
    (lambda s: dict(settings=dict(s.settings, grid=[9, 18])),
     r"settings.grid reaches 18 tokens, above the model's 17"),
    (lambda s: dict(settings=dict(s.settings, grid=[9, 9])),
     r"settings.grid must be an ascending list of token counts or null, got \[9, 9\]"),
    (lambda s: dict(settings=dict(s.settings, latency_budget=0)),
     r"settings.latency_budget must be a number of seconds > 0 or null, got 0$"),
    (lambda s: dict(settings=dict(s.settings, layer=2)),
     r"settings.layer must be a block index in \[0, 2\), got 2$"),
    (lambda s: dict(estimate=dataclasses.replace(s.estimate, layers=(0, 2))),
     r"estimate.layers \[0, 2\]: 2 is not a block of the 2-block model"),
    (lambda s: dict(curve=_curve([17, 9, 9], [2e-3, 1e-3, 1e-3], [0.95, 0.9, 0.9])),
     r"curve.tokens must be distinct integers$"),
    (lambda s: dict(settings=dict(s.settings, latency_model={
        "batch_size": s.profile.batch_size, "dtype": s.profile.dtype,
        "device_kind": "TPU v4"})),
     r"settings.latency_model.device_kind 'TPU v4' but profile.device_kind 'cpu'"),
    (lambda s: dict(settings=dict(s.settings, alpha="x")),
     r"settings.alpha must be a number in \[0, 1\] or null, got 'x'"),
    (lambda s: dict(settings=dict(s.settings, monotone="yes")),
     r"settings.monotone must be a bool or null, got 'yes'"),
    (lambda s: dict(settings=dict(s.settings, metric="foo")),
     r"settings.metric 'foo' but estimate.metric 'accuracy' \(edited\?\)"),
    (lambda s: dict(settings=dict(s.settings, floor_straddles="x")),
     r"settings.floor_straddles must be a list of schedules or null, got 'x'"),
    (lambda s: dict(settings=dict(s.settings, floor_straddles=["list:17,9,9"])),
     r"settings.floor_straddles names 'list:17,9,9', neither a checked schedule nor the "
     r"unpruned one"),
    (lambda s: dict(settings=dict(s.settings, checked_accuracy_error={"num_schedules": 1})),
     r"settings.checked_accuracy_error must be an error summary"),
    # (the frontier's error names how many it left out: a count >= 1, or nothing)
    (lambda s: dict(settings=dict(s.settings, frontier_accuracy_error=dict(
        num_schedules=2, mean_abs_points=0.5, max_abs_points=1.0, mean_signed_points=0.1,
        unscored=0))),
     r"settings.frontier_accuracy_error must be an error summary \(.*unscored >= 1 if given\)"),
    (lambda s: dict(settings=dict(s.settings, frontier_accuracy_error=dict(
        num_schedules=2, mean_abs_points=0.5, max_abs_points=1.0, mean_signed_points=0.1,
        unscored=1.5))),
     r"settings.frontier_accuracy_error must be an error summary"),
    (lambda s: dict(settings=dict(s.settings, step_k=-1.0)),
     r"settings.step_k must be a number >= 0 or null, got -1.0"),
    (lambda s: dict(settings=dict(s.settings, latency_model={
        "batch_size": 8, "dtype": s.profile.dtype, "device_kind": s.profile.device_kind})),
     r"settings.latency_model.batch_size 8 but profile.batch_size 1: the latencies were "
     r"measured for another graph than the one deployed \(edited\?\)"),
    (lambda s: dict(settings=dict(s.settings, latency_model={
        "batch_size": s.profile.batch_size, "dtype": "bfloat16",
        "device_kind": s.profile.device_kind})),
     r"settings.latency_model.dtype 'bfloat16' but profile.dtype 'float32'"),
    # Fault probe: a deploy read a negative scale, and a calibrated-graph source with no model
    (lambda s: dict(settings=dict(s.settings, latency_model={"params": dict(
        const=1e-4, scale=-5.0, mlp=0.0, r0=0.0, r1=0.0, post=0.0)})),
     r"settings.latency_model.params must have 0 <= mlp <= scale and r0, r1, post >= 0 \(the "
     r"fit's bounds\), got .*'scale': -5.0.* \(edited\?\)$"),
    (lambda s: dict(settings=dict(s.settings, latency_model={"params": {"const": 1.0}})),
     r"settings.latency_model.params must hold numbers \('const', 'scale'"),
    (lambda s: dict(profile=dataclasses.replace(s.profile, latency_source="calibrated-graph")),
     r"profile.latency_source is 'calibrated-graph' but settings.latency_model is missing "
     r"\(edited\?\)"),
    (lambda s: dict(profile=dataclasses.replace(s.profile, latency_source="banana")),
     r"profile.latency_source 'banana' not in \['measured'"),
    (lambda s: dict(profile=dataclasses.replace(s.profile, sha256="zz")),
     r"profile.sha256 must be a sha256 hex digest, got 'zz'"),
    (lambda s: dict(profile=dataclasses.replace(s.profile, device_kind=" ")),
     r"profile.device_kind and profile.platform must name the device"),
    (lambda s: dict(estimate=dataclasses.replace(s.estimate, layers=(9,))),
     r"estimate.layers \[9\]: 9 is not a block of the 2-block model"),
    (lambda s: dict(estimate=dataclasses.replace(s.estimate, kind="x")),
     r"estimate.kind 'x' not in \['tokens', 'sensitivity'\]"),
    (lambda s: dict(estimate=dataclasses.replace(s.estimate, data_fingerprint="zz")),
     r"estimate.data_fingerprint must be a sha256 hex digest or null, got 'zz'"),
    (lambda s: dict(frontier=(s.chosen, s.chosen)),
     r"frontier lists .* twice \(edited\?\)"),
])
def test_write_solution_refuses_what_read_solution_would_refuse(tmp_path, edit, match):
  """A Solution built in Python was written unchecked: read_solution then refused the file
  (and a paper solution without its curve crashed inside the plot)."""
  sol = S.read_solution(solution_file(tmp_path / "s.json", CFG, [17, 17, 9]))
  curve = _curve([17, 9], [2e-3, 1e-3], [0.95, 0.9])   # (the chosen point: 9 tokens, 1 ms, 0.9)
  sol = dataclasses.replace(sol, chosen=dataclasses.replace(sol.chosen, tokens=9), curve=curve,
                            settings=dict(sol.settings, layer=1))
  S.write_solution(sol, str(tmp_path / "good"))                    # the unedited one writes
  bad = dataclasses.replace(sol, **edit(sol))
  with pytest.raises(S.SolutionError, match=r"\(not written\): .*" + match):
    S.write_solution(bad, str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")


def test_what_the_writers_record_is_read_back():
  """Review: `--step_k=0` (the flag's lower bound) and an error summary whose mean of equal
  errors lands one ulp above their max were written, then refused by the reader."""
  from vitprune import solve_loop  # pylint: disable=g-import-not-at-top
  err = solve_loop._error_points([(40 / 60, 41 / 60)] * 3)  # pylint: disable=protected-access
  assert err["mean_abs_points"] > err["max_abs_points"]          # (float rounding)
  assert S._error_summary(err)  # pylint: disable=protected-access
  ok, _ = S._SETTINGS["step_k"]  # pylint: disable=protected-access
  assert ok(0.0) and ok(4.0) and not ok(-1.0)


def _measured_multi(tmp_path, chosen, checked, criterion, **settings):
  """A multi solution choosing measured `chosen` (dict of measured fields over list:17,17,9)
  among measured `checked` entries, by `criterion` on settings `settings`."""
  doc = S.read_solution(solution_file(
      tmp_path / "s.json", CFG, [17, 17, 9], mode="multi",
      frontier=[[17, 17, 9], [17] * 3])).to_json()
  doc["chosen"].update(chosen, criterion=criterion, basis="measured")
  doc["checked"] = [dict(_MEASURED_17_17_9, **c) for c in checked]
  doc["settings"].update(settings, latency_basis="measured")
  return doc


_TIMED = dict(measured_accuracy=0.9, measured_accuracy_low=0.5, measured_accuracy_high=1.0,
              num_images=10, measured_latency_s=1e-3)
_FULL_TIMED = dict(_TIMED, schedule="full", counts=[17, 17, 17], predicted_latency_s=2e-3)


@pytest.mark.parametrize("chosen, full, settings, match", [
    # Mutation audit: a budget choice measured over its budget (a tolerance), one within it
    # at exactly the budget beaten by a more accurate one (by half a point: a tolerance; at the
    # budget: strictly below), a floor choice timed 0.5 % slower than one meeting the floor.
    (dict(_TIMED, measured_latency_s=1.2e-3), dict(_FULL_TIMED, measured_latency_s=2e-3),
     dict(criterion="latency_budget_measured", latency_budget=1e-3),
     r"criterion 'latency_budget_measured', but the chosen list:17,17,9 measured 0.0012 s > "
     r"the budget 0.001 s \(edited\?\)$"),
    (_TIMED, dict(_FULL_TIMED, measured_accuracy=1.0, measured_accuracy_low=0.7),
     dict(criterion="latency_budget_measured", latency_budget=1e-3),
     r"criterion 'latency_budget_measured', but full measured 1.0 within the budget, more than "
     r"the chosen list:17,17,9's 0.9 \(edited\?\)$"),
    (dict(_TIMED, measured_accuracy=0.5, measured_accuracy_low=0.2, measured_accuracy_high=0.8,
          num_images=200),
     dict(_FULL_TIMED, measured_accuracy=0.505, measured_accuracy_low=0.2,
          measured_accuracy_high=0.8, num_images=200),
     dict(criterion="latency_budget_measured", latency_budget=1e-3),
     r"criterion 'latency_budget_measured', but full measured 0.505 within the budget, more "
     r"than the chosen list:17,17,9's 0.5 \(edited\?\)$"),
    (dict(_TIMED, measured_latency_s=1.005e-3), _FULL_TIMED,
     dict(criterion="accuracy_floor_measured", accuracy_floor=0.85),
     r"settings.latency_basis is 'measured', but full measured 0.001 s and meets the floor, "
     r"faster than the chosen list:17,17,9's 0.001005 s \(edited\?\)$"),
    # (no floor set: every timed schedule is a candidate, not none of them; mutation audit)
    (dict(_TIMED, measured_latency_s=1.005e-3), _FULL_TIMED, dict(criterion="utility"),
     r"settings.latency_basis is 'measured', but full measured 0.001 s, faster than the "
     r"chosen list:17,17,9's 0.001005 s \(edited\?\)$"),       # (no floor: none to meet)
])
def test_a_measured_choice_is_refused_at_the_bounds_of_its_criterion(tmp_path, chosen, full,
                                                                      settings, match):
  settings = dict(settings)
  criterion = settings.pop("criterion")
  doc = _measured_multi(tmp_path, chosen, [chosen, full], criterion, **settings)
  with pytest.raises(S.SolutionError, match="^bad.json: " + match):
    S.Solution.from_json(doc, where="bad.json")
  # what holds loads: the other schedule slower (budget: over it) or less accurate
  held = _measured_multi(tmp_path, dict(chosen, measured_latency_s=1e-3),
                         [dict(chosen, measured_latency_s=1e-3),
                          dict(full, measured_latency_s=1.5e-3)], criterion, **settings)
  assert S.Solution.from_json(held).chosen.measured_latency_s == 1e-3


def test_the_reader_takes_what_sits_on_a_bound():
  """Mutation audit: a latency of 0 s and a degenerate interval (low == high) are on the
  bounds the format allows: they load."""
  cand = dict(_MEASURED_17_17_9, predicted_latency_s=0.0, measured_latency_s=0.0,
              measured_accuracy=0.9, measured_accuracy_low=0.9, measured_accuracy_high=0.9)
  c = S.Candidate.from_json(cand, "c", CFG)
  assert (c.predicted_latency_s, c.measured_latency_s, c.measured_accuracy_low,
          c.measured_accuracy_high) == (0.0, 0.0, 0.9, 0.9)


def test_the_summary_says_the_unpruned_speed_up_and_a_budget_that_costs_nothing(tmp_path):
  """Mutation audit: the speed-up is unpruned over chosen (x2.000, not x0.500), and a budget
  that costs no accuracy costs 0.00 points (not 'gains -0.00')."""
  sol = S.read_solution(solution_file(tmp_path / "s.json", CFG, [17, 17, 9], mode="multi"))
  sol = dataclasses.replace(
      sol, settings=dict(sol.settings, latency_basis="measured"),
      chosen=dataclasses.replace(sol.chosen, measured_latency_s=1e-3),
      full=S.Candidate((17, 17, 17), "full", 2e-3, 0.95, measured_latency_s=2e-3))
  assert T._unpruned_latency_text(sol) == (  # pylint: disable=protected-access
      "2 ms (measured in the loop with the chosen graph: speed-up x2.000)")
  assert T.budget_cost_text(8e-4, "accuracy", 0.9, 0.9) == (
      "the latency budget 0.8 ms costs 0.00 points of accuracy")
  assert T.budget_cost_text(8e-4, "accuracy", 0.93, 0.9) == (
      "the latency budget 0.8 ms gains 3.00 points of accuracy")


def test_the_refinement_line_names_the_worst_round_between_and_every_schedule_measured():
  """Mutation audit: with two rounds between the first and the last, the larger error is
  named; the schedules measured by then are the record's count, not its number of rounds."""
  rounds = [dict(round=k, num_schedules=4, mean_abs_points=m, max_abs_points=2 * m)
            for k, m in enumerate((1.0, 1.5, 0.5, 0.25))]
  assert T.describe_refinement({"rounds": rounds, "converged": False,
                                "measured_schedules": 9}) == (
      "accuracy model corrected from measurements in 3 rounds (not converged, 9 schedules "
      "measured by then, the unpruned one among them): predicted before measuring, it erred by "
      "1.00 (max 2.00) points on 4 schedules in round 0 and 0.25 (max 0.50) points on 4 "
      "schedules in round 3 (rounds between: up to 1.50 (max 3.00) points on 4 schedules in "
      "round 1)")
  rounds[0]["unscored"], rounds[2]["unscored"] = 14, 1      # the estimate's own single cuts
  assert T.describe_refinement({"rounds": rounds, "converged": True,
                                "measured_schedules": 9}).startswith(
      "accuracy model corrected from measurements in 3 rounds (converged, 9 schedules measured "
      "by then, the unpruned one among them; 15 schedules the estimate had measured, the "
      "model's own table, not scored): predicted before measuring")


def test_the_refinement_line_counts_the_unscored_schedules_of_a_round_that_scored_none():
  """Mutation audit: one single reduction not scored is '1 schedule' and is told; a round whose
  new schedules were all the estimate's own (none scored) still adds its unscored ones."""
  rounds = [dict(round=0, num_schedules=3, mean_abs_points=1.0, max_abs_points=2.0),
            dict(round=1, num_schedules=0, unscored=1, mean_abs_points=0.0, max_abs_points=0.0)]
  assert T.describe_refinement({"rounds": rounds, "converged": True,
                                "measured_schedules": 5}) == (
      "accuracy model corrected from measurements in 1 round (converged, 5 schedules measured by "
      "then, the unpruned one among them; 1 schedule the estimate had measured, the model's own "
      "table, not scored): predicted before measuring, it erred by 1.00 (max 2.00) points on 3 "
      "schedules in round 0")


def test_shown_schedules_lists_at_most_eight_names():
  """Mutation audit: the first `most` names, then how many more."""
  assert T.shown_schedules([f"s{i}" for i in range(10)]) == (
      "s0, s1, s2, s3, s4, s5, s6, s7 and 2 more")
  assert T.shown_schedules(["a", "b", "c"], most=2) == "a, b and 1 more"
  assert T.shown_schedules(["a", "b"], most=2) == "a, b"


def test_the_summary_names_the_latency_models_calibration(tmp_path):
  """Mutation audit: the residuals are over the schedules that reduce (`num_reducing`), not
  every calibration graph; files before it say calibration |error|."""
  sol = S.read_solution(solution_file(tmp_path / "s.json", CFG, [17, 17, 9], mode="multi"))
  lm = dict(num_calibration=12, residual_median=0.031, residual_p90=0.094)
  sol = dataclasses.replace(sol, profile=dataclasses.replace(
      sol.profile, latency_source="calibrated-graph"))
  for extra, scored in (({"num_reducing": 8}, "|error| on the 8 that reduce"),
                        ({}, "calibration |error|")):
    lines = T.summary_lines(dataclasses.replace(
        sol, settings=dict(sol.settings, latency_model=dict(lm, **extra))))
    assert (f"latency model: calibrated on 12 compiled graphs, {scored}: median 3.1%, p90 9.4%"
            in lines)


def test_the_unpruned_schedule_is_listed_where_its_interval_straddles_the_floor(tmp_path):
  """The main job left the unpruned schedule out of floor_straddles (not timed in the loop, so
  not checked) where a staged solve timing it listed it, on the same measured interval: it is
  listed either way, and such a record reads back."""
  from vitprune import solve_loop  # pylint: disable=g-import-not-at-top
  sol = S.read_solution(solution_file(tmp_path / "s.json", CFG, [17, 17, 9], mode="multi"))
  full = S.Candidate((17, 17, 17), "full", 2e-3, 0.9, measured_accuracy=0.9,
                     measured_accuracy_low=0.85, measured_accuracy_high=0.94, num_images=200)
  sol = dataclasses.replace(sol, full=full, settings=dict(sol.settings, accuracy_floor=0.88))
  assert solve_loop._straddling(sol, (), 0.88) == ["full"]  # pylint: disable=protected-access
  assert solve_loop._straddling(sol, (), 0.8) == []  # pylint: disable=protected-access
  # (not against a floor set from its own measurement, which it meets by definition)
  relative = dataclasses.replace(sol, settings=dict(sol.settings, max_accuracy_drop=0.02))
  assert solve_loop._straddling(relative, (full,), 0.88) == []  # pylint: disable=protected-access
  listed = dataclasses.replace(sol, settings=dict(sol.settings, floor_straddles=["full"]))
  assert S.Solution.from_json(_as_multi(listed.to_json())) == listed


def test_the_in_loop_timings_spread_is_recorded_and_said(tmp_path):
  """A choice 0.7 % faster than the next timed schedule meeting the floor said nothing of
  whether the timing could tell them apart: each timed candidate records its IQR
  (measured_latency_iqr_s, round-tripped and validated), the summary gives the chosen one's, and
  says which others meeting the floor were timed within its spread."""
  from vitprune import solve_loop  # pylint: disable=g-import-not-at-top
  sol = S.read_solution(solution_file(tmp_path / "s.json", CFG, [17, 17, 9], mode="multi"))
  seconds = solve_loop.MeasuredSeconds(1e-3, 5e-5)
  assert (float(seconds), seconds.iqr) == (1e-3, 5e-5)
  got = solve_loop._with_latency(  # pylint: disable=protected-access
      lambda counts: [seconds, 2e-3], [sol.chosen, sol.chosen])       # (a plain float: none)
  assert [(c.measured_latency_s, c.measured_latency_iqr_s) for c in got] == [
      (1e-3, 5e-5), (2e-3, None)]

  def timed(c, median, iqr, acc=0.9):
    return dataclasses.replace(c, measured_latency_s=median, measured_latency_iqr_s=iqr,
                               measured_accuracy=acc)
  chosen = timed(sol.chosen, 1.0e-3, 5e-5)
  close = timed(S.Candidate.predicted(CFG, (17, 13, 13), 1e-3, 0.9), 1.04e-3, 6e-5)
  far = timed(S.Candidate.predicted(CFG, (17, 15, 15), 1e-3, 0.9), 1.2e-3, 6e-5)
  below = timed(S.Candidate.predicted(CFG, (17, 11, 11), 1e-3, 0.9), 1.01e-3, 6e-5, acc=0.5)
  sol = dataclasses.replace(sol, chosen=chosen, checked=(chosen, close, far, below),
                            criterion="accuracy_floor_measured", basis="measured",
                            settings=dict(sol.settings, accuracy_floor=0.85,
                                          latency_basis="measured"))
  back = S.Solution.from_json(_as_multi(sol.to_json()))
  assert back.chosen.measured_latency_iqr_s == 5e-5 and back.checked == sol.checked
  lines = T.summary_lines(back)
  assert "measured latency of the chosen compiled graph: 1 ms (IQR 0.05 ms)" in lines
  assert (f"note: {close.schedule} also meets the floor, timed within the spread of the chosen "
          "graph (the medians differ by less than the larger IQR): this measurement cannot "
          "tell them apart") in lines
  assert T.within_spread_note(dataclasses.replace(back, criterion="utility")) is None
  untimed = dataclasses.replace(chosen, measured_latency_iqr_s=None)      # (older files)
  assert T.within_spread_note(dataclasses.replace(back, chosen=untimed)) is None
  doc = sol.to_json()
  doc["checked"][1]["measured_latency_iqr_s"] = -1.0
  with pytest.raises(S.SolutionError, match=r"measured_latency_iqr_s must be >= 0 seconds"):
    S.Solution.from_json(_as_multi(doc))
  doc["checked"][1].update(measured_latency_iqr_s=1e-5, measured_latency_s=None)
  with pytest.raises(S.SolutionError, match=r"measured_latency_iqr_s must be a finite number "
                                            r"beside a measured_latency_s, or null, got 1e-05"):
    S.Solution.from_json(_as_multi(doc))


def test_a_companion_passed_for_its_json_is_pointed_to_the_json(tmp_path):
  """`solve --profile=X.csv` (or a solution's PNG) was "not valid JSON" alone: with the JSON
  of its stem beside it, the message names that file; without one, or for a .json, it does
  not."""
  (tmp_path / "p.csv").write_text("tokens,median_s\n")
  (tmp_path / "p.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")     # (not UTF-8)
  (tmp_path / "q.csv").write_text("tokens\n")
  (tmp_path / "bad.json").write_text("tokens\n")
  (tmp_path / "p.json").write_text("{}")
  said = {}
  for name in ("p.csv", "p.png", "q.csv", "bad.json"):
    with pytest.raises(jsonio.FormatError) as e:
      jsonio.read_json(str(tmp_path / name), "profile")
    said[name] = str(e.value).split(": not valid JSON: ")[1]
  beside = f" (the profile file is the JSON beside it: {tmp_path / 'p.json'})"
  assert said["p.csv"] == "Expecting value: line 1 column 1 (char 0)" + beside
  assert said["p.png"].endswith(beside)
  assert said["q.csv"] == "Expecting value: line 1 column 1 (char 0)"       # (no q.json)
  assert said["bad.json"] == "Expecting value: line 1 column 1 (char 0)"


def test_the_error_lines_give_the_count_the_mean_the_max_and_the_signed_mean():
  """Mutation audit: the floor check's and the frontier's accuracy-model errors name how many
  schedules were measured, and the mean, the max and the signed mean (with its sign) each
  from its own field."""
  err = dict(num_schedules=7, mean_abs_points=1.234, max_abs_points=4.567,
             mean_signed_points=-0.5)
  errs = "errs by 1.23 points on average (max 4.57, mean signed -0.50; predicted - measured)"
  assert T.describe_checked_error(err) == (
      "combined accuracy model vs the 7 measured multi-layer schedules, predicted before "
      "measuring: " + errs)
  assert T.describe_frontier_error(err) == (
      "every frontier schedule measured on the data (7): the combined accuracy model " + errs)
  # The estimate's own schedules (in sample) are counted apart, not scored.
  assert T.describe_frontier_error(dict(err, unscored=3)) == (
      "every frontier schedule measured on the data (10): the combined accuracy model, on the "
      "7 it had not seen measured, " + errs + " (3 schedules the estimate had measured, the "
      "model's own table, not scored)")
  assert T.describe_frontier_error(dict(err, num_schedules=0, unscored=1)) == (
      "every frontier schedule measured on the data (1): 1 schedule the estimate had "
      "measured, the model's own table, not scored, none left to score")


def test_the_floor_checks_error_is_not_shown_again_when_it_repeats_the_frontiers():
  """--measure_frontier measured every multi-layer schedule the floor check then read: its
  error line repeated the frontier's figure for figure; it shows only where a figure differs."""
  err = dict(num_schedules=63, mean_abs_points=4.58, max_abs_points=13.65,
             mean_signed_points=4.17)
  assert T.checked_error_shown({"checked_accuracy_error": err}) == err
  assert T.checked_error_shown({"frontier_accuracy_error": err}) is None
  assert T.checked_error_shown({"checked_accuracy_error": err,
                                "frontier_accuracy_error": dict(err, unscored=1)}) is None
  for key, other in (("num_schedules", 64), ("mean_abs_points", 4.5),
                     ("max_abs_points", 13.6), ("mean_signed_points", -4.17)):
    front = dict(err, **{key: other})
    assert T.checked_error_shown({"checked_accuracy_error": err,
                                  "frontier_accuracy_error": front}) == err, key


def test_the_summary_shows_the_floor_checks_error_once_where_the_frontiers_repeats_it(tmp_path):
  """A mutation audit: summary_lines read checked_accuracy_error itself, not through
  checked_error_shown, and printed the frontier's figures twice."""
  sol = S.read_solution(solution_file(tmp_path / "s.json", CFG, [17, 17, 9], mode="multi"))
  err = dict(num_schedules=63, mean_abs_points=4.58, max_abs_points=13.65,
             mean_signed_points=4.17)
  checked, front = T.describe_checked_error(err), T.describe_frontier_error(err)
  lines = T.summary_lines(dataclasses.replace(sol, settings=dict(
      sol.settings, checked_accuracy_error=err, frontier_accuracy_error=err)))
  assert front in lines and checked not in lines
  lines = T.summary_lines(dataclasses.replace(sol, settings=dict(
      sol.settings, checked_accuracy_error=err,
      frontier_accuracy_error=dict(err, num_schedules=64))))
  assert checked in lines


def test_the_refinement_line_with_one_measuring_round_names_it_once():
  """Mutation audit: where one round measured new schedules (the first is the last), the line
  names that round once; the anchored prediction is told only where the first and the last
  round both recorded it."""
  rounds = [dict(round=0, num_schedules=5, mean_abs_points=1.0, max_abs_points=2.0,
                 anchored=dict(round=0, num_schedules=5, mean_abs_points=0.5,
                               max_abs_points=1.0)),
            dict(round=1, num_schedules=0, mean_abs_points=0.0, max_abs_points=0.0)]
  head = ("accuracy model corrected from measurements in 1 round (converged, 6 schedules "
          "measured by then, the unpruned one among them): predicted before measuring, it erred "
          "by 1.00 (max 2.00) points on 5 schedules in round 0")
  ref = {"rounds": rounds, "converged": True, "measured_schedules": 6}
  assert T.describe_refinement(ref) == (
      head + "; the anchored per-image prediction by 0.50 (max 1.00) points on 5 schedules in "
      "round 0")
  rounds[1] = dict(rounds[1], num_schedules=3, mean_abs_points=0.25, max_abs_points=0.75)
  assert T.describe_refinement(ref) == (      # (the last round recorded no anchored error)
      head + " and 0.25 (max 0.75) points on 3 schedules in round 1")


def test_the_summary_says_how_many_were_checked_and_a_paired_straddle(tmp_path):
  """Mutation audit: the frontier line counts the schedules checked on the data, and the
  straddle line says 'paired interval' where the floor is a maximum drop met with confidence
  (judged by the paired change), 'interval' otherwise."""
  sol = S.read_solution(solution_file(tmp_path / "s.json", CFG, [17, 17, 9], mode="multi"))
  sol = dataclasses.replace(sol, checked=sol.frontier * 3)
  assert T.summary_lines(sol)[-1] == "frontier: 1 non-dominated schedule; 3 checked on the data"
  straddle = dict(sol.settings, accuracy_floor=0.88, floor_straddles=["a", "b"])
  said = {}
  for extra in ({}, {"max_accuracy_drop": 0.02}, {"floor_confidence": True},
                {"max_accuracy_drop": 0.02, "floor_confidence": True}):
    lines = T.summary_lines(dataclasses.replace(sol, settings=dict(straddle, **extra)))
    said[tuple(extra)] = [l for l in lines if "straddles" in l]
  assert said == {(): ["interval straddles the floor 0.88 for: a, b"],
                  ("max_accuracy_drop",): ["interval straddles the floor 0.88 for: a, b"],
                  ("floor_confidence",): ["interval straddles the floor 0.88 for: a, b"],
                  ("max_accuracy_drop", "floor_confidence"): [
                      "paired interval straddles the floor 0.88 for: a, b"]}


def test_the_json_beside_hint_names_the_kind_and_only_a_json_file(tmp_path):
  """Mutation audit: the hint names the kind of file read (a solution's PNG passed for the
  solution says 'the solution file'); a name ending .JSON is a JSON name already (no hint), and
  a folder named like the JSON is no file to point to."""
  (tmp_path / "s.png").write_text("not json")
  (tmp_path / "s.json").write_text("{}")
  (tmp_path / "s.JSON").write_text("not json")
  (tmp_path / "f.csv").write_text("not json")
  (tmp_path / "f.json").mkdir()
  said = {}
  for name in ("s.png", "s.JSON", "f.csv"):
    with pytest.raises(jsonio.FormatError) as e:
      jsonio.read_json(str(tmp_path / name), "solution")
    said[name] = str(e.value).split(": not valid JSON: ")[1]
  assert said == {
      "s.png": "Expecting value: line 1 column 1 (char 0) (the solution file is the JSON beside "
               f"it: {tmp_path / 's.json'})",
      "s.JSON": "Expecting value: line 1 column 1 (char 0)",
      "f.csv": "Expecting value: line 1 column 1 (char 0)"}
