"""Cityscapes and ADE20K readers on tiny fixtures written here in the exact official formats."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import labels as official_labels
from cityscapesscripts.preparation.json2labelImg import json2labelImg
from PIL import Image
from torchvision import tv_tensors

from armlib.data import ADE20K, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, Cityscapes, eval_transform

H, W = 12, 16
CITY = "aachen"


def stem(index: int, city: str = CITY) -> str:
    return f"{city}_{index:06d}_000019"


def write_image(path: Path, seed: int, size=(H, W)) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def write_ids(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids.astype(np.uint8)).save(path)


def polygons(seed: int, size=(H, W)) -> dict:
    """A few overlapping polygons, as a real *_polygons.json (later objects over earlier ones)."""
    rng = np.random.default_rng(seed)
    names = ["road", "sidewalk", "building", "car", "person", "sky", "parking", "ego vehicle"]
    objects = [{"label": "sky", "polygon": [[0, 0], [size[1] - 1, 0], [size[1] - 1, size[0] - 1], [0, size[0] - 1]]}]
    for _ in range(5):
        x, y = int(rng.integers(0, size[1])), int(rng.integers(0, size[0]))
        w, h = (int(v) for v in rng.integers(3, 9, 2))
        objects.append({"label": str(rng.choice(names)), "polygon": [[x, y], [x + w, y], [x + w // 2, y + h]]})
    return {"imgHeight": size[0], "imgWidth": size[1], "objects": objects}


def write_labels(folder: Path, name: str, poly: dict, png: bool = True) -> Path:
    """Write *_polygons.json and, through the official json2labelImg, *_labelIds.png."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"{name}_polygons.json"
    json_path.write_text(json.dumps(poly))
    if png:
        json2labelImg(str(json_path), str(folder / f"{name}_labelIds.png"), "ids")
    return json_path


def expected_train_ids(ids: np.ndarray) -> np.ndarray:
    table = {lab.id: (lab.trainId if 0 <= lab.trainId < 255 else 255) for lab in official_labels if lab.id >= 0}
    return np.vectorize(table.__getitem__)(ids)


def make_cityscapes(root: Path, n: int = 3, splits=("train", "val"), extra: bool = False) -> Path:
    """Official tree: leftImg8bit + gtFine + gtCoarse for each split (+ train_extra with gtCoarse)."""
    for split in splits:
        for i in range(n):
            write_image(root / "leftImg8bit" / split / CITY / f"{stem(i)}_leftImg8bit.png", seed=i)
            write_labels(root / "gtFine" / split / CITY, f"{stem(i)}_gtFine", polygons(i))
            write_labels(root / "gtCoarse" / split / CITY, f"{stem(i)}_gtCoarse", polygons(100 + i))
    if extra:
        for i in range(n):
            write_image(root / "leftImg8bit" / "train_extra" / "bochum" / f"{stem(i, 'bochum')}_leftImg8bit.png", 50 + i)
            write_labels(root / "gtCoarse" / "train_extra" / "bochum", f"{stem(i, 'bochum')}_gtCoarse", polygons(200 + i))
    return root


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


# -- label table ----------------------------------------------------------------------------------------------


def test_classes_and_palette_follow_the_official_table():
    assert len(CITYSCAPES_CLASSES) == 19 and len(CITYSCAPES_PALETTE) == 19
    assert CITYSCAPES_CLASSES[0] == "road" and CITYSCAPES_CLASSES[13] == "car" and CITYSCAPES_CLASSES[18] == "bicycle"
    assert CITYSCAPES_PALETTE[0] == (128, 64, 128) and CITYSCAPES_PALETTE[13] == (0, 0, 142)


