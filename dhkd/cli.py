"""The ``dhkd`` command, one argparse tree: data, train, evaluate, curve, predict, export, runs, reproduce,
book, tables, settings, bench.

``make reproduce`` and ``make ablation`` run ``dhkd reproduce``, ``make book`` ``dhkd book``; each
verb's options are declared beside the code that runs it where that code is a layer of its own
(:mod:`dhkd.kit.reproduce`, :mod:`dhkd.kit.book`, :mod:`dhkd.kit.tables`, the benchmarks'
``benchmarks/bench.py``).

Every user-fixable problem is a :class:`DhkdError`: printed as one clear message with a
non-zero exit and no traceback (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from dhkd.errors import DhkdError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dhkd", description="DHKD anomaly detection: data, training, evaluation.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="make or fetch a data set").add_subparsers(dest="source", required=True)
    toy = data.add_parser("toy", help="write the embedded toy data set (MVTec AD layout)")
    toy.add_argument("--out", required=True, type=Path)
    toy.add_argument("--seed", type=int, default=0)
    mvtec = data.add_parser("mvtec", help="download and unpack MVTec AD")
    mvtec.add_argument("--out", required=True, type=Path)
    mvtec.add_argument("--category", action="append", dest="categories", help="only these categories (repeatable)")
    folder = data.add_parser("folder", help="describe images in any folder layout: check them, write a data-set file")
    folder.add_argument("--root", required=True, type=Path, help="the folder that holds the images")
    folder.add_argument("--normal", required=True, action="append", help="glob of defect-free images under root (repeatable)")
    folder.add_argument("--abnormal", action="append", default=[], help="glob of defective images (repeatable)")
    folder.add_argument("--masks", help='mask per image, e.g. "{dir}/{stem}.png" or "masks/{stem}_mask.png"')
    folder.add_argument("--kind", default="{top}", help="defect kind per image (default {top}: the first folder)")
    folder.add_argument("--name", help="the data set's name (default: the root folder's name)")
    folder.add_argument("--test-share", type=float, default=0.2, help="share of the normal images kept for testing")
    folder.add_argument("--split-seed", type=int, default=0)
    folder.add_argument("--out", required=True, type=Path, help="the data-set file to write (.yaml)")
    folder.add_argument("--image-size", metavar="auto|N|H,W",
                        help="write the input shape into the file: auto (the one suggested from the images' median "
                             "aspect, with keep_aspect when their proportions differ), or a size; default: only suggest it")

    from dhkd.config import settings_help

    train = commands.add_parser("train", help="train one category or one data set", epilog=settings_help(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="a data-set file (see dhkd data folder)")
    source.add_argument("--data-root", type=Path, help="a data root in MVTec AD's layout (with --category)")
    train.add_argument("--category", help="a folder under --data-root (with --data: the data set's name, optional)")
    train.add_argument("--profile", default="paper", help="paper | rd | offline | smoke | path/to/profile.yaml")
    train.add_argument("--out", required=True, type=Path, help="run folder")
    train.add_argument("--epochs", type=int)
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                       help="change one setting (repeatable); the settings and their allowed values are listed below")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    evaluate = commands.add_parser("evaluate", help="evaluate a trained run on its test split")
    evaluate.add_argument("--run", required=True, type=Path)
    evaluate.add_argument("--data-root", "--data", type=Path, dest="data_root",
                          help="a data root or data-set file; defaults to the one the run was trained on")
    evaluate.add_argument("--json", required=True, type=Path, dest="json_path")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--quiet", action="store_true")

    curve = commands.add_parser("curve", help="score every checkpoint train.keep_every kept (a learning curve, "
                                "on the test split: a diagnostic, never a way to pick an epoch)")
    curve.add_argument("--run", required=True, type=Path)
    curve.add_argument("--data-root", "--data", type=Path, dest="data_root",
                       help="a data root or data-set file; defaults to the one the run was trained on")
    curve.add_argument("--scales", action="append", default=[], metavar="S,S",
                       help="the distilled scales the map sums, 1 = finest (repeatable: one row per set; default: eval.scales)")
    curve.add_argument("--last", action="store_true", help="the final checkpoint only (the run's per-scale table)")
    curve.add_argument("--device", default="auto")
    curve.add_argument("--quiet", action="store_true")

    predict = commands.add_parser("predict", help="score images with a trained run: scores.csv, maps, overlays, masks")
    predict.add_argument("--run", type=Path, help="a trained run folder (or give --model)")
    predict.add_argument("--model", type=Path, metavar="FILE.onnx",
                         help="an exported run (dhkd export): scored with onnxruntime, no run folder needed")
    predict.add_argument("--engine", choices=["torch", "onnxruntime"],
                         help="torch (default): eager, from the run's checkpoint; onnxruntime: the run's export (RUN/model.onnx, "
                              "made on first use) or --model")
    predict.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders of images")
    predict.add_argument("--out", required=True, type=Path)
    predict.add_argument("--threshold", type=float, help="flag images scoring above it (default: the run's, from its evaluation)")
    predict.add_argument("--device", default="auto")
    predict.add_argument("--batch-size", type=int, help="images per forward pass (default: the run's eval.batch_size)")
    predict.add_argument("--max-pixels", type=int, metavar="N",
                         help="refuse images over N pixels (default 100 megapixels: about 1.1 GB to handle one at full size)")
    predict.add_argument("--outputs", default="maps,overlays,masks", metavar="LIST",
                         help="the PNG folders to write, comma-separated (default maps,overlays,masks; none: scores.csv only)")
    predict.add_argument("--quiet", action="store_true")

    export = commands.add_parser("export", help="a trained run as one ONNX file: image in, anomaly map and score out")
    export.add_argument("--run", required=True, type=Path)
    export.add_argument("--out", required=True, type=Path, metavar="FILE.onnx")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")

    runs = commands.add_parser("runs", help="a run folder's housekeeping").add_subparsers(dest="action", required=True)
    clean = runs.add_parser("clean", help="list the earlier runs kept in RUN/.replaced-*/ and their size; --yes removes them")
    clean.add_argument("run", type=Path, metavar="RUN")
    clean.add_argument("--yes", action="store_true", help="remove them (without it: only listed)")

    from dhkd.kit import book, reproduce, tables

    reproduce.add_arguments(commands.add_parser(
        "reproduce", help="run the notebooks headless per category, then the results tables (make reproduce, make ablation)"))
    book.add_arguments(commands.add_parser(
        "book", help="the executed notebooks of a results folder as a static web site (make book)"))
    tables.add_arguments(commands.add_parser("tables", help="the results tables: rebuild, verify, or parse the paper's"))
    settings = commands.add_parser("settings", help="every setting with its default and allowed values")
    settings.add_argument("what", choices=["table", "help"], help="table: Markdown (docs/settings.md's); help: plain text")
    settings.add_argument("--write", type=Path, metavar="FILE", help="write the table into FILE between its markers")

    commands.add_parser("bench", add_help=False, help="time training, inference and metrics (from a checkout: benchmarks/; "
                        "dhkd bench --help lists its options, which benchmarks/bench.py declares)")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.command == "data":
        return _data(args)
    if args.command == "train":
        return _train(args)
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "curve":
        return _curve(args)
    if args.command == "predict":
        return _predict(args)
    if args.command == "export":
        return _export(args)
    if args.command == "runs":
        return _runs_clean(args)
    if args.command == "reproduce":
        from dhkd.kit.reproduce import run_command

        return run_command(args)
    if args.command == "book":
        from dhkd.kit.book import run_command

        return run_command(args)
    if args.command == "tables":
        from dhkd.kit.tables import run_command

        return run_command(args)
    if args.command == "settings":
        return _settings(args)
    if args.command == "bench":
        return _bench(args)
    raise AssertionError(args.command)


def _curve(args: argparse.Namespace) -> int:
    from dhkd.run.curve import curve_text, score_curve
    from dhkd.run.folder import CURVE_NAME

    scale_sets = []
    for text in args.scales:
        try:
            scale_sets.append(tuple(int(part) for part in text.split(",")))
        except ValueError:
            raise DhkdError(f"--scales {text}: not a comma-separated list of scales", "e.g. --scales 1,2,3 or --scales 2,3") from None
    rows = score_curve(args.run, args.data_root, args.device, scale_sets or None, progress=not args.quiet,
                       last_only=args.last)
    print(curve_text(rows))
    print(f"wrote {args.run / CURVE_NAME} (scored on the test split: a diagnostic of the budget, not a way to choose an epoch)")
    return 0


def _data(args: argparse.Namespace) -> int:
    if args.source == "folder":
        return _data_folder(args)
    if args.source == "toy":
        from dhkd.data.toy import generate_toy

        folders = generate_toy(args.out, seed=args.seed)
        print(f"toy data set with {len(folders)} categories in {args.out}: {', '.join(f.name for f in folders)}")
    else:
        from dhkd.data.download import download_mvtec

        root = download_mvtec(args.out, args.categories)
        print(f"MVTec AD is in {root}")
    return 0


def _data_folder(args: argparse.Namespace) -> int:
    from dhkd.data.dataset_file import describe_folder

    dataset, summary = describe_folder(args.root, args.normal, args.abnormal, args.masks, args.kind, args.name,
                                       args.test_share, args.split_seed, args.out, image_size=args.image_size)
    print(summary)
    print(f"wrote {args.out}; train with: dhkd train --data {args.out} --profile offline --out runs/{dataset.name}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from dhkd.config import dataset_settings, load_config
    from dhkd.data.dataset_file import as_dataset
    from dhkd.run.train import train

    if args.data is not None:
        data_root, category = args.data, as_dataset(args.data, args.category).name
    elif args.category is None:
        raise DhkdError("--data-root needs --category", "name a folder under the data root, e.g. --category bottle")
    else:
        data_root, category = args.data_root, args.category
    overrides = dataset_settings(args.data) + list(args.overrides)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    config = load_config(args.profile, overrides)
    run_dir = train(config, data_root, category, args.out, device=args.device, resume=args.resume,
                    progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one line, not one per process
        print(f"trained {category} ({config.profile}, {config.train.epochs} epochs): {run_dir}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from dhkd.run.predict import predict

    if args.run is None and args.model is None:
        raise DhkdError("dhkd predict needs --run RUN or --model FILE.onnx", "give the run folder, or an exported file")
    if args.model is not None and args.engine == "torch":
        raise DhkdError("--model FILE.onnx is scored with onnxruntime, not --engine torch",
                        "drop --engine torch, or give --run RUN instead of --model")
    outputs = [name for name in args.outputs.split(",") if name and name != "none"]
    table = predict(args.run, args.inputs, args.out, threshold=args.threshold, device=args.device,
                    batch_size=args.batch_size, progress=not args.quiet, engine=args.engine or "torch", model=args.model,
                    outputs=outputs, **({"max_pixels": args.max_pixels} if args.max_pixels else {}))
    flagged = int(table["flagged"].sum())
    print(f"{len(table)} images scored ({table.attrs['engine']}), {flagged} flagged (threshold "
          f"{table.attrs['threshold']:.4f}: {table.attrs['threshold_how']}); {table.attrs['images_per_second']:.1f} "
          f"images/s; scores{''.join(', ' + name for name in outputs)} in {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from dhkd.run.export import export_run

    done = export_run(args.run, args.out, opset=args.opset)
    check = done["check"]
    agreed = (f"maps within {check['max_map_difference']:.2g} of torch eager on {check['images']} check images"
              if check["checked"] else f"not checked against torch eager ({check['why']})")
    threshold = (f"threshold {done['threshold']['value']:.4f} recorded" if done["threshold"] is not None
                 else "no threshold recorded (the run is not evaluated: dhkd predict --model needs --threshold)")
    print(f"wrote {done['path']} ({done['bytes'] / 2**20:.1f} MiB, opset {done['opset']}, {done['teacher']} teacher, "
          f"uint8 RGB input (batch, 3, {done['height']}, {done['width']})); {agreed}; {threshold}")
    return 0


def _runs_clean(args: argparse.Namespace) -> int:
    from dhkd.run.folder import clean_replaced

    if not args.run.is_dir():
        raise DhkdError(f"{args.run} is not a folder", "give a run folder (the --out of dhkd train)")
    report = clean_replaced(args.run, remove=args.yes)
    for folder, size, what in report:
        print(f"{folder}  {size / 1e6:.1f} MB  {what}")
    total = sum(size for _, size, what in report if what in ("kept", "removed"))
    verb = "removed" if args.yes else "kept; dhkd runs clean RUN --yes removes them"
    print(f"{len(report)} replaced runs in {args.run}, {total / 1e6:.1f} MB {verb}" if report
          else f"no replaced runs in {args.run}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dhkd.run.evaluate import evaluate_run

    result = evaluate_run(args.run, args.data_root, args.device, args.json_path, progress=not args.quiet)
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()
             if k not in ("per_defect", "diagnostics")}  # both are in the JSON file
    if "diagnostics" in result:
        shown["inert_additions"] = result["diagnostics"]["inert"]
    print(json.dumps(shown, indent=2))
    return 0


def _settings(args: argparse.Namespace) -> int:
    from dhkd.config import TABLE_END, TABLE_START, settings_help, settings_table
    from dhkd.io import replace_between_markers

    if args.what == "help":
        print(settings_help())
    elif args.write is None:
        print(settings_table())
    else:
        replace_between_markers(args.write, settings_table(), (TABLE_START, TABLE_END))
        print(f"wrote the settings table of {args.write}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    """Hand over to ``benchmarks/bench.py`` of the kit's checkout: the benchmarks are tooling,
    not part of the installed package, so ``dhkd bench`` works where the checkout is."""
    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / "benchmarks" / "bench.py").exists():
        raise DhkdError("dhkd bench runs the kit's benchmarks/ folder, which is not part of the installed package",
                        "clone the kit and install it from there with pip install -e . (make setup does)")
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    from benchmarks.bench import main as bench_main

    return bench_main(args.bench_args)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments; those after ``dhkd bench`` are left for the benchmarks' own parser."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.bench_args = rest
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return run(args)
    except DhkdError as error:
        from dhkd.run.train import TrainingInterrupted

        if args.debug:
            raise
        print(f"dhkd: {error}", file=sys.stderr)
        return EXIT_INTERRUPTED if isinstance(error, TrainingInterrupted) else EXIT_ERROR
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("dhkd: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
