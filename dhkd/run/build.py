"""Configuration to modules: the one place where a :class:`~dhkd.config.ModelConfig` becomes the
plain arguments of the method's modules (:mod:`dhkd.method`), and a masking configuration the
arguments of :func:`~dhkd.method.masking.corrupt`.

The order of construction is fixed (teacher, fusion, bottleneck, memory, decoder), so a seed
gives the same initial weights in training, evaluation and the notebooks.
"""

from __future__ import annotations

from typing import Any

import torch

from dhkd.config import MaskingConfig, ModelConfig
from dhkd.errors import DhkdError
from dhkd.method import (DHKD, Decoder, MemoryBank, MutualMappingFusion, OneClassBottleneck, Student, Teacher,
                         TeacherWeightsUnavailable)

def build_teacher(config: ModelConfig) -> Teacher:
    """The frozen teacher, or a :class:`DhkdError` saying how to get its weights."""
    try:
        return Teacher(config.teacher.name, config.teacher.weights, tuple(config.teacher.stages))
    except TeacherWeightsUnavailable as error:
        raise DhkdError(str(error), "connect to the internet once (torchvision caches the weights under "
                        "~/.cache/torch/hub/checkpoints), or use the offline teacher (--profile offline), "
                        "or model.teacher.weights=none for tests") from None


def build_student(channels: tuple[int, int, int], config: ModelConfig, teacher_nonnegative: bool = True) -> Student:
    """The student for a teacher of ``channels``, with the additions ``config`` switches on."""
    attention = config.attention
    fusion = config.fusion
    fusion_module = (MutualMappingFusion(channels, fusion.include_self, fusion.self_logit) if fusion.enabled else None)
    try:
        bottleneck = OneClassBottleneck(channels, blocks=config.bottleneck_blocks,
                                        attention=attention.enabled and attention.placement != "decoder",
                                        width_ratio=config.bottleneck_width)
    except ValueError as error:  # a width torchvision's Bottleneck cannot build, said in config terms
        raise DhkdError(f"model.bottleneck_width={config.bottleneck_width}: {error}",
                        "use 1.0 (RD4AD) or 0.5 (anomalib's bottleneck); both build for every teacher") from error
    memory = config.memory
    memory_module = (MemoryBank(bottleneck.out_channels, memory.items, memory.residual, memory.shrink_threshold,
                                memory.temperature) if memory.enabled else None)
    projection = {"on": True, "off": False, "auto": not teacher_nonnegative}[config.decoder.output_projection]
    decoder = Decoder(bottleneck.out_channels, channels, config.decoder.blocks, config.decoder.width_ratio,
                      config.decoder.min_width, attention=attention.enabled and attention.placement != "ocbe",
                      output_projection=projection)
    return Student(bottleneck, decoder, fusion=fusion_module, memory=memory_module)


def build_model(config: ModelConfig, seed: int) -> DHKD:
    """Seed, then build: the student's initial weights, and a teacher with ``weights: none``
    (whose random weights are not in the checkpoint), are the same in training and evaluation."""
    torch.manual_seed(seed)
    teacher = build_teacher(config)
    return DHKD(teacher, build_student(teacher.channels, config, teacher.nonnegative))


def masking_arguments(config: MaskingConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`dhkd.method.masking.corrupt` that ``config`` sets."""
    return {"ratio": config.ratio, "shape": config.shape, "fill": config.fill}