def test_every_label_id_maps_to_its_train_id_pixel_by_pixel(tmp_path):
    ids = np.arange(34, dtype=np.uint8).reshape(2, 17).repeat(3, axis=0).repeat(2, axis=1)  # every id 0..33
    image_path = tmp_path / "leftImg8bit" / "train" / CITY / f"{stem(0)}_leftImg8bit.png"
    pixels = write_image(image_path, seed=0, size=ids.shape)
    write_ids(tmp_path / "gtFine" / "train" / CITY / f"{stem(0)}_gtFine_labelIds.png", ids)
    image, mask = Cityscapes(tmp_path)[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape == (3, *ids.shape)
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64 and mask.shape == ids.shape
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), pixels)
    np.testing.assert_array_equal(mask.numpy(), expected_train_ids(ids))
    # A few values stated literally, not derived from the table the code also uses.
    lookup = {int(i): int(t) for i, t in zip(ids.ravel(), mask.numpy().ravel())}
    assert (lookup[7], lookup[8], lookup[11], lookup[26], lookup[33]) == (0, 1, 2, 13, 18)
    assert lookup[0] == lookup[1] == lookup[9] == lookup[29] == 255  # unlabeled, ego vehicle, parking, caravan


def test_fine_and_coarse_train_read_their_own_labels(tmp_path):
    root = make_cityscapes(tmp_path)
    for annotation, folder in (("fine", "gtFine"), ("coarse", "gtCoarse")):
        dataset = Cityscapes(root, "train", annotation)
        assert len(dataset) == 3
        for i, (image_path, label_path) in enumerate(dataset.files):
            assert image_path.name == f"{stem(i)}_leftImg8bit.png"
            assert label_path == root / folder / "train" / CITY / f"{stem(i)}_{folder}_labelIds.png"
            _, mask = dataset[i]
            np.testing.assert_array_equal(mask.numpy(), expected_train_ids(read_png(label_path)))


def test_with_fine_returns_the_fine_mask_of_each_coarse_image(tmp_path):
    root = make_cityscapes(tmp_path)
    dataset = Cityscapes(root, "train", "coarse", with_fine=True)
    image, coarse, fine = dataset[1]
    assert image.shape == (3, H, W)
    np.testing.assert_array_equal(fine.numpy(), expected_train_ids(read_png(dataset.fine_files[1])))
    np.testing.assert_array_equal(coarse.numpy(), expected_train_ids(read_png(dataset.files[1][1])))
    assert not torch.equal(coarse, fine)  # the fixture's coarse and fine differ: a mix-up would show
    with pytest.raises(ValueError, match="with_fine"):
        Cityscapes(root, "train", "fine", with_fine=True)
    with pytest.raises(ValueError, match="with_fine"):
        Cityscapes(root, "val", "coarse", with_fine=True)


def test_val_uses_gtfine_whatever_the_annotation(tmp_path):
    root = make_cityscapes(tmp_path)
    for annotation in ("fine", "coarse", "coarse_extra"):
        dataset = Cityscapes(root, "val", annotation)
        assert all(label.parent.parent.parent.name == "gtFine" for _, label in dataset.files)
        _, mask = dataset[0]
        np.testing.assert_array_equal(mask.numpy(), expected_train_ids(read_png(dataset.files[0][1])))


def test_coarse_extra_reads_train_extra(tmp_path):
    root = make_cityscapes(tmp_path, extra=True)
    dataset = Cityscapes(root, "train", "coarse_extra")
    assert [p.parent.parent.name for p, _ in dataset.files] == ["train_extra"] * 3
    assert all("gtCoarse/train_extra/bochum" in str(label) for _, label in dataset.files)
    _, mask = dataset[2]
    np.testing.assert_array_equal(mask.numpy(), expected_train_ids(read_png(dataset.files[2][1])))


