"""``model.litertlm``: the .tflite plus tokenizer and LLM metadata, as LiteRT-LM's runtime loads it.

Conventions LiteRT-LM's executor requires of the .tflite (all met by module.py; found in
LiteRT-LM ``runtime/executor/litert_compiled_model_executor_utils.cc`` and seen working with
``litert-lm-api`` 0.18.1):
  * signatures ``decode`` and ``prefill*`` (the prefill length is read from ``input_pos``'s shape);
  * inputs named ``tokens`` (or ``token_ids``) int32 [1, S] and ``input_pos`` (or ``positions``)
    int32 [S]; an attention-mask input is optional (ours is computed in the graph);
  * output ``logits``; caches named ``kv_cache_k_<i>`` / ``kv_cache_v_<i>``, the sequence on
    dimension 2 of the K cache (the runtime reads the context length there: a [1, T, H, D]
    cache makes it report a context of H tokens).
Padding: the runtime zero-fills tokens *and positions* past the prompt in a prefill signature;
our graph writes the cache at ``input_pos[0]`` contiguously, so that padding is harmless.

The bundle is byte-reproducible: litert-lm-builder stamps a random uuid and the wall-clock time
into its system metadata; we replace them by a uuid derived from the bundle's contents and the
``SOURCE_DATE_EPOCH`` time (default 0).
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import tempfile
import uuid
from pathlib import Path

from slmpack.runtime.chat import TEMPLATE_FILE

BUNDLE = "model.litertlm"


def start_token_id(tokenizer_path: Path, bos: int | None) -> int | None:
    """The BOS id iff our tokenizer (as the pipeline uses it) puts it in front of the text."""
    if bos is None:
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    with_special = tok.encode("x").ids
    plain = tok.encode("x", add_special_tokens=False).ids
    return bos if with_special[:1] == [bos] and plain[:1] != [bos] else None


# LiteRT-LM's Conversation hands the template each message's content as a list of parts
# ([{"type": "text", "text": ...}]), where Hugging Face templates of text models expect a string
# (seen with litert-lm-api 0.18.1: a ChatML template rendered the list itself). This preamble,
# which renders nothing, rebuilds ``messages`` with string contents (text parts joined) first.
CONTENT_AS_TEXT = (
    "{%- set ns = namespace(msgs=[]) -%}{%- for m in messages -%}{%- if m['content'] is string -%}"
    "{%- set ns.msgs = ns.msgs + [m] -%}{%- else -%}{%- set ns.text = '' -%}{%- for p in m['content'] -%}"
    "{%- if p['type'] == 'text' -%}{%- set ns.text = ns.text + p['text'] -%}{%- endif -%}{%- endfor -%}"
    "{%- set ns.msgs = ns.msgs + [{'role': m['role'], 'content': ns.text}] -%}{%- endif -%}{%- endfor -%}"
    "{%- set messages = ns.msgs -%}")


def chat_template(package_dir: Path) -> str | None:
    """The package's chat_template.jinja (the pipeline writes it from whichever file the checkpoint
    used), behind the CONTENT_AS_TEXT preamble."""
    path = package_dir / TEMPLATE_FILE
    return CONTENT_AS_TEXT + path.read_text(encoding="utf-8") if path.is_file() else None


def llm_metadata(spec, gen: dict, max_context: int, tokenizer_path: Path):
    from litert_lm_builder.runtime.proto import llm_metadata_pb2, llm_model_type_pb2, sampler_params_pb2

    md = llm_metadata_pb2.LlmMetadata()
    start = start_token_id(tokenizer_path, gen.get("bos_token_id", spec.bos_token_id))
    if start is not None:
        md.start_token.token_ids.ids.append(int(start))
    eos = gen.get("eos_token_id")
    for e in ([eos] if isinstance(eos, int) else list(eos or spec.eos_token_ids)):
        md.stop_tokens.add().token_ids.ids.append(int(e))
    tmpl = chat_template(tokenizer_path.parent)
    if tmpl:
        md.jinja_prompt_template = tmpl
    else:  # a base model: the prompt goes in as it is
        for turn in (md.prompt_templates.user, md.prompt_templates.model):
            turn.prefix, turn.suffix = "", ""
    md.max_num_tokens = int(max_context)
    md.llm_model_type.CopyFrom(llm_model_type_pb2.LlmModelType(generic_model=llm_model_type_pb2.GenericModel()))
    if not gen.get("do_sample", False):
        md.sampler_params.type = sampler_params_pb2.SamplerParameters.GREEDY
        md.sampler_params.k = 1
    return md


@contextlib.contextmanager
def _reproducible_system_metadata(lb, seed: bytes):
    """Replace litert-lm-builder's random uuid / wall-clock timestamp for one build."""
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    stamp = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat()
    fixed_uuid = str(uuid.UUID(bytes=hashlib.sha256(seed).digest()[:16], version=5))
    original = lb.populate_system_metadata

    def populate(system_metadata):
        kept = [m for m in system_metadata if m.key not in ("uuid", "creation_timestamp")]
        return kept + [lb.Metadata(key="uuid", value=fixed_uuid, dtype=lb.DType.STRING),
                       lb.Metadata(key="creation_timestamp", value=stamp, dtype=lb.DType.STRING)]

    lb.populate_system_metadata = populate
    try:
        yield
    finally:
        lb.populate_system_metadata = original


