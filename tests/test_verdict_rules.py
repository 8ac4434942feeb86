"""One test per sentence of README's "How a verdict is made", each on hand-made per-seed records; the first test
fails when the section gains, loses or rewords a sentence without its test here."""
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from armlib.reproduction import stats, verdict_rules
from armlib.paths import REPO_ROOT
from armlib.reproduction.sections import EQUIVALENCE, FIXED_SEQUENCE, HOLM, PRIMARY, Claim

# the opening words of each sentence, in the README's order, and the test below that checks it
SENTENCES = {
    "Two rows are compared run by run at the same seed": "test_rows_are_paired_by_seed",
    "Per claim the report gives the mean paired Δ": "test_per_claim_statistics_and_the_three_verdicts",
    "The paper's central claims": "test_primary_claims_are_adjusted_and_the_others_keep_their_raw_p",
    "The pilot's seeds": "test_the_pilot_is_exploratory_and_holm_adjusted",
    "The confirmatory verdicts come from new seeds": "test_confirmatory_verdicts_use_only_the_plans_seeds_in_sequence",
    # the follow-up plan's sentences are tested in tests/test_followup.py
    "The full plan": "test_followup.py::test_the_follow_up_sizes_every_comparison_the_first_plan_did_not_test",
    "Its primary family": "test_followup.py::test_the_graphical_procedure_passes_a_rejected_level_on",
    "Each follow-up comparison is sized":
        "test_followup.py::test_each_comparison_is_sized_from_the_upper_bound_at_its_level_and_capped",
    "Nothing is analysed before": "test_followup.py::test_a_comparison_is_pending_until_its_planned_seeds_ran_and_its_family_waits",
    "Table 6's test-time augmentation":
        "test_followup.py::test_table_6_is_tested_on_the_first_plans_seeds_where_both_rows_have_them",
    '"No effect" claims are TOST equivalence tests': "test_no_effect_claims_are_tost_within_one_miou",
    "Repeated comparisons": "test_a_repeated_comparison_counts_once",
    "A seed that diverged or learned nothing": "test_a_failed_seed_takes_the_worst_value_in_the_same_test",
    "Claims that are thresholds": "test_threshold_claims_hold_or_fail_per_seed",
    "`reports/<scale>/results/*_seeds.csv`": "test_claims_csv_recomputes_from_the_committed_files_alone",
}


def _section() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    body = text.split("## How a verdict is made", 1)[1].split("\n## ", 1)[0]
    return " ".join(body.split())


def test_every_sentence_of_the_section_has_its_test():
    sentences = re.split(r"(?<=\.)\s+(?=[A-Z\"`])", _section())
    assert [s[:len(k)] for s, k in zip(sentences, SENTENCES)] == list(SENTENCES) and len(sentences) == len(SENTENCES)
    for name in SENTENCES.values():
        if "::" in name:
            module, name = name.split("::")
            assert f"def {name}(" in (REPO_ROOT / "tests" / module).read_text(), name
        else:
            assert name in globals(), name


def _seeds(table, rows: dict, metric="mIoU", status=None, experiment=None, first_seed=0):
    out = []
    for row, values in rows.items():
        for i, v in enumerate(values):
            s = first_seed + i
            out.append({"table": table, "row": row, "seed": s, "metric": metric, "value": v,
                        "status": (status or {}).get((row, s), "ok"), "experiment": (experiment or {}).get(row, row)})
    return pd.DataFrame(out)


def _one(seeds, claim, **kw):
    return verdict_rules.evaluate_claims(seeds, {seeds.table.iloc[0]: [claim]}, **kw).iloc[0]


