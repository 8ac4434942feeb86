"""Fig. 1 — fine vs coarse annotations: the labels of a few training images and the
coarse-label statistics.

One report section: its manifest entry is ``sections.get_section('data')``; its notebook
``notebooks/data.ipynb`` calls :func:`measure` (runs → ``results/data*.csv``)
and :func:`plot` (→ ``figures/data.png``).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from armlib.reproduction import experiments, results, sections, verdict_rules
from armlib.paths import resolve
from armlib.reproduction.plots import colour, rgb, save
from armlib.reproduction.report_sections._runs import FIGURE_IMAGES
from armlib.reproduction.sections import get_scale


def measure(scale="quick", seeds=None, data_root="data", device="auto", out_dir="reports", runs_dir="runs",
            jobs=None) -> tuple[dict, list[dict]]:
    """Fig. 1: fine and coarse labels of a few training images, and the coarse-label statistics."""
    from armlib.reproduction.analysis import training_dataset_for_figures

    sc = get_scale(scale)
    base = sections.row()
    dataset, label_stats = training_dataset_for_figures(sc.config_for(base),
                                                  experiments.overrides(base, sc, data_root)["data_root"])
    samples = [dataset[i] for i in range(min(FIGURE_IMAGES, len(dataset)))]
    rows = [{"data": experiments.overrides(base, sc, data_root).get("dataset", "synth"), **r} for r in label_stats]
    real = resolve(data_root) / "cityscapes"
    if sc.dataset == "synth" and (real / "gtCoarse").is_dir():
        # Real coarse labels beside the synthetic ones, so a reader can judge how realistic ours are.
        from armlib.data import cityscapes_coarse_stats

        rows.append({"data": "cityscapes (real)", "split": "train", **cityscapes_coarse_stats(real)})
    stats_df = pd.DataFrame(rows)
    claims = verdict_rules.threshold_claims_frame([])
    results.write_section(out_dir, "data", summary=stats_df, claims=claims)
    return {"samples": samples, "stats": stats_df, "palette": dataset.palette}, claims


def plot(overview: dict, out_dir="reports"):
    """Fig. 1: image, fine and coarse labels of each sample, coloured by the dataset's palette (index = label)."""
    samples, palette = overview["samples"], overview["palette"]
    fig, axes = plt.subplots(len(samples), 3, figsize=(12, 2.2 * len(samples)), squeeze=False)
    for row, (image, coarse, fine) in zip(axes, samples):
        for ax, pic, title in zip(row, (rgb(image), colour(fine, palette), colour(coarse, palette)),
                                  ("image", "fine", "coarse")):
            ax.imshow(pic)
            ax.set_title(title)
            ax.axis("off")
    return save(fig, out_dir, "data")
