"""Issue 30, "nothing silently wrong, every error one line": one test or more per case, each failing before the fix.

1. image modes PIL opens besides 8-bit RGB; 2. Cityscapes polygons marked deleted; 3. evaluate_model with nothing
to score; 4. (ARM in sync under DDP without a line of its own: tests/test_readme.py); 5. one line, exit 2, for a
resume with another config, a checkpoint lacking a key, a runs folder nothing can be written to, and
``calibrate --from-records`` over an empty or damaged records folder; 6. a moved runs folder resumes, another data
set is refused.
"""
from __future__ import annotations

import errno
import json
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from armlib.cli import main as cli_main
from armlib.config import load_config
from armlib.data.folder import PairedSegmentationDataset, to_rgb8
from armlib.data.loading import prepare_data
from armlib.paths import CONFIG_DIR
from armlib.runs import CHECKPOINT, RECORD
from armlib.train import train

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


# -- 1. every image mode converted exactly to 8-bit RGB, or refused ------------------------------------------------

def _png16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit-per-channel RGB (H×W×3) or RGBA (H×W×4) PNG written by hand: PIL writes none."""
    height, width, channels = pixels.shape
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 16, {3: 2, 4: 6}[channels], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def _read(path: Path) -> np.ndarray:
    return PairedSegmentationDataset.read_image(path)


@pytest.fixture
def gray16():
    return np.array([[0, 257, 32767], [32896, 65280, 65535]], dtype=np.uint16)


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path, gray16):
    Image.fromarray(gray16).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode == "I;16"
    expected = np.round(gray16.astype(np.float64) * 255 / 65535).astype(np.uint8)   # float64, a different method
    rgb = _read(tmp_path / "g.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert all((rgb[..., c] == expected).all() for c in range(3))
    # the bug: PIL's convert("RGB") clips every value above 255
    assert (np.array(Image.open(tmp_path / "g.png").convert("RGB"))[..., 0] == np.minimum(gray16, 255)).all()


@pytest.mark.parametrize("channels", [3, 4])
def test_sixteen_bit_colour_keeps_the_high_byte(tmp_path, channels):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, size=(4, 5, channels), dtype=np.uint16)
    _png16(tmp_path / "c.png", pixels)
    assert (_read(tmp_path / "c.png") == (pixels[..., :3] >> 8).astype(np.uint8)).all()


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA"])
def test_eight_bit_modes_convert_as_pil_does(tmp_path, mode):
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)).convert(mode)
    image.save(tmp_path / "x.png")
    assert (_read(tmp_path / "x.png") == np.array(image.convert("RGB"))).all()


@pytest.mark.parametrize("mode,array", [("F", np.full((2, 2), 0.5, np.float32)), ("I", np.full((2, 2), 7, np.int32))])
def test_modes_without_a_fixed_range_are_refused_naming_the_file_and_mode(tmp_path, mode, array):
    path = tmp_path / "x.tiff"
    Image.fromarray(array).save(path)
    with Image.open(path) as img:
        assert img.mode == mode
        with pytest.raises(ValueError, match=rf"x.tiff: image mode '{mode}'"):
            to_rgb8(img, path)
    with pytest.raises(ValueError, match=rf"x.tiff: image mode '{mode}'"):
        _read(path)


def test_the_data_check_refuses_such_an_image_before_training(tmp_path):
    from armlib.data.checks import check_val_set
    from armlib.errors import UsageError

    cfg = load_config(CONFIG_DIR / "smoke.yaml", [f"data_root={tmp_path / 'data'}"])
    root = prepare_data(cfg)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    from armlib.data.loading import dataset_for

    dataset = dataset_for(cfg, copy, "val")
    image = Path(dataset.files[0][0])
    width, height = Image.open(image).size
    image.unlink()
    Image.fromarray(np.zeros((height, width), np.float32)).save(image, format="TIFF")
    with pytest.raises(UsageError, match=rf"{image.name}: image mode 'F'"):
        check_val_set(dataset_for(cfg, copy, "val"))


# -- 2. Cityscapes polygons: deleted objects are skipped before their label is looked up ----------------------------

def test_a_deleted_object_with_an_unknown_label_is_skipped_as_the_official_code_does():
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2labelImg import createLabelImage

    from armlib.data.labels import rasterise_polygons

    polygons = {"imgHeight": 8, "imgWidth": 10, "objects": [
        {"label": "road", "polygon": [[0, 0], [9, 0], [9, 7], [0, 7]]},
        {"label": "a label nobody defined", "polygon": [[1, 1], [5, 1], [5, 5]], "deleted": 1},
        {"label": "car", "polygon": [[2, 2], [6, 2], [6, 6]]},
        {"label": "sky", "polygon": [[0, 0]], "deleted": 1}]}   # deleted, and too short to draw
    official = Annotation()
    official.fromJsonText(json.dumps(polygons))
    expected = np.array(createLabelImage(official, "ids"))
    assert (np.array(rasterise_polygons(polygons)) == expected).all()
    with pytest.raises(ValueError, match="not in the official"):   # not deleted, it still stops the file
        rasterise_polygons({**polygons, "objects": [{**polygons["objects"][1], "deleted": 0}]})


# -- 3. evaluate_model with nothing to score says so ---------------------------------------------------------------

@pytest.mark.parametrize("masks", [None, "ignored"])
def test_evaluate_model_warns_when_nothing_is_scored(masks):
    from armlib.evaluation import evaluate_model

    model = torch.nn.Conv2d(3, 4, 1)
    items = [] if masks is None else [(torch.randn(3, 4, 5), torch.full((4, 5), 255))]
    with pytest.warns(RuntimeWarning, match="nothing to score"):
        scores = evaluate_model(model, items, num_classes=4)
    assert scores["status"] == "no_labelled_pixels" and np.isnan(scores["mIoU"])


# -- 5. one line and exit 2 where a traceback came ------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke run stopped at its first checkpoint (2 of 4 steps), and its data."""
    root = tmp_path_factory.mktemp("faults")
    args = [f"data_root={root / 'data'}", "batch_size=2", "iterations=4", "checkpoint_every=2", "log_every=2",
            "threads=1", "num_workers=0", "device=cpu", "quiet=true"]
    cfg = load_config(CONFIG_DIR / "smoke.yaml", args)
    prepare_data(cfg)
    train(cfg, root / "run", stop_at=2)
    assert (root / "run" / CHECKPOINT).exists() and not (root / "run" / RECORD).exists()
    return root, args


