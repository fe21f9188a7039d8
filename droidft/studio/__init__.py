"""The dashboard's helpers that are not UI, one module per concern; no Streamlit here, so
every function is usable (and tested) without it. Pages import this package as `us`
(`from droidft import studio as us`) and call the names re-exported below.

format    numbers, times, paths, statuses (and queue places) as text
frames    metric rows as frames for charts: merging, downsampling, EMA smoothing, step ranges
progress  steps done, speed, time left
forms     form fields from config dataclasses, and back to a config
presets   ready-made settings, the one-click demo fine-tune
configs   config diff, YAML, commands, adapter zip
lineage   import source -> dataset -> run -> adapter -> fused model -> evaluation graph
errors    engine exceptions in plain language
tables    the Sessions table, its filter, evaluation rows
pickers   adapters (a run's best or last), demo prompt, fusion weights to pick from
sweeps    a sweep's trials as a table and chart points, suggested grid values

Estimates (memory, time, disk) are engine code: `droidft.estimate`.
"""

from .format import (STATUS_COLORS, STATUS_ICONS, fmt_ago, fmt_count, fmt_device, fmt_duration,
                     fmt_number, fmt_start, fmt_time, queue_status, short_blas, short_path, strip_ansi)
from .frames import (chart_groups, downsample, ema, latest_values, merge_metrics, metrics_frame,
                     scale_type, series_labels, thin_history, visible, weight_table_frame)
from .progress import Progress, run_progress
from .forms import (GROUPS, HELP, MANAGED_FIELDS, FieldSpec, build_config, field_display_value,
                    field_specs, get_dotted, parse_field, set_dotted)
from .presets import demo_config, sft_presets
from .configs import adapter_zip, command_for, config_diff, config_yaml, flatten, stock_command
from .lineage import dataset_sources, lineage_dot
from .errors import Explained, explain
from .tables import SUITE_HEADLINE, evaluation_rows, filter_runs, runs_table
from .pickers import (CHECKPOINT_LABELS, adapter_choices, demo_prompt, normalized, same_base, target_name,
                      with_checkpoint)
from .sweeps import numeric_log, short_key, suggest_values, sweep_points, sweep_table

__all__ = [
    "fmt_duration", "fmt_ago", "fmt_time", "fmt_count", "fmt_number", "strip_ansi", "short_path",
    "short_blas", "fmt_device", "STATUS_ICONS", "STATUS_COLORS", "fmt_start", "queue_status",
    "metrics_frame", "merge_metrics", "downsample", "thin_history", "latest_values", "chart_groups",
    "series_labels", "weight_table_frame", "ema", "visible", "scale_type",
    "Progress", "run_progress",
    "HELP", "GROUPS", "MANAGED_FIELDS", "FieldSpec", "field_specs", "parse_field",
    "field_display_value", "get_dotted", "set_dotted", "build_config",
    "sft_presets", "demo_config",
    "flatten", "config_diff", "config_yaml", "command_for", "stock_command", "adapter_zip",
    "lineage_dot", "dataset_sources",
    "Explained", "explain",
    "filter_runs", "runs_table", "SUITE_HEADLINE", "evaluation_rows",
    "demo_prompt", "adapter_choices", "same_base", "normalized", "CHECKPOINT_LABELS", "with_checkpoint",
    "target_name",
    "short_key", "suggest_values", "sweep_table", "sweep_points", "numeric_log",
]
