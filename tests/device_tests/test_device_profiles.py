import pytest

from slmpack.device_tests import profiles
from slmpack.device_tests.profiles import BUILTIN_DIR, ProfileRegistry, list_profiles, load_profile, load_registry
from slmpack.errors import BadInputError

EMULATED = {"rpi3-emulated": "cortex-a53", "rpi4-emulated": "cortex-a72", "rpi5-emulated": "cortex-a76",
            "phone-emulated": "max"}
EXPECTED = {"rpi5", "rpi4", "pixel8", "galaxy-s24", "iphone15pro", "generic-arm64", "host", *EMULATED}
QEMU = {"rpi5": "cortex-a76", "rpi4": "cortex-a72", "generic-arm64": "cortex-a53", **EMULATED}


def test_builtin_profiles_load(monkeypatch):
    monkeypatch.delenv(profiles.ENV_VAR, raising=False)
    by_name = {p.name: p for p in list_profiles()}
    assert set(by_name) == EXPECTED
    for p in by_name.values():
        assert p.cpu.cores >= 1 and p.memory.app_available_mb <= p.memory.ram_mb
        assert p.memory.bandwidth_gbs > 0 and p.memory.bandwidth_source
        assert p.formats and all(f.min_version for f in p.formats)
    for name, cpu in QEMU.items():
        assert by_name[name].cpu.qemu_cpu == cpu
    assert by_name["rpi5"].memory.ram_mb == 8192 and by_name["rpi4"].memory.ram_mb == 4096
    assert by_name["rpi5-emulated"].default_transport == "qemu" and by_name["rpi5-emulated"].emulated
    assert by_name["rpi5-emulated"].cpu == by_name["rpi5"].cpu
    assert by_name["rpi5-emulated"].memory.ram_mb == by_name["rpi5"].memory.ram_mb
    assert by_name["iphone15pro"].supports("coreml") and not by_name["rpi4"].supports("coreml")
    assert by_name["host"].cpu.cores >= 1  # "auto" resolved


def test_emulated_profiles_span_four_isa_levels_and_their_cpuinfo_says_so(monkeypatch):
    """Issue #19: A53 (Armv8.0, no dotprod / fp16), A72, A76 (dotprod, fp16) and qemu max (i8mm,
    bf16, SVE2); each profile's declared features are in the fake /proc/cpuinfo its qemu view
    gets (device_tests/sysroot.py), so a runtime reading either sees the same ISA."""
    from slmpack.device_tests.sysroot import _CORES

    monkeypatch.delenv(profiles.ENV_VAR, raising=False)
    by_name = {p.name: p for p in list_profiles()}
    for name, cpu in EMULATED.items():
        p = by_name[name]
        assert p.emulated and p.default_transport == "qemu" and p.cpu.qemu_cpu == cpu
        shown = set(_CORES[cpu][4].split())
        assert set(p.cpu.features) <= shown, (name, set(p.cpu.features) - shown)
    feats = {n: set(by_name[n].cpu.features) for n in EMULATED}
    assert not {"asimddp", "fphp"} & feats["rpi3-emulated"] and not {"asimddp", "fphp"} & feats["rpi4-emulated"]
    assert {"asimddp", "fphp", "asimdhp"} <= feats["rpi5-emulated"] and "i8mm" not in feats["rpi5-emulated"]
    assert {"i8mm", "bf16", "sve2", "asimddp"} <= feats["phone-emulated"]
    assert by_name["rpi4-emulated"].cpu == by_name["rpi4"].cpu


def test_profile_is_frozen():
    p = load_profile(BUILTIN_DIR / "rpi5.toml")
    with pytest.raises(AttributeError):
        p.name = "x"


def test_registry_refuses_duplicates_and_unknown(tmp_path, monkeypatch):
    monkeypatch.delenv(profiles.ENV_VAR, raising=False)
    (tmp_path / "rpi5.toml").write_text((BUILTIN_DIR / "rpi5.toml").read_text())
    with pytest.raises(BadInputError) as err:
        load_registry([tmp_path])
    assert err.value.code == "E_PROFILE_DUPLICATE"
    with pytest.raises(BadInputError) as err:
        load_registry().get("nokia3310")
    assert err.value.code == "E_DEVICE_UNKNOWN" and "rpi5" in str(err.value)
    reg = ProfileRegistry()
    reg.register(load_profile(BUILTIN_DIR / "rpi4.toml"))
    with pytest.raises(BadInputError):
        reg.register(load_profile(BUILTIN_DIR / "rpi4.toml"))


def test_user_profile_dirs_env_and_arg(tmp_path, monkeypatch):
    text = (BUILTIN_DIR / "rpi4.toml").read_text().replace('name = "rpi4"', 'name = "my-pi"')
    env_dir, arg_dir = tmp_path / "env", tmp_path / "arg"
    env_dir.mkdir(), arg_dir.mkdir()
    (env_dir / "my-pi.toml").write_text(text)
    (arg_dir / "lab-pi.toml").write_text(text.replace('name = "my-pi"', 'name = "lab-pi"'))
    monkeypatch.setenv(profiles.ENV_VAR, str(env_dir))
    names = {p.name for p in list_profiles([arg_dir])}
    assert {"my-pi", "lab-pi"} <= names and EXPECTED <= names


@pytest.mark.parametrize("edit, needle", [
    (lambda t: t.replace("cores = 4", "cores = 0"), "cpu.cores"),
    (lambda t: t.replace("ram_mb = 4096", "ram_mb = 4096\nram_gb = 4"), "ram_gb"),
    (lambda t: t.replace('format = "onnx"', 'format = "gguf"'), "gguf"),
    (lambda t: t.replace("app_available_mb = 3584", "app_available_mb = 9000"), "app_available_mb"),
    (lambda t: t.replace("[memory]", "[memory"), "TOML"),
])
def test_invalid_profiles_name_the_field(tmp_path, edit, needle):
    path = tmp_path / "rpi4.toml"
    path.write_text(edit((BUILTIN_DIR / "rpi4.toml").read_text()))
    with pytest.raises(BadInputError) as err:
        load_profile(path)
    assert err.value.code == "E_PROFILE_INVALID" and needle in str(err.value)
