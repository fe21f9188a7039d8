"""A local Hugging Face Hub for tests and benchmarks: the real `huggingface_hub` client (and
`mlx_lm.load`, `datasets`) talks to it through `HF_ENDPOINT`, so nothing reaches the internet.

It serves model and dataset repos from a folder, with the endpoints huggingface_hub 2.x calls
(read from its source: hf_api.py, file_download.py, _snapshot_download.py, hf_file_system.py):

    GET  /api/models, /api/datasets                       search (list_models / list_datasets)
    GET  /api/{models|datasets}/ORG/NAME[/revision/REV]    repo info (model_info, repo_info)
    GET  /api/{models|datasets}/ORG/NAME/tree/REV[/PATH]   list_repo_tree (paginated)
    POST /api/{models|datasets}/ORG/NAME/paths-info/REV    get_paths_info (HfFileSystem)
    GET  /api/{models|datasets}/ORG/NAME/refs              list_repo_refs
    HEAD/GET /ORG/NAME/resolve/REV/PATH                    file download (Range, ETag,
    HEAD/GET /datasets/ORG/NAME/resolve/REV/PATH            X-Repo-Commit, X-Linked-Etag/Size)
    GET  /api/whoami-v2                                    token check
    POST /api/repos/create, /api/validate-yaml,            uploads (create_repo, upload_folder,
         /api/{kind}/ORG/NAME/preupload/REV, .../commit/REV, upload_file, create_commit):
         /ORG/NAME.git/info/lfs/objects/batch, PUT /lfs-upload/SHA    regular files and LFS objects

Repos live under ROOT/models/ORG/NAME/ and ROOT/datasets/ORG/NAME/ (the files themselves);
an optional sidecar ROOT/models/ORG/NAME.hub.json holds what the Hub knows besides files:
`private`, `gated` (false | "auto" | "manual"), `downloads`, `likes`, `tags`, `library_name`,
`pipeline_tag`, `license`, `created_at`, `last_modified`. A repo's commit is a hash of its
files, so it changes when they do. Gated and private repos answer the way the Hub does (401
with X-Error-Code GatedRepo / RepoNotFound) unless the request carries `HubServer.token`.

Use it through the pytest fixtures below (`local_hub`: a running server; `use_hub(hub)`: point
this process and its children at it; bind them in a test module with `local_hub =
hub_server.local_hub`) or from a script:

    with HubServer(root) as hub:
        subprocess.run([...], env={**os.environ, **hub.env(hf_home)})

More endpoints (uploads: preupload, commit, create repo) are added with the `route`
decorator: `@route("POST", r"/api/(?P<kind>models|datasets)/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)")`
on a function `(request: Request, **groups) -> Response`.

Knobs for tests: `rate_limit` (bytes/s per download, a slow link, so a download can be killed
midway), `delay` (seconds before every answer, a slow Hub), `cdn_redirect` (LFS files answer 302 to another host name, `localhost`, as the Hub's
CDN does, so the client drops the token and GETs there), `requests` (every request seen).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

KINDS = {"models": "model", "datasets": "dataset"}
META_SUFFIX = ".hub.json"
LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".parquet", ".arrow", ".pt", ".pth", ".h5",
                ".msgpack", ".onnx", ".npz", ".model", ".zip", ".gz")
LFS_MIN_SIZE = 10 * 2**20  # anything this big is stored in LFS, whatever its name
PAGE_SIZE = 1000  # the Hub's largest page of search results
TREE_PAGE_SIZE = 1000
EPOCH = "2024-01-01T00:00:00.000Z"


# --------------------------------------------------------------------------- repos on disk

@dataclass
class FileEntry:
    path: str
    size: int
    blob_id: str  # git blob sha1 (of the LFS pointer for LFS files)
    sha256: str | None  # set for LFS files
    full_path: Path

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id

    def tree_json(self, expand: bool, commit: str) -> dict:
        out = {"type": "file", "oid": self.blob_id, "size": self.size, "path": self.path}
        if self.sha256:
            out["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(_lfs_pointer(self))}
        if expand:
            out["lastCommit"] = {"id": commit, "title": "Upload", "date": EPOCH}
            out["securityFileStatus"] = {"status": "safe", "avScan": {"virusFound": False},
                                         "pickleImportScan": None}
        return out


def _lfs_pointer(entry_or_sha, size: int | None = None) -> bytes:
    sha, size = (entry_or_sha.sha256, entry_or_sha.size) if size is None else (entry_or_sha, size)
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {size}\n".encode()


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


_hash_cache: dict[tuple, tuple[str, str | None]] = {}
_hash_lock = threading.Lock()


def _hashes(path: Path, rel: str) -> tuple[str, str | None]:
    """(git blob id, LFS sha256 or None), cached by size and mtime: big weights hash once."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    lfs = rel.endswith(LFS_SUFFIXES) or st.st_size >= LFS_MIN_SIZE
    if lfs:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(4 * 2**20), b""):
                h.update(chunk)
        sha256 = h.hexdigest()
        result = (_git_blob_sha1(_lfs_pointer(sha256, st.st_size)), sha256)
    else:
        result = (_git_blob_sha1(path.read_bytes()), None)
    with _hash_lock:
        _hash_cache[key] = result
    return result


