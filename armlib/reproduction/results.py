"""Result files: what the notebooks write and the report reads (``<out_dir>/results/``).

Per section ``<key>``:

* ``<key>_seeds.csv`` — one row per run, seed and metric: table, row, seed, metric, value, status ("ok" or
  "diverged"), experiment (the content id of the run's config, :func:`armlib.reproduction.experiments.experiment_id`);
* ``<key>.csv`` — the section's summary (tables: mean ± std over finished seeds beside the paper, the seeds and
  the diverged seeds counted; figures: the measured table, e.g. the learned curves per seed with W at init and
  at the end);
* ``claims_<key>.csv`` — one row per claim, :data:`armlib.reproduction.verdict_rules.CLAIM_COLUMNS`: the threshold claims a figure
  section measured, or a comparison section's rows of ``claims.csv``;
* ``meta_<key>.json`` — provenance (scale, seeds, git revision, hardware, package versions, wall time).

``claims.csv`` (all sections, Holm over the whole primary family) is written by :func:`armlib.reproduction.verdicts.write`
from these files alone, so anyone can re-analyse a committed reference without its runs.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from armlib.errors import UsageError
from armlib.paths import atomic_write_text, replace_tree, resolve
from armlib.runs import STATUSES, is_failed
from armlib.reproduction.stats import SEED_COLUMNS


def results_dir(out_dir: str | Path) -> Path:
    return resolve(out_dir) / "results"


def write_section(out_dir: str | Path, key: str, per_seed: pd.DataFrame | None = None,
                  summary: pd.DataFrame | None = None, claims: pd.DataFrame | None = None) -> Path:
    """Write the section's result files atomically (those given); return the results folder."""
    folder = results_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in ((f"{key}_seeds.csv", per_seed), (f"{key}.csv", summary), (f"claims_{key}.csv", claims)):
        if frame is not None:
            atomic_write_text(folder / name, frame.to_csv(index=False))
    return folder


def discard_other_scales(out_dir: str | Path, scale: str) -> list[Path]:
    """Remove the result files and figures of sections whose meta file records another scale, so a report
    never mixes two scales' runs (a smoke run into ``reports/`` before a quick one). Returns what was removed."""
    removed = []
    for meta in sorted(results_dir(out_dir).glob("meta_*.json")):
        key = meta.stem.removeprefix("meta_")
        if key == "training" or section_scale(out_dir, key) == scale:
            continue
        folder = resolve(out_dir)
        for path in [*folder.glob(f"results/{key}.csv"), *folder.glob(f"results/{key}_seeds.csv"),
                     *folder.glob(f"results/claims_{key}.csv"), meta, *folder.glob(f"figures/{key}*.png")]:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def folder_state(out_dir: str | Path) -> str | None:
    """What a results folder is when it is not one whole reproduction: None when every section of the manifest
    has its meta file and all record one scale; else one line, ``"mixed scales: ..."`` (a notebook run by hand at
    another scale) and/or ``"incomplete: ..."`` (``reproduce --only``, or sections run by hand), naming them."""
    from armlib.reproduction.sections import SECTION_KEYS

    scales: dict[str, list[str]] = {}
    for key in SECTION_KEYS:
        scale = section_scale(out_dir, key)
        if scale is not None:
            scales.setdefault(scale, []).append(key)
    missing = [key for key in SECTION_KEYS if not any(key in keys for keys in scales.values())]
    notes = []
    if len(scales) > 1:
        notes.append("mixed scales: " + "; ".join(f"{scale} ({', '.join(keys)})" for scale, keys in scales.items()))
    if missing:
        notes.append(f"incomplete: {len(SECTION_KEYS) - len(missing)} of {len(SECTION_KEYS)} sections have results "
                     f"(missing: {', '.join(missing)})")
    return "; ".join(notes) or None


def _damaged(path: Path, what: str) -> UsageError:
    """The one-line error for a damaged result file: what is wrong, and the command that writes it again."""
    from armlib.reproduction.sections import SECTION_KEYS

    key = path.name.removesuffix(".csv").removesuffix(".json").removesuffix("_seeds")
    key = key.removeprefix("claims_").removeprefix("meta_")
    only = f" --only {key}" if key in SECTION_KEYS else ""
    return UsageError(f"{path}: damaged result file ({what}); delete it and rerun armlib reproduce{only} with the "
                      "same --out-dir, or restore it from a copy")


