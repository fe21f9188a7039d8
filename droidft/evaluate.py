"""Evaluation suites over a base model and any set of adapters or fused models.

Suites (each a function of a loaded target and dataset rows):
- `loss`: mean per-token cross-entropy and perplexity on a held-out split (every row, no
  dropped remainder; `mask_prompt` scores only the answers);
- `accuracy`: greedy answers to Q&A rows scored by exact match, containment, and a regex
  when one is given (suite-wide, or a row's own "pattern"/"regex" field);
- `reward`: GRPO-style rows ({"prompt", "answer"}) scored by reward functions by name
  (mlx-lm-lora's and droidft's, see `droidft.rewards`);
- `judge` (optional): a local model (any folder `mlx_lm.load` opens) grades each greedy
  answer against the reference with a yes/no prompt; the score is the share of "yes".

`evaluate(...)` runs the chosen suites for the base and each target in one call, and
records every (suite, target) result with `store.add_evaluation`, linked to the run or
artifact the target came from and to the dataset file.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from . import inference
from .adapters import check_adapter, is_model_folder, stale_base_warning

SUITES = ("loss", "accuracy", "reward", "judge")
JUDGE_PROMPT = (
    "You are grading an answer against a reference answer.\n"
    "Question: {question}\nReference answer: {reference}\nAnswer to grade: {answer}\n"
    "Is the answer to grade correct and consistent with the reference? Reply with one word: yes or no."
)


class EvalError(ValueError):
    """An evaluation that cannot run; the message says why."""


# --------------------------------------------------------------------------- data

def resolve_eval_data(data, suite: str = "accuracy", split: str = "test") -> Path:
    """The .jsonl file a suite reads: a file as given, or a dataset folder's `split`
    (falling back to valid.jsonl); "demo" is the demo chat set (demo GRPO set for reward)."""
    from . import data as datasets

    method = "grpo" if suite == "reward" else None
    try:
        path = datasets.resolve_dataset(data, method=method)
    except datasets.DataError as exc:
        raise EvalError(str(exc)) from None
    if path.is_file():
        return path
    for name in (split, "valid", "test"):
        if (path / f"{name}.jsonl").is_file():
            return path / f"{name}.jsonl"
    raise EvalError(f"{path} has no {split}.jsonl or valid.jsonl to evaluate on.")


def load_rows(path: Path, limit: int | None = None) -> list[dict]:
    from . import data as datasets

    try:
        rows = datasets.load_rows(path, limit=limit)
    except datasets.DataError as exc:
        raise EvalError(str(exc)) from None
    if not rows:
        raise EvalError(f"{path} has no rows to evaluate.")
    return rows


def qa_pair(row: dict) -> tuple[list[dict], str]:
    """(prompt messages, reference answer) of a Q&A row in any supported format."""
    if isinstance(row.get("messages"), list) and row["messages"]:
        msgs = row["messages"]
        if msgs[-1].get("role") != "assistant":
            raise EvalError("A chat row for accuracy must end with the assistant's answer.")
        ref = row.get("answer", msgs[-1].get("content", ""))
        return [dict(m) for m in msgs[:-1]], str(ref)
    for p, a in (("prompt", "completion"), ("prompt", "answer"), ("question", "answer"),
                 ("input", "output")):
        if p in row and a in row:
            return [{"role": "user", "content": str(row[p])}], str(row[a])
    raise EvalError("A Q&A row needs messages ending with the answer, prompt+completion, "
                    f"prompt+answer or question+answer (got keys {sorted(row)}).")


def normalize(text: str) -> str:
    return " ".join(str(text).lower().strip().rstrip(".!?").split())


# --------------------------------------------------------------------------- suites

def loss_suite(loaded: inference.Loaded, rows: list[dict], *, batch_size: int = 4,
               max_seq_length: int = 2048, mask_prompt: bool = False) -> dict:
    """Mean token cross-entropy and perplexity over every row (no dropped remainder).

    `loss` scores the real next tokens only. mlx-lm's trainer (0.32) also scores one
    padding target after each sequence's last token, so its reported val loss is a bit
    higher; `loss_as_mlx_lm` is that number, to compare with a run's val_loss curve."""
    import types

    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np
    from mlx_lm.tuner.datasets import create_dataset

    try:
        dataset = create_dataset(rows, loaded.tokenizer,
                                 types.SimpleNamespace(mask_prompt=mask_prompt and "text" not in rows[0]))
    except ValueError as exc:
        raise EvalError(f"loss: {exc}") from None
    items = [dataset.process(dataset[i]) for i in range(len(dataset))]
    items = [(toks[:max_seq_length], off) for toks, off in items if len(toks) > 1]
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    total = total_stock = 0.0
    ntok = ntok_stock = 0
    loaded.model.eval()
    for start in range(0, len(order), batch_size):
        batch = [items[i] for i in order[start:start + batch_size]]
        width = max(len(t) for t, _ in batch) + 1  # one padding column, as mlx-lm pads
        arr = np.zeros((len(batch), width), np.int32)
        for j, (t, _) in enumerate(batch):
            arr[j, :len(t)] = t
        arr = mx.array(arr)
        ce = nn.losses.cross_entropy(loaded.model(arr[:, :-1]), arr[:, 1:]).astype(mx.float32)
        steps = mx.arange(1, width)[None]
        offs = mx.array([[off] for _, off in batch])
        lens = mx.array([[len(t)] for t, _ in batch])
        real = (steps >= offs) & (steps <= lens - 1)
        stock = (steps >= offs) & (steps <= lens)
        sums = mx.stack([(ce * real).sum(), real.sum(), (ce * stock).sum(), stock.sum()])
        s0, n0, s1, n1 = sums.tolist()
        total, ntok, total_stock, ntok_stock = total + s0, ntok + int(n0), total_stock + s1, ntok_stock + int(n1)
    if ntok == 0:
        raise EvalError("loss: no tokens to score (are the rows empty?)")
    mean = total / ntok
    return {"loss": mean, "perplexity": math.exp(min(mean, 700.0)), "tokens": ntok, "examples": len(items),
            "mask_prompt": bool(mask_prompt), "loss_as_mlx_lm": total_stock / max(ntok_stock, 1)}


