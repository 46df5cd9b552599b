"""Fuzzing: random settings and random damage to a small data set, instead of a fixed list.

Every drawn input must either work (the config loads with exactly the values written; the data
set loads with exactly the pictures and masks its files hold; a small run trains and
evaluates) or end in the kit's own :class:`DhkdError` with a fix line; never a traceback, and
never a damaged file read as something else.

The number of examples is bounded by a hypothesis profile: ``fuzz-ci`` (the default, about a
minute on 2 cores) or ``fuzz-thorough`` (ten times as many): ``DHKD_FUZZ_PROFILE=fuzz-thorough``.
Each test reports what it drew (``pytest -s --hypothesis-show-statistics``).
"""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from PIL import Image

from dhkd import cli
from dhkd import config, ranges
from dhkd.config import check_run, load_config
from dhkd.data import load_split, validate_category
from dhkd.errors import DhkdError
from dhkd.data.toy import generate_toy

settings.register_profile("fuzz-ci", deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                 HealthCheck.data_too_large, HealthCheck.filter_too_much])
settings.register_profile("fuzz-thorough", parent=settings.get_profile("fuzz-ci"))
PROFILE = os.environ.get("DHKD_FUZZ_PROFILE", "fuzz-ci")
SCALE = 10 if PROFILE == "fuzz-thorough" else 1


def fuzz(examples: int) -> settings:
    return settings(settings.get_profile(PROFILE), max_examples=examples * SCALE)


CATEGORY = "nut"
SETTINGS = config.settings()
LEAVES = [s.name for s in SETTINGS]


# ----------------------------------------------------------------------------- drawn --set overrides


def yaml_number(x: float) -> str:
    if math.isnan(x):
        return ".nan"
    if math.isinf(x):
        return ".inf" if x > 0 else "-.inf"
    return repr(x)


def misspelt(name: str) -> st.SearchStrategy[str]:
    return st.integers(0, len(name) - 1).map(lambda i: name[:i] + name[i + 1:])


KEYS = st.one_of(
    st.sampled_from(LEAVES),  # every setting
    st.sampled_from(["model", "train", "model.decoder", "masking"]),  # a section, not a value
    st.sampled_from(LEAVES).flatmap(misspelt),  # a typo
    st.sampled_from(LEAVES).map(lambda name: f"{name}.deeper"),  # a value used as a section
    st.text(max_size=8),  # anything at all
)

SCALARS = st.one_of(
    st.integers(-5, 300).map(str),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(yaml_number),
    st.floats(-2, 2).map(lambda x: f"{x:e}"),  # 1.5e-03: PyYAML alone reads this as text
    st.sampled_from(["true", "false", "yes", "no", "on", "off", "True", "~", "null", ""]),
    st.text(max_size=10),  # quotes, colons, brackets, unicode...
    st.sampled_from(["[", "{a: 1", "a: b: c", "!!python/object/apply:os.system ['true']", "&a [*a]", "'", "- 1\n- 2"]),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(st.one_of(st.integers(-3, 9), st.floats(-1, 2, allow_nan=False)), max_size=4)
    .map(lambda items: "[" + ", ".join(map(str, items)) + "]"),
    st.dictionaries(st.sampled_from(["a", "epochs", "enabled"]), st.integers(0, 5), max_size=2).map(
        lambda d: "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"),
)


def valid_value(s: config.Setting) -> st.SearchStrategy[str]:
    """A value inside the setting's range, kept small enough to train in seconds."""
    r = s.range
    if r.choices:
        return st.sampled_from([ranges.shown(c) for c in r.choices])
    if s.name == "data.image_size":
        return st.just("64")
    if s.name == "model.decoder.blocks":
        return st.lists(st.integers(1, 2), min_size=3, max_size=3).map(str)
    if s.name == "train.betas":
        return st.lists(st.floats(0, 0.999), min_size=2, max_size=2).map(str)
    if s.kind is int:
        low = int(r.low) if r.low is not None else 0
        return st.integers(low, low + 3).map(str)
    low = r.low if r.low is not None else -1.0
    high = r.high if r.high is not None else max(low, 0) + 2
    return st.floats(low, high, exclude_min=r.low_open, exclude_max=r.high_open).map(yaml_number)


