"""armlib.config: YAML loading, overrides, validation that names the key, and the paper's table cells."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from armlib.config import TrainConfig, load_config, parse_overrides
from armlib.paths import CONFIG_DIR

CONFIG_FILES = sorted(CONFIG_DIR.glob("*.yaml"))

# Every cell of Tables 1–5 as overrides of the base row (loss=ce, reweight=none, coarse, DeepLabV3+ R101).
TABLE_CELLS = {
    "T1 base": [],
    "T1 linear, no detach": ["reweight=linear", "detach=false"],
    "T1 linear, detach (suppressing)": ["reweight=linear"],
    "T1 linear focusing": ["reweight=linear", "linear_k=0.5"],
    "T2 L1": ["reweight=arm", "norm_p=1"],
    "T2 L2": ["reweight=arm", "norm_p=2"],
    "T2 L3": ["reweight=arm", "norm_p=3"],
    "T2 var": ["reweight=arm", "indicator=var"],
    "T2 std": ["reweight=arm", "indicator=std"],
    "T2 logvar": ["reweight=arm", "indicator=logvar"],
    "T2 entropy": ["reweight=arm", "indicator=entropy"],
    **{f"T3 {ann} {model} {rw}": [f"annotation={ann}", f"model={model}", f"reweight={rw}"]
       for ann in ("coarse", "fine") for model in ("deeplabv3plus_r50", "deeplabv3plus_r101", "ocr_r101")
       for rw in ("none", "arm")},
    **{f"T4 {loss} {rw}": [f"loss={loss}", f"reweight={rw}"] for loss in ("kl", "ce", "gce") for rw in ("none", "arm")},
    **{f"T5 {ds} {m}": ds_ov + m_ov
       for ds, ds_ov in (("fine", ["annotation=fine"]), ("coarse", []),
                         ("ade20k", ["dataset=ade20k", "crop_size=[512, 512]", "iterations=160000"]))
       for m, m_ov in (("base", []), ("ohem", ["loss=ohem"]), ("arm", ["reweight=arm"]))},
}


def test_defaults_are_the_paper_recipe():
    cfg = TrainConfig()
    assert (cfg.base_lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == (0.02, 0.9, 1e-4, 16)
    assert (cfg.aux_weight, cfg.isolated_fraction, cfg.norm_p, cfg.detach) == (0.4, 0.05, 2.0, True)
    assert (cfg.linear_k, cfg.linear_b, cfg.gce_q, cfg.ohem_thresh) == (-0.5, 0.5, 0.1, 0.7)
    assert cfg.data_root == "data" and cfg.eval_scales == (1.0,) and cfg.compile is False


def test_every_field_has_a_documenting_comment():
    source = (CONFIG_DIR.parent / "armlib" / "config.py").read_text().splitlines()
    for f in dataclasses.fields(TrainConfig):
        line = next(l for l in source if l.strip().startswith(f"{f.name}:"))
        assert "#" in line and len(line.split("#", 1)[1].strip()) > 5, f.name


@pytest.mark.parametrize("cell", sorted(TABLE_CELLS))
def test_every_table_cell_is_a_config(cell):
    cfg = load_config(None, TABLE_CELLS[cell])
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_rows_of_one_table_are_different_experiments():
    # within a table every row is its own config, except Table 2's "L2 norm" and "var" rows, which the paper
    # reports with identical numbers: they are the same run (ARM's defaults).
    for table in ("T1", "T2", "T3", "T4", "T5"):
        configs = {}
        for cell, ov in TABLE_CELLS.items():
            if cell.startswith(table):
                configs.setdefault(yaml.safe_dump(load_config(None, ov).to_dict()), []).append(cell)
        shared = [cells for cells in configs.values() if len(cells) > 1]
        assert shared == ([["T2 L2", "T2 var"]] if table == "T2" else []), shared


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: synth\ncrop_size: [64, 128]\nweight_decay: 1e-4\neval_window: null\n")
    cfg = load_config(path, ["crop_size=[32, 64]", "eval_scales=[0.5, 1, 1.5]", "detach=false", "threads=2"])
    assert cfg.dataset == "synth" and cfg.crop_size == (32, 64) and cfg.weight_decay == 1e-4
    assert cfg.eval_scales == (0.5, 1.0, 1.5) and cfg.detach is False and cfg.threads == 2
    assert cfg.eval_window is None
    assert TrainConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("overrides, key, expected", [
    (["lossx=ce"], "lossx", "did you mean 'loss'"),
    (["base_lr=fast"], "base_lr", "float"),
    (["detach=1"], "detach", "bool"),
    (["iterations=1.5"], "iterations", "int"),
    (["crop_size=[64]"], "crop_size", "tuple[int, int]"),
    (["crop_size=64"], "crop_size", "tuple[int, int]"),
    (["eval_window=[a, b]"], "eval_window", "tuple[int, int] | None"),
    (["loss=focal"], "loss", "['ce', 'gce', 'kl', 'ohem']"),
    (["reweight=arm", "loss=ohem"], "reweight", "OHEM"),
    (["norm_p=0.5"], "norm_p", "[1.0"),
    (["batch_size=0"], "batch_size", "positive"),
    (["eval_stride=[8, 8]"], "eval_stride", "eval_window"),
])
def test_bad_values_name_the_key(overrides, key, expected):
    with pytest.raises(ValueError) as info:
        load_config(None, overrides)
    assert key in str(info.value) and expected in str(info.value)


def test_bad_yaml_file_names_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("iterations: many\n")
    with pytest.raises(ValueError, match=r"bad.yaml: iterations must be int"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(path)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")


def test_malformed_override():
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["loss"])


def test_direct_construction_validates():
    with pytest.raises(ValueError, match="dataset"):
        TrainConfig(dataset="imagenet")
    with pytest.raises(ValueError, match="scale_range"):
        TrainConfig(scale_range=(2.0, 0.5))
    assert TrainConfig(crop_size=[8, 8]).crop_size == (8, 8)  # lists become tuples


@pytest.mark.parametrize("path", CONFIG_FILES, ids=[p.name for p in CONFIG_FILES])
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_paper_configs_follow_the_paper():
    coarse = load_config(CONFIG_DIR / "paper_cityscapes_coarse.yaml")
    fine = load_config(CONFIG_DIR / "paper_cityscapes_fine.yaml")
    ade = load_config(CONFIG_DIR / "paper_ade20k.yaml")
    for cfg in (coarse, fine, ade):
        assert (cfg.batch_size, cfg.base_lr, cfg.weight_decay, cfg.model, cfg.output_stride) == (
            16, 0.02, 1e-4, "deeplabv3plus_r101", 8)
        # Tables 1–5 are single-scale; Table 6 uses OCR's multi-scale + flip TTA ("metrics_tta")
        assert cfg.eval_scales == (1.0,) and not cfg.eval_flip
        assert cfg.tta_scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) and cfg.tta_flip
    assert (coarse.annotation, fine.annotation) == ("coarse", "fine")
    assert coarse.iterations == fine.iterations == 40_000 and ade.iterations == 160_000
    assert coarse.crop_size == (512, 1024) and ade.crop_size == (512, 512) and ade.dataset == "ade20k"


def test_the_config_accepts_exactly_the_indicators_confidence_computes():
    """One list of indicators: the config's choices are the kinds armlib.confidence implements."""
    import re

    import torch

    from armlib.confidence import INDICATOR_KINDS, indicator
    with pytest.raises(ValueError, match="indicator") as refused:
        TrainConfig(indicator="margin")
    offered = re.search(r"one of (\[.*?\])", str(refused.value)).group(1)
    assert offered == str(list(INDICATOR_KINDS))
    probs = torch.softmax(torch.randn(1, 3, 2, 2), dim=1)
    for kind in INDICATOR_KINDS:
        TrainConfig(indicator=kind)
        assert indicator(probs, kind).shape == (1, 1, 2, 2)
