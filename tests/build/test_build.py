"""`slmpack build`: incremental, content-addressed, safe under concurrency, never serves a bad package."""
from __future__ import annotations

import subprocess
import sys

import pytest

from slmpack.build.recipe import load_recipe
from slmpack.errors import BadInputError
from slmpack.package import verify
from tests.build.helpers import RECIPE, build_json, project, statuses
from tests.tiny_models import write_tiny_model


def test_recipe_refuses_unknown_keys_and_targets(tmp_path):
    (tmp_path / "slmpack.toml").write_text('[[package]]\nname = "x"\ntargets = ["onnx"]\ncontxt = 4\n')
    with pytest.raises(BadInputError, match="unknown key 'contxt'"):
        load_recipe(tmp_path / "slmpack.toml")
    (tmp_path / "slmpack.toml").write_text('[[package]]\nname = "x"\ntargets = ["onx"]\n')
    with pytest.raises(BadInputError, match="targets must be"):
        load_recipe(tmp_path / "slmpack.toml")


def test_pyproject_tool_table(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "app"\n[[tool.slmpack.package]]\nname = "m"\n'
                                             'targets = ["onnx", "tflite"]\ncontext = 64\n')
    r = load_recipe(tmp_path / "pyproject.toml")
    assert [u.label for u in r.units()] == ["m/onnx", "m/tflite"]
    assert r.packages[0].model is None and r.packages[0].context == 64


@pytest.mark.slow
def test_incremental_build_reuse_and_check(tmp_path):
    recipe = project(tmp_path)
    rc, first = build_json(recipe)
    assert rc == 0, first
    assert set(statuses(first).values()) == {"built"} and len(first["packages"]) == 4
    for r in first["packages"]:
        verify(r["path"])

    rc, second = build_json(recipe)  # nothing changed: no work
    assert rc == 0 and set(statuses(second).values()) == {"up-to-date"}
    assert second["reused"] == 4 and second["built"] == 0
    assert build_json(recipe, "--check")[0] == 0

    # a changed checkpoint rebuilds exactly the packages made from it
    write_tiny_model(tmp_path / "model-b", "llama", seed=3, hidden=16, heads=2, vocab=64, max_pos=64)
    rc, stale = build_json(recipe, "--check")
    assert rc == 1 and stale["counts"]["stale"] == 2
    assert {k for k, v in statuses(stale).items() if v == "stale"} == {"b1/onnx", "b2/onnx"}
    rc, third = build_json(recipe)
    assert rc == 0
    assert statuses(third) == {"a1/onnx": "up-to-date", "a2/onnx": "up-to-date", "b1/onnx": "built",
                               "b2/onnx": "built"}

    # a changed recipe entry rebuilds that package only; a deleted output comes back from the cache
    recipe.write_text(RECIPE.replace("context = 48", "context = 56"))
    import shutil

    shutil.rmtree(tmp_path / "out" / "b1")
    rc, fourth = build_json(recipe)
    assert rc == 0
    assert statuses(fourth) == {"a1/onnx": "up-to-date", "a2/onnx": "built", "b1/onnx": "from-cache",
                                "b2/onnx": "up-to-date"}
    verify(tmp_path / "out" / "b1" / "onnx")


@pytest.mark.slow
def test_corrupt_cache_object_is_rebuilt_not_served(tmp_path):
    recipe = project(tmp_path, RECIPE.split("[[package]]\nname = \"a2\"")[0])  # one package: a1
    rc, first = build_json(recipe)
    assert rc == 0 and statuses(first) == {"a1/onnx": "built"}
    key = first["packages"][0]["key"]
    obj = tmp_path / "cache" / "objects" / key
    with open(obj / "model.onnx", "r+b") as f:  # flip one byte of the cached artifact
        b = f.read(1)
        f.seek(0)
        f.write(bytes([b[0] ^ 1]))
    import shutil

    shutil.rmtree(tmp_path / "out")
    rc, second = build_json(recipe)
    assert rc == 0 and statuses(second) == {"a1/onnx": "built"}
    verify(tmp_path / "out" / "a1" / "onnx")
    verify(obj)


@pytest.mark.slow
def test_two_concurrent_builds_share_one_cache(tmp_path):
    recipe = project(tmp_path)
    cmd = [sys.executable, "-m", "slmpack.cli", "build", str(recipe), "--json", "--cache", str(tmp_path / "shared")]
    procs = [subprocess.Popen(cmd + ["--out", str(tmp_path / f"out{i}")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    import json

    reports = []
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err
        reports.append(json.loads(out))
    # each key was exported once: the other build found it in the shared cache
    built = sum(r["built"] for r in reports)
    assert built == 4, [statuses(r) for r in reports]
    assert all(r["built"] + r["reused"] == 4 for r in reports)
    for name in ("a1", "a2", "b1", "b2"):
        a, b = (verify(tmp_path / f"out{i}" / name / "onnx") for i in range(2))
        assert (tmp_path / "out0" / name / "onnx" / "model.onnx").read_bytes() == \
            (tmp_path / "out1" / name / "onnx" / "model.onnx").read_bytes()
