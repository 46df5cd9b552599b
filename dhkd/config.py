"""One typed configuration tree, loaded from YAML profiles.

A profile is a YAML file in ``dhkd/profiles/`` (or any path) holding a partial tree; it may
name another profile under ``inherits:`` and then only lists what differs. ``--set
section.key=value`` overrides are applied last and type-checked against the dataclasses, so
a typo or a wrong type fails at once with a message instead of silently doing nothing.

Every setting declares its allowed values next to its field (:func:`~dhkd.ranges.setting` with a
:class:`~dhkd.ranges.Range`, the machinery data-set files use too): :func:`validate` checks them
when a config is loaded, :func:`check_run` adds the checks that depend on the run's length, and
the README's settings table and ``dhkd train --help`` are generated from the same declarations
(``dhkd settings table``). Profiles are read by :mod:`dhkd.yamlfile`, as data-set files are.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dhkd.data.fit import IMAGE_SIZE, RESIZE_MODES, Fit, as_fit
from dhkd.errors import DhkdError
from dhkd.method.loss import LOSS_KINDS
from dhkd.method.masking import FILLS, SHAPES
from dhkd.method.teacher import DEFAULT_STAGES, STAGE_CHANNELS, STAGE_CHOICES, WEIGHTS, stage_channels, stage_strides
from dhkd.ranges import (COUNT, FLAG, FRACTION, POSITIVE, Range, Setting, check_leaves, coerce, format_number, from_dict,
                         leaves, raise_all, setting, shown, type_name)
from dhkd.yamlfile import parse_yaml, read_yaml

PROFILE_DIR = Path(__file__).parent / "profiles"

# ---------------------------------------------------------------------------- allowed values

TEACHERS = tuple(STAGE_CHANNELS)  # the teachers the method can build, in its order


@dataclass
class TeacherConfig:
    """The frozen ImageNet encoder whose features the student learns to reproduce."""

    name: str = setting("wide_resnet50_2", Range(choices=TEACHERS), "the frozen encoder")
    weights: str = setting("imagenet", Range(choices=WEIGHTS), "none: random weights, for tests")
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
    shape: str = setting("mixed", Range(choices=SHAPES),
                         "shape of the masked regions (mixed: perlin or rect; crack: thin random walks; all: a third each)")
    fill: str = setting("mixed", Range(choices=FILLS),
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
    loss: str = setting("flatten", Range(choices=LOSS_KINDS), "flatten (official RD4AD) or pixel (the paper's text)")
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

    # IMAGE_SIZE (dhkd.data.fit): a multiple of 32; one number is a square, [H, W] height and width
    # (e.g. [256, 640] for strips).
    image_size: int | list[int] = setting(256, IMAGE_SIZE, "the network's input size in pixels")
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


def settings(cls: type | None = None, prefix: str = "") -> list[Setting]:
    """Every leaf setting of ``cls`` (default: :class:`Config`), in declaration order."""
    return leaves(cls or Config, prefix)


def settings_table() -> str:
    """The README's settings table (Markdown), from the declarations."""
    rows = ["| setting | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
    for s in settings():
        allowed = s.range.text() if s.range else "?"
        rows.append(f"| `{s.name}` | {type_name(s.kind)} | `{shown(s.default)}` | {allowed} | {s.help} |")
    return "\n".join(rows)


def settings_help() -> str:
    """The same for ``dhkd train --help``: one line per setting."""
    width = max(len(s.name) for s in settings())
    lines = ["settings for --set SECTION.KEY=VALUE (type, allowed values, default; profiles change the defaults):"]
    for s in settings():
        allowed = s.range.text() if s.range else "?"
        lines.append(f"  {s.name:<{width}}  {type_name(s.kind)}, {allowed}; default {shown(s.default)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- checking values


def validate(config: Config) -> Config:
    """Check every setting's type and range, and the combinations that cannot build a model.

    Raises one :class:`DhkdError` listing every problem, each with the setting, the value,
    the allowed range and the nearest allowed value.
    """
    problems = check_leaves(config)
    from dhkd.io import plain_name_problem

    problem = plain_name_problem(config.profile)
    if problem:
        problems.append((f"profile: {config.profile!r} is not a plain name ({problem}); it names the results "
                         "folder (RESULTS/<data>/<profile>), which must stay inside RESULTS",
                         "write a plain name (e.g. profile: my_profile), or leave the key out: the file's name is used"))
    if not problems:
        problems += _model_problems(config)
    raise_all(problems)
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


def _model_problems(config: Config) -> list[tuple[str, str]]:
    """Widths that would be zero for the chosen teacher, and a blur wider than the image."""
    problems = []
    teacher = config.model.teacher
    stages = teacher.stages
    if stages != list(range(stages[0], stages[0] + 3)):
        problems.append((f"model.teacher.stages={shown(stages)} are not three consecutive stages, finest first "
                         "(the decoder doubles the resolution from one to the next)",
                         "model.teacher.stages=[1, 2, 3] (RD4AD: strides 4, 8, 16) or [2, 3, 4] (strides 8, 16, 32)"))
        return problems
    scales = config.eval.scales
    if not scales or len(set(scales)) != len(scales):
        problems.append((f"eval.scales={shown(scales)} must name each scale at most once, and at least one",
                         "e.g. eval.scales=[1, 2, 3] (all, RD4AD) or eval.scales=[2, 3]"))
    channels = stage_channels(teacher.name, tuple(stages))
    multiple = 2 * stage_strides(tuple(stages))[-1]  # the bottleneck is one stride below the coarsest stage
    if any(side % multiple for side in config.data.shape):
        height, width = config.data.shape
        nearest = [max(multiple, multiple * round(side / multiple)) for side in (height, width)]
        problems.append((f"data.image_size={shown(config.data.image_size)} is not a multiple of {multiple}, which "
                         f"model.teacher.stages={shown(stages)} need (the bottleneck has stride {multiple})",
                         f"nearest valid: data.image_size={shown(nearest if height != width else nearest[0])}"))
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
                         f"nearest valid: eval.blur_sigma={format_number(largest)} (RD4AD: 4)"))
    return problems


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
    setattr(node, keys[-1], coerce(value, hints[keys[-1]], dotted))


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML, so a run directory says exactly what ran."""
    from dhkd.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(config), sort_keys=False))


def upgrade_run_tree(tree: Any) -> Any:
    """A run's recorded config as this version reads it, where a setting's default would misdescribe
    an older run: one made before data.calibration_share trained on every image (it held none back).
    Settings added since that change nothing (e.g. model.teacher.stages) take their defaults."""
    if isinstance(tree, dict) and isinstance(tree.get("data"), dict):
        tree["data"].setdefault("calibration_share", 0.0)
    return tree


def read_config(path: Path) -> Config:
    """Read a resolved config written by :func:`save_config`, checked exactly as a new run's
    (:func:`check_run`: types, ranges, combinations), so a foreign or edited run folder is
    refused before any model is built from it."""
    tree = upgrade_run_tree(read_yaml(path, "run config"))
    try:
        return check_run(from_dict(Config, tree))
    except DhkdError as error:
        raise DhkdError(f"run config {path}: {error.what}", error.fix) from None


# ---------------------------------------------------------------------------- the settings table

SETTINGS_DOC = "docs/settings.md"  # where the kit keeps the generated table (a test checks it is current)
TABLE_START = "<!-- settings table: made by `dhkd settings table --write docs/settings.md` -->"
TABLE_END = "<!-- end of the settings table -->"
