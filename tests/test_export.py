"""dhkd export and the onnxruntime engine: every teacher and addition exports, the exported graph
scores as torch eager does, and a file that is not one of the kit's exports gives the kit's error.

Needs the deploy extra (onnx, onnxruntime; make setup installs it): skipped without it."""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the deploy extra is not installed (pip install -e '.[deploy]', make setup)")
onnxruntime = pytest.importorskip("onnxruntime", reason="the deploy extra is not installed (pip install -e '.[deploy]')")

import dhkd  # noqa: E402
from conftest import TOY_CATEGORY, copy_run  # noqa: E402
from dhkd import cli  # noqa: E402
from dhkd.config import load_config, save_config, to_dict  # noqa: E402
from dhkd.data import load_split  # noqa: E402
from dhkd.errors import DhkdError  # noqa: E402
from dhkd.run.build import build_model  # noqa: E402
from dhkd.run.checkpoint import save_checkpoint  # noqa: E402
from dhkd.run.evaluate import batch_maps, load_model  # noqa: E402
from dhkd.run.export import FORMAT, MAP_TOLERANCE, METADATA_KEYS, OPSET, export_run  # noqa: E402
from dhkd.run.onnx_scoring import open_onnx, run_onnx  # noqa: E402


ADDITIONS = ("fusion", "attention", "memory")


def untrained_run(folder: Path, overrides: list[str]) -> Path:
    """A run folder of the smoke profile with the student as built (no training): what export reads."""
    config = load_config("smoke", overrides)
    folder.mkdir(parents=True)
    save_config(config, folder / "config.yaml")
    model = build_model(config.model, config.train.seed)
    save_checkpoint(folder / "checkpoint.pt", {"student": model.student.state_dict(), "config": to_dict(config),
                                               "epoch": 0})
    return folder


def switches(on: tuple[str, ...]) -> list[str]:
    return [f"model.{name}.enabled={str(name in on).lower()}" for name in ADDITIONS] + ["model.attention.placement=both"]


def assert_exports(run: Path, out: Path) -> None:
    done = export_run(run, out)
    assert done["check"]["checked"] and done["check"]["max_map_difference"] <= MAP_TOLERANCE
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    metadata = {p.key: p.value for p in model.metadata_props}
    assert set(METADATA_KEYS) <= set(metadata) and metadata["dhkd.format"] == FORMAT
    assert model.opset_import[0].version == OPSET
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch" and not batch.HasField("dim_value")  # the batch size is free
    assert done["threshold"] is None  # not evaluated: said, not made up


@pytest.mark.parametrize("teacher", ["resnet18", "efficientnet_lite0"])
@pytest.mark.parametrize("on", [c for k in range(4) for c in itertools.combinations(ADDITIONS, k)],
                         ids=lambda on: "+".join(on) or "rd")
@pytest.mark.slow
def test_every_teacher_and_addition_combination_exports(teacher: str, on: tuple[str, ...], tmp_path: Path) -> None:
    run = untrained_run(tmp_path / "run", [f"model.teacher.name={teacher}", *switches(on)])
    assert_exports(run, tmp_path / "model.onnx")


@pytest.mark.slow
def test_the_wide_resnet_teacher_exports_with_every_addition(tmp_path: Path) -> None:
    run = untrained_run(tmp_path / "run", ["model.teacher.name=wide_resnet50_2", *switches(ADDITIONS)])
    assert_exports(run, tmp_path / "model.onnx")