def test_rows_are_paired_by_seed():
    """Seed s of one row is compared with seed s of the other: a constant +1 gain on top of a large seed effect
    is decided (SD of Δ 0.1), which an unpaired test of the same values would not be."""
    base = [50.0, 60.0, 70.0, 55.0, 65.0]
    arm = [b + 1 + e for b, e in zip(base, (0.1, -0.1, 0.05, 0.0, -0.05))]
    v = _one(_seeds("t", {"arm": arm, "base": base}), Claim("c", "", "arm", "base"))
    assert v.delta == pytest.approx(1.0) and v.p == pytest.approx(sps.ttest_rel(arm, base).pvalue)
    assert v.verdict == "reproduced" and sps.ttest_ind(arm, base).pvalue > 0.5
    shuffled = _seeds("t", {"arm": arm[1:] + arm[:1], "base": base})   # the same values, other seeds
    assert _one(shuffled, Claim("c", "", "arm", "base")).verdict == "inconclusive"


def test_per_claim_statistics_and_the_three_verdicts():
    """Δ, 95 % t-interval, paired t p, exact sign-flip p, BCa interval from 6 seeds on, MDE and the seeds needed;
    reproduced / contradicted / inconclusive."""
    base = [10.0, 11, 12, 13, 14, 15]
    d = np.array([0.9, 1.1, 1.3, 0.8, 1.2, 1.0])
    v = _one(_seeds("t", {"a": list(np.add(base, d)), "base": base}), Claim("c", "", "a", "base"))
    half = sps.t.ppf(0.975, 5) * d.std(ddof=1) / math.sqrt(6)
    assert (v.delta, v.ci_low, v.ci_high) == pytest.approx((d.mean(), d.mean() - half, d.mean() + half))
    assert v.p == pytest.approx(2 * sps.t.sf(d.mean() / (d.std(ddof=1) / math.sqrt(6)), 5))
    assert v.p_signflip == pytest.approx(2 / 2 ** 6)   # every Δ positive: only the all-plus pattern and its mirror
    assert v.boot_low < d.mean() < v.boot_high
    assert stats.paired_t_power(v.mde, v.sd, 6) == pytest.approx(0.8, abs=1e-6)
    assert math.isnan(_one(_seeds("t", {"a": [11.0, 12.2, 13.0], "base": [10.0, 11, 12]}),
                           Claim("c", "", "a", "base")).boot_low)
    verdicts = [_one(_seeds("t", {"a": a, "base": base}), Claim("c", "", "a", "base")).verdict
                for a in (list(np.add(base, d)), list(np.subtract(base, d)), list(np.add(base, d - 1)))]
    assert verdicts == ["reproduced", "contradicted", "inconclusive"]


def test_primary_claims_are_adjusted_and_the_others_keep_their_raw_p():
    """The primary family is adjusted together; a secondary claim's verdict uses its raw p."""
    base = [10.0, 11, 12, 13, 14]
    seeds = _seeds("t", {"a": [11.1, 11.9, 13.2, 13.8, 15.3], "b": [10.5, 11.2, 12.9, 13.1, 14.6], "base": base})
    claims = {"t": [Claim("pa", "", "a", "base", family=PRIMARY), Claim("pb", "", "b", "base", family=PRIMARY)]}
    v = verdict_rules.evaluate_claims(seeds, claims).set_index("id")
    assert list(v.p_adjusted) == pytest.approx(stats.holm(list(v.p))) and set(v.family) == {PRIMARY}
    secondary = _one(seeds, Claim("sb", "", "b", "base"))
    assert secondary.family == "secondary" and math.isnan(secondary.p_adjusted)
    assert secondary.verdict == ("reproduced" if secondary.p < 0.05 else "inconclusive")


def _plan(comparisons):
    return {"procedure": FIXED_SEQUENCE, "alpha": 0.05, "power": 0.8,
            "comparisons": [{"claims": [cid], "seeds": seeds, "n_needed": len(seeds), "funded": True, "power": 0.8}
                            for cid, seeds in comparisons]}


