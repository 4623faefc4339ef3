"""Chat-template formatting for runtimes that take text (ExecuTorch's TextLLMRunner, Core ML apps).

Torch-free (Python stdlib + jinja2). Renders a Hugging Face chat template the way transformers'
``apply_chat_template`` does: a sandboxed, immutable jinja2 environment (templates cannot touch
Python objects or the file system), ``trim_blocks``/``lstrip_blocks``, ``loopcontrols``, and the
helpers templates use (``raise_exception``, ``strftime_now``, ``tojson`` keeping non-ASCII).
"""
from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from functools import lru_cache

TEMPLATE_FILE = "chat_template.jinja"


class ChatTemplateError(ValueError):
    """The template raised (``raise_exception``) or does not parse."""


def _raise(message: str):
    raise ChatTemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


@lru_cache(maxsize=8)
def _compile(template: str):
    from jinja2 import TemplateSyntaxError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(template)
    except TemplateSyntaxError as e:
        raise ChatTemplateError(f"chat template does not parse: {e}") from None


def render_chat(template: str, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True,
                **special) -> str:
    """The prompt text for ``messages`` ([{"role", "content"}, ...]). ``special`` passes the template's
    other variables (``bos_token``, ``eos_token``, ``tools``, ...), as transformers passes the
    tokenizer's special tokens."""
    return _compile(template).render(messages=[dict(m) for m in messages],
                                     add_generation_prompt=add_generation_prompt, **special)
