"""Diagnostics on hand-built tiny models, where the right figures are known by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dhkd.run import diagnostics
from dhkd.config import MaskingConfig, load_config
from dhkd.method import CoordinateAttention, MemoryBank
from dhkd.run.build import build_model


class ScaledFusion(nn.Module):
    """``G_s = (1 + borrowed) * F_s`` with uniform mixing weights: the borrowed share is
    ``borrowed / (1 + borrowed)`` at every scale."""

    def __init__(self, borrowed: float, scales: int = 3) -> None:
        super().__init__()
        self.borrowed, self.scales = borrowed, scales

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [f * (1 + self.borrowed) for f in features]

    def mixing_weights(self) -> torch.Tensor:
        return (1 - torch.eye(self.scales)) / (self.scales - 1)


def _features() -> list[torch.Tensor]:
    return [torch.rand(2, c, s, s) + 0.1 for c, s in [(4, 16), (8, 8), (16, 4)]]


def test_fusion_borrowed_share_and_uniform_weights_by_hand() -> None:
    result = diagnostics.fusion_diagnostics(ScaledFusion(0.5), _features())
    assert result["borrowed_share"] == [pytest.approx(1 / 3, abs=1e-4)] * 3
    assert result["mixing_weights"] == [[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]
    assert result["mixing_untrained"] == 0.5 and result["mixing_max_deviation"] == 0.0
    assert result["inert"] is False
    weak = diagnostics.fusion_diagnostics(ScaledFusion(0.05), _features())
    assert weak["borrowed_share"][0] == pytest.approx(0.05 / 1.05, abs=1e-4)
    assert weak["inert"] is True


def test_constant_attention_has_no_spread_and_is_inert() -> None:
    attention = CoordinateAttention(16).eval()
    for conv in (attention.to_h, attention.to_w):
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    site = diagnostics.attention_site(attention, torch.randn(2, 16, 8, 8))
    assert site["spread"] == 0.0 and site["std"] == 0.0
    assert site["mean"] == pytest.approx(0.25) and site["mean_abs_from_untrained"] == 0.0
    assert diagnostics.attention_diagnostics({"site": site})["inert"] is True


def test_attention_that_weights_rows_differently_is_not_inert() -> None:
    attention = CoordinateAttention(16).eval()
    nn.init.constant_(attention.to_h.weight, 3.0)
    rows = torch.linspace(-2, 2, 8).view(1, 1, 8, 1).expand(2, 16, 8, 8)
    site = diagnostics.attention_site(attention, rows.contiguous())
    assert site["spread"] > diagnostics.ATTENTION_MIN_SPREAD
    result = diagnostics.attention_diagnostics({"constant": {**site, "spread": 0.0}, "rows": site})
    assert result["inert_sites"] == ["constant"] and result["inert"] is False


def test_a_shut_channel_does_not_make_the_attention_spread() -> None:
    """One channel all but shut (a ~ 1e-6, varying tenfold over positions) beside three constant
    ones at 0.25: the channel scales nothing, so the site barely varies. The spread is the mean
    std over positions / the mean of a, by hand; a mean of per-channel std / mean would call it acting."""
    shut = torch.logspace(-7, -6, 64).view(1, 1, 8, 8)
    a = torch.cat([shut, torch.full((1, 3, 8, 8), 0.25)], dim=1)
    site = diagnostics.attention_site(SimpleNamespace(attention=lambda x: (a, torch.ones_like(a))), a)
    per_channel_std = a.flatten(2).std(dim=2)
    assert site["spread"] == pytest.approx(float(per_channel_std.mean() / a.mean()), abs=1e-4)
    per_channel_relative = float((per_channel_std / a.flatten(2).mean(dim=2)).mean())
    assert site["spread"] < 1e-5 and per_channel_relative > diagnostics.ATTENTION_MIN_SPREAD
    assert diagnostics.attention_diagnostics({"site": site})["inert"] is True


def _one_hot_memory(residual: bool) -> tuple[MemoryBank, torch.Tensor]:
    """4 orthonormal items; the embedding's 2x2 positions are items 0, 1, 2 and 2."""
    memory = MemoryBank(channels=4, items=4, residual=residual, temperature=0.01)
    with torch.no_grad():
        memory.items.copy_(torch.eye(4))
    z = torch.eye(4)[[0, 1, 2, 2]].T.reshape(1, 4, 2, 2)
    return memory, z


