"""Numbers, times, paths and statuses as the dashboard shows them (12 s, 1.2k, '3 min ago')."""

from __future__ import annotations

import math
import time

def fmt_duration(seconds: float | None) -> str:
    """12 s, 3 min 05 s, 2 h 04 min; '-' for unknown."""
    if seconds is None or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} d {hours % 24} h"


def fmt_ago(ts: float | None, now: float | None = None) -> str:
    if not ts or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        return "-"
    delta = (now or time.time()) - ts
    if delta < 5:
        return "just now"
    return fmt_duration(delta) + " ago"


def fmt_time(ts: float | None) -> str:
    if not ts or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def fmt_count(n: float | None) -> str:
    """1234 -> 1.2k, 2_500_000 -> 2.5M."""
    if n is None or not isinstance(n, (int, float)) or not math.isfinite(n):
        return "-"
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.3g}"


def fmt_number(x: float | None, digits: int = 4) -> str:
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "-"
    return f"{x:.{digits}g}"


_ANSI = None


def strip_ansi(text: str) -> str:
    """Text without terminal colour codes (trainer output written for a terminal)."""
    import re

    global _ANSI
    _ANSI = _ANSI or re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
    return _ANSI.sub("", text or "")


def short_path(path) -> str:
    """The last part of a model or dataset path ('demo' stays 'demo'); a Hugging Face cache
    snapshot is called by its repo id, not its commit hash."""
    from ..models.resolve import display_name

    return display_name(path)


def short_blas(note: str | None) -> str:
    """'openblas (/usr/lib/.../libopenblas.so.0; SkylakeX kernels)' -> 'openblas SkylakeX';
    keeps a warning after ' - '."""
    text = str(note or "?")
    head, _, warning = text.partition(" - ")
    short = head.split(" (")[0]
    inside = head.partition(" (")[2]
    if "; " in inside and " kernels" in inside:
        kernels = inside.split("; ", 1)[1].split(" kernels", 1)[0]
        if kernels and kernels not in short and kernels != "?":
            short += f" {kernels}"
    return short + (f" ({warning})" if warning else "")


def fmt_device(device) -> str:
    """'Device(gpu, 0)' -> 'GPU (Metal)', 'Device(cpu, 0)' -> 'CPU'."""
    text = str(device or "?")
    if text.startswith("Device("):
        text = text[len("Device("):].split(",")[0].strip(" )")
    return {"gpu": "GPU (Metal)", "cpu": "CPU"}.get(text, text)


# Streamlit material icons (render everywhere, unlike emoji on machines without an emoji font)
STATUS_ICONS = {"queued": ":material/schedule:", "running": ":material/directions_run:",
                "completed": ":material/check_circle:", "stopped": ":material/stop_circle:",
                "failed": ":material/error:"}
STATUS_COLORS = {"queued": "gray", "running": "blue", "completed": "green", "stopped": "orange",
                 "failed": "red"}


def fmt_start(ts: float | None, now: float | None = None) -> str:
    """An estimated start as 'in about 6 min (17:35)'."""
    if ts is None:
        return "start time unknown"
    now = time.time() if now is None else now
    wait = ts - now
    clock = time.strftime("%H:%M", time.localtime(ts))
    if wait < 5:
        return "starts any moment"
    if wait < 90:
        return f"starts in about {wait:.0f} s ({clock})"
    if wait < 5400:
        return f"starts in about {wait / 60:.0f} min ({clock})"
    return f"starts in about {wait / 3600:.1f} h ({clock})"


def queue_status(run: dict, positions: dict) -> str:
    """'queued #2' for a waiting run, else its status."""
    place = positions.get(run.get("id"))
    return f"queued #{place}" if place else str(run.get("status") or "?")
