"""`droidft fuse`: adapters fused into one adapter or a full model (linear, ties, dare)."""

from __future__ import annotations

from .common import floats, print_json, split_list


def cmd_fuse(args) -> int:
    from .. import fusion

    adapters = split_list(args.adapters)
    if len(adapters) < 1:
        raise fusion.FusionError("--adapters needs at least one adapter (run ids or folders, comma-separated)")
    result = fusion.fuse(
        adapters, floats(args.weights, "--weights"), out=args.out, to=args.to, method=args.method,
        rank=args.rank, layer_weights=args.layer_weights, model=args.model, density=args.density,
        normalize=not args.no_normalize, ties_sign=args.ties_sign, seed=args.seed,
        allow_any_sum=args.allow_any_sum, keep_quantization=args.keep_quantization,
        overwrite=args.overwrite)
    if args.json:
        d = result.to_dict()
        d.pop("layers", None)
        print_json(d)
        return 0
    what = "adapter" if result.to == "adapter" else "model"
    print(f"fused {len(adapters)} adapter(s) ({result.method}) into a new {what}: {result.out}")
    if result.retained_energy:
        e = result.retained_energy
        print(f"rank {result.provenance['rank']}: retained energy {e['total']:.4f} overall, "
              f"{e['min']:.4f} in the worst layer")
    print(f"{result.seconds:.2f} s, {result.gb_per_s:.3f} GB/s; artifact {result.artifact_id}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("fuse", help="fuse adapters into one adapter or a full model")
    p.add_argument("--adapters", required=True, help="comma-separated run ids or adapter folders")
    p.add_argument("--weights", help="one weight per adapter, e.g. 0.7,0.3 (default equal)")
    p.add_argument("--layer-weights", metavar="FILE.json",
                   help="per-layer weights: {\"table\": [...]} | {\"ranges\": [...]} | {\"linear\": {...}}")
    p.add_argument("--method", choices=["linear", "ties", "dare"], default="linear")
    p.add_argument("--density", type=float, help="ties/dare: fraction of each update kept (default 0.5)")
    p.add_argument("--no-normalize", action="store_true", help="ties: sum agreeing updates instead of averaging")
    p.add_argument("--ties-sign", action="store_true", help="dare: elect signs as TIES does (DARE-TIES)")
    p.add_argument("--seed", type=int, default=0, help="dare: random seed of the drop mask")
    p.add_argument("--rank", type=int, help="rank of a fused adapter (default: sum of input ranks)")
    p.add_argument("--to", choices=["adapter", "model"], default="adapter")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", help="the base model (default: the one the adapters were trained on)")
    p.add_argument("--allow-any-sum", action="store_true",
                   help="weights need not sum to 1 (add or subtract updates)")
    p.add_argument("--keep-quantization", action="store_true",
                   help="--to model on a quantised base: re-quantise fused layers instead of de-quantising")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fuse)
