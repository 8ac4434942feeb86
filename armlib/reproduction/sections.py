"""The one manifest: every report section, the runs it needs per scale, its claims and their family.

Reading order: :class:`Scale` (how big a reproduction is), the experiment grid (:data:`TABLES`: a row is a set of
config overrides on the scale's base config), :class:`Claim` (what the paper asserts between two rows),
:class:`Threshold` (a measured quantity against a fixed criterion), and :data:`SECTIONS` (per report section its
notebook, heading, the paper's statement, the runs it needs and its threshold claims). ``armlib reproduce``, the
run planner (:mod:`armlib.reproduction.experiments`), the verdicts (:mod:`armlib.reproduction.verdicts`) and the report (:mod:`armlib.reproduction.report`)
all derive from here: adding a section is one :class:`Section` entry, one module in :mod:`armlib.reproduction.report_sections`
(``measure`` and ``plot``) and ``notebooks/<key>.ipynb``; adding a threshold claim is one :class:`Threshold`
(over a quantity the section's ``measure`` records).

Rows that mean the same experiment in several tables (the CE base model on coarse labels appears in Tables 1–5)
resolve to the same run, so it is trained once per seed and shared, and a claim that several tables repeat is
one distinct comparison (:func:`armlib.reproduction.verdict_rules.evaluate_claims` counts it once).

About 550 lines, over the suite's 400, on purpose: it is data more than code (the grid, every claim, every section),
and one manifest is what lets the README's "Where a change goes" name one file for a claim, a section or a scale.
"""
from __future__ import annotations

import hashlib
import json
import operator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from armlib.thresholds import MOVED_THRESHOLD, SUPPRESSION_THRESHOLD
from armlib.reproduction.parameters import parse_seeds
from armlib.paths import CONFIG_DIR, resolve


@dataclass(frozen=True)
class Scale:
    """How big a reproduction is. ``models`` maps the paper's roles to registry names (None: not run)."""

    name: str
    config: str                      # base config file name in configs/
    seeds: tuple[int, ...]           # one run per seed for every row
    jobs: int                        # runs at once (processes)
    threads: int | None              # torch threads per run (None: leave the default)
    models: dict = field(default_factory=dict)   # role ("r50", "r101", "ocr") -> model name
    noise_levels: tuple[float, ...] = ()         # synthetic coarse-label noise sweep
    tta_scales: tuple[float, ...] = (0.75, 1.0, 1.25)
    dataset: str = "synth"           # "synth" or "cityscapes" (then ADE20K rows run too when present)
    dataset_configs: dict = field(default_factory=dict)  # dataset -> its own base config (else ``config``)
    primary_seeds: tuple[int, ...] | None = None  # seeds of the rows of primary claims (None: ``seeds``); under
    #                                               a confirmatory plan these are its pilot, rerun on request only
    plan: str | None = None          # confirmatory plan file in configs/plans/ (armlib.reproduction.design writes it)
    followup: str | None = None      # a second confirmatory plan in configs/plans/ (every comparison; written from
    #                                  the follow-up pilot, committed before any of its seeds runs)
    followup_pilot: tuple[int, ...] = ()   # the follow-up's pilot: these seeds of every row, trained with the rest,
    #                                        so that the study reads no committed pilot of another machine
    shares: str | None = None        # the scale whose committed calibration this one reads (default: its own)
    free_power: bool = False         # Table 6's TTA on every seed its rows train (issue 31); off for the quick
    #                                  reference, whose 90-minute budget did not count it (42 more evaluations,
    #                                  about 8 s each on the 2-core Xeon)

    @property
    def reference(self) -> str:
        """The name under ``reports/`` of the committed calibration this scale reads."""
        return self.shares or self.name

    def seeds_for(self, row_name: str, table: str, seeds=None) -> tuple[int, ...]:
        """The seeds a row runs with: ``seeds`` when given (``--seeds``); under a confirmatory plan the scale's
        seeds plus the row's confirmatory seeds (:func:`confirmatory_seeds`; the pilot's other seeds are not
        retrained by default); else the primary seeds for a row that a primary claim compares, else the
        scale's seeds."""
        seeds = parse_seeds(seeds)   # papermill passes "0,1" from a command line without -y
        if seeds is not None:
            return tuple(seeds)
        if self.plan is not None:
            return tuple(sorted({*self.seeds, *self.followup_pilot, *planned_seeds(table, row_name, self)}))
        if self.primary_seeds is not None and (table, row_name) in primary_rows():
            return self.primary_seeds
        return self.seeds

    def config_for(self, spec: dict) -> Path:
        """The base config file of one experiment (ADE20K has its own crop size and T at paper scale)."""
        return CONFIG_DIR / self.dataset_configs.get(spec.get("dataset", self.dataset), self.config)