@dataclass
class Repo:
    kind: str  # models | datasets
    repo_id: str
    folder: Path
    meta: dict = field(default_factory=dict)

    @property
    def repo_type(self) -> str:
        return KINDS[self.kind]

    def files(self) -> list[FileEntry]:
        out = []
        for path in sorted(self.folder.rglob("*")):
            if path.is_file() and ".git" not in path.parts:
                rel = path.relative_to(self.folder).as_posix()
                blob, sha256 = _hashes(path, rel)
                out.append(FileEntry(rel, path.stat().st_size, blob, sha256, path))
        return out

    def commit(self, files: list[FileEntry] | None = None) -> str:
        h = hashlib.sha1(self.repo_id.encode())
        for f in files if files is not None else self.files():
            h.update(f"{f.path}\0{f.blob_id}\n".encode())
        return h.hexdigest()

    def gated(self):
        return self.meta.get("gated", False)

    def private(self) -> bool:
        return bool(self.meta.get("private", False))

    def config(self) -> dict:
        try:
            return json.loads((self.folder / "config.json").read_text())
        except (OSError, ValueError):
            return {}

    def tags(self) -> list[str]:
        tags = list(self.meta.get("tags", []))
        if self.meta.get("library_name"):
            tags.append(self.meta["library_name"])
        model_type = self.config().get("model_type")
        if model_type:
            tags.append(model_type)
        if any(self.folder.glob("*.safetensors")):
            tags.append("safetensors")
        if self.meta.get("license"):
            tags.append(f"license:{self.meta['license']}")
        return list(dict.fromkeys(tags))

    def safetensors_params(self) -> dict | None:
        """Parameter counts per dtype from the safetensors headers, as the Hub reports them."""
        counts: dict[str, int] = {}
        for path in sorted(self.folder.glob("*.safetensors")):
            try:
                with open(path, "rb") as fh:
                    n = int.from_bytes(fh.read(8), "little")
                    if n > min(100 * 2**20, path.stat().st_size):
                        continue  # not a safetensors file
                    header = json.loads(fh.read(n))
            except (OSError, ValueError):
                continue
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                numel = 1
                for dim in info["shape"]:
                    numel *= dim
                counts[info["dtype"]] = counts.get(info["dtype"], 0) + numel
        return {"parameters": counts, "total": sum(counts.values())} if counts else None

    def info(self, *, full: bool, blobs: bool = False, expand: list[str] | None = None) -> dict:
        """The JSON the Hub returns for this repo (a search hit, or repo info when `full`)."""
        files = self.files() if (full or blobs or (expand and ("siblings" in expand or "sha" in expand
                                                              or "usedStorage" in expand))) else None
        meta = self.meta
        author = self.repo_id.split("/")[0]
        out = {
            "_id": hashlib.md5(self.repo_id.encode()).hexdigest()[:24], "id": self.repo_id,
            "author": author, "private": self.private(), "gated": self.gated(), "disabled": False,
            "downloads": int(meta.get("downloads", 0)), "likes": int(meta.get("likes", 0)),
            "trendingScore": int(meta.get("trending", 0)), "tags": self.tags(),
            "createdAt": meta.get("created_at", EPOCH),
            "lastModified": meta.get("last_modified", EPOCH),
        }
        if self.kind == "models":
            out.update(modelId=self.repo_id, library_name=meta.get("library_name"),
                       pipeline_tag=meta.get("pipeline_tag", "text-generation"))
        card = {k: meta[k] for k in ("license",) if k in meta}
        extra = {"cardData": card or None}
        if self.kind == "models":
            cfg = self.config()
            extra["config"] = {k: cfg[k] for k in ("architectures", "model_type", "quantization",
                                                   "quantization_config") if k in cfg} or None
            extra["safetensors"] = self.safetensors_params()
        if files is not None:
            commit = self.commit(files)
            siblings = []
            for f in files:
                s = {"rfilename": f.path}
                if blobs:
                    s.update(size=f.size, blobId=f.blob_id)
                    if f.sha256:
                        s["lfs"] = {"sha256": f.sha256, "size": f.size,
                                    "pointerSize": len(_lfs_pointer(f))}
                siblings.append(s)
            extra.update(sha=commit, siblings=siblings, usedStorage=sum(f.size for f in files))
        if expand:
            wanted = {**out, **extra}
            return {"_id": out["_id"], "id": out["id"], **{k: wanted.get(k) for k in expand}}
        if full:
            out.update(extra)
        return out


