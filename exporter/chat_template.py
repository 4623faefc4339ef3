"""The checkpoint's chat template and the stop tokens every runtime gets.

Where the template comes from, first found wins: ``chat_template.jinja`` (transformers 5),
``tokenizer_config.json``'s ``chat_template`` (a string, or a list of named templates: "default"),
``chat_template.json``'s ``chat_template``. The template is data: it is only ever rendered in
jinja2's immutable sandbox (slmpack.runtime.chat).

Stop tokens: every eos id of ``generation_config`` (an int or a list; config.json's when it has none), then the
template's end-of-turn token: the first special token the template writes after an assistant
message's content (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``, ...).
"""
from __future__ import annotations

from dataclasses import dataclass

from slmpack.errors import BadInputError
from slmpack import confine
from slmpack.exporter.checkpoint import as_root
from slmpack.runtime.chat import TEMPLATE_FILE, render_chat

_PROBE = "SLMPACK_REPLY_PROBE"
MAX_TEMPLATE_BYTES = 4 << 20


@dataclass(frozen=True)
class ChatInfo:
    template: str | None          # None: a base model (prompts go in as they are)
    source: str | None            # the file the template was read from
    end_of_turn: str | None       # the template's end-of-turn token text
    stop_token_ids: tuple[int, ...]

    def to_json(self) -> dict:
        return {"template_file": TEMPLATE_FILE if self.template else None, "template_source": self.source,
                "end_of_turn": self.end_of_turn, "stop_token_ids": list(self.stop_token_ids)}


def _json(root, name: str) -> dict:
    """A JSON object read through the confined reader (regular file inside the model dir)."""
    if not confine.exists(root, name):
        return {}
    data = confine.read_json(root, name)
    return data if isinstance(data, dict) else {}


def _pick(value) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {d.get("name"): d.get("template") for d in value if isinstance(d, dict)}
        return _pick(named.get("default"))
    return None


def find_template(model_dir) -> tuple[str | None, str | None]:
    root = as_root(model_dir)
    if confine.exists(root, TEMPLATE_FILE):
        return confine.read_bytes(root, TEMPLATE_FILE, MAX_TEMPLATE_BYTES).decode("utf-8", "replace"), TEMPLATE_FILE
    for name in ("tokenizer_config.json", "chat_template.json"):
        tmpl = _pick(_json(root, name).get("chat_template"))
        if tmpl:
            return tmpl, name
    return None, None


def special_tokens(model_dir) -> dict[str, str]:
    """bos_token / eos_token / ... strings from tokenizer_config.json, as templates expect them."""
    cfg = _json(as_root(model_dir), "tokenizer_config.json")
    out = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        v = cfg.get(key)
        v = v.get("content") if isinstance(v, dict) else v
        if isinstance(v, str):
            out[key] = v
    return out


def end_of_turn(template: str, tokenizer, special: dict[str, str]) -> tuple[str | None, int | None]:
    """The first special token the template writes after an assistant reply."""
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
    try:
        text = render_chat(template, msgs, add_generation_prompt=False, **special)
    except BadInputError as e:
        raise BadInputError(f"chat template cannot render a user/assistant exchange: {e}", "E_CHAT_TEMPLATE") from None
    if _PROBE not in text or tokenizer is None:
        return None, None
    tail = text.split(_PROBE, 1)[1]
    specials = {i: t.content for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    for tid in tokenizer.encode(tail, add_special_tokens=False).ids:
        if tid in specials:
            return specials[tid], tid
    return None, None


def _ids(value) -> list[int]:
    if value is None:
        return []
    return [int(value)] if isinstance(value, int) else [int(v) for v in value]


def chat_info(model_dir, tokenizer, gen: dict) -> ChatInfo:
    template, source = find_template(model_dir)
    eot_text, eot_id = end_of_turn(template, tokenizer, special_tokens(model_dir)) if template else (None, None)
    stops: list[int] = []
    for tid in _ids(gen.get("eos_token_id")) + _ids(eot_id):
        if tid not in stops:
            stops.append(tid)
    return ChatInfo(template, source, eot_text, tuple(stops))


def with_stops(gen: dict, chat: ChatInfo) -> dict:
    """generation_config with the full stop list (what every runtime's config receives)."""
    if not chat.stop_token_ids:
        return gen
    stops = list(chat.stop_token_ids)
    return {**gen, "eos_token_id": stops[0] if len(stops) == 1 else stops}
