"""One typed configuration tree, loaded from YAML profiles.

A profile is a YAML file in ``dhkd/profiles/`` (or any path) holding a partial tree; it may
name another profile under ``inherits:`` and then only lists what differs. ``--set
section.key=value`` overrides are applied last and type-checked against the dataclasses, so
a typo or a wrong type fails at once with a message instead of silently doing nothing.

Every setting declares its allowed values next to its field (:func:`setting` with a
:class:`Range`): :func:`validate` checks them when a config is loaded, :func:`check_run`
adds the checks that depend on the run's length, and the README's settings table and
``dhkd train --help`` are generated from the same declarations (``dhkd settings table``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dhkd.data.fit import RESIZE_MODES, Fit, as_fit
from dhkd.errors import DhkdError
from dhkd.method.teacher import DEFAULT_STAGES, STAGE_CHANNELS, STAGE_CHOICES, stage_channels, stage_strides

PROFILE_DIR = Path(__file__).parent / "profiles"

# ---------------------------------------------------------------------------- allowed values


@dataclass(frozen=True)
class Range:
    """The values one setting accepts. Bounds are inclusive unless ``*_open``; lists are checked
    item by item (and for their ``length``); ``choices`` lists every allowed value."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] = ()
    multiple_of: int | None = None
    length: int | None = None
    single_too: bool = False  # one value is allowed as well as a list of ``length``
    note: str = ""  # what a special value means, shown in the table

    def text(self) -> str:
        """The range in a few characters, e.g. ``> 0``, ``0 ≤ x ≤ 1``, ``a / b``."""
        if self.choices:
            parts = [" / ".join(_shown(c) for c in self.choices)]
        else:
            low = None if self.low is None else f"{_number(self.low)} {'<' if self.low_open else '≤'} "
            high = None if self.high is None else f" {'<' if self.high_open else '≤'} {_number(self.high)}"
            if low and high:
                parts = [f"{low}x{high}"]
            elif low:
                parts = [f"{'>' if self.low_open else '≥'} {_number(self.low)}"]
            elif high:
                parts = [f"{'<' if self.high_open else '≤'} {_number(self.high)}"]
            else:
                parts = ["any"]
            if self.multiple_of:
                parts.append(f"a multiple of {self.multiple_of}")
        text = ", ".join(parts)
        if self.length is not None:
            text = (f"one number or {self.length} items, each " if self.single_too else f"{self.length} items, each ") + text
        return f"{text} ({self.note})" if self.note else text

    def problem(self, value: Any) -> str | None:
        """Why one scalar ``value`` is not allowed, or None."""
        if self.choices:
            return None if value in self.choices and type(value) is type(self.choices[0]) else f"must be one of {self.text()}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number ({self.text()})"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
            too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
            if too_low or too_high or (self.multiple_of and value % self.multiple_of):
                return f"must be {self.text()}"
        return None

    def nearest(self, value: Any) -> Any:
        """The allowed value closest to ``value`` (None when there is no single closest one)."""
        if self.choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1, cutoff=0.5)
            return next((c for c in self.choices if str(c) == close[0]), None) if close else None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return None
        whole = isinstance(value, int)
        step = self.multiple_of or (1 if whole else 0)
        if self.multiple_of:
            value = self.multiple_of * round(value / self.multiple_of)
        if self.low is not None and (value < self.low or (self.low_open and value <= self.low)):
            if self.low_open and not step:
                return None
            value = self.low + step if self.low_open else self.low
            if self.multiple_of:
                value = self.multiple_of * math.ceil(value / self.multiple_of)
        if self.high is not None and (value > self.high or (self.high_open and value >= self.high)):
            if self.high_open and not step:
                return None
            value = self.high - step if self.high_open else self.high
            if self.multiple_of:
                value = self.multiple_of * math.floor(value / self.multiple_of)
        return int(value) if whole else float(value)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def setting(default: Any, allowed: Range, help: str) -> Any:
    """A dataclass field with its allowed values and a one-line meaning (shown in the table)."""
    metadata = {"range": allowed, "help": help}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


FLAG = Range(choices=(True, False))
COUNT = Range(low=1)
POSITIVE = Range(low=0, low_open=True)
FRACTION = Range(low=0, high=1)
TEACHERS = tuple(STAGE_CHANNELS)  # the teachers the method can build, in its order


