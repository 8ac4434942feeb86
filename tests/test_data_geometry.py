"""The hand-written mask geometry (no scipy/OpenCV): distance transform, contour tracing, Douglas–Peucker."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageDraw

from armlib.data.geometry import class_boundaries, distance_transform, ring_area, simplify_ring, trace_regions


def brute_force_distance(targets: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(targets)
    if len(ys) == 0:
        return np.full(targets.shape, np.inf)
    yy, xx = np.mgrid[0:targets.shape[0], 0:targets.shape[1]]
    return np.sqrt(((yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2).min(-1))


masks = arrays(bool, st.tuples(st.integers(1, 24), st.integers(1, 24)))


@settings(max_examples=60, deadline=None)
@given(masks, st.floats(0.0, 12.0))
def test_distance_transform_is_exact(targets, cap):
    expected = brute_force_distance(targets)
    np.testing.assert_allclose(distance_transform(targets), expected)
    capped = distance_transform(targets, max_distance=cap)
    np.testing.assert_allclose(capped[expected <= cap], expected[expected <= cap])
    assert np.isinf(capped[expected > cap]).all()


@settings(max_examples=30, deadline=None)
@given(masks, masks)
def test_distance_transform_where_is_exact_on_the_watched_pixels(targets, where):
    if where.shape != targets.shape:
        where = np.resize(where, targets.shape)
    np.testing.assert_allclose(distance_transform(targets, where=where)[where], brute_force_distance(targets)[where])


def fill(rings, shape) -> np.ndarray:
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for ring, filled in rings:
        draw.polygon([tuple(p) for p in np.round(ring).astype(int)], fill=int(filled))
    return np.asarray(canvas).astype(bool)


@settings(max_examples=80, deadline=None)
@given(masks)
def test_traced_rings_filled_by_pil_give_back_the_mask(mask):
    np.testing.assert_array_equal(fill(trace_regions(mask), mask.shape), mask)


def test_trace_regions_holes_islands_and_origin():
    mask = np.zeros((20, 20), bool)
    mask[2:18, 2:18] = True
    mask[6:14, 6:14] = False  # a hole
    mask[9:11, 9:11] = True   # an island inside the hole
    rings = trace_regions(mask)
    assert [filled for _, filled in rings] == [True, False, True]  # largest first: outer, hole, island
    np.testing.assert_array_equal(fill(rings, mask.shape), mask)
    shifted = trace_regions(mask, origin=(5, 3))
    np.testing.assert_allclose(shifted[0][0], rings[0][0] + [5, 3])


def test_simplify_ring_reduces_a_noisy_square_to_its_corners():
    rng = np.random.default_rng(0)
    side = np.linspace(0, 40, 41)
    square = np.concatenate([np.stack([side, 0 * side], 1), np.stack([0 * side + 40, side], 1),
                             np.stack([side[::-1], 0 * side + 40], 1), np.stack([0 * side, side[::-1]], 1)])
    noisy = square + rng.uniform(-0.4, 0.4, square.shape)
    simple = simplify_ring(noisy, tolerance=1.0)
    assert len(simple) == 4
    assert abs(ring_area(simple) - 1600) < 40
    assert len(simplify_ring(noisy, tolerance=0.0)) > 100  # tolerance 0 keeps the detail
    # Every dropped vertex lies within the tolerance of the simplified outline.
    for tolerance in (0.5, 2.0, 5.0):
        kept = simplify_ring(noisy, tolerance)
        segments = list(zip(kept, np.roll(kept, -1, axis=0)))
        for point in noisy:
            distance = min(point_segment_distance(point, a, b) for a, b in segments)
            assert distance <= tolerance + 1e-9


def point_segment_distance(p, a, b) -> float:
    ab, ap = b - a, p - a
    t = np.clip(np.dot(ap, ab) / max(np.dot(ab, ab), 1e-12), 0, 1)
    return float(np.hypot(*(ap - t * ab)))


def test_class_boundaries_marks_both_sides_not_the_border():
    labels = np.zeros((4, 6), int)
    labels[:, 3:] = 1
    edge = class_boundaries(labels)
    assert edge[:, 2].all() and edge[:, 3].all() and edge.sum() == 8


@pytest.mark.parametrize("ring,area", [([[0, 0], [4, 0], [4, 3], [0, 3]], 12.0), ([[0, 0], [1, 1]], 0.0)])
def test_ring_area(ring, area):
    assert ring_area(np.array(ring)) == area