@pytest.fixture(scope="module")
def toy_run(toy_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's trained and evaluated smoke run (conftest.py): these tests export
    into the run folder and touch its checkpoint."""
    return copy_run(toy_run, tmp_path_factory.mktemp("runs"), "toy")


def test_exported_toy_run_scores_the_test_split_as_torch_eager(toy_run: Path, toy_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "toy.onnx"
    assert cli.main(["export", "--run", str(toy_run), "--out", str(path)]) == 0
    scorer = open_onnx(path, "cpu")
    recorded = json.loads((toy_run / "metrics.json").read_text())["threshold"]
    assert scorer.threshold == {"value": recorded["value"], "how": recorded["how"]}
    model, config = load_model(toy_run, "cpu")
    split = load_split(toy_root, TOY_CATEGORY, "test", config.data.image_size, progress=False)
    with torch.inference_mode():
        eager = batch_maps(model, split.images, config, torch.device("cpu")).numpy()
    for batch in (1, 5, len(split.images)):  # any batch size, and a last batch of another size
        maps = np.concatenate([scorer.maps(split.images[s:s + batch].numpy())[0]
                               for s in range(0, len(split.images), batch)])
        assert np.abs(maps - eager).max() <= MAP_TOLERANCE


def test_predict_with_onnxruntime_writes_what_torch_predict_writes(toy_run: Path, toy_root: Path, tmp_path: Path) -> None:
    images = [str(toy_root / TOY_CATEGORY / "test")]
    assert cli.main(["predict", "--run", str(toy_run), *images, "--out", str(tmp_path / "torch"), "--quiet"]) == 0
    assert cli.main(["predict", "--run", str(toy_run), "--engine", "onnxruntime", *images,
                     "--out", str(tmp_path / "ort"), "--quiet"]) == 0
    assert (toy_run / "model.onnx").exists()  # exported on first use, reused afterwards
    assert cli.main(["predict", "--model", str(toy_run / "model.onnx"), *images, "--out", str(tmp_path / "file"),
                     "--quiet"]) == 0
    import pandas as pd

    eager = pd.read_csv(tmp_path / "torch" / "scores.csv")
    for engine in ("ort", "file"):
        other = pd.read_csv(tmp_path / engine / "scores.csv")
        assert list(other["path"]) == list(eager["path"])
        assert np.abs(other["score"] - eager["score"]).max() <= MAP_TOLERANCE
        assert list(other["flagged"]) == list(eager["flagged"])
        for folder in ("maps", "overlays", "masks"):
            assert sorted(os.listdir(tmp_path / engine / folder)) == sorted(os.listdir(tmp_path / "torch" / folder))
    table = dhkd.predict(toy_run, images, engine="onnxruntime", progress=False)
    assert table.attrs["engine"] == "onnxruntime" and list(table["flagged"]) == list(eager["flagged"])


def test_the_run_export_is_made_again_on_a_fingerprint_change_not_a_file_time(toy_run: Path, tmp_path: Path) -> None:
    path = run_onnx(toy_run, progress=False)
    before = path.stat().st_mtime_ns
    later = path.stat().st_mtime + 10
    os.utime(toy_run / "checkpoint.pt", (later, later))  # a newer time, the same weights: reused
    assert run_onnx(toy_run, progress=False).stat().st_mtime_ns == before
    checkpoint = toy_run / "checkpoint.pt"
    kept = tmp_path / "checkpoint.pt"
    kept.write_bytes(checkpoint.read_bytes())
    state = torch.load(checkpoint, weights_only=True)
    name = next(k for k, v in state["student"].items() if v.is_floating_point())
    state["student"][name] = state["student"][name] + 0.5  # other weights ...
    save_checkpoint(checkpoint, {k: v for k, v in state.items() if k != "format"})
    earlier = path.stat().st_mtime - 100
    os.utime(checkpoint, (earlier, earlier))  # ... restored with an older time (cp -p)
    try:
        assert run_onnx(toy_run, progress=False).stat().st_mtime_ns != before
        scorer = open_onnx(path)
        model, config = load_model(toy_run, "cpu")
        images = np.stack([np.asarray(np.random.default_rng(1).integers(0, 256, (3, *config.data.shape)), np.uint8)])
        with torch.inference_mode():
            eager = batch_maps(model, torch.from_numpy(images), config, torch.device("cpu")).numpy()
        assert np.abs(scorer.maps(images)[0] - eager).max() <= MAP_TOLERANCE  # scores the restored weights
    finally:
        checkpoint.write_bytes(kept.read_bytes())
        run_onnx(toy_run, progress=False)


def with_metadata(source: Path, out: Path, **changes: str | None) -> Path:
    """A copy of an export with metadata keys (``dhkd_input`` for ``dhkd.input``) changed, or removed (None)."""
    model = onnx.load(str(source))
    metadata = {p.key: p.value for p in model.metadata_props}
    for key, value in changes.items():
        key = key.replace("_", ".", 1)
        if value is None:
            metadata.pop(key)
        else:
            metadata[key] = value
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(out))
    return out


def constant_graph(source: Path, out: Path, side: int) -> Path:
    """A foreign graph with the export's input and output names and its metadata copied: it always
    gives a ``side`` x ``side`` map of zeros and a score of 0."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["score"]),
             helper.make_node("Unsqueeze", ["score", "axes"], ["s3"]),
             helper.make_node("Expand", ["s3", "shape"], ["anomaly_map"])]
    batch = ["batch"]
    graph = helper.make_graph(
        nodes, "foreign", [helper.make_tensor_value_info("images", TensorProto.UINT8, [*batch, 3, None, None])],
        [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [*batch, side, side]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, batch)],
        initializer=[helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
                     helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
                     helper.make_tensor("shape", TensorProto.INT64, [3], [1, side, side])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for p in onnx.load(str(source)).metadata_props:
        model.metadata_props.add(key=p.key, value=p.value)
    onnx.save(model, str(out))
    return out


def test_a_foreign_graph_with_copied_metadata_is_refused(toy_run: Path, toy_root: Path, tmp_path: Path, capsys) -> None:
    good = run_onnx(toy_run, progress=False)
    side = open_onnx(good).fit.height
    image = next((toy_root / TOY_CATEGORY / "test" / "good").iterdir())
    for graph_side, message in ((2, "declares anomaly_map of shape"), (side, "does not score as the model")):
        foreign = constant_graph(good, tmp_path / f"zeros-{graph_side}.onnx", graph_side)
        assert cli.main(["predict", "--model", str(foreign), str(image), "--out", str(tmp_path / "out")]) == cli.EXIT_ERROR
        error = capsys.readouterr().err
        assert error.startswith("dhkd: ") and message in error and "fix: export the run again" in error
        assert not (tmp_path / "out").exists()


def test_an_export_of_another_run_is_refused_with_that_run(toy_run: Path, toy_root: Path, tmp_path: Path) -> None:
    other = untrained_run(tmp_path / "other", [])
    export_run(other, tmp_path / "other.onnx")
    image = next((toy_root / TOY_CATEGORY / "test" / "good").iterdir())
    with pytest.raises(DhkdError, match=r"was not exported from the run .*its weights"):
        dhkd.predict(toy_run, [image], model=tmp_path / "other.onnx", progress=False)
    table = dhkd.predict(toy_run, [image], model=run_onnx(toy_run, progress=False), progress=False)
    assert len(table) == 1


def resized(described: dict, side: int, shape: bool) -> dict[str, str]:
    """Metadata changes that claim an input of ``side`` px: image_size only, or consistently (shapes too)."""
    changes = {"dhkd_input": json.dumps({**described, "image_size": side,
                                         **({"shape": ["batch", 3, side, side]} if shape else {})})}
    if shape:
        changes["dhkd_outputs"] = json.dumps({"anomaly_map": {"shape": ["batch", side, side]}, "score": {"shape": ["batch"]}})
    return changes


BAD_METADATA = {  # what a copy of a good export gets in its metadata (from its dhkd.input), and the message
    "no input": (lambda d: {"dhkd_input": None}, "incomplete dhkd metadata"),
    "no fingerprint": (lambda d: {"dhkd_fingerprint": None}, "incomplete dhkd metadata"),
    "input {}": (lambda d: {"dhkd_input": "{}"}, "dhkd.input has no valid image_size"),
    "input not JSON": (lambda d: {"dhkd_input": "not json"}, "dhkd.input is not JSON"),
    "image_size 0": (lambda d: resized(d, 0, shape=False), "dhkd.input has no valid image_size"),
    "image_size doubled": (lambda d: resized(d, 2 * d["image_size"], shape=False), "dhkd.input says image_size"),
    "all sizes doubled": (lambda d: resized(d, 2 * d["image_size"], shape=True), "declares images of shape"),
    "2 x 2 outputs": (lambda d: {"dhkd_outputs": json.dumps({"anomaly_map": {"shape": ["batch", 2, 2]},
                                                             "score": {"shape": ["batch"]}})}, "dhkd.outputs does not"),
    "batch_size eight": (lambda d: {"dhkd_batch_size": "eight"}, "dhkd.batch_size is not a positive whole number"),
    "threshold without value": (lambda d: {"dhkd_threshold": '{"how": "made up"}'}, "dhkd.threshold has no finite"),
    "short fingerprint": (lambda d: {"dhkd_fingerprint": '{"weights": "abc"}'}, "dhkd.fingerprint lacks"),
}


@pytest.mark.parametrize("case", BAD_METADATA)
def test_bad_onnx_metadata_gives_the_kits_error(case: str, toy_run: Path, toy_root: Path, tmp_path: Path, capsys) -> None:
    good = run_onnx(toy_run, progress=False)
    described = json.loads({p.key: p.value for p in onnx.load(str(good)).metadata_props}["dhkd.input"])
    changes, message = BAD_METADATA[case]
    bad = with_metadata(good, tmp_path / "bad.onnx", **changes(described))
    image = next((toy_root / TOY_CATEGORY / "test" / "good").iterdir())
    assert cli.main(["predict", "--model", str(bad), str(image), "--out", str(tmp_path / "out"), "--quiet"]) == cli.EXIT_ERROR
    error = capsys.readouterr().err
    assert error.startswith("dhkd: ") and message in error and "Traceback" not in error and "fix: " in error
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_folder_or_a_file_it_did_not_write(toy_run: Path, tmp_path: Path, capsys) -> None:
    assert cli.main(["export", "--run", str(toy_run), "--out", str(tmp_path)]) == cli.EXIT_ERROR
    assert "is a folder; dhkd export writes one file" in capsys.readouterr().err
    notes = tmp_path / "notes.onnx"
    notes.write_text("my notes")
    assert cli.main(["export", "--run", str(toy_run), "--out", str(notes)]) == cli.EXIT_ERROR
    assert "is not an ONNX file dhkd export wrote" in capsys.readouterr().err and notes.read_text() == "my notes"
    assert cli.main(["export", "--run", str(toy_run), "--out", str(tmp_path / "m.onnx")]) == 0
    assert cli.main(["export", "--run", str(toy_run), "--out", str(tmp_path / "m.onnx")]) == 0  # its own: replaced


def test_corrupt_truncated_and_foreign_onnx_files_give_the_kits_error(toy_run: Path, toy_root: Path, tmp_path: Path,
                                                                     capsys) -> None:
    good = run_onnx(toy_run, progress=False).read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good[: len(good) // 3])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model\n" * 100)
    for path in (truncated, garbage):
        with pytest.raises(DhkdError, match="is not an ONNX file onnxruntime can load"):
            open_onnx(path)
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["images"], ["y"])], "foreign",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), str(foreign))
    with pytest.raises(DhkdError, match="not one dhkd export wrote for this kit"):
        open_onnx(foreign)
    with pytest.raises(DhkdError, match="no ONNX file at"):
        open_onnx(tmp_path / "missing.onnx")
    image = next((toy_root / TOY_CATEGORY / "test" / "good").iterdir())
    assert cli.main(["predict", "--model", str(foreign), str(image), "--out", str(tmp_path / "out")]) == cli.EXIT_ERROR
    error = capsys.readouterr().err
    assert error.startswith("dhkd: ") and "fix: export the run with this kit" in error and "Traceback" not in error


