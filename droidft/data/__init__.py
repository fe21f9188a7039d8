"""Datasets: formats, validation, preview, token statistics, splitting, sample data, uploads.

A dataset is a folder holding ``train.jsonl`` and ``valid.jsonl`` (and optionally
``test.jsonl``), one JSON object per line, exactly what mlx-lm and mlx-lm-lora load. Those
loaders pick a row format from the *first* line of each file and then index every other line
with the same keys, so a single odd line surfaces mid-training as a bare ``KeyError`` or
``JSONDecodeError``. This package checks everything up front and says, per line, what is
wrong and how to fix it.

Formats and the keys the loaders read (names configurable through the ``*_feature`` options
of both libraries; see :class:`Features`):

``chat``         ``{"messages": [{"role", "content"}, ...], "tools"?}``   (sft)
``completions``  ``{"prompt", "completion", "tools"?}``                   (sft)
``text``         ``{"text"}``                                             (sft)
``grpo``         ``{"prompt", "answer", "system"?, "type"?}``             (grpo family)
``preference``   ``{"prompt", "chosen", "rejected", "system"?}``          (dpo, orpo, cpo, dsla)
``prompt``       ``{"prompt", "answer"?, "type"?}``                       (online_dpo, xpo, ppo,
                 rlhf_reinforce: the policy writes the answers; ``answer`` is for reward judges)
``ftpo``         ``{"context_with_chat_template", "rejected_decoded",     (ftpo: one next token,
                 "multi_chosen_decoded"}``                                 Liquid AI's Antidoom form)

One module per concern: formats (row shapes, detection), resolve ('demo' or a path -> a
dataset), jsonl (reading and writing lines), checks (one row's values), validate (a whole
dataset -> DatasetReport), render (preview, token stats), split, samples, library (uploads
and the user's datasets), imports (a .jsonl/.json/.csv/.parquet file or a Hub dataset -> a
dataset with provenance), mapping (public schemas -> droidft's formats), hub (reading a Hub
dataset with `datasets`). No Streamlit here: the dashboard and the CLI both call these
functions, through the names re-exported below.
"""

from .formats import (FORMAT_EXAMPLES, FORMAT_LABELS, FORMATS, GRPO_DEFAULT_SYSTEM, METHOD_FORMATS,
                      ROLES, SPLITS, DataError, Features, Problem, detect_format, methods_for_format,
                      normalize_method)
from .imports import (PROVENANCE_FILE, ImportResult, Source, import_dataset, read_provenance,
                      read_source)
from .jsonl import MAX_LINE_BYTES, human_bytes, load_rows
from .library import (datasets_dir, list_datasets, new_dataset_dir, safe_filename, save_uploads,
                      unique_path)
from .mapping import ColumnMap, auto_map, parse_map
from .render import preview, token_stats
from .resolve import resolve_dataset
from .samples import demo_chat_prompt, sample_data
from .split import split_dataset, split_indices
from .validate import DatasetReport, validate_dataset

__all__ = [
    # formats
    "FORMATS", "METHOD_FORMATS", "FORMAT_LABELS", "FORMAT_EXAMPLES", "ROLES", "SPLITS",
    "GRPO_DEFAULT_SYSTEM", "DataError", "Problem", "Features", "normalize_method",
    "methods_for_format", "detect_format",
    # paths and files
    "resolve_dataset", "MAX_LINE_BYTES", "load_rows", "human_bytes",
    # validation, preview, statistics
    "DatasetReport", "validate_dataset", "preview", "token_stats",
    # making datasets
    "split_dataset", "split_indices", "sample_data", "demo_chat_prompt",
    # the user's datasets
    "safe_filename", "datasets_dir", "list_datasets", "unique_path", "new_dataset_dir",
    "save_uploads",
    # importing (see also the imports and mapping modules)
    "Source", "ImportResult", "PROVENANCE_FILE", "read_source", "import_dataset", "read_provenance",
    "ColumnMap", "auto_map", "parse_map",
]