def _answer(loaded: inference.Loaded, messages: list[dict], max_tokens: int) -> str:
    try:
        from .models.demo import chat_answer  # the demo's own helper, when it is there
    except ImportError:
        chat_answer = None
    if chat_answer is not None:
        return chat_answer(loaded.model, loaded.tokenizer, messages, max_tokens)
    pieces = [c.text for c in inference.stream(prompt=messages, loaded=loaded, max_tokens=max_tokens,
                                               sampling=inference.Sampling.greedy())]
    return "".join(pieces).strip()


def accuracy_suite(loaded: inference.Loaded, rows: list[dict], *, max_tokens: int = 48,
                   pattern: str | None = None, keep_examples: int = 5) -> dict:
    """Greedy answers scored by exact match (case, spacing and final punctuation ignored;
    `exact_match_strict` compares the stripped strings), containment of the reference,
    mean character similarity (0..1, partial credit), and (optionally) a regex."""
    regex = None
    if pattern:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise EvalError(f"accuracy: the regex {pattern!r} is invalid: {exc}") from None
    from .rewards import similarity

    exact = strict = contains = matched = regex_rows = 0
    similar = 0.0
    examples = []
    for row in rows:
        messages, reference = qa_pair(row)
        got = _answer(loaded, messages, max_tokens)
        g, r = normalize(got), normalize(reference)
        exact += g == r
        strict += got.strip() == reference.strip()  # demo_model.exact_match's rule
        contains += bool(r) and r in g
        similar += similarity(got, reference)
        row_pattern = row.get("pattern") or row.get("regex")
        rx = re.compile(row_pattern) if row_pattern else regex
        if rx is not None:
            regex_rows += 1
            matched += bool(rx.search(got))
        if len(examples) < keep_examples:
            examples.append({"prompt": messages[-1].get("content", ""), "reference": reference,
                             "prediction": got})
    n = len(rows)
    out = {"exact_match": exact / n, "exact_match_strict": strict / n, "contains": contains / n,
           "similarity": similar / n, "n": n, "max_tokens": max_tokens,
           "examples": examples}
    if regex_rows:
        out["regex"] = matched / regex_rows
        out["regex_rows"] = regex_rows
    return out