def test_polygons_only_labels_are_rasterised_the_official_way(tmp_path):
    root = make_cityscapes(tmp_path, splits=("val",))
    folder = root / "gtFine" / "train" / CITY
    write_image(root / "leftImg8bit" / "train" / CITY / f"{stem(0)}_leftImg8bit.png", seed=0)
    json_path = write_labels(folder, f"{stem(0)}_gtFine", polygons(7), png=False)
    dataset = Cityscapes(root, "train", "fine")
    assert dataset.files[0][1] == json_path
    official = tmp_path / "official.png"
    json2labelImg(str(json_path), str(official), "ids")
    _, mask = dataset[0]
    np.testing.assert_array_equal(mask.numpy(), expected_train_ids(read_png(official)))
    assert len(np.unique(mask.numpy())) > 2  # the polygons really drew several classes


def test_transform_is_applied_to_image_and_masks(tmp_path):
    root = make_cityscapes(tmp_path)
    image, coarse, fine = Cityscapes(root, "train", "coarse", transform=eval_transform(), with_fine=True)[0]
    assert image.dtype == torch.float32 and coarse.dtype == fine.dtype == torch.int64
    raw_image, raw_coarse, _ = Cityscapes(root, "train", "coarse", with_fine=True)[0]
    assert torch.equal(coarse, raw_coarse)
    assert not torch.equal(image, raw_image.float())


# -- bad input ------------------------------------------------------------------------------------------------


def test_missing_split_folder_names_the_expected_layout(tmp_path):
    make_cityscapes(tmp_path, splits=("val",))
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit/train.*<city>_<seq>_<frame>_leftImg8bit\.png"):
        Cityscapes(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match=r"gtCoarse/train_extra"):
        (tmp_path / "leftImg8bit" / "train_extra").mkdir(parents=True)
        Cityscapes(tmp_path, "train", "coarse_extra")


def test_bad_arguments_are_named(tmp_path):
    make_cityscapes(tmp_path)
    with pytest.raises(ValueError, match="split"):
        Cityscapes(tmp_path, "test")
    with pytest.raises(ValueError, match="annotation"):
        Cityscapes(tmp_path, "train", "medium")
    with pytest.raises(ValueError, match="on_error"):
        Cityscapes(tmp_path, "train", on_error="ignore")


def test_image_without_label_raises_or_is_skipped(tmp_path):
    root = make_cityscapes(tmp_path)
    write_image(root / "leftImg8bit" / "train" / CITY / f"{stem(9)}_leftImg8bit.png", seed=9)
    with pytest.raises(FileNotFoundError, match=rf"{stem(9)}_leftImg8bit\.png has no label: expected .*{stem(9)}_gtFine_labelIds\.png"):
        Cityscapes(root, "train")
    with pytest.warns(UserWarning, match=stem(9)):
        dataset = Cityscapes(root, "train", on_error="skip")
    assert len(dataset) == 3
    assert [p.name for p, _ in dataset.skipped] == [f"{stem(9)}_leftImg8bit.png"]


def test_label_without_image_raises_or_is_skipped(tmp_path):
    root = make_cityscapes(tmp_path)
    write_labels(root / "gtFine" / "train" / "bremen", f"{stem(4, 'bremen')}_gtFine", polygons(4))
    with pytest.raises(FileNotFoundError, match=rf"{stem(4, 'bremen')}_gtFine_labelIds\.png has no image: expected "
                                                rf".*bremen/{stem(4, 'bremen')}_leftImg8bit\.png"):
        Cityscapes(root, "train")
    with pytest.warns(UserWarning, match="has no image"):
        dataset = Cityscapes(root, "train", on_error="skip")
    assert len(dataset) == 3
    # Both the PNG and the JSON of the orphan are reported.
    assert sorted(p.name for p, _ in dataset.skipped) == [f"{stem(4, 'bremen')}_gtFine_labelIds.png",
                                                          f"{stem(4, 'bremen')}_gtFine_polygons.json"]


