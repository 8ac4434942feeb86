"""Mask geometry for the coarse-label simulator and its statistics: distances, contours, polygon simplification.

scipy, scikit-image and OpenCV are not dependencies of armlib (and not installed on the CPU machines), so the
three operations they would provide are here:

* :func:`distance_transform`: exact Euclidean distance transform, numpy only (separable: exact 1-D distances
  along columns, then a min over horizontal shifts that stops as soon as no shift can improve any pixel).
* :func:`trace_regions`: outer boundaries and holes of a binary mask's connected components, by
  ``contourpy`` (matplotlib's contouring engine, already a dependency) at the 0.5 level.
* :func:`simplify_ring`: Douglas–Peucker simplification of a closed polygon (as ``cv2.approxPolyDP``).

Coordinates are ``(x, y)`` = (column, row) with pixel centres on integers, as in PIL and Cityscapes JSON.
"""
from __future__ import annotations

import contourpy
import numpy as np


def distance_transform(targets: np.ndarray, max_distance: float | None = None,
                       where: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distance from every pixel centre to the nearest ``True`` pixel centre of ``targets``.

    Args:
        targets: H×W bool.
        max_distance: distances above it are reported as ``inf`` (lets callers that only need a band stop early).
        where: optional H×W bool; the early stop only waits for these pixels (others may be over-estimated).
    Returns:
        H×W float64, 0 on targets, ``inf`` where no target lies within ``max_distance`` (or none exists).
    """
    targets = np.asarray(targets, dtype=bool)
    if targets.ndim != 2:
        raise ValueError(f"targets must be a 2-D H×W mask, got shape {targets.shape}")
    height, width = targets.shape
    # Pass 1, exact per column: distance to the nearest target above and below via running max/min of row indices.
    rows = np.arange(height, dtype=np.float64)[:, None]
    above = np.maximum.accumulate(np.where(targets, rows, -np.inf), axis=0)
    below = np.minimum.accumulate(np.where(targets, rows, np.inf)[::-1], axis=0)[::-1]
    vertical = np.minimum(rows - above, below - rows)
    # float32 halves the memory traffic of pass 2 and is still exact: squared distances are integers below
    # 2^24 for images up to 2896 px on a side.
    g2 = (vertical ** 2).astype(np.float32)
    # Pass 2: d²(y, x) = min_s (s² + g²(y, x ± s)); shifts beyond the current worst distance cannot help.
    best = g2.copy()
    watch = None if where is None else np.asarray(where, dtype=bool)
    limit = width - 1 if max_distance is None else min(width - 1, int(np.floor(max_distance)))
    buffer = np.empty_like(g2)
    worst = np.inf
    for shift in range(1, limit + 1):
        if shift * shift >= worst:
            break
        s2 = float(shift * shift)
        cand = buffer[:, : width - shift]
        np.add(g2[:, :-shift], s2, out=cand)
        np.minimum(best[:, shift:], cand, out=best[:, shift:])
        np.add(g2[:, shift:], s2, out=cand)
        np.minimum(best[:, :-shift], cand, out=best[:, :-shift])
        if shift & (shift - 1) == 0 or shift % 8 == 0:  # the stop test costs a full pass: not every shift
            worst = best.max() if watch is None else best[watch].max(initial=0.0)
    dist = np.sqrt(best, dtype=np.float64)
    if max_distance is not None:
        dist[dist > max_distance] = np.inf
    return dist


def class_boundaries(labels: np.ndarray) -> np.ndarray:
    """H×W bool: pixels with a 4-neighbour of a different value (both sides of every boundary; the image
    border is not a boundary)."""
    labels = np.asarray(labels)
    edge = np.zeros(labels.shape, dtype=bool)
    horizontal = labels[:, 1:] != labels[:, :-1]
    vertical = labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    return edge


def trace_regions(mask: np.ndarray, origin: tuple[int, int] = (0, 0)) -> list[tuple[np.ndarray, bool]]:
    """Polygon rings that reproduce a binary mask when filled with PIL in the returned order.

    Args:
        mask: H×W bool.
        origin: ``(x0, y0)`` added to every coordinate (for masks cropped out of a larger image).
    Returns:
        ``(ring, filled)`` pairs, largest area first: ``ring`` an N×2 float array of ``(x, y)`` vertices
        (closed, first == last); ``filled`` True for the outer boundary of a component, False for a hole
        to clear. Filling them in order (PIL, vertices rounded to integers) gives back ``mask`` exactly;
        largest-first puts a component lying inside another's hole after that hole.

    Why level 0.75: PIL fills a polygon *including* its outline, so a ring must pass through the centres
    of the mask's boundary pixels, not between pixels (the 0.5 iso-line, which would grow every region by
    a pixel on one side). The 0.75 iso-line of the mask lies a quarter pixel outside boundary-pixel
    centres and rounds onto them; holes are traced the same way on the complement.
    """
    mask = np.asarray(mask, dtype=bool)
    shift = np.array([origin[0] - 1.0, origin[1] - 1.0])
    rings: list[tuple[np.ndarray, bool]] = []
    has_holes = False
    for filled, padded in ((True, np.pad(mask, 1, constant_values=False)),
                           (False, np.pad(~mask, 1, constant_values=True))):
        if not filled and not has_holes:
            break  # tracing the complement is only needed for holes
        generator = contourpy.contour_generator(z=padded.astype(np.float64), fill_type=contourpy.FillType.OuterOffset)
        points, offsets = generator.filled(0.75, 2.0)
        for pts, offs in zip(points, offsets):
            has_holes |= len(offs) > 2
            outer = pts[offs[0]:offs[1]]
            # The complement's component that touches the padding frame is the outside, not a hole.
            if not filled and outer[:, 0].min() < 0.5:
                continue
            rings.append((outer + shift, filled))
    rings.sort(key=lambda item: -ring_area(item[0]))
    return rings


def ring_area(ring: np.ndarray) -> float:
    """Unsigned area (px²) of a closed or open polygon ring (N×2), by the shoelace formula."""
    ring = np.asarray(ring, dtype=np.float64)
    if len(ring) < 3:
        return 0.0
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _simplify_chain(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas–Peucker on an open chain; returns a bool keep-mask (endpoints kept)."""
    keep = np.zeros(len(points), dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        first, last = stack.pop()
        if last - first < 2:
            continue
        start, end = points[first], points[last]
        inner = points[first + 1:last]
        direction = end - start
        length = np.hypot(*direction)
        if length == 0.0:
            dist = np.hypot(*(inner - start).T)
        else:
            dist = np.abs(direction[0] * (inner[:, 1] - start[1]) - direction[1] * (inner[:, 0] - start[0])) / length
        index = int(np.argmax(dist))
        if dist[index] > tolerance:
            split = first + 1 + index
            keep[split] = True
            stack.append((first, split))
            stack.append((split, last))
    return keep


def simplify_ring(ring: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas–Peucker simplification of a closed polygon ring.

    Args:
        ring: N×2 ``(x, y)`` vertices; a repeated closing vertex is ignored.
        tolerance: maximum distance (px) of a dropped vertex from the simplified outline; 0 keeps every
            vertex that is not exactly collinear.
    Returns:
        M×2 vertices (M ≤ N, not closed). The ring is split at its vertex farthest from the first one so
        that both halves are open chains, as ``cv2.approxPolyDP`` does for closed curves.
    """
    ring = np.asarray(ring, dtype=np.float64)
    if len(ring) > 1 and np.array_equal(ring[0], ring[-1]):
        ring = ring[:-1]
    if len(ring) <= 3:
        return ring.copy()
    far = int(np.argmax(np.hypot(*(ring - ring[0]).T)))
    first_half = ring[: far + 1]
    second_half = np.vstack([ring[far:], ring[:1]])
    keep_a = _simplify_chain(first_half, tolerance)
    keep_b = _simplify_chain(second_half, tolerance)
    return np.vstack([first_half[keep_a], second_half[keep_b][1:-1]])