def reward_suite(loaded: inference.Loaded, rows: list[dict], *, max_tokens: int = 48,
                 reward_functions: Sequence[str] | None = None, reward_weights: Sequence[float] | None = None,
                 keep_examples: int = 5) -> dict:
    """Reward functions (by name) over greedy completions of {"prompt", "answer"} rows."""
    from . import rewards

    names = list(reward_functions) if reward_functions else ["exact_answer", "answer_similarity"]
    try:
        funcs = rewards.resolve(names)
    except rewards.RewardError as exc:
        raise EvalError(str(exc)) from None
    weights = list(reward_weights) if reward_weights else [1.0] * len(funcs)
    if len(weights) != len(funcs):
        raise EvalError(f"{len(funcs)} reward functions but {len(weights)} weights.")
    prompts, answers, types_, completions = [], [], [], []
    for row in rows:
        if "prompt" not in row or "answer" not in row:
            raise EvalError("reward: rows need 'prompt' and 'answer' (GRPO format).")
        prompts.append(str(row["prompt"]))
        answers.append(str(row["answer"]))
        types_.append(row.get("type"))
        completions.append(_answer(loaded, [{"role": "user", "content": prompts[-1]}], max_tokens))
    scores = {}
    total = [0.0] * len(rows)
    for name, func, w in zip(names, funcs, weights):
        vals = func(prompts=prompts, completions=completions, answer=answers, types=types_)
        vals = [0.0 if v is None else float(v) for v in vals]
        scores[name] = sum(vals) / len(vals)
        total = [t + w * v for t, v in zip(total, vals)]
    return {"rewards": scores, "total": sum(total) / len(total), "weights": weights, "n": len(rows),
            "examples": [{"prompt": p, "answer": a, "completion": c}
                         for p, a, c in list(zip(prompts, answers, completions))[:keep_examples]]}


def judge_suite(loaded: inference.Loaded, rows: list[dict], *, judge_model, max_tokens: int = 48,
                keep_examples: int = 5, cache: inference.ModelCache | None = None) -> dict:
    """LLM-as-judge: a local model answers yes/no to "is this answer correct?" per row."""
    if not judge_model:
        raise EvalError("The judge suite needs a local judge model (--judge-model PATH).")
    judge = inference.load(judge_model, cache=cache)
    yes = unclear = 0
    examples = []
    for row in rows:
        messages, reference = qa_pair(row)
        got = _answer(loaded, messages, max_tokens)
        question = messages[-1].get("content", "")
        verdict_text = _answer(judge, [{"role": "user", "content": JUDGE_PROMPT.format(
            question=question, reference=reference, answer=got)}], 8)
        word = re.sub(r"[^a-z]", "", (verdict_text.split() or [""])[0].lower())
        verdict = True if word == "yes" else False if word == "no" else None
        yes += verdict is True
        unclear += verdict is None
        if len(examples) < keep_examples:
            examples.append({"prompt": question, "reference": reference, "prediction": got,
                             "verdict": verdict_text})
    n = len(rows)
    return {"judge_score": yes / n, "unclear": unclear / n, "n": n, "judge_model": str(judge.model_path),
            "examples": examples}


# --------------------------------------------------------------------------- targets and the call

@dataclass
class Target:
    label: str               # what tables show ("base", a run id, a folder name)
    target: str              # what the store records as the target
    kind: str                # base | adapter | model
    model_path: Path
    adapters: tuple = ()
    run_id: str | None = None
    artifact_id: str | None = None
    warnings: list = field(default_factory=list)


def _artifact_ids() -> dict[str, str]:
    try:
        from . import store

        return {str(Path(a["path"]).resolve()): a["id"] for a in store.artifacts()}
    except Exception:
        return {}


def build_targets(model, adapters: Sequence = (), include_base: bool = True) -> list[Target]:
    """Base + one target per entry of `adapters` (a run id / adapter folder on `model`,
    a fused or other model folder on its own, or a list of adapters stacked)."""
    from .models import resolve_model

    model_path = resolve_model(str(model))
    arts = _artifact_ids()
    targets = [Target("base", str(model), "base", model_path)] if include_base else []
    for entry in adapters:
        if isinstance(entry, (list, tuple)):
            specs = tuple(check_adapter(model_path, a, model_name=str(model)) for a in entry)
            label = "+".join(s.name for s in specs)
            targets.append(Target(label, label, "adapter", model_path, specs,
                                  warnings=[w for w in (stale_base_warning(model_path, s)
                                                        for s in specs) if w]))
            continue
        if is_model_folder(entry):
            p = Path(str(entry)).expanduser()
            targets.append(Target(p.name, str(p), "model", p, artifact_id=arts.get(str(p.resolve()))))
            continue
        spec = check_adapter(model_path, entry, model_name=str(model))
        target = spec.run_id or str(spec.path)
        if spec.run_id and spec.name.endswith("@best"):
            target = spec.name  # a run's best adapter is its own target beside the last
        stale = stale_base_warning(model_path, spec)
        targets.append(Target(target if spec.run_id else Path(spec.name).name or spec.name, target, "adapter",
                              model_path, (spec,), run_id=spec.run_id,
                              artifact_id=arts.get(str(spec.path.resolve())), warnings=[stale] if stale else []))
    if not targets:
        raise EvalError("Nothing to evaluate: give adapters or models, or include the base.")
    return targets


