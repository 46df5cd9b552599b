"""Training keeps the weights it starts from (``start.pt``): after the data-driven starts
(fusion scale matching, memory k-means), before the first optimiser step. Notebooks 02 and 06
compare a trained run with them; a freshly built model is not that start."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TOY_CATEGORY
from dhkd.config import training_config
from dhkd.errors import DhkdError
from dhkd.run import diagnostics
from dhkd.run.build import build_model
from dhkd.run.evaluate import load_model, load_start_model
from dhkd.run.folder import START_NAME
from dhkd.run.train import Trainer


@pytest.fixture
def run(toy_run: Path) -> Path:
    """The session's trained smoke run (conftest.py), two epochs: only read here."""
    return toy_run


def _vector(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_start_weights_are_the_data_driven_start_not_a_fresh_model(run: Path, toy_root: Path) -> None:
    assert (run / START_NAME).exists()
    start, config = load_start_model(run, "cpu")
    fresh = build_model(config.model, config.train.seed)
    trained, _ = load_model(run, "cpu")
    # the memory items are k-means centres and the fusion mappings rescaled: not the built ones
    assert not torch.allclose(_vector(start.student.memory), _vector(fresh.student.memory))
    assert not torch.allclose(_vector(start.student.fusion), _vector(fresh.student.fusion))
    # the decoder has no data-driven start: exactly the built one, and training moved it
    assert torch.equal(_vector(start.student.decoder), _vector(fresh.student.decoder))
    assert not torch.allclose(_vector(start.student.decoder), _vector(trained.student.decoder))


def test_start_weights_are_what_the_first_step_sees(run: Path, toy_root: Path, tmp_path: Path) -> None:
    """Redo the first epoch's starts by hand with a Trainer: its student equals start.pt."""
    config = training_config("smoke", 2)
    trainer = Trainer(config, toy_root, TOY_CATEGORY, tmp_path / "again", device="cpu", progress=False)
    trainer.prepare()
    trainer._init_from_data(0)
    start, _ = load_start_model(run, "cpu")
    for (name, a), b in zip(trainer.student.state_dict().items(), start.student.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def test_a_run_without_start_weights_says_how_to_get_them(run: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    for path in run.iterdir():
        if path.name != START_NAME:
            (old / path.name).write_bytes(path.read_bytes())
    with pytest.raises(DhkdError, match="train the run again"):
        load_start_model(old, "cpu")


def test_verdict_table_puts_start_and_trained_side_by_side(run: Path, toy_root: Path) -> None:
    from dhkd.data import load_split

    trained, config = load_model(run, "cpu")
    start, _ = load_start_model(run, "cpu")
    images = load_split(toy_root, TOY_CATEGORY, "train", config.data.image_size, progress=False).images
    records = {name: diagnostics.diagnose_run(model, config, images, run) for name, model in
               (("start", start), ("trained", trained))}
    table = diagnostics.verdict_table(records)
    assert list(table.columns) == ["inert below", "start", "start: inert", "trained", "trained: inert"]
    assert set(table.index.get_level_values("addition")) == {"fusion", "attention", "memory", "masking"}
    spread = max(site["spread"] for site in records["trained"]["attention"]["sites"].values())
    assert table.loc["attention", "trained"].item() == spread
    assert table.loc["attention", "trained: inert"].item() == ("attention" in diagnostics.judge(records["trained"]))
    maps = diagnostics.attention_maps(trained.student, trained.teacher(torch.zeros(2, 3, 64, 64)))
    assert list(maps) == list(diagnostics.attention_sites(trained.student)) == ["bottleneck.attention"]
    a_h, a_w = maps["bottleneck.attention"]["attention"]
    assert a_h.shape[-1] == 1 and a_w.shape[-2] == 1