def read_csv(path: Path, columns: tuple[str, ...] = ()) -> pd.DataFrame | None:
    """A result CSV, checked where it is read; None when it is missing or holds no header (nothing written).

    Every result file is written whole by :func:`armlib.paths.atomic_write` and ends with a newline, so a file
    that does not (a copy cut short), that does not parse, or that lacks one of ``columns`` is damaged.

    Raises:
        UsageError: one line naming the file, what is wrong and what to do.
    """
    if not path.exists():
        return None
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        what = "empty: 0 bytes" if not data else "cut short: the last line has no end"
        raise _damaged(path, what)
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise _damaged(path, f"not a readable CSV: {' '.join(str(exc).split())}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise _damaged(path, f"missing column(s) {', '.join(missing)}")
    return frame


def read_seed_file(path: Path) -> pd.DataFrame | None:
    """A ``<key>_seeds.csv`` (:data:`SEED_COLUMNS`), checked row by row: every key cell filled, an integer seed,
    a known status (:data:`armlib.runs.STATUSES`), a value that is a number, NaN only for a failed run."""
    frame = read_csv(path, SEED_COLUMNS)
    if frame is None or not len(frame):
        return frame
    for column in ("table", "row", "seed", "metric", "status"):
        empty = frame[column].isna()
        if empty.any():
            raise _damaged(path, f"line {int(empty.to_numpy().argmax()) + 2} has no {column}")
    seeds = pd.to_numeric(frame["seed"], errors="coerce")
    if seeds.isna().any() or (seeds != seeds.round()).any():
        raise _damaged(path, f"a seed is not an integer: {frame['seed'][seeds.isna() | (seeds != seeds.round())].iloc[0]!r}")
    unknown = ~frame["status"].isin(STATUSES)
    if unknown.any():
        raise _damaged(path, f"unknown status {frame['status'][unknown].iloc[0]!r}; expected one of {list(STATUSES)}")
    values = pd.to_numeric(frame["value"], errors="coerce")
    if (values.isna() & frame["value"].notna()).any():
        raise _damaged(path, f"a value is not a number: {frame['value'][values.isna() & frame['value'].notna()].iloc[0]!r}")
    unexplained = values.isna() & ~frame["status"].map(is_failed)
    if unexplained.any():
        raise _damaged(path, f"line {int(unexplained.to_numpy().argmax()) + 2} has no value but status 'ok'")
    return frame.assign(value=values)


def read_json(path: Path) -> dict:
    """A result JSON (``meta_<key>.json``), checked: an object. Raises UsageError naming a damaged file."""
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise _damaged(path, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _damaged(path, f"expected a JSON object, got {type(data).__name__}")
    return data


def section_scale(out_dir: str | Path, key: str) -> str | None:
    """The scale ``meta_<key>.json`` records (None when the section has no meta file yet)."""
    meta = results_dir(out_dir) / f"meta_{key}.json"
    return read_json(meta).get("scale") if meta.exists() else None


def read_seed_results(out_dir: str | Path, exclude: str | None = None, scale: str | None = None) -> pd.DataFrame:
    """Every ``*_seeds.csv`` under ``out_dir/results`` (but ``exclude``'s, and with ``scale`` only the sections
    whose meta file records that scale) as one frame (:data:`SEED_COLUMNS`)."""
    frames = []
    for path in sorted(results_dir(out_dir).glob("*_seeds.csv")):
        key = path.name.removesuffix("_seeds.csv")
        if key == exclude or (scale is not None and section_scale(out_dir, key) not in (None, scale)):
            continue
        frame = read_seed_file(path)
        if frame is not None:
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=list(SEED_COLUMNS))
    return pd.concat(frames, ignore_index=True).astype({"seed": int})


PILOT_DIR = "pilot"   # <out_dir>/pilot/*_seeds.csv: the committed pilot a confirmatory plan was sized on


def attach_pilot(plan: dict | None, out_dir: str | Path) -> Path | None:
    """Copy the committed pilot a scale's confirmatory plan was sized on (``plan["pilot"]["folder"]``) into
    ``<out_dir>/pilot/``, replacing an older copy, so a report folder holds every seed its pilot stage shows: the
    pilot's seeds are not retrained by default, and without this copy ``make report`` tested the pilot's primary
    claims on seed 0 alone. Returns the folder, or None when the plan is None (a scale without a confirmatory
    plan), in which case a copy left by another scale is removed so that its seeds never join this scale's; the
    committed pilot itself is never touched.

    Raises:
        FileNotFoundError: the plan names a pilot folder that does not exist.
    """
    target = resolve(out_dir) / PILOT_DIR
    committed = {resolve(p).resolve() for p in _committed_pilots()}
    if plan is None:
        if target.exists() and target.resolve() not in committed:
            shutil.rmtree(target)
        return None
    source = resolve(plan["pilot"]["folder"])
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: the pilot folder the confirmatory plan names is missing; "
                                "restore it from git")
    replace_tree(source, target)
    return target


def _committed_pilots() -> list[str]:
    """The pilot folders every scale's confirmatory plan names (the committed references' own ``pilot/``)."""
    from armlib.reproduction.sections import SCALES, confirmatory_plan

    return [plan["pilot"]["folder"] for plan in map(confirmatory_plan, SCALES.values()) if plan is not None]


def with_pilot(seeds: pd.DataFrame, out_dir: Path) -> pd.DataFrame:
    """The per-seed results plus the committed pilot's (``<out_dir>/pilot/``) for the seeds the results lack:
    the pilot's seeds are not retrained by default, and stay reported."""
    pilot_files = sorted((out_dir / PILOT_DIR).glob("*_seeds.csv"))
    if not pilot_files:
        return seeds
    frames = [f for f in (read_seed_file(p) for p in pilot_files) if f is not None]   # checked, as the results
    if not frames:
        return seeds
    pilot = pd.concat(frames, ignore_index=True).astype({"seed": int})
    keys = ["table", "row", "seed", "metric"]
    merged = pd.concat([seeds, pilot], ignore_index=True)
    return merged.drop_duplicates(keys, keep="first").reset_index(drop=True)
