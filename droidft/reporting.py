"""How a training method reports to the store and learns it should stop.

The worker hands every method a `RunContext`. Methods pass `StoreCallback` to the
trainers as their `training_callback` (mlx-lm's `TrainingCallback` hooks), and
wrap the trainer's batch iterator with `stoppable` so a stop request ends the
loop between two steps; the trainer then saves its final adapter as usual.

`StoreCallback.track_best` is where every method keeps its best adapter (by validation
loss, or a reward where higher is better) in `adapters/best/` beside the last one, and
where early stopping decides (`early_stop_patience` validations without an improvement
beyond `early_stop_min_delta`): it sets `ctx.state["early_stop"]`, the stop check ends
training between two steps, and the run ends as completed with that reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mlx_lm.tuner.callbacks import TrainingCallback

from . import store


@dataclass
class RunContext:
    run_id: str
    run_dir: Path
    writer: "store.BatchWriter"
    log: Callable[[str], None]
    should_stop: Callable[[], bool]
    step_offset: int = 0  # a resumed run continues its parent's step numbers
    rank: int = 0  # under mlx.launch only rank 0 writes metrics, artifacts and files
    world_size: int = 1
    state: dict = field(default_factory=dict)  # last step seen, best val loss, ...
    early_stop_patience: int | None = None  # from the config (BaseConfig), set by the worker
    early_stop_min_delta: float = 0.0

    @property
    def early_stop(self) -> str | None:
        """Why early stopping ended training (None while it goes on)."""
        return self.state.get("early_stop")

    @property
    def adapter_dir(self) -> Path:
        return self.run_dir / "adapters"

    def metric(self, step: int, name: str, value) -> None:
        """Record one number at a (run-local) step; non-finite values are kept as NaN rows
        only if they are floats, other types are skipped."""
        try:
            value = float(value)
        except (TypeError, ValueError):
            return
        self.writer.metric(step + self.step_offset, name, value)
        self.writer.maybe_flush()

    def artifact(self, *, kind: str, path: str, step: int | None = None, meta: dict | None = None):
        if self.rank != 0:
            return None
        return store.add_artifact(kind=kind, path=path, run_id=self.run_id, step=step, meta=meta)

    def stop_now(self) -> bool:
        """Should training end? Under mlx.launch every rank must agree, or the others
        would wait forever in the next gradient all-reduce: any rank's request counts."""
        local = bool(self.early_stop) or bool(self.should_stop())
        if self.world_size > 1:
            import mlx.core as mx

            return mx.distributed.all_sum(mx.array(int(local)), stream=mx.cpu).item() > 0
        return local


TRAIN_KEYS = {
    "train_loss": "train_loss", "learning_rate": "learning_rate",
    "iterations_per_second": "iterations_per_second", "tokens_per_second": "tokens_per_second",
    "trained_tokens": "trained_tokens", "peak_memory": "peak_memory_gb",
}


class ReportEvery(int):
    """A `steps_per_report` that also reports step 1, so the chart's first point comes right
    after the first step rather than after `steps_per_report` of them.

    mlx-lm's and mlx-lm-lora's trainers report when `it % args.steps_per_report == 0`;
    Python asks a subclass's `__rmod__` first, so this answers 0 at it == 1. Everything else
    sees a plain int (the trainer's own `steps_per_report / train_time` included, which
    `StoreCallback` corrects for windows of another length)."""

    def __rmod__(self, it):
        return 0 if it == 1 else int(it) % int(self)


