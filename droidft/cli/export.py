"""`droidft export SOURCE --to TARGET`: the export step from a shell (see droidft.export)."""

from __future__ import annotations

import json
import sys
import time


def _progress():
    """One line that rewrites itself on a terminal; a line per 10% otherwise."""
    tty = sys.stderr.isatty()
    state = {"last": -1, "t0": time.monotonic()}

    def report(done: float, total: float, what: str) -> None:
        pct = int(100 * done / total) if total else 100
        if tty:
            print(f"\r{pct:3d}% {what[:70]:<70}", end="", file=sys.stderr, flush=True)
        elif pct // 10 != state["last"] // 10 or pct == 100:
            print(f"{pct:3d}% {what}", file=sys.stderr, flush=True)
        state["last"] = pct
    return report


def cmd_export(args) -> int:
    from ..export import export

    quantize = None if args.quantize in (None, "none") else int(args.quantize)
    result = export(args.source, args.to, out=args.out, name=args.name, quantize=quantize,
                    repo_id=args.repo or (args.name if args.to == "hub" else None), upload=args.upload,
                    private=not args.public, update=args.update, overwrite=args.overwrite,
                    progress=None if args.json else _progress())
    if sys.stderr.isatty() and not args.json:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(result.where)
    for note in result.notes:
        print(f"note: {note}")
    for f in result.files:
        size = f"{f['bytes'] / 1e6:.1f} MB" if f.get("bytes") else ""
        print(f"  {f['name']}  {size}")
    if result.artifact_id:
        print(f"recorded as {result.artifact_id} ({result.seconds:.1f} s)")
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a run, fused result or adapter: gguf, ollama, mlx, lmstudio, peft, hub",
        description="Export SOURCE (a run id, a fusion artifact id or folder, an adapter folder) with a "
                    "model card. gguf: llama.cpp file (f16; --quantize 8 = q8_0, 4 = q4_0); ollama: GGUF + "
                    "Modelfile; mlx: fused MLX folder; lmstudio: that folder in LM Studio's models folder "
                    "(DROIDFT_LMSTUDIO_MODELS overrides it); peft: the LoRA adapter for transformers/vLLM; "
                    "hub: upload (private unless --public) with the token from HF_TOKEN or `hf auth login`.")
    p.add_argument("source", help="run id, artifact id, adapter folder, fused model folder (hub: also an "
                                  "earlier export's folder or artifact id)")
    p.add_argument("--to", required=True, choices=["gguf", "ollama", "mlx", "lmstudio", "peft", "hub"])
    p.add_argument("--out", help="output folder (default <home>/exports/NAME-TARGET; lmstudio: LM Studio's)")
    p.add_argument("--name", help="name of the export (hub: USER/NAME of the repo)")
    p.add_argument("--quantize", choices=["4", "8", "none"], help="bits: MLX re-quantisation or GGUF q4_0/q8_0")
    p.add_argument("--repo", help="hub: USER/NAME (default --name)")
    p.add_argument("--upload", default="mlx", choices=["mlx", "peft", "gguf", "ollama"],
                   help="hub: what to upload when SOURCE is a run or adapter (default mlx)")
    p.add_argument("--public", action="store_true", help="hub: make the repo public (default private)")
    p.add_argument("--update", action="store_true", help="hub: add a commit to an existing repo")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)
