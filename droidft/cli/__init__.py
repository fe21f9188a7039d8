"""`droidft ...`: the same engine from a shell.

Every command prints plain text (or JSON with --json); `train` and `resume` print
the run id as their last line. Bad input exits non-zero with one clear line.

One module per command group, each with `add_commands(subparsers)`:
models (demo-model, models ...), train (train METHOD), data (sample-data, data import), rewards, inference
(generate, compare), fusion (fuse), evaluate (eval), export, security (set-password, unlock), serve (the
dashboard), runs (runs, show, metrics, logs, stop, resume, command), queue (queue, settings), sweep (sweep).
`python -m droidft.cli` runs `main`.
"""

from __future__ import annotations

import argparse
import sys

from .. import store
from . import data, evaluate, export, fusion, inference, models, queue, rewards, runs, security, serve, sweep, train

EXIT_BAD_INPUT = 2
# Commands that run MLX in this process (not in a worker) and so want OpenBLAS on Linux.
COMPUTE_COMMANDS = {"generate", "compare", "fuse", "eval", "export"}  # demo-model builds in its own OpenBLAS child
# The order `droidft --help` lists them in.
COMMAND_GROUPS = (models, train, data, rewards, inference, fusion, evaluate, export, security, serve, runs,
                  queue, sweep)
# Groups whose options come from importing every training method (mlx-lm, transformers).
HEAVY_GROUPS = (train, sweep)


def _other_commands() -> set[str]:
    """The command names of every group but the heavy ones (cheap to build)."""
    sub = argparse.ArgumentParser().add_subparsers()
    for group in COMMAND_GROUPS:
        if group not in HEAVY_GROUPS:
            group.add_commands(sub)
    return set(sub.choices)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole CLI; given the arguments of a command that is not `train` or `sweep`, without
    those groups, whose options come from importing every training method (mlx-lm, transformers:
    seconds that `droidft runs` or `droidft models search` need not wait)."""
    skip_heavy = bool(argv) and argv[0] in _other_commands()
    parser = argparse.ArgumentParser(prog="droidft", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        if not (skip_heavy and group in HEAVY_GROUPS):
            group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..blas import reexec_with_openblas
    from ..config import ConfigError

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    if args.command in COMPUTE_COMMANDS:
        reexec_with_openblas(argv)
    try:
        return args.func(args) or 0
    except ConfigError as exc:
        print("droidft: invalid config: " + "; ".join(exc.problems), file=sys.stderr)
    except store.StoreBusy as exc:
        print(f"droidft: {exc}", file=sys.stderr)
    except (ValueError, KeyError, FileNotFoundError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"droidft: {message}", file=sys.stderr)
    except KeyboardInterrupt:
        print("droidft: interrupted", file=sys.stderr)
        return 130
    return EXIT_BAD_INPUT
