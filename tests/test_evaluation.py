"""armlib.evaluation: single-scale, TTA and sliding-window inference identities, and dataset metrics."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from armlib.evaluation import evaluate_model, predict_probs
from armlib.metrics import evaluate

C = 5


class PixelModel(nn.Module):
    """1×1 convolutions only: each pixel's logits depend on that pixel alone (exactly flip-equivariant and
    window-independent, bit for bit)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, C, 1))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return {"out": self.net(x)}


class ContextModel(nn.Module):
    """3×3 convolutions with BatchNorm and dropout: context-dependent, differs in train and eval mode."""

    def __init__(self, symmetric: bool = False):
        super().__init__()
        self.c1, self.bn, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, C, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        if symmetric:  # kernels mirror-symmetric in W: the model commutes with a horizontal flip
            with torch.no_grad():
                for conv in (self.c1, self.c2):
                    conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)

    def forward(self, x):
        return {"out": self.c2(self.drop(torch.relu(self.bn(self.c1(x)))))}


def _images(n=2, h=24, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, h, w, generator=g), torch.randint(0, C, (n, h, w), generator=g)


def test_one_scale_no_flip_is_exactly_single_scale():
    torch.manual_seed(0)
    model = ContextModel().eval()
    x, _ = _images()
    single = torch.softmax(model(x)["out"], dim=1)
    assert torch.equal(predict_probs(model, x, scales=(1.0,), flip=False), single)


def test_flip_tta_on_flip_equivariant_models_equals_single():
    torch.manual_seed(0)
    x, _ = _images()
    pixel = PixelModel().eval()
    single = predict_probs(pixel, x)
    assert torch.equal(predict_probs(pixel, x, flip=True), single)
    symmetric = ContextModel(symmetric=True).eval()
    single = predict_probs(symmetric, x)
    assert torch.allclose(predict_probs(symmetric, x, flip=True), single, atol=1e-6)
    # and the identity is not vacuous: a model without the symmetry changes under flip-TTA
    plain = ContextModel().eval()
    assert not torch.allclose(predict_probs(plain, x, flip=True), predict_probs(plain, x), atol=1e-4)


def test_sliding_window_covering_the_image_is_whole_image_inference():
    torch.manual_seed(0)
    model = ContextModel().eval()
    x, _ = _images(h=24, w=40)
    whole = predict_probs(model, x)
    assert torch.equal(predict_probs(model, x, window=(24, 40)), whole)
    assert torch.equal(predict_probs(model, x, window=(64, 64), stride=(8, 8)), whole)
    # a smaller window really slides: context differs at window borders
    assert not torch.allclose(predict_probs(model, x, window=(16, 16), stride=(8, 8)), whole, atol=1e-4)


def test_sliding_window_grid_and_per_pixel_model():
    model = PixelModel().eval()
    x, _ = _images(n=1, h=64, w=64)
    whole = predict_probs(model, x)
    model.calls = 0
    slid = predict_probs(model, x, window=(32, 32), stride=(16, 16))
    assert model.calls == 9  # (64 − 32 + 15) // 16 + 1 = 3 windows per side
    assert torch.allclose(slid, whole, atol=1e-6)


def test_multi_scale_probabilities_at_input_size():
    torch.manual_seed(0)
    model = ContextModel().eval()
    x, _ = _images(h=24, w=40)
    probs = predict_probs(model, x, scales=(0.5, 0.75, 1.0, 1.25), flip=True)
    assert probs.shape == (2, C, 24, 40)
    assert torch.allclose(probs.sum(1), torch.ones(2, 24, 40), atol=1e-5)
    assert not torch.allclose(probs, predict_probs(model, x), atol=1e-4)


def test_evaluate_model_matches_direct_metrics_and_restores_mode():
    torch.manual_seed(0)
    model = ContextModel()
    model.train()
    x, y = _images(n=6)
    y[:, :3] = 255  # ignored rows
    dataset = TensorDataset(x, y)
    metrics = evaluate_model(model, dataset, C, batch_size=4)
    assert model.training  # restored
    model.eval()
    direct = evaluate(model(x)["out"].argmax(1), y, C)
    for key in ("aAcc", "mAcc", "mIoU"):
        assert metrics[key] == direct[key]
    assert metrics["IoU"] == direct["IoU"]
    # a DataLoader is used as given; the TTA path with one scale gives the same metrics
    loader = DataLoader(dataset, batch_size=2)
    assert evaluate_model(model, loader, C, scales=(1.0,), flip=False)["mIoU"] == direct["mIoU"]
