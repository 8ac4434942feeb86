"""Per-seed results → claims → HTML, on hand-made result files with a known answer."""
import json
import math
from html.parser import HTMLParser

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from armlib.reproduction import report, report_cells, results, stats, verdicts  # noqa: E402
from armlib.reproduction.sections import SECTIONS, confirmatory_plan, get_scale  # noqa: E402


def records(rows: dict[str, list[float]], status: dict | None = None) -> pd.DataFrame:
    return pd.DataFrame([{"row": r, "seed": s, "aAcc": 90.0, "mAcc": 80.0, "mIoU": v,
                          "status": (status or {}).get((r, s), "ok"), "experiment": f"exp-{r}"}
                         for r, values in rows.items() for s, v in enumerate(values)])


def test_summary_keeps_every_seed_and_counts_the_diverged():
    rec = records({"base": [60.0, 61.0, 62.0], "linear_nodetach": [5.0, math.nan, 4.0]},
                  status={("linear_nodetach", 1): "diverged"})
    per_seed = stats.seed_results(rec, "table1")
    assert len(per_seed) == 6 * 3 and set(per_seed.columns) == set(stats.SEED_COLUMNS)
    miou = stats.summarize(per_seed, "quick").query("metric == 'mIoU'").set_index("row")
    assert miou.loc["base", "mean"] == pytest.approx(61.0) and miou.loc["base", "std"] == pytest.approx(1.0)
    assert miou.loc["base", "paper"] == pytest.approx(70.33)
    assert miou.loc["linear_nodetach", "n"] == 3 and miou.loc["linear_nodetach", "n_diverged"] == 1
    assert miou.loc["linear_nodetach", "mean"] == pytest.approx(4.5)   # over the finished seeds, marked


def write(tmp_path, table, rec):
    """A section's per-seed and summary files as its notebook writes them, then the verdicts (reproduce's order)."""
    per_seed = stats.seed_results(rec, table)
    results.write_section(tmp_path, table, per_seed=per_seed, summary=stats.summarize(per_seed, "quick"))
    verdicts.write(tmp_path)


def test_render_html_from_result_files_alone(tmp_path):
    write(tmp_path, "table1", records({"base": [60.0, 61.0, 62.0], "linear_detach": [62.0, 63.1, 64.0]}))
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "table1.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "results" / "meta_table1.json").write_text(json.dumps(
        {"scale": "quick", "seeds": [0, 1, 2], "wall_time_s": 120, "git_revision": "abc123",
         "versions": {"torch": "2.14.1", "scipy": "1.17.1"}, "finding": "1 distinct claims: 1 reproduced."}))
    page = report.render(tmp_path).read_text()
    claims = pd.read_csv(tmp_path / "results" / "claims.csv")
    linear = claims.set_index("id").loc["t1_linear"]
    assert linear.verdict == "reproduced" and linear.family == "primary"
    assert "70.33" in page and "61.00 ± 1.00" in page
    assert "data:image/png;base64," in page and "abc123" in page and "2.0 min" in page
    assert "torch 2.14.1, scipy 1.17.1" in page
    assert "Pilot, primary" in page and "reproduced" in page
    for section in SECTIONS:
        assert f'href="#{section.key}"' in page
    assert page.count("Not run at this scale (no result files)") == len(SECTIONS) - 1


