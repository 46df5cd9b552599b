"""DHKD assembled: teacher -> [fusion] -> OCBE [+ attention] -> [memory] -> decoder [+ attention].

The parts are built elsewhere and handed in (:func:`dhkd.run.build.build_model` turns a
configuration into them), so that every part is a plain module and an addition that is off is
simply ``None``; with every addition off this is RD4AD. The teacher sits beside the student
rather than inside it, so checkpoints hold only what is trained and the training loop can reuse
cached teacher features.
"""

from __future__ import annotations

import torch
from torch import nn

from dhkd.method.bottleneck import OneClassBottleneck
from dhkd.method.decoder import Decoder
from dhkd.method.fusion import MutualMappingFusion
from dhkd.method.initialisation import rd4ad_initialise
from dhkd.method.memory import MemoryBank
from dhkd.method.teacher import Teacher


class Student(nn.Module):
    """Teacher features ``[F_1, F_2, F_3]`` in, their reconstruction ``[S_1, S_2, S_3]`` out (same shapes).

    ``fusion`` (before the bottleneck) and ``memory`` (on its embedding) are optional. The
    bottleneck and the decoder are re-initialised as RD4AD initialises them
    (:mod:`dhkd.method.initialisation`).
    """

    def __init__(self, bottleneck: OneClassBottleneck, decoder: Decoder, fusion: MutualMappingFusion | None = None,
                 memory: MemoryBank | None = None) -> None:
        super().__init__()
        self.fusion = fusion
        self.bottleneck = bottleneck
        self.memory = memory
        self.decoder = decoder
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
    """``images (B, 3, H, W) -> (teacher features, student features)``, three scales each."""

    def __init__(self, teacher: Teacher, student: Student) -> None:
        super().__init__()
        self.teacher = teacher
        self.student = student

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        with torch.no_grad():
            teacher_features = self.teacher(images)
        return teacher_features, self.student(teacher_features)
