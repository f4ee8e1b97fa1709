"""A local HTTP server standing in for the Hugging Face hub (``HF_ENDPOINT``), so the real
huggingface_hub code paths (timm's and open_clip's pretrained weights, clipfuse's own Hub
models) run in the suite with nothing leaving the machine.

It holds model repositories in an in-memory ``files`` mapping (``"owner/name/path/in/repo" ->
bytes``; a repository exists once it has a file or was created) and speaks the parts of the
hub's protocol that huggingface_hub 2.x uses (``huggingface_hub/hf_api.py``,
``_commit_api.py``, ``_snapshot_download.py``, ``file_download.py``):

* downloads: ``HEAD``/``GET /<repo>/resolve/<revision>/<file>`` (``ETag``, ``X-Repo-Commit``);
* repository info: ``GET /api/models/<repo>[/revision/<revision>]`` (``sha``, ``siblings``)
  and ``GET /api/models/<repo>/tree/<revision>`` (the files, for ``snapshot_download``);
* uploads: ``POST /api/repos/create`` (409 when it exists), ``POST /api/validate-yaml`` (the
  model card's metadata must parse), ``POST /api/models/<repo>/preupload/<revision>`` (every
  file ``regular``, with the git oid of the file already there, so unchanged files are
  skipped) and ``POST /api/models/<repo>/commit/<revision>`` (the NDJSON commit: a header, then
  base64 files or deletions). Run the client with ``HF_HUB_DISABLE_XET=1``: Xet and LFS
  uploads are not served.

A repository's commit is a hash of its files, so it changes with each commit that changes
them; a revision other than ``main`` or that commit is ``RevisionNotFound``, a missing
repository ``RepoNotFound``, a missing file ``EntryNotFound`` (the hub's ``X-Error-Code``).
Errors of the client's own requests (bad JSON, an LFS upload) are a 400.
"""

import base64
import contextlib
import hashlib
import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

DEFAULT_OWNER = "standin-user"  # the namespace of a repo created without one (the token's user)