def test_the_pilot_is_exploratory_and_holm_adjusted():
    """Seeds outside the plan are the pilot: reported with stage "pilot", their primary family Holm-adjusted."""
    pilot = _seeds("t", {"a": [11.0, 12.3, 12.9, 14.1, 15.2], "b": [10.2, 11.4, 12.3, 13.0, 14.4],
                         "base": [10.0, 11, 12, 13, 14]})
    claims = {"t": [Claim("pa", "", "a", "base", family=PRIMARY), Claim("pb", "", "b", "base", family=PRIMARY)]}
    v = verdict_rules.staged_claims(pilot, claims, _plan([("pa", [5, 6]), ("pb", [5, 6])]))
    p = v[v.stage == "pilot"].set_index("id")
    assert set(p.procedure) == {HOLM} and list(p.p_adjusted) == pytest.approx(stats.holm(list(p.p)))
    assert set(v[v.stage == "confirmatory"].verdict) == {"not run"}   # no confirmatory seed has run yet


def test_confirmatory_verdicts_use_only_the_plans_seeds_in_sequence():
    """The plan's seeds alone decide, tested as a fixed sequence in the plan's order at α each: the first not
    rejected stops the sequence, however small a later p."""
    pilot = _seeds("t", {"a": [30.0, 31, 32], "b": [30.0, 31, 32], "base": [10.0, 11, 12]})   # huge pilot gains
    confirm = _seeds("t", {"a": [10.2, 11.5, 11.7, 13.4, 14.0], "b": [11.0, 12.1, 12.9, 14.05, 15.0],
                           "base": [10.0, 11, 12, 13, 14]}, first_seed=5)
    claims = {"t": [Claim("pa", "", "a", "base", family=PRIMARY), Claim("pb", "", "b", "base", family=PRIMARY)]}
    seeds = pd.concat([pilot, confirm])
    v = verdict_rules.staged_claims(seeds, claims, _plan([("pa", list(range(5, 10))), ("pb", list(range(5, 10)))]))
    c = v[v.stage == "confirmatory"].set_index("id")
    a, b = (sps.ttest_rel(confirm[confirm.row == r].value, confirm[confirm.row == "base"].value).pvalue
            for r in ("a", "b"))
    assert a > 0.05 > b   # the data: the first comparison fails, the second alone would pass
    assert c.loc["pa@confirmatory", "p"] == pytest.approx(a) and c.loc["pb@confirmatory", "p"] == pytest.approx(b)
    assert c.loc["pb@confirmatory", "p_adjusted"] == pytest.approx(a)
    assert list(c.verdict) == ["inconclusive", "inconclusive"] and set(c.procedure) == {FIXED_SEQUENCE}
    swapped = verdict_rules.staged_claims(seeds, claims, _plan([("pb", list(range(5, 10))), ("pa", list(range(5, 10)))]))
    assert swapped.set_index("id").loc["pb@confirmatory", "verdict"] == "reproduced"


def test_no_effect_claims_are_tost_within_one_miou():
    """Equivalence: two one-sided t-tests against ±1 (by hand); reproduced when both reject."""
    base = [10.0, 11, 12, 13, 14]
    d = np.array([0.1, -0.2, 0.15, 0.0, -0.1])
    v = _one(_seeds("t", {"o": list(np.add(base, d)), "base": base}),
             Claim("e", "", "o", "base", test=EQUIVALENCE, margin=1.0))
    se = d.std(ddof=1) / math.sqrt(5)
    by_hand = max(sps.t.sf((d.mean() + 1) / se, 4), sps.t.cdf((d.mean() - 1) / se, 4))
    assert v.p_tost == pytest.approx(by_hand) and v.verdict == "reproduced"
    wide = _one(_seeds("t", {"o": list(np.add(base, 8 * d + 0.3)), "base": base}),
                Claim("e", "", "o", "base", test=EQUIVALENCE, margin=1.0))
    assert abs(wide.delta) < 1 and wide.verdict == "inconclusive"   # inside the margin, not shown so


