"""Device profiles: one TOML data file per device, loaded into frozen dataclasses.

Built-in profiles live in ``profiles/``. Users add their own with directories named in
``$SLMPACK_DEVICE_PROFILES`` (``os.pathsep``-separated) or passed as ``--profiles DIR``.
The registry refuses a second profile with a name it already holds, wherever it came from.
Unknown keys are errors (a typo must not silently fall back to a default).
"""
from __future__ import annotations

import os
import platform
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from slmpack.errors import BadInputError

BUILTIN_DIR = Path(__file__).parent / "profiles"
ENV_VAR = "SLMPACK_DEVICE_PROFILES"
FORMATS = ("onnx", "executorch", "coreml", "tflite")
TRANSPORTS = ("local", "qemu", "ssh", "adb", "xcode")
KINDS = ("sbc", "phone", "host", "desktop", "server")


def _bad(where: str, msg: str) -> BadInputError:
    return BadInputError(f"device profile {where}: {msg}", code="E_PROFILE_INVALID")


@dataclass(frozen=True)
class CpuSpec:
    model: str
    cores: int
    isa: str
    features: tuple[str, ...]
    qemu_cpu: str = ""  # "" when the device cannot be emulated with qemu-user
    freq_ghz: float = 0.0

    def __post_init__(self):
        if not isinstance(self.cores, int) or self.cores < 1:
            raise _bad("cpu.cores", f"must be a positive integer, got {self.cores!r}")


@dataclass(frozen=True)
class MemorySpec:
    ram_mb: int
    app_available_mb: int
    bandwidth_gbs: float
    bandwidth_source: str

    def __post_init__(self):
        if not isinstance(self.ram_mb, int) or self.ram_mb <= 0:
            raise _bad("memory.ram_mb", f"must be a positive integer, got {self.ram_mb!r}")
        if not isinstance(self.app_available_mb, int) or not 0 < self.app_available_mb <= self.ram_mb:
            raise _bad("memory.app_available_mb",
                       f"must be in (0, ram_mb={self.ram_mb}], got {self.app_available_mb!r}")
        if not isinstance(self.bandwidth_gbs, (int, float)) or self.bandwidth_gbs <= 0:
            raise _bad("memory.bandwidth_gbs", f"must be > 0, got {self.bandwidth_gbs!r}")
        if not self.bandwidth_source.strip():
            raise _bad("memory.bandwidth_source", "must cite where the bandwidth figure comes from")


@dataclass(frozen=True)
class FormatSupport:
    format: str
    runtime: str
    min_version: str

    def __post_init__(self):
        if self.format not in FORMATS:
            raise _bad("formats.format", f"{self.format!r} is not one of {', '.join(FORMATS)}")


@dataclass(frozen=True)
class TransportConfig:
    """Where and how to reach the device; all optional, overridable at run time."""

    host: str = ""
    port: int = 22
    user: str = ""
    key: str = ""
    serial: str = ""  # adb device serial
    python: str = "python3"
    remote_dir: str = ""


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    display_name: str
    kind: str
    arch: str
    os: str
    emulated: bool
    default_transport: str
    cpu: CpuSpec
    memory: MemorySpec
    formats: tuple[FormatSupport, ...]
    transport: TransportConfig = field(default_factory=TransportConfig)
    source: str = ""  # file it was loaded from

    def __post_init__(self):
        if self.kind not in KINDS:
            raise _bad(f"{self.name}.kind", f"{self.kind!r} is not one of {', '.join(KINDS)}")
        if self.default_transport not in TRANSPORTS:
            raise _bad(f"{self.name}.default_transport",
                       f"{self.default_transport!r} is not one of {', '.join(TRANSPORTS)}")
        seen = [f.format for f in self.formats]
        if len(seen) != len(set(seen)):
            raise _bad(f"{self.name}.formats", "a format is listed twice")

    def supports(self, fmt: str) -> FormatSupport | None:
        return next((f for f in self.formats if f.format == fmt), None)


def _host_facts() -> dict:
    mem = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            mem[key] = int(value.split()[0]) // 1024
    except OSError:
        pass
    ram = mem.get("MemTotal", 4096)
    return {"cores": os.cpu_count() or 1, "ram_mb": ram,
            "app_available_mb": min(ram, mem.get("MemAvailable", ram)),
            "arch": platform.machine() or "unknown",
            "os": f"{platform.system()} {platform.release()}".strip(),
            "model": platform.processor() or platform.machine() or "unknown", "isa": platform.machine()}


