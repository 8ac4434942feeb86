"""Results → claims → HTML, on hand-made run records with a known answer."""
import json
import math

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from armlib import report, results  # noqa: E402


def records(rows: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"row": r, "seed": s, "aAcc": 90.0, "mAcc": 80.0, "mIoU": v}
                         for r, values in rows.items() for s, v in enumerate(values)])


def test_summary_mean_std_and_claim_verdicts():
    rec = records({"base": [60.0, 61.0, 62.0], "linear_nodetach": [5.0, 6.0, 4.0],
                   "linear_detach": [62.0, 62.5, 63.5], "linear_focusing": [63.0, 64.0, 65.0]})
    summary = results.summarize(rec, "table1", "quick")
    miou = summary[summary.metric == "mIoU"].set_index("row")
    assert miou.loc["base", "ours_mean"] == pytest.approx(61.0)
    assert miou.loc["base", "ours_std"] == pytest.approx(1.0)
    assert miou.loc["base", "paper"] == pytest.approx(70.33)
    assert miou.loc["base", "n_seeds"] == 3
    claims = {c["id"]: c for c in results.evaluate_claims(rec, "table1")}
    assert claims["t1_detach"]["holds"] and claims["t1_linear"]["holds"]
    assert claims["t1_linear"]["ours"] == pytest.approx(5 / 3)
    assert claims["t1_linear"]["paper"] == pytest.approx(1.80)
    assert not claims["t1_focus"]["holds"]               # focusing beat suppressing here: ✗
    assert not claims["t1_focus_base"]["holds"]
    # paired differences 2, 1.5, 1.5 → se = std/√3
    se = pd.Series([2.0, 1.5, 1.5]).std() / math.sqrt(3)
    assert claims["t1_linear"]["ours_se"] == pytest.approx(se)


def test_diverged_run_counts_as_worst():
    rec = records({"norm_l1": [math.nan], "norm_l2": [70.0]})
    c = {c["id"]: c for c in results.evaluate_claims(rec, "table2")}["t2_l1"]
    assert c["holds"] and c["ours"] == -math.inf and c["paper"] == -math.inf


def test_render_html(tmp_path):
    rec = records({"base": [60.0, 61.0], "linear_detach": [62.0, 63.0]})
    results.write_table(results.summarize(rec, "table1", "quick"), results.evaluate_claims(rec, "table1"),
                        tmp_path, "table1")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "table1.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "results" / "meta_table1.json").write_text(json.dumps(
        {"scale": "quick", "wall_time_s": 120, "git_revision": "abc123", "finding": "1 of 1 claims reproduce"}))
    page = report.render(tmp_path).read_text()
    assert "70.33" in page and "60.50 ± 0.71 (n=2)" in page
    assert "Claims checklist: 1 of 1 hold" in page
    assert "data:image/png;base64," in page
    assert "abc123" in page and "2.0 min" in page  # wall time of notebooks + training
    for key, heading, _ in report.SECTIONS:
        assert f'href="#{key}"' in page
    assert page.count("Not run at this scale") == len(report.SECTIONS) - 1
