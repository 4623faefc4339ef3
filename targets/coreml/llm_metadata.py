"""LLM facts an app needs, in the .mlpackage's user-defined metadata (``MLModel.user_defined_metadata``
/ ``MLModelDescription.metadata[.creatorDefinedKey]``): context, stop tokens, BOS and the chat
template, so a Swift app needs nothing but the package (format the prompt with the template, e.g.
swift-jinja; stop on any of the ids)."""
from __future__ import annotations

import json


def llm_metadata(gen: dict, max_prompt: int, max_context: int, chat_template: str | None) -> dict[str, str]:
    eos = gen.get("eos_token_id")
    stops = [] if eos is None else ([int(eos)] if isinstance(eos, int) else [int(e) for e in eos])
    out = {"slmpack.max_context": str(int(max_context)), "slmpack.max_prompt": str(int(max_prompt)),
           "slmpack.stop_token_ids": json.dumps(stops)}
    if gen.get("bos_token_id") is not None:
        out["slmpack.bos_token_id"] = str(int(gen["bos_token_id"]))
    if chat_template:
        out["slmpack.chat_template"] = chat_template
    return out


def read_metadata(package) -> dict[str, str]:
    """A saved .mlpackage's user-defined metadata (read from its spec: no Core ML runtime needed)."""
    import coremltools as ct

    return dict(ct.utils.load_spec(str(package)).description.metadata.userDefined)


def read_context(package) -> int:
    return int(read_metadata(package)["slmpack.max_context"])