SCALES = {
    "smoke": Scale("smoke", "smoke.yaml", seeds=(0,), jobs=2, threads=1,
                   models={"r50": None, "r101": "deeplabv3plus_tiny", "ocr": "ocr_tiny"},
                   noise_levels=(0.0, 1.0), tta_scales=(0.75, 1.0)),
    # 5 seeds for the primary rows: the calibration's paired SD of ARM − base on coarse labels (0.38 mIoU, seeds
    # 100-104) needs 5 to detect +1.0 mIoU at α/5 with 80 % power (the first calibration, over all classes, said
    # 0.26 and 4), and 5 is the floor; the budget leaves 1 for the other rows.
    # The reporting seeds' SD came out at 1.19, so 5 seeds reach an MDE of 3.1 (README: what quick can decide).
    # Seeds 0-4 of the primary rows are the pilot (exploratory); configs/plans/quick.json, sized from it and
    # committed before any of its seeds ran, adds the confirmatory seeds (5, 6, ...).
    "quick": Scale("quick", "quick.yaml", seeds=(0,), primary_seeds=(0, 1, 2, 3, 4), jobs=2, threads=1,
                   plan="quick.json",
                   models={"r50": None, "r101": "deeplabv3plus_tiny", "ocr": "ocr_tiny"},
                   noise_levels=(0.0, 0.5, 1.0)),
    # The quick scale with every comparison decided (issue 31), self-contained: the reference's runs trained again
    # (quick.json's seeds), a pilot of seeds 0-4 of every row, then configs/plans/quick_full.json's seeds (19 and
    # up, sized from that pilot), in chunks (armlib.reproduction.chunks). Quick-scale training is float32, so the
    # same seed on another CPU family is another draw of training noise (seed 5's base: 65.61 mIoU on the
    # reference's AMD EPYC, 63.94 on an Intel Xeon): its study reads no value of the reference's files.
    # `armlib reproduce --scale quick --plan full` selects it.
    "quick-full": Scale("quick-full", "quick.yaml", seeds=(0,), primary_seeds=(0, 1, 2, 3, 4), jobs=2, threads=1,
                        plan="quick.json", followup="quick_full.json", followup_pilot=(1, 2, 3, 4), shares="quick",
                        free_power=True,
                        models={"r50": None, "r101": "deeplabv3plus_tiny", "ocr": "ocr_tiny"},
                        noise_levels=(0.0, 0.5, 1.0)),
    # The quick scale's seed policy; its T is not calibrated yet (needs a lent GPU: `armlib calibrate --scale gpu`).
    "gpu": Scale("gpu", "gpu.yaml", seeds=(0,), primary_seeds=(0, 1, 2, 3, 4), jobs=4, threads=4,
                 models={"r50": "deeplabv3plus_r50", "r101": "deeplabv3plus_r101", "ocr": "ocr_r101"},
                 noise_levels=(0.0, 0.5, 1.0)),
    # One seed per row as the paper ran, but 3 for the rows of the primary claims: one seed decides nothing.
    "paper": Scale("paper", "paper_cityscapes_coarse.yaml", seeds=(0,), primary_seeds=(0, 1, 2), jobs=1, threads=None,
                   models={"r50": "deeplabv3plus_r50", "r101": "deeplabv3plus_r101", "ocr": "ocr_r101"},
                   tta_scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), dataset="cityscapes",
                   dataset_configs={"ade20k": "paper_ade20k.yaml"}),
}


def get_scale(name: str) -> Scale:
    if name not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {name!r}")
    return SCALES[name]


# The experiment-defining keys, with the value every row has unless it says otherwise.
ROW_DEFAULTS = {"annotation": "coarse", "loss": "ce", "reweight": "none", "norm_p": 2.0, "indicator": "var",
                "detach": True, "linear_k": -0.5, "model": "r101"}


def row(**changes) -> dict:
    unknown = set(changes) - set(ROW_DEFAULTS) - {"synth_noise", "dataset"}
    if unknown:
        raise ValueError(f"unknown experiment keys {sorted(unknown)}")
    return {**ROW_DEFAULTS, **changes}


ARM_ROW = {"reweight": "arm"}          # row changes that turn the base model into ARM
LINEAR_ROW = {"reweight": "linear"}    # ... into the paper's fixed Linear ARM (Table 1)

