"""DHKD assembled: teacher -> [fusion] -> OCBE [+ attention] -> [memory] -> decoder [+ attention].

Every addition is switched by its ``enabled`` flag; with all of them off this is RD4AD.
The teacher sits beside the student rather than inside it, so checkpoints hold only what is
trained and the training loop can reuse cached teacher features.
"""

from __future__ import annotations

import torch
from torch import nn

from dhkd.config import ModelConfig
from dhkd.errors import DhkdError
from dhkd.models.bottleneck import OneClassBottleneck
from dhkd.models.decoder import Decoder
from dhkd.models.fusion import MutualMappingFusion
from dhkd.models.initialisation import rd4ad_initialise
from dhkd.models.memory import MemoryBank
from dhkd.models.teacher import Teacher


ATTENTION_PLACEMENTS = ("both", "ocbe", "decoder")


class Student(nn.Module):
    """Teacher features ``[F_1, F_2, F_3]`` in, their reconstruction ``[S_1, S_2, S_3]`` out (same shapes).

    The bottleneck and the decoder start from RD4AD's initialisation (:mod:`dhkd.models.initialisation`).
    """

    def __init__(self, channels: tuple[int, int, int], config: ModelConfig, teacher_nonnegative: bool = True) -> None:
        super().__init__()
        attention = config.attention.enabled
        if config.attention.placement not in ATTENTION_PLACEMENTS:
            raise DhkdError(f"model.attention.placement must be one of {', '.join(ATTENTION_PLACEMENTS)}, "
                            f"got '{config.attention.placement}'")
        fusion = config.fusion
        self.fusion = (MutualMappingFusion(channels, fusion.include_self, fusion.self_logit) if fusion.enabled
                       else None)
        try:
            self.bottleneck = OneClassBottleneck(channels, blocks=config.bottleneck_blocks,
                                                 attention=attention and config.attention.placement != "decoder",
                                                 width_ratio=config.bottleneck_width)
        except ValueError as error:  # a width torchvision's Bottleneck cannot build, said in config terms
            raise DhkdError(f"model.bottleneck_width={config.bottleneck_width}: {error}",
                            "use 1.0 (RD4AD) or 0.5 (anomalib's bottleneck); both build for every teacher") from error
        memory = config.memory
        self.memory = (MemoryBank(self.bottleneck.out_channels, memory.items, memory.residual, memory.shrink_threshold,
                                  memory.temperature) if memory.enabled else None)
        projection = {"on": True, "off": False, "auto": not teacher_nonnegative}[config.decoder.output_projection]
        self.decoder = Decoder(self.bottleneck.out_channels, channels, config.decoder.blocks, config.decoder.width_ratio,
                               config.decoder.min_width, attention=attention and config.attention.placement != "ocbe",
                               output_projection=projection)
        rd4ad_initialise(self.bottleneck)
        rd4ad_initialise(self.decoder, keep=tuple(self.decoder.projections))

    def bottleneck_embedding(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The bottleneck embedding ``z`` before the memory (what the memory items describe)."""
        if self.fusion is not None:
            features = self.fusion(features)
        return self.bottleneck(features)

    def embed(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The bottleneck embedding ``z`` (after the memory read-out when the bank is on)."""
        z = self.bottleneck_embedding(features)
        return self.memory(z) if self.memory is not None else z

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.decoder(self.embed(features))


class DHKD(nn.Module):
    """``images (B, 3, S, S) -> (teacher features, student features)``, three scales each."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.decoder.output_projection not in ("auto", "on", "off"):
            raise DhkdError(f"model.decoder.output_projection must be auto, on or off, got '{config.decoder.output_projection}'")
        self.teacher = Teacher(config.teacher.name, config.teacher.weights)
        self.student = Student(self.teacher.channels, config, self.teacher.nonnegative)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        with torch.no_grad():
            teacher_features = self.teacher(images)
        return teacher_features, self.student(teacher_features)


def build_model(config: ModelConfig, seed: int) -> DHKD:
    """Seed, then build: the student's initial weights, and a teacher with ``weights: none``
    (whose random weights are not in the checkpoint), are the same in training and evaluation."""
    torch.manual_seed(seed)
    return DHKD(config)
