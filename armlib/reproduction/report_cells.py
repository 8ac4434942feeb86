"""The report's cells: numbers, seeds, labels and figures formatted as the page shows them (text, not markup; the
templates in ``armlib/reproduction/templates/`` add the tags and escape every value)."""
from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    """A PNG inlined in the page: ``src`` is its ``data:image/png;base64,…`` URI."""
    alt: str
    src: str


@dataclass(frozen=True)
class Moved:
    """An "ARM moved" cell: ``value`` "k/n" seeds with ``stuck`` = n − k seeds where ARM stayed at its initialisation
    (the row is then partly the base model), or a word ("not run", "cut off") with ``stuck`` None."""
    value: str
    stuck: int | None = None


def num(x, digits: int = 2, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def p(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def pct(share) -> str:
    return "—" if share is None or (isinstance(share, float) and math.isnan(share)) else f"{100 * share:.1f} %"


def text(x) -> str:
    return x if isinstance(x, str) else ""


def word(verdict) -> str | None:
    """A claim's verdict, None where claims.csv holds none (the page says n/a)."""
    return verdict if isinstance(verdict, str) else None


def ranges(seeds) -> str:
    """Seeds as ranges: 0, 5–18."""
    seeds = sorted({int(x) for x in seeds})
    out, i = [], 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        out.append(str(seeds[i]) if i == j else f"{seeds[i]}–{seeds[j]}")
        i = j + 1
    return ", ".join(out)


def seed_cell(seeds, planned: set) -> str:
    """A row's seeds, the pilot's and the plan's confirmatory ones apart."""
    pilot = [x for x in seeds if x not in planned]
    confirm = [x for x in seeds if x in planned]
    parts = ([f"{ranges(pilot)} (pilot)" if planned else ranges(pilot)] if pilot else []) + (
        [f"{ranges(confirm)} (confirmatory)"] if confirm else [])
    return "; ".join(parts)


# The paper's role → what stood in for it at a scale on synthetic data (rows and captions name what ran).
_DATA_ROLES = {"Cityscapes Coarse": "synthetic scenes, coarse labels",
               "Cityscapes Fine": "synthetic scenes, fine labels", "Cityscapes test server": "synthetic val set"}


def what_ran(text: str, scale) -> str:
    """The paper's label of a row or caption with what ran at ``scale`` and the paper's role beside it:
    "Coarse, ResNet101, ARM" → "Coarse, deeplabv3plus_tiny [paper: ResNet101], ARM" on the quick scale."""
    if scale is None or scale.dataset != "synth":
        return text
    names = {"ResNet101": scale.models.get("r101"), "DeepLabV3+": scale.models.get("r101"),
             "ResNet50": scale.models.get("r50"), "OCR": scale.models.get("ocr")}
    roles = {**_DATA_ROLES, **{k: v or "not run" for k, v in names.items()}}
    pattern = re.compile("|".join(re.escape(k) for k in sorted(roles, key=len, reverse=True)))
    return pattern.sub(lambda m: f"{roles[m.group(0)]} [paper: {m.group(0)}]", text)


def moved(value) -> Moved | None:
    """A "k/n" cell of a summary or of calibration.json (seeds in which ARM's curve moved); None where empty."""
    if not isinstance(value, str) or not value:
        return None
    if not re.fullmatch(r"\d+/\d+", value):
        return Moved(value)
    k, n = value.split("/")
    return Moved(value, int(n) - int(k))


def figures(folder: Path, key: str) -> list[Figure]:
    """Every ``figures/<key>*.png``, inlined as base64: the page stays self-contained."""
    return [Figure(png.stem, "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode())
            for png in sorted(folder.glob(f"{key}*.png"))]
