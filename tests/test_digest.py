"""vitprune.digest: one identity per weights tree, shared by estimates and deployment."""
import hashlib

import jax
import numpy as np

from vitprune import deploy, estimate
from vitprune.digest import file_sha256, named_leaves_sha256, params_sha256
from vitprune.model import init_params
from vitprune.registry import get_config


def test_estimate_and_deploy_record_the_same_weights_digest():
  params = init_params(get_config("test_tiny_vit"), 0)
  assert estimate.params_sha256 is deploy.params_sha256 is params_sha256
  # The format, recomputed by hand: changing it breaks old estimate/artifact provenance.
  tiny = {"a": np.arange(3, dtype=np.float32), "b": [np.ones((2, 1), np.int32)]}
  by_hand = hashlib.sha256()
  by_hand.update(b"['a'] <f4 (3,)\n" + tiny["a"].tobytes())
  by_hand.update(b"['b'][0] <i4 (2, 1)\n" + tiny["b"][0].tobytes())
  assert params_sha256(tiny) == by_hand.hexdigest()
  assert params_sha256(tiny) == params_sha256({"b": [np.ones((2, 1), np.int32)],
                                               "a": np.arange(3, dtype=np.float32)})
  assert params_sha256(tiny) != params_sha256({"a": np.arange(3, dtype=np.float64),
                                               "b": [np.ones((2, 1), np.int32)]})
  assert params_sha256(params) == params_sha256(jax.tree.map(np.asarray, params))


def test_file_sha256_matches_hashlib(tmp_path):
  path = tmp_path / "f.bin"
  data = bytes(range(256)) * 5000
  path.write_bytes(data)
  assert file_sha256(str(path), chunk=1000) == hashlib.sha256(data).hexdigest()


def test_leaves_are_hashed_in_key_path_text_order_whatever_order_they_come_in():
  # The edge kit hashes its packed leaves in file order (`named_leaves_sha256`): the digest must
  # be the tree's, which sorts by key path text ("[10]" before "[2]", not jax's index order).
  leaves = [np.full((2,), i, np.float32) for i in range(11)]
  by_hand = hashlib.sha256()
  for i in sorted(range(11), key=lambda i: f"[{i}]"):
    by_hand.update(f"[{i}] <f4 (2,)\n".encode() + leaves[i].tobytes())
  assert params_sha256(leaves) == by_hand.hexdigest()
  named = [(f"[{i}]", leaf) for i, leaf in enumerate(leaves)]
  assert named_leaves_sha256(reversed(named)) == named_leaves_sha256(named) == by_hand.hexdigest()


def test_the_digest_is_the_same_whatever_the_byte_order_or_layout_of_a_leaf():
  """One weights tree, one digest (a mutation audit: without the little-endian conversion a
  big-endian copy, e.g. weights read from a '>f4' file, hashed as other weights)."""
  little = {"w": np.arange(6, dtype="<f4").reshape(2, 3), "b": np.arange(3, dtype="<i4")}
  big = {k: v.astype(v.dtype.newbyteorder(">")) for k, v in little.items()}
  assert big["w"].dtype.str == ">f4" and big["w"].tobytes() != little["w"].tobytes()
  fortran = {k: np.asfortranarray(v) for k, v in little.items()}
  by_hand = hashlib.sha256()
  by_hand.update(b"['b'] <i4 (3,)\n" + little["b"].tobytes())
  by_hand.update(b"['w'] <f4 (2, 3)\n" + little["w"].tobytes())
  assert params_sha256(little) == params_sha256(big) == params_sha256(fortran)
  assert params_sha256(little) == by_hand.hexdigest()
  assert named_leaves_sha256((f"['{k}']", v) for k, v in big.items()) == by_hand.hexdigest()


def test_leaves_are_sorted_by_their_key_path_text_as_is():
  # "['B']" before "['a']" (code point order, upper case first), as every digest recorded
  # so far: a case-folding sort (a mutation audit) passed every other test.
  a, b = np.zeros((1,), np.float32), np.ones((1,), np.float32)
  by_hand = hashlib.sha256()
  by_hand.update(b"['B'] <f4 (1,)\n" + b.tobytes())
  by_hand.update(b"['a'] <f4 (1,)\n" + a.tobytes())
  assert named_leaves_sha256([("['a']", a), ("['B']", b)]) == by_hand.hexdigest()
  assert params_sha256({"a": a, "B": b}) == by_hand.hexdigest()
