"""The C++ app snippet (integrations/cpp/slmpack_chat.cpp), compiled here and linked against the pinned
onnxruntime-genai wheel's libonnxruntime-genai.so, chats with an slmpack ONNX package and reproduces
transformers' ``apply_chat_template`` + greedy ``generate`` (the chat template, the stop ids and the
context all come from the package)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from slmpack import api
from tests.chat_models import QUESTION, reference_chat_tokens, write_tiny_instruct
from tests.test_chat import CFG   # the chat prompt (37 tokens) in one prefill chunk

REPO = Path(__file__).resolve().parents[2]
SUBSET = Path(__file__).parent / "genai_c_subset"


@pytest.fixture(scope="module")
def chat_binary(tmp_path_factory) -> tuple[Path, dict]:
    og = pytest.importorskip("onnxruntime_genai")
    ort = pytest.importorskip("onnxruntime")
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler on this machine")
    lib = Path(og.__file__).parent
    out = tmp_path_factory.mktemp("cpp") / "slmpack_chat"
    p = subprocess.run([cxx, "-std=c++17", "-O1", "-Wall", "-Werror", str(REPO / "integrations/cpp/slmpack_chat.cpp"),
                        f"-I{SUBSET}", f"-L{lib}", "-l:libonnxruntime-genai.so", f"-Wl,-rpath,{lib}", "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    # genai dlopens onnxruntime: point it at the pinned wheel's library
    ort_lib = sorted((Path(ort.__file__).parent / "capi").glob("libonnxruntime.so*"))[0]
    env = dict(os.environ, ORT_LIB_PATH=str(ort_lib))
    return out, env


def test_cpp_snippet_chats_like_transformers(chat_binary, tmp_path):
    binary, env = chat_binary
    model = write_tiny_instruct(tmp_path / "instruct")
    _, want = reference_chat_tokens(model)
    assert want[-1] == 4097 and len(want) >= 3     # greedy ends on <|im_end|>: the stop list matters
    pkg = api.export(model, "onnx", tmp_path / "pkg", CFG)
    assert pkg.passed
    p = subprocess.run([str(binary), str(pkg.path), json.dumps(QUESTION), "16"], capture_output=True, text=True,
                       timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    ids_line, text = p.stdout.split("\n", 1)
    got = [int(t) for t in ids_line.split()]
    assert got == want[:-1]        # genai stops on <|im_end|> (from the package's stop list) and drops it
    from tokenizers import Tokenizer

    assert text.rstrip("\n") == Tokenizer.from_file(str(model / "tokenizer.json")).decode(got, skip_special_tokens=True)


def test_cpp_snippet_reports_a_bad_package(chat_binary, tmp_path):
    binary, env = chat_binary
    p = subprocess.run([str(binary), str(tmp_path), "[]"], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 2 and p.stderr.startswith("error: load model: ")
