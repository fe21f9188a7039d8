"""Engine exceptions in plain language: what went wrong, details, and what to do."""

from __future__ import annotations

from dataclasses import dataclass

@dataclass
class Explained:
    title: str
    details: list[str]
    fix: str
    unexpected: bool = False


def explain(exc: BaseException, doing: str = "") -> Explained:
    """An engine exception as (what went wrong, details, what to do), for a page to show."""
    name = type(exc).__name__
    doing = f"Could not {doing}" if doing else "Something went wrong"
    problems = getattr(exc, "problems", None)
    if name == "ConfigError" and problems:
        return Explained(f"{doing}: the settings cannot run.", list(problems),
                         "Change the settings named above and try again.")
    if name == "ModelError":
        return Explained(f"{doing}: {exc}", [], "Pick a model from the list (the demo model always works), "
                         "or give a folder holding config.json and *.safetensors.")
    if name == "DataError":
        return Explained(f"{doing}: {exc}", [], "Open the Data page to validate the dataset and see "
                         "each problem with its line number, or use the demo dataset.")
    if name == "AccessDenied":
        return Explained(f"{doing}: {exc}", [], "Nothing was changed. The owner of this machine can do "
                         "it, or sign in with the owner's password.")
    if name == "RunError":
        return Explained(f"{doing}: {exc}", [], "Check the run's status on the Sessions page.")
    if name == "StoreBusy":
        return Explained("The run database is busy right now.", [],
                         "It retries on its own; wait a moment.")
    if isinstance(exc, FileNotFoundError):
        return Explained(f"{doing}: a file is missing ({exc.filename or exc}).", [],
                         "It may have been deleted or moved; pick another one or start a new run.")
    if isinstance(exc, PermissionError):
        return Explained(f"{doing}: no permission to use {exc.filename or 'a file'}.", [],
                         "Check the folder's permissions, or set DROIDFT_HOME to a folder you own.")
    if name == "DiskFull":
        return Explained(f"{doing}: not enough disk space.", [str(exc)],
                         "Free some space (Sessions can delete old runs), then try again.")
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return Explained(f"{doing}: the disk is full.", [], "Free some space (Sessions can delete old runs).")
    if isinstance(exc, MemoryError):
        return Explained(f"{doing}: out of memory.", [], "Use a smaller batch size, a shorter max "
                         "sequence length, gradient checkpointing or a quantised (QLoRA) base.")
    if isinstance(exc, ValueError) and str(exc):
        return Explained(f"{doing}: {exc}", [], "Change the input named above and try again.")
    return Explained(f"{doing}: unexpected {name}: {exc}", [],
                     "This is a bug in droidft; the full traceback is in the terminal running the "
                     "dashboard. Please report it.", unexpected=True)