def _take(table: dict, spec: dict, where: str) -> dict:
    """Check keys and types of one TOML table against ``spec`` {key: (types, required)}."""
    unknown = sorted(set(table) - set(spec))
    if unknown:
        raise _bad(where, f"unknown key(s) {', '.join(unknown)}")
    out = {}
    for key, (types, required) in spec.items():
        if key not in table:
            if required:
                raise _bad(where, f"missing required key {key!r}")
            continue
        value = table[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise _bad(f"{where}.{key}", f"has the wrong type ({type(value).__name__})")
        out[key] = value
    return out


_S, _I, _F, _B = (str,), (int,), (int, float), (bool,)
_TOP = {"schema_version": (_I, True), "name": (_S, True), "display_name": (_S, True),
        "kind": (_S, True), "arch": (_S, True), "os": (_S, True), "emulated": (_B, False),
        "default_transport": (_S, True), "cpu": ((dict,), True), "memory": ((dict,), True),
        "formats": ((list,), True), "transport": ((dict,), False)}
_CPU = {"model": (_S, True), "cores": ((int, str), True), "isa": (_S, True),
        "features": ((list,), True), "qemu_cpu": (_S, False), "freq_ghz": (_F, False)}
_MEM = {"ram_mb": ((int, str), True), "app_available_mb": ((int, str), True),
        "bandwidth_gbs": (_F, True), "bandwidth_source": (_S, True)}
_FMT = {"format": (_S, True), "runtime": (_S, True), "min_version": (_S, True)}
_TRN = {"host": (_S, False), "port": (_I, False), "user": (_S, False), "key": (_S, False),
        "serial": (_S, False), "python": (_S, False), "remote_dir": (_S, False)}


def profile_from_dict(data: dict, source: str = "<dict>") -> DeviceProfile:
    top = _take(data, _TOP, source)
    if top["schema_version"] != 1:
        raise _bad(source, f"schema_version {top['schema_version']} is not supported (expected 1)")
    cpu = _take(top["cpu"], _CPU, f"{source} [cpu]")
    mem = _take(top["memory"], _MEM, f"{source} [memory]")
    host = None
    for table, key in ((cpu, "cores"), (cpu, "model"), (cpu, "isa"), (mem, "ram_mb"),
                       (mem, "app_available_mb"), (top, "arch"), (top, "os")):
        if table.get(key) == "auto":
            host = host or _host_facts()
            table[key] = host[key]
    if any(not isinstance(x, str) for x in cpu["features"]):
        raise _bad(f"{source} [cpu].features", "must be a list of strings")
    cpu["features"] = tuple(cpu["features"])
    if any(not isinstance(f, dict) for f in top["formats"]):
        raise _bad(source, "[[formats]] entries must be tables")
    formats = tuple(FormatSupport(**_take(f, _FMT, f"{source} [[formats]]")) for f in top["formats"])
    transport = TransportConfig(**_take(top.get("transport", {}), _TRN, f"{source} [transport]"))
    return DeviceProfile(
        name=top["name"], display_name=top["display_name"], kind=top["kind"], arch=top["arch"],
        os=top["os"], emulated=top.get("emulated", False), default_transport=top["default_transport"],
        cpu=CpuSpec(**cpu), memory=MemorySpec(**mem), formats=formats, transport=transport,
        source=source)


def load_profile(path: str | os.PathLike) -> DeviceProfile:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInputError(f"cannot read device profile {path}: {exc.strerror}",
                            code="E_PROFILE_INVALID") from exc
    except tomllib.TOMLDecodeError as exc:
        raise _bad(str(path), f"not valid TOML ({exc})") from exc
    profile = profile_from_dict(data, source=str(path))
    if profile.name != path.stem:
        raise _bad(str(path), f"name {profile.name!r} must equal the file name {path.stem!r}")
    return profile


class ProfileRegistry:
    """Profiles by name. ``register`` raises on a duplicate name (never silently replaces)."""

    def __init__(self):
        self._profiles: dict[str, DeviceProfile] = {}

    def register(self, profile: DeviceProfile) -> None:
        if profile.name in self._profiles:
            other = self._profiles[profile.name].source
            raise BadInputError(f"device profile {profile.name!r} from {profile.source} duplicates "
                                f"the one from {other}; rename one of them",
                                code="E_PROFILE_DUPLICATE")
        self._profiles[profile.name] = profile

    def load_dir(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        if not directory.is_dir():
            raise BadInputError(f"device profile directory {directory} does not exist",
                                code="E_PROFILE_INVALID")
        for path in sorted(directory.glob("*.toml")):
            self.register(load_profile(path))

    def get(self, name: str) -> DeviceProfile:
        try:
            return self._profiles[name]
        except KeyError:
            raise BadInputError(f"unknown device {name!r}; known devices: {', '.join(self.names())}",
                                code="E_DEVICE_UNKNOWN") from None

    def names(self) -> list[str]:
        return sorted(self._profiles)

    def __iter__(self):
        return iter(self._profiles[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._profiles)

    def __contains__(self, name: str) -> bool:
        return name in self._profiles


def load_registry(profile_dirs=(), *, use_env: bool = True) -> ProfileRegistry:
    """Built-in profiles, then ``$SLMPACK_DEVICE_PROFILES`` dirs, then ``profile_dirs``."""
    registry = ProfileRegistry()
    registry.load_dir(BUILTIN_DIR)
    dirs = []
    if use_env and os.environ.get(ENV_VAR):
        dirs += [d for d in os.environ[ENV_VAR].split(os.pathsep) if d]
    dirs += [str(d) for d in ([profile_dirs] if isinstance(profile_dirs, (str, os.PathLike))
                              else profile_dirs)]
    for d in dirs:
        registry.load_dir(d)
    return registry


def list_profiles(profile_dirs=()) -> list[DeviceProfile]:
    """All known device profiles, sorted by name (for ``slmpack devices``)."""
    return list(load_registry(profile_dirs))


def get_profile(name_or_profile, profile_dirs=()) -> DeviceProfile:
    if isinstance(name_or_profile, DeviceProfile):
        return name_or_profile
    return load_registry(profile_dirs).get(name_or_profile)
