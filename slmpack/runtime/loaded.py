"""``load(package)``: a verified package, its typed manifest, its runner and greedy generation.

    pkg = slmpack.load("out/demo/onnx")
    out = pkg.generate("Return the", max_new_tokens=16)      # text through tokenizer.json
    out.ids, out.text
    pkg.generate([1, 2, 3], max_new_tokens=8)                 # or token ids

Text needs the ``tokenizers`` package (no torch); ids need nothing beyond the format's runtime.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from . import ladder, safetensors, tolerance
from .adapters import open_runner
from .errors import BadInputError, ErrorCode
from .greedy import greedy
from .encoder_manifest import EncoderManifest, is_encoder_document
from .integrity import read_document, require_intact
from .manifest import Manifest

TOKENIZER = "tokenizer.json"


@dataclass(frozen=True)
class Generation:
    prompt_ids: tuple[int, ...]
    ids: tuple[int, ...]            # the generated tokens (without the prompt)
    text: str | None                # decoded ``ids`` (None without a tokenizer)


class LoadedPackage:
    def __init__(self, path: Path, manifest: Manifest, identity: str, threads: int = 0):
        self.path, self.manifest, self.threads = Path(path), manifest, threads
        self.identity = identity    # "sha256:<hex>" of the canonical manifest (integrity.manifest_identity)
        self._runner = None
        self._tokenizer = None

    def runner(self):
        """The package's Runner (opened once; ``reset()`` before reuse)."""
        if self._runner is None:
            self._runner = open_runner(self.path, self.manifest, self.threads)
        return self._runner

    def tokenizer(self):
        if self._tokenizer is None:
            if TOKENIZER not in self.manifest.files:
                raise BadInputError(f"{self.path}: no {TOKENIZER}; pass token ids", ErrorCode.E_TOKENIZER)
            try:
                from tokenizers import Tokenizer
            except ImportError:
                raise BadInputError("text prompts need the 'tokenizers' package; pass token ids",
                                    ErrorCode.E_TOKENIZER) from None
            self._tokenizer = Tokenizer.from_file(str(self.path / TOKENIZER))
        return self._tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer().encode(text, add_special_tokens=False).ids)

    def generate(self, prompt: str | Sequence[int], max_new_tokens: int = 32) -> Generation:
        """Greedy continuation of ``prompt`` (text or token ids), stopping at an EOS token."""
        if isinstance(prompt, str):
            ids = self.encode(prompt)
        else:
            ids = [int(t) for t in prompt]
        m = self.manifest.model
        if not ids or any(not 0 <= t < m.vocab_size for t in ids):
            raise BadInputError(f"prompt ids must be a non-empty list in 0..{m.vocab_size - 1}", ErrorCode.E_RUNNER_INPUT)
        room = m.max_context - len(ids)
        if room < 1:
            raise BadInputError(f"prompt of {len(ids)} tokens leaves no room in max context {m.max_context}",
                                ErrorCode.E_CONTEXT_OVERFLOW)
        out = greedy(self.runner(), np.asarray(ids, dtype=np.int64), min(max_new_tokens, room), m.eos_token_ids)
        text = None
        if TOKENIZER in self.manifest.files:
            try:
                text = self.tokenizer().decode(out)
            except BadInputError:
                text = None
        return Generation(tuple(ids), tuple(out), text)

    def validate(self) -> dict:
        """The package-only ladder (vectors and greedy vs the package's own reference; structural =
        integrity, already checked by ``load``) with the target's declared tolerance."""
        m = self.manifest
        x = ladder.LadderInputs(runner=self.runner(), tolerance=tolerance.checked(m),
                                vectors=safetensors.load(self.path / m.test_vectors.file), exact=m.exact,
                                eos=m.model.eos_token_ids)
        return ladder.run(ladder.PACKAGE_ONLY, x)


def load(package: str | Path, threads: int = 0):
    """Verify ``package`` (integrity, typed manifest) and return it loaded: a ``LoadedPackage``
    (decoders; the runner opens lazily) or an ``EncoderPackage`` (``embed`` / ``classify`` / ``run``)."""
    path = Path(package)
    doc, identity = read_document(path)
    if is_encoder_document(doc):
        from .encoder import open_encoder

        manifest = EncoderManifest.from_json(doc)
        require_intact(path, manifest)
        pkg = open_encoder(path, manifest.to_json())
        pkg.identity = identity
        return pkg
    manifest = Manifest.from_json(doc)
    require_intact(path, manifest)
    return LoadedPackage(path, manifest, identity, threads)


__all__ = ["load", "LoadedPackage", "Generation"]