def test_the_first_screen_is_the_forest_plot_and_the_verdicts(tmp_path):
    """Issue 22: before any table, a forest plot of every tested comparison and the verdict list; each row's
    seeds, pilot and confirmatory apart; one-seed comparisons apart; Bonferroni beside the raw interval; no
    relative Δ over a collapsed base; rows name what ran."""
    write(tmp_path, "table1", records({"base": [60.0, 61.0, 62.0], "linear_detach": [62.0, 63.1, 64.0],
                                       "linear_nodetach": [5.0, 4.0, 3.0], "linear_focusing": [59.0]}))
    write(tmp_path, "table3", records({"coarse_r101_base": [60.0, 61.0, 62.0], "coarse_r101_arm": [61.0, 62.5, 62.7]}))
    confirm = records({"base": [60.0, 61.0], "linear_detach": [62.0, 63.1]}).assign(seed=[5, 6, 5, 6])
    write(tmp_path / "more", "table1", confirm)
    merged = pd.concat([pd.read_csv(tmp_path / "results" / "table1_seeds.csv"),
                        pd.read_csv(tmp_path / "more" / "results" / "table1_seeds.csv")])
    merged.to_csv(tmp_path / "results" / "table1_seeds.csv", index=False)
    for key in ("table1", "table3"):
        (tmp_path / "results" / f"meta_{key}.json").write_text(json.dumps({"scale": "quick"}))
    page = report.render(tmp_path).read_text()
    first_table = page.index("<table")
    # the verdict list first: at 1280×900 the forest plot alone filled the first screen
    assert page.index("Verdicts, each distinct") < page.index('alt="forest_verdicts"') < first_table
    assert "0–2 (pilot); 5–6 (confirmatory)" in page   # table1 base: pilot and confirmatory seeds apart
    assert "One seed: no test" in page and "Bonferroni α/" in page
    assert "deeplabv3plus_tiny [paper: ResNet101]" in page   # what ran, the paper's role beside it
    section = page[page.index('<h2 id="table1">'):]
    detach = section[section.index("Detaching the normalisation is essential"):][:2000]
    assert "+68.10</td>" in detach and "%" not in detach.split("</td>")[2]   # no relative Δ over a collapsed base
    assert "Linear ARM (detached, suppressing) beats the base model — <span class=\"ok\">reproduced" in page



def test_one_seed_says_why_nothing_is_decided(tmp_path):
    write(tmp_path, "table1", records({"base": [60.0], "linear_detach": [70.0]}))
    (tmp_path / "results" / "meta_table1.json").write_text(json.dumps({"scale": "paper", "seeds": [0]}))
    page = report.render(tmp_path).read_text()
    assert "needs at least two seeds" in page
    assert set(pd.read_csv(tmp_path / "results" / "claims.csv").verdict) <= {"inconclusive", "not run"}


def test_claims_csv_is_the_same_from_the_committed_files_alone(tmp_path):
    """Anyone can re-analyse a report: claims.csv is recomputed from the per-seed files, whatever the notebooks
    showed when they ran."""
    write(tmp_path, "table1", records({"base": [60.0, 61.0, 62.0], "linear_detach": [62.0, 63.1, 64.0]}))
    first = verdicts.evaluate(tmp_path)
    (tmp_path / "results" / "claims_table1.csv").unlink()
    pd.testing.assert_frame_equal(verdicts.evaluate(tmp_path), first)


def test_claims_recompute_from_the_committed_reference(tmp_path):
    """claims.csv is a function of the result files alone: the quick reference's recomputes, every text (verdicts,
    notes, procedures) exactly and every number to a relative 1e-9, and each comparison section's
    claims_<key>.csv is its rows of claims.csv.

    Not byte for byte: the numbers come from scipy's root finders and vectorised special functions, whose last
    digits differ between CPUs (n_needed 33.16872899487382 on an AVX2-only AMD EPYC against the committed
    ...348: 1e-14 relative); 1e-9 is five orders above that and far below any printed digit."""
    import shutil

    from armlib.paths import REPO_ROOT
    from test_goldens import frame_differences

    committed = REPO_ROOT / "reports" / "quick" / "results"
    shutil.copytree(committed, tmp_path / "results")
    results.attach_pilot(confirmatory_plan(get_scale("quick")), tmp_path)   # as reproduce does
    (tmp_path / "results" / "claims.csv").unlink()
    claims = verdicts.write(tmp_path)
    ours, reference = (pd.read_csv(folder / "claims.csv") for folder in (tmp_path / "results", committed))
    assert frame_differences("claims.csv", reference, ours, rtol=1e-9) == []
    moved = ours.copy()
    moved.loc[moved.n_needed.notna().idxmax(), "n_needed"] *= 1 + 1e-8   # the comparison can fail
    assert frame_differences("claims.csv", reference, moved, rtol=1e-9) != []
    for key in results.read_seed_results(tmp_path).table.unique():
        view = pd.read_csv(tmp_path / "results" / f"claims_{key}.csv")
        assert len(view) and set(view.table) == {key}
        assert len(view) == (claims.table == key).sum()