class HubState:
    """The repos under `root`, read fresh on every request (tests add repos while it runs)."""

    def __init__(self, root: Path, token: str | None):
        self.root = Path(root)
        self.token = token

    def repo(self, kind: str, repo_id: str) -> Repo | None:
        folder = self.root / kind / repo_id
        if not folder.is_dir() or folder.name.endswith(META_SUFFIX):
            return None
        return Repo(kind, repo_id, folder, self._meta(folder))

    def repos(self, kind: str) -> list[Repo]:
        base = self.root / kind
        if not base.is_dir():
            return []
        return [Repo(kind, f"{org.name}/{name.name}", name, self._meta(name))
                for org in sorted(base.iterdir()) if org.is_dir()
                for name in sorted(org.iterdir()) if name.is_dir()]

    @staticmethod
    def _meta(folder: Path) -> dict:
        side = folder.with_name(folder.name + META_SUFFIX)
        try:
            return json.loads(side.read_text()) if side.exists() else {}
        except ValueError:
            return {}


# --------------------------------------------------------------------------- requests, routes

@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    state: HubState
    server: "HubServer"

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def args(self, name: str) -> list[str]:
        return self.query.get(name, []) + self.query.get(name + "[]", [])

    def flag(self, name: str) -> bool:
        return (self.arg(name) or "").lower() in ("1", "true", "yes")

    @property
    def authorized(self) -> bool:
        auth = self.headers.get("authorization", "")
        return bool(self.state.token) and auth == f"Bearer {self.state.token}"

    def form(self) -> dict[str, list[str]]:
        ctype = self.headers.get("content-type", "")
        if "json" in ctype:
            data = json.loads(self.body or b"{}")
            return {k: v if isinstance(v, list) else [v] for k, v in data.items()}
        return parse_qs(self.body.decode(), keep_blank_values=True)


@dataclass
class Response:
    status: int = 200
    body: bytes | None = b""
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None  # streamed instead of body
    start: int = 0
    length: int = 0


def json_response(data, status: int = 200, headers: dict | None = None) -> Response:
    return Response(status, json.dumps(data).encode(),
                    {"Content-Type": "application/json", **(headers or {})})


def error(status: int, code: str | None, message: str, headers: dict | None = None) -> Response:
    hdrs = {"X-Error-Message": message, **(headers or {})}
    if code:
        hdrs["X-Error-Code"] = code
    return json_response({"error": message}, status, hdrs)


ROUTES: list[tuple[str, re.Pattern, Callable]] = []


def route(method: str, pattern: str):
    """Register a handler for METHOD and a full-match path regex (named groups -> kwargs)."""
    def deco(fn):
        ROUTES.append((method, re.compile(pattern), fn))
        return fn
    return deco


REPO = r"(?P<repo>[^/]+/[^/]+)"
KIND = r"(?P<kind>models|datasets)"


def _visible(req: Request, kind: str, repo_id: str, *, files: bool) -> Repo | Response:
    """The repo, or the error the Hub gives: unknown and private-without-token are 401/404
    RepoNotFound; a gated repo's files (not its info) need a token (401 GatedRepo)."""
    repo = req.state.repo(kind, repo_id)
    if repo is None or (repo.private() and not req.authorized):
        return error(401 if not req.authorized else 404, "RepoNotFound", "Repository not found")
    if files and repo.gated() and not req.authorized:
        return error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have "
                     "access to it and be authenticated to access it. Please log in.",
                     {"X-Repo-Commit": repo.commit()})
    return repo


def _check_revision(repo: Repo, revision: str, commit: str) -> Response | None:
    if revision in ("main", commit) or revision in repo.meta.get("revisions", ()):
        return None
    return error(404, "RevisionNotFound", f"Invalid rev id: {revision}")


