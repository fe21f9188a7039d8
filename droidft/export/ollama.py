"""Ollama export: a GGUF and a `Modelfile` beside it, ready for `ollama create NAME -f Modelfile`.

The Modelfile has `FROM ./<file>.gguf`, the chat `TEMPLATE` translated from the model's Jinja
chat template into Ollama's Go template syntax, and a `PARAMETER stop` per end-of-turn token.
The translation is per family, recognised by the turn markers in the Jinja template (Llama 3
headers, ChatML for Qwen 2/3, Gemma turns, Phi-3 / droidft-demo tags); each family is a set of
pieces (bos, system block, one turn, generation prompt) from which both the Go template and
`render()` -- how Ollama fills that template -- are built, so tests can hold the translation
against the Jinja original. A template of another family gets no TEMPLATE line (Ollama then
reads the GGUF's own chat template) and the export says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Turns:
    """One family's chat format. `{role}` and `{content}` are filled per message."""

    family: str
    system: str  # the system block, `{content}` = the system prompt
    turn: str  # a user or assistant message
    generation: str  # what opens the assistant's reply
    roles: dict | None = None  # role renames (Gemma calls the assistant "model")
    stops: tuple[str, ...] = ()
    default_system: str | None = None  # Qwen 2.5 says who it is when no system prompt is given
    lead: str = ""  # a bos token the template writes itself (the tokenizer does not add it)


def _family(template: str, bos: str | None, add_bos: bool) -> Turns | None:
    lead = bos if (bos and "bos_token" in template and not add_bos) else ""
    if "<|start_header_id|>" in template:
        header = "<|start_header_id|>{role}<|end_header_id|>\n\n"
        system_text = "{content}"
        if "Cutting Knowledge Date" in template:
            system_text = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n{content}"
        return Turns("llama3", header.format(role="system") + system_text + "<|eot_id|>",
                     header + "{content}<|eot_id|>", header.format(role="assistant"),
                     stops=("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"), lead=lead)
    if "<|im_start|>" in template:
        default = None
        marker = "'<|im_start|>system\\n"
        if "{%- else %}" in template and template.count(marker) >= 2:
            tail = template.split(marker)[2]
            default = tail.split("<|im_end|>")[0]
        return Turns("chatml", "<|im_start|>system\n{content}<|im_end|>\n",
                     "<|im_start|>{role}\n{content}<|im_end|>\n", "<|im_start|>assistant\n",
                     stops=("<|im_end|>", "<|endoftext|>"), default_system=default, lead=lead)
    if "<start_of_turn>" in template:
        return Turns("gemma", "", "<start_of_turn>{role}\n{content}<end_of_turn>\n", "<start_of_turn>model\n",
                     roles={"assistant": "model"}, stops=("<end_of_turn>", "<eos>"), lead=lead)
    phi_like = "<|user|>" in template and "<|assistant|>" in template
    demo_like = "'<|' + message['role'] + '|>" in template and "<|assistant|>" in template  # droidft-demo
    if phi_like or demo_like:
        return Turns("phi3", "<|system|>\n{content}<|end|>\n", "<|{role}|>\n{content}<|end|>\n",
                     "<|assistant|>\n", stops=("<|end|>", "<|endoftext|>"), lead=lead)
    return None


def go_template(t: Turns) -> str:
    """The Turns as an Ollama TEMPLATE (Go text/template over .System and .Messages)."""
    sys_head, _, sys_tail = t.system.partition("{content}")
    out = t.lead
    if t.family == "gemma":
        # Gemma folds the system prompt into the first user turn.
        out += "{{- range $i, $m := .Messages }}{{- if ne $m.Role \"system\" }}"
        out += "<start_of_turn>{{ if eq $m.Role \"assistant\" }}model{{ else }}{{ $m.Role }}{{ end }}\n"
        out += "{{ if and (eq $i 0) $.System }}{{ $.System }}\n\n{{ end }}{{ $m.Content }}<end_of_turn>\n"
        out += "{{ end }}{{ end }}" + t.generation
        return out
    if t.default_system is not None:
        out += "{{ if .System }}" + sys_head + "{{ .System }}" + sys_tail + "{{ else }}" \
            + sys_head + t.default_system + sys_tail + "{{ end }}"
    elif t.family == "llama3":
        out += sys_head + "{{ .System }}" + sys_tail
    else:
        out += "{{ if .System }}" + sys_head + "{{ .System }}" + sys_tail + "{{ end }}"
    turn = t.turn.replace("{role}", "{{ .Role }}").replace("{content}", "{{ .Content }}")
    out += "{{ range .Messages }}{{ if ne .Role \"system\" }}" + turn + "{{ end }}{{ end }}" + t.generation
    return out