TABLES: dict[str, dict[str, dict]] = {
    "table1": {
        "base": row(),
        "linear_nodetach": row(**LINEAR_ROW, detach=False),
        "linear_detach": row(**LINEAR_ROW),
        "linear_focusing": row(**LINEAR_ROW, linear_k=0.5),
    },
    "table2": {
        "base": row(),
        "norm_l1": row(**ARM_ROW, norm_p=1.0),
        "norm_l2": row(**ARM_ROW),
        "norm_l3": row(**ARM_ROW, norm_p=3.0),
        "input_var": row(**ARM_ROW),
        "input_std": row(**ARM_ROW, indicator="std"),
        "input_logvar": row(**ARM_ROW, indicator="logvar"),
        "input_entropy": row(**ARM_ROW, indicator="entropy"),
    },
    "table3": {
        **{f"{a}_{m}_{v}": row(annotation=a, model=m, **(ARM_ROW if v == "arm" else {}))
           for a in ("coarse", "fine") for m in ("r50", "r101") for v in ("base", "arm")},
        **{f"{a}_{h}_{v}": row(annotation=a, model="r101" if h == "dlv3p" else "ocr", **(ARM_ROW if v == "arm" else {}))
           for a in ("coarse", "fine") for h in ("dlv3p", "ocr") for v in ("base", "arm")},
    },
    "table4": {
        "kl": row(loss="kl"), "ce": row(), "gce": row(loss="gce"),
        "kl_arm": row(loss="kl", **ARM_ROW), "ce_arm": row(**ARM_ROW), "gce_arm": row(loss="gce", **ARM_ROW),
    },
    "table5": {
        **{f"{a}_{m}": row(annotation=a, **({"loss": "ohem"} if m == "ohem" else ARM_ROW if m == "arm" else {}))
           for a in ("fine", "coarse") for m in ("base", "ohem", "arm")},
        **{f"ade_{m}": row(dataset="ade20k", annotation="fine",
                           **({"loss": "ohem"} if m == "ohem" else ARM_ROW if m == "arm" else {}))
           for m in ("base", "ohem", "arm")},
    },
}

# Table 6: the TTA-evaluated rows, one training run per (method, annotation).
TABLE6_METHODS = {"base": {}, "ohem": {"loss": "ohem"}, "linear_arm": LINEAR_ROW, "arm": ARM_ROW}
TABLE6_COLUMNS = {"fine": {"annotation": "fine"}, "coarse": {"annotation": "coarse"},
                  "ade20k": {"dataset": "ade20k", "annotation": "fine"}}
NOISE_METHODS = {"base": {}, "linear_arm": LINEAR_ROW, "arm": ARM_ROW}


def _grid(table: str, scale: Scale) -> dict[str, dict]:
    """Every row of a table's grid, runnable at this scale or not."""
    if table == "table6":
        return {f"{m}@{c}": row(**mk, **ck) for m, mk in TABLE6_METHODS.items() for c, ck in TABLE6_COLUMNS.items()}
    if table == "noise_sweep":
        from armlib.config import load_config

        # The scale's own noise level is the other tables' data set: leave it implicit so those runs are shared.
        default = load_config(CONFIG_DIR / scale.config).synth_noise
        return {f"{m}@{noise:g}": row(**mk, **({} if noise == default else {"synth_noise": noise}))
                for noise in scale.noise_levels for m, mk in NOISE_METHODS.items()}
    if table in TABLES:
        return TABLES[table]
    raise ValueError(f"table must be one of {sorted(TABLES) + ['table6', 'noise_sweep']}, got {table!r}")


def skipped_rows(table: str, scale: Scale, data_root="data") -> dict[str, str]:
    """{row: why it is not run at this scale} for the rows :func:`table_rows` leaves out."""
    out = {}
    for name, spec in _grid(table, scale).items():
        if scale.models.get(spec["model"], spec["model"]) is None:
            out[name] = f"not run at the {scale.name} scale: no stand-in for the paper's {spec['model']} role"
        elif spec.get("dataset") == "ade20k" and scale.dataset == "synth":
            out[name] = f"not run at the {scale.name} scale: ADE20K rows run at the paper scale, on the real data"
        elif spec.get("dataset") == "ade20k" and not (resolve(data_root) / "ade20k").is_dir():
            out[name] = f"not run: no ADE20K under {resolve(data_root) / 'ade20k'}"
    return out