def test_an_unevaluated_export_asks_for_a_threshold(tmp_path: Path, toy_root: Path) -> None:
    run = untrained_run(tmp_path / "run", [])
    path = tmp_path / "model.onnx"
    export_run(run, path)
    images = [toy_root / TOY_CATEGORY / "test" / "good"]
    with pytest.raises(DhkdError, match="records no threshold"):
        dhkd.predict(None, images, model=path, progress=False)
    table = dhkd.predict(None, images, model=path, threshold=0.5, progress=False)
    assert table.attrs["threshold_how"] == "given" and len(table) > 0


def test_missing_deploy_packages_say_how_to_install_them(toy_run: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(DhkdError, match=r"needs the onnxruntime package.*\n  fix: pip install 'dhkd\[deploy\]'"):
        open_onnx(run_onnx(toy_run, progress=False))
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(DhkdError, match="dhkd export needs the onnx package"):
        export_run(toy_run, tmp_path / "x.onnx")


def test_predict_needs_a_run_or_a_model(tmp_path: Path, capsys) -> None:
    assert cli.main(["predict", str(tmp_path), "--out", str(tmp_path / "out")]) == cli.EXIT_ERROR
    assert "needs --run RUN or --model FILE.onnx" in capsys.readouterr().err
    assert cli.main(["predict", "--model", "m.onnx", "--engine", "torch", str(tmp_path), "--out", "o"]) == cli.EXIT_ERROR
    assert "scored with onnxruntime, not --engine torch" in capsys.readouterr().err