@route("GET", rf"/api/{KIND}")
def search(req: Request, kind: str) -> Response:
    repos = [r for r in req.state.repos(kind) if not r.private() or req.authorized]
    text = (req.arg("search") or "").lower()
    author = req.arg("author")
    filters = req.args("filter")
    gated = req.arg("gated")
    if text:
        repos = [r for r in repos if text in r.repo_id.lower()]
    if author:
        repos = [r for r in repos if r.repo_id.split("/")[0] == author]
    for tag in filters:
        repos = [r for r in repos if tag in r.tags()]
    if gated is not None:
        repos = [r for r in repos if bool(r.gated()) == (gated.lower() == "true")]
    if req.arg("pipeline_tag"):
        repos = [r for r in repos if r.meta.get("pipeline_tag", "text-generation") == req.arg("pipeline_tag")]
    sort = req.arg("sort")
    keys = {"downloads": lambda r: r.meta.get("downloads", 0), "likes": lambda r: r.meta.get("likes", 0),
            "lastModified": lambda r: r.meta.get("last_modified", EPOCH),
            "createdAt": lambda r: r.meta.get("created_at", EPOCH),
            "trendingScore": lambda r: r.meta.get("trending", 0)}
    if sort in keys:
        repos.sort(key=keys[sort], reverse=True)
    limit = int(req.arg("limit") or PAGE_SIZE)
    cursor = int(req.arg("cursor") or 0)
    page = repos[cursor:cursor + min(limit, PAGE_SIZE)]
    expand = req.args("expand") or None
    body = [r.info(full=req.flag("full") or req.flag("cardData"), expand=expand) for r in page]
    headers = {}
    if cursor + len(page) < len(repos) and page:
        q = {k: v for k, v in req.query.items()}
        q["cursor"] = [str(cursor + len(page))]
        headers["Link"] = f'<{req.server.url}{req.path}?{urlencode(q, doseq=True)}>; rel="next"'
    return json_response(body, headers=headers)


@route("GET", rf"/api/{KIND}/{REPO}(?:/revision/(?P<rev>[^/]+))?")
def repo_info(req: Request, kind: str, repo: str, rev: str | None = None) -> Response:
    found = _visible(req, kind, repo, files=False)
    if isinstance(found, Response):
        return found
    info = found.info(full=True, blobs=req.flag("blobs"), expand=req.args("expand") or None)
    bad = _check_revision(found, unquote(rev or "main"), found.commit())
    if bad:
        return bad
    if "sha" not in info:
        info["sha"] = found.commit()
    return json_response(info)


def _tree_entries(repo: Repo, prefix: str, recursive: bool, expand: bool) -> list[dict]:
    files = repo.files()
    commit = repo.commit(files)
    prefix = prefix.strip("/")
    out, folders = [], set()
    for f in files:
        if prefix and not f.path.startswith(prefix + "/"):
            continue
        rest = f.path[len(prefix) + 1:] if prefix else f.path
        parts = rest.split("/")
        for depth in range(1, len(parts)):
            if not recursive and depth > 1:
                break
            folder = "/".join(([prefix] if prefix else []) + parts[:depth])
            if folder not in folders:
                folders.add(folder)
                entry = {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(),
                         "size": 0, "path": folder}
                if expand:
                    entry["lastCommit"] = {"id": commit, "title": "Upload", "date": EPOCH}
                out.append(entry)
        if recursive or len(parts) == 1:
            out.append(f.tree_json(expand, commit))
    return out


@route("GET", rf"/api/{KIND}/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?")
def tree(req: Request, kind: str, repo: str, rev: str, path: str | None = None) -> Response:
    found = _visible(req, kind, repo, files=False)
    if isinstance(found, Response):
        return found
    bad = _check_revision(found, unquote(rev), found.commit())
    if bad:
        return bad
    prefix = unquote(path or "")
    if prefix and not (found.folder / prefix).is_dir():
        return error(404, "EntryNotFound", f"{prefix} does not exist")
    entries = _tree_entries(found, prefix, req.flag("recursive"), req.flag("expand"))
    cursor = int(req.arg("cursor") or 0)
    page = entries[cursor:cursor + TREE_PAGE_SIZE]
    headers = {}
    if cursor + len(page) < len(entries):
        q = dict(req.query, cursor=[str(cursor + len(page))])
        headers["Link"] = f'<{req.server.url}{req.path}?{urlencode(q, doseq=True)}>; rel="next"'
    return json_response(page, headers=headers)


@route("POST", rf"/api/{KIND}/{REPO}/paths-info/(?P<rev>[^/]+)")
def paths_info(req: Request, kind: str, repo: str, rev: str) -> Response:
    found = _visible(req, kind, repo, files=False)
    if isinstance(found, Response):
        return found
    bad = _check_revision(found, unquote(rev), found.commit())
    if bad:
        return bad
    form = req.form()
    expand = (form.get("expand") or ["false"])[-1].lower() in ("1", "true")
    wanted = [p.strip("/") for p in form.get("paths", [])]
    files = {f.path: f for f in found.files()}
    commit = found.commit(list(files.values()))
    out = []
    for p in wanted:
        if p in files:
            out.append(files[p].tree_json(expand, commit))
        elif p == "" or (found.folder / p).is_dir():
            out.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0,
                        "path": p})
    return json_response(out)