def table_rows(table: str, scale: Scale, data_root="data") -> dict[str, dict]:
    """{row: experiment dict} of a table that can run at this scale (model roles resolved; ADE20K rows
    only for real-data scales with ``<data_root>/ade20k`` present; :func:`skipped_rows` says why the others
    are not run)."""
    skipped = skipped_rows(table, scale, data_root)
    return {name: {**spec, "model": scale.models.get(spec["model"], spec["model"])}
            for name, spec in _grid(table, scale).items() if name not in skipped}


# -- claims ----------------------------------------------------------------------------------------------

PRIMARY, SECONDARY = "primary", "secondary"
EFFECT, EQUIVALENCE = "effect", "equivalence"
ALPHA = 0.05                 # two-sided level of every test; the primary family is adjusted at this level
POWER = 0.80                 # power at which the minimal detectable effect is quoted and seeds are sized
SD_CONFIDENCE = 0.80         # a pilot sizes seeds by this one-sided upper confidence bound of its SD (Browne 1995)
HOLM, FIXED_SEQUENCE = "holm", "fixed sequence"   # multiplicity procedures of the primary family
EQUIVALENCE_MARGIN = 1.0     # mIoU points: "no effect" means TOST shows the paired Δ inside ±1.0


@dataclass(frozen=True)
class Claim:
    """What the paper asserts between two rows of a table, in ``metric``.

    ``test="effect"``: sign(metric[a] − metric[b]) == ``sign`` (verdict reproduced / contradicted / inconclusive
    from the paired t-test). ``test="equivalence"``: |metric[a] − metric[b]| < ``margin`` (TOST; unadjusted, that
    is the 90 % CI inside ±margin; for a primary claim the Holm-adjusted TOST p decides). ``family``: "primary" claims (the paper's central ones) are Holm-adjusted
    together; "secondary" ones keep their raw p and are exploratory. ``diverges``: the paper printed NaN for row
    ``a`` (it diverged): at least half of our seeds diverging reproduces that.
    """

    id: str
    text: str
    a: str
    b: str
    sign: int = +1
    metric: str = "mIoU"
    family: str = SECONDARY
    test: str = EFFECT
    margin: float | None = None
    diverges: bool = False


TABLE_CLAIMS: dict[str, tuple[Claim, ...]] = {
    "table1": (
        Claim("t1_detach", "Detaching the normalisation is essential: Linear ARM with detach beats it without",
              "linear_detach", "linear_nodetach", family=PRIMARY),
        Claim("t1_nodetach_collapses", "Without detaching, Linear ARM collapses below the base model",
              "linear_nodetach", "base", -1),
        Claim("t1_linear", "Linear ARM (detached, suppressing) beats the base model", "linear_detach", "base",
              family=PRIMARY),
        Claim("t1_focus", "Focusing on confident pixels is worse than suppressing them",
              "linear_focusing", "linear_detach", -1),
        Claim("t1_focus_base", "Focusing is worse than the base model", "linear_focusing", "base", -1),
    ),
    "table2": (
        Claim("t2_arm", "ARM (L2 norm, var input) beats the base model", "norm_l2", "base", family=PRIMARY),
        Claim("t2_l1", "L1 normalisation diverges (paper: NaN) or falls below L2", "norm_l1", "norm_l2", -1,
              diverges=True),
        Claim("t2_l3", "L2 normalisation beats L3", "norm_l2", "norm_l3"),
        Claim("t2_std", "ARM with std input beats the base model", "input_std", "base"),
        Claim("t2_logvar", "ARM with log var input beats the base model", "input_logvar", "base"),
        Claim("t2_entropy", "Entropy input diverges (paper: NaN) or falls below var", "input_entropy", "input_var",
              -1, diverges=True),
    ),
    "table3": (
        *(Claim(f"t3_{d}_{m}", f"ARM beats the base model: {d} labels, {label}", f"{d}_{m}_arm", f"{d}_{m}_base",
                family=PRIMARY if m in ("r101", "dlv3p") else SECONDARY)
          for d in ("coarse", "fine")
          for m, label in (("r50", "ResNet50"), ("r101", "ResNet101"), ("dlv3p", "DeepLabV3+"), ("ocr", "OCR"))),
        Claim("t3_coarse_r50_vs_r101", "Coarse: ResNet50 + ARM beats plain ResNet101",
              "coarse_r50_arm", "coarse_r101_base"),
        Claim("t3_fine_r50_vs_r101", "Fine: ResNet50 + ARM beats plain ResNet101", "fine_r50_arm", "fine_r101_base"),
    ),
    "table4": (
        Claim("t4_kl_arm", "ARM improves the KL loss", "kl_arm", "kl"),
        Claim("t4_ce_arm", "ARM improves CE", "ce_arm", "ce", family=PRIMARY),
        Claim("t4_gce_arm", "ARM improves GCE", "gce_arm", "gce"),
        Claim("t4_kl_ce", "KL is worse than CE (Sec. 3.1)", "kl", "ce", -1),
        Claim("t4_gce_ce", "GCE beats CE", "gce", "ce"),
    ),
    "table5": (
        Claim("t5_fine_ohem", "OHEM helps on fine labels", "fine_ohem", "fine_base"),
        Claim("t5_coarse_ohem", "OHEM does not help on coarse labels (equivalent to the base model)",
              "coarse_ohem", "coarse_base", family=PRIMARY, test=EQUIVALENCE, margin=EQUIVALENCE_MARGIN),
        Claim("t5_fine_arm", "ARM helps on fine labels", "fine_arm", "fine_base", family=PRIMARY),
        Claim("t5_coarse_arm", "ARM helps on coarse labels", "coarse_arm", "coarse_base", family=PRIMARY),
        Claim("t5_coarse_arm_ohem", "ARM beats OHEM on coarse labels", "coarse_arm", "coarse_ohem"),
        Claim("t5_ade_ohem", "OHEM helps on ADE20K", "ade_ohem", "ade_base"),
        Claim("t5_ade_arm", "ARM helps on ADE20K", "ade_arm", "ade_base"),
    ),
    "table6": tuple(
        Claim(f"t6_{m}_{d}", f"{label} does not beat the base model with TTA, {d} labels (equivalent)", m, "base",
              metric=d, test=EQUIVALENCE, margin=EQUIVALENCE_MARGIN) if (m, d) == ("ohem", "coarse") else
        Claim(f"t6_{m}_{d}", f"{label} beats the base model with TTA, {d} labels", m, "base", metric=d)
        for d in ("fine", "coarse", "ade20k")
        for m, label in (("ohem", "OHEM"), ("linear_arm", "Linear ARM"), ("arm", "ARM"))),
    "noise_sweep": (),   # built per noise level: :func:`noise_claims`
}