@dataclass
class TeacherConfig:
    """The frozen ImageNet encoder whose features the student learns to reproduce."""

    name: str = setting("wide_resnet50_2", Range(choices=TEACHERS), "the frozen encoder")
    weights: str = setting("imagenet", Range(choices=("imagenet", "none")), "none: random weights, for tests")
    # Stage k ends at stride 2 ** (k + 1): RD4AD distils stages 1-3 (strides 4, 8, 16). [2, 3, 4]
    # drops the finest scale for the coarsest (strides 8, 16, 32); the input then needs a multiple
    # of 64 (the bottleneck sits one stride below the coarsest stage).
    stages: list[int] = setting(list(DEFAULT_STAGES), Range(choices=STAGE_CHOICES, length=3),
                                "the three consecutive teacher stages distilled, finest first (stage k: stride 2^(k+1))")


@dataclass
class FusionConfig:
    """Mutual-mapping fusion (MMF) of the teacher's scales before the OCBE."""

    enabled: bool = setting(True, FLAG, "mutual-mapping fusion of the teacher's scales")
    # The kit's interpretation of "fuses features of different levels inhomogeneously".
    # False: G_s = F_s + sum_t w_st M_ts(F_t), softmax over the other scales only (their two
    # weights stay at 0.50 +- 0.004 once trained: any scale is absorbed by the mappings'
    # BatchNorm). True: the own scale joins the softmax, G_s = w_ss F_s + sum_t w_st M_ts(F_t),
    # so each target learns how much it keeps against how much it borrows.
    include_self: bool = setting(False, FLAG, "the own scale joins the softmax of the mixing weights")
    self_logit: float = setting(0.0, Range(), "starting logit of the own scale (log 4 = 1.386 keeps 2/3)")
    # True: at the start of training every mapping M_ts is scaled so that its output has the
    # RMS of F_s on the training images (else a borrowed term starts, and stays, at 3-6 % of G_s).
    match_scale: bool = setting(True, FLAG, "each mapping starts at the RMS of the scale it feeds")


@dataclass
class AttentionConfig:
    """Coordinate attention inside the reverse-distillation structure (where: ``placement``)."""

    enabled: bool = setting(True, FLAG, "coordinate attention inside the student (where: placement)")
    # "coordinate attention inside the reverse-distillation structure": where exactly is the
    # kit's interpretation. ocbe: the concatenated OCBE input only (it then weighs the teacher's
    # evidence, not the student's reconstruction); both: also after every decoder stage;
    # decoder: after the decoder stages only. On MTD, one seed each, both was below RD (128 px,
    # 12 epochs: 71.0 against 74.1 image AUROC; 256 px: 72.0 against 73.7), ocbe was not (75.4);
    # benchmarks/ablation.md has the 3-seed ablation of the chosen placement.
    placement: str = setting("ocbe", Range(choices=("ocbe", "both", "decoder")),
                             "where the attention sits: the OCBE input (ocbe), also after each decoder stage (both), or only there")


@dataclass
class MemoryConfig:
    """Single-category memory bank on the bottleneck embedding."""

    enabled: bool = setting(True, FLAG, "single-category memory bank on the embedding")
    items: int = setting(50, COUNT, "memory items")
    residual: bool = setting(True, FLAG, "decoder gets z + read-out instead of the read-out alone")
    shrink_threshold: float = setting(-1.0, Range(high=1, high_open=True, note="< 0: 1 / items"),
                                      "MemAE hard shrinkage of the addressing weights")
    temperature: float = setting(0.05, POSITIVE, "softmax temperature of the cosine addressing")
    # The kit's interpretation of "a single-category embedding memory": items start where the
    # category's embeddings are. random: uniform in +-1/sqrt(C), as a MemAE layer (the decoder
    # learns to bypass such items: the read-out stays 2-4 % of z + read-out). kmeans: the centres
    # of k-means clusters (by direction) of the bottleneck embeddings of every training image,
    # taken at the start of epoch init_epoch (0: before training; k: after k epochs of stage 1).
    init: str = setting("kmeans", Range(choices=("kmeans", "random")), "where the memory items start")
    init_epoch: int = setting(0, Range(low=0), "the epoch before which k-means sets the items")