def git_oid(data: bytes) -> str:
    """The git blob id of ``data`` (what the hub reports as a regular file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class StandinHub(http.server.BaseHTTPRequestHandler):
    """The request handler; ``files``, ``repos``, ``commits`` and ``lock`` are set per server
    (see :func:`serve`)."""

    files: dict[str, bytes] = {}
    repos: dict[str, dict] = {}  # created repositories: "owner/name" -> {"private": ...}
    commits: list[dict] = []  # {"repo", "summary", "files"} of each commit received
    lock = threading.Lock()

    # -- the store ----------------------------------------------------------------------------

    def repo_files(self, repo: str) -> dict[str, bytes]:
        prefix = f"{repo}/"
        return {k[len(prefix) :]: v for k, v in self.files.items() if k.startswith(prefix)}

    def exists(self, repo: str) -> bool:
        return repo in self.repos or bool(self.repo_files(repo))

    def sha(self, repo: str) -> str:
        digest = hashlib.sha1(repo.encode())
        for path, data in sorted(self.repo_files(repo).items()):
            digest.update(f"{path}\0{git_oid(data)}\0".encode())
        return digest.hexdigest()

    # -- answers ------------------------------------------------------------------------------

    def send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, payload, status: int = 200) -> None:
        self.send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def error(self, code: str, status: int = 404) -> None:
        body = json.dumps({"error": code}).encode()
        self.send(status, body, {"X-Error-Code": code, "Content-Type": "application/json"})

    def checked(self, repo: str, revision: str | None) -> bool:
        """Whether ``repo`` at ``revision`` exists; else the error is sent."""
        if not self.exists(repo):
            self.error("RepoNotFound")
            return False
        if revision not in (None, "main", self.sha(repo)):
            self.error("RevisionNotFound")
            return False
        return True

    @property
    def endpoint(self) -> str:
        return f"http://{self.headers['Host']}"

    def parts(self) -> list[str]:
        return [unquote(part) for part in urlsplit(self.path).path.strip("/").split("/")]

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    # -- GET and HEAD -------------------------------------------------------------------------

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        parts = self.parts()
        with self.lock:
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                self.api_get("/".join(parts[2:4]), parts[4:])
            elif len(parts) > 4 and parts[2] == "resolve":
                self.resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]))
            else:
                self.error("NotFound")

    def resolve(self, repo: str, revision: str, name: str) -> None:
        if not self.checked(repo, revision):
            return
        data = self.repo_files(repo).get(name)
        if data is None:
            self.error("EntryNotFound")
            return
        headers = {
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            "X-Repo-Commit": self.sha(repo),
        }
        self.send(200, data, headers)

    def api_get(self, repo: str, rest: list[str]) -> None:
        if rest[:1] == ["tree"] and len(rest) >= 2:
            if self.checked(repo, rest[1]):
                listed = self.repo_files(repo)
                entries = [
                    {"type": "file", "path": path, "size": len(data), "oid": git_oid(data)}
                    for path, data in sorted(listed.items())
                ]
                self.send_json(entries)
        elif not rest or (rest[:1] == ["revision"] and len(rest) == 2):
            if self.checked(repo, rest[1] if rest else None):
                siblings = [{"rfilename": path} for path in sorted(self.repo_files(repo))]
                private = self.repos.get(repo, {}).get("private", False)
                info = {"id": repo, "sha": self.sha(repo), "private": private}
                self.send_json({**info, "siblings": siblings})
        else:
            self.error("NotFound")

    # -- POST ---------------------------------------------------------------------------------

    def do_POST(self) -> None:  # noqa: N802
        parts, body = self.parts(), self.body()
        with self.lock:
            try:
                if parts == ["api", "repos", "create"]:
                    self.create(json.loads(body))
                elif parts == ["api", "validate-yaml"]:
                    self.validate_yaml(json.loads(body)["content"])
                elif parts[:2] == ["api", "models"] and len(parts) == 6:
                    repo, action, revision = "/".join(parts[2:4]), parts[4], parts[5]
                    if action in ("preupload", "commit") and self.checked(repo, revision):
                        (self.preupload if action == "preupload" else self.commit)(repo, body)
                    elif action not in ("preupload", "commit"):
                        self.error("NotFound")
                else:
                    self.error("NotFound")
            except (ValueError, KeyError, TypeError) as error:  # the client's request is bad
                self.send_json({"error": f"bad request: {error!r}"}, status=400)

    def create(self, payload: dict) -> None:
        repo = f"{payload.get('organization') or DEFAULT_OWNER}/{payload['name']}"
        url = f"{self.endpoint}/{repo}"
        if self.exists(repo):
            self.send_json({"error": "You already created this model repo", "url": url}, 409)
            return
        private = payload.get("visibility", "public") == "private" or bool(payload.get("private"))
        self.repos[repo] = {"private": private}
        self.send_json({"url": url, "name": repo})

    def validate_yaml(self, content: str) -> None:
        """The card's metadata (between the leading ``---`` lines) must be a YAML mapping."""
        _, _, rest = content.partition("---\n")
        front, separator, _ = rest.partition("\n---")
        try:
            metadata = yaml.safe_load(front) if content.startswith("---\n") and separator else {}
        except yaml.YAMLError as error:
            self.send_json({"errors": [{"message": str(error)}], "warnings": []}, status=400)
            return
        if not isinstance(metadata, dict):
            self.send_json({"errors": [{"message": "metadata is not a mapping"}]}, status=400)
            return
        self.send_json({"errors": [], "warnings": []})

    def preupload(self, repo: str, body: bytes) -> None:
        present = self.repo_files(repo)
        answers = []
        for file in json.loads(body)["files"]:
            data = present.get(file["path"])
            oid = git_oid(data) if data is not None else None
            answers.append(
                {"path": file["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid}
            )
        self.send_json({"files": answers})

    def commit(self, repo: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            raise ValueError("a commit starts with its header")
        changes: dict[str, bytes | None] = {}
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file" and value.get("encoding") == "base64":
                changes[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                changes[value["path"]] = None
            else:
                raise ValueError(f"the stand-in hub takes base64 files and deletions, not {key}")
        for path, data in changes.items():
            if data is None:
                self.files.pop(f"{repo}/{path}", None)
            else:
                self.files[f"{repo}/{path}"] = data
        summary = lines[0]["value"]["summary"]
        self.commits.append({"repo": repo, "summary": summary, "files": sorted(changes)})
        sha = self.sha(repo)
        self.send_json({"commitUrl": f"{self.endpoint}/{repo}/commit/{sha}", "commitOid": sha})

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve(files: dict[str, bytes], commits: list[dict] | None = None) -> Iterator[str]:
    """Serve ``files`` on 127.0.0.1 (a free port) while the block runs; yields the endpoint.
    Commits pushed to the server change ``files`` in place and are appended to ``commits``
    (when given)."""
    state = {"files": files, "repos": {}, "commits": [] if commits is None else commits}
    handler = type("Hub", (StandinHub,), {**state, "lock": threading.Lock()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def hub_environment(endpoint: str, home: Path) -> dict[str, str]:
    """The environment of a child process that downloads from (and uploads to) ``endpoint``
    with the hub cache under ``home`` (online, no Xet, no proxy for the loopback address, no
    token of this machine's user)."""
    return {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(home),
        "HF_HUB_DISABLE_XET": "1",
        "HF_TOKEN": "hf_standin",
        "NO_PROXY": "127.0.0.1",
    }