def build_bundle(out_dir: Path, tflite_name: str, tokenizer_path: Path, spec, gen: dict,
                 max_context: int) -> dict:
    """Write ``out_dir/model.litertlm``; return its description for the manifest."""
    from litert_lm_builder import litertlm_builder as lb

    md = llm_metadata(spec, gen, max_context, tokenizer_path)
    tflite = out_dir / tflite_name
    seed = hashlib.sha256(tflite.read_bytes()).digest() + md.SerializeToString() + tokenizer_path.read_bytes()
    with tempfile.TemporaryDirectory(prefix="tfl_litertlm_") as tmp:
        md_path = Path(tmp) / "llm_metadata.pb"
        md_path.write_bytes(md.SerializeToString(deterministic=True))
        b = lb.LitertLmFileBuilder()
        b.add_system_metadata(lb.Metadata(key="Authors", value="slmpack", dtype=lb.DType.STRING))
        b.add_llm_metadata(str(md_path))
        b.add_hf_tokenizer(str(tokenizer_path))
        b.add_tflite_model(str(tflite), lb.TfLiteModelType.PREFILL_DECODE)
        with _reproducible_system_metadata(lb, seed), open(out_dir / BUNDLE, "wb") as f:
            b.build(f)
    return {"file": BUNDLE, "runtime": "litert-lm", "model_type": "generic",
            "start_token_id": md.start_token.token_ids.ids[0] if md.start_token.token_ids.ids else None,
            "stop_token_ids": [t.token_ids.ids[0] for t in md.stop_tokens],
            "prompt_template": "jinja" if md.jinja_prompt_template else "identity (base model)",
            "sampler": "greedy" if md.sampler_params.type else "runtime default",
            "max_num_tokens": md.max_num_tokens}


def generate(bundle: Path, prompt: str, max_tokens: int, threads: int = 1, apply_template: bool = False) -> str:
    """Greedy text from the unmodified LiteRT-LM runtime (litert-lm-api). The runtime writes an
    XNNPACK weight cache beside the model unless told otherwise: keep it out of the package."""
    import litert_lm

    with tempfile.TemporaryDirectory(prefix="tfl_litertlm_cache_") as cache:
        engine = litert_lm.Engine(str(bundle), backend=litert_lm.Backend.CPU(thread_count=threads),
                                  cache_dir=cache)
        try:
            session = engine.create_session(apply_prompt_template=apply_template,
                                            sampler_config=litert_lm.SamplerConfig(top_k=1),
                                            max_output_tokens=max_tokens)
            session.run_prefill([prompt])
            return session.run_decode().texts[0]
        finally:
            engine.close()


def generate_chat(bundle: Path, messages: list[dict], max_tokens: int, threads: int = 1) -> str:
    """Greedy reply through LiteRT-LM's own chat path: a Conversation (prompt-template applied by
    the runtime from the bundle's ``jinja_prompt_template``), earlier turns as history, the last
    message sent."""
    import litert_lm

    with tempfile.TemporaryDirectory(prefix="tfl_litertlm_cache_") as cache:
        engine = litert_lm.Engine(str(bundle), backend=litert_lm.Backend.CPU(thread_count=threads),
                                  cache_dir=cache)
        try:
            conv = engine.create_conversation(messages=list(messages[:-1]), max_output_tokens=max_tokens,
                                              sampler_config=litert_lm.SamplerConfig(top_k=1))
            reply = conv.send_message(dict(messages[-1]))
            content = reply.get("content", "")   # a Message is a dict: {"role", "content": str | [parts]}
            return content if isinstance(content, str) else "".join(
                p.get("text", "") for p in content if p.get("type") == "text")
        finally:
            engine.close()