def test_with_fine_missing_fine_label_is_reported(tmp_path):
    root = make_cityscapes(tmp_path)
    (root / "gtFine" / "train" / CITY / f"{stem(1)}_gtFine_labelIds.png").unlink()
    (root / "gtFine" / "train" / CITY / f"{stem(1)}_gtFine_polygons.json").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{stem(1)}_leftImg8bit\.png has no fine label"):
        Cityscapes(root, "train", "coarse", with_fine=True)
    with pytest.warns(UserWarning):
        dataset = Cityscapes(root, "train", "coarse", with_fine=True, on_error="skip")
    assert len(dataset) == 2 and len(dataset.fine_files) == 2 and len(dataset.skipped) == 1


def corrupt(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])  # a PNG header and nothing usable


@pytest.mark.parametrize("case", ["corrupt_image", "corrupt_label", "unknown_id", "size_mismatch", "rgb_label",
                                  "bad_polygon_label"])
def test_content_errors_name_the_file(tmp_path, case):
    root = make_cityscapes(tmp_path)
    image_path = root / "leftImg8bit" / "train" / CITY / f"{stem(1)}_leftImg8bit.png"
    label_path = root / "gtFine" / "train" / CITY / f"{stem(1)}_gtFine_labelIds.png"
    if case == "corrupt_image":
        corrupt(image_path)
        bad, message = image_path, "cannot decode image"
    elif case == "corrupt_label":
        corrupt(label_path)
        bad, message = label_path, "cannot decode label image"
    elif case == "unknown_id":
        ids = read_png(label_path).copy()
        ids[0, 0] = 200
        write_ids(label_path, ids)
        bad, message = label_path, r"label ids \[200\] are not in the official"
    elif case == "size_mismatch":
        write_image(image_path, seed=1, size=(H + 2, W))
        bad, message = label_path, "expected the same size"
    elif case == "rgb_label":
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(label_path)
        bad, message = label_path, "mode RGB"
    else:  # polygons only, with a label name the official table does not know
        label_path.unlink()
        poly = polygons(1)
        poly["objects"][1]["label"] = "spaceship"
        bad = write_labels(label_path.parent, f"{stem(1)}_gtFine", poly, png=False)
        message = r"\['spaceship'\] are not in the official"
    dataset = Cityscapes(root, "train")  # pairing is fine: content is only checked on load
    dataset[0]
    with pytest.raises(ValueError, match=message) as info:
        dataset[1]
    assert str(bad) in str(info.value)

    skipping = Cityscapes(root, "train", on_error="skip")
    with pytest.warns(UserWarning, match=f"skipping .*{image_path.name}"):
        image, mask = skipping[1]  # the next good item is served instead
    reference_image, reference_mask = Cityscapes(root, "train")[2]
    assert torch.equal(image, reference_image) and torch.equal(mask, reference_mask)
    assert len(skipping.skipped) == 1 and skipping.skipped[0][0] == image_path
    assert str(bad) in skipping.skipped[0][1]


def test_verify_removes_bad_items_in_skip_mode_and_raises_otherwise(tmp_path):
    root = make_cityscapes(tmp_path)
    corrupt(root / "gtCoarse" / "train" / CITY / f"{stem(2)}_gtCoarse_labelIds.png")
    with pytest.raises(ValueError, match="cannot decode"):
        Cityscapes(root, "train", "coarse").verify()
    dataset = Cityscapes(root, "train", "coarse", on_error="skip")
    with pytest.warns(UserWarning):
        assert dataset.verify() == 2
    assert len(dataset) == 2 and len(dataset.skipped) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        [dataset[i] for i in range(len(dataset))]


def test_empty_split_is_an_error_not_an_empty_dataset(tmp_path):
    (tmp_path / "leftImg8bit" / "train" / CITY).mkdir(parents=True)
    (tmp_path / "gtFine" / "train" / CITY).mkdir(parents=True)
    with pytest.raises(ValueError, match="no usable image/label pairs"):
        Cityscapes(tmp_path, "train")


# -- ADE20K ---------------------------------------------------------------------------------------------------


