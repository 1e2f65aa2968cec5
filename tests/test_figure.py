"""`vitprune.figure`: PNG bytes of the figure's size, without pyplot."""
import struct
import sys

from vitprune import figure


def test_png_of_the_figure_size_without_pyplot():
  pyplot_before = "matplotlib.pyplot" in sys.modules   # another test may have imported it
  fig, (a, b) = figure.subplots(1, 2, figsize=(4, 3))
  a.plot([0, 1], [1, 0])
  b.axis("off")
  png = figure.png_bytes(fig, dpi=50)
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
  assert struct.unpack(">II", png[16:24]) == (200, 150)          # 4 x 3 inches at 50 dpi
  assert ("matplotlib.pyplot" in sys.modules) == pyplot_before   # figure.py never imports it


def test_squeeze_false_gives_a_grid():
  _, axes = figure.subplots(2, 3, figsize=(3, 2), squeeze=False)
  assert axes.shape == (2, 3)
