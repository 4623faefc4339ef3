"""`slmpack build --executor ray`: the recipe's packages as Ray tasks on a local head + worker (loopback).

Byte-identical to the local build, one cache shared both ways, a failing package tried twice then
reported with its typed error and nothing of it in the cache, a package no node can hold refused
up front from its fit estimate, a node with another toolchain or without the shared cache refusing,
a worker killed by Ray's OOM killer retried then reported; typed errors when Ray is absent or the
cluster unreachable.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.build.helpers import RECIPE, build_json, project, statuses
from tests.build.ray_cluster import free_port, local_cluster
from tests.build.test_extras import BLOCKED_RUN
from tests.tiny_models import write_tiny_model

GOOD = ("a1/onnx", "a2/onnx", "b1/onnx", "b2/onnx")
ONLY_GOOD = [a for n in GOOD for a in ("--only", n.split("/")[0])]
EXTRA = """
[[package]]
name = "bad"
model = "model-bad"
context = 32
[[package]]
name = "huge"
model = "model-huge"
context = 32
"""


def test_ray_executor_absent_is_a_typed_error_with_the_pip_command(tmp_path):
    recipe = project(tmp_path)
    p = subprocess.run([sys.executable, "-c", BLOCKED_RUN, "ray", "build", str(recipe), "--executor", "ray"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "error[E_TARGET_NOT_INSTALLED]: pip install 'slmpack[ray]'" in p.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache" / "objects").exists()


RAY = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                         reason="Ray is not installed: the [ray] extra (pip install -c constraints.txt -e '.[ray]'; "
                                "scripts/bootstrap.sh installs it)")


@RAY
def test_unreachable_cluster_is_a_typed_error(tmp_path):
    recipe = project(tmp_path)
    p = subprocess.run([sys.executable, "-m", "slmpack.cli", "build", str(recipe), "--executor", "ray",
                        "--address", f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 3, p.stderr
    assert "error[E_BUILD_EXECUTOR]: cannot reach the Ray cluster at 127.0.0.1:" in p.stderr
    assert list((tmp_path / "cache" / "objects").iterdir()) == []


def _tree_digests(pkg: Path) -> dict[str, str]:
    return {f.relative_to(pkg).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(pkg.rglob("*")) if f.is_file()}


def _failing_and_oversized_models(root: Path) -> None:
    bad = write_tiny_model(root / "model-bad", "llama", seed=4, hidden=16, heads=2, vocab=64, max_pos=64)
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")  # fails in the task, on any node
    huge = write_tiny_model(root / "model-huge", "llama", seed=5, hidden=16, heads=2, vocab=64, max_pos=64)
    cfg = json.loads((huge / "config.json").read_text())  # a 70B-class config: its fit estimate fits no node
    cfg.update(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
               num_key_value_heads=8, vocab_size=128256)
    (huge / "config.json").write_text(json.dumps(cfg))


@pytest.mark.slow
@RAY
def test_ray_build_is_byte_identical_and_shares_the_cache(tmp_path):
    recipe = project(tmp_path, RECIPE + EXTRA)
    _failing_and_oversized_models(tmp_path)
    with local_cluster() as address:
        ray_build = ["--executor", "ray", "--address", address]
        p = subprocess.run([sys.executable, "-m", "slmpack.cli", "build", str(recipe), "--json", "--out",
                            str(tmp_path / "out-ray"), "--cache", str(tmp_path / "cache-ray"), *ray_build],
                           capture_output=True, text=True, timeout=900)
        assert p.returncode == 2, p.stderr
        # quiet: --json prints one document; stderr holds our error line only (Ray's lines went to the log)
        assert all(ln.startswith("error[E_BUILD_FAILED]: ") for ln in p.stderr.splitlines() if ln.strip()), p.stderr
        report = json.loads(p.stdout)["details"]
        rows = {r["package"]: r for r in report["packages"]}
        assert {n: rows[n]["status"] for n in GOOD} == dict.fromkeys(GOOD, "built")
        assert all(rows[n]["attempts"] == 1 for n in GOOD)
        bad = rows["bad/onnx"]
        assert bad["status"] == "failed" and bad["attempts"] == 2 and bad["error"]["error"] == "E_WEIGHTS_CORRUPT"
        assert Path(bad["error"]["log"]).is_file()
        huge = rows["huge/onnx"]
        assert huge["status"] == "failed" and huge["attempts"] == 0 and huge["error"]["error"] == "E_BUILD_RESOURCES"
        assert huge["error"]["details"]["memory_mb"] > 100_000
        # nothing partial: the cache holds exactly the four packages, no staging left, no output for the failures
        assert sorted(p.name for p in (tmp_path / "cache-ray" / "objects").iterdir()) == \
            sorted(rows[n]["key"] for n in GOOD)
        assert list((tmp_path / "cache-ray" / "tmp").iterdir()) == []
        assert not (tmp_path / "out-ray" / "bad" / "onnx").exists()

        # the local build of the same entries: same keys, byte-identical packages
        rc, local = build_json(recipe, "--out", str(tmp_path / "out-local"), "--cache", str(tmp_path / "cache-local"),
                               *ONLY_GOOD)
        assert rc == 0 and set(statuses(local).values()) == {"built"}
        assert {r["package"]: r["key"] for r in local["packages"]} == {n: rows[n]["key"] for n in GOOD}
        for n in GOOD:
            name = n.split("/")[0]
            ray_pkg, local_pkg = tmp_path / "out-ray" / name / "onnx", tmp_path / "out-local" / name / "onnx"
            assert _tree_digests(ray_pkg) == _tree_digests(local_pkg), n

        # one cache, both ways: a local build reuses what Ray built, a Ray build what the local one built
        rc, reuse = build_json(recipe, "--out", str(tmp_path / "out-2"), "--cache", str(tmp_path / "cache-ray"),
                               *ONLY_GOOD)
        assert rc == 0 and statuses(reuse) == dict.fromkeys(GOOD, "from-cache")
        rc, reuse = build_json(recipe, "--out", str(tmp_path / "out-3"), "--cache", str(tmp_path / "cache-local"),
                               *ONLY_GOOD, *ray_build)
        assert rc == 0 and statuses(reuse) == dict.fromkeys(GOOD, "from-cache")
        assert all(_tree_digests(tmp_path / "out-3" / n.split("/")[0] / "onnx")
                   == _tree_digests(tmp_path / "out-ray" / n.split("/")[0] / "onnx") for n in GOOD)


def _one_package_failing_twice(tmp_path, **cluster) -> tuple[int, dict]:
    """Build one package (a1) on a head + a worker started with ``cluster``; it fails on both attempts."""
    recipe = project(tmp_path, RECIPE.split('[[package]]\nname = "a2"')[0])
    with local_cluster(head_cpus=0, **cluster) as address:
        rc, report = build_json(recipe, "--executor", "ray", "--address", address)
    (r,) = report["packages"]
    assert r["status"] == "failed" and r["attempts"] == 2, r
    return rc, r


@pytest.mark.slow
@RAY
def test_a_node_with_another_toolchain_refuses_the_task(tmp_path):
    dist = tmp_path / "site-extra" / "slmpack_test_marker-1.0.dist-info"  # one more distribution on the worker
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: slmpack-test-marker\nVersion: 1.0\n")
    path = os.pathsep.join(p for p in (str(dist.parent), os.environ.get("PYTHONPATH")) if p)
    rc, r = _one_package_failing_twice(tmp_path, worker_env={**os.environ, "PYTHONPATH": path})
    assert rc == 2
    assert r["error"]["error"] == "E_BUILD_NODE" and r["error"]["details"]["differs"] == ["distributions"]
    assert list((tmp_path / "cache" / "objects").iterdir()) == []
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


@pytest.mark.slow
@RAY
def test_a_worker_killed_by_rays_memory_monitor_is_retried_then_reported(tmp_path):
    # the worker node's raylet kills any task worker once node memory use passes 0.1% (Ray's OOM killer)
    env = {**os.environ, "RAY_memory_usage_threshold": "0.001", "RAY_memory_monitor_refresh_ms": "100"}
    rc, r = _one_package_failing_twice(tmp_path, worker_env=env)
    assert rc == 3
    assert r["error"]["error"] == "E_BUILD_EXECUTOR" and "OutOfMemoryError" in r["error"]["message"], r
    assert list((tmp_path / "cache" / "objects").iterdir()) == []


def _can_unshare_mounts() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"], capture_output=True).returncode == 0


@pytest.mark.slow
@RAY
@pytest.mark.skipif(not _can_unshare_mounts(), reason="needs `unshare --mount` (root) to hide the cache from a node")
def test_a_node_that_does_not_see_the_shared_cache_refuses_the_task(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    # the worker node runs in its own mount namespace with an empty tmpfs over the cache: a node-local folder
    hide = ("unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount -t tmpfs tmpfs "$0" && exec "$@"',
            str(cache))
    rc, r = _one_package_failing_twice(tmp_path, worker_wrap=hide)
    assert rc == 2
    assert r["error"]["error"] == "E_BUILD_NODE" and "does not see the build's cache" in r["error"]["message"], r
    assert list((cache / "objects").iterdir()) == []
