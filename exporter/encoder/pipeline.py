"""The encoder export flow: checkpoint -> EncoderSpec + reference -> traced program -> target
artifact -> package (tokenizer, test vectors, manifest) -> encoder ladder. Atomic like decoders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from slmpack.config import ExportConfig
from slmpack.errors import UnsupportedError
from slmpack import confine
from slmpack.exporter.checkpoint import as_root, checkpoint_digest, load_state_dict, weight_files
from slmpack.confine import ModelRoot
from slmpack.exporter.inputs import MAX_TOKENIZER_BYTES
from slmpack.exporter.encoder import quant as encoder_quant
from slmpack.exporter.encoder.ladder import FP32, QUANTIZED, run_encoder_ladder
from slmpack.exporter.encoder.program import trace_encoder
from slmpack.exporter.encoder.reference import EncoderReference, build_encoder
from slmpack.exporter.encoder.sentences import load_sentences
from slmpack.exporter.encoder.spec import EncoderSpec, load_encoder_spec
from slmpack.exporter.encoder.targets import encoder_target
from slmpack.package import MANIFEST, SCHEMA_VERSION, check_output_path, hash_tree, staged_directory, write_json
from slmpack.progress import QUIET, Progress
from slmpack.runtime.encoder import length_order, load_tokenizer, open_encoder, tokenize

ST_FILES = ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
VECTOR_ROWS = 8


def reference_outputs(ref: EncoderReference, tok, texts: list[str], batch: int = 32):
    """The reference's output for ``texts``, tokenized and batched exactly as the runtime does."""
    s = ref.spec
    order = length_order(tok, texts)
    outs: list = [None] * len(texts)
    for start in range(0, len(texts), batch):
        idx = order[start:start + batch]
        b = tokenize(tok, [texts[i] for i in idx], s.max_sequence, s.pad_token_id, s.uses_token_type_ids)
        with torch.no_grad():
            y = ref(torch.from_numpy(b.input_ids), torch.from_numpy(b.attention_mask),
                    None if b.token_type_ids is None else torch.from_numpy(b.token_type_ids)).numpy()
        for j, i in enumerate(idx):
            outs[i] = y[j, : int(b.attention_mask[j].sum())] if s.output.value == "last_hidden_state" else y[j]
    return outs if s.output.value == "last_hidden_state" else np.stack(outs)


def test_vectors(ref: EncoderReference, tok, sentences: list[str]) -> dict:
    """A padded batch (short, long, non-ASCII rows) and the reference output for it."""
    s = ref.spec
    pick = sorted(set(np.linspace(0, len(sentences) - 1, VECTOR_ROWS).astype(int).tolist()))
    b = tokenize(tok, [sentences[i] for i in pick], s.max_sequence, s.pad_token_id, s.uses_token_type_ids)
    with torch.no_grad():
        y = ref(torch.from_numpy(b.input_ids), torch.from_numpy(b.attention_mask),
                None if b.token_type_ids is None else torch.from_numpy(b.token_type_ids)).numpy()
    out = {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "expected": y.astype(np.float32)}
    if b.token_type_ids is not None:
        out["token_type_ids"] = b.token_type_ids
    return out


def copy_inputs(model_dir, stage: Path) -> list[str]:
    """Copy tokenizer and sentence-transformers files through the confined reader: every component a
    real directory / regular file inside the model dir, never a symlink out."""
    root = as_root(model_dir)
    copied = []
    for name in (*TOKENIZER_FILES, *ST_FILES):
        *dirs, leaf = name.split("/")
        sub = root
        for d in dirs:
            p = sub.path / d
            if p.is_symlink() or not p.is_dir():
                sub = None
                break
            sub = ModelRoot(p, root.follow_symlinks)
        if sub is None or not confine.exists(sub, leaf):
            continue
        (stage / name).parent.mkdir(parents=True, exist_ok=True)
        (stage / name).write_bytes(confine.read_bytes(sub, leaf, MAX_TOKENIZER_BYTES))
        copied.append(name)
    return copied


def quantization_block(quant) -> dict:
    if quant is None:
        return {"plan": None}
    from slmpack.exporter.quantize_stage import precision_label

    # the plan's integers live only in the artifact (no quant_plan.safetensors copy in the package)
    return {"recipe": quant.recipe.name, "precision": precision_label(quant.plan), "algorithm": "rtn",
            "summary": quant.plan.summary(), "dynamic_activations": sorted(quant.executed.activations),
            "plan_shipped": False}


