"""sysroot.py's caching logic with the downloads stubbed out (the real build is in test_qemu_device)."""
import pytest

from slmpack.device_tests import sysroot
from slmpack.errors import ToolchainError


@pytest.fixture
def stubbed(monkeypatch, tmp_path):
    calls = {"debs": 0}

    def fake_debs(work, root):
        calls["debs"] += 1
        (root / "usr" / "bin").mkdir(parents=True)
        (root / "usr" / "bin" / "python3.11").write_text("")
        (root / "lib").mkdir()
        return ["libc6_arm64.deb"]

    def fake_wheels(work, site):
        (site / "numpy").mkdir()
        return ["numpy-2.4.6-cp311-cp311-manylinux_2_28_aarch64.whl"]

    monkeypatch.setattr(sysroot, "ensure_qemu", lambda: "/usr/bin/qemu-aarch64-static")
    monkeypatch.setattr(sysroot, "_fetch_debs", fake_debs)
    monkeypatch.setattr(sysroot, "_fetch_wheels", fake_wheels)
    monkeypatch.setattr(sysroot, "_verify", lambda path: "aarch64 1.32.0 2.4.6")
    monkeypatch.setenv("SLMPACK_CACHE", str(tmp_path / "cache"))
    return calls


def test_build_is_atomic_cached_and_idempotent(stubbed, tmp_path):
    s = sysroot.ensure_sysroot()
    assert s.path.parent == tmp_path / "cache" / "aarch64"
    assert s.stamp["debs"] == ["libc6_arm64.deb"] and s.stamp["key"] == sysroot.build_key()
    assert (s.root / "proc" / "cpuinfo").read_text().count("processor") == 2
    assert sysroot.ensure_sysroot().path == s.path and stubbed["debs"] == 1
    view = s.view("cortex-a72", 4)
    assert "0xd08" in (view / "proc" / "cpuinfo").read_text()
    assert (view / "usr" / "bin" / "python3.11").exists() and (view / "usr").is_symlink()
    argv = s.qemu_argv("cortex-a72", 4)
    assert argv[:5] == ["/usr/bin/qemu-aarch64-static", "-cpu", "cortex-a72", "-L", str(view)]
    assert argv[-1] == str(s.python) and f"PYTHONPATH={s.site}" in argv
    with pytest.raises(ToolchainError) as err:
        s.view("pentium")
    assert err.value.code == "E_QEMU_CPU"


def test_failed_build_leaves_nothing(stubbed, monkeypatch, tmp_path):
    def boom(work, site):
        raise ToolchainError("pip download failed", code="E_SYSROOT_BUILD")

    monkeypatch.setattr(sysroot, "_fetch_wheels", boom)
    with pytest.raises(ToolchainError):
        sysroot.ensure_sysroot()
    assert [p.name for p in (tmp_path / "cache" / "aarch64").iterdir()] == [".lock"]


def test_qemu_max_runs_without_sme():
    """qemu's max has SME, which no profile names: the runtimes would dispatch SME kernels through HWCAP2.
    Its SVE vectors are the 128 bits of the Armv9 phone / Neoverse N2 core the profile names."""
    from slmpack.device_tests.sysroot import qemu_cpu_arg

    assert qemu_cpu_arg("max") == "max,sme=off,sve-default-vector-length=16"
    assert qemu_cpu_arg("cortex-a76") == "cortex-a76"


def test_hwcaps_are_decoded_from_the_auxiliary_vector():
    import struct

    from slmpack.runtime.device_info import AT_HWCAP, AT_HWCAP2, decode_hwcaps

    auxv = struct.pack("<QQQQQQQ", 6, 4096, AT_HWCAP, (1 << 20) | (1 << 22), AT_HWCAP2, (1 << 13) | (1 << 23), 0)
    assert decode_hwcaps(auxv + b"\0" * 8) == ["asimddp", "sve", "i8mm", "sme"]
    assert decode_hwcaps(struct.pack("<QQ", 0, 0)) == []
