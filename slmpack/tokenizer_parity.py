"""Tokenizer parity certificate: each runtime's *own* tokenizer against the Hugging Face tokenizer.

For every line of the corpus (slmpack/demo_data/tokenizer_corpus.txt, 2,400 lines: English, code,
CJK, emoji, RTL, combining marks, whitespace runs, literal special-token strings) the runtime's ids
must equal ``tokenizers.Tokenizer.encode(line, add_special_tokens=False)``, and the runtime's decode
of those ids must equal the HF decode (``skip_special_tokens=False``). A mismatch names the runtime
and the (1-based) line. Runtimes' tokenizers:

* ``onnxruntime-genai``  ``og.Tokenizer`` (onnxruntime-extensions) over the package directory (its
                         decode skips special tokens: compared with HF's skip_special_tokens=True);
* ``executorch``         ``pytorch_tokenizers`` C++ ``HFTokenizer``, the tokenizer TextLLMRunner links;
* ``litert-lm``          ``litert_lm.Engine.tokenize / detokenize`` on the ``.litertlm`` bundle.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

Encode = Callable[[str], list[int]]
Decode = Callable[[list[int]], str]


@dataclass(frozen=True)
class Parity:
    runtime: str
    lines: int
    mismatches: int
    first_mismatch: int | None      # 1-based corpus line
    detail: str | None = None        # what differed on that line
    decode_unchecked: int = 0        # lines whose decode the runtime's binding cannot return (see executorch_cpp)
    not_checked: str | None = None   # why no line was compared (the runtime is not installed here)

    @property
    def passed(self) -> bool:
        return self.mismatches == 0

    def to_json(self) -> dict:
        return asdict(self)


def corpus_path() -> Path:
    from slmpack.bundled import demo_data_dir

    return demo_data_dir() / "tokenizer_corpus.txt"


def corpus_lines(path: Path | None = None) -> list[str]:
    text = Path(path or corpus_path()).read_text(encoding="utf-8")
    return text.split("\n")[:-1]     # not splitlines(): lines keep \u2028, \x0c, trailing whitespace


def compare(runtime: str, encode: Encode, decode: Decode, hf, lines: list[str], skip_special: bool = False) -> Parity:
    """``skip_special``: the runtime's decode drops special tokens (onnxruntime-genai's does), so it
    is compared with HF's ``decode(skip_special_tokens=True)``."""
    bad, first, detail, unchecked = 0, None, None, 0
    for i, line in enumerate(lines, 1):
        want = hf.encode(line, add_special_tokens=False).ids
        got = [int(t) for t in encode(line)]
        why = None
        if got != want:
            why = f"ids {got[:12]} != {want[:12]}"
        else:
            try:
                text = decode(got)
            except UnicodeDecodeError:
                unchecked += 1
                continue
            want_text = hf.decode(want, skip_special_tokens=skip_special)
            if text != want_text:
                why = f"decode {text!r} != {want_text!r}"
        if why:
            bad += 1
            if first is None:
                first, detail = i, why
    return Parity(runtime, len(lines), bad, first, detail, unchecked)


def ort_genai(pkg_dir: Path) -> tuple[Encode, Decode]:
    import onnxruntime_genai as og

    tok = og.Tokenizer(og.Model(str(pkg_dir)))
    return (lambda s: list(tok.encode(s)) if s else []), (lambda ids: tok.decode(ids) if ids else "")


def executorch_cpp(tokenizer_json: Path) -> tuple[Encode, Decode]:
    """The C++ tokenizer's own ``encode`` (no BOS/EOS) and ``decode_batch`` (whole sequence; its
    one-piece ``decode`` returns partial UTF-8 pieces as str and raises in the Python binding)."""
    from pytorch_tokenizers.pytorch_tokenizers_cpp import HFTokenizer

    tok = HFTokenizer()
    tok.load(str(tokenizer_json))
    return (lambda s: tok.encode(s, 0, 0)), (lambda ids: tok.decode_batch(ids, False))


@contextmanager
def litert_lm(bundle: Path) -> Iterator[tuple[Encode, Decode]]:
    import litert_lm as lm

    with tempfile.TemporaryDirectory(prefix="slmpack_litertlm_tok_") as cache:
        engine = lm.Engine(str(bundle), backend=lm.Backend.CPU(thread_count=1), cache_dir=cache)
        try:
            yield (lambda s: list(engine.tokenize(s))), (lambda ids: engine.detokenize(ids))
        finally:
            engine.close()


def unloadable(runtime: str, lines: list[str], error: Exception) -> Parity:
    """The runtime refuses the tokenizer file: every line counts as a mismatch."""
    msg = str(error).splitlines()[0] if str(error) else type(error).__name__
    return Parity(runtime, len(lines), len(lines), 1, f"runtime cannot load the tokenizer: {msg}")


def not_installed(runtime: str, install: str) -> Parity:
    """The runtime's Python binding is absent here (e.g. ``slmpack[onnx]`` without onnxruntime-genai):
    nothing compared, nothing failed; the report says how to get the check."""
    return Parity(runtime, 0, 0, None, not_checked=f"not installed here: {install}")


def certify(target_name: str, pkg_dir: Path, manifest: dict) -> dict[str, Parity]:
    """Parity of the tokenizer(s) the target's runtime uses, on the corpus. Core ML has none (the app
    brings its own, e.g. swift-transformers): empty."""
    from tokenizers import Tokenizer

    tok_json = pkg_dir / "tokenizer.json"
    if not tok_json.is_file():
        return {}
    hf, lines = Tokenizer.from_file(str(tok_json)), corpus_lines()
    if target_name == "onnx":
        try:
            enc, dec = ort_genai(pkg_dir)
        except ModuleNotFoundError:
            return {"onnxruntime-genai": not_installed("onnxruntime-genai", "pip install onnxruntime-genai==0.18.0")}
        except RuntimeError as e:   # onnxruntime-extensions rejects some tokenizer.json models
            return {"onnxruntime-genai": unloadable("onnxruntime-genai", lines, e)}
        return {"onnxruntime-genai": compare("onnxruntime-genai", enc, dec, hf, lines, skip_special=True)}
    if target_name == "executorch":
        try:
            enc, dec = executorch_cpp(tok_json)
        except RuntimeError as e:   # the C++ HFTokenizer parses a subset of tokenizer.json models
            return {"executorch": unloadable("executorch", lines, e)}
        return {"executorch": compare("executorch", enc, dec, hf, lines)}
    if target_name == "tflite":
        bundle = (manifest.get("runtime") or {}).get("litert_lm", {}).get("file")
        if bundle:
            with litert_lm(pkg_dir / bundle) as (enc, dec):
                return {"litert-lm": compare("litert-lm", enc, dec, hf, lines)}
    return {}
