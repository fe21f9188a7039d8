"""The datasets a user keeps under the droidft home: safe names for uploaded files, uploads
stored as dataset folders, and the list the dashboard's pickers offer."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

from .. import paths
from .formats import DataError

_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                     *(f"lpt{i}" for i in range(1, 10))}


def safe_filename(name: Any, default: str = "upload") -> str:
    """A harmless file name for an uploaded file: no folders, no traversal, no odd chars.

    "../../etc/passwd" -> "passwd"; "my data (1).jsonl" -> "my_data_1.jsonl";
    "données.jsonl" -> "donnees.jsonl". Never empty, never hidden (no leading dot), never a
    Windows device name, at most 128 characters with the extension kept.
    """
    s = "" if name is None else str(name)
    s = s.replace("\x00", "")
    s = re.split(r"[\\/]", s)[-1]  # the last path component, for / and \ alike
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii")
    stem, dot, ext = s.rpartition(".")
    if not dot or not re.fullmatch(r"[A-Za-z0-9]{1,16}", ext):
        stem, ext = s, ""

    def clean(part: str) -> str:
        part = re.sub(r"[^A-Za-z0-9._-]+", "_", part)
        part = re.sub(r"\.{2,}", ".", part)
        return re.sub(r"_+", "_", part).strip("._- ")

    stem, ext = clean(stem), ext.lower() if ext.lower() in ("jsonl", "json", "csv", "txt") else ext
    if not stem:
        stem = default
    if stem.split(".")[0].lower() in _WINDOWS_RESERVED:
        stem = "_" + stem
    room = 128 - (len(ext) + 1 if ext else 0)
    stem = stem[:room].rstrip("._-") or default
    return f"{stem}.{ext}" if ext else stem


def datasets_dir() -> Path:
    """Where datasets uploaded, generated or split in the dashboard are kept."""
    path = paths.home() / "datasets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def list_datasets() -> list[dict]:
    """Datasets to pick from: the built-in demo, then folders under the home's datasets
    folder (newest first). Each: {name, path, source}."""
    out = [{"name": "demo", "path": "demo", "source": "built-in"}]
    root = datasets_dir()
    found = [p for p in root.iterdir() if p.is_dir() and (p / "train.jsonl").is_file()]
    for path in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True):
        out.append({"name": path.name, "path": str(path), "source": "yours"})
    return out


def unique_path(root: Path, name: str, default: str = "output") -> Path:
    """root/<name made safe>, with -2, -3... appended while that exists (not created)."""
    base = safe_filename(name or default, default=default).replace(".", "_")
    path, n = Path(root) / base, 2
    while path.exists():
        path, n = Path(root) / f"{base}-{n}", n + 1
    return path


def new_dataset_dir(name: str) -> Path:
    """A fresh, empty folder for a dataset called `name`."""
    path = unique_path(datasets_dir(), name, default="dataset")
    path.mkdir(parents=True)
    return path


def save_uploads(files: list[tuple[str, bytes]], name: str, max_bytes: int = 200 * 2**20) -> Path:
    """Store uploaded .jsonl files as a dataset folder. Files named train/valid/test keep
    their split; a single other file becomes train.jsonl (split it afterwards)."""
    if not files:
        raise DataError("no file uploaded: choose one .jsonl file, or train.jsonl and valid.jsonl")
    named = []
    for raw_name, content in files:
        fname = safe_filename(raw_name)
        if not fname.lower().endswith(".jsonl"):
            raise DataError(f"{fname} is not a .jsonl file: datasets are JSON Lines, one JSON "
                            "object per line")
        if len(content) > max_bytes:
            raise DataError(f"{fname} is {len(content) / 2**20:.0f} MB; the limit is "
                            f"{max_bytes / 2**20:.0f} MB")
        named.append((fname, content))
    splits = {Path(n).stem.lower(): c for n, c in named}
    if len(named) > 1 and not set(splits) <= {"train", "valid", "test"}:
        raise DataError("several files must be named train.jsonl, valid.jsonl (and test.jsonl); "
                        "or upload one file and split it")
    if "train" not in splits and len(named) > 1:
        raise DataError("the upload has no train.jsonl")
    folder = new_dataset_dir(name or Path(named[0][0]).stem)
    if len(named) == 1 and "train" not in splits:
        (folder / "train.jsonl").write_bytes(named[0][1])
    else:
        for split, content in splits.items():
            (folder / f"{split}.jsonl").write_bytes(content)
    return folder