@route("GET", rf"/api/{KIND}/{REPO}/refs")
def refs(req: Request, kind: str, repo: str) -> Response:
    found = _visible(req, kind, repo, files=False)
    if isinstance(found, Response):
        return found
    commit = found.commit()
    return json_response({"branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": commit}],
                          "converts": [], "tags": []})


@route("GET", r"/api/whoami-v2")
def whoami(req: Request) -> Response:
    if not req.authorized:
        return error(401, None, "Invalid credentials in Authorization header")
    return json_response({"type": "user", "id": "0", "name": "tester", "fullname": "Test User",
                          "orgs": [], "auth": {"accessToken": {"displayName": "test", "role": "read"}}})


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """(start, end inclusive) for 'bytes=a-b', 'bytes=a-', 'bytes=-n'; None without a header;
    'bad' when unsatisfiable."""
    if not header:
        return None
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return "bad"
    if not m.group(1):
        n = int(m.group(2))
        start, end = max(0, size - n), size - 1
    else:
        start = int(m.group(1))
        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    if start >= size or start > end:
        return "bad"
    return start, end


def _serve_file(req: Request, entry: FileEntry, extra: dict) -> Response:
    headers = {"Accept-Ranges": "bytes", "ETag": f'"{entry.etag}"',
               "Last-Modified": formatdate(entry.full_path.stat().st_mtime, usegmt=True),
               "Content-Type": "application/octet-stream", **extra}
    rng = _parse_range(req.headers.get("range"), entry.size)
    if rng == "bad":
        return error(416, None, "Requested Range Not Satisfiable",
                     {"Content-Range": f"bytes */{entry.size}"})
    if rng is None:
        return Response(200, None, headers, entry.full_path, 0, entry.size)
    start, end = rng
    headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
    return Response(206, None, headers, entry.full_path, start, end - start + 1)


@route("HEAD|GET", rf"(?:/(?P<kind>datasets))?/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)")
def resolve(req: Request, repo: str, rev: str, path: str, kind: str | None = None) -> Response:
    kind = kind or "models"
    found = _visible(req, kind, repo, files=True)
    if isinstance(found, Response):
        return found
    files = found.files()
    commit = found.commit(files)
    bad = _check_revision(found, unquote(rev), commit)
    if bad:
        return bad
    path = unquote(path)
    entry = next((f for f in files if f.path == path), None)
    if entry is None:
        return error(404, "EntryNotFound", f"{path} does not exist on \"{unquote(rev)}\"",
                     {"X-Repo-Commit": commit})
    extra = {"X-Repo-Commit": commit}
    if entry.sha256:
        extra.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        if req.server.cdn_redirect:
            host = urlsplit(req.server.url)
            location = f"http://localhost:{host.port}/cdn/{kind}/{repo}/{entry.sha256}/{quote(path)}"
            return Response(302, b"", {"Location": location, "ETag": f'"{entry.blob_id}"', **extra})
    return _serve_file(req, entry, extra)


@route("HEAD|GET", rf"/cdn/{KIND}/{REPO}/(?P<sha>[0-9a-f]{{64}})/(?P<path>.+)")
def cdn(req: Request, kind: str, repo: str, sha: str, path: str) -> Response:
    """Where LFS files redirect to with `cdn_redirect` (a signed CDN URL on the real Hub):
    no token needed, content addressed by sha256."""
    found = req.state.repo(kind, repo)
    entry = next((f for f in (found.files() if found else []) if f.sha256 == sha), None)
    if entry is None:
        return error(404, None, "Not found")
    return _serve_file(req, entry, {"Content-Disposition": f'inline; filename="{Path(path).name}"'})


# --------------------------------------------------------------------------- uploads
# What huggingface_hub 2.x's create_repo / upload_folder / upload_file / create_commit call
# (hf_api.py, _commit_api.py, lfs.py) without hf_xet: create the repo, validate the card's
# YAML, ask per file whether it goes to git or LFS (preupload), PUT LFS objects where the LFS
# batch answer says, then one ndjson commit naming regular files (base64) and LFS pointers
# (sha256). Every write needs the token; LFS objects wait in ROOT/.lfs/<sha256> until a commit
# places them.

def _lfs_dir(req: Request) -> Path:
    path = req.state.root / ".lfs"
    path.mkdir(parents=True, exist_ok=True)
    return path