def _train_cli(out: Path, args: list[str], *extra: str) -> list[str]:
    return ["train", "--config", str(CONFIG_DIR / "smoke.yaml"), "--out", str(out), "--resume", *args, *extra]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("change", ["batch_size=4", "reweight=arm", "seed=1"])
def test_a_resume_with_another_config_is_one_line(trained, tmp_path, capsys, change):
    root, args = trained
    shutil.copytree(root / "run", tmp_path / "run")
    assert cli_main(_train_cli(tmp_path / "run", args, change)) == 2
    err = _one_line(capsys)
    assert str(tmp_path / "run" / CHECKPOINT) in err and change.split("=")[0] in err and "new folder" in err


def test_a_checkpoint_lacking_a_key_is_one_line(trained, tmp_path, capsys):
    root, args = trained
    shutil.copytree(root / "run", tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)
    del ckpt["optimizer"]
    torch.save(ckpt, tmp_path / "run" / CHECKPOINT)
    assert cli_main(_train_cli(tmp_path / "run", args)) == 2
    err = _one_line(capsys)
    assert "lacks ['optimizer']" in err and "delete it" in err


def test_reproduce_into_a_runs_folder_nothing_can_be_written_to_is_one_line(tmp_path, capsys, monkeypatch):
    """As root nothing is read-only by its permission bits, so the read-only mount is played by the probe."""
    runs = tmp_path / "runs"
    runs.mkdir()
    real = tempfile.TemporaryFile

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == runs:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    assert cli_main(["reproduce", "--scale", "smoke", "--runs-dir", str(runs), "--out-dir", str(tmp_path / "out"),
                     "--only", "table1"]) == 2
    err = _one_line(capsys)
    assert f"--runs-dir {runs}" in err and "Read-only file system" in err and "writable folder" in err


@pytest.mark.parametrize("records", ["empty", "truncated"])
def test_calibrate_from_records_over_an_empty_or_damaged_folder_is_one_line(tmp_path, capsys, records):
    from armlib.reproduction import calibration
    from armlib.reproduction.sections import get_scale

    runs = tmp_path / "runs"
    runs.mkdir()
    if records == "truncated":
        for run in calibration.learning_curve_runs(get_scale("smoke"), (800, 1600, 3200), 100, runs, tmp_path):
            run.out.mkdir(parents=True)
            run.record_path.write_text('{"status": "ok", "metr')
    assert cli_main(["calibrate", "--scale", "smoke", "--from-records", "--runs-dir", str(runs),
                     "--data-root", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = _one_line(capsys)
    assert ("no record in" in err and "train it first" in err) if records == "empty" else "damaged record" in err


# -- 6. a runs folder moved elsewhere resumes; another data set does not ---------------------------------------------

def test_a_moved_runs_folder_and_its_data_resume_to_the_same_result(trained, tmp_path):
    root, args = trained
    cfg = load_config(CONFIG_DIR / "smoke.yaml", args)
    whole = train(cfg, tmp_path / "whole")   # the run without interruption, for the result to match
    moved = tmp_path / "elsewhere"
    shutil.copytree(root / "run", moved / "run")
    shutil.copytree(root / "data", moved / "data")
    resumed = train(cfg.replace(data_root=str(moved / "data")), moved / "run", resume=True)
    assert resumed["sessions"] == 2 and resumed["metrics"] == whole["metrics"]


def test_a_resume_on_another_data_set_is_refused_naming_both(trained, tmp_path, capsys):
    root, args = trained
    shutil.copytree(root / "run", tmp_path / "run")
    other = tmp_path / "data"
    shutil.copytree(root / "data", other)
    cfg = load_config(CONFIG_DIR / "smoke.yaml", args)
    from armlib.data.loading import dataset_for

    train_set = dataset_for(cfg.replace(data_root=str(other)), prepare_data(cfg.replace(data_root=str(other))), "train")
    image = Path(train_set.files[0][0])
    Image.open(image).rotate(90).save(image)   # another picture: another size on disk
    assert cli_main(_train_cli(tmp_path / "run", args, f"data_root={other}")) == 2
    err = _one_line(capsys)
    assert "is not the one this run was trained on" in err and str(other) in err and str(root / "data") in err
