"""Where droidft keeps its state: everything lives under one home folder."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"


class HomeError(ValueError):
    """The state folder cannot be used; says which folder and what to do."""


def home() -> Path:
    """The state folder: $DROIDFT_HOME, else ./data/home inside the project."""
    path = Path(os.environ.get("DROIDFT_HOME") or DATA_DIR / "home").expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HomeError(f"droidft cannot use its home folder {path} ({exc.strerror or exc}). "
                        "Set DROIDFT_HOME to a writable folder.") from None
    if not os.access(path, os.W_OK):
        raise HomeError(f"droidft cannot write to its home folder {path}. "
                        "Set DROIDFT_HOME to a writable folder.")
    return path


def db_path() -> Path:
    return home() / "droidft.duckdb"


def runs_dir() -> Path:
    path = home() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_dir(run_id: str) -> Path:
    return runs_dir() / run_id


def models_dir() -> Path:
    """Models droidft builds or produces (the demo model, quantised and fused models)."""
    path = home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def demo_model_dir() -> Path:
    """Where the demo model is built: shared by every droidft home on this checkout
    (data/models/, git-ignored) so a new home or a test never rebuilds it; under the
    home when the checkout is read-only. $DROIDFT_DEMO_MODEL overrides."""
    override = os.environ.get("DROIDFT_DEMO_MODEL")
    if override:
        return Path(override).expanduser()
    shared = DATA_DIR / "models"
    try:
        shared.mkdir(parents=True, exist_ok=True)
        if os.access(shared, os.W_OK):
            return shared / "droidft-demo"
    except OSError:
        pass
    return models_dir() / "droidft-demo"


def lmstudio_models_dir() -> Path:
    """LM Studio's models folder (<publisher>/<model>/ inside; it need not exist yet):
    $DROIDFT_LMSTUDIO_MODELS, else where ~/.lmstudio-home-pointer says LM Studio lives, else
    ~/.lmstudio/models (~/.cache/lm-studio/models for releases before 0.3, if only that exists)."""
    override = os.environ.get("DROIDFT_LMSTUDIO_MODELS")
    if override:
        return Path(override).expanduser()
    user = Path.home()
    pointer = user / ".lmstudio-home-pointer"
    try:
        if pointer.is_file():
            target = Path(pointer.read_text(encoding="utf-8").strip()).expanduser()
            if target.is_dir():
                return target / "models"
    except OSError:
        pass
    legacy = user / ".cache" / "lm-studio" / "models"
    if not (user / ".lmstudio").exists() and legacy.is_dir():
        return legacy
    return user / ".lmstudio" / "models"
