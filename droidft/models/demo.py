"""The demo model: a tiny Llama with its own tokenizer, built from text in the repo.

No network may be assumed, so droidft makes its default model itself: a byte-level
BPE tokenizer and a ~0.8M-parameter Llama pre-trained for a few hundred steps on
data/corpus/*.txt, saved in the Hugging Face layout so stock `mlx_lm.load` opens it.
The corpus teaches the chat format and plain answers to the demo's questions; a short
LoRA run on data/demo/chat then gives it a droid persona (see DEMO_SFT_DEFAULTS).

The build takes 1-2 minutes on 2 CPU cores, so its result ships in data/droidft-demo/
(3 MB): a fresh clone has the demo model at once. `scripts/make_demo_model.py` writes
that folder; the build is deterministic on a given BLAS (bitwise the same weights), and
a test rebuilds it and compares. When the recipe or corpus changes and the shipped
folder is stale, the model is built locally (data/models/), with OpenBLAS.

    python -m droidft.models.demo     # print the folder (build it first if needed)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

from .. import paths

DEMO_MODEL_NAME = "droidft-demo"
BUILD_VERSION = 1  # bump when the recipe changes in a way the hash below cannot see
CORPUS_DIR = paths.DATA_DIR / "corpus"

BOS, EOS, PAD = "<|bos|>", "<|end|>", "<|pad|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, "<|system|>", "<|user|>", "<|assistant|>"]

# <|bos|><|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Roles must be system, user or assistant') }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

MODEL_ARGS = {
    "model_type": "llama",
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "intermediate_size": 256,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-5,
    "vocab_size": 1024,
    "max_position_embeddings": 512,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
}

# Pre-training recipe, sized for ~30 s on 2 CPU cores: MLX's CPU exp is slow, so
# short windows and a small MLP. The learning rate stays at 1e-3 with weight decay:
# at 3e-3 the attention saturates (each head locks onto one position with weight
# ~1.0), and then not even a full fine-tune can teach it to read the question.
PRETRAIN = {
    "seed": 0,
    "steps": 300,
    "batch_size": 16,
    "seq_length": 64,
    "learning_rate": 1e-3,
    "warmup": 30,
    "weight_decay": 0.1,
}

# The default demo fine-tune on data/demo/chat (mlx-lm lora config keys). Measured
# (scripts/demo_accuracy.py): exact match on the held-out test split goes 0.0 -> 0.21
# after 50 iterations, 1.0 after 80 and 100 (300 gave 1.0 too; lr 2e-4..7e-4 all work,
# 1e-3 diverges). 100 iterations: about 5 s of training on 2 idle cores with OpenBLAS.
DEMO_SFT_DEFAULTS = {
    "fine_tune_type": "lora",
    "iters": 100,
    "batch_size": 8,
    "learning_rate": 3e-4,
    "num_layers": -1,
    "lora_parameters": {"rank": 8, "scale": 20.0, "dropout": 0.0},
    "steps_per_report": 5,
    "steps_per_eval": 25,
    "val_batches": -1,
    "save_every": 50,
    "max_seq_length": 128,
    "mask_prompt": True,
}

REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
BUILD_FILE = "droidft_build.json"


def corpus_files() -> list[Path]:
    return sorted(CORPUS_DIR.glob("*.txt"))


SHIPPED_DIR = paths.DATA_DIR / DEMO_MODEL_NAME  # committed: the built model, ready at clone time


def build_hash() -> str:
    """Everything the weights depend on; a stored model with another hash is rebuilt.
    (The MLX version is recorded, not hashed: shipped weights stay valid across MLX releases.)"""
    h = hashlib.sha256()
    recipe = [BUILD_VERSION, MODEL_ARGS, PRETRAIN, SPECIAL_TOKENS, CHAT_TEMPLATE]
    h.update(json.dumps(recipe, sort_keys=True).encode())
    for path in corpus_files():
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def is_built(folder: Path, expected_hash: str | None = None) -> bool:
    """A complete model folder whose recorded build hash matches this recipe."""
    try:
        record = json.loads((folder / BUILD_FILE).read_text())
    except (OSError, ValueError):
        return False
    if not all((folder / name).is_file() for name in REQUIRED_FILES):
        return False
    return record.get("build_hash") == (expected_hash or build_hash())


def train_tokenizer(texts: list[str]):
    """Byte-level BPE (GPT-2 style): any text encodes, nothing is unknown."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=MODEL_ARGS["vocab_size"],
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Markers are whole tokens already; keep them out of the merges.
    plain = []
    for text in texts:
        for token in SPECIAL_TOKENS:
            text = text.replace(token, "\n")
        plain.append(text)
    tokenizer.train_from_iterator(plain, trainer=trainer)
    return tokenizer


