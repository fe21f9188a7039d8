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
    n = len(rows)
    n_valid = max(1, round(n * valid_fraction)) if valid_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n - n_valid - n_test < 1:
        raise DataError(
            f"{src_p.name} has {n} row{'s' if n != 1 else ''}: too few to split into "
            f"{'train, valid and test' if n_test else 'train and valid'}; add rows"
        )
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
    order = list(range(n))
    random.Random(seed).shuffle(order)
    valid_idx = sorted(order[:n_valid])
    test_idx = sorted(order[n_valid:n_valid + n_test])
    train_idx = sorted(order[n_valid + n_test:])
    write_jsonl(out / "train.jsonl", [rows[i] for i in train_idx])
    if n_valid:
        write_jsonl(out / "valid.jsonl", [rows[i] for i in valid_idx])
    if n_test:
        write_jsonl(out / "test.jsonl", [rows[i] for i in test_idx])
    elif (out / "test.jsonl").exists() and (out / "test.jsonl").resolve() != src_p.resolve():
        os.unlink(out / "test.jsonl")  # a stale test split from an earlier run would mislead
    if method is None:
        fmt = detect_format(rows[train_idx[0]])
        method = methods_for_format(fmt)[0] if fmt else "sft"
    return validate_dataset(out, method=method)