def test_the_renderer_refuses_per_seed_results_without_their_verdicts(tmp_path):
    from armlib.errors import UsageError

    write(tmp_path, "table1", records({"base": [60.0, 61.0, 62.0], "linear_detach": [62.0, 63.1, 64.0]}))
    (tmp_path / "results" / "claims.csv").unlink()
    with pytest.raises(UsageError, match="claims.csv"):
        report.render(tmp_path)
    assert not (tmp_path / "index.html").exists()


def test_compare_says_which_claims_agree_with_a_reference(tmp_path, capsys):
    from armlib.cli import main
    from armlib.reproduction.compare import compare_reports

    ref, same, other = tmp_path / "ref", tmp_path / "same", tmp_path / "other"
    base = {"base": [60.0, 61.0, 62.0]}
    write(ref, "table1", records({**base, "linear_detach": [62.0, 63.1, 64.0]}))
    write(same, "table1", records({**base, "linear_detach": [62.1, 63.0, 64.1]}))
    write(other, "table1", records({**base, "linear_detach": [58.0, 59.2, 60.1]}))
    assert compare_reports(ref, same).set_index("id").loc["t1_linear", "agrees"]
    row = compare_reports(ref, other).set_index("id").loc["t1_linear"]
    assert not row.agrees and row.why == "verdicts differ"
    assert main(["compare", str(ref), str(other)]) == 0
    assert "t1_linear" in capsys.readouterr().out
    assert main(["compare", str(ref), str(tmp_path / "typo")]) == 2


def test_the_readme_quotes_the_committed_reference_from_its_meta_files():
    from armlib.paths import REPO_ROOT

    quoted = report.reference_summary(REPO_ROOT / "reports" / "quick")
    assert quoted in (REPO_ROOT / "README.md").read_text().replace("\n", " "), quoted


def test_a_report_never_mixes_two_scales(tmp_path):
    write(tmp_path, "table1", records({"base": [60.0, 61.0, 62.0], "linear_detach": [62.0, 63.1, 64.0]}))
    write(tmp_path, "table2", records({"base": [60.0, 61.0, 62.0], "norm_l2": [62.0, 63.1, 64.0]}))
    (tmp_path / "results" / "meta_table1.json").write_text(json.dumps({"scale": "quick"}))
    (tmp_path / "results" / "meta_table2.json").write_text(json.dumps({"scale": "smoke"}))
    assert set(results.read_seed_results(tmp_path, scale="quick").table) == {"table1"}
    removed = results.discard_other_scales(tmp_path, "quick")
    assert {p.name for p in removed} >= {"table2_seeds.csv", "claims_table2.csv", "meta_table2.json"}
    assert set(results.read_seed_results(tmp_path).table) == {"table1"}


def test_table6_tta_miou_leaves_out_the_unresolved_classes_as_every_table(tmp_path, monkeypatch):
    """Issue 22: Table 6's TTA mIoU averaged all classes while the other tables left the unresolved ones out."""
    from armlib.reproduction import analysis, experiments
    from armlib.reproduction.report_sections import paper_tables
    from armlib.reproduction.sections import get_scale

    run = experiments.Run("arm@coarse", 0, {}, tmp_path)
    (tmp_path / "record.json").write_text(json.dumps({"status": "ok", "class_names": ["road", "sky", "pole"],
                                                      "config": {"unresolved_classes": ["pole"]}}))
    measured = {"aAcc": 90.0, "mIoU": 50.0, "IoU": [80.0, 70.0, 0.0], "Acc": [90.0, 80.0, 0.0]}
    monkeypatch.setattr(analysis, "evaluate_run", lambda *a, **k: measured)
    (tmp_path / "tta.json").write_text(json.dumps({"settings": {"scales": [0.75, 1.0, 1.25], "flip": True},
                                                   "metrics": {"mIoU": 50.0}}))   # a cache from before the fix
    metrics = paper_tables.tta_metrics(run, get_scale("quick"))
    assert metrics["mIoU"] == pytest.approx(75.0) and metrics["mIoU_all_classes"] == pytest.approx(50.0)


