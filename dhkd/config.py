"""One typed configuration tree, loaded from YAML profiles.

A profile is a YAML file in ``dhkd/profiles/`` (or any path) holding a partial tree; it may
name another profile under ``inherits:`` and then only lists what differs. ``--set
section.key=value`` overrides are applied last and type-checked against the dataclasses, so
a typo or a wrong type fails at once with a message instead of silently doing nothing.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dhkd.errors import DhkdError

PROFILE_DIR = Path(__file__).parent / "profiles"


@dataclass
class TeacherConfig:
    """The frozen ImageNet encoder whose features the student learns to reproduce."""

    name: str = "wide_resnet50_2"  # wide_resnet50_2 | resnet18 | efficientnet_lite0
    weights: str = "imagenet"  # imagenet | none


@dataclass
class FusionConfig:
    """Mutual-mapping fusion (MMF) of the teacher's scales before the OCBE."""

    enabled: bool = True
    # The kit's interpretation of "fuses features of different levels inhomogeneously".
    # False: G_s = F_s + sum_t w_st M_ts(F_t), softmax over the other scales only (their two
    # weights stay at 0.50 +- 0.004 once trained: any scale is absorbed by the mappings'
    # BatchNorm). True: the own scale joins the softmax, G_s = w_ss F_s + sum_t w_st M_ts(F_t),
    # so each target learns how much it keeps against how much it borrows.
    include_self: bool = False
    self_logit: float = 0.0  # initial logit of the own scale (others start at 0); log 4 = 1.386 keeps 2/3
    # True: at the start of training every mapping M_ts is scaled so that its output has the
    # RMS of F_s on the training images (else a borrowed term starts, and stays, at 3-6 % of G_s).
    match_scale: bool = True


@dataclass
class AttentionConfig:
    """Coordinate attention inside the reverse-distillation structure (where: ``placement``)."""

    enabled: bool = True
    # "coordinate attention inside the reverse-distillation structure": where exactly is the
    # kit's interpretation. both: on the concatenated OCBE input and after every decoder stage;
    # ocbe: the OCBE input only (it then weighs the teacher's evidence, not the student's
    # reconstruction); decoder: after the decoder stages only. On MTD (128 px, 12 epochs, one
    # seed) both was 3.1 image AUROC points below RD, ocbe 1.3 above (to be confirmed).
    placement: str = "both"  # both | ocbe | decoder


@dataclass
class MemoryConfig:
    """Single-category memory bank on the bottleneck embedding."""

    enabled: bool = True
    items: int = 50
    residual: bool = True  # decoder gets z + read-out instead of the read-out alone
    shrink_threshold: float = -1.0  # MemAE hard shrinkage; < 0 means 1 / items
    temperature: float = 0.05  # softmax temperature of the cosine addressing
    # The kit's interpretation of "a single-category embedding memory": items start where the
    # category's embeddings are. random: uniform in +-1/sqrt(C), as a MemAE layer (the decoder
    # learns to bypass such items: the read-out stays ~2 % of z + read-out). kmeans: the centres
    # of k-means clusters (by direction) of the bottleneck embeddings of every training image,
    # taken at the start of epoch init_epoch (0: before training; k: after k epochs of stage 1).
    init: str = "kmeans"  # random | kmeans
    init_epoch: int = 0


@dataclass
class DecoderConfig:
    """The student: a mirrored ResNet decoder built from the teacher's channel list."""

    blocks: list[int] = field(default_factory=lambda: [3, 4, 6])  # coarse -> fine stages
    width_ratio: float = 0.5  # bottleneck width / stage channels (0.5 is RD4AD's wide ResNet)
    min_width: int = 0  # floor for the bottleneck width, for teachers with few channels
    output_projection: str = "auto"  # auto | on | off: plain 1x1 conv ending each scale


@dataclass
class ModelConfig:
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    bottleneck_blocks: int = 3  # residual blocks in the one-class embedding
    bottleneck_width: float = 1.0  # inner width of those blocks / the coarsest teacher scale's channels (RD4AD 1.0; anomalib 0.5)