class StoreCallback(TrainingCallback):
    """mlx-lm's callback hooks -> metric rows. Keeps the best adapter by a validation metric
    (`best_metric`, lower is better unless `higher_is_better`) and decides early stopping."""

    def __init__(self, ctx: RunContext, model=None, adapter_config: Path | None = None,
                 best_metric: str = "val_loss", higher_is_better: bool = False):
        self.ctx = ctx
        self.model = model
        self.adapter_config = adapter_config
        self.best_metric = best_metric
        self.sign = -1.0 if higher_is_better else 1.0
        self.best_val = math.inf  # best signed score so far (lower is better)
        self.reference = math.inf  # the score the early-stopping count started from
        self.without_improvement = 0
        self._last_report = (0, 0.0)  # (iteration, trained tokens) of the previous report

    def _iterations_per_second(self, info: dict) -> float | None:
        """Steps in this report's window over its training time (tokens / tokens per second).
        The trainer divides `steps_per_report` instead, which is wrong for the first report
        (1 step), the one after it (steps_per_report - 1) and a short last window."""
        step, tokens, rate = info.get("iteration"), info.get("trained_tokens"), info.get("tokens_per_second")
        if step is None or tokens is None or not rate:
            return None
        last_step, last_tokens = self._last_report
        self._last_report = (int(step), float(tokens))
        if tokens - last_tokens <= 0 or step <= last_step:
            return None
        return (step - last_step) * float(rate) / (float(tokens) - last_tokens)

    def on_train_loss_report(self, info: dict):
        step = int(info.get("iteration", 0))
        self.ctx.state["step"] = step
        its = self._iterations_per_second(info)
        if its is not None and "iterations_per_second" in info:
            info = {**info, "iterations_per_second": its}
        for key, value in info.items():
            if key == "iteration":
                continue
            self.ctx.metric(step, TRAIN_KEYS.get(key, key), value)
        if self.ctx.world_size > 1 and "tokens_per_second" in info:
            # the trainer's tokens/s is summed over ranks; the per-rank mean beside it
            self.ctx.metric(step, "tokens_per_second_per_rank",
                            info["tokens_per_second"] / self.ctx.world_size)

    def on_val_loss_report(self, info: dict):
        step = int(info.get("iteration", 0))
        val_loss = float(info["val_loss"])
        self.ctx.metric(step, "val_loss", val_loss)
        if "val_time" in info:
            self.ctx.metric(step, "val_time", info["val_time"])
        self.track_best(step, info.get(self.best_metric))

    def track_best(self, step: int, value) -> None:
        """One validation of the model after `step` steps: keep its adapter if it is the best
        so far, and count validations without improvement for early stopping. Step 0 (the
        untrained model) is neither a best adapter nor a start of the count."""
        try:
            value = float(value)
        except (TypeError, ValueError):
            return
        if step <= 0 or not math.isfinite(value):
            return
        score = self.sign * value
        if score < self.best_val and self.model is not None and self.ctx.rank == 0:
            self.best_val = score
            self._save_best(step, value)
        patience, min_delta = self.ctx.early_stop_patience, self.ctx.early_stop_min_delta or 0.0
        if score < self.reference - min_delta:
            self.reference, self.without_improvement = score, 0
            return
        self.without_improvement += 1
        if patience and self.without_improvement >= patience and not self.ctx.early_stop:
            best = self.ctx.state.get("best")
            self.ctx.state["early_stop"] = (
                f"early stopping: {self.best_metric} did not improve by more than {min_delta:g} in "
                f"{patience} validation{'s' if patience > 1 else ''}"
                + (f" (best {best[1]:.4g} at step {best[0]})" if best else ""))
            self.ctx.log(self.ctx.state["early_stop"])

    def _save_best(self, step: int, value: float):
        import json
        import shutil

        import mlx.core as mx
        from mlx.utils import tree_flatten

        best_dir = self.ctx.adapter_dir / "best"
        best_dir.mkdir(parents=True, exist_ok=True)
        weights = dict(tree_flatten(self.model.trainable_parameters()))
        mx.save_safetensors(str(best_dir / "adapters.safetensors"), weights)
        if self.adapter_config and self.adapter_config.exists():
            shutil.copy(self.adapter_config, best_dir / "adapter_config.json")
        global_step = step + self.ctx.step_offset
        # beside the weights, so a run ended by `stop now` still says which step they are
        (best_dir / BEST_INFO).write_text(json.dumps(
            {"step": global_step, "metric": self.best_metric, "value": value}))
        self.ctx.state["best"] = (global_step, value)
        self.ctx.state["best_metric"] = self.best_metric


BEST_INFO = "best.json"


def stoppable(iterate_batches: Callable, ctx: RunContext, on_step: Callable[[int], None] | None = None):
    """Wrap a trainer's `iterate_batches` so the training loop ends cleanly on stop.

    Only the looping training iterator is wrapped (validation calls it with loop=False).
    `on_step(it)` runs before batch `it` is handed out, i.e. after step it-1 finished."""

    def wrapped(*args, **kwargs):
        inner = iterate_batches(*args, **kwargs)
        if not kwargs.get("loop", False):
            yield from inner
            return
        it = 0
        for batch in inner:
            it += 1
            if on_step is not None:
                on_step(it)
            if ctx.stop_now():
                ctx.log(f"{ctx.early_stop or 'stop requested'}: ending training after step {it - 1}")
                ctx.state["stopped_at"] = it - 1
                return
            yield batch

    return wrapped


def checkpoint_recorder(ctx: RunContext, save_every: int) -> Callable[[int], None]:
    """An `on_step` hook for `stoppable`: before batch `it`, step it-1 is done and, on a save
    step, the trainer has written its checkpoint, which becomes an artifact."""

    def on_step(it: int) -> None:
        done = it - 1
        ctx.state["step"] = done
        if done > 0 and done % save_every == 0:
            ckpt = ctx.adapter_dir / f"{done:07d}_adapters.safetensors"
            if ckpt.exists():
                ctx.artifact(kind="checkpoint", path=str(ckpt), step=done + ctx.step_offset)

    return on_step