OVERRIDE = st.one_of(
    st.tuples(KEYS, VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=12),  # maybe without '='
)

VALID_OVERRIDE = st.sampled_from(SETTINGS).flatmap(lambda s: valid_value(s).map(lambda v: f"{s.name}={v}"))


KINDS_OF_REFUSAL = ("not of the form", "is not a setting", "is a section", "is a value", "must be of type",
                    "must be a list", "is out of range", "settings are not allowed", "not valid YAML", "items; it must",
                    "leaves stage", "width 0", "blurs over")


def kind_of(error: DhkdError) -> str:
    """The kind of refusal, for the fuzz's statistics."""
    return next((kind for kind in KINDS_OF_REFUSAL if kind in error.what), error.what[:30])


def outcome(overrides: list[str]) -> tuple[config.Config | None, DhkdError | None]:
    try:
        return check_run(load_config("smoke", overrides)), None
    except DhkdError as error:
        return None, error


def written(override: str) -> tuple[str, str] | None:
    key, _, raw = override.partition("=")
    return (key.strip(), raw) if key.strip() in LEAVES else None


@fuzz(300)
@given(overrides=st.lists(st.one_of(OVERRIDE, VALID_OVERRIDE), min_size=1, max_size=3))
def test_random_overrides_load_exactly_or_fail_with_a_fix(overrides: list[str]) -> None:
    chosen, error = outcome(overrides)
    if error is not None:
        assert error.fix, f"no fix line for: {error}"
        event(f"refused: {kind_of(error)}")
        return
    event("accepted")
    last = {}
    for override in overrides:
        pair = written(override)
        if pair:
            last[pair[0]] = pair[1]
    for key, raw in last.items():  # the value that runs is the value written, as its declared type
        s = next(s for s in SETTINGS if s.name == key)
        value = ranges.get(chosen, key)
        assert s.range.problem(value) is None
        stripped = raw.strip()
        if stripped in ("on", "off", "yes", "no"):
            assert value == stripped, f"{key}={raw} ran as {value!r}"
        try:
            number = float(stripped)
        except ValueError:
            continue
        if s.kind in (int, float) and math.isfinite(number):
            assert value == pytest.approx(number), f"{key}={raw} ran as {value!r}"


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    generate_toy(root, image_size=64, n_train=4, n_test_good=2, n_test_per_defect=1, categories=[CATEGORY], progress=False)
    return root


def affordable(chosen: config.Config) -> bool:
    """Small enough to train and evaluate in seconds on a CPU, without downloads."""
    m, t = chosen.model, chosen.train
    teacher_ok = m.teacher.name == "efficientnet_lite0" or (m.teacher.name == "resnet18" and m.teacher.weights == "none")
    return (teacher_ok and t.epochs <= 3 and not t.compile and chosen.data.image_size <= 64 and m.memory.items <= 16
            and sum(m.decoder.blocks) <= 5 and m.bottleneck_blocks <= 2 and m.decoder.width_ratio <= 1
            and m.bottleneck_width <= 1 and m.decoder.min_width <= 64 and chosen.eval.pro_thresholds <= 200)


@fuzz(5)
@given(overrides=st.tuples(st.lists(VALID_OVERRIDE, min_size=1, max_size=3), st.lists(OVERRIDE, max_size=1))
       .map(lambda parts: parts[0] + parts[1]))