@route("POST", r"/api/repos/create")
def create_repo(req: Request) -> Response:
    if not req.authorized:
        return error(401, None, "Invalid credentials in Authorization header")
    body = json.loads(req.body or b"{}")
    kind = {"model": "models", "dataset": "datasets", None: "models"}.get(body.get("type"))
    if kind is None:
        return error(400, None, f"Unsupported repo type {body.get('type')!r}")
    repo_id = f"{body.get('organization') or 'tester'}/{body['name']}"
    url = f"{req.server.url}/{repo_id}" if kind == "models" else f"{req.server.url}/datasets/{repo_id}"
    if req.state.repo(kind, repo_id) is not None:
        return json_response({"error": "You already created this model repo", "url": url}, 409,
                             {"X-Error-Message": "You already created this model repo"})
    folder = req.state.root / kind / repo_id
    folder.mkdir(parents=True)
    private = body.get("visibility") == "private" or bool(body.get("private"))
    folder.with_name(folder.name + META_SUFFIX).write_text(json.dumps({"private": private}))
    req.server.uploads.append(("create", repo_id, private))
    return json_response({"url": url, "name": repo_id})


@route("POST", r"/api/validate-yaml")
def validate_yaml(req: Request) -> Response:
    import yaml

    content = json.loads(req.body or b"{}").get("content", "")
    if content.startswith("---"):
        end = content.find("\n---", 3)
        try:
            meta = yaml.safe_load(content[3:end]) if end > 0 else None
        except yaml.YAMLError as exc:
            return json_response({"errors": [{"message": f"YAML: {exc}"}]}, 400)
        if end < 0 or not isinstance(meta, dict):
            return json_response({"errors": [{"message": "front matter is not a YAML mapping"}]}, 400)
    return json_response({"errors": [], "warnings": []})


@route("POST", rf"/api/{KIND}/{REPO}/preupload/(?P<rev>[^/]+)")
def preupload(req: Request, kind: str, repo: str, rev: str) -> Response:
    found = _visible(req, kind, repo, files=False)
    if isinstance(found, Response):
        return found
    if not req.authorized:
        return error(401, None, "Invalid credentials in Authorization header")
    files = json.loads(req.body or b"{}").get("files", [])
    out = []
    for f in files:
        lfs = f["path"].endswith(LFS_SUFFIXES) or int(f.get("size", 0)) >= LFS_MIN_SIZE
        out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                    "oid": None})
    return json_response({"files": out})


@route("POST", r"(?:/(?P<kind>datasets))?/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch")
def lfs_batch(req: Request, repo: str, kind: str | None = None) -> Response:
    if not req.authorized:
        return error(401, None, "Invalid credentials in Authorization header")
    body = json.loads(req.body or b"{}")
    objects = []
    for obj in body.get("objects", []):
        sha, size = obj["oid"], int(obj["size"])
        staged = _lfs_dir(req) / sha
        entry = {"oid": sha, "size": size}
        if not (staged.exists() and staged.stat().st_size == size):
            entry["actions"] = {"upload": {"href": f"{req.server.url}/lfs-upload/{sha}", "header": {}}}
        objects.append(entry)
    return json_response({"transfer": "basic", "objects": objects})


@route("PUT", r"/lfs-upload/(?P<sha>[0-9a-f]{64})")
def lfs_upload(req: Request, sha: str) -> Response:
    if hashlib.sha256(req.body).hexdigest() != sha:
        return error(400, None, "sha256 of the uploaded bytes does not match the object id")
    (_lfs_dir(req) / sha).write_bytes(req.body)
    return Response(200, b"")


@route("POST", rf"/api/{KIND}/{REPO}/commit/(?P<rev>[^/]+)")
def commit(req: Request, kind: str, repo: str, rev: str) -> Response:
    import base64
    import shutil

    found = _visible(req, kind, repo, files=False)
    if isinstance(found, Response):
        return found
    if not req.authorized:
        return error(401, None, "Invalid credentials in Authorization header")
    if unquote(rev) != "main":
        return error(404, "RevisionNotFound", f"Invalid rev id: {unquote(rev)}")
    lines = [json.loads(line) for line in req.body.splitlines() if line.strip()]
    for item in lines:  # check everything before writing anything: a commit is all or nothing
        if item["key"] == "lfsFile":
            staged = _lfs_dir(req) / item["value"]["oid"]
            if not staged.exists() or staged.stat().st_size != int(item["value"]["size"]):
                return error(400, None, f"LFS object of {item['value']['path']} was never uploaded")
        if item["key"] in ("file", "lfsFile", "deletedFile", "deletedFolder"):
            path = (found.folder / item["value"]["path"]).resolve()
            if found.folder.resolve() not in path.parents:
                return error(400, None, f"Bad path {item['value']['path']!r}")
    paths = []
    for item in lines:
        value = item["value"]
        target = found.folder / value.get("path", "")
        if item["key"] == "file":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(base64.b64decode(value["content"]))
        elif item["key"] == "lfsFile":
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_lfs_dir(req) / value["oid"], target)
        elif item["key"] == "deletedFile":
            target.unlink(missing_ok=True)
        elif item["key"] == "deletedFolder":
            shutil.rmtree(target, ignore_errors=True)
        else:
            continue
        paths.append(value["path"])
    sha = found.commit()
    summary = next((i["value"].get("summary") for i in lines if i["key"] == "header"), "")
    req.server.uploads.append(("commit", repo, summary, paths))
    prefix = f"{req.server.url}/datasets" if kind == "datasets" else req.server.url
    return json_response({"commitUrl": f"{prefix}/{repo}/commit/{sha}", "commitOid": sha})