def test_one_hot_addressing_reads_one_item_per_position() -> None:
    memory, z = _one_hot_memory(residual=False)
    result = diagnostics.memory_diagnostics(memory, z, memory(z))
    assert result["items_per_position"] == pytest.approx(1.0, abs=1e-3)
    assert result["mean_max_weight"] == pytest.approx(1.0, abs=1e-4)
    assert result["entropy_ratio"] == pytest.approx(0.0, abs=1e-3)
    assert result["items_used"] == 3
    usage = torch.tensor([0.25, 0.25, 0.5])  # the average addressing: items 0, 1 once, item 2 twice
    assert result["effective_items"] == pytest.approx(math.exp(-(usage * usage.log()).sum().item()), abs=1e-3)
    assert result["readout_share"] == 1.0 and result["inert"] is False


def test_residual_read_out_share_by_hand() -> None:
    memory, z = _one_hot_memory(residual=True)
    result = diagnostics.memory_diagnostics(memory, z, memory(z))  # z + read-out = 2 z: half of it is read out
    assert result["readout_share"] == pytest.approx(0.5, abs=1e-4)
    bypassed = diagnostics.memory_diagnostics(memory, z, z + 0.05 * memory(z) - 0.05 * z)
    assert bypassed["readout_share"] < diagnostics.MEMORY_MIN_READOUT_SHARE and bypassed["inert"] is True


def test_stage_losses_from_history_rows() -> None:
    rows = [{"epoch": 1, "stage": "1", "loss": "0.4"}, {"epoch": 2, "stage": "1", "loss": "0.2"},
            {"epoch": 3, "stage": "2", "loss": "0.5"}, {"epoch": 4, "stage": "2", "loss": "0.3"}]
    losses = diagnostics.stage_losses(rows)
    assert losses == {"stage1_last": 0.2, "stage2_first": 0.5, "stage2_last": 0.3, "stage2_mean": 0.4,
                      "stage2_over_stage1": 2.0}
    assert diagnostics.stage_losses(rows[:2])["stage2_mean"] is None


def test_a_student_that_copies_the_corruption_restores_nothing() -> None:
    """Teacher and student are identities: outside the corrupted regions the error is 0, inside it is
    exactly the corruption's own, so the restoration is 0 and masking counts as inert."""
    config = load_config("smoke", ["masking.fill=noise"])
    model = SimpleNamespace(teacher=lambda x: [x], student=lambda features: features)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    probe = diagnostics.masking_probe(model, config, images, torch.Generator().manual_seed(0))
    assert probe["error_outside"] == pytest.approx(0.0, abs=1e-5)
    assert probe["error_inside"] == pytest.approx(probe["corruption_inside"], rel=1e-4) and probe["error_inside"] > 0.1
    assert probe["restoration"] == pytest.approx(0.0, abs=1e-3)
    result = diagnostics.masking_diagnostics(model, config, images, [], torch.Generator().manual_seed(0))
    assert result["inert"] is True


@pytest.mark.slow
def test_diagnose_a_whole_model_reports_every_addition() -> None:
    config = load_config("smoke")
    model = build_model(config.model, 0)
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    result = diagnostics.diagnose(model, config, images, [])
    assert set(diagnostics.ADDITIONS) <= set(result)
    assert all(result[name]["enabled"] for name in diagnostics.ADDITIONS)
    assert result["fusion"]["mixing_max_deviation"] == 0.0  # untrained: uniform
    assert list(result["attention"]["sites"]) == ["bottleneck.attention"]  # placement ocbe: the OCBE input only
    both = load_config("smoke", ["model.attention.placement=both"])
    sites = diagnostics.diagnose(build_model(both.model, 0), both, images, [])["attention"]["sites"]
    assert len(sites) == 4  # the bottleneck's and one per decoder stage
    rd = load_config("smoke", ["model.fusion.enabled=false", "model.attention.enabled=false",
                               "model.memory.enabled=false", "masking.enabled=false"])
    plain = diagnostics.diagnose(build_model(rd.model, 0), rd, images, [])
    assert all(plain[name]["inert"] is None for name in diagnostics.ADDITIONS) and plain["inert"] == []
    assert "restoration" in plain["masking"]  # RD's reference for the masking probe