@pytest.mark.slow
def test_random_overrides_train_and_evaluate_or_fail_with_a_fix(overrides: list[str], tiny_root: Path, capsys) -> None:
    chosen, error = outcome(overrides)
    if chosen is not None and not affordable(chosen):
        event("accepted, too large to train in a test")
        return
    sets = [part for override in overrides for part in ("--set", override)]
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        code = cli.main(["train", "--data-root", str(tiny_root), "--category", CATEGORY, "--profile", "smoke", "--out",
                         str(run), "--device", "cpu", "--quiet", *sets])
        if code == 0:
            code = cli.main(["evaluate", "--run", str(run), "--json", str(Path(tmp) / "m.json"), "--quiet"])
    err = capsys.readouterr().err
    note(err)
    assert "Traceback" not in err
    if code == 0:
        assert chosen is not None, "the CLI ran what load_config refused"
        event("trained and evaluated")
    else:
        assert code == cli.EXIT_ERROR and err.startswith("dhkd: ") and "fix:" in err, err
        event(f"refused: {kind_of(error)}" if chosen is None else f"refused while running: {err.split(':')[1][:40]}")


# ----------------------------------------------------------------------------- drawn damage to a data set


def save_as(img: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    img.save(buffer, format=fmt)
    return buffer.getvalue()


LOSSLESS = ("PNG", "BMP", "TIFF")
SUFFIX = {"PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "JPEG": ".jpg"}
NOT_IMAGES = {"text": b"this is not a picture\n", "empty": b"", "zeros": bytes(2048),
              "npy": None, "html": b"<html><body>404 Not Found</body></html>"}


def npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((64, 64), dtype=np.uint8))
    return buffer.getvalue()


MASK_ENCODINGS = {  # name -> (convert 0/255 greyscale, whether it still says the same)
    "rgb": lambda m: m.convert("RGB"),
    "rgba": lambda m: m.convert("RGBA"),
    "1-bit": lambda m: m.convert("1"),
    "palette": lambda m: m.convert("P"),
    "16-bit": lambda m: Image.fromarray((np.asarray(m).astype(np.uint16) * 257)),
    "0/1 values": lambda m: Image.fromarray((np.asarray(m) > 127).astype(np.uint8)),
    "jpeg": lambda m: Image.open(io.BytesIO(save_as(m, "JPEG"))),
}
IMAGE_MODES = {
    "greyscale": lambda i: i.convert("L"),
    "rgba": lambda i: i.convert("RGBA"),
    "16-bit grey": lambda i: Image.fromarray(np.asarray(i.convert("L")).astype(np.uint16) * 257),
    "palette": lambda i: i.convert("P", palette=Image.ADAPTIVE, colors=256),
}

DAMAGE = st.one_of(
    st.tuples(st.just("remove"), st.integers(0, 99)),
    st.tuples(st.just("truncate"), st.integers(0, 99), st.floats(0.0, 0.999)),
    st.tuples(st.just("format"), st.integers(0, 99), st.sampled_from([*LOSSLESS, "JPEG"]), st.booleans()),
    st.tuples(st.just("not an image"), st.integers(0, 99), st.sampled_from(sorted(NOT_IMAGES))),
    st.tuples(st.just("mask size"), st.integers(0, 99), st.integers(-8, 8), st.integers(-8, 8)),
    st.tuples(st.just("mask encoding"), st.integers(0, 99), st.sampled_from(sorted(MASK_ENCODINGS))),
    st.tuples(st.just("image mode"), st.integers(0, 99), st.sampled_from(sorted(IMAGE_MODES))),
    st.tuples(st.just("stray file"), st.integers(0, 99), st.sampled_from([".DS_Store", "Thumbs.db", "notes.txt", "._000.png"])),
)


class Expected:
    """What a correct reader must see after the damage: per file (relative path) the picture and
    mask, or a reason the data set must be refused."""

    def __init__(self, reference: dict[str, dict[str, Any]]) -> None:
        self.items = {path: dict(item) for path, item in reference.items()}  # path -> image, mask, split
        self.refuse: dict[str, str] = {}  # file (relative path) -> why the data set must be refused

    def loosen(self, rel: str, image: float = 0.0, mask: float = 0.0) -> None:
        """Lossy re-encoding: the picture may differ by ``image`` grey levels on average, the mask
        in a share ``mask`` of its pixels."""
        item = self.items.get(rel)
        if item is not None:
            item["image_tolerance"] = max(item.get("image_tolerance", 0.0), image)
            item["mask_tolerance"] = max(item.get("mask_tolerance", 0.0), mask)


def apply(damage: tuple, root: Path, expected: Expected) -> str:
    """Damage the category under ``root``; update what a reader must see. Returns a description."""
    try:
        return _apply(damage, root, expected)
    except (OSError, SyntaxError, ValueError):  # the file was already damaged beyond PIL's reading
        return f"{damage[0]}: skipped, the file is already unreadable"


def _apply(damage: tuple, root: Path, expected: Expected) -> str:
    folder = root / CATEGORY
    files = sorted(p for p in folder.rglob("*")  # what the kit reads (it skips hidden and OS files)
                   if p.is_file() and not p.name.startswith(".") and p.name.lower() not in ("thumbs.db", "desktop.ini"))
    images = [p for p in files if "ground_truth" not in p.parts]
    masks = [p for p in files if "ground_truth" in p.parts]
    kind = damage[0]
    pick = (masks if kind.startswith("mask") else images if kind == "image mode" else files)
    if not pick:
        return f"{kind}: nothing left to damage"
    path = pick[damage[1] % len(pick)]
    rel = str(path.relative_to(folder))
    is_mask = "ground_truth" in path.parts
    owner = _owner_of(rel) if is_mask else rel
    if kind == "remove":
        path.unlink()
        expected.refuse.pop(rel, None)
        if is_mask:
            expected.refuse[rel] = f"{owner} lost its mask"
        else:
            expected.items.pop(rel, None)
            for key in [k for k in expected.refuse if "ground_truth" in k]:  # its mask's troubles go with it
                if Path(_owner_of(key)).with_suffix("") == Path(rel).with_suffix(""):
                    expected.refuse.pop(key)
    elif kind == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * damage[2])])  # accepted only if the picture is still intact
    elif kind == "format":
        fmt, rename = damage[2], damage[3]
        data = save_as(Image.open(path), fmt)
        target = path.with_suffix(SUFFIX[fmt]) if rename else path
        path.unlink()
        target.write_bytes(data)
        if rename and not is_mask and rel in expected.items:
            owner = str(target.relative_to(folder))
            expected.items[owner] = expected.items.pop(rel)
        if fmt == "JPEG":
            expected.loosen(owner, image=12, mask=0.02)
    elif kind == "not an image":
        data = NOT_IMAGES[damage[2]]
        path.write_bytes(npy_bytes() if data is None else data)
        expected.refuse[rel] = f"{rel} is not an image"
    elif kind == "mask size":
        mask = Image.open(path)
        size = (max(1, mask.width + damage[2]), max(1, mask.height + damage[3]))
        if size == mask.size:
            return "mask size: unchanged"
        mask.resize(size, Image.NEAREST).save(path)
        expected.refuse[rel] = f"mask {rel} has another size"
    elif kind == "mask encoding":
        levels = np.asarray(Image.open(path).convert("L"))  # what the mask says now, as 0/255 (it may be 0/1 already)
        meaning = Image.fromarray(((levels > (0 if levels.max(initial=0) <= 1 else 127)) * 255).astype(np.uint8))
        converted = MASK_ENCODINGS[damage[2]](meaning)
        converted.save(path) if damage[2] != "jpeg" else path.write_bytes(save_as(converted, "JPEG"))
        if damage[2] == "jpeg":
            expected.loosen(owner, mask=0.02)
    elif kind == "image mode":
        changed = IMAGE_MODES[damage[2]](Image.open(path).convert("RGB"))
        changed.save(path)
        item = expected.items[rel]
        same = {"palette": changed.convert("RGBA"), "16-bit grey": Image.open(path).convert("RGB").convert("L")}
        if damage[2] == "16-bit grey":  # what the 16 bits hold, scaled back to 8
            same[damage[2]] = Image.fromarray(((np.asarray(changed).astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8))
        item["image"] = _as_loaded(same.get(damage[2], changed).convert("RGB"))
    elif kind == "stray file":
        name = damage[2]
        (path.parent / name).write_bytes(b"junk")
        if not (name.startswith(".") or name.lower() == "thumbs.db" or is_mask):  # masks are looked up by name
            expected.refuse[str((path.parent / name).relative_to(folder))] = f"a stray {name} in {path.parent}"
    return f"{kind} {rel} {damage[2:]}"


def _owner_of(mask_rel: str) -> str:
    defect, name = Path(mask_rel).parts[-2:]
    return str(Path("test") / defect / name.replace("_mask", ""))


def _as_loaded(img: Image.Image, size: int = 64) -> np.ndarray:
    return np.asarray(img.resize((size, size), Image.BILINEAR)).transpose(2, 0, 1)


def read_all(root: Path) -> dict[str, dict[str, Any]]:
    validate_category(root, CATEGORY)
    seen = {}
    for split in ("train", "test"):
        loaded = load_split(root, CATEGORY, split, image_size=64, progress=False)
        for i, path in enumerate(loaded.paths):
            seen[str(Path(path).relative_to(root / CATEGORY))] = {
                "image": loaded.images[i].numpy(), "mask": loaded.masks[i].numpy(), "label": int(loaded.labels[i])}
    return seen


@pytest.fixture(scope="module")
def reference(tiny_root: Path) -> dict[str, dict[str, Any]]:
    return read_all(tiny_root)


@fuzz(150)
@given(damages=st.lists(DAMAGE, min_size=1, max_size=2))
def test_damaged_data_loads_as_it_is_or_fails_with_a_fix(damages: list[tuple], tiny_root: Path, reference) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        shutil.copytree(tiny_root, root)
        expected = Expected(reference)
        for damage in damages:
            note(apply(damage, root, expected))
        try:
            seen = read_all(root)
        except DhkdError as error:
            assert error.fix, f"no fix line for: {error}"
            event(f"refused: {damages[0][0]}")
            return
    assert not expected.refuse, f"accepted although {expected.refuse}"
    assert sorted(seen) == sorted(expected.items), "files read are not the files there"
    for rel, item in expected.items.items():
        got = seen[rel]
        difference = np.abs(got["image"].astype(int) - item["image"].astype(int)).mean()
        assert difference <= item.get("image_tolerance", 0.0), f"{rel}: the picture read is not the picture there"
        wrong = (got["mask"] != item["mask"]).mean()
        assert wrong <= item.get("mask_tolerance", 0.0), f"{rel}: the mask read is not the mask there"
        assert got["label"] == item["label"]
    event(f"accepted: {damages[0][0]}")


KEEPING = st.one_of(  # damage that leaves every picture readable as it was
    st.tuples(st.just("format"), st.integers(0, 99), st.sampled_from([*LOSSLESS, "JPEG"]), st.booleans()),
    st.tuples(st.just("mask encoding"), st.integers(0, 99), st.sampled_from(sorted(MASK_ENCODINGS))),
    st.tuples(st.just("image mode"), st.integers(0, 99), st.sampled_from(sorted(IMAGE_MODES))),
)


@fuzz(2)
@given(damages=st.lists(st.one_of(KEEPING, KEEPING, DAMAGE), min_size=1, max_size=2))
@pytest.mark.slow
def test_damaged_data_trains_or_fails_with_a_fix_through_the_cli(damages: list[tuple], tiny_root: Path, reference,
                                                                capsys) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        shutil.copytree(tiny_root, root)
        for damage in damages:
            note(apply(damage, root, Expected(reference)))
        code = cli.main(["train", "--data-root", str(root), "--category", CATEGORY, "--profile", "smoke", "--out",
                         str(Path(tmp) / "run"), "--device", "cpu", "--quiet"])
        if code == 0:
            code = cli.main(["evaluate", "--run", str(Path(tmp) / "run"), "--json", str(Path(tmp) / "m.json"), "--quiet"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code == 0 or (code == cli.EXIT_ERROR and "fix:" in err), err
    event("trained and evaluated" if code == 0 else "refused")