# --------------------------------------------------------------------------- the HTTP server

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects from the Hub
    server: "_Server"

    def log_message(self, fmt, *args):  # quiet; `HubServer.requests` records what came in
        pass

    def _dispatch(self, method: str) -> None:
        hub = self.server.hub
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Request(method, parts.path, parse_qs(parts.query, keep_blank_values=True),
                      {k.lower(): v for k, v in self.headers.items()}, body, hub.state, hub)
        hub.requests.append((method, self.path, req.headers.get("range")))
        if hub.delay:
            time.sleep(hub.delay)  # a slow Hub
        resp = None
        for methods, pattern, fn in ROUTES:
            if method not in methods.split("|"):
                continue
            m = pattern.fullmatch(parts.path)
            if m:
                try:
                    resp = fn(req, **{k: v for k, v in m.groupdict().items() if v is not None})
                except Exception as exc:  # noqa: BLE001 - a server bug is a 500, visible in the test
                    resp = error(500, None, f"{type(exc).__name__}: {exc}")
                break
        if resp is None:
            resp = error(404, None, f"No route for {method} {parts.path}")
        self._send(method, resp)

    def _send(self, method: str, resp: Response) -> None:
        self.send_response(resp.status)
        length = resp.length if resp.file is not None else len(resp.body or b"")
        for key, value in resp.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if method == "HEAD":
            return
        if resp.file is None:
            self.wfile.write(resp.body or b"")
            return
        self.wfile.flush()
        rate = self.server.hub.rate_limit
        with open(resp.file, "rb") as fh:
            if not rate:
                self.connection.sendfile(fh, resp.start, resp.length)
                return
            fh.seek(resp.start)
            left, chunk, tic = resp.length, max(4096, int(rate) // 20), time.monotonic()
            sent = 0
            while left > 0:
                data = fh.read(min(chunk, left))
                if not data:
                    break
                self.wfile.write(data)
                left -= len(data)
                sent += len(data)
                ahead = sent / rate - (time.monotonic() - tic)
                if ahead > 0:
                    time.sleep(ahead)  # a slow link: the test needs time to kill a download midway

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    hub: "HubServer"

    def handle_error(self, request, client_address):  # a client hanging up mid-download is normal
        pass


class HubServer:
    """A local Hub on 127.0.0.1 and a free port, serving repos from `root` (see the module doc)."""

    def __init__(self, root, *, token: str | None = "hf_droidft_test_token", port: int = 0,
                 rate_limit: float | None = None, cdn_redirect: bool = False):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.state = HubState(self.root, token)
        self.token = token
        self.port = port
        self.rate_limit = rate_limit
        self.cdn_redirect = cdn_redirect
        self.delay = 0.0  # seconds before each answer: a slow Hub
        self.requests: list[tuple[str, str, str | None]] = []
        self.uploads: list[tuple] = []  # ("create", repo, private) and ("commit", repo, summary, paths)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "HubServer":
        self._httpd = _Server(("127.0.0.1", self.port), _Handler)
        self._httpd.hub = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering: connections are refused afterwards (the 'Hub is down' case)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- building repos ---------------------------------------------------------------

    def add_repo(self, repo_id: str, source=None, *, kind: str = "models", files: dict | None = None,
                 **meta) -> Path:
        """Put a repo on the Hub: copies of the files in folder `source`, plus `files`
        ({path: bytes | str}), plus Hub metadata (`gated="manual"`, `private=True`,
        `downloads=...`, `tags=[...]`, `library_name="mlx"`, `license=...`). Returns its folder."""
        import shutil

        folder = self.root / kind / repo_id
        folder.mkdir(parents=True, exist_ok=True)
        if source is not None:
            for path in Path(source).iterdir():
                if path.is_file():
                    shutil.copy2(path, folder / path.name)
                elif path.is_dir():
                    shutil.copytree(path, folder / path.name, dirs_exist_ok=True)
        for name, content in (files or {}).items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content.encode() if isinstance(content, str) else content)
        if meta:
            folder.with_name(folder.name + META_SUFFIX).write_text(json.dumps(meta, indent=1))
        return folder

    def add_model(self, repo_id: str, source=None, **kw) -> Path:
        return self.add_repo(repo_id, source, kind="models", **kw)

    def add_dataset(self, repo_id: str, source=None, **kw) -> Path:
        return self.add_repo(repo_id, source, kind="datasets", **kw)

    def commit(self, repo_id: str, kind: str = "models") -> str:
        return self.state.repo(kind, repo_id).commit()

    def env(self, hf_home=None, *, offline: bool = False) -> dict[str, str]:
        """Environment for a process that must use this Hub and nothing else (see hub_env)."""
        return hub_env(self.url, hf_home, offline=offline)


