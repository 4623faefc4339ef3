"""Chat formatting: render a package's ``chat_template.jinja`` (Hugging Face convention) with
jinja2 when it is installed. Standard library otherwise: no template engine, a clear error.

The environment matches transformers' ``apply_chat_template``: an immutable sandbox (templates
cannot touch Python objects or the file system), ``trim_blocks``/``lstrip_blocks``, the
``loopcontrols`` extension, and the helpers templates use (``raise_exception``, ``strftime_now``,
``tojson`` keeping non-ASCII). For runtimes that take text (ExecuTorch's TextLLMRunner, Core ML apps).
"""
from __future__ import annotations

import datetime
import json
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

from .errors import BadInputError, ErrorCode

TEMPLATE = "chat_template.jinja"
TEMPLATE_FILE = TEMPLATE


def _raise_exception(message: str):
    raise BadInputError(f"chat template: {message}", ErrorCode.E_TOKENIZER)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


@lru_cache(maxsize=8)
def _compile(template: str):
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(template)


def render(template: str, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True,
           **variables) -> str:
    """``template`` applied to ``messages`` ([{"role", "content"}]) in a sandboxed jinja2 environment;
    ``variables``: the template's other inputs (``bos_token``, ``eos_token``, ``tools``, ...)."""
    try:
        import jinja2  # noqa: F401
    except ImportError:
        raise BadInputError("chat templates need the 'jinja2' package", ErrorCode.E_TOKENIZER) from None
    try:
        return _compile(template).render(messages=[dict(m) for m in messages],
                                         add_generation_prompt=add_generation_prompt, **variables)
    except BadInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - jinja2's TemplateError family and template bugs
        raise BadInputError(f"chat template failed: {type(exc).__name__}: {exc}", ErrorCode.E_TOKENIZER) from None


def render_chat(template: str, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True,
                **special) -> str:
    """The prompt text for ``messages``; ``special``: bos_token / eos_token / ... as transformers passes them."""
    return render(template, messages, add_generation_prompt=add_generation_prompt, **special)


def apply_chat_template(package: str | Path, messages: Sequence[Mapping[str, str]], **kw) -> str:
    path = Path(package) / TEMPLATE
    if path.is_symlink() or not path.is_file():
        raise BadInputError(f"{Path(package)}: no {TEMPLATE}", ErrorCode.E_TOKENIZER)
    return render(path.read_text(encoding="utf-8"), messages, **kw)


__all__ = ["render", "render_chat", "apply_chat_template", "TEMPLATE", "TEMPLATE_FILE"]
