"""Notebook parameters in every form papermill can deliver them."""
from __future__ import annotations

import pytest

from armlib.errors import UsageError
from armlib.reproduction.parameters import parse_jobs, parse_seeds


@pytest.mark.parametrize("value, expected", [
    (None, None), ("", None), ("None", None), (2, [2]), ("2", [2]),
    ("0,1", [0, 1]),  # papermill -p seeds 0,1 without -y: a string, iterated as '0', ',', '1' before
    ("0 1 2", [0, 1, 2]), ("[0, 1]", [0, 1]), ("(3,4)", [3, 4]), ([0, 1], [0, 1]), ((5,), [5]), (["0", "1"], [0, 1]),
    (2.0, [2]),
])
def test_parse_seeds_accepts(value, expected):
    assert parse_seeds(value) == expected


@pytest.mark.parametrize("value, expected", [
    ("0,a", "expected an integer"), (",", "at least one seed"), ([], "at least one seed"), (True, "integer"),
    ("-1", ">= 0"), ([0, 0], "repeated"), (1.5, "integer"), ({"a": 1}, "integer"),
])
def test_parse_seeds_refuses_in_one_line_naming_seeds(value, expected):
    with pytest.raises(UsageError, match=expected) as info:
        parse_seeds(value)
    assert str(info.value).startswith("seeds") and "\n" not in str(info.value)


def test_parse_jobs():
    assert parse_jobs(None) is None and parse_jobs("none") is None
    assert parse_jobs(2) == 2 and parse_jobs("3") == 3
    for bad in (0, "two", True):
        with pytest.raises(UsageError, match="^jobs"):
            parse_jobs(bad)