def test_the_masking_probe_gives_no_verdict_on_a_student_worse_than_copying() -> None:
    config = load_config("smoke", ["masking.fill=noise"])
    model = SimpleNamespace(teacher=lambda x: [x], student=lambda features: [-f for f in features])
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    result = diagnostics.masking_diagnostics(model, config, images, [], torch.Generator().manual_seed(0))
    assert result["probe_resolves"] is False and result["inert"] is None


@pytest.mark.slow
def test_the_diagnostics_figure_draws_every_addition_on_or_off() -> None:
    from dhkd.notebook import plots

    config = load_config("smoke")
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    figure = plots.addition_diagnostics(diagnostics.diagnose(build_model(config.model, 0), config, images, []))
    assert len(figure.axes) == 4 and figure.axes[1].get_title().startswith("attention")
    rd = load_config("smoke", ["model.fusion.enabled=false", "model.attention.enabled=false",
                               "model.memory.enabled=false", "masking.enabled=false"])
    figure = plots.addition_diagnostics(diagnostics.diagnose(build_model(rd.model, 0), rd, images, []))
    assert not figure.axes[0].axison and figure.axes[3].get_title() == "masking: off"


def test_judge_applies_the_current_thresholds_to_recorded_figures() -> None:
    """A run recorded with an older masking threshold is judged by today's; off additions never are."""
    record = {"inert": ["masking"],
              "fusion": {"enabled": True, "borrowed_share": [0.02, 0.05, diagnostics.FUSION_MIN_BORROWED_SHARE - 0.01]},
              "attention": {"enabled": True, "sites": {"a": {"spread": 0.01}, "b": {"spread": diagnostics.ATTENTION_MIN_SPREAD}}},
              "memory": {"enabled": False, "readout_share": 0.0, "effective_items": 0.0},
              "masking": {"enabled": True, "probe_resolves": True, "restoration": diagnostics.MASKING_MIN_RESTORATION + 0.01}}
    assert diagnostics.judge(record) == ["fusion"]
    record["masking"]["restoration"] = diagnostics.MASKING_MIN_RESTORATION - 0.01
    record["memory"] = {"enabled": True, "readout_share": 0.5, "effective_items": 1.5}
    assert diagnostics.judge(record) == ["fusion", "memory", "masking"]
    record["masking"]["probe_resolves"] = False  # no verdict without a resolving probe
    assert "masking" not in diagnostics.judge(record)
    assert diagnostics.judge({"masking": {"enabled": True, "inert": True}}) == ["masking"]  # old record, no figures


def test_a_probe_that_does_not_resolve_shows_no_verdict_in_the_table() -> None:
    """06's table said 'inert False' for a masking probe that gives no verdict; it says None now."""
    record = {"masking": {"enabled": True, "probe_resolves": False, "restoration": 1.057}}
    (row,) = diagnostics.verdict_rows(record)
    assert row["addition"] == "masking" and row["inert"] is None
    record["masking"]["probe_resolves"] = True
    assert diagnostics.verdict_rows(record)[0]["inert"] is False


def test_batch_statistics_normalise_by_the_batch_and_change_nothing() -> None:
    """A BatchNorm still at its initial running statistics passes large inputs unnormalised in eval
    mode; inside batch_statistics it normalises by the batch, and afterwards it is as it was."""
    layer = nn.Sequential(nn.BatchNorm2d(3)).eval()
    x = 50 + 10 * torch.randn(4, 3, 5, 5)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    assert float(layer(x).mean()) > 40  # eval, initial statistics: (x - 0) / 1
    with diagnostics.batch_statistics(layer):
        inside = layer(x)
        assert layer.training
    assert abs(float(inside.mean())) < 1e-4 and float(inside.std()) == pytest.approx(1.0, abs=0.05)
    assert not layer.training and all(torch.equal(before[k], v) for k, v in layer.state_dict().items())
