"""The runtime kit stands alone: standard library, numpy and the format's runtime only, relative
imports inside; its safetensors reader is strict; its ladder and greedy behave."""
from __future__ import annotations

import ast
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import slmpack.runtime as kit
from slmpack.errors import BadInputError, ErrorCode
from slmpack.runtime import safetensors as st

KIT = Path(kit.__file__).parent
STDLIB = set(sys.stdlib_module_names)
RUNTIMES = {"numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime", "executorch", "torch", "coremltools",
            "tokenizers", "jinja2"}
# which third-party module each kit file may import (torch: only the ExecuTorch adapter, because
# executorch's pybindings take torch tensors)
OWN = {"adapters/onnx.py": {"onnxruntime"}, "adapters/tflite.py": {"ai_edge_litert", "tflite_runtime"},
       "adapters/executorch.py": {"executorch", "torch"}, "adapters/coreml.py": {"coremltools"},
       "mil/dtypes.py": {"coremltools"}, "mil/program.py": {"coremltools"}, "loaded.py": {"tokenizers"},
       "chat.py": {"jinja2"}, "signature.py": {"cryptography"},   # --require-signature only
       # the encoder runner holds one backend per format (each imported only when that format is used)
       "encoder.py": {"tokenizers", "onnxruntime", "executorch", "torch", "ai_edge_litert", "tflite_runtime"}}


def test_kit_imports_only_stdlib_numpy_and_its_runtime_relatively():
    for path in sorted(KIT.rglob("*.py")):
        rel = path.relative_to(KIT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue                                   # relative: inside the kit
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) else []
            for n in names:
                top = n.split(".")[0]
                assert top in STDLIB or top == "numpy" or top in OWN.get(rel, set()), (rel, n)


BLOCK = """
import sys, importlib.util
BLOCKED = set(sys.argv[2].split(","))
class Block:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in BLOCKED or name == "slmpack" or name.startswith("slmpack."):
            raise ImportError(f"the kit must not import {name}")
sys.meta_path.insert(0, Block())
d = sys.argv[1]
spec = importlib.util.spec_from_file_location("kit", d + "/__init__.py", submodule_search_locations=[d])
mod = importlib.util.module_from_spec(spec); sys.modules["kit"] = mod; spec.loader.exec_module(mod)
import importlib, json
from pathlib import Path
device = importlib.import_module("kit.device")
print(json.dumps(device.validate(Path(sys.argv[3]), 1, 32)))
"""


def run_blocked(pkg: Path, blocked: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", BLOCK, str(KIT), blocked, str(pkg)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_kit_runs_a_litert_package_with_torch_transformers_and_slmpack_blocked(kit_package):
    doc = run_blocked(kit_package, "torch,transformers,safetensors")
    assert doc["ok"] and doc["greedy_match"] and doc["runtime"]["name"] == "ai_edge_litert", doc


def _header(obj, data=b"") -> bytes:
    h = json.dumps(obj).encode()
    return struct.pack("<Q", len(h)) + h + data


@pytest.mark.parametrize("blob, why", [
    (b"\x01\x02", "too short"),
    (struct.pack("<Q", 1 << 40) + b"{}", "exceeds"),
    (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    (_header({"a": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), "unknown dtype"),
    (_header({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4), "do not hold"),
    (_header({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 4), "do not hold"),
    (_header({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4), "shape"),
    (_header({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
              "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), "overlap"),
    (_header({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": 1}}, b"\0" * 4), "exactly"),
    (_header({"__metadata__": {"k": 1}}), "__metadata__"),
    (struct.pack("<Q", 20) + b'{"a": 1, "a": 2}    ', "duplicate"),
    (struct.pack("<Q", 400002) + b"[" * 200001 + b"]" * 200001, "bad header"),
])
def test_safetensors_reader_refuses_malformed_files(blob, why):
    with pytest.raises(BadInputError) as e:
        st.loads(blob)
    assert e.value.code is ErrorCode.E_SAFETENSORS_INVALID and why in e.value.message


def test_safetensors_reader_survives_random_mutations():
    """Flipped bytes of a valid file either parse to arrays of the declared sizes or raise the typed error."""
    rng = np.random.default_rng(0)
    good = _header({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                    "i": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}}, bytes(range(40)))
    assert st.loads(good)["w"].shape == (2, 3)
    for _ in range(2000):
        blob = bytearray(good)
        for i in rng.integers(0, len(blob), rng.integers(1, 4)):
            blob[i] = int(rng.integers(0, 256))
        try:
            out = st.loads(bytes(blob))
        except BadInputError as e:
            assert e.code is ErrorCode.E_SAFETENSORS_INVALID
        else:
            assert sum(a.nbytes for a in out.values()) <= len(blob)


class Counter:
    """A runner whose next token is always (last token + 1) mod V: greedy is known exactly."""

    max_prompt, max_context, vocab = 4, 64, 11

    def reset(self):
        self.pos = 0

    def _logits(self, ids):
        out = np.zeros((len(ids), self.vocab), np.float32)
        out[np.arange(len(ids)), (np.asarray(ids) + 1) % self.vocab] = 1.0
        self.pos += len(ids)
        return out

    def prefill(self, ids):
        assert 1 <= len(ids) <= self.max_prompt
        return self._logits(ids)

    def decode(self, token, pos):
        assert pos == self.pos
        return self._logits([token])[0]


def test_greedy_chunks_the_prompt_and_stops_at_eos():
    from slmpack.runtime.greedy import greedy

    r = Counter()
    assert greedy(r, np.array([1, 2, 3, 4, 5, 6]), 5) == [7, 8, 9, 10, 0]
    assert greedy(r, np.array([1, 2, 3, 4, 5, 6]), 5, eos=(9,)) == [7, 8, 9]


def test_ladder_steps_are_a_list_and_fail_honestly():
    from slmpack.runtime import ladder
    from slmpack.runtime.records import Tolerance

    r = Counter()
    r.reset()
    prompt = np.array([1, 2, 3])
    vectors = {"prompt_ids": prompt, "prefill_logits": r.prefill(prompt), "decode_ids": np.array([4]),
               "decode_logits": r.decode(4, 3)[None], "greedy_prompt_ids": prompt,
               "greedy_ids": np.array([4, 5, 6])}
    x = ladder.LadderInputs(runner=Counter(), tolerance=Tolerance(atol=1e-4, rtol=1e-4), vectors=vectors)
    assert ladder.PACKAGE_ONLY == (ladder.Step.STRUCTURAL, ladder.Step.VECTORS, ladder.Step.GREEDY)
    assert ladder.run(ladder.PACKAGE_ONLY, x)["passed"]
    vectors["greedy_ids"] = np.array([4, 5, 7])
    res = ladder.run(ladder.PACKAGE_ONLY, x)
    assert not res["passed"] and res["greedy"]["first_mismatch"] == 2
    vectors["prefill_logits"] = vectors["prefill_logits"] + 1e-3
    assert not ladder.run(ladder.PACKAGE_ONLY, x)["vectors"]["passed"]


def test_chat_template_renders_in_a_sandbox(tmp_path):
    from slmpack.runtime import chat

    tpl = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    (tmp_path / chat.TEMPLATE).write_text(tpl)
    out = chat.apply_chat_template(tmp_path, [{"role": "user", "content": "hi"}])
    assert out == "<|user|>hi\n<|assistant|>"
    with pytest.raises(BadInputError):
        chat.render("{{ ''.__class__.__mro__[1].__subclasses__() }}", [])
