"""Exports of runs, adapters and fused models: MLX and LM Studio folders, GGUF (llama.cpp)
with an Ollama Modelfile, PEFT adapters and Hub uploads, each with a model card and recorded
as an artifact. `export()` is the entry point; `jobs.start()` runs one in its own process."""

from .core import LABELS, TARGETS, ExportResult, export
from .source import ExportError

__all__ = ["LABELS", "TARGETS", "ExportError", "ExportResult", "export"]
