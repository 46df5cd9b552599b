"""An exported run (``dhkd export``) against torch eager: do they agree, and which is faster on a CPU.

    python -m benchmarks.deploy agree --run RUN [--data DATA] [--onnx FILE.onnx]
    python -m benchmarks.deploy speed --run RUN [--onnx FILE.onnx] [--repeats 5] [--images 32]

``agree`` scores the run's test split (the data it was trained on, or ``--data``) with both
engines: the largest map and score differences, and whether every image's flag (score above
the recorded threshold) is the same; then ``dhkd.predict`` with each engine on the same files.

``speed`` times the model alone (random uint8 images already at the model's size) at batch 1
and batch 32, each engine in a fresh process so that its peak memory (the process's maximum
resident set, imports included) is its own; the onnxruntime process imports onnxruntime and
numpy only, as an inspection PC would. Then ``dhkd.predict`` end to end (decoding, the model and
the PNG writing) on ``--images`` test images with each engine. Every figure is over
``--repeats`` runs: minimum, median, maximum. Lab notes: benchmarks/deploy.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.deploy", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    agree = commands.add_parser("agree", help="maps, scores and flags of both engines on the test split")
    agree.add_argument("--run", required=True, type=Path)
    agree.add_argument("--data", type=Path, help="data root or data-set file (default: the one the run was trained on)")
    agree.add_argument("--onnx", type=Path, help="an export of the run (default: export to a temporary file)")
    speed = commands.add_parser("speed", help="images per second and peak memory, torch eager against onnxruntime")
    speed.add_argument("--run", required=True, type=Path)
    speed.add_argument("--onnx", type=Path, help="an export of the run (default: export to a temporary file)")
    speed.add_argument("--repeats", type=int, default=5)
    speed.add_argument("--images", type=int, default=32, help="images per timed repeat")
    speed.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of both engines (default: all cores)")
    speed.add_argument("--json", type=Path, help="also write the figures here")
    child = commands.add_parser("child")  # one timed engine in its own process (speed runs it)
    child.add_argument("engine", choices=["torch", "onnxruntime"])
    child.add_argument("--run", type=Path)
    child.add_argument("--onnx", type=Path)
    child.add_argument("--batch", type=int)
    child.add_argument("--images", type=int)
    child.add_argument("--repeats", type=int)
    child.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    if args.command == "child":
        print(json.dumps(_child(args)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = args.onnx or _export(args.run, Path(tmp) / "model.onnx")
        if args.command == "agree":
            print(json.dumps(agreement(args.run, onnx_path, args.data), indent=2))
        else:
            figures = speeds(args.run, onnx_path, args.repeats, args.images, args.threads)
            print(speed_table(figures))
            if args.json:
                args.json.write_text(json.dumps(figures, indent=2))
    return 0


def _export(run: Path, path: Path) -> Path:
    from dhkd.run.export import export_run

    export_run(run, path)
    return path


def agreement(run: Path, onnx_path: Path, data: Path | None = None) -> dict:
    """Both engines on the run's test split: largest differences, flags, and dhkd.predict's tables."""
    import onnx
    import torch

    import dhkd
    from dhkd.data import load_split
    from dhkd.data.dataset_file import as_dataset, is_dataset_file, recorded_dataset
    from dhkd.method.anomaly_map import image_scores
    from dhkd.run.evaluate import batch_maps, load_model
    from dhkd.run.folder import read_run_info
    from dhkd.run.onnx_scoring import open_onnx
    from dhkd.run.predict import run_threshold

    info = read_run_info(run)
    if data is not None:
        source = as_dataset(data) if is_dataset_file(data) else data
    else:
        source = recorded_dataset(info["dataset"]) if info.get("dataset") else Path(info["data_root"])
    model, config = load_model(run, "cpu")
    split = load_split(source, info["category"], "test", config.data.fit(), progress=False)
    scorer = open_onnx(onnx_path, "cpu")
    threshold, _ = run_threshold(run)
    batch = config.eval.batch_size
    map_difference, eager_scores, onnx_scores = 0.0, [], []
    for start in range(0, len(split.images), batch):
        images = split.images[start:start + batch]
        with torch.inference_mode():
            eager = batch_maps(model, images, config, torch.device("cpu")).float()
        maps, scores = scorer.maps(images.numpy())
        map_difference = max(map_difference, float(np.abs(maps - eager.numpy()).max()))
        eager_scores += image_scores(eager).tolist()
        onnx_scores += scores.tolist()
    eager_scores, onnx_scores = np.array(eager_scores), np.array(onnx_scores)
    tables = {engine: dhkd.predict(run, list(split.paths), engine=engine, device="cpu", progress=False)
              for engine in ("torch", "onnxruntime")}
    eager_table, onnx_table = tables["torch"], tables["onnxruntime"]
    return {
        "run": str(run), "onnx": str(onnx_path), "onnx_mib": round(onnx_path.stat().st_size / 2**20, 1),
        "opset": onnx.load(str(onnx_path), load_external_data=False).opset_import[0].version,
        "teacher": config.model.teacher.name, "image_size": config.data.image_size, "test_images": len(split.images),
        "max_map_difference": map_difference,
        "max_score_difference": float(np.abs(onnx_scores - eager_scores).max()),
        "threshold": threshold,
        "flagged_torch": int((eager_scores > threshold).sum()), "flagged_onnxruntime": int((onnx_scores > threshold).sum()),
        "flags_identical": bool(((eager_scores > threshold) == (onnx_scores > threshold)).all()),
        "closest_score_to_threshold": float(np.abs(eager_scores - threshold).min()),
        "predict_max_score_difference": float(np.abs(eager_table["score"] - onnx_table["score"]).max()),
        "predict_flags_identical": bool((eager_table["flagged"] == onnx_table["flagged"]).all()),
    }


def speeds(run: Path, onnx_path: Path, repeats: int, images: int, threads: int) -> dict:
    """Model-only throughput and peak memory per engine and batch size, then dhkd.predict end to end."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    figures: dict = {"threads": threads, "repeats": repeats, "images": images, "model": [], "predict": []}
    for batch in (1, 32):
        for engine in ("torch", "onnxruntime"):
            command = [sys.executable, "-m", "benchmarks.deploy", "child", engine, "--run", str(run), "--onnx",
                       str(onnx_path), "--batch", str(batch), "--images", str(images), "--repeats", str(repeats),
                       "--threads", str(threads)]
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
            figures["model"].append({"engine": engine, "batch": batch, **json.loads(done.stdout.splitlines()[-1])})
    figures["predict"] = predict_speeds(run, onnx_path, repeats, images, threads)
    return figures


