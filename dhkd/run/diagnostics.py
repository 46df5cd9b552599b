"""Does each addition act? Measurements of a trained model that say whether an addition changes
what the student computes, or is carried along doing (almost) nothing.

An ablation row alone cannot tell "this addition does not help" from "this addition is not
used": a fusion whose borrowed terms are a few percent of each scale, attention maps that are
nearly constant, or a memory read-out the decoder bypasses all give RD's numbers. These
figures, recorded under ``diagnostics`` in the evaluation JSON, tell them apart:

- fusion: the learned mixing weights ``w_st`` (untrained: uniform, 1/(scales-1)) and, per
  target scale, the borrowed share ``||G_s - F_s|| / ||G_s||`` of the fused map;
- attention, per site: the spread of ``a = a_h * a_w`` over positions relative to its mean
  (:func:`attention_site`), and ``mean |a - 0.25|`` (0.25 = sigmoid(0)^2, the value of an
  attention with zero logits);
- memory: the read-out's share of the decoder input, how many items are used, and how peaked
  the addressing is;
- masking: the stage-2 loss against stage 1 (history.csv), and on a batch of corrupted
  training images the student's error inside the corrupted regions against outside (no
  verdict while the student's error on clean parts exceeds what copying the corruption costs).

Each addition gets ``inert: true/false`` from the thresholds below (``null`` when it is off).
They are judgement calls, chosen so that "inert" means "acts on less than a tenth of what it
touches" and not "does not help": helping is the ablation's question.
"""

from __future__ import annotations

import csv
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import torch
from torch import nn

from dhkd.method.anomaly_map import scale_maps
from dhkd.config import Config
from dhkd.data import normalize
from dhkd.method.masking import corrupt, donor_indices
from dhkd.run.build import masking_arguments
from dhkd.method import DHKD, CoordinateAttention, MemoryBank
from dhkd.run.folder import HISTORY_NAME

#: Fusion is inert when no target scale borrows at least this share of its fused map.
FUSION_MIN_BORROWED_SHARE = 0.10
#: An attention site is inert when a_h * a_w varies over positions by less than this share of its
#: mean (mean std over positions / mean): it then scales every position of a channel alike (within +-5 %).
ATTENTION_MIN_SPREAD = 0.05
#: The memory is inert when its read-out is less than this share of the decoder's input (the
#: decoder bypasses it through the residual path) ...
MEMORY_MIN_READOUT_SHARE = 0.10
#: ... or when fewer than this many items are effectively used (every position reads one vector).
MEMORY_MIN_EFFECTIVE_ITEMS = 2.0
#: Masking is inert when the student restores less than this share of what a corruption does to
#: the features: ``1 - (error inside - error outside) / corruption's own feature change inside``.
#: The one-class bottleneck restores much of it without any masking, so masking must clearly
#: exceed that. Calibrated on the ablations of benchmarks/ablation.md, every seed: without the
#: masking stage 0.68-0.78 (bottle RD, 36 epochs; MTD at 128 px, 12 epochs; MTD RD at 256 px:
#: 0.59-0.62), with it 0.90-0.95 at 128 px and on bottle but only 0.80-0.85 on MTD at 256 px
#: (one seed at 0.7996). No absolute threshold separates every run: read the figure against the
#: ablation's RD row, which gives the reference for each data set and resolution.
MASKING_MIN_RESTORATION = 0.80
#: Sigmoid(0)^2: the attention product of a site whose logits are all zero.
ATTENTION_UNTRAINED = 0.25
#: Training images the diagnostics look at (evenly spaced over the split), and the corruption seed.
DIAGNOSTIC_IMAGES = 16

THRESHOLDS = {"fusion_min_borrowed_share": FUSION_MIN_BORROWED_SHARE, "attention_min_spread": ATTENTION_MIN_SPREAD,
              "memory_min_readout_share": MEMORY_MIN_READOUT_SHARE,
              "memory_min_effective_items": MEMORY_MIN_EFFECTIVE_ITEMS,
              "masking_min_restoration": MASKING_MIN_RESTORATION}