def render(t: Turns, messages: list[dict]) -> str:
    """What Ollama's template gives for `messages` (the system prompt goes to .System)."""
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    rest = [m for m in messages if m["role"] != "system"]
    sys_head, _, sys_tail = t.system.partition("{content}")
    if t.family == "gemma":
        out = t.lead
        for i, m in enumerate(rest):
            role = (t.roles or {}).get(m["role"], m["role"])
            content = (system + "\n\n" if i == 0 and system else "") + m["content"]
            out += f"<start_of_turn>{role}\n{content}<end_of_turn>\n"
        return out + t.generation
    out = t.lead
    if system or t.family == "llama3":
        out += sys_head + system + sys_tail
    elif t.default_system is not None:
        out += sys_head + t.default_system + sys_tail
    for m in rest:
        out += t.turn.format(role=(t.roles or {}).get(m["role"], m["role"]), content=m["content"])
    return out + t.generation


def chat_template(model_dir: Path, tokenizer_config: dict | None = None) -> str:
    """The Jinja chat template: in tokenizer_config.json, or chat_template.jinja beside it
    (where transformers 5 saves it, as mlx-lm's save does for fused models)."""
    cfg = tokenizer_config if tokenizer_config is not None else json.loads(
        (Path(model_dir) / "tokenizer_config.json").read_text())
    jinja = Path(model_dir) / "chat_template.jinja"
    return cfg.get("chat_template") or (jinja.read_text(encoding="utf-8") if jinja.is_file() else "")


def turns_for(model_dir: Path) -> Turns | None:
    cfg = json.loads((Path(model_dir) / "tokenizer_config.json").read_text())
    template = chat_template(model_dir, cfg)
    if isinstance(template, list):
        template = next((t.get("template", "") for t in template if t.get("name") == "default"), "")
    tok = json.loads((Path(model_dir) / "tokenizer.json").read_text())
    bos = cfg.get("bos_token")
    bos = bos.get("content") if isinstance(bos, dict) else bos
    post = json.dumps(tok.get("post_processor") or {})
    add_bos = bool(cfg.get("add_bos_token")) or (bos is not None and f'"{bos}"' in post)
    return _family(template, bos, add_bos)


def stop_tokens(model_dir: Path, turns: Turns | None) -> list[str]:
    """The end-of-turn tokens: the family's, the tokenizer's eos, generation_config's eos ids."""
    model_dir = Path(model_dir)
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    by_id = {a["id"]: a["content"] for a in tok.get("added_tokens", [])}
    vocab = {t for t in tok.get("model", {}).get("vocab", {})} | set(by_id.values())
    found: list[str] = [s for s in (turns.stops if turns else ()) if s in vocab]
    cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    eos = cfg.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    if eos:
        found.append(eos)
    for name in ("generation_config.json", "config.json"):
        try:
            ids = json.loads((model_dir / name).read_text()).get("eos_token_id")
        except (OSError, ValueError):
            continue
        for i in ids if isinstance(ids, list) else [ids]:
            if i in by_id:
                found.append(by_id[i])
    return list(dict.fromkeys(found))


def modelfile(gguf_name: str, model_dir: Path) -> tuple[str, str | None]:
    """(Modelfile text, a note when the chat template could not be translated)."""
    turns = turns_for(model_dir)
    lines = [f"FROM ./{gguf_name}", ""]
    note = None
    if turns is not None:
        lines += ['TEMPLATE """' + go_template(turns) + '"""', ""]
    else:
        note = ("The chat template is not one droidft translates (Llama 3, ChatML, Gemma, Phi-3); "
                "the Modelfile has no TEMPLATE, so Ollama uses the template inside the GGUF.")
        lines += ["# " + note, ""]
    for stop in stop_tokens(model_dir, turns):
        lines.append(f"PARAMETER stop {json.dumps(stop)}")
    return "\n".join(lines) + "\n", note


def usage(name: str, gguf_name: str) -> str:
    return (f"```bash\nollama create {name} -f Modelfile\nollama run {name}\n```\n\n"
            f"or with llama.cpp: `llama-cli -m {gguf_name} -cnv`")
