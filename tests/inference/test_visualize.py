"""Overlays and label counts (clipfuse.inference.visualize), computed a block of rows at a time:
the same pixels and counts as the whole image at once."""

import numpy as np

from clipfuse.inference.visualize import ROWS_AT_ONCE, colorize, label_counts, overlay_with_legend


def test_the_overlay_and_the_counts_are_those_of_the_whole_image_at_once():
    rng = np.random.default_rng(0)
    height = 2 * ROWS_AT_ONCE + 37  # three blocks, the last one short
    image = rng.integers(0, 256, (height, 50, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (height, 50)).astype(np.uint8)
    labels[0, :4] = 255  # ignored: black, not counted
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    overlay = np.asarray(overlay_with_legend(image, labels, ["a", "b", "c"], palette, alpha=0.3))
    expected = (image * 0.7 + colorize(labels, palette) * 0.3).astype(np.uint8)
    np.testing.assert_array_equal(overlay[:height, :50], expected)
    assert overlay.shape[1] > 50  # the legend on the right
    counts = label_counts(labels, 3)
    assert counts.tolist() == [int((labels == k).sum()) for k in range(3)]
    assert counts.sum() == labels.size - 4
    assert label_counts(labels, 2).tolist() == counts[:2].tolist()  # labels beyond: not counted
