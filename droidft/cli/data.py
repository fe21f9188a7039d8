"""Dataset commands.

- `droidft sample-data METHOD --out DIR`: a small valid train/valid/test set for any method.
- `droidft data import SOURCE --name NAME [--map COLUMN=FIELD ...] [--split 90/10]`: SOURCE is
  a local .jsonl/.json/.csv/.parquet file or a Hub dataset id (``owner/name`` with
  ``--config``, ``--source-split``, ``--revision``). Progress goes to stderr; the new dataset
  folder is the last line on stdout. A failure is one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys

EXIT_BAD_INPUT = 2


def cmd_sample_data(args) -> int:
    from .. import data

    out = data.sample_data(args.method, args.out, n_train=args.train_rows, n_valid=args.valid_rows,
                           seed=args.seed)
    report = data.validate_dataset(out, method=args.method)
    print(report.summary(), file=sys.stderr)
    print(out)
    return 0 if report.ok else 1


def add_commands(sub) -> None:
    p = sub.add_parser("sample-data", help="write a small valid train/valid/test set for a method")
    from .. import methods

    p.add_argument("method", help="any training method: " + ", ".join(m.name for m in methods.available()))
    p.add_argument("--out", required=True, help="folder to write train.jsonl, valid.jsonl, test.jsonl into")
    p.add_argument("--train-rows", type=int, default=40)
    p.add_argument("--valid-rows", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample_data)
    add_import_command(sub)


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _one_line(exc: Exception) -> str:
    """A DataError as one line: its headline, plus the first listed problem when it has more."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    problems = getattr(exc, "problems", None) or []
    errors = [p for p in problems if getattr(p, "level", "error") == "error"]
    if len(lines) > 1 and errors:
        more = len(errors) - 1
        return f"{errors[0]}" + (f" (and {more} more problem{'s' if more != 1 else ''})" if more else "")
    return lines[0]


def cmd_data_import(args) -> int:
    from ..data import FORMAT_LABELS, DataError
    from ..data import imports, mapping

    try:
        valid, test = imports.parse_split(args.split)
        if args.limit is not None and args.limit < 1:
            raise DataError("--limit must be at least 1")
        source = imports.read_source(args.source, config=args.config, split=args.source_split,
                                     revision=args.revision, limit=args.limit)
        _say(f"read {len(source.rows)} rows from {source.label}: columns {', '.join(source.columns[:12])}")
        if args.map:
            cmap = mapping.parse_map(args.map, source.columns, fmt=args.format, method=args.method)
        else:
            cmap = mapping.auto_map(source.columns, fmt=args.format, method=args.method)
        schema = mapping.SCHEMA_LABELS.get(cmap.schema or "", "your mapping")
        _say(f"{schema} -> {FORMAT_LABELS[cmap.format]}: {cmap.describe()}")
        if args.preview:
            for item in imports.preview(source, cmap, n=args.preview):
                shown = item["error"] and f"ERROR {item['error']}" or json.dumps(item["mapped"], ensure_ascii=False)
                print(f"row {item['row']}: {shown}")
            return 0
        result = imports.import_dataset(source, cmap, args.name, method=args.method, valid_fraction=valid,
                                        test_fraction=test, seed=args.seed, drop_bad=args.drop_bad_rows)
    except DataError as exc:
        _say(f"droidft: {_one_line(exc)}")
        return EXIT_BAD_INPUT
    rows = result.provenance["rows"]
    if rows["dropped"]:
        _say(f"left out {rows['dropped']} rows that cannot be used (listed in provenance.json)")
    for note in result.notes[:5]:
        _say(f"note: {note}")
    if len(result.notes) > 5:
        _say(f"... and {len(result.notes) - 5} more notes")
    _say(f"saved {rows['imported']} rows: " + ", ".join(f"{s} {rows[s]}" for s in ("train", "valid", "test") if rows[s])
         + f"; ready for {result.report.method}")
    print(result.path)
    return 0


def add_import_command(subparsers) -> None:
    from ..data import FORMATS, METHOD_FORMATS
    from ..data.mapping import FIELDS

    p = subparsers.add_parser("data", help="datasets: import from a file or the Hugging Face Hub")
    sub = p.add_subparsers(dest="data_command", required=True)
    p = sub.add_parser("import", help="import a .jsonl/.json/.csv/.parquet file or a Hub dataset as a dataset",
                       description="Import SOURCE (a local file, or a Hub dataset id owner/name) as a droidft "
                                   "dataset: columns mapped to a droidft format, rows checked, split, saved "
                                   "with provenance.json. Prints the new dataset folder last.")
    p.add_argument("source", help="a .jsonl, .json, .csv or .parquet file, or a Hub dataset id (owner/name)")
    p.add_argument("--name", required=True, help="name of the new dataset (a folder under the droidft home)")
    p.add_argument("--map", action="append", metavar="COLUMN=FIELD",
                   help=f"feed a column into a field ({', '.join(FIELDS)}); repeat it; two columns to one "
                        "field are joined with a blank line. Without --map, known schemas are detected")
    p.add_argument("--format", choices=FORMATS, help="the droidft row format to produce")
    p.add_argument("--method", choices=list(METHOD_FORMATS), help="the training method the data is for "
                   "(rows are checked for it; picks the format when it trains on one)")
    p.add_argument("--split", metavar="TRAIN/VALID[/TEST]", default="90/10",
                   help="percent of rows for train, valid and test (default 90/10)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed for the split")
    p.add_argument("--config", help="Hub: the dataset's config (subset)")
    p.add_argument("--source-split", help="Hub: the split to read (default train; slices like train[:1000] work)")
    p.add_argument("--revision", help="Hub: a branch, tag or commit (default main)")
    p.add_argument("--limit", type=int, help="read only the first LIMIT rows")
    p.add_argument("--drop-bad-rows", action="store_true",
                   help="leave out rows that cannot be used instead of stopping (listed in provenance.json)")
    p.add_argument("--preview", type=int, nargs="?", const=5, metavar="N",
                   help="show the first N mapped rows and stop without saving")
    p.set_defaults(func=cmd_data_import)
