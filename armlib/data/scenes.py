"""Synthetic street scenes: polygons with Cityscapes labels, and their rendering to an RGB image.

A scene is a list of :class:`SceneObject` in drawing order (later over earlier, the Cityscapes polygon
convention), so the image and the official label rasterisation of the same polygons agree pixel for pixel.

Geometry is a pinhole street view. Ground lines run to one vanishing point on the horizon; a point on the
ground at inverse depth ``t`` (``t = 1`` at the bottom row, 0 at the horizon, > 1 below the frame) lies
``t·(H − horizon)`` pixels below the horizon, and an object of height ``h`` (in camera heights) standing
there is ``h·t·(H − horizon)`` pixels tall: far objects are small and high up, near ones big and low.

Ten classes appear: sky, building, vegetation, terrain, road, sidewalk, pole, traffic sign, car, person.
Appearance is made so that colour alone does not decide the class: greys are shared by sky (overcast),
building, road, sidewalk, pole and car; greens by vegetation, terrain and some cars; reds by signs, cars,
clothes and brick; every object carries pixel noise of its own strength, building facades have window
grids, roads lane markings, sidewalks paving joints; lighting is a global brightness, a gradient across
the frame, a low-frequency illumination field and soft cast shadows that cross class boundaries.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["SceneObject", "sample_scene", "render_scene", "SCENE_LABELS"]

SCENE_LABELS = ("sky", "building", "vegetation", "terrain", "road", "sidewalk", "pole", "traffic sign",
                "car", "person")

Point = tuple[float, float]


@dataclass
class SceneObject:
    """One labelled polygon of a scene.

    Attributes:
        label: Cityscapes label name (official table), e.g. ``"car"``.
        polygon: ``(x, y)`` integer vertices, filled by PIL including the outline.
        colour: base RGB.
        grain: standard deviation (0..255 scale) of the pixel noise inside the object.
        details: ``(polygon, rgb)`` drawn over the base colour and clipped to ``polygon`` (windows,
            markings, clothes): texture that never leaks outside the labelled region.
    """

    label: str
    polygon: list[tuple[int, int]]
    colour: tuple[int, int, int]
    grain: float = 6.0
    details: list[tuple[list[tuple[int, int]], tuple[int, int, int]]] = field(default_factory=list)


def _ipoly(points) -> list[tuple[int, int]]:
    # Cityscapes JSON stores integer vertices; rounding here makes the JSON and the drawn image identical.
    return [(int(round(x)), int(round(y))) for x, y in points]


def _jitter(rng: np.random.Generator, rgb, amount: float) -> tuple[int, int, int]:
    noise = rng.normal(0.0, amount, 3)
    return tuple(min(255, max(0, int(c + n))) for c, n in zip(rgb, noise))


class _Street:
    """Perspective helpers for one sampled camera: horizon row, vanishing point, ground lines."""

    def __init__(self, rng: np.random.Generator, height: int, width: int):
        self.H, self.W = height, width
        self.horizon = height * rng.uniform(0.36, 0.48)
        self.vp_x = width * rng.uniform(0.38, 0.62)
        self.span = (height - 1) - self.horizon  # pixels from horizon to the bottom row

    def y(self, t: float) -> float:
        return self.horizon + t * self.span

    def x(self, b: float, t: float) -> float:
        """x of the ground line with bottom-row intercept ``b`` at inverse depth ``t``."""
        return self.vp_x + (b - self.vp_x) * t

    def px(self, size: float, t: float) -> float:
        """Pixel length of ``size`` camera heights at inverse depth ``t``."""
        return size * t * self.span

    def strip(self, b0: float, b1: float, t_near: float, t_far: float) -> list[Point]:
        """Ground quad between two ground lines from ``t_far`` to ``t_near``."""
        return [(self.x(b0, t_near), self.y(t_near)), (self.x(b1, t_near), self.y(t_near)),
                (self.x(b1, t_far), self.y(t_far)), (self.x(b0, t_far), self.y(t_far))]


def _facade_point(street: _Street, b: float, z: float, h: float) -> Point:
    t = 1.0 / z
    return street.x(b, t), street.y(t) - street.px(h, t)


def _building(rng, street: _Street, b: float, z_near: float, z_far: float, height: float) -> SceneObject:
    """A side facade on the ground line ``b`` between world depths ``z_near`` < ``z_far`` (camera heights)."""
    polygon = [_facade_point(street, b, z_near, 0.0), _facade_point(street, b, z_far, 0.0),
               _facade_point(street, b, z_far, height), _facade_point(street, b, z_near, height)]
    palette = [(120, 120, 120), (165, 160, 150), (90, 90, 95), (150, 95, 75), (190, 180, 160), (110, 120, 135)]
    colour = _jitter(rng, palette[rng.integers(len(palette))], 12)
    glass = _jitter(rng, [(40, 50, 60), (80, 100, 120), (30, 30, 35), (150, 160, 170)][rng.integers(4)], 10)
    details = []
    floor, spacing = rng.uniform(0.8, 1.2), rng.uniform(0.7, 1.4)
    win_w, win_h = spacing * rng.uniform(0.35, 0.6), floor * rng.uniform(0.4, 0.6)
    z = z_near + spacing * 0.3
    # Windows in world coordinates, so their spacing shrinks with depth like the facade.
    while z + win_w < z_far:
        level = floor * 0.3
        while level + win_h < height - 0.2:
            quad = [_facade_point(street, b, z, level), _facade_point(street, b, z + win_w, level),
                    _facade_point(street, b, z + win_w, level + win_h), _facade_point(street, b, z, level + win_h)]
            if abs(quad[1][0] - quad[0][0]) >= 1.0:  # sub-pixel windows would only add aliasing
                details.append((_ipoly(quad), _jitter(rng, glass, 8)))
            level += floor
        z += spacing
    return SceneObject("building", _ipoly(polygon), colour, grain=rng.uniform(4, 10), details=details)


def _blob(rng, cx: float, cy: float, rx: float, ry: float, n: int = 14, wobble: float = 0.25) -> list[Point]:
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = 1.0 + rng.uniform(-wobble, wobble, n)
    return [(cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)) for a, r in zip(angles, radii)]


def _green(rng) -> tuple[int, int, int]:
    base = [(70, 110, 40), (40, 80, 35), (100, 130, 60), (120, 110, 50), (60, 95, 70)][rng.integers(5)]
    return _jitter(rng, base, 10)


def _tree(rng, street: _Street, b: float, t: float) -> list[SceneObject]:
    x0, y0 = street.x(b, t), street.y(t)
    trunk_h, trunk_w = street.px(rng.uniform(0.9, 1.6), t), max(1.0, street.px(0.08, t))
    crown_r = street.px(rng.uniform(0.5, 1.1), t)
    trunk = [(x0 - trunk_w / 2, y0), (x0 + trunk_w / 2, y0), (x0 + trunk_w / 2, y0 - trunk_h), (x0 - trunk_w / 2, y0 - trunk_h)]
    crown = _blob(rng, x0, y0 - trunk_h - crown_r * 0.6, crown_r, crown_r * rng.uniform(0.8, 1.2), n=16)
    leaf = _green(rng)
    speckles = [(_ipoly(_blob(rng, *(np.array(p) + rng.normal(0, crown_r * 0.3, 2)), crown_r * 0.25,
                                    crown_r * 0.2, n=6)), _jitter(rng, leaf, 25)) for p in crown[::3]]
    return [SceneObject("vegetation", _ipoly(trunk), _jitter(rng, (80, 60, 45), 10), grain=8),
            SceneObject("vegetation", _ipoly(crown), leaf, grain=rng.uniform(14, 24), details=speckles)]


def _pole(rng, street: _Street, b: float, t: float) -> list[SceneObject]:
    x0, y0 = street.x(b, t), street.y(t)
    height, width = street.px(rng.uniform(2.0, 3.2), t), max(1.0, street.px(0.06, t))
    pole = [(x0 - width / 2, y0), (x0 + width / 2, y0), (x0 + width / 2, y0 - height), (x0 - width / 2, y0 - height)]
    metal = _jitter(rng, [(110, 110, 110), (70, 75, 70), (150, 150, 145), (60, 80, 60)][rng.integers(4)], 10)
    objects = [SceneObject("pole", _ipoly(pole), metal, grain=4)]
    if rng.random() < 0.6:
        size = street.px(rng.uniform(0.25, 0.4), t)
        cx, cy = x0, y0 - height + size * rng.uniform(0.6, 1.5)
        shape = rng.integers(4)
        if shape == 0:  # round sign
            outline = _blob(rng, cx, cy, size / 2, size / 2, n=12, wobble=0.0)
        elif shape == 1:  # triangle
            outline = [(cx - size / 2, cy - size * 0.4), (cx + size / 2, cy - size * 0.4), (cx, cy + size * 0.5)]
        elif shape == 2:  # rectangle
            outline = [(cx - size / 2, cy - size * 0.35), (cx + size / 2, cy - size * 0.35),
                       (cx + size / 2, cy + size * 0.35), (cx - size / 2, cy + size * 0.35)]
        else:  # octagon
            outline = [(cx + size / 2 * np.cos(a), cy + size / 2 * np.sin(a)) for a in np.arange(8) * np.pi / 4 + np.pi / 8]
        face = _jitter(rng, [(200, 40, 40), (40, 70, 170), (230, 200, 40), (235, 235, 235)][rng.integers(4)], 12)
        inner = [(cx + (px - cx) * 0.6, cy + (py - cy) * 0.6) for px, py in outline]
        mark = _jitter(rng, (240, 240, 240) if sum(face) < 600 else (30, 30, 30), 10)
        objects.append(SceneObject("traffic sign", _ipoly(outline), face, grain=4, details=[(_ipoly(inner), mark)]))
    return objects


def _car(rng, street: _Street, b: float, t: float) -> list[SceneObject]:
    x0, y0 = street.x(b, t), street.y(t)
    w, h = street.px(rng.uniform(1.2, 1.5), t), street.px(rng.uniform(0.95, 1.25), t)
    body = 0.5 * h
    cab = rng.uniform(0.7, 0.85)
    outline = [(x0 - w / 2, y0), (x0 + w / 2, y0), (x0 + w / 2, y0 - body), (x0 + w / 2 * cab, y0 - body * 1.1),
               (x0 + w / 2 * cab * 0.85, y0 - h), (x0 - w / 2 * cab * 0.85, y0 - h),
               (x0 - w / 2 * cab, y0 - body * 1.1), (x0 - w / 2, y0 - body)]
    paint = _jitter(rng, [(30, 30, 35), (200, 200, 205), (120, 120, 125), (150, 20, 25), (30, 50, 120),
                          (70, 100, 60), (90, 80, 70)][rng.integers(7)], 12)
    window = [(x0 - w / 2 * cab * 0.85, y0 - body * 1.15), (x0 + w / 2 * cab * 0.85, y0 - body * 1.15),
              (x0 + w / 2 * cab * 0.75, y0 - h * 0.93), (x0 - w / 2 * cab * 0.75, y0 - h * 0.93)]
    wheel_h, wheel_w = h * 0.18, w * 0.18
    details = [(_ipoly(window), _jitter(rng, (45, 55, 65), 10))]
    for side in (-1, 1):
        wx = x0 + side * (w / 2 - wheel_w / 2)
        details.append((_ipoly([(wx - wheel_w / 2, y0), (wx + wheel_w / 2, y0), (wx + wheel_w / 2, y0 - wheel_h),
                                (wx - wheel_w / 2, y0 - wheel_h)]), (20, 20, 20)))
        lx = x0 + side * w * 0.38
        details.append((_ipoly([(lx - w * 0.06, y0 - body * 0.75), (lx + w * 0.06, y0 - body * 0.75),
                                (lx + w * 0.06, y0 - body * 0.6), (lx - w * 0.06, y0 - body * 0.6)]),
                        _jitter(rng, (200, 40, 30), 10)))
    return [SceneObject("car", _ipoly(outline), paint, grain=rng.uniform(3, 7), details=details)]


# A standing person, x in units of width (centred), y in units of height above the feet.
_PERSON = np.array([(-0.35, 0.0), (-0.12, 0.0), (0.0, 0.42), (0.12, 0.0), (0.35, 0.0), (0.27, 0.5), (0.45, 0.45),
                    (0.38, 0.8), (0.12, 0.84), (0.16, 0.93), (0.1, 1.0), (-0.1, 1.0), (-0.16, 0.93), (-0.12, 0.84),
                    (-0.38, 0.8), (-0.45, 0.45), (-0.27, 0.5)])


def _person(rng, street: _Street, b: float, t: float) -> list[SceneObject]:
    x0, y0 = street.x(b, t), street.y(t)
    h = street.px(rng.uniform(1.15, 1.45), t)
    w = h * rng.uniform(0.3, 0.4)
    shape = _PERSON + rng.normal(0, 0.025, _PERSON.shape)
    outline = [(x0 + sx * w, y0 - sy * h) for sx, sy in shape]
    clothes = [(30, 30, 40), (150, 30, 40), (40, 60, 120), (200, 200, 190), (90, 90, 90), (70, 90, 50)]
    top = _jitter(rng, clothes[rng.integers(len(clothes))], 12)
    trousers = _jitter(rng, clothes[rng.integers(len(clothes))], 12)
    skin = _jitter(rng, [(220, 180, 150), (160, 110, 80), (110, 75, 55)][rng.integers(3)], 8)
    legs = [(x0 - w, y0 + 1), (x0 + w, y0 + 1), (x0 + w, y0 - 0.48 * h), (x0 - w, y0 - 0.48 * h)]
    head = [(x0 - w, y0 - 0.85 * h), (x0 + w, y0 - 0.85 * h), (x0 + w, y0 - h - 1), (x0 - w, y0 - h - 1)]
    return [SceneObject("person", _ipoly(outline), top, grain=6,
                        details=[(_ipoly(legs), trousers), (_ipoly(head), skin)])]


def sample_scene(rng: np.random.Generator, height: int, width: int
                 ) -> tuple[list[SceneObject], list[tuple[list[tuple[int, int]], float]]]:
    """Draw one random street scene.

    Args:
        rng: the only source of randomness (same state → same scene).
        height, width: image size in pixels.
    Returns:
        ``(objects, shadows)``: objects in drawing order (later over earlier); shadows are image-only
        ``(polygon, darkness in 0..1)`` — lighting, not labels, so they may cross any boundary.

    About 120 lines, over the suite's 80, on purpose: the scene is one fixed sequence of draws from ``rng``, read
    top to bottom as the street is built (sky, ground lines, facades, road furniture, vehicles, people); split
    into helpers, the order of those draws, which every synthetic dataset depends on, would be spread over
    several functions, and this is training code whose syntax tree the run keys fingerprint
    (``tests/test_runs.py``): a split would move every committed run's key.
    """
    street = _Street(rng, height, width)
    H, W = height, width
    objects: list[SceneObject] = []
    shadows: list[tuple[list[tuple[int, int]], float]] = []

    overcast = rng.random() < 0.4
    sky = _jitter(rng, (185, 190, 195) if overcast else (95, 150, 210), 15)
    clouds = [(_ipoly(_blob(rng, rng.uniform(0, W), rng.uniform(0, street.horizon), rng.uniform(0.1, 0.3) * W,
                            rng.uniform(0.03, 0.08) * H, n=10, wobble=0.3)), _jitter(rng, (225, 225, 230), 12))
              for _ in range(rng.integers(0, 4))]
    objects.append(SceneObject("sky", [(0, 0), (W - 1, 0), (W - 1, H - 1), (0, H - 1)], sky, grain=3, details=clouds))

    # Ground lines by bottom-row intercept, left to right: facade | terrain | sidewalk | road | sidewalk | terrain | facade
    centre = W * rng.uniform(0.4, 0.6)
    half_road = W * rng.uniform(0.3, 0.55)
    road_l, road_r = centre - half_road, centre + half_road
    side_l, side_r = road_l - W * rng.uniform(0.15, 0.4), road_r + W * rng.uniform(0.15, 0.4)
    fac_l = side_l - (W * rng.uniform(0.1, 0.3) if rng.random() < 0.4 else 0.0)
    fac_r = side_r + (W * rng.uniform(0.1, 0.3) if rng.random() < 0.4 else 0.0)
    z_end = rng.uniform(8.0, 16.0)  # depth (camera heights) where the street ends in a cross row of buildings

    # The far end: a front-facing row across the street, so the vanishing point is not an open tip.
    t_end = 1.0 / z_end
    far_h = rng.uniform(2.0, 6.0)
    x_a, x_b = street.x(fac_l - W, t_end), street.x(fac_r + W, t_end)
    far = [(x_a, street.y(t_end)), (x_b, street.y(t_end)), (x_b, street.y(t_end) - street.px(far_h, t_end)),
           (x_a, street.y(t_end) - street.px(far_h, t_end))]
    objects.append(SceneObject("building", _ipoly(far), _jitter(rng, (130, 130, 130), 20), grain=5))

    # Side facades (or a park's tree line) from near (z below the frame) to the street end.
    for b in (fac_l, fac_r):
        z = 0.3
        while z < z_end:
            length = min(rng.uniform(1.5, 5.0), z_end - z)
            if rng.random() < 0.15:  # a park: vegetation mass instead of a building
                top = [_facade_point(street, b, zz, rng.uniform(1.5, 3.0)) for zz in np.linspace(z + length, z, 6)]
                poly = [_facade_point(street, b, z, 0.0), _facade_point(street, b, z + length, 0.0)] + top
                objects.append(SceneObject("vegetation", _ipoly(poly), _green(rng), grain=rng.uniform(14, 24)))
            else:
                objects.append(_building(rng, street, b, z, z + length, rng.uniform(2.5, 9.0)))
            z += length

    # Ground: terrain strips, sidewalks, road; each a wedge to the vanishing point, extended below the frame.
    t_near = 3.0
    pave = _jitter(rng, [(150, 150, 150), (175, 165, 155), (150, 120, 115), (120, 120, 125)][rng.integers(4)], 10)
    asphalt = _jitter(rng, (85, 85, 90), 15)
    grass = _jitter(rng, [(110, 140, 70), (130, 130, 80), (90, 120, 60)][rng.integers(3)], 10)
    for b0, b1 in ((fac_l, side_l), (side_r, fac_r)):
        if abs(b1 - b0) > 1:
            objects.append(SceneObject("terrain", _ipoly(street.strip(b0, b1, t_near, 0.0)), grass, grain=12))
    joints_colour = tuple(int(c * 0.8) for c in pave)
    for b0, b1 in ((side_l, road_l), (road_r, side_r)):
        joints = []
        z = 0.35
        while z < z_end:
            joints.append((_ipoly(street.strip(b0, b1, 1.0 / z, 1.0 / (z + 0.04))), joints_colour))
            z += 0.5
        objects.append(SceneObject("sidewalk", _ipoly(street.strip(b0, b1, t_near, 0.0)), pave, grain=7, details=joints))
    markings = []
    lane_w = W * 0.012
    z = 0.35 + rng.uniform(0, 1)
    while z < z_end:
        markings.append((_ipoly(street.strip(centre - lane_w, centre + lane_w, 1.0 / z, 1.0 / (z + 0.8))),
                         _jitter(rng, (220, 220, 210), 10)))
        z += 2.0
    for b in (road_l + W * 0.03, road_r - W * 0.03):  # edge lines
        markings.append((_ipoly(street.strip(b - lane_w * 0.6, b + lane_w * 0.6, t_near, 1.0 / z_end)),
                         _jitter(rng, (210, 210, 200), 10)))
    objects.append(SceneObject("road", _ipoly(street.strip(road_l, road_r, t_near, 0.0)), asphalt, grain=9,
                               details=markings))

    # Standing things, sorted far to near so nearer ones occlude farther ones.
    standing = []  # (t, objects)
    t_min = 1.0 / z_end

    def depth() -> float:
        return float(np.clip(1.0 / rng.uniform(1.0, z_end), t_min, 1.1))

    for _ in range(rng.integers(2, 6)):
        t = depth()
        b = rng.uniform(road_l, road_r)
        standing.append((t, _car(rng, street, b, t)))
        cx = street.x(b, t)
        w = street.px(1.6, t)
        shadows.append((_ipoly(_blob(rng, cx, street.y(t), w / 2, street.px(0.12, t), n=10, wobble=0.1)), 0.55))
    for _ in range(rng.integers(1, 6)):
        t = depth()
        b = rng.uniform(side_l, road_l) if rng.random() < 0.5 else rng.uniform(road_r, side_r)
        standing.append((t, _person(rng, street, b, t)))
    for _ in range(rng.integers(1, 5)):
        t = depth()
        edge = road_l - W * 0.03 if rng.random() < 0.5 else road_r + W * 0.03
        standing.append((t, _pole(rng, street, edge, t)))
    for _ in range(rng.integers(0, 5)):
        t = depth()
        left = rng.random() < 0.5
        # On the terrain strip or the outer half of the sidewalk.
        b = rng.uniform(fac_l, (side_l + road_l) / 2) if left else rng.uniform((side_r + road_r) / 2, fac_r)
        standing.append((t, _tree(rng, street, b, t)))
        shadows.append((_ipoly(_blob(rng, street.x(b, t) + street.px(0.5, t), street.y(t), street.px(0.9, t),
                                     street.px(0.15, t), n=10)), 0.7))
    standing.sort(key=lambda item: item[0])
    for _, parts in standing:
        objects.extend(parts)

    # A building's cast shadow across part of the street.
    if rng.random() < 0.5:
        z0 = rng.uniform(0.5, z_end * 0.6)
        reach = rng.uniform(road_l, road_r)
        b_from = fac_l if rng.random() < 0.5 else fac_r
        shadows.append((_ipoly(street.strip(b_from, reach, 1.0 / z0, 1.0 / (z0 + rng.uniform(1.0, 4.0)))),
                        rng.uniform(0.5, 0.75)))
    return objects, shadows


def render_scene(objects: list[SceneObject], shadows, rng: np.random.Generator, height: int, width: int,
                 lighting: bool = True) -> np.ndarray:
    """Draw a scene: base colours and clipped details in order, then grain, illumination and shadows.

    Args:
        lighting: False skips brightness, gradient, illumination field and shadows (flat colours plus grain),
            e.g. to check that every pixel shows the object its label says.
    Returns:
        H×W×3 uint8 RGB.
    """
    size = (width, height)
    canvas = Image.new("RGB", size)
    grain = Image.new("L", size)  # per-pixel noise strength, following the same occlusion order as the labels
    draw, grain_draw = ImageDraw.Draw(canvas), ImageDraw.Draw(grain)
    for obj in objects:
        if obj.details:
            # Details are clipped to the object's own polygon: draw on a copy, paste through the polygon mask.
            xs, ys = [x for x, _ in obj.polygon], [y for _, y in obj.polygon]
            x0, y0 = max(0, min(xs)), max(0, min(ys))
            x1, y1 = min(width, max(xs) + 1), min(height, max(ys) + 1)
            if x1 <= x0 or y1 <= y0:
                continue
            box = (x0, y0, x1, y1)
            layer = Image.new("RGB", (x1 - x0, y1 - y0), obj.colour)
            layer_draw = ImageDraw.Draw(layer)
            for poly, rgb in obj.details:
                layer_draw.polygon([(x - x0, y - y0) for x, y in poly], fill=rgb)
            # The clip is rasterised at full size with the label's own coordinates: shifted coordinates can
            # round differently far off-screen, and the image must match the labels pixel for pixel.
            clip = Image.new("L", size, 0)
            ImageDraw.Draw(clip).polygon(obj.polygon, fill=255)
            canvas.paste(layer, box, clip.crop(box))
        else:
            draw.polygon(obj.polygon, fill=obj.colour)
        grain_draw.polygon(obj.polygon, fill=int(min(255, obj.grain * 4)))

    image = np.asarray(canvas, dtype=np.float32)
    amplitude = np.asarray(grain, dtype=np.float32)[..., None] / 4.0
    luma_noise = rng.standard_normal((height, width, 1), dtype=np.float32)
    chroma_noise = rng.standard_normal((height, width, 3), dtype=np.float32) * 0.3
    image += amplitude * (luma_noise + chroma_noise)
    if not lighting:
        return np.clip(image + 0.5, 0, 255).astype(np.uint8)

    # Lighting: one global level, a linear gradient in a random direction, a smooth illumination field.
    light = rng.uniform(0.65, 1.25)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (xx / width - 0.5) + np.sin(angle) * (yy / height - 0.5)) * rng.uniform(0.0, 0.5)
    coarse_field = rng.standard_normal((max(2, height // 16), max(2, width // 16))).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse_field).resize(size, Image.Resampling.BICUBIC))
    gain = light * (1.0 + ramp) * (1.0 + 0.08 * field)
    shade = Image.new("L", size, 255)
    shade_draw = ImageDraw.Draw(shade)
    for poly, darkness in shadows:
        shade_draw.polygon(poly, fill=int(255 * darkness))
    shade = shade.filter(ImageFilter.GaussianBlur(radius=max(0.6, height / 160)))
    gain = gain * (np.asarray(shade, dtype=np.float32) / 255.0)
    image *= gain[..., None]
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)