def test_a_repeated_comparison_counts_once():
    """The same two experiments in two tables: one distinct comparison, one member of the family."""
    rows = {"arm": [11, 12.2, 13, 13.8, 15.1], "base": [10, 11, 12, 13, 14]}
    other = {"x": [10.4, 11.3, 12.2, 13.5, 14.1], "base": [10, 11, 12, 13, 14]}
    seeds = pd.concat([_seeds("t1", rows), _seeds("t2", rows), _seeds("t3", other)])
    claims = {"t1": [Claim("a1", "", "arm", "base", family=PRIMARY)],
              "t2": [Claim("a2", "", "arm", "base", family=PRIMARY)],
              "t3": [Claim("x", "", "x", "base", family=PRIMARY)]}
    v = verdict_rules.evaluate_claims(seeds, claims).set_index("id")
    assert v.loc["a1", "comparison"] == v.loc["a2", "comparison"] and v.loc["a1", "tables"] == "t1 t2"
    expected = stats.holm([v.loc["a1", "p"], v.loc["x", "p"]])   # Holm's m counts the repeated comparison once
    assert v.loc["a1", "p_adjusted"] == v.loc["a2", "p_adjusted"] == pytest.approx(expected[0])
    assert v.loc["x", "p_adjusted"] == pytest.approx(expected[1])
    assert len(verdict_rules.distinct_verdicts(v.reset_index())) == 2


def test_a_failed_seed_takes_the_worst_value_in_the_same_test():
    """A failed seed stays in (counted, marked) with mIoU 0 in the same paired test and family: against the claim
    on the side the paper favours, for it on the other side."""
    base = [60.0, 61.0, 62.0, 63.0, 64.0]
    gain = [61.1, 62.0, 63.2, 63.9, 65.1]
    failed_arm = gain[:4] + [math.nan]
    claim = Claim("c", "", "arm", "base", family=PRIMARY)
    against = _one(_seeds("t", {"arm": failed_arm, "base": base}, status={("arm", 4): "diverged"}), claim)
    d = np.subtract(gain[:4] + [0.0], base)
    assert against.n == 5 and against.delta == pytest.approx(d.mean()) and against.n_diverged_a == 1
    assert against.p == pytest.approx(sps.ttest_1samp(d, 0).pvalue) and against.family == PRIMARY
    assert against.verdict == "inconclusive" and "against the claim" in against.note
    assert _one(_seeds("t", {"arm": gain, "base": base}), claim).verdict == "reproduced"   # without the failure
    # the failure on the side the paper disfavours: Table 1's no-detach row, collapsed and one seed diverged
    detach = [62.0, 63.0, 64.5, 63.5, 62.5]
    nodetach = [5.0, 4.0, math.nan, 4.5, 5.5]
    v = _one(_seeds("t", {"detach": detach, "nodetach": nodetach}, status={("nodetach", 2): "diverged"}),
             Claim("d", "", "detach", "nodetach", family=PRIMARY))
    assert v.verdict == "reproduced" and v.n == 5 and "for the claim" in v.note
    assert v.delta == pytest.approx(np.mean(np.subtract(detach, [5.0, 4.0, 0.0, 4.5, 5.5])))
    summary = stats.summarize(_seeds("t", {"nodetach": nodetach}, status={("nodetach", 2): "diverged"}), "quick")
    assert summary.iloc[0].n == 5 and summary.iloc[0].n_diverged == 1   # in the table, marked


def test_a_new_failed_status_joins_the_rule(monkeypatch):
    """A status added to armlib.runs.FAILED_STATUSES (e.g. "learned nothing") is treated as a divergence."""
    from armlib import runs

    monkeypatch.setitem(runs.FAILED_STATUSES, "learned_nothing", "the model learned nothing")
    seeds = _seeds("t", {"arm": [61.1, 62.0, 63.2, 63.9, 30.0], "base": [60.0, 61, 62, 63, 64]},
                   status={("arm", 4): "learned_nothing"})
    v = _one(seeds, Claim("c", "", "arm", "base"))
    assert v.n_diverged_a == 1 and v.delta == pytest.approx(np.mean([1.1, 1.0, 1.2, 0.9, -64.0]))


def test_threshold_claims_hold_or_fail_per_seed():
    """A threshold claim says holds / fails, one per seed where it is measured per seed."""
    rows = [verdict_rules.threshold_claim("moved", "learned_curve", "", "shape change", v, "≥ 0.1", v >= 0.1, seed=s)
            for s, v in enumerate((0.3, 0.05))]
    frame = verdict_rules.threshold_claims_frame(rows)
    assert list(frame.id) == ["moved_s0", "moved_s1"] and list(frame.verdict) == ["holds", "fails"]