@dataclass
class MaskingConfig:
    """Stage 2: the student sees a corrupted image and must reproduce the clean features."""

    enabled: bool = True
    stage2_fraction: float = 0.25  # share of the epochs spent in stage 2 (at the end)
    ratio: float = 0.2  # target share of the image area that is masked
    shape: str = "mixed"  # perlin | rect | mixed (perlin or rect) | crack (thin random walks) | all (a third each)
    fill: str = "mixed"  # image (cut from another training image) | noise | mixed


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 16
    lr: float = 0.005
    lr_schedule: str = "constant"  # constant (RD4AD) | cosine: decays to 0 over the run, per step
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    seed: int = 111
    loss: str = "flatten"  # flatten (official RD4AD) | pixel (the paper's text)
    cache_teacher_features: bool = True  # reuse clean-image features across epochs
    amp: bool = False  # bf16 autocast of the student on CUDA (ignored on the CPU); off = fp32 as RD4AD
    channels_last: bool = True  # NHWC tensors, on CUDA and on the CPU (cuDNN and oneDNN are faster so)
    compile: bool = False  # torch.compile the student
    checkpoint_every: int = 1  # epochs between checkpoints


@dataclass
class DataConfig:
    image_size: int = 256


@dataclass
class EvalConfig:
    blur_sigma: float = 4.0
    batch_size: int = 32
    fpr_limit: float = 0.3
    pro_thresholds: int = 200  # RD4AD's per-image PRO
    threshold_quantile: float = 0.99  # dhkd predict's default threshold: this quantile of the defect-free test scores


@dataclass
class Config:
    """The whole configuration of a run. ``profile`` records where it came from."""

    model: ModelConfig = field(default_factory=ModelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    profile: str = "paper"


# ---------------------------------------------------------------------------- loading


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def _profile_path(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
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
        raise DhkdError(f"profile '{name}' inherits from itself ({' -> '.join(seen + (name,))})")
    path = _profile_path(name)
    tree = yaml.safe_load(path.read_text()) or {}
    if not isinstance(tree, dict):
        raise DhkdError(f"profile {path} is not a YAML mapping")
    parent = tree.pop("inherits", None)
    if parent is None:
        return tree
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
    """Build the config of a profile, then apply ``section.key=value`` overrides."""
    tree = _read_profile_tree(profile)
    tree.setdefault("profile", Path(profile).stem)
    config = from_dict(Config, tree)
    for override in overrides or []:
        apply_override(config, override)
    return config


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
                raise DhkdError(f"--set: '{'.'.join(keys[: depth + 1])}' is a value, not a section")
    hints = typing.get_type_hints(type(node))
    value = yaml.safe_load(raw) if raw.strip() else ""
    setattr(node, keys[-1], _coerce(value, hints[keys[-1]], dotted))


def from_dict(cls: type, tree: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys and wrong types."""
    if not isinstance(tree, dict):
        raise DhkdError(f"config section '{where or 'root'}' must be a mapping, got {tree!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in tree.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
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
        raise DhkdError(f"'{path}' is a section; set its keys one by one, e.g. {path}.<key>=...")
    origin = typing.get_origin(kind)
    if origin in (list, tuple):
        (item_kind, *_) = typing.get_args(kind)
        if not isinstance(value, (list, tuple)):
            raise DhkdError(f"'{path}' must be a list, got {value!r}", f"write it as [a, b, ...]")
        return [_coerce(item, item_kind, path) for item in value]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            try:
                return _coerce(value, option, path)
            except DhkdError:
                continue
        raise DhkdError(f"'{path}' has the wrong type: {value!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is type(None) and value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DhkdError(f"'{path}' must be of type {kind.__name__}, got {value!r} ({type(value).__name__})")
    return value


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML, so a run directory says exactly what ran."""
    from dhkd.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(config), sort_keys=False))


def read_config(path: Path) -> Config:
    """Read a resolved config written by :func:`save_config`."""
    tree = yaml.safe_load(Path(path).read_text())
    return from_dict(Config, tree)
