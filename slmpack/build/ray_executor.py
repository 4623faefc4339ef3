"""``slmpack build --executor ray``: each package build is one Ray task on a cluster sharing the cache.

Every task runs ``build_into_cache`` (the local executor's function) on some node, with the
resources of ``slmpack.build.resources`` (memory from the fit estimate, CPUs from the target), in
a fresh worker process (``max_calls=1``: no state or memory carried between exports). The cache
folder must be the same shared directory, at the same path, on every node and on the driver: a
task checks that it sees the driver's token file there and that its node's toolchain is the
driver's (the key covers the toolchain: a package built by other versions must not be stored
under it). The package's log comes back with the result and is written beside the output.

Ray's own retries are off (``max_retries=0``): the build retries a failed task once, whether the
export failed or its worker died, and reports the second failure with its error.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import socket
import tempfile
import uuid
from concurrent.futures import Future
from pathlib import Path

from slmpack.build.executor import Task
from slmpack.build.inputs import toolchain
from slmpack.build.resources import task_resources
from slmpack.build.unit import Status, build_into_cache
from slmpack.errors import BadInputError, SlmpackError, TargetNotInstalled, ToolchainError

TOKEN_DIR = "tmp"
CONNECT_TIMEOUT_S = 10  # a TCP connect to the head before ray.init, which retries a dead address for minutes


def require_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        raise TargetNotInstalled("pip install 'slmpack[ray]' (Ray is not installed: needed by --executor ray)",
                                 "E_TARGET_NOT_INSTALLED", details={"extra": "ray"})


def _ray():
    require_ray()
    import ray

    return ray


def ray_build(unit, key: str, cache_root: str, token: str, expected: dict) -> tuple[Status, dict | None, str]:
    """The task body, on a worker node: (status, error, the package's log text)."""
    from slmpack import quiet

    quiet.quiet_env()
    node = _ray().util.get_node_ip_address()
    if not (Path(cache_root) / TOKEN_DIR / token).is_file():
        return Status.FAILED, BadInputError(
            f"node {node} does not see the build's cache at {cache_root}: put the cache on a folder shared by every "
            f"node at the same path (NFS, a cluster filesystem)", "E_BUILD_NODE", details={"node": node}).to_json(), ""
    here = toolchain()
    if here != expected:
        differs = sorted(k for k in expected if here.get(k) != expected[k])
        return Status.FAILED, BadInputError(
            f"node {node} has a different toolchain ({', '.join(differs)} differ): install the driver's "
            f"slmpack and constraints.txt on every node", "E_BUILD_NODE", details={"node": node, "differs": differs}
        ).to_json(), ""
    fd, name = tempfile.mkstemp(prefix="slmpack-", suffix=".build.log")
    os.close(fd)
    log = Path(name)
    try:
        status, error = build_into_cache(unit, key, Path(cache_root), log)
        return status, error, log.read_text(encoding="utf-8", errors="replace")
    finally:
        log.unlink(missing_ok=True)


def _check_listening(address: str | None) -> None:
    """Fail fast when nothing listens at an explicit HOST:PORT or ray://HOST:PORT (not 'auto' / Ray's default)."""
    host, _, port = (address or "").split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise ToolchainError(f"cannot reach the Ray cluster at {address}: {e}", "E_BUILD_EXECUTOR") from None


class RayExecutor:
    retries = 1  # another attempt may land on another node; a second failure is reported

    def __init__(self, address: str | None, cache_root: Path):
        ray = _ray()
        _check_listening(address)
        try:  # Ray's own lines go to fds 1/2, i.e. the build's build.log (the CLI captures them)
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ToolchainError(f"cannot reach the Ray cluster at {address or 'the default address'}: {e}",
                                 "E_BUILD_EXECUTOR") from None
        self._ray = ray
        self._remote = ray.remote(max_retries=0, max_calls=1)(ray_build)
        self._expected = toolchain()
        self._cache = cache_root
        self._token = f"ray-driver-{uuid.uuid4().hex}"
        (cache_root / TOKEN_DIR / self._token).touch()
        self._nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]

    def refuse(self, task: Task) -> dict | None:
        try:
            r = task_resources(task.unit)
        except SlmpackError as e:
            return e.to_json()
        if any(n.get("CPU", 0) >= r.num_cpus and n.get("memory", 0) >= r.memory_bytes for n in self._nodes):
            return None
        biggest = max((n.get("memory", 0) // 2**20 for n in self._nodes), default=0)
        return BadInputError(f"{task.unit.label} needs {r.memory_mb} MB and {r.num_cpus} CPU (fit estimate); no node "
                             f"of the cluster has that (largest: {biggest} MB)", "E_BUILD_RESOURCES",
                             details=r.to_json()).to_json()

    def submit(self, task: Task, cache_root: Path) -> Future:
        r = task_resources(task.unit)
        ref = self._remote.options(num_cpus=r.num_cpus, memory=r.memory_bytes).remote(
            task.unit, task.key, str(cache_root), self._token, self._expected)
        return ref.future()

    def outcome(self, task: Task, fut: Future) -> tuple[Status, dict | None]:
        try:
            status, error, log_text = fut.result()
        except self._ray.exceptions.RayError as e:  # the worker died (OOM kill, node lost) or Ray failed
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return Status.FAILED, ToolchainError(f"Ray task for {task.unit.label} failed: {type(e).__name__}: "
                                                 f"{first[:300]}", "E_BUILD_EXECUTOR").to_json()
        task.log.parent.mkdir(parents=True, exist_ok=True)
        task.log.write_text(log_text, encoding="utf-8")
        return status, (error | {"log": str(task.log)}) if error else None

    def close(self) -> None:
        (self._cache / TOKEN_DIR / self._token).unlink(missing_ok=True)
        self._ray.shutdown()