def noise_claims(levels) -> tuple[Claim, ...]:
    """Not in the paper (its thesis implies ARM ≥ base at every noise level): secondary, exploratory."""
    return tuple(Claim(f"noise_{m}_{n:g}", f"{m} beats the base model at noise {n:g}", f"{m}@{n:g}", f"base@{n:g}")
                 for n in levels for m in ("linear_arm", "arm"))


def claims_for(key: str, scale: Scale | None = None) -> tuple[Claim, ...]:
    """The comparison claims of a section (figure sections have none: their claims are thresholds)."""
    if key == "noise_sweep":
        return noise_claims(scale.noise_levels if scale is not None else ())
    return TABLE_CLAIMS.get(key, ())


@cache
def primary_rows() -> frozenset[tuple[str, str]]:
    """(table, row) of every row a primary claim compares."""
    return frozenset((t, r) for t, cs in TABLE_CLAIMS.items() for c in cs if c.family == PRIMARY for r in (c.a, c.b))


# -- threshold claims ------------------------------------------------------------------------------------

_OPS = {"<": operator.lt, ">": operator.gt, "≥": operator.ge}


@dataclass(frozen=True)
class Threshold:
    """A claim a section measures against a fixed criterion: it holds when the measured ``quantity`` ``op``
    ``bound`` (and, with ``reference``, exceeds that second measured quantity too). The criterion's prose, the
    claims files' ``threshold`` column and the verdict (:func:`armlib.reproduction.verdicts.thresholds`) all come from these
    fields, so a new claim over a quantity the section's ``measure`` already records is this one line.

    ``after``: the id of a claim of the same seed that must hold first (ARM's curve must have moved); where it
    does not, this claim ``unmet`` ("fails", or "not run": there is nothing to compare).

    Raises ``ValueError`` for an ``op`` outside ``<``, ``>``, ``≥``, or without a ``quantity``.
    """

    id: str
    text: str                # the claim, as the report states it; "{seed}" is filled in for per-seed claims
    metric: str              # the measured quantity, as the report names it
    op: str                  # "<", ">" or "≥"
    bound: float
    quantity: str = ""       # its key among the quantities the section's measure() records (required)
    reference: str = ""      # the key of a second measured quantity the value must exceed ...
    also_above: str = ""     # ... as the report names it
    over: str = ""           # what the value is measured over, for the prose
    after: str = ""
    unmet: str = "fails"

    def __post_init__(self):
        if self.op not in _OPS:
            raise ValueError(f"threshold {self.id!r}: op must be one of {list(_OPS)}, got {self.op!r}")
        if not self.quantity or bool(self.reference) != bool(self.also_above):
            raise ValueError(f"threshold {self.id!r}: expected a quantity, and a reference key only with its name "
                             f"(also_above), got quantity={self.quantity!r}, reference={self.reference!r}")

    def criterion(self, reference: float | None = None) -> str:
        """E.g. "> 0.5 and > the share of all pixels (0.34)"; with ``after``, "moved and ≥ 0.1"."""
        text = f"{self.op} {self.bound:g}"
        if self.also_above:
            text += f" and > {self.also_above}" + ("" if reference is None else f" ({reference:.2f})")
        return f"{self.after.removeprefix('curve_')} and {text}" if self.after else text

    def holds(self, value: float, reference: float | None = None) -> bool:
        """Whether ``value`` meets the criterion (NaN never does)."""
        met = bool(_OPS[self.op](value, self.bound))
        return met and (not self.also_above or bool(value > reference))

    @property
    def prose(self) -> str:
        """One sentence of the section's criteria, e.g. "holds when Spearman ρ < 0 (over bins with ≥ 100 pixels)"."""
        return f"{self.id}: {self.metric} {self.criterion()}" + (f" ({self.over})" if self.over else "")


