"""The training configuration: one flat dataclass, every field documented, loaded from YAML.

``load_config("configs/quick.yaml", ["loss=gce", "reweight=arm"])`` reads a YAML mapping of field names
to values, applies ``key=value`` overrides (each value parsed with ``yaml.safe_load``, so ``crop_size=[64,
128]``, ``eval_window=null`` and ``detach=false`` work) and returns a validated :class:`TrainConfig`.

Any mistake raises ``ValueError`` naming the key before anything is trained: an unknown key (with the
closest known one), a value of the wrong type (with the expected type), a choice outside its set or a
number outside its range. ``load_config`` raises it as :class:`armlib.errors.UsageError` blaming where the
value came from: the YAML file, or the command-line override when the file alone is valid. YAML lists
become tuples; an int is accepted where a float is expected (and ``1e-4``, which YAML 1.1 reads as a
string), a bool never where a number is.

Every cell of the paper's Tables 1–5 is a config (base values ``loss=ce reweight=none``):

=========================================  ==================================================================
Table 1 Linear ARM (no detach / detach)    ``reweight=linear detach=false`` / ``reweight=linear``
Table 1 Linear ARM focusing                ``reweight=linear linear_k=0.5``
Table 2 normalise type L1 / L2 / L3        ``reweight=arm norm_p=1`` / ``2`` / ``3``
Table 2 input type                         ``reweight=arm indicator=var|std|logvar|entropy``
Table 3 backbones / heads / annotation     ``model=deeplabv3plus_r50|_r101|ocr_r101``, ``annotation=fine|coarse``
Table 4 losses                             ``loss=kl|ce|gce`` × ``reweight=none|arm``
Table 5 OHEM                               ``loss=ohem`` (reweight must stay ``none``)
=========================================  ==================================================================
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from armlib.errors import UsageError, nearest

DATASETS = ("synth", "cityscapes", "ade20k")
ANNOTATIONS = ("fine", "coarse", "coarse_extra")
LOSSES = ("ce", "gce", "kl", "ohem")
REWEIGHTS = ("none", "arm", "linear")
DEVICES = ("auto", "cpu", "cuda")
# Fields that change where a run executes or what it prints, never the experiment: a resumed run may change
# them and the run key (armlib.runs.run_key) leaves them out. ``device`` and ``threads`` are here although a GPU
# or another thread count rounds differently: the key names the experiment, and the record says where it ran.
# ``compile`` is not (torch.compile's kernels round differently and it has always been in the committed keys).
RUNTIME_ONLY = ("device", "num_workers", "threads", "checkpoint_every", "log_every", "curve_every", "quiet")


@dataclass
class TrainConfig:
    """Everything one training run depends on. Defaults are the paper's Cityscapes Coarse recipe (§4.2)."""

    # --- data -------------------------------------------------------------------------------------------
    dataset: str = "cityscapes"              # "synth" (generated street scenes), "cityscapes" or "ade20k"
    data_root: str = "data"                  # dataset folder (official layout); synth: parent of generated sets
    annotation: str = "coarse"               # training labels: "fine", "coarse", "coarse_extra" (ignored by ade20k)
    synth_n_train: int = 200                 # synth: number of generated training scenes
    synth_n_val: int = 50                    # synth: number of generated validation scenes (fine labels)
    synth_noise: float = 0.5                 # synth: coarse-label noise in [0, 1] (0 ≈ fine, 0.5: coverage ≈ 0.82)
    synth_size: tuple[int, int] = (128, 256)  # synth: (H, W) of the generated images
    synth_seed: int = 0                      # synth: generator seed (the data set, not the training run)
    crop_size: tuple[int, int] = (512, 1024)  # training crop (H, W): 512×1024 Cityscapes, 512×512 ADE20K
    scale_range: tuple[float, float] = (0.5, 2.0)  # random resize factor range of the training augmentation

    # --- model ------------------------------------------------------------------------------------------
    model: str = "deeplabv3plus_r101"        # armlib.models registry name, e.g. "deeplabv3plus_tiny", "ocr_r101"
    output_stride: int = 8                   # backbone output stride: 8 (paper) or 16
    backbone_weights: str | None = None      # None (random init), a state_dict file, or a torchvision weights name

    # --- loss and reweighting ---------------------------------------------------------------------------
    loss: str = "ce"                         # per-pixel loss: "ce", "gce", "kl" (uncertainty head) or "ohem"
    reweight: str = "none"                   # "none" (plain mean), "arm" (53-param ARM) or "linear" (k·v + b)
    linear_k: float = -0.5                   # Linear ARM slope: −0.5 suppresses confident pixels, +0.5 focuses
    linear_b: float = 0.5                    # Linear ARM intercept
    detach: bool = True                      # detach the probabilities ARM sees (False = Table 1's collapse)
    norm_p: float = 2.0                      # L_p normalisation of the weight map, finite ≥ 1 (Table 2: 1, 2, 3)
    indicator: str = "var"                   # ARM input: "var", "std", "logvar", "entropy" (kl uses its s)
    gce_q: float = 0.1                       # GCE exponent q (Table 4's grid-searched value)
    ohem_thresh: float = 0.7                 # OHEM: keep pixels whose ground-truth probability is below this
    ohem_min_kept: int = 100_000             # OHEM: at least this many pixels per image (full-scale value)
    aux_weight: float = 0.4                  # weight of the auxiliary head's (unweighted) loss (§4.2)
    isolated_fraction: float = 0.05          # first fraction of T: ARM learns, the model sees the plain mean

    # --- optimisation -----------------------------------------------------------------------------------
    iterations: int = 40_000                 # T: SGD steps (Cityscapes 40k, ADE20K 160k, coarse extension 200k)
    batch_size: int = 16                     # global batch (split evenly over DDP ranks)
    base_lr: float = 0.02                    # α_0 in (0, 1] of the warm-up + multi-step schedule, also ARM's lr
    momentum: float = 0.9                    # SGD momentum (model and ARM)
    weight_decay: float = 1e-4               # SGD weight decay (model and ARM)

    # --- evaluation -------------------------------------------------------------------------------------
    eval_scales: tuple[float, ...] = (1.0,)  # test scales; several = the paper's multi-scale TTA (Table 6)
    eval_flip: bool = False                  # also average the horizontally flipped prediction (TTA)
    eval_window: tuple[int, int] | None = None  # sliding-window crop (H, W) for full-resolution inference
    eval_stride: tuple[int, int] | None = None  # sliding-window stride (H, W); None = 2/3 of the window
    eval_batch_size: int = 1                 # images per evaluation batch (1 for variable-size images)
    tta_scales: tuple[float, ...] | None = None  # also evaluate with this TTA (record "metrics_tta", Table 6)
    tta_flip: bool = True                    # horizontal flip in that TTA (the paper's, after OCR [35])
    # A class the scale cannot resolve (IoU 0 in every calibration run, fine labels included) would add a
    # constant 0 to every mean; its IoU is still recorded, and mIoU_all_classes averages every class.
    unresolved_classes: tuple[str, ...] = ()  # class names (armlib.data.loading.class_names) left out of mAcc/mIoU

    # --- runtime ----------------------------------------------------------------------------------------
    seed: int = 0                            # seeds python/numpy/torch, data order and augmentation
    device: str = "auto"                     # "auto" (cuda if available), "cpu" or "cuda"
    amp: bool = True                         # bf16 autocast (CUDA only; the CPU path is always float32)
    channels_last: bool = True               # channels-last memory format (CUDA only)
    compile: bool = False                    # torch.compile the model
    num_workers: int = 4                     # DataLoader worker processes per rank
    data_on_device: bool = False             # CUDA: hold and augment the decoded train set on the GPU (new rounding)
    # Faster on one CPU thread, but they round differently (ratios in BENCHMARKS.md), so off by default:
    cpu_channels_last: bool = False          # CPU: channels-last memory format (channels_last is CUDA's)
    cpu_fused_sgd: bool = False              # CPU: torch.optim.SGD(fused=True) (CUDA always uses it)
    matmul_resize: bool = False              # upsample the logits to the crop as two matmuls, not F.interpolate
    # float64 rounding differences between CPUs start nine orders of magnitude below float32's, so a run's numbers
    # agree across instruction sets, kernel dispatch and threads (the smoke scale sets it: tests/goldens/README.md)
    cpu_float64: bool = False                # CPU: model, ARM, inputs and evaluation in float64 (slower)
    threads: int | None = None               # torch.set_num_threads; None leaves torch's default
    checkpoint_every: int = 2000             # write a checkpoint every this many iterations (and at the end)
    log_every: int = 50                      # log.csv row / progress-bar update every this many iterations
    curve_every: int | None = None           # ARM curve snapshot (curves.csv) period; None = T/20
    quiet: bool = False                      # no progress bar (papermill, CI)
    plan: str = ""                           # hash of the confirmatory plan a run was trained under ("": none,
    #                                          pilot or exploratory; armlib.reproduction.sections.plan_hash); never read in training

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), hints[f.name]))
        _choice("dataset", self.dataset, DATASETS)
        _choice("annotation", self.annotation, ANNOTATIONS)
        _choice("loss", self.loss, LOSSES)
        _choice("reweight", self.reweight, REWEIGHTS)
        from armlib.confidence import INDICATOR_KINDS   # here, not at import: confidence imports torch (--help)

        _choice("indicator", self.indicator, INDICATOR_KINDS)
        _choice("device", self.device, DEVICES)
        if self.loss == "ohem" and self.reweight != "none":
            raise ValueError(f"reweight={self.reweight!r} with loss='ohem': OHEM is its own row of Table 5 "
                             "(a hard-pixel mask, not a reweightable loss map); use reweight='none'")
        positive = ["synth_n_train", "synth_n_val", "iterations", "batch_size", "eval_batch_size",
                    "checkpoint_every", "log_every", "ohem_min_kept"]
        for name in positive + ["curve_every", "threads"]:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("crop_size", "synth_size", "eval_window", "eval_stride"):
            value = getattr(self, name)
            if value is not None and min(value) < 1:
                raise ValueError(f"{name} must be positive (H, W), got {value!r}")
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")
        for name in ("eval_scales", "tta_scales"):
            scales = getattr(self, name)
            if scales is not None and (not scales or min(scales) <= 0):
                raise ValueError(f"{name} must be a non-empty tuple of positive floats, got {scales}")
        if self.eval_stride is not None and self.eval_window is None:
            raise ValueError("eval_stride is set but eval_window is None; set eval_window (H, W) too")
        # norm_p: finite (p = inf passed this check and then diverged: w^p overflows); base_lr: (0, 1], an SGD lr
        # above 1 is a typo for a segmentation model (issue 20's base_lr=1e3 logged a loss of 6e15)
        if not (math.isfinite(self.norm_p) and self.norm_p >= 1.0):
            raise ValueError(f"norm_p must be in [1.0, inf), finite (the L_p norm of Table 2), got {self.norm_p!r}")
        if not 0.0 < self.base_lr <= 1.0:
            raise ValueError(f"base_lr must be in (0, 1], got {self.base_lr!r}")
        ranges = {"isolated_fraction": (0.0, 1.0), "aux_weight": (0.0, float("inf")),
                  "momentum": (0.0, 1.0), "weight_decay": (0.0, float("inf")),
                  "ohem_thresh": (0.0, 1.0), "synth_noise": (0.0, 1.0)}
        for name, (lo, hi) in ranges.items():
            if not lo <= getattr(self, name) <= hi:
                raise ValueError(f"{name} must be in [{lo}, {hi}], got {getattr(self, name)!r}")
        if not 0.0 < self.gce_q <= 1.0:
            raise ValueError(f"gce_q must be in (0, 1], got {self.gce_q!r}")
        if self.output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {self.output_stride!r}")

    def float_dtype(self, device_type: str):
        """The torch dtype of the parameters, the images and their augmentation on a device of this type ("cpu",
        "cuda"): float64 for ``cpu_float64`` on the CPU, else float32 (CUDA's bf16 comes from autocast)."""
        import torch   # here, not at import: --help stays torch-free

        return torch.float64 if self.cpu_float64 and device_type == "cpu" else torch.float32

    def to_dict(self) -> dict:
        """Plain dict (tuples as lists), the form written to YAML, JSON records and checkpoints."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Build from a mapping; ``ValueError`` naming an unknown key (and the closest known one)."""
        if not isinstance(data, dict):
            raise ValueError(f"a config must be a mapping of field names to values, got {type(data).__name__}")
        _refuse_unknown(data, lambda key: "config")
        return cls(**data)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed (validated like any config)."""
        return type(self).from_dict({**self.to_dict(), **changes})


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config (or start from the defaults when ``path`` is None) and apply ``key=value`` overrides.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UsageError (a ValueError): malformed YAML or override, unknown key, wrong type or value; the message
            names the key and blames the file or the command-line override that set it.
    """
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise UsageError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise UsageError(f"{path}: a config must be a YAML mapping of field names to values")
        data = dict(loaded or {})
    source = str(path) if path is not None else "config"
    changes = parse_overrides(overrides)
    items = {item.partition("=")[0].strip(): item for item in overrides}
    _refuse_unknown(data, lambda key: source)
    _refuse_unknown(changes, lambda key: f"override {items[key]!r} on the command line")
    try:
        return TrainConfig.from_dict({**data, **changes})
    except ValueError as exc:
        error = exc
    try:  # blame the file if it is wrong by itself (leaving out what the command line replaces)
        TrainConfig.from_dict({k: v for k, v in data.items() if k not in changes})
    except ValueError as exc:
        raise UsageError(f"{source}: {exc}") from None
    named = [item for key, item in items.items() if re.match(rf"{re.escape(key)}\b", str(error))]
    blamed = f"override {named[0]!r}" if named else f"overrides {' '.join(overrides)}"
    context = f" (config {path})" if path is not None else ""
    raise UsageError(f"{blamed} on the command line{context}: {error}") from None


