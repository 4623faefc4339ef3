"""The adb transport against a stand-in ``adb`` (first on PATH) that keeps the "device" in a temp dir."""
import json
import sys

import pytest

from slmpack.device_tests import run_device_test
from slmpack.device_tests.profiles import get_profile
from slmpack.device_tests.transports import AdbTransport
from slmpack.errors import ToolchainError

FAKE_ADB = r'''#!{python}
"""Stand-in for Android's adb: push/pull/shell against $FAKE_ADB_ROOT, logging each call."""
import json, os, shutil, subprocess, sys
root, args = os.environ["FAKE_ADB_ROOT"], sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
serial = None
if args[:1] == ["-s"]:
    serial, args = args[1], args[2:]
if serial != os.environ.get("FAKE_ADB_SERIAL", serial):
    sys.exit(f"error: device '{{serial}}' not found")
dev = lambda p: root + p  # device paths are absolute
if args[0] == "push":
    src, dst = args[1], dev(args[2])
    if os.path.isdir(dst):
        dst = os.path.join(dst, os.path.basename(src.rstrip("/")))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, dst)
    print(f"{{args[1]}}: 1 file pushed.")
elif args[0] == "pull":
    if not os.path.exists(dev(args[1])):
        sys.exit(f"adb: error: failed to stat remote object '{{args[1]}}': No such file or directory")
    shutil.copy(dev(args[1]), args[2])
elif args[0] == "shell":
    cmd = " ".join(args[1:]).replace("/data/local/tmp", root + "/data/local/tmp")
    sys.exit(subprocess.run(["/bin/sh", "-c", cmd]).returncode)
else:
    sys.exit(f"adb: unknown command {{args[0]}}")
'''


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    bin_dir, root = tmp_path / "bin", tmp_path / "device"
    bin_dir.mkdir()
    (root / "data" / "local" / "tmp").mkdir(parents=True)
    adb = bin_dir / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable))
    adb.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "adb.log"))
    monkeypatch.setenv("FAKE_ADB_SERIAL", "emulator-5554")
    calls = lambda: [json.loads(line) for line in (tmp_path / "adb.log").read_text().splitlines()]  # noqa: E731
    return {"root": root, "calls": calls}


def test_adb_push_shell_pull_cleanup(fake_adb, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("on android")
    tr = AdbTransport("emulator-5554", python=sys.executable)
    tr.push(tmp_path / "d", "d")
    rc, out, _ = tr.run([*tr.python_argv(), "-c", "print(open('d/a.txt').read())"], timeout=60)
    assert (rc, out.strip()) == (0, "on android")
    assert tr.run(["sh", "-c", "echo hi > o.txt; exit 4"], timeout=60).rc == 4
    tr.fetch("o.txt", tmp_path / "o.txt")
    assert (tmp_path / "o.txt").read_text() == "hi\n"
    device_dir = fake_adb["root"] / tr.workdir.lstrip("/")
    assert device_dir.is_dir() and tr.workdir.startswith("/data/local/tmp/slmpack-")
    tr.cleanup()
    assert not device_dir.exists()
    calls = fake_adb["calls"]()
    assert all(c[:2] == ["-s", "emulator-5554"] for c in calls)
    assert {c[2] for c in calls} == {"shell", "push", "pull"}
    with pytest.raises(ToolchainError) as err:
        tr.fetch("missing.json", tmp_path / "m.json")
    assert err.value.code == "E_DEVICE_IO"


def test_adb_wrong_serial_and_missing_adb(fake_adb, tmp_path, monkeypatch):
    with pytest.raises(ToolchainError) as err:
        AdbTransport("R5CX000", python=sys.executable).push(tmp_path, "x")
    assert "not found" in str(err.value)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(ToolchainError) as err:
        AdbTransport().run(["true"], timeout=10)
    assert err.value.code == "E_TRANSPORT_MISSING"


def test_device_test_over_adb(fake_adb, tiny_package):
    report = run_device_test([tiny_package], ["pixel8"], "adb",
                             transport_options={"serial": "emulator-5554", "python": sys.executable})
    (result,) = report.results
    assert result.status == "passed", result.reason
    assert result.transport == "adb" and result.checks["greedy_match"]
    assert list((fake_adb["root"] / "data/local/tmp").iterdir()) == []  # cleaned up
    assert get_profile("pixel8").transport.remote_dir == "/data/local/tmp"
