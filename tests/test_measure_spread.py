"""tests/goldens/measure_spread.py: how far another run (or another machine's results) lies from the goldens."""
import importlib.util
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).parent / "goldens" / "measure_spread.py"
spec = importlib.util.spec_from_file_location("measure_spread", SCRIPT)
measure_spread = importlib.util.module_from_spec(spec)
spec.loader.exec_module(measure_spread)


def test_another_machines_older_results_are_compared_on_the_columns_both_have(tmp_path):
    golden, older = tmp_path / "golden", tmp_path / "older"
    golden.mkdir(), older.mkdir()
    pd.DataFrame({"row": ["a", "b"], "miou": [10.0, 20.0], "p_adjusted": [0.1, 0.2]}).to_csv(golden / "t.csv",
                                                                                          index=False)
    pd.DataFrame({"row": ["a", "b"], "miou": [10.5, 18.0], "p_holm": [0.3, 0.4]}).to_csv(older / "t.csv", index=False)
    found, undefined = measure_spread.spread(golden, older, common_columns=True)
    assert found == {"t.csv": {"miou": 2.0}} and not undefined
    with pytest.raises(SystemExit, match="columns"):
        measure_spread.spread(golden, older)


def test_results_with_other_rows_are_refused_not_compared(tmp_path):
    golden, older = tmp_path / "golden", tmp_path / "older"
    golden.mkdir(), older.mkdir()
    pd.DataFrame({"miou": [10.0, 20.0]}).to_csv(golden / "t.csv", index=False)
    pd.DataFrame({"miou": [10.0]}).to_csv(older / "t.csv", index=False)
    with pytest.raises(SystemExit, match="not a tolerance question"):
        measure_spread.spread(golden, older, common_columns=True)