def tokenizer_files(tokenizer) -> dict[str, dict]:
    """The JSON files transformers' AutoTokenizer (and so mlx_lm.load) reads."""
    ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": None,
        "model_max_length": MODEL_ARGS["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(i): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                     "normalized": False, "single_word": False}
            for t, i in ids.items()
        },
    }
    special_tokens_map = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    generation_config = {"bos_token_id": ids[BOS], "eos_token_id": ids[EOS],
                         "pad_token_id": ids[PAD]}
    return {
        "tokenizer_config.json": tokenizer_config,
        "special_tokens_map.json": special_tokens_map,
        "generation_config.json": generation_config,
    }


def token_stream(tokenizer, texts: list[str]) -> np.ndarray:
    eos = tokenizer.token_to_id(EOS)
    ids = []
    for text in texts:
        ids.extend(tokenizer.encode(text).ids)
        ids.append(eos)
    return np.array(ids, dtype=np.int32)


def pretrain(model, data: np.ndarray, log=print):
    """Plain next-token training on random windows of the corpus; seeded."""
    cfg = PRETRAIN
    rng = np.random.default_rng(cfg["seed"])
    schedule = optim.join_schedules(
        [optim.linear_schedule(1e-7, cfg["learning_rate"], cfg["warmup"]),
         optim.cosine_decay(cfg["learning_rate"], cfg["steps"] - cfg["warmup"],
                            end=cfg["learning_rate"] * 0.1)],
        [cfg["warmup"]],
    )
    optimizer = optim.AdamW(learning_rate=schedule, weight_decay=cfg["weight_decay"])

    def loss_fn(model, x, y):
        return nn.losses.cross_entropy(model(x), y, reduction="mean")

    loss_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(x, y):
        loss, grads = loss_and_grad(model, x, y)
        optimizer.update(model, grads)
        return loss

    n, T = cfg["batch_size"], cfg["seq_length"]
    tic = time.perf_counter()
    losses = []
    for it in range(1, cfg["steps"] + 1):
        starts = rng.integers(0, len(data) - T - 1, size=n)
        batch = mx.array(np.stack([data[s : s + T + 1] for s in starts]))
        loss = step(batch[:, :-1], batch[:, 1:])
        mx.eval(state, loss)
        losses.append(loss.item())
        if it % 50 == 0 or it == cfg["steps"]:
            log(f"pretrain step {it}/{cfg['steps']}: loss {np.mean(losses[-50:]):.3f} "
                f"({time.perf_counter() - tic:.1f}s)")
    return float(np.mean(losses[-20:]))