def test_claims_csv_recomputes_from_the_committed_files_alone(tmp_path):
    """The committed reference's claims.csv is what its per-seed files (results and pilot) give."""
    import shutil

    from armlib.reproduction import verdicts

    src = REPO_ROOT / "reports" / "quick"
    for sub in ("results", "pilot"):
        shutil.copytree(src / sub, tmp_path / sub)
    (tmp_path / "results" / "claims.csv").unlink()
    again = verdicts.write(tmp_path)
    committed = pd.read_csv(src / "results" / "claims.csv")
    assert list(again.id) == list(committed.id) and list(again.verdict) == list(committed.verdict)
    assert np.allclose(again.delta.astype(float), committed.delta.astype(float), equal_nan=True)


def test_primary_comparisons_carry_a_bonferroni_interval_beside_the_raw_one():
    """Issue 22: the raw 95 % interval stands beside the α/m (Bonferroni) one, m the primary family's size."""
    base = [10.0, 11, 12, 13, 14]
    seeds = _seeds("t", {"a": [11.1, 11.9, 13.2, 13.8, 15.3], "b": [10.5, 11.2, 12.9, 13.1, 14.6], "base": base})
    claims = {"t": [Claim("pa", "", "a", "base", family=PRIMARY), Claim("pb", "", "b", "base", family=PRIMARY),
                    Claim("s", "", "a", "b")]}
    v = verdict_rules.evaluate_claims(seeds, claims).set_index("id")
    d = np.subtract([11.1, 11.9, 13.2, 13.8, 15.3], base)
    res = sps.ttest_1samp(d, 0).confidence_interval(1 - 0.05 / 2)
    assert (v.loc["pa", "ci_bonf_low"], v.loc["pa", "ci_bonf_high"]) == pytest.approx((res.low, res.high))
    assert v.loc["pa", "family_size"] == 2 and math.isnan(v.loc["s", "ci_bonf_low"])


def test_one_experiment_shows_one_set_of_values_wherever_it_appears():
    """Issue 22: Table 2's "input var" (seed 0) and "L2 norm" (seeds 0-4) are one experiment: both get every seed."""
    l2 = _seeds("table2", {"norm_l2": [67.0, 68.0, 66.5]}, experiment={"norm_l2": "e-arm"})
    var = _seeds("table2", {"input_var": [67.0]}, experiment={"input_var": "e-arm"})
    other = _seeds("table4", {"ce_arm": [67.0, 68.0, 66.5, 69.0]}, experiment={"ce_arm": "e-arm"})
    unified = stats.unify_experiments(pd.concat([l2, var, other], ignore_index=True))
    per_row = unified.groupby(["table", "row"]).value.apply(list)
    assert per_row.loc[("table2", "input_var")] == per_row.loc[("table2", "norm_l2")] == [67.0, 68.0, 66.5, 69.0]


def test_a_fixed_sequence_stops_at_a_comparison_that_did_not_run():
    """The second comparison of the plan has no seed: the third cannot be confirmed, however small its p."""
    confirm = _seeds("t", {"a": [11.0, 12.1, 12.9, 14.05, 15.0], "c": [11.0, 12.1, 12.9, 14.05, 15.0],
                           "base": [10.0, 11, 12, 13, 14]}, first_seed=5)
    claims = {"t": [Claim(x, "", x, "base", family=PRIMARY) for x in ("a", "b", "c")]}
    seeds = pd.concat([confirm, _seeds("t", {"b": [11.0]}, first_seed=0)])
    v = verdict_rules.staged_claims(seeds, claims, _plan([("a", list(range(5, 10))), ("b", []), ("c", list(range(5, 10)))]))
    c = v[v.stage == "confirmatory"].set_index("id").verdict
    assert list(c[["a@confirmatory", "b@confirmatory", "c@confirmatory"]]) == ["reproduced", "not run", "inconclusive"]
