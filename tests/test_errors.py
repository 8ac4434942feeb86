"""Errors users meet (issue 12): one line naming the thing and what was expected, exit status 2, nothing
half-written, the traceback only with --debug."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from armlib.cli import main
from armlib.config import TrainConfig, load_config
from armlib.data.synth import generate
from armlib.errors import UsageError, check_device, check_out_folder
from armlib.paths import CONFIG_DIR
from armlib.train import CHECKPOINT, LOG, train

SMOKE = str(CONFIG_DIR / "smoke.yaml")


def one_line_error(capsys, *names: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for name in names:
        assert name in err, err
    return err


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cs") / "synth"
    generate(root, seed=0, n_train=2, n_val=2, size=(32, 64))
    return root


def cityscapes_cfg(root, **changes) -> TrainConfig:
    return TrainConfig(dataset="cityscapes", data_root=str(root), annotation="fine", device="cpu", quiet=True,
                       num_workers=0, iterations=1, batch_size=2, crop_size=(32, 32), **changes)


def test_train_out_pointing_at_a_file(tmp_path, capsys):
    out = tmp_path / "run.txt"
    out.write_text("mine")
    assert main(["train", "--config", SMOKE, "--out", str(out)]) == 2
    one_line_error(capsys, "--out", str(out), "expected a folder")
    assert out.read_text() == "mine"
    with pytest.raises(UsageError):
        check_out_folder(out / "below")  # a file as a parent fails the same way, not with a bare errno


def test_missing_dataset_leaves_no_out_folder(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--config", SMOKE, "--out", str(out), "dataset=cityscapes", f"data_root={tmp_path / 'nowhere'}"]
    assert main(args) == 2
    one_line_error(capsys, "data_root", "leftImg8bit", "expected the official layout")
    assert not out.exists()  # was an empty folder
    with pytest.raises(FileNotFoundError, match="leftImg8bit"):  # --debug: the real exception, traceback
        main(["--debug", *args])


def test_cuda_without_a_gpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--config", SMOKE, "--out", str(tmp_path / "run"), "device=cuda"]) == 2
    one_line_error(capsys, "device='cuda'", "device=cpu", "device=auto")
    assert not (tmp_path / "run").exists()
    check_device("cuda", cuda_available=True)
    check_device("auto", cuda_available=False)


def test_override_typo_is_blamed_on_the_command_line(tmp_path, capsys):
    assert main(["train", "--config", SMOKE, "--out", str(tmp_path / "run"), "iteratons=10"]) == 2
    err = one_line_error(capsys, "'iteratons=10' on the command line", "did you mean 'iterations'")
    assert "smoke.yaml: unknown" not in err
    with pytest.raises(UsageError, match=r"^override 'iterations=-1' on the command line \(config .*smoke.yaml\)"):
        load_config(SMOKE, ["iterations=-1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("iteratons: 10\n")
    with pytest.raises(UsageError, match=r"bad.yaml: unknown config key 'iteratons'"):
        load_config(bad, ["iterations=5"])
    bad.write_text("eval_stride: [8, 8]\n")  # valid only together with the override: no one to blame
    assert load_config(bad, ["eval_window=[16, 16]"]).eval_stride == (8, 8)


def test_synth_out_pointing_at_a_file(tmp_path, capsys):
    out = tmp_path / "data.txt"
    out.write_text("mine")
    assert main(["synth", "--out", str(out), "--seed", "0", "--n-train", "1", "--n-val", "1"]) == 2
    one_line_error(capsys, "--out", "expected a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt"] and out.read_text() == "mine"


def test_synth_with_no_images(tmp_path, capsys):
    out = tmp_path / "none"
    assert main(["synth", "--out", str(out), "--seed", "0", "--n-train", "0", "--n-val", "0"]) == 2
    one_line_error(capsys, "--n-train", "--n-val", "nothing to generate")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UsageError, match="nothing to generate"):
        generate(out, seed=0, n_train=0, n_val=0)


def test_synth_with_an_empty_split_prints_its_statistics(tmp_path, capsys):
    # The empty val split has null statistics: printing them raised TypeError after the files were written.
    assert main(["synth", "--out", str(tmp_path / "d"), "--seed", "0", "--n-train", "1", "--n-val", "0",
                 "--size", "32x64"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split() == ["val", "-", "-", "-"]


def test_report_out_dir_typo(tmp_path, capsys):
    (tmp_path / "quick" / "results").mkdir(parents=True)
    (tmp_path / "quick" / "results" / "table1.csv").write_text("row\n")
    assert main(["report", "--out-dir", str(tmp_path / "quik")]) == 2
    one_line_error(capsys, "--out-dir", "does not exist", f"did you mean {tmp_path / 'quick'}")
    assert not (tmp_path / "quik").exists()
    (tmp_path / "empty").mkdir()
    assert main(["report", "--out-dir", str(tmp_path / "empty")]) == 2
    one_line_error(capsys, "holds no results")
    assert list((tmp_path / "empty").iterdir()) == []


def test_val_set_with_nothing_to_score_fails_before_training(cityscapes_root, tmp_path, capsys):
    root = tmp_path / "ignored"
    shutil.copytree(cityscapes_root, root)
    for label in (root / "gtFine" / "val").glob("*/*_labelIds.png"):
        Image.fromarray(np.zeros((32, 64), np.uint8)).save(label)  # id 0 'unlabeled' → 255 everywhere
    with pytest.raises(UsageError, match=rf"no labelled pixel in the val set of dataset='cityscapes' at {root}"):
        train(cityscapes_cfg(root), tmp_path / "run")
    assert not (tmp_path / "run" / LOG).exists() and not (tmp_path / "run" / CHECKPOINT).exists()


def test_broken_val_label_is_found_before_training(cityscapes_root, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(cityscapes_root, root)
    label = sorted((root / "gtFine" / "val").glob("*/*_labelIds.png"))[1]
    label.write_bytes(label.read_bytes()[:40])  # truncated download
    with pytest.raises(UsageError, match=rf"{label.name}: cannot decode label image"):
        train(cityscapes_cfg(root), tmp_path / "run")
    assert not (tmp_path / "run" / LOG).exists()