def test_reproduce_attaches_the_committed_pilot_and_a_scale_without_a_plan_drops_a_stale_copy(tmp_path):
    """The bug this guards: `make report` writes to reports/, whose pilot/ nobody filled, so the pilot stage of
    every primary claim was tested on seed 0 alone ("one paired seed") instead of the committed seeds 0-4."""
    import filecmp

    from armlib.paths import REPO_ROOT

    committed = REPO_ROOT / "reports" / "quick" / "pilot"
    copy = results.attach_pilot(confirmatory_plan(get_scale("quick")), tmp_path)
    assert copy == tmp_path / "pilot"
    names = sorted(p.name for p in committed.iterdir())
    assert sorted(p.name for p in copy.iterdir()) == names
    assert filecmp.cmpfiles(committed, copy, names, shallow=False)[0] == names
    seeds = results.with_pilot(results.read_seed_results(tmp_path), tmp_path)
    assert set(seeds[seeds.table == "table5"].seed) == {0, 1, 2, 3, 4}
    assert results.attach_pilot(confirmatory_plan(get_scale("smoke")), tmp_path) is None
    assert not copy.exists()   # a smoke report never joins the quick pilot's seeds
    results.attach_pilot(None, REPO_ROOT / "reports" / "quick")
    assert committed.is_dir()   # the committed pilot itself is never removed


class _Headings(HTMLParser):
    """A page's h2 headings in order, each with the visible text (img alt included) up to the next one."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.heading = [], False   # [heading, text under it]

    def handle_starttag(self, tag, attrs):
        if tag == "h2":
            self.parts.append(["", ""])
        self.heading = self.heading or tag == "h2"
        if tag == "img" and self.parts:
            self.parts[-1][1] += f" [{dict(attrs)['alt']}] "

    def handle_endtag(self, tag):
        self.heading = self.heading and tag != "h2"

    def handle_data(self, data):
        if self.parts:
            self.parts[-1][0 if self.heading else 1] += data


def test_the_committed_reference_renders_every_claim_in_its_section_in_the_page_order(tmp_path):
    """The committed quick reference, rendered from a copy (render writes index.html and figures/ into its folder):
    the verdicts before the first table, the headings in the page's order, every claim's text in its own section,
    every figure inlined once."""
    import re
    import shutil

    from armlib.paths import REPO_ROOT

    folder = tmp_path / "quick"
    shutil.copytree(REPO_ROOT / "reports" / "quick", folder)
    page = report.render(folder).read_text()
    assert page.index("<h2>Verdicts, each distinct comparison once</h2>") < page.index("<h2>Every tested comparison")
    assert page.index('alt="forest_verdicts"') < page.index("<table") < page.index("<h2 id=calibration>")
    parser = _Headings()
    parser.feed(page)
    sections = {h: re.sub(r"\s+", " ", text) for h, text in parser.parts}
    scale = get_scale("quick")
    heading = {s.key: report_cells.what_ran(s.heading, scale) for s in SECTIONS}   # the page names what ran
    assert [h for h, _ in parser.parts] == ["Verdicts, each distinct comparison once", "Every tested comparison", "Setup",
                                            "Contents", "Calibration: how this scale's T was chosen", *heading.values()]
    assert re.findall(r'<li><a href="#(\w+)">', page) == ["calibration", *heading]
    claims = pd.read_csv(folder / "results" / "claims.csv")
    assert len(claims) > 100 and set(claims.table) <= set(heading)
    for c in claims.itertuples():
        text = str(c.text) if c.test == "threshold" else report_cells.what_ran(str(c.text), scale)
        assert text in sections[heading[c.table]], c.id
    shown = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    assert sorted(shown) == sorted(p.stem for p in (folder / "figures").glob("*.png"))