@dataclass
class EvalReport:
    dataset: dict             # suite -> dataset file
    suites: list[str]
    results: list[dict] = field(default_factory=list)  # one per target: label, target, kind, suites
    evaluation_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> list[dict]:
        """Flat rows for a table: label plus the headline number of each suite."""
        rows = []
        for r in self.results:
            row = {"target": r["label"]}
            s = r["suites"]
            if "loss" in s:
                row["loss"] = s["loss"]["loss"]
                row["perplexity"] = s["loss"]["perplexity"]
            if "accuracy" in s:
                row["exact_match"] = s["accuracy"]["exact_match"]
                row["contains"] = s["accuracy"]["contains"]
                row["similarity"] = s["accuracy"]["similarity"]
                if "regex" in s["accuracy"]:
                    row["regex"] = s["accuracy"]["regex"]
            if "reward" in s:
                row["reward"] = s["reward"]["total"]
            if "judge" in s:
                row["judge"] = s["judge"]["judge_score"]
            rows.append(row)
        return rows


def _parse_suites(suites) -> list[str]:
    if isinstance(suites, str):
        suites = [s.strip() for s in suites.split(",") if s.strip()]
    suites = list(suites or [])
    bad = [s for s in suites if s not in SUITES]
    if bad or not suites:
        raise EvalError(f"Unknown suite(s) {', '.join(bad) or '(none)'}: choose from {', '.join(SUITES)}.")
    return list(dict.fromkeys(suites))


def evaluate(model="demo", adapters: Sequence = (), data="demo", suites=("loss", "accuracy"), *,
             include_base: bool = True, split: str = "test", limit: int | None = None,
             max_tokens: int = 48, pattern: str | None = None, mask_prompt: bool = False,
             batch_size: int = 4, reward_functions: Sequence[str] | None = None,
             reward_weights: Sequence[float] | None = None, judge_model=None, record: bool = True,
             cache: inference.ModelCache | None = None,
             progress: Callable[[str, str], None] | None = None) -> EvalReport:
    """Run `suites` on the base model and each adapter / fused model, record the results.

    `data`: "demo", a dataset folder (its `split`, else valid.jsonl) or a .jsonl file; the
    reward suite reads the GRPO demo set for "demo". `limit` caps rows per suite; the
    judge suite needs `judge_model` (a local model folder or "demo")."""
    t0 = time.perf_counter()
    suites = _parse_suites(suites)
    if "judge" in suites and not judge_model:
        raise EvalError("The judge suite needs a local judge model (--judge-model PATH).")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise EvalError(f"limit must be a whole number >= 1, got {limit!r}.")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise EvalError(f"max_tokens must be a whole number >= 1, got {max_tokens!r}.")
    targets = build_targets(model, adapters, include_base)  # checks every adapter first
    files = {s: resolve_eval_data(data, s, split) for s in suites}
    rows = {s: load_rows(f, limit) for s, f in files.items()}
    report = EvalReport(dataset={s: str(f) for s, f in files.items()}, suites=suites)
    for t in targets:
        loaded = inference.load(t.model_path, t.adapters or None, cache=cache)
        out = {}
        for s in suites:
            if progress:
                progress(t.label, s)
            if s == "loss":
                out[s] = loss_suite(loaded, rows[s], batch_size=batch_size, mask_prompt=mask_prompt)
            elif s == "accuracy":
                out[s] = accuracy_suite(loaded, rows[s], max_tokens=max_tokens, pattern=pattern)
            elif s == "reward":
                out[s] = reward_suite(loaded, rows[s], max_tokens=max_tokens,
                                      reward_functions=reward_functions, reward_weights=reward_weights)
            else:
                out[s] = judge_suite(loaded, rows[s], judge_model=judge_model, max_tokens=max_tokens,
                                     cache=cache)
            if record:
                from . import store

                results = {**out[s], "label": t.label, "kind": t.kind, "model": str(t.model_path),
                           "adapters": [str(a.path) for a in t.adapters], "warnings": t.warnings}
                report.evaluation_ids.append(store.add_evaluation(
                    suite=s, target=t.target, dataset=str(files[s]), results=results,
                    artifact_id=t.artifact_id, run_id=t.run_id))
        report.results.append({"label": t.label, "target": t.target, "kind": t.kind,
                               "run_id": t.run_id, "artifact_id": t.artifact_id, "suites": out,
                               "warnings": t.warnings})
    report.seconds = time.perf_counter() - t0
    return report