# -- sections --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Needs:
    """Runs a section needs: rows of a table's grid (None: all), at every seed or the first only."""

    table: str
    rows: tuple[str, ...] | None = None
    first_seed_only: bool = False


@dataclass(frozen=True)
class Section:
    """One report section = one notebook ``notebooks/<key>.ipynb`` writing ``results/<key>*.csv``.

    ``measures`` says what the notebook measures, ``figure`` the PNG it saves (``figures/<key>*.png``), and
    ``thresholds`` its threshold claims (figure sections): a new one is one :class:`Threshold` here, over a
    quantity its ``measure`` records (:func:`armlib.reproduction.verdicts.thresholds`).
    """

    key: str
    heading: str
    paper_claim: str
    needs: tuple[Needs, ...] = ()
    measures: str = ""
    figure: str = ""
    thresholds: tuple[Threshold, ...] = ()

    def __post_init__(self):
        # verdicts.thresholds evaluates the lines in order: a prerequisite must come before the claims that need it
        seen: list[str] = []
        for t in self.thresholds:
            if t.after and t.after not in seen:
                raise ValueError(f"section {self.key!r}: threshold {t.id!r} comes after {t.after!r}, which must be "
                                 f"an earlier threshold of the section; earlier ones: {seen}")
            seen.append(t.id)

    @property
    def criteria(self) -> str:
        """The holds/fails criteria of the section's threshold claims, generated from them ("" without)."""
        return "; ".join(t.prose for t in self.thresholds)

    def threshold(self, claim_id: str) -> Threshold:
        """The threshold claim ``claim_id``; ValueError naming the section's otherwise."""
        for t in self.thresholds:
            if t.id == claim_id:
                return t
        raise ValueError(f"section {self.key!r} has no threshold claim {claim_id!r}; it has "
                         f"{[t.id for t in self.thresholds]}")


_BASE_FIRST = (Needs("table1", ("base",), first_seed_only=True),)

