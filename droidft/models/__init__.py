"""Models: find and resolve them, read their config and architecture, quantise them; the demo
model; synthetic models for tests and benchmarks.

Offline first: "demo" is the project's own tiny model; local MLX folders, the Hugging Face
cache and LM Studio's folder are found on disk. A hub id is accepted once it is downloaded
(`droidft models pull`); only hub.py, download.py and fetch.py touch the network, and only
when asked.

resolve.py        what a user typed -> a model folder; discovery; config.json and layer names
quantize.py       quantised copies for QLoRA
demo.py           the demo model, built from text in the repo (`python -m droidft.models.demo`)
synthetic.py      random-init models and adapters of the demo model's family
architectures.py  tiny random llama / qwen2 / qwen3 / gemma3 / phi3 (+ 4-bit) with real chat
                  templates, for tests and benches
hub.py            Hugging Face Hub search and repo checks (deadlines, cache, offline line)
download.py       downloads as jobs: start, watch, cancel, remove (rows in DuckDB)
fetch.py          the download job process (`python -m droidft.models.fetch JOB`)
tables.py         models as table rows (Models page and `droidft models list/search`)

The names below are re-exported; `demo`, `synthetic` and `architectures` load MLX and NumPy when imported, so
they are imported as modules where they are needed (`from droidft.models.demo import ...`),
which keeps `import droidft.models` (and so `droidft.jobs` and the CLI) light.
"""

from .quantize import quantized_copy
from .resolve import (ModelError, ModelInfo, discover_models, is_model_dir, linear_layer_keys,
                      model_info, read_model_config, resolve_model)

__all__ = [
    "ModelError", "ModelInfo", "resolve_model", "read_model_config", "model_info",
    "discover_models", "is_model_dir", "linear_layer_keys", "quantized_copy",
]
