"""The ssh transport against a throwaway sshd on 127.0.0.1 (started here, stopped after)."""
import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slmpack.device_tests import run_device_test
from slmpack.device_tests.profiles import get_profile
from slmpack.device_tests.transports import SSHTransport
from slmpack.errors import ToolchainError

SSHD = "/usr/sbin/sshd"


def ensure_sshd() -> str | None:
    """Path of sshd, installing openssh-server with apt-get when missing; None if impossible."""
    if os.path.exists(SSHD):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "openssh-server is not installed and this user cannot apt-get install it"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "openssh-server"]
    if subprocess.run(cmd, capture_output=True, env=env).returncode:
        subprocess.run(["apt-get", "update"], capture_output=True, env=env)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode and not os.path.exists(SSHD):
            return f"apt-get install openssh-server failed: {proc.stderr.strip()[-200:]}"
    return None if os.path.exists(SSHD) else "sshd missing after installing openssh-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    reason = ensure_sshd()
    if reason:
        pytest.skip(reason)
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        "StrictModes no\nUsePAM no\nSubsystem sftp /usr/lib/openssh/sftp-server\n")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "w"))
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()[-500:]}")
                time.sleep(0.1)
        host_pub = (d / "host_key.pub").read_text().split()
        (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
        yield {"port": port, "key": d / "client_key", "known_hosts": d / "known_hosts", "dir": d}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def transport(sshd, **kw):
    return SSHTransport("127.0.0.1", sshd["port"], getpass.getuser(), sshd["key"],
                        known_hosts=kw.pop("known_hosts", sshd["known_hosts"]), python=sys.executable, **kw)


def test_ssh_push_run_fetch_cleanup(sshd, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("over ssh")
    tr = transport(sshd, remote_dir=str(tmp_path / "remote"))
    try:
        tr.push(tmp_path / "d", "d")
        tr.push(tmp_path / "d" / "a.txt", "copy.txt")
        rc, out, _ = tr.run([*tr.python_argv(), "-c", "import pathlib,os; print(pathlib.Path('d/a.txt').read_text());"
                             "pathlib.Path('o.txt').write_text(os.getcwd())"], timeout=60)
        assert (rc, out.strip()) == (0, "over ssh")
        assert tr.run(["sh", "-c", "exit 7"], timeout=60).rc == 7
        tr.fetch("o.txt", tmp_path / "o.txt")
        assert (tmp_path / "o.txt").read_text() == tr.workdir
        assert Path(tr.workdir).is_dir()  # the "device" is this machine
    finally:
        tr.cleanup()
    assert not Path(tr.workdir).exists()


def test_ssh_refuses_a_wrong_host_key(sshd, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    pub = (tmp_path / "other.pub").read_text().split()
    (tmp_path / "kh").write_text(f"[127.0.0.1]:{sshd['port']} {pub[0]} {pub[1]}\n")
    tr = transport(sshd, known_hosts=tmp_path / "kh")
    with pytest.raises(ToolchainError) as err:
        tr.run(["true"], timeout=30)
    assert err.value.code == "E_DEVICE_UNREACHABLE"
    tr.cleanup()


def test_device_test_over_ssh(sshd, tiny_package, tmp_path):
    with transport(sshd, remote_dir=str(tmp_path / "remote")) as tr:
        report = run_device_test([tiny_package], [get_profile("rpi5")], tr, out_dir=tmp_path / "r")
    assert list((tmp_path / "remote").iterdir()) == []  # cleaned up on the device
    (result,) = report.results
    assert result.status == "passed", result.reason
    assert result.transport == "ssh" and result.checks["greedy_match"] and result.device_json["hashes_ok"]