SECTIONS: tuple[Section, ...] = (
    Section("data", "Fig. 1 — fine vs coarse annotations",
            "Coarse polygons label objects roughly, leave boundaries unlabelled and sometimes overshoot.",
            measures="coverage, agreement with fine labels, share and location of mislabelled pixels",
            figure="fine and coarse labels of training images"),
    Section("variance_maps", "Fig. 4 — where low-variance pixels lie",
            "Almost all low-variance pixels lie on the boundaries between semantic regions.", _BASE_FIRST,
            measures="share of the lowest-5 % v pixels within 2 px of a class boundary",
            figure="low-variance pixels painted on validation images",
            thresholds=(Threshold("fig4_boundaries", "Low-variance pixels lie on class boundaries (paper: almost all)",
                                  "share of lowest-5 % v pixels on boundaries", ">", 0.5, quantity="low_var_on_boundary",
                                  reference="all_on_boundary", also_above="the share of all pixels"),)),
    Section("loss_vs_variance", "Fig. 5 — mean loss per variance bin",
            "The average loss falls as the normalised variance (confidence) rises (Eq. 8).", _BASE_FIRST,
            measures="mean CE per bin of v on validation images", figure="loss against v",
            thresholds=(Threshold("fig5_falls", "The mean loss falls as the normalised variance rises", "Spearman ρ",
                                  "<", 0, quantity="spearman_rho",
                                  over="of v and the mean loss, over bins with ≥ 100 pixels"),)),
    Section("holder", "Eq. 10–13 — the Hölder toy and ARM's convergence",
            "Under ‖W‖_p = 1, p > 1, the adversarial weight converges to ‖L‖_q^{−1/(p−1)} L^{1/(p−1)}; p = 1 is "
            "sparse.", _BASE_FIRST, measures="closed form vs solver; ARM fitted to the measured loss curve",
            figure="closed form, solver and fitted ARM",
            thresholds=(
                Threshold("holder_toy", "Projected gradient ascent reaches the closed form (Eq. 11–12) for p = 1, "
                          "1.5, 2, 3", "max |w_closed − w_solver|", "<", 1e-3, quantity="toy_gap"),
                Threshold("holder_arm", "The 53-parameter ARM converges to the Hölder solution for p = 2, 3 "
                          "(Sec. 3.4)",
                          "max |W_ARM − W_closed| (weights)", "<", 0.02, quantity="arm_gap"),
                Threshold("holder_l1", "With the L1 factor differentiated ARM collapses to the sparse L1 solution (our "
                          "reading of Sec. 4.2)", "max |W_ARM − W_L2 solution| (weights)", ">", 0.3,
                          quantity="l1_differentiated_gap"))),
    Section("confidence_quadrants", "Fig. 2 — loss vs confidence as a sample divider",
            "Among high-loss pixels, confidence separates mislabelled (confident) from valuable (unsure) ones.",
            _BASE_FIRST, measures="mislabelled rate per (loss, confidence) quadrant on training pixels",
            figure="quadrant shares",
            thresholds=(Threshold("fig2_divides", "Among high-loss pixels, confident ones are more often "
                                  "mislabelled than unsure ones (Fig. 2b)", "Δ mislabelled rate (confident − unsure)",
                                  ">", 0, quantity="mislabelled_rate_difference"),)),
    Section("table1", "Table 1 — detaching and suppressing vs focusing",
            "Detaching the L1 factor is essential; suppressing confident pixels beats the base model, focusing on "
            "them is worse.", (Needs("table1"),), figure="bars per row"),
    Section("table2", "Table 2 — normalisation and input type",
            "L1 normalisation diverges, L2 is best and L3 a little worse; variance, std and log variance work "
            "alike as ARM's input; entropy diverges.", (Needs("table2"),), figure="bars per row"),
    Section("table3", "Table 3 — backbones and heads",
            "ARM improves every backbone and head, on coarse and on fine labels.", (Needs("table3"),),
            figure="bars per row"),
    Section("table4", "Table 4 — loss functions", "ARM improves CE, GCE and the KL loss.", (Needs("table4"),),
            figure="bars per row"),
    Section("table5", "Table 5 — ARM vs OHEM",
            "OHEM helps on fine labels but not on coarse ones; ARM helps on both.", (Needs("table5"),),
            figure="bars per row"),
    Section("table6", "Table 6 — with test-time augmentation",
            "With multi-scale and flip testing, ARM still beats the base model.", (Needs("table6"),),
            measures="TTA mIoU of each (method, annotation) run", figure="bars per row"),
    Section("learned_curve", "ARM's learned W(v) vs the Hölder prediction (not in the paper)",
            "Sec. 3.4 predicts ARM's curve from the measured loss; we check it on the trained model.",
            (Needs("table2", ("norm_l2", "base")),),
            measures="W(v) at init and at the end per seed; correlation with the Hölder prediction",
            figure="learned curves (init dashed)",
            thresholds=(
                Threshold("curve_moved", "ARM's curve moved from its initialisation (seed {seed})",
                          "max shape change", "≥", MOVED_THRESHOLD, quantity="shape_change", over="max_v |W_end/mean − W_0/mean|, per seed"),
                Threshold("curve_suppresses", "ARM learned to suppress confident pixels (seed {seed})",
                          "(W(−1) − W(+1)) / mean W", "≥", SUPPRESSION_THRESHOLD, quantity="suppression",
                          after="curve_moved",
                          over="of the learned curve, per seed"),
                Threshold("curve_holder", "ARM's curve follows the Hölder prediction (seed {seed}, Sec. 3.4)",
                          "Pearson r", ">", 0.5, quantity="holder_correlation", after="curve_moved",
                          unmet="not run",
                          over="of the learned W and the prediction from the measured loss, per seed where ARM "
                               "moved"))),
    Section("noise_sweep", "ARM's gain as label noise grows (not in the paper)",
            "The paper motivates ARM by label noise; we vary the coarse-label noise of the synthetic data.",
            (Needs("noise_sweep"),), measures="mIoU per method and noise level", figure="mIoU against noise"),
)
SECTION_KEYS = tuple(s.key for s in SECTIONS)


