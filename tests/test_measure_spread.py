"""tests/goldens/measure_spread.py: each variant's settings reach the reproduction it runs."""
import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent / "goldens" / "measure_spread.py"
spec = importlib.util.spec_from_file_location("measure_spread", SCRIPT)
measure_spread = importlib.util.module_from_spec(spec)
spec.loader.exec_module(measure_spread)


def test_a_threads_variant_reaches_every_training_run_of_the_smoke_scale(monkeypatch):
    import armlib.cli
    from armlib.reproduction import sections

    seen = {}

    def fake_main(argv):
        seen["threads"], seen["argv"] = sections.SCALES["smoke"].threads, argv
        return 0

    monkeypatch.setattr(armlib.cli, "main", fake_main)
    monkeypatch.setattr(sections, "SCALES", dict(sections.SCALES))   # the snippet replaces the smoke entry
    monkeypatch.setattr(sys, "argv", ["-c", "2", "reproduce", "--scale", "smoke"])
    try:
        exec(measure_spread.REPRODUCE_WITH_THREADS, {})
    except SystemExit as stop:
        assert stop.code == 0
    assert seen == {"threads": 2, "argv": ["reproduce", "--scale", "smoke"]}


def test_environment_settings_and_threads_are_split(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(measure_spread.subprocess, "run", lambda cmd, env, cwd, check: calls.append((cmd, env)))
    measure_spread.run_variant(["ATEN_CPU_CAPABILITY=default", "threads=2"], tmp_path)
    (cmd, env), = calls
    assert env["ATEN_CPU_CAPABILITY"] == "default" and env["OMP_NUM_THREADS"] == "2" and "threads" not in env
    assert cmd[3] == "2" and cmd[4:7] == ["reproduce", "--scale", "smoke"]
