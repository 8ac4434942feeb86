"""armlib.reproduction.verdicts and the manifest's threshold claims: one criterion, its prose and its verdict from one place."""
import dataclasses
import math
import re

import pandas as pd
import pytest

from armlib.reproduction import stats, verdicts
from armlib.paths import REPO_ROOT
from armlib.reproduction.sections import SECTIONS, Section, Threshold, get_section


def test_a_threshold_claim_holds_exactly_when_its_criterion_is_met():
    t = Threshold("x", "a claim", "r", ">", 0.5, quantity="r")
    assert t.holds(0.6) and not t.holds(0.5) and not t.holds(math.nan)
    assert Threshold("x", "a claim", "gap", "<", 1e-3, quantity="gap").holds(5e-4)
    assert Threshold("x", "a claim", "change", "≥", 0.1, quantity="change").holds(0.1)
    both = Threshold("x", "a claim", "share", ">", 0.5, quantity="share", reference="all",
                     also_above="the share of all pixels")
    assert both.holds(0.7, reference=0.6) and not both.holds(0.7, reference=0.8) and not both.holds(0.4, 0.1)
    with pytest.raises(ValueError, match="op"):
        Threshold("x", "a claim", "r", "=>", 0.5, quantity="r")
    with pytest.raises(ValueError, match="quantity"):
        Threshold("x", "a claim", "r", ">", 0.5)
    with pytest.raises(ValueError, match="reference"):
        Threshold("x", "a claim", "r", ">", 0.5, quantity="r", reference="all")


def test_the_criteria_prose_is_generated_from_every_threshold():
    """The learned curve's Hölder criterion (> 0.5) was a literal in the old tables.py and missing from the prose."""
    criteria = get_section("learned_curve").criteria
    assert "Pearson r moved and > 0.5" in criteria and "max shape change ≥ 0.1" in criteria
    for section in SECTIONS:
        for t in section.thresholds:
            assert f"{t.metric} {t.criterion()}" in section.criteria, t.id


def test_verdicts_threshold_rows():
    (row,) = verdicts.thresholds("loss_vs_variance", {"spearman_rho": -0.9})
    assert row["verdict"] == stats.HOLDS and row["threshold"] == "< 0" and row["table"] == "loss_vs_variance"
    assert verdicts.thresholds("loss_vs_variance", {"spearman_rho": 0.2})[0]["verdict"] == stats.FAILS
    (row,) = verdicts.thresholds("variance_maps", {"low_var_on_boundary": 0.6, "all_on_boundary": 0.7})
    assert row["verdict"] == stats.FAILS and "(0.70)" in row["threshold"]
    (row,) = verdicts.thresholds("variance_maps", {"low_var_on_boundary": 0.6})   # its reference not measured
    assert row["verdict"] == stats.FAILS and "(nan)" in row["threshold"]
    moved, suppresses, holder_fit = verdicts.thresholds("learned_curve", {"shape_change": 0.05, "suppression": 0.5},
                                                        seed=3)
    assert moved["verdict"] == stats.FAILS and moved["id"] == "curve_moved_s3" and "seed 3" in moved["text"]
    assert suppresses["verdict"] == stats.FAILS           # unmet "fails": its after claim did not hold
    assert holder_fit["verdict"] == stats.NOT_RUN and "curve_moved does not hold" in holder_fit["note"]
    moved, suppresses, holder_fit = verdicts.thresholds(
        "learned_curve", {"shape_change": 0.3, "suppression": 0.5, "holder_correlation": 0.9}, seed=3)
    assert [c["verdict"] for c in (moved, suppresses, holder_fit)] == [stats.HOLDS] * 3


def test_a_section_that_could_not_measure_marks_only_its_unmeasured_claims_not_run():
    toy, arm_fit, l1 = verdicts.thresholds("holder", {"toy_gap": 1e-5}, why="the base run learned nothing")
    assert toy["verdict"] == stats.HOLDS
    assert arm_fit["verdict"] == l1["verdict"] == stats.NOT_RUN and arm_fit["note"] == "the base run learned nothing"
    (rho,) = verdicts.thresholds("loss_vs_variance", {}, why="diverged")
    assert rho["verdict"] == stats.NOT_RUN and math.isnan(rho["value"])


def test_a_new_threshold_claim_is_one_manifest_line(monkeypatch):
    """A claim over a quantity the section already records needs no code: the manifest line is read as data."""
    section = get_section("holder")
    extra = Threshold("holder_toy_loose", "The solver is near the closed form", "max |w_closed − w_solver|", "<",
                      1e-2, quantity="toy_gap")
    patched = dataclasses.replace(section, thresholds=(*section.thresholds, extra))
    monkeypatch.setattr(verdicts, "get_section", lambda key: patched if key == "holder" else get_section(key))
    rows = verdicts.thresholds("holder", {"toy_gap": 5e-3, "arm_gap": 0.01, "l1_differentiated_gap": 0.5})
    assert [r["id"] for r in rows] == ["holder_toy", "holder_arm", "holder_l1", "holder_toy_loose"]
    assert rows[0]["verdict"] == stats.FAILS and rows[-1]["verdict"] == stats.HOLDS
    assert "holder_toy_loose: max |w_closed − w_solver| < 0.01" in patched.criteria


def test_a_prerequisite_must_be_an_earlier_threshold_of_its_section():
    moved = Threshold("moved", "moved", "change", "≥", 0.1, quantity="change")
    holder_fit = Threshold("fit", "fits", "r", ">", 0.5, quantity="r", after="moved")
    assert Section("s", "h", "c", thresholds=(moved, holder_fit)).thresholds[1].after == "moved"
    with pytest.raises(ValueError, match="'fit' comes after 'moved'"):
        Section("s", "h", "c", thresholds=(holder_fit, moved))


@pytest.mark.parametrize("section", [s for s in SECTIONS if s.thresholds], ids=lambda s: s.key)
def test_every_threshold_quantity_is_recorded_by_its_section(section):
    """A manifest line naming a quantity its section's measure() never records would always read NaN."""
    source = (REPO_ROOT / "armlib" / "reproduction" / "report_sections" / f"{section.key}.py").read_text()
    recorded = set(re.findall(r'"(\w+)":', source))
    if section.key == "variance_maps":   # its quantities are analysis.low_variance_boundary_share's keys
        analysis = REPO_ROOT / "armlib" / "reproduction" / "analysis.py"
        recorded |= set(re.findall(r'"(\w+)":', analysis.read_text()))
    for t in section.thresholds:
        assert t.quantity in recorded and (not t.reference or t.reference in recorded), t.id


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