ADDITIONS = ("fusion", "attention", "memory", "masking")
#: How each addition's recorded figures make it inert: the one place the rules live, applied
#: when a run is diagnosed and again by :func:`judge` to figures recorded earlier.
INERT_RULES = {
    "fusion": lambda d: max(d["borrowed_share"]) < FUSION_MIN_BORROWED_SHARE,
    "attention": lambda d: all(site["spread"] < ATTENTION_MIN_SPREAD for site in d["sites"].values()),
    "memory": lambda d: d["readout_share"] < MEMORY_MIN_READOUT_SHARE or d["effective_items"] < MEMORY_MIN_EFFECTIVE_ITEMS,
    "masking": lambda d: bool(d["probe_resolves"]) and d["restoration"] < MASKING_MIN_RESTORATION,
}


# ------------------------------------------------------------------------------ how the start is seen


@contextmanager
def batch_statistics(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` as a training step sees it: every BatchNorm normalises with the batch's own
    statistics. Its running statistics (and the train/eval mode) are restored afterwards, so the
    pass changes nothing.

    Why: a student as training starts it (``start.pt``) still holds BatchNorm's initial running
    statistics (mean 0, variance 1). In eval mode its layers then pass their inputs unnormalised,
    and what the fusion and the attention compute depends on how large the teacher's features
    happen to be (a pretrained teacher's are large: the attention's sigmoids saturate; a random
    teacher's are tiny: the fusion's borrowed terms vanish). Neither the first training step
    (batch statistics) nor a trained run's evaluation (learned statistics) computes that, so the
    start is measured as the first step sees it.
    """
    buffers = {name: value.clone() for name, value in module.named_buffers()}
    was_training = module.training
    module.train()
    try:
        yield module
    finally:
        module.train(was_training)
        with torch.no_grad():
            for name, value in module.named_buffers():
                value.copy_(buffers[name])


# ------------------------------------------------------------------------------ one addition each


@torch.no_grad()
def fusion_diagnostics(fusion: nn.Module, features: list[torch.Tensor]) -> dict[str, Any]:
    """Mixing weights (row: target scale, column: source) and each target's borrowed share."""
    fused = fusion(features)
    shares = [_norm(g - f) / max(_norm(g), 1e-12) for f, g in zip(features, fused, strict=True)]
    weights = fusion.mixing_weights().detach().cpu() if hasattr(fusion, "mixing_weights") else None
    uniform = 1.0 / max(1, len(features) - 1)
    off_diagonal = ~torch.eye(len(features), dtype=torch.bool)
    result: dict[str, Any] = {
        "enabled": True,
        "borrowed_share": [round(s, 4) for s in shares],
        "mixing_weights": None if weights is None else [[round(float(w), 4) for w in row] for row in weights],
        "mixing_untrained": round(uniform, 4),
        "mixing_max_deviation": None if weights is None else round(float((weights[off_diagonal] - uniform).abs().max()), 4),
    }
    result["inert"] = INERT_RULES["fusion"](result)
    return result


@torch.no_grad()
def attention_site(module: CoordinateAttention, x: torch.Tensor) -> dict[str, float]:
    """How far one site's ``a_h * a_w`` is from constant, over the images of ``x``."""
    a_h, a_w = module.attention(x)
    a = (a_h * a_w).float()  # (B, C, H, W)
    per_map = a.flatten(2)
    # The spread is the channels' std over positions, averaged, over the mean of a: how much the
    # scaling of a typical channel changes from position to position, against the typical scaling.
    # Not the mean of each channel's std / mean: a channel the attention shuts (a ~ 1e-4 everywhere)
    # has a huge std / mean while it scales nothing, and an untrained module (whose BatchNorm still
    # holds its initial statistics, so its sigmoids saturate) shuts about a fifth of its channels.
    # Trained sites have no shut channels: there the two agree within 0.003 (the committed
    # ablations, recorded with the older measure, keep their verdicts).
    std = per_map.std(dim=2).mean()
    spread = std / a.mean().clamp_min(1e-12)
    return {"spread": round(float(spread), 4), "std": round(float(std), 4),
            "mean": round(float(a.mean()), 4), "min": round(float(a.min()), 4), "max": round(float(a.max()), 4),
            "mean_abs_from_untrained": round(float((a - ATTENTION_UNTRAINED).abs().mean()), 4)}


def attention_diagnostics(sites: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Every site's figures; the addition is inert when every site is."""
    inert_sites = [name for name, site in sites.items() if site["spread"] < ATTENTION_MIN_SPREAD]
    return {"enabled": True, "sites": sites, "untrained": ATTENTION_UNTRAINED, "inert_sites": inert_sites,
            "inert": INERT_RULES["attention"]({"sites": sites})}


@torch.no_grad()
def memory_diagnostics(memory: MemoryBank, z: torch.Tensor, output: torch.Tensor) -> dict[str, Any]:
    """Read-out share of the decoder input, item use and the addressing's peakedness."""
    weights = memory.address(z).float().flatten(0, 2)  # (positions, N)
    items = weights.shape[1]
    residual = bool(getattr(memory, "residual", False))
    share = _norm(output - z) / max(_norm(output), 1e-12) if residual else 1.0
    entropy = -(weights * weights.clamp_min(1e-12).log()).sum(dim=1)  # per position
    usage = weights.mean(dim=0)
    usage_entropy = float(-(usage * usage.clamp_min(1e-12).log()).sum())
    result: dict[str, Any] = {
        "enabled": True,
        "residual": residual,
        "readout_share": round(share, 4),
        "items": items,
        "items_used": int((weights.amax(dim=0) >= 1.0 / items).sum()),  # >= 1/N of some position's mass
        "effective_items": round(math.exp(usage_entropy), 3),  # perplexity of the average addressing
        "items_per_position": round(float(entropy.exp().mean()), 3),
        "mean_max_weight": round(float(weights.amax(dim=1).mean()), 4),
        "entropy_ratio": round(float(entropy.mean()) / math.log(items), 4) if items > 1 else 0.0,
    }
    result["inert"] = INERT_RULES["memory"](result)
    return result


def stage_losses(history: list[dict[str, Any]]) -> dict[str, float | None]:
    """The last stage-1 epoch's loss and the stage-2 epochs' mean, first and last (history.csv rows)."""
    stage1 = [float(row["loss"]) for row in history if int(row["stage"]) == 1]
    stage2 = [float(row["loss"]) for row in history if int(row["stage"]) == 2]
    last1 = stage1[-1] if stage1 else None
    mean2 = sum(stage2) / len(stage2) if stage2 else None
    return {"stage1_last": _round(last1), "stage2_first": _round(stage2[0] if stage2 else None),
            "stage2_last": _round(stage2[-1] if stage2 else None), "stage2_mean": _round(mean2),
            "stage2_over_stage1": _round(mean2 / last1 if mean2 is not None and last1 else None)}


@torch.no_grad()
def masking_probe_maps(model: DHKD, config: Config, images: torch.Tensor,
                       generator: torch.Generator) -> dict[str, torch.Tensor]:
    """What :func:`masking_probe` measures, as maps: ``corrupted`` (normalised images with the
    profile's corruption), ``masks`` (bool ``(B, S, S)``, True where corrupted), ``student_error``
    and ``copy_error`` (``(B, S, S)``: ``1 - cos`` to the clean image's teacher features,
    averaged over the scales, of the student's reconstruction and of the corrupted image's own
    teacher features, i.e. what a student that copies its input would make)."""
    clean = normalize(images)
    donors = normalize(images[donor_indices(torch.arange(len(images), device=images.device), len(images), generator)])
    corrupted, masks = corrupt(clean, generator, donors, **masking_arguments(config.masking))
    targets, seen = model.teacher(clean), model.teacher(corrupted)
    size = tuple(images.shape[-2:])
    return {"corrupted": corrupted, "masks": masks, "student_error": scale_maps(targets, model.student(seen), size).mean(dim=1),
            "copy_error": scale_maps(targets, seen, size).mean(dim=1)}


@torch.no_grad()
def masking_probe(model: DHKD, config: Config, images: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
    """The student's error on corrupted training images, inside the corrupted regions and outside
    (:func:`masking_probe_maps`); ``restoration``: the share of the corruption's own feature
    change inside that the student undoes, ``1 - (inside - outside) / corruption_inside``."""
    maps = masking_probe_maps(model, config, images, generator)
    student_error, masks = maps["student_error"], maps["masks"]
    inside, outside = float(student_error[masks].mean()), float(student_error[~masks].mean())
    copied = float(maps["copy_error"][masks].mean())
    return {"error_inside": round(inside, 5), "error_outside": round(outside, 5),
            "inside_over_outside": round(inside / max(outside, 1e-12), 3), "corruption_inside": round(copied, 5),
            "restoration": round(1.0 - (inside - outside) / max(copied, 1e-12), 4)}


def masking_diagnostics(model: DHKD, config: Config, images: torch.Tensor, history: list[dict[str, Any]],
                        generator: torch.Generator) -> dict[str, Any]:
    """Stage losses and the corruption probe; the probe runs with masking off too (RD's reference)."""
    result: dict[str, Any] = {"enabled": config.masking.enabled, **stage_losses(history)}
    result.update(masking_probe(model, config, images, generator) if len(images) > 1 else {})
    # The probe resolves only a student whose error on clean parts is below what copying the
    # corruption costs; a worse student (e.g. barely trained) has no verdict.
    result["probe_resolves"] = "restoration" in result and result["error_outside"] < result["corruption_inside"]
    judged = config.masking.enabled and result["probe_resolves"]
    result["inert"] = INERT_RULES["masking"](result) if judged else None
    return result


# ------------------------------------------------------------------------------ the whole model




def site_title(name: str) -> str:
    """A readable name for an attention site's module name: ``bottleneck.attention`` is the
    OCBE input, ``decoder.attentions.<i>`` the output of decoder stage i + 1."""
    if name == "bottleneck.attention":
        return "OCBE input"
    if name.startswith("decoder.attentions."):
        return f"decoder stage {int(name.rsplit('.', 1)[1]) + 1}"
    return name


def attention_sites(student: nn.Module) -> dict[str, CoordinateAttention]:
    """The coordinate-attention modules of a student by module name (the names the diagnostics
    record); ``model.attention.placement`` decides which sites hold one."""
    return {name: module for name, module in student.named_modules() if isinstance(module, CoordinateAttention)}


@torch.no_grad()
def attention_maps(student: nn.Module, features: list[torch.Tensor]) -> dict[str, dict[str, Any]]:
    """Per attention site (module name): its actual ``input`` for these teacher features, its
    ``(a_h, a_w)`` and its ``figures`` (:func:`attention_site`, the measure the verdict uses)."""
    with _recording(student, keep=True) as record:
        student(features)
    return record["maps"]


def verdict_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The one figure (or two) per addition that decides whether it is inert, from a recorded
    ``diagnostics`` dict, with its threshold and the verdict under this code's rules."""
    inert = set(judge(record))
    rows = []

    def add(addition: str, figure: str, value: float, threshold: float, judged: bool = True) -> None:
        rows.append({"addition": addition, "figure": figure, "value": value, "inert below": threshold,
                     "inert": (addition in inert) if judged else None})  # None: no verdict

    if (record.get("fusion") or {}).get("enabled"):
        add("fusion", "largest borrowed share ||G_s - F_s|| / ||G_s||", max(record["fusion"]["borrowed_share"]),
            FUSION_MIN_BORROWED_SHARE)
    if (record.get("attention") or {}).get("enabled"):
        add("attention", "largest spread of a_h*a_w over positions (std / mean)",
            max(site["spread"] for site in record["attention"]["sites"].values()), ATTENTION_MIN_SPREAD)
    if (record.get("memory") or {}).get("enabled"):
        add("memory", "read-out's share of the decoder input", record["memory"]["readout_share"], MEMORY_MIN_READOUT_SHARE)
        add("memory", "effectively used items", record["memory"]["effective_items"], MEMORY_MIN_EFFECTIVE_ITEMS)
    masking = record.get("masking") or {}
    if "restoration" in masking:
        # without a resolving probe (a student worse on clean parts than copying) there is no verdict
        add("masking", "restoration of corrupted regions", masking["restoration"], MASKING_MIN_RESTORATION,
            judged=bool(masking.get("enabled")) and bool(masking.get("probe_resolves")))
    return rows


def verdict_table(records: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Several recorded ``diagnostics`` side by side (e.g. ``{"start": ..., "trained": ...}``): one
    row per deciding figure, its threshold, then per record the value and the verdict."""
    frames = []
    for label, record in records.items():
        rows = pd.DataFrame(verdict_rows(record)).set_index(["addition", "figure"])
        frames.append(rows.rename(columns={"value": label, "inert": f"{label}: inert"}))
    table = pd.concat([frames[0][["inert below"]]] + [f.drop(columns="inert below") for f in frames], axis=1)
    return table


def judge(record: dict[str, Any]) -> list[str]:
    """The additions a recorded ``diagnostics`` dict (an evaluation JSON's) calls inert under the
    thresholds of *this* code: a recalibrated threshold then applies to runs recorded before."""
    inert = []
    for name, rule in INERT_RULES.items():
        entry = record.get(name) or {}
        try:
            if entry.get("enabled") and rule(entry):
                inert.append(name)
        except (KeyError, TypeError, ValueError):  # a record from before a figure existed
            if entry.get("inert"):
                inert.append(name)
    return inert


@torch.inference_mode()
def diagnose(model: DHKD, config: Config, images: torch.Tensor, history: list[dict[str, Any]] | None = None,
             seed: int | None = None, as_training: bool = False) -> dict[str, Any]:
    """Every addition's diagnostics on ``images`` (uint8 training images ``(N, 3, S, S)`` on the
    model's device); ``history``: the run's history.csv rows. The model is put in eval mode;
    ``as_training``: the student's BatchNorm on the batch's statistics instead
    (:func:`batch_statistics`, for a model as training starts it)."""
    model.eval()
    if as_training:
        with batch_statistics(model.student):
            return _diagnose(model, config, images, history, seed)
    return _diagnose(model, config, images, history, seed)


def _diagnose(model: DHKD, config: Config, images: torch.Tensor, history: list[dict[str, Any]] | None,
              seed: int | None) -> dict[str, Any]:
    student = model.student
    x = normalize(images)
    if config.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    features = model.teacher(x)
    with _recording(student) as record:
        student(features)
    result: dict[str, Any] = {"images": len(images), "thresholds": dict(THRESHOLDS)}
    fusion = getattr(student, "fusion", None)
    result["fusion"] = fusion_diagnostics(fusion, features) if fusion is not None else _off()
    result["attention"] = attention_diagnostics(record["attention"]) if record["attention"] else _off()
    result["memory"] = memory_diagnostics(*record["memory"]) if record["memory"] else _off()
    generator = torch.Generator(device=images.device).manual_seed(config.train.seed if seed is None else seed)
    result["masking"] = masking_diagnostics(model, config, images, history or [], generator)
    result["inert"] = [name for name in ADDITIONS if result[name].get("inert")]
    return result


def diagnose_run(model: DHKD, config: Config, train_images: torch.Tensor, run_dir: str | Path,
                 as_training: bool = False) -> dict[str, Any]:
    """:func:`diagnose` on :data:`DIAGNOSTIC_IMAGES` evenly spaced training images of a run."""
    count = min(DIAGNOSTIC_IMAGES, len(train_images))
    chosen = torch.linspace(0, len(train_images) - 1, count).round().long()
    device = next(model.student.parameters()).device
    return diagnose(model, config, train_images[chosen].to(device), read_history(Path(run_dir) / HISTORY_NAME),
                    as_training=as_training)


def read_history(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@contextmanager
def _recording(student: nn.Module, keep: bool = False) -> Iterator[dict[str, Any]]:
    """Forward hooks that keep each attention site's figures and the memory's input and output;
    ``keep``: also each site's input and ``(a_h, a_w)`` under ``maps``."""
    record: dict[str, Any] = {"attention": {}, "memory": None, "maps": {}}
    handles = []

    def on_attention(name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
            record["attention"][name] = attention_site(module, inputs[0])
            if keep:
                record["maps"][name] = {"input": inputs[0].clone(), "attention": module.attention(inputs[0]),
                                        "figures": record["attention"][name]}
        return hook

    def on_memory(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        record["memory"] = (module, inputs[0].clone(), output.clone())  # the decoder may work in place later

    for name, module in student.named_modules():
        if isinstance(module, CoordinateAttention):
            handles.append(module.register_forward_hook(on_attention(name)))
        elif isinstance(module, MemoryBank):
            handles.append(module.register_forward_hook(on_memory))
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


def _off() -> dict[str, Any]:
    return {"enabled": False, "inert": None}


def _norm(x: torch.Tensor) -> float:
    return float(x.float().norm())


def _round(value: float | None, digits: int = 5) -> float | None:
    return None if value is None else round(value, digits)
