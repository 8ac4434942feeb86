"""Synthetic street scenes written in the official Cityscapes layout, and the ``armlib synth`` command.

``generate`` writes, for ``split`` in train and val::

    <out>/leftImg8bit/<split>/<city>/<city>_<seq:06d>_000019_leftImg8bit.png
    <out>/gtFine/<split>/<city>/<stem>_gtFine_{polygons.json,labelIds.png,color.png}
    <out>/gtCoarse/<split>/<city>/<stem>_gtCoarse_{polygons.json,labelIds.png,color.png}
    <out>/stats.json     generator parameters + coarse-vs-fine statistics per split (the "finished" marker)

so ``Cityscapes(out, annotation="fine" | "coarse")`` reads it unchanged: one code path for synthetic and real
data. Label PNGs are rasterised from the JSON polygons by the official ``json2labelImg`` code; the coarse
polygons come from :func:`armlib.data.coarse.simulate_coarse`.

Every image has its own random stream derived from ``(seed, split, index)``: the same seed gives
byte-identical files whatever the worker count, and image *i* does not depend on how many are generated.
The tree is built in a hidden sibling folder and renamed into place when complete, ``stats.json`` last, so
no reader ever sees a half-written tree. A ``.armlib-synth`` file marks a tree as generated here: only such
a folder (or an empty one) is ever replaced, never a folder holding other data such as the real Cityscapes.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from armlib.data.coarse import DEFAULT_NOISE, CoarseParams, CoarseStatsAccumulator, simulate_coarse
from armlib.data.labels import label_ids_to_train_ids, rasterise_polygons
from armlib.data.scenes import SCENE_LABELS, render_scene, sample_scene
from armlib.errors import UsageError, check_out_folder

__all__ = ["generate", "ensure_synthetic", "add_arguments", "run", "DEFAULT_SIZE", "SYNTH_VERSION"]

GENERATOR = "armlib.data.synth"
SYNTH_VERSION = 2  # bump when the output for given parameters changes: cached trees then regenerate
# (tests/test_data_synth.py pins the output fingerprint of each version)
DEFAULT_SIZE = (128, 256)
DEFAULT_CITY = "synthcity"
MIN_SIDE = 16
_SPLIT_STREAM = {"train": 0, "val": 1}
_FRAME = 19  # Cityscapes' annotated frame of each 30-frame snippet is frame 19
_MARKER = "stats.json"
# Written first: identifies a tree as generated here even without its marker (e.g. stats.json deleted), so
# it may be replaced, while a folder without it (real Cityscapes, say) never is.
_SENTINEL = ".armlib-synth"


def _params(seed: int, n_train: int, n_val: int, noise: float, size, city: str) -> dict:
    """Validated, JSON-ready generator parameters (what the finished marker records and compares)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for name, value in (("n_train", n_train), ("n_val", n_val)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if not isinstance(noise, (int, float)) or not 0.0 <= float(noise) <= 1.0:
        raise ValueError(f"noise must be a number in [0, 1], got {noise!r}")
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (H, W), got {size!r}") from None
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ValueError(f"size must be at least {MIN_SIDE}x{MIN_SIDE} to draw a street, got {height}x{width}")
    if not isinstance(city, str) or not re.fullmatch(r"[A-Za-z0-9-]+", city):
        # Cityscapes file names are <city>_<seq>_<frame>_...: an underscore in the city would break that
        raise ValueError(f"city must be letters, digits or '-', without '_', got {city!r}")
    return {"version": SYNTH_VERSION, "seed": int(seed), "n_train": int(n_train), "n_val": int(n_val),
            "noise": float(noise), "size": [height, width], "city": str(city)}


def _stem(city: str, index: int) -> str:
    return f"{city}_{index:06d}_{_FRAME:06d}"


def _write_png(image: Image.Image, path: Path) -> None:
    # PNG from PIL carries no timestamp: same pixels, same bytes.
    image.save(path, format="PNG", compress_level=1)  # fastest level; the files are small anyway


def _make_one(task: tuple) -> tuple[str, CoarseStatsAccumulator]:
    """Generate, write and measure one image; returns its split and its statistics counts."""
    tree, split, index, seed, noise, (height, width), city = task
    scene_rng = np.random.default_rng([seed, _SPLIT_STREAM[split], index, 0])
    coarse_rng = np.random.default_rng([seed, _SPLIT_STREAM[split], index, 1])
    objects, shadows = sample_scene(scene_rng, height, width)
    image = render_scene(objects, shadows, scene_rng, height, width)
    fine = {"imgHeight": height, "imgWidth": width,
            "objects": [{"label": o.label, "polygon": [list(p) for p in o.polygon]} for o in objects]}
    coarse = {"imgHeight": height, "imgWidth": width,
              "objects": simulate_coarse([(o.label, o.polygon) for o in objects], (height, width), coarse_rng, noise)}
    stem = _stem(city, index)
    _write_png(Image.fromarray(image), tree / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
    masks = {}
    for folder, polygons in (("gtFine", fine), ("gtCoarse", coarse)):
        base = tree / folder / split / city / f"{stem}_{folder}"
        Path(f"{base}_polygons.json").write_text(json.dumps(polygons))
        ids = rasterise_polygons(polygons, "ids", source=f"{base}_polygons.json")
        _write_png(ids, Path(f"{base}_labelIds.png"))
        _write_png(rasterise_polygons(polygons, "color"), Path(f"{base}_color.png"))
        masks[folder] = label_ids_to_train_ids(np.asarray(ids), source=f"{base}_labelIds.png")
    stats = CoarseStatsAccumulator()
    stats.update(masks["gtFine"], masks["gtCoarse"])
    return split, stats


def _read_marker(root: Path) -> dict | None:
    try:
        marker = json.loads((root / _MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("generator") == GENERATOR else None


def _is_complete(root: Path, params: dict) -> bool:
    """True when ``root`` holds a finished tree generated with exactly ``params``."""
    marker = _read_marker(root)
    if marker is None or marker.get("params") != params:
        return False
    for split, count in (("train", params["n_train"]), ("val", params["n_val"])):
        folder = root / "leftImg8bit" / split / params["city"]
        if len(list(folder.glob("*_leftImg8bit.png"))) != count:
            return False
    return True


def _install(tree: Path, out_dir: Path, params: dict) -> None:
    """Move the finished ``tree`` to ``out_dir``, replacing an earlier synthetic tree (never other data)."""
    if out_dir.exists():
        if _is_complete(out_dir, params):  # a concurrent run finished the same tree first
            shutil.rmtree(tree)
            return
        if any(out_dir.iterdir()) and _read_marker(out_dir) is None and not (out_dir / _SENTINEL).is_file():
            shutil.rmtree(tree)
            raise FileExistsError(f"{out_dir} exists and is not a synthetic dataset written by armlib "
                                  f"(no {_SENTINEL} or {_MARKER} from {GENERATOR}); refusing to replace it: "
                                  "pass an empty or new folder")
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(out_dir, old)
        os.rename(tree, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tree, out_dir)


def _json_stats(stats: dict) -> dict:
    # NaN (an empty split) is not JSON: store null.
    return {k: (v if not isinstance(v, float) else round(v, 6) if math.isfinite(v) else None) for k, v in stats.items()}


class _Serial:
    """The slice of ``multiprocessing.Pool`` that :func:`generate` uses, in this process."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap(func, iterable, chunksize=1):
        return map(func, iterable)


def _default_workers(total: int) -> int:
    # Process start-up (~0.1 s) only pays off for more than a few dozen images.
    return 1 if total < 32 else max(1, min(os.cpu_count() or 1, 8))


def _default_signals() -> None:
    # Forked workers inherit the parent's handlers. Under armlib.reproduction.executors.signals_as_interrupts, SIGTERM raises
    # an exception, so the Pool.terminate() that ends every healthy generation printed a worker's traceback
    # ("Interrupted: SIGTERM") into `make report`'s log. A worker has nothing to clean up: it may just die.
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)


def generate(out_dir: str | Path, seed: int, n_train: int, n_val: int, noise: float = DEFAULT_NOISE,
             size: tuple[int, int] = DEFAULT_SIZE, city: str = DEFAULT_CITY, workers: int | None = None) -> dict:
    """Write a synthetic Cityscapes-layout dataset (fine + coarse labels for train and val).

    Args:
        out_dir: destination; created, or replaced if it holds an earlier synthetic dataset. A folder with
            other content raises ``FileExistsError``.
        seed: non-negative integer; same seed and parameters → byte-identical PNG files.
        n_train, n_val: number of images per split.
        noise: coarse-label noise in [0, 1] (0: fine-like, 1: very coarse); see :mod:`armlib.data.coarse`.
        size: ``(H, W)`` in pixels.
        city: the city name in folder and file names.
        workers: processes (default: 1 for small sets, else up to the CPU count); does not change the output.
    Returns:
        the content of ``stats.json``: ``{"generator", "params", "coarse_params", "classes", "stats": {split:
        {coverage, agreement, boundary_band_px, pixels, images}}, "seconds"}``.
    """
    params = _params(seed, n_train, n_val, noise, size, city)
    out_dir = check_out_folder(out_dir, "out_dir")  # a file there failed only after every image was written
    height, width = params["size"]
    total = n_train + n_val
    if total == 0:
        raise UsageError("n_train and n_val are both 0: nothing to generate (expected at least one image)")
    workers = _default_workers(total) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tree = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    start = time.perf_counter()
    try:
        tree.mkdir()
        (tree / _SENTINEL).write_text(f"{GENERATOR}\n")
        for folder in ("leftImg8bit", "gtFine", "gtCoarse"):
            for split in ("train", "val"):
                (tree / folder / split / params["city"]).mkdir(parents=True)
        tasks = [(tree, split, index, params["seed"], params["noise"], (height, width), params["city"])
                 for split, count in (("train", n_train), ("val", n_val)) for index in range(count)]
        totals = {"train": CoarseStatsAccumulator(), "val": CoarseStatsAccumulator()}
        chunk = max(1, len(tasks) // (8 * workers))
        with multiprocessing.get_context().Pool(workers, _default_signals) if workers > 1 else _Serial() as pool:
            # Ordered results: the floating-point sums in stats.json then do not depend on scheduling.
            for split, stats in pool.imap(_make_one, tasks, chunksize=chunk):
                totals[split].merge(stats)
        summary = {
            "generator": GENERATOR,
            "params": params,
            "coarse_params": CoarseParams.from_noise(params["noise"], (height, width)).as_dict(),
            "classes": list(SCENE_LABELS),
            "stats": {split: _json_stats(acc.compute()) for split, acc in totals.items()},
        }
        # The marker goes in last, through a temporary name: its presence means the tree is complete.
        marker_tmp = tree / f".{_MARKER}.tmp"
        marker_tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        os.replace(marker_tmp, tree / _MARKER)
        _install(tree, out_dir, params)
    finally:
        if tree.exists():
            shutil.rmtree(tree, ignore_errors=True)
    # Timing is reported, not stored: stats.json stays a pure function of the parameters.
    return {**summary, "seconds": round(time.perf_counter() - start, 3)}


def ensure_synthetic(root: str | Path, *, seed: int, n_train: int, n_val: int, noise: float = DEFAULT_NOISE,
                     size: tuple[int, int] = DEFAULT_SIZE, city: str = DEFAULT_CITY,
                     workers: int | None = None) -> Path:
    """Return ``root`` holding the synthetic dataset for these parameters, generating it only if needed.

    Reuses ``root`` when its ``stats.json`` marker records identical parameters (and generator version) and
    the image counts match; otherwise (missing, different parameters, or an interrupted earlier run, which
    never leaves a marker) it is generated afresh with :func:`generate`.
    """
    root = Path(root)
    params = _params(seed, n_train, n_val, noise, size, city)
    if not _is_complete(root, params):
        generate(root, seed=seed, n_train=n_train, n_val=n_val, noise=noise, size=size, city=city, workers=workers)
    return root


# -- command line -----------------------------------------------------------------------------------------


def _size_arg(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW with two positive integers, e.g. 128x256; got {text!r}") from None
    if height < MIN_SIDE or width < MIN_SIDE:
        raise argparse.ArgumentTypeError(f"HxW must be at least {MIN_SIDE}x{MIN_SIDE}, got {text!r}")
    return height, width


def _noise_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"noise must lie in [0, 1], got {value}")
    return value


def _count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``armlib synth``."""
    parser.add_argument("--out", required=True, type=Path, help="destination folder (created or replaced)")
    parser.add_argument("--seed", required=True, type=_count_arg, help="random seed (same seed -> same files)")
    parser.add_argument("--n-train", required=True, type=_count_arg, help="number of train images")
    parser.add_argument("--n-val", required=True, type=_count_arg, help="number of val images")
    parser.add_argument("--noise", type=_noise_arg, default=DEFAULT_NOISE,
                        help=f"coarse-label noise in [0, 1] (default {DEFAULT_NOISE}: coverage ~0.82, agreement ~0.89)")
    parser.add_argument("--size", type=_size_arg, default=DEFAULT_SIZE, metavar="HxW",
                        help=f"image size (default {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]})")
    parser.add_argument("--city", default=DEFAULT_CITY, help=f"city name in the file names (default {DEFAULT_CITY})")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: automatic)")


def run(args: argparse.Namespace) -> int:
    """``armlib synth``: generate, then print where it went and the coarse-label statistics."""
    check_out_folder(args.out, "--out")
    if args.n_train == 0 and args.n_val == 0:
        raise UsageError("--n-train and --n-val are both 0: nothing to generate (expected at least one image)")
    summary = generate(args.out, seed=args.seed, n_train=args.n_train, n_val=args.n_val, noise=args.noise,
                       size=args.size, city=args.city, workers=args.workers)
    height, width = summary["params"]["size"]
    print(f"wrote {args.n_train} train + {args.n_val} val images ({height}x{width}, noise {args.noise}) "
          f"to {args.out} in {summary['seconds']:.1f} s")
    print(f"{'split':<6} {'coverage':>9} {'agreement':>10} {'boundary_band_px':>17}")
    for split, stats in summary["stats"].items():  # an empty split has null statistics
        cells = [("-" if stats[k] is None else f"{stats[k]:.{d}f}").rjust(w)
                 for k, d, w in (("coverage", 3, 9), ("agreement", 3, 10), ("boundary_band_px", 2, 17))]
        print(f"{split:<6} {' '.join(cells)}")
    return 0


if __name__ == "__main__":  # python -m armlib.data.synth ...
    _parser = argparse.ArgumentParser(prog="python -m armlib.data.synth", description=__doc__.splitlines()[0])
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