@dataclass
class DecoderConfig:
    """The student: a mirrored ResNet decoder built from the teacher's channel list."""

    blocks: list[int] = setting([3, 4, 6], Range(low=1, length=3), "blocks per decoder stage, coarse -> fine")
    width_ratio: float = setting(0.5, POSITIVE, "bottleneck width / stage channels (0.5 is RD4AD's wide ResNet)")
    min_width: int = setting(0, Range(low=0), "floor for that width, for teachers with few channels")
    output_projection: str = setting("auto", Range(choices=("auto", "on", "off")),
                                     "plain 1x1 conv ending each scale (auto: for teachers with signed features)")


@dataclass
class ModelConfig:
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    bottleneck_blocks: int = setting(3, COUNT, "residual blocks in the one-class embedding")
    bottleneck_width: float = setting(1.0, POSITIVE, "their inner width / the coarsest teacher scale's channels "
                                      "(RD4AD 1.0; anomalib 0.5)")


@dataclass
class MaskingConfig:
    """Stage 2: the student sees a corrupted image and must reproduce the clean features."""

    enabled: bool = setting(True, FLAG, "the stage-2 masking at the end of training")
    stage2_fraction: float = setting(0.25, Range(low=0, high=1, low_open=True, high_open=True),
                                     "share of the epochs spent in stage 2 (at the end; each stage gets ≥ 1 epoch)")
    ratio: float = setting(0.2, Range(low=0, high=1, low_open=True), "target share of the image area that is masked")
    shape: str = setting("mixed", Range(choices=("perlin", "rect", "mixed", "crack", "all")),
                         "shape of the masked regions (mixed: perlin or rect; crack: thin random walks; all: a third each)")
    fill: str = setting("mixed", Range(choices=("image", "noise", "mixed")),
                        "what fills them: a cut from another training image, noise, or either")


@dataclass
class TrainConfig:
    epochs: int = setting(200, COUNT, "training epochs")
    batch_size: int = setting(16, COUNT, "images per step")
    lr: float = setting(0.005, POSITIVE, "Adam's learning rate")
    lr_schedule: str = setting("constant", Range(choices=("constant", "cosine")),
                               "constant (RD4AD) or cosine: decays to 0 over the run, per step")
    betas: list[float] = setting([0.5, 0.999], Range(low=0, high=1, high_open=True, length=2), "Adam's betas")
    seed: int = setting(111, Range(low=0, high=2**32 - 1), "seed of the weights and the data order")
    loss: str = setting("flatten", Range(choices=("flatten", "pixel")), "flatten (official RD4AD) or pixel (the paper's text)")
    cache_teacher_features: bool = setting(True, FLAG, "reuse clean-image features across epochs")
    stream: str = setting("auto", Range(choices=("auto", "off", "on")),
                          "decode the training images from disk per batch: auto when the images and the feature "
                          "cache would not fit in memory (dhkd train says so), off: refuse then, on: always")
    amp: bool = setting(False, FLAG, "bf16 autocast of the student on CUDA (ignored on the CPU); off = fp32 as RD4AD")
    channels_last: bool = setting(True, FLAG, "NHWC tensors, on CUDA and on the CPU (cuDNN and oneDNN are faster so)")
    compile: bool = setting(False, FLAG, "torch.compile the student")
    checkpoint_every: int = setting(1, COUNT, "epochs between checkpoints")
    # A learning curve needs the weights of earlier epochs: the resumable checkpoint is
    # overwritten every epoch, so these are copies of the student alone (RUN/kept/epoch-NNNN.pt).
    keep_every: int = setting(0, Range(low=0, note="0: none"),
                              "keep the student's weights every this many epochs in RUN/kept/ (dhkd curve scores them)")


