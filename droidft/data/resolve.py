"""What a user typed or picked ('demo', a folder, a .jsonl file) -> a dataset path, or a
DataError that says why not and what to do."""

from __future__ import annotations

import os
from pathlib import Path

from .. import paths
from .formats import DEMO_FOLDERS, METHOD_FORMATS, DataError, normalize_method
from .samples import sample_data

def _demo_dir(method: str | None) -> Path:
    fmt = "chat"
    if method is not None:
        fmt = DEMO_FOLDERS.get(METHOD_FORMATS[normalize_method(method)][0], "chat")
    return paths.DATA_DIR / "demo" / fmt


def resolve_dataset(data: str | os.PathLike, method: str | None = None) -> Path:
    """Turn what a user typed or picked into a dataset path, or say clearly why not.

    ``"demo"`` is the bundled demo set (``data/demo/chat``; ``data/demo/grpo`` or
    ``data/demo/preference`` when ``method`` needs those), generated on first use.
    A folder must hold ``train.jsonl``. A single ``.jsonl`` file is returned as is: it is
    treated as the train split, and validate_dataset will ask for a validation split.
    """
    if data is None or (isinstance(data, str) and not data.strip()):
        raise DataError("no dataset given: pick a folder with train.jsonl and valid.jsonl, or 'demo'")
    if isinstance(data, str) and data.strip().lower() == "demo":
        target = _demo_dir(method)
        if not (target / "train.jsonl").is_file():
            m = method or "sft"
            try:
                sample_data(m, target)
            except OSError:  # read-only install: build it in the state folder instead
                target = paths.home() / "demo" / target.name
                if not (target / "train.jsonl").is_file():
                    sample_data(m, target)
        return target
    raw = str(data).strip() if isinstance(data, str) else data
    if "\x00" in str(raw):
        raise DataError(f"{str(data)!r} is not a usable path (it contains a NUL character)")
    p = Path(raw).expanduser()
    try:
        exists = p.exists()
    except (OSError, ValueError) as e:  # e.g. embedded NUL, name too long
        raise DataError(f"{str(data)!r} is not a usable path ({e})") from None
    if not exists:
        parent_hint = ""
        if p.suffix == "" and p.with_suffix(".jsonl").is_file():
            parent_hint = f" (did you mean {p.with_suffix('.jsonl')}?)"
        raise DataError(
            f"dataset not found: {p}{parent_hint}. Give a folder holding train.jsonl and "
            "valid.jsonl, a single .jsonl file, or 'demo'."
        )
    if p.is_dir():
        if (p / "train.jsonl").is_file():
            return p
        if (p / "train.jsonl").exists():
            raise DataError(f"{p / 'train.jsonl'} is not a regular file")
        try:
            present = sorted(x.name for x in p.iterdir() if x.is_file())
        except OSError as e:
            raise DataError(f"cannot read the folder {p}: {e}") from None
        jsonl = [n for n in present if n.endswith(".jsonl")]
        if jsonl:
            hint = (
                f" It holds {', '.join(jsonl[:5])}: rename the training file to train.jsonl, "
                f"or run split_dataset on {jsonl[0]} to make train.jsonl and valid.jsonl."
            )
        elif any(n in ("train.json", "train.csv", "train.parquet") for n in present):
            hint = " It holds train in another format: convert it to JSON Lines (one JSON object per line) named train.jsonl."
        elif present:
            hint = f" It holds {', '.join(present[:5])}{'...' if len(present) > 5 else ''}."
        else:
            hint = " The folder is empty."
        raise DataError(f"{p} has no train.jsonl.{hint}")
    if p.is_file():
        if p.suffix.lower() != ".jsonl":
            extra = ""
            if p.suffix.lower() == ".json":
                extra = " A .json file holding one array must become one object per line (JSON Lines)."
            raise DataError(
                f"{p.name} is not a .jsonl file: datasets are JSON Lines files (.jsonl), one JSON "
                f"object per line.{extra}"
            )
        return p
    raise DataError(f"{p} is neither a file nor a folder")
