"""armlib.verdicts and the manifest's threshold claims: one criterion, its prose and its verdict from one place."""
import math

import pandas as pd
import pytest

from armlib import stats, verdicts
from armlib.paths import REPO_ROOT
from armlib.sections import SECTIONS, Threshold, get_section


def test_a_threshold_claim_holds_exactly_when_its_criterion_is_met():
    t = Threshold("x", "a claim", "r", ">", 0.5)
    assert t.holds(0.6) and not t.holds(0.5) and not t.holds(math.nan)
    assert Threshold("x", "a claim", "gap", "<", 1e-3).holds(5e-4)
    assert Threshold("x", "a claim", "change", "≥", 0.1).holds(0.1)
    both = Threshold("x", "a claim", "share", ">", 0.5, also_above="the share of all pixels")
    assert both.holds(0.7, reference=0.6) and not both.holds(0.7, reference=0.8) and not both.holds(0.4, 0.1)
    with pytest.raises(ValueError, match="op"):
        Threshold("x", "a claim", "r", "=>", 0.5)


def test_the_criteria_prose_is_generated_from_every_threshold():
    """The learned curve's Hölder criterion (> 0.5) was a literal in tables.py and missing from the prose."""
    criteria = get_section("learned_curve").criteria
    assert "Pearson r moved and > 0.5" in criteria and "max shape change ≥ 0.1" in criteria
    for section in SECTIONS:
        for t in section.thresholds:
            assert f"{t.metric} {t.criterion()}" in section.criteria, t.id


def test_verdicts_threshold_rows():
    row = verdicts.threshold("loss_vs_variance", "fig5_falls", -0.9)
    assert row["verdict"] == stats.HOLDS and row["threshold"] == "< 0" and row["table"] == "loss_vs_variance"
    assert verdicts.threshold("loss_vs_variance", "fig5_falls", 0.2)["verdict"] == stats.FAILS
    row = verdicts.threshold("variance_maps", "fig4_boundaries", 0.6, reference=0.7)
    assert row["verdict"] == stats.FAILS and "(0.70)" in row["threshold"]
    unmoved = verdicts.threshold("learned_curve", "curve_holder", math.nan, seed=3, prerequisite=False)
    assert unmoved["verdict"] == stats.NOT_RUN and unmoved["id"] == "curve_holder_s3" and "seed 3" in unmoved["text"]
    assert verdicts.threshold("learned_curve", "curve_suppresses", 0.5, seed=3,
                              prerequisite=False)["verdict"] == stats.FAILS
    with pytest.raises(ValueError, match="fig9"):
        verdicts.threshold("loss_vs_variance", "fig9", 0.0)


def test_every_measured_threshold_claim_is_declared_in_the_manifest():
    """The committed reference's threshold claims carry the manifest's ids and texts."""
    claims = pd.read_csv(REPO_ROOT / "reports" / "quick" / "results" / "claims.csv")
    thresholds = claims[claims.test == "threshold"]
    assert len(thresholds)
    for c in thresholds.to_dict("records"):
        seed = None if pd.isna(c["seed"]) else int(c["seed"])
        base_id = c["id"] if seed is None else c["id"].removesuffix(f"_s{seed}")
        t = get_section(c["table"]).threshold(base_id)
        assert t.text.format(seed=seed) == c["text"] and t.metric == c["metric"], c["id"]
