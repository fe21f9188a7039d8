"""Per-layer fusion weights: which weight each adapter gets in each transformer layer, from
global weights, a full table, layer ranges or a linear schedule; every row validated."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Sequence

from .maths import FusionError

_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")
SUM_TOLERANCE = 1e-4


def layer_index(module: str) -> int | None:
    m = _LAYER_RE.search(module)
    return int(m.group(1)) if m else None


def read_layer_weights(source) -> dict | list | None:
    """A layer-weights spec from a dict/list, a JSON string, or a .json file."""
    if source is None or isinstance(source, (dict, list)):
        return source
    text = str(source)
    path = Path(text).expanduser()
    try:
        if path.is_file():
            return json.loads(path.read_text())
        if text.lstrip().startswith(("{", "[")):
            return json.loads(text)
    except (OSError, ValueError) as exc:
        raise FusionError(f"Cannot read the layer weights {text}: {exc}") from None
    raise FusionError(f"Layer weights file {text} does not exist.")


def _parse_layers(value, n_layers: int) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    elif isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*(-\s*-?\d+\s*)?", value):
        a, _, b = value.strip().partition("-")
        lo, hi = int(a), int(b) if b else int(a)
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        lo, hi = value
    else:
        raise FusionError(f"Layer range {value!r} is not understood: use \"0-7\", [0, 7] or 3.")
    if lo < 0:
        lo += n_layers
    if hi < 0:
        hi += n_layers
    if not (0 <= lo <= hi < n_layers):
        raise FusionError(f"Layer range {value!r} is outside layers 0-{n_layers - 1} of the model.")
    return list(range(lo, hi + 1))


def check_weights_row(row, n_adapters: int, where: str, allow_any_sum: bool) -> list[float]:
    if not isinstance(row, (list, tuple)) or len(row) != n_adapters:
        got = len(row) if isinstance(row, (list, tuple)) else type(row).__name__
        raise FusionError(f"{where}: {n_adapters} weights expected (one per adapter), got {got}.")
    vals = []
    for v in row:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise FusionError(f"{where}: weight {v!r} is not a finite number.")
        vals.append(float(v))
    total = sum(vals)
    if not allow_any_sum and abs(total - 1.0) > SUM_TOLERANCE:
        raise FusionError(f"{where}: weights {vals} sum to {total:.4g}, not 1. Weighted fusion "
                          "averages updates; to add or subtract updates (task arithmetic) allow "
                          "any sum (--allow-any-sum).")
    return vals


def layer_weight_table(spec, n_adapters: int, n_layers: int, weights: Sequence[float] | None = None,
                       allow_any_sum: bool = False) -> list[list[float]]:
    """Per-layer weights, one row per layer, one column per adapter, from:

    - a table: `{"table": [[w_A, w_B], ...]}` (one row per layer) or a bare list of rows;
    - ranges: `{"ranges": [{"layers": "0-7", "weights": [0.8, 0.2]}, ...]}`, layers not
      covered taking the global `weights` (refused when there are none);
    - a linear schedule: `{"linear": {"start": [1, 0], "end": [0, 1]}}` from the first to
      the last layer.
    Every row is validated: length, finite numbers, and a sum of 1 unless allow_any_sum."""
    if spec is None:
        if weights is None:
            raise FusionError("No weights given.")
        row = check_weights_row(list(weights), n_adapters, "weights", allow_any_sum)
        return [row for _ in range(n_layers)]
    if isinstance(spec, list):
        spec = {"table": spec}
    if not isinstance(spec, dict):
        raise FusionError("Layer weights must be a JSON object with 'table', 'ranges' or 'linear'.")
    kinds = [k for k in ("table", "ranges", "linear") if k in spec]
    unknown = sorted(set(spec) - {"table", "ranges", "linear", "comment"})
    if len(kinds) != 1 or unknown:
        raise FusionError("Layer weights need exactly one of 'table', 'ranges' or 'linear'"
                          + (f" (unknown keys: {', '.join(unknown)})" if unknown else "") + ".")
    kind = kinds[0]
    if kind == "table":
        table = spec["table"]
        if not isinstance(table, list) or len(table) != n_layers:
            got = len(table) if isinstance(table, list) else type(table).__name__
            raise FusionError(f"The layer table has {got} rows but the model has {n_layers} layers "
                              "(one row per layer, one weight per adapter).")
        if weights is not None:
            raise FusionError("Give either global weights or a full layer table, not both.")
        return [check_weights_row(r, n_adapters, f"layer {i}", allow_any_sum) for i, r in enumerate(table)]
    if kind == "linear":
        lin = spec["linear"]
        if not isinstance(lin, dict) or "start" not in lin or "end" not in lin:
            raise FusionError("A linear schedule is {\"linear\": {\"start\": [...], \"end\": [...]}} "
                              "(weights at the first and at the last layer).")
        if weights is not None:
            raise FusionError("Give either global weights or a linear layer schedule, not both.")
        start = check_weights_row(lin["start"], n_adapters, "linear schedule start", allow_any_sum)
        end = check_weights_row(lin["end"], n_adapters, "linear schedule end", allow_any_sum)
        rows = []
        for i in range(n_layers):
            t = i / (n_layers - 1) if n_layers > 1 else 0.0
            rows.append([s + (e - s) * t for s, e in zip(start, end)])
        return rows
    ranges = spec["ranges"]
    if not isinstance(ranges, list) or not ranges:
        raise FusionError("'ranges' must be a non-empty list of {\"layers\": ..., \"weights\": [...]}.")
    default = (check_weights_row(list(weights), n_adapters, "weights", allow_any_sum)
               if weights is not None else None)
    rows: list[list[float] | None] = [default] * n_layers
    owner: dict[int, int] = {}
    for j, item in enumerate(ranges):
        if not isinstance(item, dict) or "layers" not in item or "weights" not in item:
            raise FusionError(f"Range {j} must be {{\"layers\": \"0-7\", \"weights\": [...]}}.")
        row = check_weights_row(item["weights"], n_adapters, f"range {j} ({item['layers']})", allow_any_sum)
        for layer in _parse_layers(item["layers"], n_layers):
            if layer in owner:
                raise FusionError(f"Layer {layer} is in range {owner[layer]} and range {j}: ranges "
                                  "must not overlap.")
            owner[layer] = j
            rows[layer] = row
    missing = [i for i, r in enumerate(rows) if r is None]
    if missing:
        raise FusionError(f"Layers {_compact(missing)} are in no range and no global weights were "
                          "given: cover every layer, or pass weights for the rest.")
    return rows  # type: ignore[return-value]


def _compact(nums: list[int]) -> str:
    out, start = [], None
    for i, n in enumerate(nums):
        if start is None:
            start = n
        if i + 1 == len(nums) or nums[i + 1] != n + 1:
            out.append(str(start) if start == n else f"{start}-{n}")
            start = None
    return ", ".join(out)
