"""The README's supported-architecture table lists exactly what the loader accepts, and every
architecture it marks "yes" on ONNX is in the ONNX family grid (or the Llama-family suite)."""
from __future__ import annotations

from pathlib import Path

from slmpack.exporter.spec import _ARCHITECTURES, SUPPORTED_ARCHITECTURES
from slmpack.targets.onnx.genai_config import GENAI_TYPE
from tests.tiny_families import FAMILIES

README = Path(__file__).resolve().parents[1] / "README.md"


def _rows() -> dict[str, list[str]]:
    text = README.read_text(encoding="utf-8")
    block = text.split("### Supported architectures", 1)[1].split("\n\n")[2]
    rows = [ln.strip().strip("|").split("|") for ln in block.splitlines() if ln.startswith("| ")][1:]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows if not r[0].startswith("---")}


def test_table_lists_exactly_the_supported_architectures():
    assert sorted(_rows()) == sorted(SUPPORTED_ARCHITECTURES)


def test_onnx_column_matches_the_genai_type_and_the_grid():
    for arch, cells in _rows().items():
        family = _ARCHITECTURES[arch]
        assert cells[1] == f"yes ({GENAI_TYPE[family]})", arch
        assert family.value in FAMILIES or family.value in ("llama", "mistral", "qwen2"), arch
