"""What the figure sections share: the trained run they analyse and its per-pixel statistics."""
from __future__ import annotations

import json

import pandas as pd
import torch

from armlib.reproduction import analysis, executors, experiments, sections
from armlib.runs import is_failed, read_record
from armlib.reproduction.sections import get_scale


FIGURE_IMAGES = 4          # images painted in Fig. 1 / Fig. 4
ANALYSIS_IMAGES = 64       # images whose pixels feed the figure statistics


def base_run(sc: sections.Scale, runs_dir, seeds=None, data_root="data") -> experiments.Run:
    """The CE model trained on coarse labels (Table 1's base row), first seed: what Figs. 2, 4, 5 analyse."""
    return experiments.plan("table1", sc, runs_dir, seeds, data_root, rows=("base",), first_seed_only=True)[0]


def ensure(run: experiments.Run, sc, data_root, device, jobs=None):
    executors.execute([run], sc, data_root=data_root, device=device, jobs=jobs, desc=run.row)


def pixels(run: experiments.Run, split: str, device: str, n_images: int, with_fine: bool = False):
    """Per-pixel v, CE loss, prediction and labels of a trained run on ``n_images`` of a split."""
    from armlib.reproduction.analysis import iterate_predictions

    out = {"v": [], "loss": [], "pred": [], "target": [], "fine": [], "image": []}
    for image, target, fine, logits in iterate_predictions(run.out, split=split, limit=n_images, device=device,
                                                           with_fine=with_fine):
        stats = analysis.pixel_statistics(logits, target)
        for k in ("v", "loss", "pred"):
            out[k].append(stats[k])
        out["target"].append(target)
        out["image"].append(image)
        if fine is not None:
            out["fine"].append(fine)
    return {k: torch.cat(v) if v else None for k, v in out.items()}


LOSS_CURVE_FILE = "train_loss_curve.json"


def read_cache(path, settings: dict, field: str):
    """``field`` of a run's cached evaluation at ``path`` when it was computed with ``settings``; None when the
    file is absent, damaged (then it is recomputed and rewritten whole) or made with other settings."""
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
    except ValueError:
        return None
    return stored[field] if stored.get("settings") == settings and field in stored else None


def train_loss_curve(run: experiments.Run, device: str = "auto") -> pd.DataFrame:
    """A trained run's mean CE per variance bin (:func:`armlib.reproduction.analysis.loss_per_variance_bin`) on its
    own predictions for :data:`ANALYSIS_IMAGES` training images, cached in ``<run>/train_loss_curve.json``: the
    learned-curve section's Hölder prediction per seed then needs the checkpoint only once, in the chunk that
    trained the run (:mod:`armlib.reproduction.chunks`). Floats are stored as JSON numbers, which round-trip
    exactly, so a cached curve gives the same correlation as a fresh one."""
    from armlib.paths import atomic_write_text

    cache = run.out / LOSS_CURVE_FILE
    key = {"split": "train", "images": ANALYSIS_IMAGES}
    if (stored := read_cache(cache, key, "curve")) is not None:
        return pd.DataFrame(stored)
    px = pixels(run, "train", device, ANALYSIS_IMAGES)
    valid = px["target"] != 255
    curve = analysis.loss_per_variance_bin(px["v"][valid], px["loss"][valid])
    atomic_write_text(cache, json.dumps({"settings": key, "curve": curve.to_dict("list")}))
    return curve


def unusable(run: experiments.Run) -> str | None:
    """Why a finished run has nothing to analyse (a failed status, :func:`armlib.runs.is_failed`), None when "ok"."""
    status = read_record(run.out).get("status", "ok")
    return f"the analysed run ({run.row}, seed {run.seed}) is {status!r}: nothing to analyse" if is_failed(status) else None


def measured_loss_curve(scale, seeds, data_root, device, runs_dir, jobs) -> tuple[pd.DataFrame, str | None]:
    """Mean CE per variance bin of the CE-trained model on validation images (trains the run if missing), and
    None; or no bins and why, when that run learned nothing (a failed status)."""
    sc = get_scale(scale)
    run = base_run(sc, runs_dir, seeds, data_root)
    ensure(run, sc, data_root, device, jobs)
    why = unusable(run)
    if why:
        return analysis.loss_per_variance_bin(torch.zeros(0), torch.zeros(0)).iloc[:0], why
    px = pixels(run, "val", device, ANALYSIS_IMAGES)
    valid = px["target"] != 255
    return analysis.loss_per_variance_bin(px["v"][valid], px["loss"][valid]), None