@dataclass
class DataConfig:
    """The network's input shape, and how images of other shapes are brought to it (:mod:`dhkd.data.fit`)."""

    # A multiple of 32: the decoder's upsampling must land on the teacher's stride-4 grid, from the
    # stride-32 bottleneck. One number is a square; [H, W] is height, width (e.g. [256, 640] for strips).
    image_size: int | list[int] = setting(256, Range(low=64, high=1024, multiple_of=32, length=2, single_too=True,
                                                     note="one number: a square; [H, W]: height and width"),
                                          "the network's input size in pixels")
    resize: str = setting("squeeze", Range(choices=RESIZE_MODES),
                          "squeeze: every image resized to that size (RD4AD); keep_aspect: scaled to fit with its "
                          "proportions, centred, the rest padded with its edge pixels and left out of maps and metrics")
    # dhkd predict's threshold is chosen on defect-free images that neither training nor the test
    # split holds (dhkd.data.holdout): this share of the normal training images, chosen by a fixed
    # seed, is not trained on. 0 trains on all of them (RD4AD; the runs behind the committed results,
    # made before this setting); the threshold then falls back on the defect-free test images and says so.
    calibration_share: float = setting(0.1, Range(low=0, high=1, high_open=True, note="0: none, as RD4AD"),
                                       "share of the normal training images held back, untrained, to choose "
                                       "dhkd predict's threshold on")

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the network's input."""
        return as_fit(self.image_size).shape

    def fit(self) -> Fit:
        """How the data layer brings each image to :attr:`shape`."""
        return Fit(*self.shape, keep_aspect=self.resize == "keep_aspect")

    def describe(self) -> str:
        """E.g. ``256 × 256 px`` or ``256 × 384 px (height × width), aspect kept``."""
        height, width = self.shape
        text = f"{height} × {width} px" + ("" if height == width else " (height × width)")
        return text + (", aspect kept (padded)" if self.resize == "keep_aspect" else "")


@dataclass
class EvalConfig:
    blur_sigma: float = setting(4.0, Range(low=0), "Gaussian blur of the anomaly map (0: none)")
    batch_size: int = setting(32, COUNT, "images per inference batch")
    fpr_limit: float = setting(0.3, Range(low=0, high=1, low_open=True), "AUPRO integrates up to this false-positive rate")
    pro_thresholds: int = setting(200, Range(low=2), "thresholds of RD4AD's per-image PRO")
    # Which of the three distilled scales the anomaly map sums (1: the finest). Training always
    # distils all three; this only chooses what is scored, so one run can be scored both ways.
    scales: list[int] = setting([1, 2, 3], Range(choices=(1, 2, 3)),
                                "the distilled scales the anomaly map sums, 1 = finest (each at most once)")
    threshold_quantile: float = setting(0.99, FRACTION, "dhkd predict's default threshold: this quantile of "
                                        "the calibration images' scores (data.calibration_share)")


@dataclass
class Config:
    """The whole configuration of a run. ``profile`` records where it came from."""

    model: ModelConfig = field(default_factory=ModelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    profile: str = setting("paper", Range(note="the profile's name or file"), "where this config came from")


#: make ablation's variants (``--variants``): the RD baseline, each addition alone on top of it, then all of them.
ABLATION_SWITCHES = {"fusion": "model.fusion.enabled", "attention": "model.attention.enabled",
                     "memory": "model.memory.enabled", "masking": "masking.enabled"}
ABLATION_VARIANTS = {"rd": ("RD (baseline)", ()), "fusion": ("+ fusion (MMF)", ("fusion",)),
                     "attention": ("+ coordinate attention", ("attention",)), "memory": ("+ memory bank", ("memory",)),
                     "masking": ("+ masking stage", ("masking",)), "all": ("all (DHKD)", tuple(ABLATION_SWITCHES))}


# ---------------------------------------------------------------------------- the declarations


@dataclass(frozen=True)
class Setting:
    """One leaf of the tree: its dotted name, type, default and allowed values."""

    name: str
    kind: Any
    default: Any
    range: Range | None
    help: str


def settings(cls: type = None, prefix: str = "") -> list[Setting]:
    """Every leaf setting of ``cls`` (default: :class:`Config`), in declaration order."""
    cls = cls or Config
    hints = typing.get_type_hints(cls)
    leaves = []
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            leaves += settings(hints[f.name], f"{name}.")
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        leaves.append(Setting(name, hints[f.name], default, f.metadata.get("range"), f.metadata.get("help", "")))
    return leaves


def type_name(kind: Any) -> str:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(type_name(option) for option in typing.get_args(kind))
    if typing.get_origin(kind) in (list, tuple):
        return f"list[{type_name(typing.get_args(kind)[0])}]"
    return getattr(kind, "__name__", str(kind))


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)


