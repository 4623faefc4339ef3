"""A local ``.gguf`` file read with the ``gguf`` package (data only: GGUF executes no code).

``open_gguf(path)`` checks the path is a regular file, maps it, walks the header with bounds
(``header.scan``), then parses it with ``gguf.GGUFReader`` over the same open file and checks
both agree. The result, ``GgufFile``, gives typed metadata accessors (a wrong type or a missing
key is ``E_GGUF_INVALID``) and each tensor's raw blocks or its float32 values, dequantized by
``gguf.quants.dequantize`` (the package's reference numpy code for every supported type).
"""
from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slmpack import confine
from slmpack.errors import BadInputError
from slmpack.exporter.gguf.header import TensorInfo, invalid, scan

Scalar = int | float | bool | str
MetaValue = Scalar | tuple[Scalar, ...]


def is_gguf(path: Path | None) -> bool:
    """A model path given as a file ending in ``.gguf`` (directories are Hugging Face checkpoints)."""
    return path is not None and Path(path).suffix.lower() == ".gguf" and not Path(path).is_dir()


@dataclass(frozen=True, eq=False)   # holds the mapped file: compare fields explicitly
class GgufFile:
    path: Path
    metadata: Mapping[str, MetaValue]
    tensors: Mapping[str, TensorInfo]
    sha256: str
    _buf: object                     # the read-only mmap (closed by open_gguf)

    @property
    def where(self) -> str:
        return str(self.path)

    def value(self, key: str, kind: type | tuple[type, ...], default=None):
        """``metadata[key]`` checked against ``kind``; ``default`` when absent (None: required)."""
        if key not in self.metadata:
            if default is None:
                raise invalid(self.where, f"metadata key {key} is missing")
            return default
        v = self.metadata[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(v, kinds) and not (isinstance(v, bool) and bool not in kinds)
        if float in kinds and isinstance(v, int) and not isinstance(v, bool):
            ok, v = True, float(v)
        if not ok:
            raise invalid(self.where, f"metadata key {key} is {type(v).__name__}, expected "
                                      f"{' or '.join(k.__name__ for k in kinds)}")
        return v

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes, ``uint8 [rows..., bytes_per_row]`` (a copy)."""
        t = self.tensors[name]
        data = np.frombuffer(self._buf, dtype=np.uint8, count=t.n_bytes, offset=t.offset)
        return data.reshape(*t.shape[:-1], -1).copy()

    def dequantized(self, name: str) -> np.ndarray:
        """float32 values in the tensor's (row-major) shape; NaN/Inf refused."""
        from gguf.quants import dequantize

        t = self.tensors[name]
        out = np.asarray(dequantize(self.raw(name), t.qtype), dtype=np.float32).reshape(t.shape)
        if not np.isfinite(out).all():
            raise BadInputError(f"{self.where}: tensor {name} ({t.qtype.name}) has NaN or Inf values",
                                "E_WEIGHTS_NONFINITE")
        return out


def _open_regular(path: Path):
    st = confine.regular_file(path, "GGUF file", "E_MODEL_DIR_MISSING", "E_NOT_REGULAR_FILE")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise BadInputError(f"{path}: cannot open ({e.strerror})", "E_PATH_UNSAFE") from None
    fst = os.fstat(fd)
    if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(fst.st_mode):
        os.close(fd)
        raise BadInputError(f"{path}: changed while being opened; refused", "E_PATH_UNSAFE")
    return os.fdopen(fd, "rb")


def _contents(field, where: str) -> MetaValue:
    """The field's value; a float32 scalar as the shortest decimal that is that float32 (1e-06,
    not 9.999999974752427e-07: the number the converter was given)."""
    from gguf.constants import GGUFValueType

    try:
        v = field.contents()
    except UnicodeDecodeError:
        raise invalid(where, f"metadata {field.name} is not UTF-8") from None
    if field.types == [GGUFValueType.FLOAT32]:
        return float(str(np.float32(v)))
    return tuple(v) if isinstance(v, list) else v


def _parse(f, buf, where: str, infos: tuple[TensorInfo, ...]) -> dict[str, MetaValue]:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(f)
        meta = {k: _contents(fl, where) for k, fl in reader.fields.items() if not k.startswith("GGUF.")}
        theirs = sorted((t.name, int(t.tensor_type), int(t.data_offset), int(t.n_bytes)) for t in reader.tensors)
    except BadInputError:
        raise
    except (ValueError, KeyError, IndexError, TypeError, OverflowError) as e:
        raise invalid(where, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") from None
    ours = sorted((t.name, int(t.qtype), t.offset, t.n_bytes) for t in infos)
    if theirs != ours:
        raise invalid(where, "gguf.GGUFReader and the bounded header walk disagree about the tensors")
    return meta


@contextlib.contextmanager
def open_gguf(path: Path) -> Iterator[GgufFile]:
    path = Path(path)
    with _open_regular(path) as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise invalid(str(path), "empty file")
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            infos = scan(buf, str(path))
            meta = _parse(f, buf, str(path), infos)
            digest = hashlib.sha256(buf).hexdigest()
            yield GgufFile(path, meta, {t.name: t for t in infos}, digest, buf)
        finally:
            buf.close()