def _build_into(folder: Path, digest: str, log=print):
    from mlx_lm.models import llama

    tic, cpu = time.perf_counter(), time.process_time()
    texts = [p.read_text() for p in corpus_files()]
    if not texts:
        raise FileNotFoundError(f"no corpus text in {CORPUS_DIR}: the demo model cannot be built")
    tokenizer = train_tokenizer(texts)
    data = token_stream(tokenizer, texts)
    log(f"tokenizer: {tokenizer.get_vocab_size()} tokens; corpus: {len(data)} tokens")

    mx.random.seed(PRETRAIN["seed"])
    model = llama.Model(llama.ModelArgs.from_dict(MODEL_ARGS))
    mx.eval(model.parameters())
    final_loss = pretrain(model, data, log=log)

    ids = {t: tokenizer.token_to_id(t) for t in (BOS, EOS, PAD)}
    config = dict(MODEL_ARGS, architectures=["LlamaForCausalLM"], torch_dtype="float32",
                  bos_token_id=ids[BOS], eos_token_id=ids[EOS], pad_token_id=ids[PAD])
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
    tokenizer.save(str(folder / "tokenizer.json"))
    for name, content in tokenizer_files(tokenizer).items():
        (folder / name).write_text(json.dumps(content, indent=2))
    seconds = time.perf_counter() - tic
    from ..blas import blas_in_use

    record = {"name": DEMO_MODEL_NAME, "build_hash": digest, "build_version": BUILD_VERSION,
              "mlx": mx.__version__, "blas": blas_in_use(),
              "pretrain": PRETRAIN, "final_loss": final_loss, "corpus_tokens": int(len(data)),
              "build_seconds": round(seconds, 1),
              "build_cpu_seconds": round(time.process_time() - cpu, 1), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    # Written last: its presence marks the folder complete.
    (folder / BUILD_FILE).write_text(json.dumps(record, indent=2))
    log(f"built {DEMO_MODEL_NAME} in {seconds:.1f}s (final loss {final_loss:.3f})")


def _build_with_openblas(out_dir: Path, force: bool, log) -> bool:
    """Build in a child process that has OpenBLAS preloaded, when this one runs the wheel's
    reference BLAS (25x slower at this size) and OpenBLAS is installed. False: build here."""
    import subprocess
    import sys

    from .. import blas

    if (sys.platform != "linux" or os.environ.get("DROIDFT_BLAS") == "reference"
            or os.environ.get("DROIDFT_REEXEC") or blas.loaded_openblas() or blas.find_openblas() is None):
        return False
    env, note = blas.worker_env("auto")
    env["DROIDFT_REEXEC"] = "1"  # the child builds itself, whatever it loaded
    log(f"building the demo model with {note}")
    cmd = [sys.executable, "-m", "droidft.models.demo", "--out", str(out_dir)] + (["--force"] if force else [])
    out = subprocess.run(cmd, env=env, cwd=str(paths.REPO_ROOT), capture_output=True, text=True)
    for line in out.stderr.splitlines():
        log(line)
    if out.returncode != 0:
        raise RuntimeError(f"building the demo model failed: {out.stderr.strip()[-1000:]}")
    return True


def build_demo_model(out_dir: Path | None = None, force: bool = False, log=print) -> Path:
    """Build the demo model unless an up-to-date one is already there; return its folder.

    Built in a temporary sibling folder and renamed into place, under a lock, so a
    half-built model is never seen and two processes never build at once; in a child
    process with OpenBLAS when this one does not have it."""
    out_dir = Path(out_dir) if out_dir else paths.demo_model_dir()
    digest = build_hash()
    if not force and is_built(out_dir, digest):
        return out_dir
    if _build_with_openblas(out_dir, force, log):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f".{out_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and is_built(out_dir, digest):  # another process just built it
            return out_dir
        for stale in out_dir.parent.glob(f".{out_dir.name}-*"):  # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        log(f"building the demo model in {out_dir} ...")
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
        try:
            _build_into(tmp, digest, log=log)
            if out_dir.exists():
                old = out_dir.with_name(f".{out_dir.name}-old-{os.getpid()}")
                out_dir.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.chmod(0o755)  # mkdtemp made it private; the model folder is for everyone
            tmp.rename(out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def demo_model_path() -> Path:
    """The demo model folder: the shipped one when it matches the recipe, else one built
    locally (first if missing or stale). $DROIDFT_DEMO_MODEL names another folder."""
    if not os.environ.get("DROIDFT_DEMO_MODEL") and is_built(SHIPPED_DIR):
        return SHIPPED_DIR
    return build_demo_model(log=lambda msg: None)


# -- evaluation helpers (reused by the evaluate page and the tests) --------------------


def chat_answer(model, tokenizer, messages: list[dict], max_tokens: int = 32) -> str:
    """Greedy reply to `messages`, up to the end token, stripped."""
    from mlx_lm import generate

    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    return generate(model, tokenizer, prompt, max_tokens=max_tokens, verbose=False).strip()


def _split_row(row: dict) -> tuple[list[dict], str]:
    if "messages" in row:
        messages = row["messages"]
        return messages[:-1], messages[-1]["content"]
    return [{"role": "user", "content": row["prompt"]}], row["completion"]


def exact_match(model, tokenizer, rows: list[dict], max_tokens: int = 32) -> float:
    """Share of rows (chat or prompt/completion) whose greedy answer equals the reference."""
    if not rows:
        return 0.0
    hits = 0
    for row in rows:
        messages, reference = _split_row(row)
        hits += chat_answer(model, tokenizer, messages, max_tokens) == reference.strip()
    return hits / len(rows)


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Print the demo model folder (built first if needed).")
    parser.add_argument("--out", help="build into this folder instead")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    cli = parser.parse_args()

    def stderr(msg):
        print(msg, file=sys.stderr, flush=True)

    if cli.out or cli.force:
        print(build_demo_model(cli.out, force=cli.force, log=stderr))
    else:
        print(demo_model_path())