def manifest_for(spec: EncoderSpec, et, artifact, programs, digest, model_dir, files, sentences_src, toolchain,
                 quant=None) -> dict:
    tol = et.tolerance_for(quant)
    quantization = quantization_block(quant)
    return {
        "schema_version": SCHEMA_VERSION, "target": et.name.value, "artifact": artifact.primary,
        "source": {"checkpoint_sha256": digest, "architecture": spec.architecture, "model_dir_name": model_dir.name},
        "model": spec.to_json(), "precision": quantization.get("precision", "fp32"), "quantization": quantization,
        "encoder": {"output": spec.output.value, "inputs": list(programs.input_names),
                    "max_sequence": spec.max_sequence, "max_batch": et.max_batch, "id2label": list(spec.id2label),
                    "pooling": spec.sentence.pooling.value if spec.sentence else None,
                    "normalize": bool(spec.sentence and spec.sentence.normalize)},
        "io": artifact.io.to_json(), "kv_cache": {"layout": "none"}, "runtime": artifact.runtime.to_json(),
        "tolerance": {"atol": tol.atol, "rtol": tol.rtol}, "report": artifact.report.to_json(),
        "toolchain": toolchain, "tokenizer": {"files": sorted(f for f in files if f in TOKENIZER_FILES)},
        "test_vectors": {"file": "test_vectors.safetensors", "eval_text": sentences_src,
                         "reference": "fp32" if quant is None else "plan fake-quant (runtime's activation quantization)",
                         "activation_slack": bool(quant is not None and quant.has_activations)},
    }


def export_encoder(model_dir: Path, target_name: str, out: Path, cfg: ExportConfig = ExportConfig(),
                   progress: Progress = QUIET, eval_text: Path | None = None):
    from slmpack.exporter.pipeline import Package
    from slmpack.exporter.stages import toolchain_versions

    et = encoder_target(target_name)
    with progress.stage("preflight"):
        spec = load_encoder_spec(model_dir)
        check_output_path(Path(out), cfg.force)
        qpre = encoder_quant.preflight(spec, et, cfg.quant)
        weight_files(model_dir, cfg.allow_pickle)
        if not (model_dir / "tokenizer.json").is_file():
            raise UnsupportedError(f"{model_dir}: an encoder package needs tokenizer.json", "E_TOKENIZER")
    with progress.stage("load checkpoint"):
        ref = build_encoder(spec, load_state_dict(model_dir, cfg.allow_pickle))
        digest = checkpoint_digest(model_dir, cfg.allow_pickle)
        tok = load_tokenizer(model_dir, spec.max_sequence)
        sentences, sentences_src = load_sentences(eval_text)
    quant = None
    if qpre is not None:
        with progress.stage(f"quantize ({qpre.recipe.name}, round-to-nearest)"):
            quant = encoder_quant.build(qpre, ref)
    with progress.stage("trace (encoder)"):
        programs = trace_encoder(quant.reference if quant else ref, max_batch=et.max_batch,
                                 export_program=et.needs_program)
    with staged_directory(Path(out), cfg.force) as stage:
        files = copy_inputs(model_dir, stage)
        with progress.stage(f"lower to {et.name.value}"):
            artifact = et.lower()(programs, spec, stage, plan=quant.plan if quant else None)
        with progress.stage("reference test vectors"):
            if quant is None:
                vectors = test_vectors(ref, tok, sentences)
            else:
                with encoder_quant.validation_reference(quant) as fq:
                    vectors = test_vectors(fq, tok, sentences)
                if quant.has_activations:  # the bound's activation slack (runtime/encoder_check.py)
                    vectors["expected_float_activations"] = test_vectors(quant.reference, tok, sentences)["expected"]
            save_file(vectors, str(stage / "test_vectors.safetensors"), metadata={"format": "slmpack-encoder-vectors-1"})
        manifest = manifest_for(spec, et, artifact, programs, digest, model_dir, files, sentences_src,
                                toolchain_versions(), quant)
        manifest["files"] = hash_tree(stage)
        write_json(stage / MANIFEST, manifest)
        if cfg.validate:
            with progress.stage("validate"):
                package = open_encoder(stage, manifest)
                ref_out = reference_outputs(ref, tok, sentences)
                manifest["validation"] = run_encoder_ladder(et.check()(stage, manifest), package, vectors,
                                                            et.tolerance_for(quant), ref_out, sentences,
                                                            FP32 if quant is None else QUANTIZED)
            write_json(stage / MANIFEST, manifest)
    return Package(Path(out), manifest)
