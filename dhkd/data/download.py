"""Download and unpack MVTec AD (stdlib ``urllib`` only).

The archive is the one anomalib downloads (``DOWNLOAD_INFO`` in
``anomalib/data/datamodules/image/mvtecad.py``): MVTec's own share on mydrive.ch, about
4.9 GB, checked against anomalib's SHA-256. The download goes to ``OUT/<archive>.part`` and
resumes with an HTTP Range request when run again; only a file whose checksum matches is
renamed to the archive name. Extraction reads the archive in one pass, keeps only the
requested categories and uses ``tarfile``'s ``"data"`` filter, so no member can land outside
``OUT``. Each category is unpacked into a temporary folder and moved into place whole, so an
interrupted run never leaves half a category behind.

No network? Put the archive at ``OUT/mvtec_anomaly_detection.tar.xz`` by hand and run the same
command: it checks and unpacks it without downloading.

MVTec AD is CC BY-NC-SA 4.0 (MVTec Software GmbH); its ``license.txt`` is unpacked with it.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Sequence

from tqdm import tqdm

from dhkd.data.mvtec import EXPECTED_LAYOUT, MVTEC_CATEGORIES
from dhkd.errors import DhkdError

# anomalib (open-edge-platform/anomalib, src/anomalib/data/datamodules/image/mvtecad.py).
# Older anomalib releases used .../3830184030e49fe74747669442f0f282/download/420938113-1629952094/...
# with the same checksum; MVTec's page: https://www.mvtec.com/company/research/datasets/mvtec-ad
MVTEC_URL = (
    "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f283/"
    "download/420938113-1629960298/mvtec_anomaly_detection.tar.xz"
)
MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"
ARCHIVE_NAME = "mvtec_anomaly_detection.tar.xz"
MVTEC_PAGE = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
TIMEOUT_S = 10.0  # connect, and the longest wait for the next bytes of the download
CHUNK = 1 << 20
_EXTRAS = ("license.txt", "readme.txt")  # unpacked beside the categories


def download_mvtec(
    out: str | Path,
    categories: Sequence[str] | None = None,
    *,
    keep_archive: bool = False,
    progress: bool = True,
) -> Path:
    """Download MVTec AD (or use ``out/mvtec_anomaly_detection.tar.xz`` if there) and unpack it.

    Args:
        out: the data root; category folders are written as ``out/<category>``.
        categories: only these (folder names, e.g. ``["bottle"]``); all 15 by default.
        keep_archive: keep the 4.9 GB archive after unpacking (to unpack more categories
            later without downloading again). An archive placed in ``out`` by hand is always kept.
        progress: show progress bars.

    Returns:
        ``out``, ready to pass as ``--data-root``.
    """
    out = Path(out).expanduser()
    wanted = _check_categories(categories)
    missing = [c for c in wanted if not _complete(out / c)]
    if not missing:
        return out
    _refuse_partial_categories(out, missing)  # checked here too, before a 4.9 GB download
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DhkdError(f"cannot create {out}: {error.strerror}", "choose an output folder you can write to") from None

    archive = out / ARCHIVE_NAME
    placed_by_hand = archive.exists()
    if placed_by_hand:  # the user's file: checked, used, and kept whatever keep_archive says
        _verify(archive, MVTEC_SHA256, progress, placed_by_hand=True)
    else:
        part = archive.with_name(archive.name + ".part")
        _fetch(MVTEC_URL, part, out, progress)
        _verify(part, MVTEC_SHA256, progress, placed_by_hand=False)
        os.replace(part, archive)
    extract_categories(archive, out, missing, progress=progress)
    if not keep_archive and not placed_by_hand:
        archive.unlink()  # the archive this call downloaded; one placed by hand is the user's
    return out


def _check_categories(categories: Sequence[str] | None) -> list[str]:
    if categories is None or len(categories) == 0:
        return list(MVTEC_CATEGORIES)
    if isinstance(categories, str):
        categories = [categories]
    for name in categories:
        if name not in MVTEC_CATEGORIES:
            close = difflib.get_close_matches(name.lower(), MVTEC_CATEGORIES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise DhkdError(
                f"{name!r} is not an MVTec AD category",
                f"{hint}the categories are {', '.join(MVTEC_CATEGORIES)}",
            )
    return list(dict.fromkeys(categories))


def _complete(folder: Path) -> bool:
    return (folder / "train" / "good").is_dir()


def _refuse_partial_categories(out: Path, names: list[str]) -> None:
    """Stop before unpacking over a category folder that exists but is incomplete (a user's own
    files, or an earlier unpack that died): the unpack would otherwise mix with it."""
    for name in names:
        if (out / name).exists():
            raise DhkdError(
                f"{out / name} exists but is not a complete category (no train/good in it)",
                "move it away (or delete it) and run again, so that it can be unpacked afresh",
            )


def _by_hand(url: str, out: Path) -> str:
    return (
        "if this machine has no network access (or the link has moved), place the data by hand: either "
        f"download the archive elsewhere ({url}, about 4.9 GB, sha256 {MVTEC_SHA256}; or from {MVTEC_PAGE}), "
        f"put it at {out / ARCHIVE_NAME} and run the same command again (it unpacks without downloading); "
        f"or unpack it yourself so that the layout is\n{EXPECTED_LAYOUT}\n       and pass ROOT with --data-root"
    )


def _fetch(url: str, part: Path, out: Path, progress: bool) -> None:
    """Download ``url`` to ``part``, continuing from what ``part`` already holds."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "dhkd (urllib)"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)  # noqa: S310 (https from a constant)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing left to fetch: the part is complete
            return
        raise DhkdError(f"cannot download MVTec AD from {url}: HTTP {error.code} {error.reason}", _by_hand(url, out)) from None
    except (urllib.error.URLError, OSError) as error:  # no route, DNS failure, refused, timed out
        reason = getattr(error, "reason", error)
        raise DhkdError(f"cannot download MVTec AD from {url}: {reason}", _by_hand(url, out)) from None

    with response:
        if "text/html" in response.headers.get("Content-Type", ""):
            raise DhkdError(f"{url} answered with a web page, not the archive", _by_hand(url, out))
        if have and response.status == 206:
            start = response.headers.get("Content-Range", "").removeprefix("bytes ").split("-")[0]
            if start != str(have):
                part.unlink()
                raise DhkdError(
                    f"{url} resumed at byte {start or '?'} instead of {have}; the partial download was deleted",
                    "run the same command again to download afresh",
                )
            mode, total = "ab", _total(response, have)
        else:  # a fresh download, or a server that ignores Range: start over
            have, mode, total = 0, "wb", _total(response, 0)
        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                   desc="MVTec AD", disable=not progress)  # fmt: skip
        try:
            with open(part, mode) as handle, bar:
                while chunk := response.read(CHUNK):
                    handle.write(chunk)
                    bar.update(len(chunk))
        except OSError as error:  # a stall past TIMEOUT_S, a dropped connection, a full disk
            got = part.stat().st_size if part.exists() else 0
            raise DhkdError(
                f"the download of {url} stopped at {got / 2**20:.0f} MiB: {error}",
                f"run the same command again: it continues from {part}",
            ) from None
    if total is not None and part.stat().st_size < total:
        raise DhkdError(
            f"the download of {url} ended early ({part.stat().st_size} of {total} bytes)",
            f"run the same command again: it continues from {part}",
        )


