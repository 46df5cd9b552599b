"""Single-category memory bank on the bottleneck embedding.

The paper (IEEE TBD 2024) adds "a single-category embedding memory bank" that normalises the
embedding of one category. This kit's interpretation (docs/method.md, addition 3) follows MemAE
(Gong et al., ICCV 2019): every position of the embedding is replaced by a sparse mixture of
learned items. The items can only learn normal patterns, so an anomaly's embedding is pulled
back to something normal and the student fails to reconstruct it: a larger anomaly score.
Items learned from a random start stay tiny and the decoder learns around them, so the kit can
start them at k-means centres of the category's training embeddings (``memory.init: kmeans``,
:meth:`MemoryBank.init_from_embeddings`, called by the trainer).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class MemoryBank(nn.Module):
    """``(B, C, H, W) -> (B, C, H, W)``, a read-out from ``items`` (N, C).

    Addressing: cosine similarity of every position with every item, divided by a temperature
    (cosines lie in [-1, 1]; without it the softmax over 50 items is almost uniform), softmax,
    hard shrinkage of weights below ``threshold`` (default 1/N) and renormalisation.
    """

    def __init__(self, channels: int, items: int = 50, residual: bool = False, shrink_threshold: float = -1.0,
                 temperature: float = 0.05) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(channels)
        self.items = nn.Parameter(torch.empty(items, channels).uniform_(-bound, bound))
        self.residual = residual
        self.threshold = 1.0 / items if shrink_threshold < 0 else shrink_threshold
        self.temperature = temperature

    def address(self, z: torch.Tensor) -> torch.Tensor:
        """Addressing weights ``(B, H, W, N)``; each position's weights sum to 1."""
        queries = F.normalize(z.permute(0, 2, 3, 1), dim=-1)
        similarity = queries @ F.normalize(self.items, dim=-1).T
        weights = torch.softmax(similarity / self.temperature, dim=-1)
        shifted = weights - self.threshold
        weights = F.relu(shifted) * weights / (shifted.abs() + 1e-12)  # MemAE's hard shrinkage
        return weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        readout = self.readout(z)
        return z + readout if self.residual else readout

    @torch.no_grad()
    def init_from_embeddings(self, z: torch.Tensor, seed: int = 0) -> None:
        """Put the items at the centres of ``items`` clusters of the embeddings ``z`` (B, C, H, W).

        Why: randomly initialised items are tiny (norm about 0.6 against embeddings of norm
        10-50) and point nowhere in particular, so the decoder learns to ignore the read-out
        (measured: 1.8 % of the residual sum). Clustering is by direction (k-means on unit
        vectors, matching the cosine addressing); each item is its cluster's mean embedding, so
        a read-out reproduces a typical normal embedding with its magnitude.
        """
        vectors = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float().cpu()
        if len(vectors) < len(self.items):
            raise ValueError(f"k-means needs at least {len(self.items)} embedding vectors, got {len(vectors)}")
        unit = F.normalize(vectors, dim=-1).numpy()
        from sklearn.cluster import KMeans  # here: scikit-learn takes 2.5 s to import, and only k-means needs it

        labels = KMeans(len(self.items), n_init=1, random_state=seed).fit(unit).labels_
        centres = torch.stack([vectors[torch.from_numpy(labels == k)].mean(dim=0)
                               for k in range(len(self.items))])
        self.items.copy_(centres.to(self.items.device, self.items.dtype))

    def readout(self, z: torch.Tensor) -> torch.Tensor:
        """The weighted sum of items alone ``(B, C, H, W)``, before any residual sum (diagnostics)."""
        return (self.address(z) @ self.items).permute(0, 3, 1, 2)
