"""Coarse-label simulator (fine polygons → Cityscapes-style coarse polygons) and coarse-vs-fine statistics.

How real Cityscapes coarse labels look: each object the annotator bothers with gets one rough polygon of a
few vertices drawn inside it, keeping away from its boundary, so a band along every class boundary is left
unlabelled ('unlabeled', id 0 → train id 255); small or far objects are often not labelled at all; and now and
then a polygon overshoots into a neighbour, putting the wrong class on those pixels. The simulator does the
same to each object of a fine annotation, in the fine drawing order (later over earlier):

1. the object's *visible* region ``V`` (its pixels in the fine rasterisation) is skipped with probability
   ``small_skip_prob`` if it covers less than ``SMALL_AREA_SHARE`` of the image, ``skip_prob`` if less than
   ``MEDIUM_AREA_SHARE``, never if larger (annotators skip small and far things, not a building);
2. ``V`` is eroded: pixels closer than ``max(min_margin_px, erosion_frac·thickness)·U(0.5, 1.5)`` px to its
   edge are dropped, ``thickness`` being the radius of the largest disc inside ``V`` — a margin in
   proportion to the object, as an annotator keeps further from the edge of a big region (the image border
   is not an edge);
3. with probability ``overshoot_prob`` one side of the object overshoots: ``V`` grown by
   ``dilation_px·U(0.5, 1.5)`` px (at most ``SPILL_PER_THICKNESS`` × its inradius, so a thin pole is not
   painted ten times its width), on the half-plane beyond a random line through its centroid, is added —
   those pixels get this object's class over whatever the neighbour is (mislabelled pixels);
4. each connected component is traced (:func:`armlib.data.geometry.trace_regions`), simplified with
   Douglas–Peucker at ``tolerance_px`` and dropped below ``min_area_px``; holes (where later objects lie)
   are written as 'unlabeled' polygons right after their object: Cityscapes polygons have no holes, the
   format's answer is the drawing order, and without it an unannotated car would take its surroundings' class.

Published coarse simulators erode each connected component by about a third of its pixels, trace ~50
vertices and drop tiny components. Eroding a convex blob by a fraction ``f`` of its inradius keeps
``(1 − f)²`` of it, so a third is ``f ≈ 0.18``; at the default ``erosion_frac = 0.165`` (× U(0.5, 1.5)) a
large region loses about that, and small objects lose less because of the minimum area and skips instead.
We end with ~8 vertices per polygon rather than ~50: Cityscapes' own coarse polygons are that sparse.

``noise`` in [0, 1] sets every parameter through :data:`NOISE_ANCHORS` (piecewise linear through
``noise`` = 0, 0.5, 1; pixel quantities × ``s = sqrt(H·W / (128·256))`` so other sizes keep the statistics).

Measured statistics. :func:`coarse_label_stats` with ``mislabelled=True`` over the train split of trees written
by ``generate(out, seed=0, n_train=N, n_val=0, noise=…, size=…)`` and read back from their files (the existing
keys equal the tree's ``stats.json``): N = 250 images at 128×256, and N = 200 at 64×128, the quick scale
(configs/quick.yaml: ``synth_size [64, 128]``, ``synth_n_train 200``, ``synth_seed 0``, ``synth_noise 0.5``;
train images draw from their own random streams, so its 50 val images do not change them):

=======  =========  ========  =========  ================  ===================================================
size     noise      coverage  agreement  boundary_band_px  character
=======  =========  ========  =========  ================  ===================================================
128×256  0          0.994     1.000      0.8               fine-like: every object traced, 0.5 px DP tolerance
128×256  0.5 (def)  0.836     0.883      5.8               DESIGN.md probe's operating point (0.82 / 0.89)
128×256  1          0.625     0.734      14.6              very coarse: wide margins, 70 % of objects overshoot
64×128   0          0.996     1.000      0.95              quick scale
64×128   0.5 (def)  0.844     0.881      2.9               quick scale: the default reproduction's labels
64×128   1          0.635     0.729      7.2               quick scale
=======  =========  ========  =========  ================  ===================================================

Coverage and agreement hold across sizes to about 0.01; the band, in pixels, halves with the side (the same
share of each object). Where the coarse labels are wrong, same images (definitions:
:class:`CoarseStatsAccumulator`; share of coarse-labelled pixels; distance = Euclidean from the pixel centre to
the nearest fine-boundary pixel centre + 0.5 px, so it takes the values √k + 0.5):

=======  =========  =================  ========  ========  ========  =========
size     noise      mislabelled_share  ≤ 1 px    ≤ 2 px    ≤ 4 px    median px
=======  =========  =================  ========  ========  ========  =========
128×256  0          0.0001 (932 px)    1.00      1.00      1.00      0.5
128×256  0.5 (def)  0.117              0.265     0.497     0.733     2.5
128×256  1          0.266              0.199     0.400     0.627     2.7
64×128   0          0.000001 (2 px)    1.00      1.00      1.00      0.5
64×128   0.5 (def)  0.119              0.442     0.759     0.958     1.5
64×128   1          0.271              0.355     0.653     0.892     1.5
=======  =========  =================  ========  ========  ========  =========

Generated fine labels cover every pixel, so here ``mislabelled_share`` is exactly ``1 − agreement``. The wrong
pixels are overshoots (and, at noise 0, polygon simplification), which start at a fine boundary: they lie in a
band along the boundaries, at the quick scale's default 96 % of them within 4 px and half within 1.5 px; at
128×256 the band is about twice as wide in pixels, as the spill scales with ``s``.

Published figures for real Cityscapes gtCoarse: none found for its coverage, its agreement with gtFine, the share
of mislabelled pixels or where they lie. Searched: Cordts et al., "The Cityscapes Dataset for Semantic Urban
Scene Understanding", CVPR 2016 (the search reached only its abstract and the opening of its introduction, not
its dataset-statistics section, so a figure there is not ruled out); Das, Xian, He, Akata and Schiele, "Urban Scene
Semantic Segmentation with Low-Cost Coarse Annotation", WACV 2023 (arXiv 2212.07911); issue threads and code of
segmentation repositories. What Das et al. do state (Sec. 1, Introduction, citing Cordts et al.) is the protocol,
not a statistic: coarse polygons ignore the finer details around class boundaries, the annotator labels as many
pixels as possible within 7 min per image and each polygon must hold a single class, against 90 min per image for
fine annotation. The simulator's unlabelled boundary band follows that protocol; its coverage and agreement are
set to the DESIGN.md probe, not to a measured real figure. ``cityscapes_coarse_stats(root, mislabelled=True)``
gives the real numbers from a local copy of the dataset.

Every object draws its five uniforms whatever ``noise`` is, so one seed gives coupled annotations across
noise levels: coverage falls and disagreement rises with ``noise`` (tested). Erosion grows faster than
overshoot above 0.5 so that coverage keeps falling although overshoots add labelled pixels.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from armlib.data.geometry import class_boundaries, distance_transform, ring_area, simplify_ring, trace_regions
from armlib.data.labels import official_label_id

__all__ = ["CoarseParams", "DEFAULT_NOISE", "simulate_coarse", "coarse_label_stats", "CoarseStatsAccumulator",
           "cityscapes_coarse_stats"]

DEFAULT_NOISE = 0.5
_REFERENCE_PIXELS = 128 * 256  # pixel parameters below are for 128×256 images; other sizes scale them

# Parameter values at noise = 0, 0.5, 1 (linear in between); calibrated on generated scenes (see above).
NOISE_ANCHOR_POINTS = (0.0, 0.5, 1.0)
NOISE_ANCHORS = {
    "erosion_frac": (0.0, 0.165, 0.6),    # margin as a fraction of the object's inradius
    "min_margin_px": (0.0, 1.0, 3.0),     # margin floor, px
    "overshoot_prob": (0.0, 0.5, 0.7),    # share of objects with one side spilling into the neighbours
    "dilation_px": (1.0, 7.75, 10.0),     # how far the spill reaches, px
    "tolerance_px": (0.5, 2.0, 4.0),      # Douglas–Peucker tolerance, px
    "skip_prob": (0.0, 0.1, 0.3),         # a medium object (< MEDIUM_AREA_SHARE of the image) left unlabelled
    "small_skip_prob": (0.0, 0.3, 0.6),   # a small one (< SMALL_AREA_SHARE); larger ones are never skipped
    "min_area_px": (1.0, 20.0, 40.0),     # traced components smaller than this (px²) are dropped
}
SMALL_AREA_SHARE = 0.002
MEDIUM_AREA_SHARE = 0.02
SPILL_PER_THICKNESS = 3.0  # an overshoot reaches at most this many times the object's inradius
MISLABELLED_WITHIN_PX = (1, 2, 4)  # radii (px) of the "mislabelled pixels near a fine boundary" shares


@dataclass(frozen=True)
class CoarseParams:
    """Resolved parameters of the coarse simulator (see the module docstring for their meaning)."""

    erosion_frac: float
    min_margin_px: float
    overshoot_prob: float
    dilation_px: float
    tolerance_px: float
    skip_prob: float
    small_skip_prob: float
    small_area_px: float
    medium_area_px: float
    min_area_px: float

    @classmethod
    def from_noise(cls, noise: float, size: tuple[int, int]) -> "CoarseParams":
        """Parameters for ``noise`` in [0, 1] at image ``size = (H, W)``: piecewise-linear in ``noise``
        through the anchors of :data:`NOISE_ANCHORS`, pixel quantities scaled to the image size."""
        if not 0.0 <= float(noise) <= 1.0:
            raise ValueError(f"noise must lie in [0, 1], got {noise}")
        height, width = size
        s = math.sqrt(height * width / _REFERENCE_PIXELS)
        value = {name: float(np.interp(float(noise), NOISE_ANCHOR_POINTS, anchors))
                 for name, anchors in NOISE_ANCHORS.items()}
        return cls(erosion_frac=value["erosion_frac"], min_margin_px=value["min_margin_px"] * s,
                   overshoot_prob=value["overshoot_prob"], dilation_px=value["dilation_px"] * s,
                   tolerance_px=value["tolerance_px"] * s, skip_prob=value["skip_prob"],
                   small_skip_prob=value["small_skip_prob"], small_area_px=SMALL_AREA_SHARE * height * width,
                   medium_area_px=MEDIUM_AREA_SHARE * height * width,
                   min_area_px=value["min_area_px"] * s * s)

    def as_dict(self) -> dict:
        return {k: round(v, 6) for k, v in asdict(self).items()}


def _object_index_map(objects: Sequence[tuple[str, Sequence]], size: tuple[int, int]) -> np.ndarray:
    """H×W int32: 1 + index of the object visible at each pixel (0 = none), same rasteriser as the labels."""
    height, width = size
    canvas = Image.new("I", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for index, (label, polygon) in enumerate(objects):
        # Mirror createLabelImage: labels with a negative id (license plate) are not drawn.
        if polygon and official_label_id(label) >= 0:
            draw.polygon([tuple(p) for p in polygon], fill=index + 1)
    return np.asarray(canvas, dtype=np.int32)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def simulate_coarse(objects: Sequence[tuple[str, Sequence]], size: tuple[int, int], rng: np.random.Generator,
                    noise: float = DEFAULT_NOISE, params: CoarseParams | None = None) -> list[dict]:
    """Coarse polygons for one image annotated finely by ``objects``.

    Args:
        objects: fine annotation as ``(label, polygon)`` in drawing order; polygon = ``[(x, y), ...]``.
        size: ``(H, W)``.
        rng: randomness (5 uniforms per object, drawn whatever ``noise`` is).
        noise: 0 (fine-like) .. 1 (very coarse); ignored when ``params`` is given.
    Returns:
        the ``objects`` list of a Cityscapes ``*_gtCoarse_polygons.json`` (``{"label", "polygon"}`` dicts,
        integer vertices, drawing order).
    """
    height, width = size
    params = params or CoarseParams.from_noise(noise, size)
    index_map = _object_index_map(objects, size)
    # Distance from each pixel centre to the edge of its own visible region: one transform for all objects
    # (boundary pixels touch the edge, 0.5 px from it; the image border is not an edge; inf if no edge).
    edge_distance = distance_transform(class_boundaries(index_map)) + 0.5
    out: list[dict] = []
    for index, (label, _) in enumerate(objects):
        u_skip, u_overshoot, u_margin, u_spill, u_angle = rng.random(5)
        visible = index_map == index + 1
        area = int(visible.sum())
        if area == 0:
            continue
        # Annotators skip small and far things, never a large region.
        if area < params.small_area_px:
            skip = params.small_skip_prob
        elif area < params.medium_area_px:
            skip = params.skip_prob
        else:
            skip = 0.0
        if u_skip < skip:
            continue
        inside = edge_distance[visible]
        inside = inside[np.isfinite(inside)]
        thickness = float(inside.max()) if inside.size else 0.0  # ≈ radius of the largest inscribed disc
        overshoot = u_overshoot < params.overshoot_prob
        # A spill is a slip of the annotator's hand at the object's scale: a 2-px pole does not get 10 px.
        radius = min(params.dilation_px * (0.5 + u_spill), max(1.0, SPILL_PER_THICKNESS * thickness))
        y0, y1, x0, x1 = _bbox(visible)
        pad = int(math.ceil(radius)) + 1 if overshoot else 0
        y0, y1, x0, x1 = max(0, y0 - pad), min(height, y1 + pad), max(0, x0 - pad), min(width, x1 + pad)
        crop = visible[y0:y1, x0:x1]
        depth = edge_distance[y0:y1, x0:x1]
        margin = max(params.min_margin_px, params.erosion_frac * thickness) * (0.5 + u_margin)
        region = crop & (depth >= margin)
        if overshoot:
            # One side of the polygon overshoots: V grown by `radius`, on the half of the plane beyond a
            # random line through V's centroid; the other side stays eroded.
            rows, cols = np.nonzero(crop)
            angle = 2.0 * math.pi * u_angle
            yy, xx = np.mgrid[0:crop.shape[0], 0:crop.shape[1]]
            side = (xx - cols.mean()) * math.cos(angle) + (yy - rows.mean()) * math.sin(angle) > 0
            # Distances are between pixel centres; a pixel's distance to V's edge is half a pixel less.
            grown = distance_transform(crop, max_distance=radius + 0.5) - 0.5 <= radius
            region |= grown & side
        if not region.any():
            continue
        rings = []
        for ring, filled in trace_regions(region, origin=(x0, y0)):
            simple = np.round(simplify_ring(ring, params.tolerance_px)).astype(int)
            if len(simple) < 3 or ring_area(simple) < params.min_area_px:
                continue
            rings.append((simple, filled))
        # A hole only means something after an outer ring of the same object.
        if not any(filled for _, filled in rings):
            continue
        for simple, filled in rings:
            out.append({"label": label if filled else "unlabeled", "polygon": simple.tolist()})
    return out


class CoarseStatsAccumulator:
    """Running coarse-vs-fine statistics over many images (pixel counts summed, not per-image means).

    ``update(fine, coarse)`` with H×W train-id arrays (numpy or torch), then ``compute()`` → dict:

    * ``coverage``: share of all pixels labelled in the coarse mask.
    * ``agreement``: among pixels labelled in both, share where coarse == fine.
    * ``boundary_band_px``: mean Euclidean distance (px) from each pixel that fine labels but coarse leaves
      unlabelled to the nearest fine class boundary, counting a pixel that touches the boundary as 0.5 px
      away (distance to the nearest boundary pixel + 0.5; boundary pixels are those with a 4-neighbour of
      another fine value, ignore included). A coarse label eroded by a uniform margin ``m`` on both sides of
      every boundary gives ``m/2``; skipped objects raise it. Pixels of an image without any fine
      boundary are left out.
    * ``pixels``, ``images``: what was counted.

    With ``mislabelled=True``, also where the coarse label is wrong. A pixel is *mislabelled* when coarse
    labels it, fine labels it (not ``ignore_index``) and the two differ:

    * ``mislabelled_share``: mislabelled pixels over all pixels the coarse mask labels (the pixels a loss on
      coarse labels trains on, fine-ignore ones included), in [0, 1]. Agreement's denominator is the
      pixels labelled in *both*, so ``mislabelled_share = (1 − agreement) × both / labelled``: it equals
      ``1 − agreement`` exactly when fine labels every pixel coarse labels (the synthetic scenes), and is
      smaller where coarse labels fine-ignore pixels (whose correctness is unknown; real gtFine has them).
    * ``mislabelled_pixels``: their count.
    * ``mislabelled_within_{1,2,4}px`` (:data:`MISLABELLED_WITHIN_PX`): share of the mislabelled pixels
      at most 1, 2, 4 px from the nearest fine class boundary, distance as in ``boundary_band_px``
      (Euclidean between pixel centres to the nearest boundary pixel, + 0.5: a pixel touching the boundary
      is 0.5 px away, so "within k px" ≈ the first k pixel rings around the boundary).
    * ``mislabelled_median_px``: their median distance, same metric (mean of the two middle values for an
      even count, as :func:`numpy.median`).

    The location keys leave out mislabelled pixels of an image without any fine boundary (no distance);
    ``mislabelled_share`` counts them. Every share is NaN when its denominator is 0. Off by default so that
    the default keys, and ``stats.json`` of generated trees, stay as they were.
    """

    def __init__(self, ignore_index: int = 255, mislabelled: bool = False):
        self.ignore_index = ignore_index
        self.mislabelled = bool(mislabelled)
        self.pixels = self.labelled = self.both = self.agree = self.images = 0
        self.band_sum = 0.0
        self.band_count = 0
        # Squared distances (px², integers: pixel centres lie on the integer grid) of mislabelled pixels to the
        # nearest fine boundary → count; exact, small, and summed across images and workers.
        self.wrong_d2: Counter[int] = Counter()

    def update(self, fine, coarse) -> None:
        fine, coarse = np.asarray(fine), np.asarray(coarse)
        if fine.shape != coarse.shape or fine.ndim != 2:
            raise ValueError(f"fine and coarse must be H×W arrays of the same shape, got {fine.shape} and {coarse.shape}")
        ignore = self.ignore_index
        fine_ok, coarse_ok = fine != ignore, coarse != ignore
        both = fine_ok & coarse_ok
        self.pixels += fine.size
        self.labelled += int(coarse_ok.sum())
        self.both += int(both.sum())
        self.agree += int((both & (fine == coarse)).sum())
        self.images += 1
        band = fine_ok & ~coarse_ok
        wrong = both & (fine != coarse) if self.mislabelled else np.zeros_like(band)
        if band.any() or wrong.any():
            # One transform serves both sets: its early stop waits for every watched pixel, and the distance of
            # a watched pixel is exact whatever else is watched, so the band values do not depend on `wrong`.
            dist = distance_transform(class_boundaries(fine), where=band | wrong)
            if band.any():
                band_dist = dist[band]
                band_dist = band_dist[np.isfinite(band_dist)]
                self.band_sum += float((band_dist + 0.5).sum())
                self.band_count += int(band_dist.size)
            if wrong.any():
                wrong_dist = dist[wrong]
                wrong_dist = wrong_dist[np.isfinite(wrong_dist)]
                squared, counts = np.unique(np.rint(wrong_dist * wrong_dist).astype(np.int64), return_counts=True)
                self.wrong_d2.update(dict(zip(squared.tolist(), counts.tolist())))

    def merge(self, other: "CoarseStatsAccumulator") -> "CoarseStatsAccumulator":
        """Add another accumulator's counts (e.g. from a worker process); returns self."""
        if other.mislabelled != self.mislabelled:
            raise ValueError(f"cannot merge an accumulator with mislabelled={other.mislabelled} into one with "
                             f"mislabelled={self.mislabelled}: the mislabelled_* keys would count part of the images")
        for name in ("pixels", "labelled", "both", "agree", "images", "band_sum", "band_count"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.wrong_d2.update(other.wrong_d2)
        return self

    def compute(self) -> dict:
        stats = {
            "coverage": self.labelled / self.pixels if self.pixels else float("nan"),
            "agreement": self.agree / self.both if self.both else float("nan"),
            "boundary_band_px": self.band_sum / self.band_count if self.band_count else float("nan"),
            "pixels": self.pixels,
            "images": self.images,
        }
        if self.mislabelled:
            stats.update(self._mislabelled_stats())
        return stats

    def _mislabelled_stats(self) -> dict:
        wrong = self.both - self.agree  # labelled in both and different: no counter of its own
        squared = np.array(sorted(self.wrong_d2), dtype=np.int64)
        counts = np.array([self.wrong_d2[k] for k in squared], dtype=np.int64)
        distance = np.sqrt(squared.astype(np.float64)) + 0.5
        located = int(counts.sum())
        stats = {"mislabelled_share": wrong / self.labelled if self.labelled else float("nan"),
                 "mislabelled_pixels": wrong}
        for radius in MISLABELLED_WITHIN_PX:
            near = int(counts[distance <= radius].sum())
            stats[f"mislabelled_within_{radius}px"] = near / located if located else float("nan")
        if located:
            # Order statistics (0-based ranks) from the cumulative counts: index of the first value whose
            # cumulative count exceeds the rank.
            cumulative = np.cumsum(counts)
            low, high = (distance[np.searchsorted(cumulative, rank, side="right")]
                         for rank in ((located - 1) // 2, located // 2))
            stats["mislabelled_median_px"] = float((low + high) / 2)
        else:
            stats["mislabelled_median_px"] = float("nan")
        return stats


def coarse_label_stats(fine, coarse=None, ignore_index: int = 255, mislabelled: bool = False) -> dict:
    """Coverage, agreement and boundary band of coarse labels against fine ones.

    Args:
        fine, coarse: H×W train-id arrays (numpy or torch); or ``fine`` an iterable of ``(fine, coarse)``
            pairs and ``coarse`` None, for statistics pooled over many images.
        ignore_index: the unlabelled value.
        mislabelled: also report the share of mislabelled pixels and their distance to fine boundaries.
    Returns:
        dict with ``coverage``, ``agreement``, ``boundary_band_px``, ``pixels``, ``images``, and with
        ``mislabelled`` the ``mislabelled_*`` keys (definitions: :class:`CoarseStatsAccumulator`).
    Raises:
        ValueError: ``fine`` and ``coarse`` not H×W arrays of the same shape.
    """
    acc = CoarseStatsAccumulator(ignore_index, mislabelled=mislabelled)
    if coarse is None:
        for pair_fine, pair_coarse in fine:
            acc.update(pair_fine, pair_coarse)
    else:
        acc.update(fine, coarse)
    return acc.compute()


def cityscapes_coarse_stats(root: str | Path, limit: int | None = None, progress: bool = False,
                            mislabelled: bool = False) -> dict:
    """:func:`coarse_label_stats` of gtCoarse against gtFine over a Cityscapes ``train`` split.

    Works on the real dataset and on generated scenes alike (both in the official layout), so the report
    can set the synthetic noise level next to the real numbers. ``limit`` reads only the first N images;
    ``mislabelled`` adds the ``mislabelled_*`` keys.
    """
    from armlib.data.cityscapes import Cityscapes  # torch-importing; kept out of the generator's import path

    dataset = Cityscapes(root, split="train", annotation="coarse", with_fine=True)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    indices: Iterable[int] = range(count)
    if progress:
        from tqdm import tqdm
        indices = tqdm(indices, desc="coarse stats", unit="img")
    acc = CoarseStatsAccumulator(mislabelled=mislabelled)
    for index in indices:
        _, coarse, fine = dataset[index]
        acc.update(fine.numpy(), coarse.numpy())
    return acc.compute()
