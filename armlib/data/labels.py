"""The official Cityscapes label table, as lookup tables, and the official polygon rasteriser.

Everything here comes from ``cityscapesscripts`` (``helpers.labels`` and ``preparation.json2labelImg``) so that
synthetic data, fixtures and real data all go through the same definitions. No torch import: the synthetic
generator uses this module and should stay cheap to start.

Label ids are what ``*_labelIds.png`` files store (0..33); train ids are the 19 evaluated classes (0..18)
and 255 for everything ignored (the table's 255 and -1 train ids both become 255).
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.labels import labels as _OFFICIAL_LABELS
from cityscapesscripts.helpers.labels import name2label
from cityscapesscripts.preparation.json2labelImg import createLabelImage
from PIL import Image

IGNORE_INDEX = 255

_TRAIN_LABELS = sorted((lab for lab in _OFFICIAL_LABELS if 0 <= lab.trainId < IGNORE_INDEX), key=lambda lab: lab.trainId)
assert [lab.trainId for lab in _TRAIN_LABELS] == list(range(19)), "official table no longer has train ids 0..18"

CITYSCAPES_CLASSES: tuple[str, ...] = tuple(lab.name for lab in _TRAIN_LABELS)
"""The 19 evaluated class names, index = train id (``road`` … ``bicycle``)."""

CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = tuple(tuple(lab.color) for lab in _TRAIN_LABELS)
"""Official RGB colour of each train id, same order as :data:`CITYSCAPES_CLASSES`."""


def _build_tables() -> tuple[np.ndarray, np.ndarray]:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    known = np.zeros(256, dtype=bool)
    for lab in _OFFICIAL_LABELS:
        if 0 <= lab.id < 256:  # 'license plate' has id -1: never stored in a label image
            known[lab.id] = True
            lut[lab.id] = lab.trainId if 0 <= lab.trainId < IGNORE_INDEX else IGNORE_INDEX
    return lut, known


# Built once: indexing a 256-entry table maps a whole label image in one numpy gather.
LABEL_ID_TO_TRAIN_ID, KNOWN_LABEL_IDS = _build_tables()
LABEL_ID_TO_TRAIN_ID.flags.writeable = False
KNOWN_LABEL_IDS.flags.writeable = False


def label_ids_to_train_ids(ids: np.ndarray, source: object = "label image") -> np.ndarray:
    """Map label ids (H×W, any integer dtype, values 0..33) to train ids (H×W uint8, 0..18 or 255).

    Raises ``ValueError`` naming ``source`` if a value is not an id of the official table: such a file is
    not a Cityscapes ``*_labelIds.png`` (a ``*_color.png`` or ``*_labelTrainIds.png`` passed by mistake,
    say) and mapping it to "ignore" would hide that.
    """
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() > 255):
        raise ValueError(f"{source}: label ids must lie in 0..255, got range {ids.min()}..{ids.max()}")
    ids = ids.astype(np.uint8, copy=False)
    unknown = ~KNOWN_LABEL_IDS[ids]
    if unknown.any():
        bad = np.unique(ids[unknown]).tolist()
        raise ValueError(f"{source}: label ids {bad} are not in the official Cityscapes table "
                         f"(expected ids 0..33 of cityscapesscripts.helpers.labels)")
    return LABEL_ID_TO_TRAIN_ID[ids]


def train_id_subset(classes) -> np.ndarray:
    """256-entry table from train ids to indices into ``classes``, a subset of the 19 train class names.

    A dataset that only ever contains some Cityscapes classes (the synthetic scenes hold 10) is trained and
    scored on its own class set: with all 19, a stray prediction of an absent class adds an IoU of 0 to the
    mean and the model spends logits on classes it never sees. Train ids of classes outside the subset map to
    ``IGNORE_INDEX``, as does 255. Raises ``ValueError`` for a name that is not a train class or a repeat.
    """
    classes = list(classes)
    unknown = [name for name in classes if name not in CITYSCAPES_CLASSES]
    if unknown or len(set(classes)) != len(classes) or not classes:
        raise ValueError(f"classes must be distinct Cityscapes train class names {list(CITYSCAPES_CLASSES)}, "
                         f"got {classes} (unknown: {unknown})")
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for index, name in enumerate(classes):
        table[CITYSCAPES_CLASSES.index(name)] = index
    table.flags.writeable = False
    return table


def in_train_id_order(names) -> tuple[str, ...]:
    """``names`` sorted by Cityscapes train id (a subset's class order; raises like :func:`train_id_subset`)."""
    train_id_subset(names)
    return tuple(sorted(names, key=CITYSCAPES_CLASSES.index))


def _official_label_name(label: str) -> str | None:
    # Same rule as createLabelImage: 'cargroup' falls back to 'car'. Checked here first because the
    # official function calls sys.exit() on an unknown label.
    if label in name2label:
        return label
    if label.endswith("group") and label[: -len("group")] in name2label:
        return label[: -len("group")]
    return None


def official_label_id(label: str) -> int:
    """Label id of a polygon label name as the official rasteriser resolves it ('cargroup' → car's id).

    Raises ``ValueError`` for a name not in the official table.
    """
    name = _official_label_name(label)
    if name is None:
        raise ValueError(f"label {label!r} is not in the official Cityscapes table")
    return name2label[name].id


def rasterise_polygons(polygons: Mapping | str | Path, encoding: str = "ids",
                       source: object | None = None) -> Image.Image:
    """Rasterise a Cityscapes ``*_polygons.json`` with the official rasteriser into a PIL image.

    ``polygons`` is a path, JSON text or the parsed dict ``{imgHeight, imgWidth, objects: [{label, polygon}]}``.
    ``encoding`` is ``"ids"`` (mode L, label ids), ``"trainIds"`` (mode L) or ``"color"`` (RGBA, the
    official ``*_color.png``). Objects are filled in list order, later over earlier, background
    'unlabeled', exactly as ``json2labelImg`` does (objects marked ``deleted`` are skipped, whatever their
    label), except that an object with fewer than 2 points (which the official code crashes on) is skipped with
    a warning. Raises ``ValueError`` naming ``source`` (default: the
    path) on unreadable JSON, a missing field, or a label name not in the official table.
    """
    if encoding not in ("ids", "trainIds", "color"):
        raise ValueError(f"encoding must be 'ids', 'trainIds' or 'color', got {encoding!r}")
    if isinstance(polygons, Path) or (isinstance(polygons, str) and not polygons.lstrip().startswith("{")):
        source = source if source is not None else polygons
        try:
            text = Path(polygons).read_text()
        except OSError as exc:
            raise ValueError(f"{source}: cannot read polygon JSON ({exc})") from exc
    elif isinstance(polygons, Mapping):
        text = json.dumps(polygons)
    else:
        text = polygons
    source = source if source is not None else "polygon JSON"
    try:
        data = json.loads(text)
        height, width = int(data["imgHeight"]), int(data["imgWidth"])
        objects = data["objects"]
        names = [str(obj["label"]) for obj in objects]
        for obj in objects:
            if len(obj["polygon"]) and np.asarray(obj["polygon"], dtype=float).shape[1:] != (2,):
                raise ValueError(f"polygon of '{obj['label']}' is not a list of [x, y] pairs")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"{source}: not a Cityscapes polygon file "
                         f"(expected JSON with imgHeight, imgWidth, objects[{{label, polygon}}]): {exc}") from exc
    if height <= 0 or width <= 0:
        raise ValueError(f"{source}: imgHeight/imgWidth must be positive, got {height}x{width}")
    # createLabelImage skips an object marked deleted before it looks its label up, so neither its label nor its
    # points can stop the file; only the objects it draws are checked.
    drawn = [(obj, name) for obj, name in zip(objects, names) if not obj.get("deleted", 0)]
    unknown = sorted({name for _, name in drawn if _official_label_name(name) is None})
    if unknown:
        raise ValueError(f"{source}: labels {unknown} are not in the official Cityscapes table")
    # PIL cannot draw fewer than 2 points: the official createLabelImage (cityscapesscripts 2.3.0) then prints
    # "Failed to draw polygon" and re-raises PIL's TypeError, naming no file. Such an object covers no pixel,
    # so it is dropped with a warning; 2 points the official code draws as a line, and so do we.
    empty = [name for obj, name in drawn if len(obj["polygon"]) < 2]
    if empty:
        warnings.warn(f"{source}: skipped {len(empty)} object(s) with fewer than 2 polygon points "
                      f"({', '.join(sorted(set(empty)))}): nothing to draw", stacklevel=2)
        data["objects"] = [obj for obj in objects if len(obj["polygon"]) >= 2 or obj.get("deleted", 0)]
        text = json.dumps(data)
    annotation = Annotation()
    annotation.fromJsonText(text)
    try:
        return createLabelImage(annotation, encoding)
    except (TypeError, ValueError) as exc:  # whatever else PIL refuses to draw: name the file
        raise ValueError(f"{source}: the official rasteriser cannot draw this polygon file ({exc})") from exc


def polygons_to_label_ids(polygons: Mapping | str | Path, source: object | None = None) -> np.ndarray:
    """:func:`rasterise_polygons` with ``encoding="ids"`` as an H×W uint8 array of label ids."""
    return np.asarray(rasterise_polygons(polygons, "ids", source), dtype=np.uint8)