def hub_env(endpoint: str | None, hf_home=None, *, offline: bool = False) -> dict[str, str]:
    """HF_* variables that point huggingface_hub at `endpoint` (a local server, or a closed
    port for 'the Hub is down'), a private cache under `hf_home`, no telemetry, no token from
    the developer's own login, no Xet; `offline=True` sets HF_HUB_OFFLINE=1."""
    env = {"HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
           "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "10",
           "HF_HUB_OFFLINE": "1" if offline else "0", "TRANSFORMERS_OFFLINE": "1" if offline else "0",
           "HF_DATASETS_OFFLINE": "1" if offline else "0", "DO_NOT_TRACK": "1"}
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    if hf_home is not None:
        hf_home = Path(hf_home)
        env.update(HF_HOME=str(hf_home), HF_HUB_CACHE=str(hf_home / "hub"),
                   HF_TOKEN_PATH=str(hf_home / "token"), HF_DATASETS_CACHE=str(hf_home / "datasets"),
                   HF_XET_CACHE=str(hf_home / "xet"), HF_ASSETS_CACHE=str(hf_home / "assets"))
    return env


def apply_hub_env(monkeypatch, env: dict[str, str]) -> None:
    """Set `env` in this process too: os.environ, and the huggingface_hub constants that were
    read from it when the library was first imported (ENDPOINT, cache paths, offline flag)."""
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from huggingface_hub import constants

    if "HF_ENDPOINT" in env:
        endpoint = env["HF_ENDPOINT"].rstrip("/")
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", env.get("HF_HUB_OFFLINE") == "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    if "HF_HOME" in env:
        monkeypatch.setattr(constants, "HF_HOME", env["HF_HOME"])
        monkeypatch.setattr(constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", env["HF_TOKEN_PATH"])
        monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(Path(env["HF_HOME"]) / "stored_tokens"))
        monkeypatch.setattr(constants, "HF_ASSETS_CACHE", env["HF_ASSETS_CACHE"])
    try:  # `datasets` reads its own copies at import time
        import datasets.config as dconfig

        if "HF_ENDPOINT" in env:
            monkeypatch.setattr(dconfig, "HF_ENDPOINT", env["HF_ENDPOINT"].rstrip("/"))
        monkeypatch.setattr(dconfig, "HF_HUB_OFFLINE", env.get("HF_HUB_OFFLINE") == "1")
        if "HF_DATASETS_CACHE" in env:
            monkeypatch.setattr(dconfig, "HF_DATASETS_CACHE", Path(env["HF_DATASETS_CACHE"]))
    except ImportError:
        pass


def closed_port_url() -> str:
    """An endpoint nothing listens on: 'the Hub is down' (connection refused at once)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------- pytest fixtures

try:
    import pytest
except ImportError:  # used from a bench script without pytest
    pytest = None

if pytest is not None:
    @pytest.fixture
    def local_hub(tmp_path):
        """A running local Hub with no repos yet (add them with `add_model`/`add_dataset`)."""
        with HubServer(tmp_path / "hub-repos") as hub:
            yield hub

    @pytest.fixture
    def use_hub(tmp_path, monkeypatch):
        """`use_hub(hub_or_url, offline=False)`: point this process (and the environment
        subprocesses inherit) at that Hub with a private HF cache; returns the env dict."""
        def apply(hub, offline: bool = False) -> dict[str, str]:
            url = hub.url if isinstance(hub, HubServer) else hub
            env = hub_env(url, tmp_path / "hf-home", offline=offline)
            apply_hub_env(monkeypatch, env)
            return env
        return apply

    @pytest.fixture
    def fresh_hub_cache():
        """droidft's cached Hub answers forgotten before and after: each test asks its own Hub."""
        from droidft.models import hub

        hub.forget_cache()
        yield
        hub.forget_cache()


if __name__ == "__main__":  # python tests/hub_server.py ROOT [PORT]: serve a folder by hand
    import sys

    hub = HubServer(sys.argv[1], port=int(sys.argv[2]) if len(sys.argv) > 2 else 0).start()
    print(hub.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        hub.stop()
