"""The confirmatory plan: its sizing functions against independent computations, the committed plan against a
recomputation from the committed pilot, and the plan's hash in every confirmatory run."""
import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from armlib.reproduction import design, stats
from armlib.reproduction.sections import FIXED_SEQUENCE, PLAN_DIR, confirmatory_plan, get_scale, plan_hash


def test_sd_upper_bound_covers_sigma_with_the_stated_confidence():
    """Simulated: the bound from 5 normal values lies above the true σ in 80 % of samples (200 000 samples)."""
    sigma, n = 1.3, 5
    x = np.random.default_rng(0).normal(0, sigma, size=(200_000, n))
    bounds = x.std(1, ddof=1) * math.sqrt((n - 1) / sps.chi2.ppf(0.2, n - 1))
    assert np.mean(bounds >= sigma) == pytest.approx(0.8, abs=0.004)
    assert stats.sd_upper_bound(1.0, n) == pytest.approx(bounds[0] / x[0].std(ddof=1))
    assert math.isnan(stats.sd_upper_bound(1.0, 1))
    with pytest.raises(ValueError, match="confidence"):
        stats.sd_upper_bound(1.0, 5, confidence=80)


@pytest.mark.parametrize("effect, sd, n, margin, alpha", [(0.0, 1.5, 20, 1.0, 0.05), (0.3, 1.0, 12, 1.0, 0.05),
                                                        (0.0, 2.4, 50, 1.0, 0.05), (-0.2, 0.8, 6, 1.0, 0.01)])
def test_tost_power_matches_simulated_tost(effect, sd, n, margin, alpha):
    """Simulated paired TOSTs (statistic by hand: both one-sided t-tests at α), 200 000 experiments."""
    d = np.random.default_rng(1).normal(effect, sd, size=(200_000, n))
    se = d.std(1, ddof=1) / math.sqrt(n)
    crit = sps.t.ppf(1 - alpha, n - 1)
    passed = ((d.mean(1) + margin) / se > crit) & ((margin - d.mean(1)) / se > crit)
    assert stats.tost_power(effect, sd, n, margin, alpha) == pytest.approx(passed.mean(), abs=0.004)


def test_seeds_needed_reach_the_power_and_one_fewer_does_not():
    n = math.ceil(stats.seeds_needed(1.5, 1.85, 0.05))
    assert stats.paired_t_power(1.5, 1.85, n, 0.05) >= 0.8 > stats.paired_t_power(1.5, 1.85, n - 1, 0.05)
    n = math.ceil(stats.tost_seeds_needed(0.0, 2.38, 1.0, 0.05))
    assert stats.tost_power(0.0, 2.38, n, 1.0) >= 0.8 > stats.tost_power(0.0, 2.38, n - 1, 1.0)
    assert math.isnan(stats.tost_seeds_needed(1.2, 1.0, 1.0))   # a true Δ outside the margin: never equivalent


def test_fixed_sequence_is_the_running_maximum_and_stops_at_an_untested_comparison():
    assert stats.fixed_sequence([0.01, 0.003, 0.2, 0.04]) == [0.01, 0.01, 0.2, 0.2]
    out = stats.fixed_sequence([0.01, math.nan, 0.001])
    assert out[0] == 0.01 and math.isnan(out[1]) and math.isnan(out[2])


def test_the_committed_plan_is_what_its_pilot_gives():
    """configs/plans/quick.json recomputed from reports/quick/pilot: the plan cannot drift from its pilot."""
    committed = confirmatory_plan(get_scale("quick"))
    again = json.loads(json.dumps(design.make_plan("quick")))
    assert committed["pilot"]["files"] == again["pilot"]["files"]   # the pilot files are the ones it was sized on
    for c, a in zip(committed["comparisons"], again["comparisons"], strict=True):
        keys = ("claim", "claims", "n_needed", "seeds", "funded")
        assert [c[k] for k in keys] == [a[k] for k in keys]
        assert c["pilot"]["sd_upper"] == pytest.approx(a["pilot"]["sd_upper"], rel=1e-9)
        assert c["power"] == pytest.approx(a["power"], abs=1e-6)
    assert committed["budget"] == pytest.approx(again["budget"])


def test_the_plan_sizes_from_the_upper_bound_in_the_papers_order_within_the_budget():
    plan = confirmatory_plan(get_scale("quick"))
    assert plan["procedure"] == FIXED_SEQUENCE
    assert [c["claim"] for c in plan["comparisons"]] == list(design.ORDER)
    assert all(c["claim"] in c["claims"] for c in plan["comparisons"])
    budget = plan["budget"]
    assert budget["runs_at_scale_seeds"] + budget["confirmatory_runs"] <= budget["runs_affordable"]
    assert (budget["runs_affordable"] * budget["run_wall_s"] / 60 + budget["outside_training_min"]
            <= budget["minutes"])
    first = plan["comparisons"][0]
    assert first["pilot"]["sd_upper"] == pytest.approx(stats.sd_upper_bound(first["pilot"]["sd"], 5))
    assert first["n_needed"] == math.ceil(stats.seeds_needed(first["effect"], first["pilot"]["sd_upper"], 0.05))
    for c in plan["comparisons"]:
        assert not c["seeds"] or min(c["seeds"]) >= design.FIRST_SEED and max(c["seeds"]) < 100
        assert c["funded"] == (len(c["seeds"]) == c["n_needed"])


def test_every_confirmatory_run_carries_the_plan_hash_and_no_pilot_run_does(tmp_path):
    """The hash reaches the run's TrainConfig, hence its record's config; pilot-seed runs keep the old key."""
    from armlib.reproduction.experiments import plan, run_config
    from armlib.runs import run_key

    quick = get_scale("quick")
    h = plan_hash(confirmatory_plan(quick))
    runs = plan("table5", quick, tmp_path)
    planned = {c["table"] + "/" + row: set(c["seeds"]) for c in confirmatory_plan(quick)["comparisons"]
               for row in (c["a"], c["b"])}
    assert {r.seed for r in runs if r.row == "coarse_arm"} == {0} | planned["table5/coarse_arm"]
    for r in runs:
        config = run_config(r, quick).to_dict()
        assert config["plan"] == (h if r.seed >= design.FIRST_SEED else ""), (r.row, r.seed)
        if r.seed < design.FIRST_SEED:   # the pilot's committed runs keep their keys
            assert run_key(config) == run_key({k: v for k, v in config.items() if k != "plan"})


def test_a_changed_plan_has_another_hash(monkeypatch):
    plan = confirmatory_plan(get_scale("quick"))
    changed = {**plan, "alpha": 0.04}
    assert plan_hash(changed) != plan_hash(plan) and plan_hash(json.loads(json.dumps(plan))) == plan_hash(plan)
    assert (PLAN_DIR / "quick.json").exists()


def test_an_unreadable_plan_is_one_line_naming_its_file(tmp_path):
    """The message once named a ``scale`` the reader does not have: a NameError instead of this line."""
    from armlib.reproduction.sections import _read_plan

    bad = tmp_path / "quick.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"quick\.json: this confirmatory plan is unreadable .*restore it from git"):
        _read_plan(bad)
