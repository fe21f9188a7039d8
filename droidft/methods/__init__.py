"""The method registry: method name -> config class + runner.

Adding a method means adding one module that calls `register(Method(...))`.
Third-party packages register theirs through the entry-point group
`droidft.methods` (each entry point loads a `Method` or a list of them).
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable

BUILTIN_MODULES = ("droidft.methods.sft", "droidft.methods.grpo", "droidft.methods.preference",
                   "droidft.methods.online", "droidft.methods.klpo", "droidft.methods.ftpo",
                   "droidft.methods.dsla")


@dataclass(frozen=True)
class Method:
    name: str
    family: str  # sft | grpo | preference | online | klpo | ftpo | plugin
    config_class: type
    run: Callable  # run(config, ctx: RunContext) -> None
    description: str = ""
    distributed: bool = False  # can run data-parallel under mlx.launch


_REGISTRY: dict[str, Method] = {}
_loaded = False
_load_lock = threading.RLock()


def register(method: Method) -> Method:
    _REGISTRY[method.name] = method
    return method


def _load() -> None:
    """Import the built-in methods and the plugins once. Threads wait for the first load to
    finish (the dashboard imports them in the background at start while a click may ask)."""
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if _loaded:
            return
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        for ep in entry_points(group="droidft.methods"):
            try:
                loaded = ep.load()
            except Exception as exc:  # a broken plugin must not take the app down
                print(f"droidft: plugin {ep.name} failed to load: {exc}")
                continue
            for method in loaded if isinstance(loaded, (list, tuple)) else [loaded]:
                if isinstance(method, Method):
                    register(method)
        _loaded = True


def get(name: str) -> Method:
    _load()
    if name not in _REGISTRY:
        raise KeyError(f"unknown method '{name}' (available: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def available() -> list[Method]:
    _load()
    return list(_REGISTRY.values())


def config_from_dict(values: dict):
    """Rebuild a stored config (its dict carries `method`)."""
    return get(values.get("method", "sft")).config_class.from_dict(values)
