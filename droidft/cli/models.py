"""`droidft demo-model` and `droidft models list | search | pull | rm | downloads | cancel`.

`models pull` runs the same download job the Models page starts (a row in DuckDB, resumable),
here in the foreground like `hf download`, with a progress line on stderr, and prints the local
model folder as its last line; Ctrl-C cancels it (a later pull resumes), `--detach` leaves it
running in the background. Failures are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import sys
import time

from .common import print_json


def cmd_demo_model(args) -> int:
    from ..models.demo import build_demo_model, demo_model_path

    if args.force:  # rebuild a local copy from the recipe (data/models/), e.g. to compare
        print(build_demo_model(force=True, log=lambda m: print(m, file=sys.stderr)))
    else:
        print(demo_model_path())
    if args.warm:
        from ..kernels import warm

        try:
            warm(log=lambda m: print(f"droidft: {m}", file=sys.stderr))
        except Exception as exc:  # a slow first run is not worth failing the install for
            print(f"droidft: {exc} (the first fine-tune will compile them instead)", file=sys.stderr)
    return 0


def cmd_list(args) -> int:
    import dataclasses

    from ..models import discover_models
    from ..models.tables import local_rows

    found = [dataclasses.asdict(m) for m in discover_models()]
    if args.json:
        print_json(found)
        return 0
    rows = local_rows(found)
    cols = ["Model", "Where", "Architecture", "Parameters", "Quantisation", "Size on disk"]
    _table([[r[c] for c in cols] for r in rows], cols)
    return 0


def _table(rows: list[list], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for line in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())


def cmd_search(args) -> int:
    from ..models.hub import search_models
    from ..models.tables import hub_rows

    result = search_models(args.query or "", sort=args.sort, mlx_only=args.mlx, limit=args.limit)
    if args.json:
        print_json([m.to_dict() for m in result.models])
        return 0
    if not result.models:
        print("No text-generation models match.", file=sys.stderr)
        return 0
    cols = ["Model", "Downloads", "Updated", "Parameters", "Quantisation", "Size", "Licence", "Gated"]
    _table([[r[c] for c in cols] for r in hub_rows(result.models)], cols)
    return 0


def _progress_line(job: dict) -> str:
    from ..models.download import progress_view

    view = progress_view(job)
    phase = job.get("phase") if job.get("status") == "running" and job.get("phase") != "downloading" else None
    return f"{job['repo_id']}: {view.fraction * 100:5.1f}% {view.text}" + (f" ({phase})" if phase else "")


def cmd_pull(args) -> int:
    from ..models import download

    if args.detach:
        print(download.start(args.repo, quantize_bits=args.quantize))
        return 0
    from ..models.fetch import pull

    tty = sys.stderr.isatty()
    last = [0.0, ""]

    def show(job: dict) -> None:
        line = _progress_line(job)
        now = time.monotonic()
        if tty:
            print("\r" + line.ljust(100), end="", file=sys.stderr, flush=True)
        elif line != last[1] and (now - last[0] >= 2.0 or job["status"] in download.TERMINAL):
            print(line, file=sys.stderr, flush=True)  # a log, not a flood
            last[:] = [now, line]

    job = pull(args.repo, quantize_bits=args.quantize, on_progress=show)
    if tty:
        print(file=sys.stderr)
    if job["status"] == "cancelled":
        print(f"droidft: cancelled; `droidft models pull {args.repo}` resumes it", file=sys.stderr)
        return 130
    if job["status"] != "completed":
        print(f"droidft: {job.get('error') or job['status']}", file=sys.stderr)
        return 1
    print(job["path"])
    return 0


def cmd_rm(args) -> int:
    from ..models.download import remove

    print(f"removed {remove(args.model)}")
    return 0


def cmd_downloads(args) -> int:
    from ..models.download import list_jobs

    jobs = list_jobs(limit=args.limit)
    if args.json:
        print_json(jobs)
        return 0
    _table([[j["id"], j["status"], _progress_line(j), j.get("error") or ""] for j in jobs],
           ["Download", "Status", "Progress", "Error"])
    return 0


def cmd_cancel(args) -> int:
    from ..models.download import cancel, wait

    cancel(args.job)
    job = wait(args.job, timeout=30)
    print(f"{args.job} {job['status']}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("demo-model", help="print the demo model folder (shipped in data/droidft-demo)")
    p.add_argument("--force", action="store_true",
                   help="rebuild it from its recipe into data/models/ (1-2 minutes)")
    p.add_argument("--warm", action="store_true",
                   help="also compile MLX's CPU kernels for the demo fine-tune now, if not cached "
                        "(the README's first command does; about 20 s once)")
    p.set_defaults(func=cmd_demo_model)
    p = sub.add_parser("models", help="models on this machine and on the Hugging Face Hub")
    msub = p.add_subparsers(dest="models_command", required=True)
    q = msub.add_parser("list", help="models on this machine (demo, droidft's, HF cache, LM Studio)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)
    q = msub.add_parser("search", help="search the Hugging Face Hub (text-generation models)")
    q.add_argument("query", nargs="?", default="")
    q.add_argument("--sort", choices=["downloads", "recent", "likes", "trending"], default="downloads")
    q.add_argument("--mlx", action="store_true", help="MLX-ready repos only (e.g. mlx-community)")
    q.add_argument("--limit", type=int, default=30)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_search)
    q = msub.add_parser("pull", help="download a model into the Hugging Face cache (prints its folder last)")
    q.add_argument("repo", metavar="REPO[@REVISION]")
    q.add_argument("--quantize", type=int, choices=[2, 3, 4, 5, 6, 8], default=None,
                   help="also convert it to an MLX model at this many bits (mlx-lm convert)")
    q.add_argument("--detach", action="store_true",
                   help="download in the background (like the Models page); prints the download id")
    q.set_defaults(func=cmd_pull)
    q = msub.add_parser("rm", help="delete a pulled model, or one droidft made")
    q.add_argument("model")
    q.set_defaults(func=cmd_rm)
    q = msub.add_parser("downloads", help="download jobs, newest first")
    q.add_argument("--limit", type=int, default=20)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_downloads)
    q = msub.add_parser("cancel", help="cancel a download (a later pull resumes it)")
    q.add_argument("job")
    q.set_defaults(func=cmd_cancel)
