"""The transcription of the paper's Tables 1–6 is complete, and agrees with the deltas the paper prints."""
import pytest

from armlib.reproduction.paper import load_paper_results

EXPECTED_ROWS = {
    "table1": {"base", "linear_nodetach", "linear_detach", "linear_focusing"},
    "table2": {"base", "norm_l1", "norm_l2", "norm_l3", "input_var", "input_std", "input_logvar", "input_entropy"},
    "table3": {f"{d}_{m}_{v}" for d in ("coarse", "fine") for m in ("r50", "r101", "dlv3p", "ocr")
               for v in ("base", "arm")},
    "table4": {"kl", "ce", "gce", "kl_arm", "ce_arm", "gce_arm"},
    "table5": {f"{d}_{m}" for d in ("fine", "ade", "coarse") for m in ("base", "ohem", "arm")},
    "table6": {"cpnet", "bfp", "ocnet", "acfnet", "gald", "ocr_r101", "dgcnet", "acnet", "ocr_hrnet", "dpc",
               "gscnn", "decouple", "dranet", "resnest", "base", "ohem", "linear_arm", "arm"},
}


def test_every_row_and_metric_is_transcribed():
    paper = load_paper_results()
    assert set(paper) == set(EXPECTED_ROWS)
    for table, rows in EXPECTED_ROWS.items():
        assert set(paper[table]["rows"]) == rows, table
        metrics = paper[table].get("metrics", ["aAcc", "mAcc", "mIoU"])
        for row in paper[table]["rows"].values():
            assert row["label"]
            if table != "table6":   # Table 6 has '-' cells; 1–5 are full (NaN written as null)
                assert set(metrics) <= set(row), row


# The paper prints improvements in parentheses (Tables 4–6): an independent check of the transcription.
PRINTED_DELTAS = [
    ("table4", "kl_arm", "kl", "mIoU", 2.80), ("table4", "ce_arm", "ce", "mIoU", 1.61),
    ("table4", "gce_arm", "gce", "mIoU", 0.85),
    ("table5", "fine_ohem", "fine_base", "mIoU", 0.47), ("table5", "fine_arm", "fine_base", "mIoU", 0.97),
    ("table5", "ade_ohem", "ade_base", "mIoU", 0.87), ("table5", "ade_arm", "ade_base", "mIoU", 0.60),
    ("table5", "coarse_ohem", "coarse_base", "mIoU", -0.02), ("table5", "coarse_arm", "coarse_base", "mIoU", 1.61),
    ("table6", "ohem", "base", "fine", 0.42), ("table6", "linear_arm", "base", "fine", 0.66),
    ("table6", "arm", "base", "fine", 0.48), ("table6", "ohem", "base", "coarse", -0.10),
    ("table6", "linear_arm", "base", "coarse", 0.35), ("table6", "arm", "base", "coarse", 0.68),
    ("table6", "ohem", "base", "ade20k", 0.84), ("table6", "linear_arm", "base", "ade20k", 1.04),
    pytest.param("table6", "arm", "base", "ade20k", 0.63, marks=pytest.mark.xfail(
        strict=True, reason="paper inconsistency: 47.19 - 46.46 = 0.73, printed +0.63 (see _notes)")),
]


@pytest.mark.parametrize("table, a, b, metric, delta", PRINTED_DELTAS)
def test_printed_improvements(table, a, b, metric, delta):
    rows = load_paper_results()[table]["rows"]
    assert rows[a][metric] - rows[b][metric] == pytest.approx(delta, abs=1e-6)


def test_rows_shared_between_tables_agree():
    p = load_paper_results()
    base = p["table1"]["rows"]["base"]
    arm = p["table2"]["rows"]["norm_l2"]
    for table, row in [("table2", "base"), ("table3", "coarse_r101_base"), ("table3", "coarse_dlv3p_base"),
                       ("table4", "ce"), ("table5", "coarse_base")]:
        assert p[table]["rows"][row] | {"label": ""} == base | {"label": ""}, (table, row)
    for table, row in [("table2", "input_var"), ("table3", "coarse_r101_arm"), ("table4", "ce_arm"),
                       ("table5", "coarse_arm")]:
        assert p[table]["rows"][row] | {"label": ""} == arm | {"label": ""}, (table, row)
    assert p["table1"]["rows"]["linear_detach"]["mIoU"] - base["mIoU"] == pytest.approx(1.80)  # Sec. 4.3 text
