"""Chat formatting: render a package's ``chat_template.jinja`` (Hugging Face convention) with
jinja2 when it is installed. Standard library otherwise: no template engine, a clear error."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from .errors import BadInputError, ErrorCode

TEMPLATE = "chat_template.jinja"


def _raise_exception(message: str):
    raise BadInputError(f"chat template: {message}", ErrorCode.E_TOKENIZER)


def render(template: str, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True,
           **variables) -> str:
    """``template`` applied to ``messages`` ([{"role", "content"}]) in a sandboxed jinja2 environment."""
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise BadInputError("chat templates need the 'jinja2' package", ErrorCode.E_TOKENIZER) from None
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    try:
        return env.from_string(template).render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                                **variables)
    except BadInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - jinja2's TemplateError family and template bugs
        raise BadInputError(f"chat template failed: {type(exc).__name__}: {exc}", ErrorCode.E_TOKENIZER) from None


def apply_chat_template(package: str | Path, messages: Sequence[Mapping[str, str]], **kw) -> str:
    path = Path(package) / TEMPLATE
    if path.is_symlink() or not path.is_file():
        raise BadInputError(f"{Path(package)}: no {TEMPLATE}", ErrorCode.E_TOKENIZER)
    return render(path.read_text(encoding="utf-8"), messages, **kw)


__all__ = ["render", "apply_chat_template", "TEMPLATE"]