def get_section(key: str) -> Section:
    """The section named ``key``; ValueError naming the choices otherwise."""
    for s in SECTIONS:
        if s.key == key:
            return s
    raise ValueError(f"unknown section {key!r}; choose from {list(SECTION_KEYS)}")


# -- the confirmatory plan -------------------------------------------------------------------------------

PLAN_DIR = CONFIG_DIR / "plans"


def confirmatory_plan(scale: Scale) -> dict | None:
    """The scale's confirmatory plan (``configs/plans/<Scale.plan>``, written by :mod:`armlib.reproduction.design` from the
    pilot and committed before any confirmatory seed ran); None when the scale has none.

    Raises:
        ValueError: the plan file is missing or not valid JSON (one line naming the file).
    """
    if scale.plan is None:
        return None
    return _read_plan(PLAN_DIR / scale.plan)


@cache
def _read_plan(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: this confirmatory plan is unreadable ({exc}); restore it "
                         "from git: it must not change once its seeds have run") from exc


def plan_hash(plan: dict) -> str:
    """12 hex digits naming a plan by content (canonical JSON): every confirmatory run carries it (its config's
    ``plan``), so a record shows which plan it was trained under."""
    return hashlib.sha256(json.dumps(plan, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def claim_by_id(claim_id: str, scale: Scale | None = None) -> tuple[str, Claim]:
    """(table, claim) of a comparison claim's id, the noise sweep's at ``scale``'s levels included; KeyError naming
    it otherwise."""
    for table in TABLE_CLAIMS:
        for c in claims_for(table, scale):
            if c.id == claim_id:
                return table, c
    raise KeyError(f"no claim {claim_id!r} in TABLE_CLAIMS" + (f" or the {scale.name} noise sweep" if scale else ""))


def followup_plan(scale: Scale) -> dict | None:
    """The scale's second confirmatory plan (``configs/plans/<Scale.followup>``); None when the scale has none or
    while it is not written yet (its pilot, :attr:`Scale.followup_pilot`, is still running).

    Raises:
        ValueError: the plan file exists but is not valid JSON (one line naming the file).
    """
    if scale.followup is None or not (PLAN_DIR / scale.followup).exists():
        return None
    return _read_plan(PLAN_DIR / scale.followup)


def plans(scale: Scale) -> list[dict]:
    """The scale's confirmatory plans in the order they were written (the first, then the follow-up)."""
    return [p for p in (confirmatory_plan(scale), followup_plan(scale)) if p is not None]


def claim_rows(table: str, claim: Claim) -> tuple[str, str]:
    """The grid rows a claim compares: its a and b, or in Table 6, whose metric is the annotation column,
    ``<method>@<annotation>``."""
    if table == "table6":
        return f"{claim.a}@{claim.metric}", f"{claim.b}@{claim.metric}"
    return claim.a, claim.b


def _specs_of(comparison: dict, scale: Scale) -> list[dict]:
    out = []
    for claim_id in comparison["claims"]:
        t, c = claim_by_id(claim_id, scale)
        out += [_grid(t, scale)[r] for r in claim_rows(t, c)]
    return out


def planned_seeds(table: str, row_name: str, scale: Scale) -> dict[int, str]:
    """{seed: hash of the plan that names it} for a row under the scale's plans (:func:`plans`): the seeds of every
    planned comparison one of whose rows is the same experiment (same spec), so an experiment that several tables
    show runs one set of seeds. Table 6's rows are such experiments too: their test-time-augmentation mIoU is an
    evaluation of runs the plans train anyway, so with :attr:`Scale.free_power` it is measured on every one of their
    seeds (issue 31), never trained for; without, Table 6 runs at the scale's seeds alone."""
    if table == "table6" and not scale.free_power:
        return {}
    spec = _grid(table, scale).get(row_name)
    out: dict[int, str] = {}
    for plan in plans(scale):
        h = plan_hash(plan)
        for comparison in plan["comparisons"]:
            if spec in _specs_of(comparison, scale):
                out.update({seed: h for seed in comparison["seeds"]})
    return out


def confirmatory_seeds(table: str, row_name: str, scale: Scale) -> tuple[int, ...]:
    """The seeds :func:`planned_seeds` names for a row, sorted."""
    return tuple(sorted(planned_seeds(table, row_name, scale)))