def _refuse_unknown(data: dict, source: typing.Callable[[str], str]) -> None:
    """``UsageError`` for the first key of ``data`` that is not a field, blamed on ``source(key)``."""
    known = [f.name for f in dataclasses.fields(TrainConfig)]
    for key in data:
        if key not in known:
            close = nearest(str(key), known)
            hint = f" (did you mean {close!r}?)" if close else "; see armlib.config.TrainConfig for the keys"
            raise UsageError(f"{source(key)}: unknown config key {key!r}{hint}")


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict:
    """``["loss=gce", "crop_size=[64, 128]"]`` → ``{"loss": "gce", "crop_size": [64, 128]}`` (YAML values)."""
    parsed = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"override {item!r} on the command line must look like key=value")
        try:
            parsed[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as exc:
            raise UsageError(f"override {item!r} on the command line: value is not valid YAML "
                             f"({' '.join(str(exc).split())})") from exc
    return parsed


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) if isinstance(tp, type) else str(tp).replace("typing.", "")


def _coerce(name: str, value, tp):
    """Check ``value`` against the annotation ``tp`` (scalars, Optional, fixed/variadic tuples); convert."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            try:
                return _coerce(name, value, inner[0])
            except ValueError:
                pass
        raise ValueError(f"{name} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be {_type_name(tp)} (a YAML list), got {value!r} ({type(value).__name__})")
        elem_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(elem_types) != len(value):
            raise ValueError(f"{name} must be {_type_name(tp)} ({len(args)} values), got {list(value)!r}")
        try:
            return tuple(_coerce(name, v, t) for v, t in zip(value, elem_types))
        except ValueError:
            raise ValueError(f"{name} must be {_type_name(tp)}, got {list(value)!r}") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a field with an annotation this function does not know
        raise TypeError(f"config field {name} has an unsupported annotation {tp}")
    raise ValueError(f"{name} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")