def settings_table() -> str:
    """The README's settings table (Markdown), from the declarations."""
    rows = ["| setting | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
    for s in settings():
        allowed = s.range.text() if s.range else "?"
        rows.append(f"| `{s.name}` | {type_name(s.kind)} | `{_shown(s.default)}` | {allowed} | {s.help} |")
    return "\n".join(rows)


def settings_help() -> str:
    """The same for ``dhkd train --help``: one line per setting."""
    width = max(len(s.name) for s in settings())
    lines = ["settings for --set SECTION.KEY=VALUE (type, allowed values, default; profiles change the defaults):"]
    for s in settings():
        allowed = s.range.text() if s.range else "?"
        lines.append(f"  {s.name:<{width}}  {type_name(s.kind)}, {allowed}; default {_shown(s.default)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- checking values


def validate(config: Config) -> Config:
    """Check every setting's type and range, and the combinations that cannot build a model.

    Raises one :class:`DhkdError` listing every problem, each with the setting, the value,
    the allowed range and the nearest allowed value.
    """
    problems: list[tuple[str, str]] = []
    for s in settings():
        value = _get(config, s.name)
        try:
            value = _coerce(value, s.kind, s.name)
        except DhkdError as error:
            problems.append((error.what, error.fix or f"see `dhkd train --help` for {s.name}"))
            continue
        if s.range is not None:
            problem = _range_problem(s, value)
            if problem:
                problems.append(problem)
    from dhkd.io import plain_name_problem

    problem = plain_name_problem(config.profile)
    if problem:
        problems.append((f"profile: {config.profile!r} is not a plain name ({problem}); it names the results "
                         "folder (RESULTS/<data>/<profile>), which must stay inside RESULTS",
                         "write a plain name (e.g. profile: my_profile), or leave the key out: the file's name is used"))
    if not problems:
        problems += _model_problems(config)
    _raise_all(problems)
    return config


def check_run(config: Config) -> Config:
    """:func:`validate`, plus what depends on the run's length: with masking on, both stages
    need at least one epoch (stage 2 is ``round(epochs * stage2_fraction)`` epochs at the end)."""
    validate(config)
    if not config.masking.enabled:
        return config
    epochs, fraction = config.train.epochs, config.masking.stage2_fraction
    stage2 = round(epochs * fraction)
    if 1 <= stage2 <= epochs - 1:
        return config
    empty = "stage 2 (masking)" if stage2 < 1 else "stage 1 (clean images)"
    what = (f"masking.stage2_fraction={fraction} with train.epochs={epochs} leaves {empty} empty "
            f"(stage 2 gets round({epochs} × {fraction}) = {stage2} of {epochs} epochs)")
    if epochs < 2:
        raise DhkdError(what, "the two stages need train.epochs=2 or more (nearest valid: train.epochs=2), "
                              "or switch the masking stage off with masking.enabled=false")
    k = min(max(stage2, 1), epochs - 1)
    more = next((e for e in range(epochs + 1, epochs + 10_000) if 1 <= round(e * fraction) <= e - 1), None)
    longer = f"or train.epochs={more}, " if more is not None else ""
    raise DhkdError(what, f"nearest valid: masking.stage2_fraction={k / epochs:.4g} ({k} of {epochs} epochs in stage 2), "
                          f"{longer}or masking.enabled=false")


def _get(config: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        config = getattr(config, key)
    return config


def _range_problem(s: Setting, value: Any) -> tuple[str, str] | None:
    r = s.range
    items = value if isinstance(value, list) else None
    if items is not None and r.length is not None and len(items) != r.length:
        default = _shown(s.default)
        return (f"{s.name}={_shown(value)} has {len(items)} items; it must have {r.length}",
                f"give {r.length} items, e.g. {s.name}={default} (the default)")
    for position, item in enumerate(items if items is not None else [value]):
        problem = r.problem(item)
        if problem is None:
            continue
        which = f"{s.name}={_shown(value)}" + (f" (item {position + 1}: {_shown(item)})" if items is not None else "")
        nearest = r.nearest(item)
        if items is not None and nearest is not None:
            nearest = [nearest if i == position else v for i, v in enumerate(items)]
        if isinstance(item, float) and not math.isfinite(item):
            hint = f"give a finite number, {r.text()}, e.g. {s.name}={_shown(s.default)} (the default)"
        elif nearest is not None:
            hint = f"nearest valid value: {s.name}={_shown(nearest)}"
        else:  # an open bound of a float: no single nearest value
            side = f"above {_number(r.low)}" if r.low is not None and isinstance(item, (int, float)) and item <= r.low \
                else f"below {_number(r.high)}" if r.high is not None else f"within {r.text()}"
            hint = f"the nearest valid values lie just {side}; e.g. {s.name}={_shown(s.default)} (the default)"
        if r.choices and nearest is not None:
            hint = f"did you mean {s.name}={_shown(nearest)}? allowed: {r.text()}"
        return (f"{which} is out of range: {s.name} {problem}", hint)
    return None


def _model_problems(config: Config) -> list[tuple[str, str]]:
    """Widths that would be zero for the chosen teacher, and a blur wider than the image."""
    problems = []
    teacher = config.model.teacher
    stages = teacher.stages
    if stages != list(range(stages[0], stages[0] + 3)):
        problems.append((f"model.teacher.stages={_shown(stages)} are not three consecutive stages, finest first "
                         "(the decoder doubles the resolution from one to the next)",
                         "model.teacher.stages=[1, 2, 3] (RD4AD: strides 4, 8, 16) or [2, 3, 4] (strides 8, 16, 32)"))
        return problems
    scales = config.eval.scales
    if not scales or len(set(scales)) != len(scales):
        problems.append((f"eval.scales={_shown(scales)} must name each scale at most once, and at least one",
                         "e.g. eval.scales=[1, 2, 3] (all, RD4AD) or eval.scales=[2, 3]"))
    channels = stage_channels(teacher.name, tuple(stages))
    multiple = 2 * stage_strides(tuple(stages))[-1]  # the bottleneck is one stride below the coarsest stage
    if any(side % multiple for side in config.data.shape):
        height, width = config.data.shape
        nearest = [max(multiple, multiple * round(side / multiple)) for side in (height, width)]
        problems.append((f"data.image_size={_shown(config.data.image_size)} is not a multiple of {multiple}, which "
                         f"model.teacher.stages={_shown(stages)} need (the bottleneck has stride {multiple})",
                         f"nearest valid: data.image_size={_shown(nearest if height != width else nearest[0])}"))
    decoder = config.model.decoder
    narrowest = min(max(decoder.min_width, int(c * decoder.width_ratio)) for c in channels)
    if narrowest < 1:
        ratio = 1 / min(channels)
        problems.append((f"model.decoder.width_ratio={decoder.width_ratio} gives a decoder stage of width 0 with the "
                         f"{config.model.teacher.name} teacher (channels {', '.join(map(str, channels))})",
                         f"nearest valid: model.decoder.width_ratio={ratio:.4g}, or model.decoder.min_width=1 or more"))
    if round(config.model.bottleneck_width * channels[2]) < 1:
        problems.append((f"model.bottleneck_width={config.model.bottleneck_width} gives a bottleneck of width 0 with "
                         f"the {config.model.teacher.name} teacher ({channels[2]} channels)",
                         "use 1.0 (RD4AD) or 0.5 (anomalib's bottleneck); both build for every teacher"))
    largest = min(config.data.shape) / 4
    if config.eval.blur_sigma > largest:
        height, width = config.data.shape
        side = f"{height}-pixel image" if height == width else f"{min(height, width)}-pixel short side of the image"
        problems.append((f"eval.blur_sigma={config.eval.blur_sigma} blurs over more than the whole {side} "
                         "(its kernel reaches 4 sigma)",
                         f"nearest valid: eval.blur_sigma={_number(largest)} (RD4AD: 4)"))
    return problems


def _raise_all(problems: list[tuple[str, str]]) -> None:
    if not problems:
        return
    if len(problems) == 1:
        raise DhkdError(*problems[0])
    lines = [f"{len(problems)} settings are not allowed:"] + [f"  - {what}" for what, _ in problems]
    raise DhkdError("\n".join(lines), "\n       ".join(dict.fromkeys(fix for _, fix in problems)))


# ---------------------------------------------------------------------------- reading YAML


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when there: 10x faster
    """YAML as people write it in settings: only ``true``/``false`` are booleans (a bare ``on``
    or ``no`` stays text, so ``output_projection: on`` means "on"), ``1e-3`` is a number (PyYAML
    alone reads it as text), and a key given twice in one mapping is an error, not "last wins"."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: the base class says so
            if first is not None and key != "<<":
                raise yaml.constructor.ConstructorError(
                    f"while reading the mapping that starts at line {node.start_mark.line + 1}", node.start_mark,
                    f"the key {key!r} appears twice (first at line {first.line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))

YAML_HELP = ("YAML is `key: value` with a space after the colon, sections indented with spaces (never tabs), "
             "lists as [a, b]; quote text that holds ':' or '#'")


def parse_yaml(text: str, where: str) -> Any:
    """``text`` parsed by the settings' YAML rules; a syntax error names ``where``, the line and the column."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a safe loader
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        if mark is None:
            raise DhkdError(f"{where} is not valid YAML: {problem}", YAML_HELP) from None
        lines = text.splitlines() or [""]
        line, column = mark.line, mark.column
        if line >= len(lines):  # the text ended too early: point at its end
            line, column = len(lines) - 1, len(lines[-1])
        shown = lines[line]
        context = getattr(error, "context", None)
        fix = "indent with spaces: YAML does not allow tabs" if "\t" in shown or "'\\t'" in problem else YAML_HELP
        if "appears twice" in problem:
            fix = "keep one of the two (the second would silently replace the first)"
        raise DhkdError(f"{where} is not valid YAML at line {line + 1}, column {column + 1}: "
                        f"{problem}{f' ({context})' if context else ''}\n    {shown}\n    {' ' * column}^", fix) from None


def read_yaml(path: str | Path, what: str = "profile") -> Any:
    """A user's YAML file (a profile, a data-set file): a missing file, one that is not text and
    one that is not valid YAML each end in a :class:`DhkdError` that says so."""
    path = Path(path)
    if not path.exists():
        raise DhkdError(f"{what} file {path} does not exist", "check the path (relative paths start in the current folder)")
    if path.is_dir():
        raise DhkdError(f"{what} {path} is a folder, not a YAML file", f"give the path of the {what}'s .yaml file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DhkdError(f"{what} file {path} is not a text file (not UTF-8)", "give a YAML file saved as UTF-8 text") from None
    except OSError as error:
        raise DhkdError(f"cannot read {what} file {path}: {error.strerror}", "check the file's permissions") from None
    return parse_yaml(text, f"{what} file {path}")


# ---------------------------------------------------------------------------- loading


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def _profile_path(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists() and (PROFILE_DIR / path.name).exists() and path.parent == Path("."):
            return PROFILE_DIR / path.name
        return path  # read_yaml says when it does not exist
    path = PROFILE_DIR / f"{name}.yaml"
    if path.exists():
        return path
    names = available_profiles()
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise DhkdError(f"unknown profile '{name}'", f"{hint}choose one of {', '.join(names)} or give a .yaml path")


def _read_profile_tree(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The profile's YAML with everything it inherits merged underneath."""
    if name in seen:
        raise DhkdError(f"profile '{name}' inherits from itself ({' -> '.join(seen + (name,))})",
                        "remove the `inherits:` line that closes the circle")
    path = _profile_path(name)
    tree = read_yaml(path, "profile")
    tree = {} if tree is None else tree
    if not isinstance(tree, dict):
        raise DhkdError(f"profile {path} is not a YAML mapping (it holds a {type(tree).__name__})",
                        "a profile lists sections, e.g.\n       train:\n         epochs: 10")
    parent = tree.pop("inherits", None)
    try:
        from_dict(Config, tree)  # unknown keys and wrong types, named with this file
    except DhkdError as error:
        raise DhkdError(f"profile {path}: {error.what}", error.fix) from None
    if parent is None:
        return tree
    if not isinstance(parent, str):
        raise DhkdError(f"profile {path}: inherits must name one profile, got {parent!r}",
                        f"e.g. inherits: paper (profiles: {', '.join(available_profiles())})")
    return _deep_merge(_read_profile_tree(parent, seen + (name,)), tree)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(profile: str = "paper", overrides: list[str] | None = None) -> Config:
    """Build the config of a profile, apply ``section.key=value`` overrides, then :func:`validate` it."""
    if not isinstance(profile, str) or not profile.strip():
        raise DhkdError(f"profile must be a name or a .yaml path, got {profile!r}",
                        f"choose one of {', '.join(available_profiles())} or give a .yaml path")
    tree = _read_profile_tree(profile)
    tree.setdefault("profile", Path(profile).stem)
    config = from_dict(Config, tree)
    for override in overrides or []:
        apply_override(config, override)
    return validate(config)


def training_config(profile: str, epochs: int | None, data: Any = None) -> Config:
    """The profile's configuration with the epoch count replaced when ``epochs`` is given, and the
    input shape a data-set file ``data`` names for itself (:func:`dataset_settings`)."""
    return load_config(profile, dataset_settings(data) + ([f"train.epochs={int(epochs)}"] if epochs else []))


def dataset_settings(data: Any) -> list[str]:
    """The overrides a data-set file carries (its ``image_size`` and ``resize``: the data set's own
    defaults, over the profile's and under the user's ``--set``); none for a folder or None."""
    from dhkd.data.dataset_file import as_dataset, is_dataset_file

    return as_dataset(data).settings() if data is not None and is_dataset_file(data) else []


def apply_override(config: Config, override: str) -> None:
    """Apply one ``section.key=value``; the value is parsed as YAML and type-checked."""
    if "=" not in override:
        raise DhkdError(f"--set '{override}' is not of the form section.key=value", "for example --set train.epochs=10")
    dotted, raw = override.split("=", 1)
    keys = dotted.strip().split(".")
    node: Any = config
    for depth, key in enumerate(keys):
        names = [f.name for f in dataclasses.fields(node)]
        if key not in names:
            where = ".".join(keys[:depth]) or "the config"
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean '{'.'.join(keys[:depth] + [close[0]])}'? " if close else ""
            raise DhkdError(f"--set: '{dotted}' is not a setting ({where} has no '{key}')", f"{hint}{where} has: {', '.join(names)}")
        if depth < len(keys) - 1:
            node = getattr(node, key)
            if not dataclasses.is_dataclass(node):
                raise DhkdError(f"--set: '{'.'.join(keys[: depth + 1])}' is a value, not a section",
                                f"set it as --set {'.'.join(keys[: depth + 1])}=VALUE")
    hints = typing.get_type_hints(type(node))
    value = parse_yaml(raw, f"the value of --set {dotted}") if raw.strip() else ""
    setattr(node, keys[-1], _coerce(value, hints[keys[-1]], dotted))


def from_dict(cls: type, tree: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys and wrong types."""
    if not isinstance(tree, dict):
        raise DhkdError(f"config section '{where or 'root'}' must be a mapping, got {tree!r}",
                        f"write it as a section of key: value lines (keys: "
                        f"{', '.join(f.name for f in dataclasses.fields(cls))})")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in tree.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise DhkdError(f"config has an unknown key '{path}'", f"{hint}known keys here: {', '.join(names)}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = from_dict(kind, value, path)
        else:
            kwargs[key] = _coerce(value, kind, path)
    return cls(**kwargs)


def _coerce(value: Any, kind: Any, path: str) -> Any:
    """Check ``value`` against the annotated type; ints are accepted where floats are."""
    if dataclasses.is_dataclass(kind):
        raise DhkdError(f"'{path}' is a section, not a value", f"set its keys one by one, e.g. {path}.<key>=...")
    origin = typing.get_origin(kind)
    if origin in (list, tuple):
        (item_kind, *_) = typing.get_args(kind)
        if not isinstance(value, (list, tuple)):
            raise DhkdError(f"'{path}' must be a list, got {value!r}", "write it as [a, b, ...]")
        return [_coerce(item, item_kind, path) for item in value]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            try:
                return _coerce(value, option, path)
            except DhkdError:
                continue
        raise DhkdError(f"'{path}' has the wrong type: {value!r}", f"give a value of type {type_name(kind)}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is type(None) and value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        example = {int: "a whole number such as 10", float: "a number such as 0.5 or 1e-3", bool: "true or false",
                   str: "text (quote it if it looks like a number)"}.get(kind, kind.__name__)
        raise DhkdError(f"'{path}' must be of type {kind.__name__}, got {value!r} ({type(value).__name__})",
                        f"give {example}")
    return value


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML, so a run directory says exactly what ran."""
    from dhkd.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(config), sort_keys=False))


def read_config(path: Path) -> Config:
    """Read a resolved config written by :func:`save_config`, checked exactly as a new run's
    (:func:`check_run`: types, ranges, combinations), so a foreign or edited run folder is
    refused before any model is built from it."""
    tree = read_yaml(path, "run config")
    if isinstance(tree, dict) and isinstance(tree.get("data"), dict):
        # a run made before data.calibration_share trained on every training image: it held none back
        tree["data"].setdefault("calibration_share", 0.0)
    try:
        return check_run(from_dict(Config, tree))
    except DhkdError as error:
        raise DhkdError(f"run config {path}: {error.what}", error.fix) from None


# ---------------------------------------------------------------------------- the settings table

SETTINGS_DOC = "docs/settings.md"  # where the kit keeps the generated table (a test checks it is current)
TABLE_START = "<!-- settings table: made by `dhkd settings table --write docs/settings.md` -->"
TABLE_END = "<!-- end of the settings table -->"
