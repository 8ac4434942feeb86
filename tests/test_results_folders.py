"""Partial and mixed results folders are said to be what they are (issue 21): `armlib report` labels them on the
page and in its output, `armlib compare` tells "missing" from "different"."""
from __future__ import annotations

import argparse
import json
import shutil

import pytest

from armlib.reproduction import compare, report
from armlib.paths import REPO_ROOT
from armlib.reproduction.results import folder_state
from armlib.reproduction.sections import SECTION_KEYS

REFERENCE = REPO_ROOT / "reports" / "quick"


def only_sections(tmp_path, keys, name="mine"):
    """A copy of the reference's results holding only ``keys``' files (what `reproduce --only` writes)."""
    folder = tmp_path / name / "results"
    folder.mkdir(parents=True)
    for key in keys:
        for pattern in (f"{key}.csv", f"{key}_seeds.csv", f"claims_{key}.csv", f"meta_{key}.json"):
            for path in (REFERENCE / "results").glob(pattern):
                shutil.copy(path, folder / path.name)
    return folder.parent


@pytest.fixture(scope="module")
def reference_copy(tmp_path_factory):
    return only_sections(tmp_path_factory.mktemp("ref"), SECTION_KEYS, "reference")


def test_a_whole_reproduction_has_no_label(reference_copy):
    assert folder_state(reference_copy) is None


def test_partial_and_mixed_folders_are_labelled_on_the_page_and_in_the_output(tmp_path, capsys):
    mine = only_sections(tmp_path, ["table1", "holder"])
    meta = mine / "results" / "meta_holder.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "scale": "smoke"}))   # holder run by hand at smoke
    state = folder_state(mine)
    assert state.startswith("mixed scales: ") and "quick (table1)" in state and "smoke (holder)" in state
    assert f"incomplete: 2 of {len(SECTION_KEYS)} sections have results" in state and "table2" in state
    assert report.run(argparse.Namespace(out_dir=mine)) == 0          # a `reproduce --only` report stays possible
    assert "not one whole reproduction: mixed scales" in capsys.readouterr().err
    assert "Not one whole reproduction: mixed scales" in (mine / "index.html").read_text()


def test_compare_tells_missing_from_different(reference_copy, tmp_path, capsys):
    mine = only_sections(tmp_path, ["table1"])
    table = compare.compare_reports(reference_copy, mine)
    ran_elsewhere = table[~table.id.isin(compare.compare_reports(mine, mine).id)]
    assert set(table.status) <= {"agrees", "missing"} and (table.status == "missing").sum() > 0
    assert (ran_elsewhere.status != "differs").all()
    compare.run(argparse.Namespace(reference=reference_copy, mine=mine))
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert "; 0 differ; " in summary and f"{(table.status == 'missing').sum()} missing" in summary
