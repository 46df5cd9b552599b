"""Settings: every one has a declared type and range, checked before a run starts; user files
that are not valid YAML, keys that do not exist and values of the wrong type fail clearly.

``OUT_OF_RANGE`` is the table of out-of-range settings tried; each row names the fragments the
message must hold (the setting, the value, the range, the nearest valid value).
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from dhkd import cli
from dhkd import config
from dhkd.config import Config, check_run, load_config
from dhkd.errors import DhkdError

SETTINGS_DOC = Path(__file__).resolve().parents[1] / config.SETTINGS_DOC


def leaf_fields(cls: type = Config, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    hints = typing.get_type_hints(cls)
    leaves = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            leaves += leaf_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            leaves.append((f"{prefix}{f.name}", f))
    return leaves


def test_every_setting_declares_a_range_and_a_meaning() -> None:
    """A new config field without ``setting(default, Range(...), help)`` fails here."""
    missing = [name for name, f in leaf_fields() if not isinstance(f.metadata.get("range"), config.Range)]
    assert not missing, f"declare an allowed range with config.setting(...) for: {', '.join(missing)}"
    no_help = [name for name, f in leaf_fields() if not f.metadata.get("help")]
    assert not no_help, f"say what these settings mean (setting(..., help=...)): {', '.join(no_help)}"


def test_every_default_and_every_profile_is_within_its_range() -> None:
    check_run(Config())
    for profile in config.available_profiles():
        check_run(load_config(profile))


def test_every_declared_choice_is_accepted_by_the_code_and_others_are_refused() -> None:
    """The code must take each declared choice and refuse the rest."""
    import torch

    from dhkd.method.loss import distillation_loss
    from dhkd.method.masking import corrupt
    from dhkd.method.teacher import TEACHER_CHANNELS
    from dhkd.run.train import learning_rate

    choices = {s.name: s.range.choices for s in config.settings() if s.range.choices}
    assert choices["model.teacher.name"] == tuple(TEACHER_CHANNELS)
    features = [torch.rand(2, 4, 8, 8)]
    for kind in choices["train.loss"]:
        assert float(distillation_loss(features, features, kind)) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError):
        distillation_loss(features, features, "elsewise")
    images = torch.rand(2, 3, 64, 64)
    for shape in choices["masking.shape"]:
        for fill in choices["masking.fill"]:
            _, masks = corrupt(images, torch.Generator().manual_seed(0), ratio=0.2, shape=shape, fill=fill)
            assert masks.any(), (shape, fill)
    for bad in ({"shape": "blob", "fill": "noise"}, {"shape": "rect", "fill": "paint"}):
        with pytest.raises(ValueError):
            corrupt(images, torch.Generator().manual_seed(0), ratio=0.2, **bad)
    for schedule in choices["train.lr_schedule"]:
        run = load_config("smoke", [f"train.lr_schedule={schedule}"])
        assert 0 < learning_rate(run, 0, 0, 4) <= run.train.lr
    run.train.lr_schedule = "stepwise"
    with pytest.raises(ValueError):
        learning_rate(run, 0, 0, 4)


def test_each_set_of_allowed_values_is_declared_once_in_the_method() -> None:
    """The method (torch only, plain arguments) declares the values it takes; the config's ranges
    are those very tuples, and no module of the package spells one of them out again."""
    from dhkd.method import loss, masking, teacher

    choices = {s.name: s.range.choices for s in config.settings() if s.range.choices}
    declared = {"model.teacher.weights": teacher.WEIGHTS, "masking.shape": masking.SHAPES,
                "masking.fill": masking.FILLS, "train.loss": loss.LOSS_KINDS, "model.teacher.stages": teacher.STAGE_CHOICES}
    for name, values in declared.items():
        assert choices[name] is values, f"{name}: declare its choices once, in the method, and import them"
    sources = "\n".join(path.read_text() for path in Path(config.__file__).parent.rglob("*.py"))
    for name, values in declared.items():
        spelled = ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in values)
        assert sources.count(spelled) <= 1, f"{name}'s values ({spelled}) are typed more than once under dhkd/"


def test_settings_doc_table_is_generated_from_the_declarations() -> None:
    text = SETTINGS_DOC.read_text()
    start, end = text.index(config.TABLE_START) + len(config.TABLE_START), text.index(config.TABLE_END)
    assert text[start:end].strip() == config.settings_table().strip(), "run: dhkd settings table --write docs/settings.md"


def test_train_help_lists_every_setting_with_its_range(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    for s in config.settings():
        assert s.name in out
    assert "train.lr                         float, > 0; default 0.005" in out


OUT_OF_RANGE = [  # (override, fragments of the message)
    ("train.epochs=0", ["train.epochs=0", "≥ 1", "nearest valid value: train.epochs=1"]),
    ("train.batch_size=-4", ["train.batch_size=-4", "≥ 1", "train.batch_size=1"]),
    ("train.lr=0", ["train.lr=0.0", "> 0", "just above 0", "train.lr=0.005"]),
    ("train.lr=.nan", ["train.lr=nan", "finite"]),
    ("train.lr=1e400", ["train.lr=inf", "finite"]),
    ("train.lr_schedule=cosin", ["train.lr_schedule=cosin", "constant / cosine", "did you mean train.lr_schedule=cosine"]),
    ("train.loss=pixels", ["train.loss=pixels", "flatten / pixel", "train.loss=pixel"]),
    ("train.betas=[0.5, 1.0]", ["train.betas=[0.5, 1.0]", "item 2", "0 ≤ x < 1", "just below 1"]),
    ("train.betas=[0.9]", ["has 1 items", "must have 2", "train.betas=[0.5, 0.999]"]),
    ("train.seed=-1", ["train.seed=-1", "nearest valid value: train.seed=0"]),
    ("train.checkpoint_every=0", ["train.checkpoint_every=0", "train.checkpoint_every=1"]),
    ("masking.ratio=1.5", ["masking.ratio=1.5", "0 < x ≤ 1", "nearest valid value: masking.ratio=1.0"]),
    ("masking.stage2_fraction=0", ["masking.stage2_fraction=0.0", "0 < x < 1", "just above 0"]),
    ("masking.shape=square", ["masking.shape=square", "perlin / rect / mixed"]),
    ("masking.fill=nois", ["masking.fill=nois", "did you mean masking.fill=noise"]),
    ("model.teacher.name=resnet50", ["model.teacher.name=resnet50", "wide_resnet50_2 / resnet18 / efficientnet_lite0"]),
    ("model.teacher.weights=imagenet21k", ["model.teacher.weights=imagenet21k", "imagenet / none"]),
    ("model.decoder.output_projection=yes", ["output_projection=yes", "auto / on / off"]),
    ("model.decoder.blocks=[1, 0, 1]", ["item 2: 0", "nearest valid value: model.decoder.blocks=[1, 1, 1]"]),
    ("model.decoder.blocks=[1, 1]", ["has 2 items", "must have 3"]),
    ("model.decoder.width_ratio=-0.5", ["model.decoder.width_ratio=-0.5", "> 0"]),
    ("model.memory.items=0", ["model.memory.items=0", "model.memory.items=1"]),
    ("model.memory.temperature=0", ["model.memory.temperature=0.0", "> 0"]),
    ("model.memory.shrink_threshold=1", ["shrink_threshold=1.0", "< 1"]),
    ("model.bottleneck_blocks=0", ["model.bottleneck_blocks=0", "model.bottleneck_blocks=1"]),
    ("model.bottleneck_width=0", ["model.bottleneck_width=0.0", "> 0"]),
    ("data.image_size=100", ["data.image_size=100", "a multiple of 32", "nearest valid value: data.image_size=96"]),
    ("data.image_size=8", ["data.image_size=8", "64 ≤ x ≤ 1024", "nearest valid value: data.image_size=64"]),
    ("eval.blur_sigma=-1", ["eval.blur_sigma=-1.0", "≥ 0", "nearest valid value: eval.blur_sigma=0.0"]),
    ("eval.blur_sigma=40", ["eval.blur_sigma=40.0", "whole 64-pixel image", "eval.blur_sigma=16"]),
    ("eval.fpr_limit=0", ["eval.fpr_limit=0.0", "0 < x ≤ 1"]),
    ("eval.pro_thresholds=1", ["eval.pro_thresholds=1", "eval.pro_thresholds=2"]),
    ("eval.batch_size=0", ["eval.batch_size=0", "eval.batch_size=1"]),
    ("model.decoder.width_ratio=0.001", ["width 0", "efficientnet_lite0"]),  # with min_width 0 below
]


@pytest.mark.parametrize("override,fragments", OUT_OF_RANGE, ids=[row[0] for row in OUT_OF_RANGE])
def test_out_of_range_setting_names_setting_value_range_and_nearest(override: str, fragments: list[str]) -> None:
    extra = ["model.decoder.min_width=0"] if "width_ratio=0.001" in override else []
    with pytest.raises(DhkdError) as caught:
        load_config("smoke", extra + [override])
    message = str(caught.value)
    print(f"{override}: {message}")
    assert caught.value.fix, "every message has a fix line"
    for fragment in fragments:
        assert fragment in message


def test_several_bad_settings_are_listed_together() -> None:
    with pytest.raises(DhkdError, match=r"2 settings are not allowed:\n  - train.epochs=0.*\n  - train.lr=-1.0"):
        load_config("smoke", ["train.epochs=0", "train.lr=-1"])


@pytest.mark.parametrize("epochs,fraction,empty,fix", [
    (1, 0.5, "stage 2 (masking) empty", "train.epochs=2"),
    (2, 0.25, "stage 2 (masking) empty", "masking.stage2_fraction=0.5"),
    (4, 0.9, "stage 1 (clean images) empty", "masking.stage2_fraction=0.75"),
])
def test_a_stage_split_that_leaves_a_stage_empty_is_refused(epochs: int, fraction: float, empty: str, fix: str) -> None:
    chosen = load_config("smoke", [f"train.epochs={epochs}", f"masking.stage2_fraction={fraction}"])
    with pytest.raises(DhkdError) as caught:
        check_run(chosen)
    assert empty in caught.value.what and fix in caught.value.fix
    check_run(load_config("smoke", [f"train.epochs={epochs}", f"masking.stage2_fraction={fraction}",
                                    "masking.enabled=false"]))  # without masking one stage is fine


def test_bad_setting_stops_training_before_any_data_is_read(tmp_path, capsys) -> None:
    code = cli.main(["train", "--data-root", str(tmp_path / "no data here"), "--category", "nut", "--profile", "smoke",
                     "--out", str(tmp_path / "run"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR and "train.epochs=1" in err and "data root" not in err
    assert not (tmp_path / "run").exists()


def test_a_config_changed_in_code_is_checked_when_training_starts(tmp_path) -> None:
    from dhkd.run.train import train

    chosen = load_config("smoke")
    chosen.train.lr = -0.1  # as a notebook might
    with pytest.raises(DhkdError, match=r"train.lr=-0.1 is out of range"):
        train(chosen, tmp_path / "nowhere", "nut", tmp_path / "run")


# ----------------------------------------------------------------------------- YAML as people write it


def test_yaml_words_are_read_as_people_mean_them() -> None:
    chosen = load_config("smoke", ["model.decoder.output_projection=on", "train.lr=1e-3", "train.betas=[0.9, 1e-1]"])
    assert chosen.model.decoder.output_projection == "on"  # not True
    assert chosen.train.lr == 0.001 and chosen.train.betas == [0.9, 0.1]
    with pytest.raises(DhkdError, match="must be of type bool, got 'yes'"):
        load_config("smoke", ["train.amp=yes"])


def write(tmp_path: Path, text: str, name: str = "mine.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BAD_FILES = [  # (profile text, fragments of the message)
    ("inherits: smoke\ntrain:\n  epochs: 3\n   batch_size: 4\n", ["line 4, column 14", "batch_size", "^", "indented"]),
    ("inherits: smoke\ntrain:\n\tepochs: 3\n", ["line 3, column 1", "tabs"]),
    ("inherits: smoke\ntrain: {epochs: 3\n", ["not valid YAML at line 2, column 18"]),
    ("inherits: smoke\ntrain:\n  epochs: 3\n  epochs: 4\n", ["'epochs' appears twice", "first at line 3"]),
    ("inherits: smoke\nmodel:\n  decoder:\n    blockz: [1, 1, 1]\n", ["unknown key 'model.decoder.blockz'", "did you mean 'blocks'"]),
    ("inherits: smoke\nmodel:\n  memmory: {items: 3}\n", ["unknown key 'model.memmory'", "did you mean 'memory'"]),
    ("inherits: smoke\ntrain:\n  epochs: ten\n", ["'train.epochs' must be of type int, got 'ten'", "whole number"]),
    ("inherits: smoke\ntrain: 10\n", ["section 'train' must be a mapping", "epochs"]),
    ("inherits: smoke\ntrain:\n  lr: 0\n", ["train.lr=0.0 is out of range"]),
    ("- train\n- epochs\n", ["is not a YAML mapping (it holds a list)"]),
    ("inherits: [smoke, rd]\n", ["inherits must name one profile"]),
    ("inherits: smok\n", ["unknown profile 'smok'", "did you mean 'smoke'"]),
]


@pytest.mark.parametrize("text,fragments", BAD_FILES, ids=[f"file{i}" for i in range(len(BAD_FILES))])
def test_a_bad_profile_file_fails_clearly_through_the_cli(tmp_path, capsys, text: str, fragments: list[str]) -> None:
    code = cli.main(["train", "--data-root", str(tmp_path), "--category", "nut", "--profile", write(tmp_path, text),
                     "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    print(err)
    assert code == cli.EXIT_ERROR and "Traceback" not in err and "fix:" in err
    for fragment in fragments:
        assert fragment in err


def test_missing_or_unreadable_profile_files(tmp_path) -> None:
    with pytest.raises(DhkdError, match=r"profile file .*nope.yaml does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DhkdError, match="not a text file"):
        load_config(str(tmp_path / "binary.yaml"))
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(DhkdError, match="is a folder"):
        load_config(str(tmp_path / "folder.yaml"))
    with pytest.raises(DhkdError, match="inherits from itself"):
        load_config(write(tmp_path, f"inherits: {tmp_path / 'loop.yaml'}\n", "loop.yaml"))


def test_set_value_that_is_not_yaml_names_the_column() -> None:
    with pytest.raises(DhkdError) as caught:
        load_config("smoke", ["train.betas=[0.5, 0.9"])
    assert "the value of --set train.betas is not valid YAML at line 1" in caught.value.what and caught.value.fix