def _total(response, have: int) -> int | None:
    content_range = response.headers.get("Content-Range", "")  # "bytes 100-199/200"
    if "/" in content_range and not content_range.endswith("*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return have + int(length) if length else None


def _verify(path: Path, expected: str, progress: bool, placed_by_hand: bool) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as handle, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                          unit_divisor=1024, desc="checking", disable=not progress) as bar:  # fmt: skip
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    if digest.hexdigest() == expected:
        return
    what = f"{path} has sha256 {digest.hexdigest()}, not the expected {expected}"
    if placed_by_hand:
        raise DhkdError(what, "it is not the MVTec AD archive or it is incomplete; delete it and run again to download it")
    path.unlink()
    raise DhkdError(f"{what} (deleted)", "run the same command again to download afresh")


def _locate(name: str, wanted: set[str]) -> tuple[str, tuple[str, ...]] | None:
    """The wanted category a member belongs to and its folder's path in the archive.

    Members are ``CATEGORY/...`` in MVTec's archive; ``WRAPPER/CATEGORY/...`` is accepted too.
    """
    parts = PurePosixPath(name).parts
    lead = 1 if parts and parts[0] == "." else 0
    for depth in (lead, lead + 1):
        if len(parts) > depth and parts[depth] in wanted:
            return parts[depth], parts[: depth + 1]
    return None


def extract_categories(archive: str | Path, out: str | Path, categories: Sequence[str], progress: bool = True) -> Path:
    """Unpack ``categories`` (and the licence and readme) from an MVTec AD tar archive into ``out``.

    Members are taken from ``CATEGORY/...`` or, if the archive wraps everything in one folder,
    ``WRAPPER/CATEGORY/...``. Existing complete categories under ``out`` are left alone.
    """
    archive, out = Path(archive), Path(out)
    wanted = {c for c in categories if not _complete(out / c)}
    if not wanted:
        return out
    _refuse_partial_categories(out, sorted(wanted))
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".dhkd-unpack-", dir=out))
    found: dict[str, Path] = {}
    extras: dict[str, Path] = {}

    def keep(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        hit = _locate(member.name, wanted)
        if hit is not None:
            category, folder = hit
            found.setdefault(category, tmp.joinpath(*folder))
        elif PurePosixPath(member.name).name in _EXTRAS and len(PurePosixPath(member.name).parts) <= 2:
            extras.setdefault(PurePosixPath(member.name).name, tmp / member.name)
        else:
            return None
        return tarfile.data_filter(member, dest)  # refuses absolute paths, "..", links out, devices

    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tqdm(tar, desc=f"unpacking {', '.join(sorted(wanted))}", unit=" files", disable=not progress)
                tar.extractall(tmp, members=members, filter=keep)
        except tarfile.FilterError as error:
            raise DhkdError(
                f"{archive} holds an unsafe member ({error}); nothing was unpacked into {out}",
                "this is not the original MVTec AD archive: delete it and download again",
            ) from None
        except (tarfile.TarError, EOFError, OSError) as error:
            raise DhkdError(
                f"cannot unpack {archive}: {error}",
                "the archive is damaged or incomplete: delete it and download again",
            ) from None
        absent = sorted(wanted - set(found))
        if absent:
            raise DhkdError(
                f"{archive} holds no folder for {', '.join(absent)}",
                f"check that it is the MVTec AD archive ({ARCHIVE_NAME}, sha256 {MVTEC_SHA256})",
            )
        for category, folder in sorted(found.items()):
            os.replace(folder, out / category)
        for name, path in extras.items():
            if path.is_file() and not (out / name).exists():
                os.replace(path, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