def predict_speeds(run: Path, onnx_path: Path, repeats: int, images: int, threads: int) -> list[dict]:
    """``dhkd.predict`` with each engine on the run's first test images, writing its PNGs."""
    import torch

    import dhkd
    from dhkd.run.evaluate import load_predictions

    torch.set_num_threads(threads)
    paths = load_predictions(run).paths[:images]
    rows = []
    for batch in (1, 32):
        for engine, model in (("torch", None), ("onnxruntime", onnx_path)):
            rates = []
            for _ in range(repeats):
                with tempfile.TemporaryDirectory() as out:
                    table = dhkd.predict(run if model is None else None, paths, out, batch_size=batch, device="cpu",
                                         engine=engine, model=model, progress=False)
                rates.append(table.attrs["images_per_second"])
            rows.append({"engine": engine, "batch": batch, **_spread(rates)})
    return rows


def _child(args: argparse.Namespace) -> dict:
    """Time one engine at one batch size in this process; its peak resident memory at the end."""
    import resource

    rng = np.random.default_rng(0)
    if args.engine == "onnxruntime":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        runtime = onnxruntime.InferenceSession(str(args.onnx), options, providers=["CPUExecutionProvider"])
        size = int(json.loads(runtime.get_modelmeta().custom_metadata_map["dhkd.input"])["image_size"])
        score = lambda images: runtime.run(None, {"images": images})  # noqa: E731
    else:
        import torch

        from dhkd.run.evaluate import batch_maps, load_model

        torch.set_num_threads(args.threads)
        model, config = load_model(args.run, "cpu")
        size = config.data.image_size
        score = lambda images: batch_maps(model, torch.from_numpy(images), config, torch.device("cpu"))  # noqa: E731
    images = rng.integers(0, 256, (args.images, 3, size, size), dtype=np.uint8)
    score(images[:args.batch])  # warm-up: first-call allocations and kernel choices
    rates = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        for start in range(0, args.images, args.batch):
            score(images[start:start + args.batch])
        rates.append(args.images / (time.perf_counter() - started))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {**_spread(rates), "peak_mib": round(peak_mib)}


def _spread(values: list[float]) -> dict:
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2), "max": round(max(values), 2)}


def speed_table(figures: dict) -> str:
    """The Markdown tables of :func:`speeds`' figures (images per second: min / median / max)."""
    lines = [f"model alone, {figures['images']} images per repeat, {figures['repeats']} repeats, "
             f"{figures['threads']} threads", "",
             "| engine | batch | images/s min | median | max | peak memory (MiB) |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['engine']} | {r['batch']} | {r['min']:.2f} | {r['median']:.2f} | {r['max']:.2f} | {r['peak_mib']} |"
              for r in figures["model"]]
    for batch in (1, 32):
        torch_row, onnx_row = (next(r for r in figures["model"] if r["engine"] == e and r["batch"] == batch)
                               for e in ("torch", "onnxruntime"))
        lines.append(f"\nbatch {batch}: onnxruntime / torch eager = {onnx_row['median'] / torch_row['median']:.2f}x (medians)")
    lines += ["", "dhkd.predict end to end (decoding, model, PNG writing)", "",
              "| engine | batch | images/s min | median | max |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['engine']} | {r['batch']} | {r['min']:.2f} | {r['median']:.2f} | {r['max']:.2f} |"
              for r in figures["predict"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
