"""One .jsonl file -> a dataset folder with train/valid[/test].jsonl, shuffled with a seed."""

from __future__ import annotations

import os
import random
from pathlib import Path

from .formats import SPLITS, DataError, detect_format, methods_for_format
from .jsonl import load_rows, split_file, write_jsonl
from .validate import DatasetReport, validate_dataset

def split_dataset(
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.0,
    seed: int = 0,
    *,
    method: str | None = None,
    overwrite: bool = False,
) -> DatasetReport:
    """One .jsonl file (or a folder's train.jsonl) -> a folder with train/valid[/test].jsonl.

    Rows are shuffled with ``seed`` and keep their original order inside each split; blank
    lines are dropped and every row is re-written as clean UTF-8 JSON. At least one row goes
    to each requested split. Existing split files in ``out_dir`` are only replaced when
    ``overwrite`` is set or the file is ``src`` itself (splitting a train.jsonl in place).
    Returns the validation report of the result (for ``method``, else one that fits the data).
    """
    if not (0.0 <= valid_fraction < 1.0) or not (0.0 <= test_fraction < 1.0):
        raise DataError("valid_fraction and test_fraction must be between 0 and 1")
    if valid_fraction + test_fraction >= 1.0:
        raise DataError("valid_fraction + test_fraction must leave some rows for training (sum < 1)")
    src_p = Path(src).expanduser()
    if not src_p.exists():
        raise DataError(f"file not found: {src_p}")
    if src_p.is_dir():
        src_p = split_file(src_p, "train")
    if src_p.suffix.lower() != ".jsonl":
        raise DataError(f"{src_p.name} is not a .jsonl file (one JSON object per line)")
    rows = load_rows(src_p)
    parts = split_indices(len(rows), valid_fraction, test_fraction, seed, name=src_p.name)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder")
    if not overwrite:
        clash = [s for s in SPLITS if (out / f"{s}.jsonl").exists()
                 and (out / f"{s}.jsonl").resolve() != src_p.resolve()]
        if clash:
            raise DataError(
                f"{out} already holds {', '.join(c + '.jsonl' for c in clash)}; pick an empty "
                "folder or pass overwrite=True"
            )
    for split, idx in parts.items():
        if idx:
            write_jsonl(out / f"{split}.jsonl", [rows[i] for i in idx])
    if not parts["test"] and (out / "test.jsonl").exists() and (out / "test.jsonl").resolve() != src_p.resolve():
        os.unlink(out / "test.jsonl")  # a stale test split from an earlier run would mislead
    if method is None:
        fmt = detect_format(rows[parts["train"][0]])
        method = methods_for_format(fmt)[0] if fmt else "sft"
    return validate_dataset(out, method=method)


def split_indices(n: int, valid_fraction: float, test_fraction: float, seed: int = 0, *,
                  name: str = "the data") -> dict[str, list[int]]:
    """Row numbers (0-based, ascending) for train, valid and test: shuffled with ``seed``, at
    least one row in each requested split; DataError when ``n`` rows are too few."""
    n_valid = max(1, round(n * valid_fraction)) if valid_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n - n_valid - n_test < 1:
        raise DataError(
            f"{name} has {n} row{'s' if n != 1 else ''}: too few to split into "
            f"{'train, valid and test' if n_test else 'train and valid'}; add rows"
        )
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return {"train": sorted(order[n_valid + n_test:]), "valid": sorted(order[:n_valid]),
            "test": sorted(order[n_valid:n_valid + n_test])}