def make_ade(root: Path, split: str = "training", n: int = 2) -> Path:
    base = root / "ADEChallengeData2016"
    for i in range(n):
        name = f"ADE_{split[:5]}_{i + 1:08d}"
        (base / "images" / split).mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 256, (H, W, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(base / "images" / split / f"{name}.jpg")
        values = (np.arange(H * W) % 151).reshape(H, W).astype(np.uint8)  # 0..150, all of them
        write_ids(base / "annotations" / split / f"{name}.png", np.roll(values, i))
    return root


def test_ade20k_reduces_zero_label(tmp_path):
    make_ade(tmp_path)
    for root in (tmp_path, tmp_path / "ADEChallengeData2016"):
        dataset = ADE20K(root, "training")
        assert len(dataset) == 2
        image, mask = dataset[1]
        values = read_png(dataset.files[1][1]).astype(np.int64)
        assert image.dtype == torch.uint8 and image.shape == (3, H, W)
        expected = np.where(values == 0, 255, values - 1)
        np.testing.assert_array_equal(mask.numpy(), expected)
        assert mask.max() == 255 and mask[mask != 255].max() == 149 and mask.min() == 0


def test_ade20k_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ADEChallengeData2016/images/validation/ADE_\*\.jpg"):
        ADE20K(tmp_path, "validation")
    make_ade(tmp_path)
    with pytest.raises(ValueError, match="split"):
        ADE20K(tmp_path, "train")
    annotation = tmp_path / "ADEChallengeData2016" / "annotations" / "training" / "ADE_train_00000001.png"
    write_ids(annotation, np.full((H, W), 151))
    with pytest.raises(ValueError, match=r"ADE_train_00000001\.png: annotation values \[151\]"):
        ADE20K(tmp_path)[0]
    (tmp_path / "ADEChallengeData2016" / "images" / "training" / "ADE_train_00000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"ADE_train_00000002\.png has no image"):
        ADE20K(tmp_path)
    with pytest.warns(UserWarning):
        dataset = ADE20K(tmp_path, on_error="skip")
    assert len(dataset) == 1 and len(dataset.skipped) == 1


# -- inputs distilled from public bug reports of segmentation tools ------------------------------------------

@pytest.mark.parametrize("points", [[], [[3, 3]]])
def test_polygon_without_area_is_skipped_and_named(tmp_path, points):
    # PIL refuses < 2 points ("coordinate list must contain at least 2 coordinates", no file named) and the
    # official createLabelImage re-raises it; the object covers no pixel, so it is skipped with a warning.
    root = make_cityscapes(tmp_path / "cs", n=1, splits=("train",))
    poly = polygons(0)
    poly["objects"].append({"label": "car", "polygon": points})
    folder = root / "gtFine" / "train" / CITY
    (folder / f"{stem(0)}_gtFine_labelIds.png").unlink()
    write_labels(folder, f"{stem(0)}_gtFine", poly, png=False)
    with pytest.warns(UserWarning, match=rf"{stem(0)}_gtFine_polygons\.json: skipped 1 object.*car"):
        mask = Cityscapes(root, "train", "fine")[0][1]
    poly["objects"].pop()
    ok = folder / "ok_polygons.json"
    ok.write_text(json.dumps(poly))
    json2labelImg(str(ok), str(folder / "ok.png"), "ids")
    assert np.array_equal(mask.numpy(), expected_train_ids(read_png(folder / "ok.png")))


def test_undrawable_polygon_names_the_file_and_is_skippable(tmp_path, monkeypatch):
    # Whatever else the official rasteriser raises (TypeError) must name the file and obey on_error="skip".
    import armlib.data.labels as labels_mod

    root = make_cityscapes(tmp_path / "cs", n=2, splits=("train",))
    folder = root / "gtFine" / "train" / CITY
    (folder / f"{stem(0)}_gtFine_labelIds.png").unlink()
    real = labels_mod.createLabelImage

    def fragile(annotation, encoding):
        if any(obj.label == "rider" for obj in annotation.objects):
            raise TypeError("coordinate list must contain at least 2 coordinates")
        return real(annotation, encoding)

    monkeypatch.setattr(labels_mod, "createLabelImage", fragile)
    poly = polygons(0)
    poly["objects"].append({"label": "rider", "polygon": [[1, 1], [4, 1], [2, 4]]})
    write_labels(folder, f"{stem(0)}_gtFine", poly, png=False)
    with pytest.raises(ValueError, match=rf"{stem(0)}_gtFine_polygons\.json: the official rasteriser"):
        Cityscapes(root, "train", "fine")[0]
    skipping = Cityscapes(root, "train", "fine", on_error="skip")
    with pytest.warns(UserWarning, match="official rasteriser"):
        assert skipping.verify() == 1
    assert [path.name for path, _ in skipping.skipped] == [f"{stem(0)}_leftImg8bit.png"]


@pytest.mark.parametrize("reader", ["cityscapes", "ade20k"])
def test_jpeg_bytes_under_a_png_name_are_refused(tmp_path, reader):
    # JPEG decodes without error; on a 64×128 label 384 of 8192 pixels changed class, some to classes the
    # label never had. Only the file's format gives it away.
    if reader == "cityscapes":
        root = make_cityscapes(tmp_path / "cs", n=1, splits=("val",))
        label = root / "gtFine" / "val" / CITY / f"{stem(0)}_gtFine_labelIds.png"
        dataset = lambda: Cityscapes(root, "val")  # noqa: E731
    else:
        root = make_ade(tmp_path / "ade", "validation", n=1)
        label = next((root / "ADEChallengeData2016" / "annotations" / "validation").glob("*.png"))
        dataset = lambda: ADE20K(root, "validation")  # noqa: E731
    ids = read_png(label).copy()
    Image.fromarray(ids).save(label, format="JPEG", quality=75)
    with pytest.raises(ValueError, match=rf"{label.name}: label image holds JPEG data"):
        dataset()[0]


def test_a_class_subset_maps_train_ids_to_its_own_indices(tmp_path):
    # The synthetic scenes' case: a dataset drawing only some classes is scored on those alone.
    ids = np.arange(34, dtype=np.uint8).reshape(2, 17).repeat(3, axis=0).repeat(2, axis=1)
    write_image(tmp_path / "leftImg8bit" / "train" / CITY / f"{stem(0)}_leftImg8bit.png", seed=0, size=ids.shape)
    write_ids(tmp_path / "gtFine" / "train" / CITY / f"{stem(0)}_gtFine_labelIds.png", ids)
    classes = ("car", "road", "sky")                          # any order: indices follow the given order
    dataset = Cityscapes(tmp_path, classes=classes)
    _, mask = dataset[0]
    by_id = {lab.id: lab for lab in official_labels}
    for label_id in range(34):
        got = mask[ids == label_id].unique().tolist()
        name = by_id[label_id].name
        assert got == [classes.index(name) if name in classes else 255], (label_id, name)
    assert dataset.classes == classes
    assert dataset.palette == tuple(CITYSCAPES_PALETTE[CITYSCAPES_CLASSES.index(c)] for c in classes)


@pytest.mark.parametrize("classes", [("car", "cars"), ("car", "car"), ()])
def test_a_bad_class_subset_is_named(tmp_path, classes):
    with pytest.raises(ValueError, match="classes must be distinct Cityscapes train class names"):
        Cityscapes(tmp_path, classes=classes)


def test_synthetic_scenes_are_scored_on_the_classes_they_draw():
    from armlib.config import TrainConfig
    from armlib.data.loading import class_names
    from armlib.data.scenes import SCENE_LABELS

    names = class_names(TrainConfig(dataset="synth"))
    assert sorted(names) == sorted(SCENE_LABELS) and len(names) == 10
    assert [CITYSCAPES_CLASSES.index(n) for n in names] == sorted(CITYSCAPES_CLASSES.index(n) for n in names)
    assert class_names(TrainConfig(dataset="cityscapes")) == list(CITYSCAPES_CLASSES)
