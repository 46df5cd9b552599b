"""Every notebook's exercises state what to expect and have a solution cell; a headless run of
all seven notebooks with ``solutions = True`` (the papermill parameter) on the tiny toy set
shows that no solution breaks its notebook or touches the tutorial run."""

from __future__ import annotations

import argparse
import ast
import hashlib
import time
from pathlib import Path

import nbformat
import pytest

from dhkd.data.toy import generate_toy
from dhkd.kit import reproduce

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_exercises_have_expectations_solutions_and_a_questionnaire(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "## Questionnaire" in markdown and "## Try this" in markdown
    questions = markdown.split("## Questionnaire", 1)[1].split("## Try this", 1)[0]
    assert sum(line[:3] in {f"{n}. " for n in range(1, 8)} and "?*" in line for line in questions.splitlines()) >= 3, (
        "at least three questions, each *in italics?* followed by its answer")
    exercises = markdown.split("## Try this", 1)[1].split("---", 1)[0]
    numbered = [line for line in exercises.splitlines() if line[:3] in {f"{n}. " for n in range(1, 8)}]
    assert len(numbered) >= 2
    assert exercises.count("*What you should see") >= len(numbered), "every exercise says what to expect"
    parameters = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(parameters.source, namespace)
    assert namespace["solutions"] is False, "solutions run only when asked for"
    solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert solutions and all(c.cell_type == "code" for c in solutions)
    assert all(c.metadata.get("jupyter", {}).get("source_hidden") for c in solutions), "solution cells are collapsed"
    assert all("if solutions" in c.source for c in solutions), "a solution runs only with solutions = True"
    last_exercise = max(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "## Try this" in c.source)
    assert all(nb.cells.index(c) > last_exercise for c in solutions), "solutions come after the exercises"


def _fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.slow
@pytest.mark.kernel
def test_every_notebook_runs_with_its_solutions(tmp_path: Path) -> None:
    """01-07 in reading order with solutions = True (smoke profile, 64 px, 8 training images)."""
    data = tmp_path / "toy"
    generate_toy(data, image_size=64, n_train=8, n_test_good=3, n_test_per_defect=2, categories=["nut"], progress=False)
    out = tmp_path / "runs"
    parameters = {"data_root": str(data), "category": "nut", "profile": "smoke", "epochs": 2, "device": "cpu",
                  "out_dir": str(out), "solutions": True}
    seconds, tutorial = {}, None
    for path in notebooks():
        if path.name.startswith("04"):
            tutorial = _fingerprint(out / "nut")  # trained by 03: from here on only read (04 adds its metrics)
        declared = reproduce.declared_parameters(path)
        started = time.perf_counter()
        reproduce.execute(path, tmp_path / "executed" / path.name, {k: v for k, v in parameters.items() if k in declared},
                          "(solutions)", html=False)
        seconds[path.name] = time.perf_counter() - started
        executed = nbformat.read(tmp_path / "executed" / path.name, as_version=4)
        solution_cells = [c for c in executed.cells if "solution" in c.metadata.get("tags", [])]
        assert all(c.execution_count is not None for c in solution_cells), path.name
        assert any(c.outputs for c in solution_cells), f"{path.name}: its solutions showed nothing"
    after = _fingerprint(out / "nut")
    for name in ("checkpoint.pt", "start.pt", "config.yaml", "history.csv"):
        assert after[name] == tutorial[name], f"a solution changed the tutorial run's {name}"
    print("seconds per notebook with solutions:", {k: round(v) for k, v in seconds.items()})


def _cells(path: Path) -> tuple[list[str], list[str]]:
    """(tutorial cells, solution cells): the code cells' sources without IPython magics."""
    nb = nbformat.read(path, as_version=4)
    code = [(c, "\n".join(line for line in c.source.splitlines() if not line.lstrip().startswith(("%", "!"))))
            for c in nb.cells if c.cell_type == "code"]
    return ([s for c, s in code if "solution" not in c.metadata.get("tags", [])],
            [s for c, s in code if "solution" in c.metadata.get("tags", [])])


def _bound(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_each_solution_runs_without_the_other_solutions(path: Path) -> None:
    """A reader runs one solution: it may use the tutorial's names and its own, not a name only another solution makes."""
    tutorial, solutions = _cells(path)
    shared = set().union(*(_bound(ast.parse(s)) for s in tutorial))
    for i, source in enumerate(solutions):
        tree = ast.parse(source)
        others = set().union(*(_bound(ast.parse(s)) for j, s in enumerate(solutions) if j != i))
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        borrowed = sorted((used & others) - shared - _bound(tree))
        assert not borrowed, f"{path.name} solution {i + 1} uses {borrowed}, made only by another solution"


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_solutions_train_completely_and_with_the_data_sets_settings(path: Path) -> None:
    """A solution's training resumes an interrupted run (never skips training because a checkpoint
    exists), and its configuration includes a data-set file's own image size (training_config's data)."""
    for source in _cells(path)[1]:
        assert "checkpoint.pt\").exists()" not in source, f"{path.name}: a checkpoint is no proof a run finished"
        for call in (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)):
            keywords = {k.arg for k in call.keywords}
            if call.func.id == "train":
                assert "resume" in keywords, f"{path.name}: train(...) without resume= in a solution"
            if call.func.id == "training_config":
                assert len(call.args) + len(keywords & {"data"}) >= 3, f"{path.name}: training_config without the data root"


def test_reproduce_solutions_passes_solutions_and_stamps_apart(tmp_path: Path) -> None:
    """make reproduce SOLUTIONS=1 runs every notebook with solutions = True, and a run without them is not up to date for it."""
    data = tmp_path / "toy"
    generate_toy(data, image_size=64, n_train=1, n_test_good=1, n_test_per_defect=1, categories=["nut"], progress=False)
    plain = reproduce.make_plan(data, ["nut"], "smoke", None, "cpu", tmp_path / "results")
    asked = reproduce.make_plan(data, ["nut"], "smoke", None, "cpu", tmp_path / "results", solutions=True)
    for name in reproduce.ALL_NOTEBOOKS:
        assert "solutions" in reproduce.declared_parameters(NOTEBOOKS / name), name
        assert asked.notebook_parameters(name, "nut")["solutions"] is True
        assert "solutions" not in plain.notebook_parameters(name, "nut")
    assert asked.category_stamp("nut") != plain.category_stamp("nut")
    assert asked.once_stamp(reproduce.ALL_NOTEBOOKS[0]) != plain.once_stamp(reproduce.ALL_NOTEBOOKS[0])
    parser = argparse.ArgumentParser()
    reproduce.add_arguments(parser)
    assert parser.parse_args(["--data", str(data), "--solutions"]).solutions is True
