"""Reader of the MIL blob storage file (``weights/weight.bin``), format version 2.

Layout (coremltools ``mlmodel/src/MILBlob/Blob/StorageFormat.hpp``): a 64-byte ``storage_header``
(u32 count, u32 version = 2, reserved), then per blob a 64-byte ``blob_metadata`` (u32 sentinel
0xDEADBEEF, u32 BlobDataType, u64 sizeInBytes, u64 data offset, reserved) followed by the raw data,
every entry 64-byte aligned. A const's ``BlobFileValue.offset`` points at its metadata.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from .dtypes import MILType, unpack_bits
from .errors import MILFormatError

HEADER = struct.Struct("<II")          # count, version
METADATA = struct.Struct("<IIQQ")      # sentinel, dtype, sizeInBytes, offset
SENTINEL = 0xDEADBEEF
ALIGNMENT = 64

# BlobDataType (MILBlob/Blob/BlobDataType.hpp) -> MIL type name
BLOB_TYPES = {1: "fp16", 2: "fp32", 3: "uint8", 4: "int8", 5: "bf16", 6: "int16", 7: "uint16", 8: "int4",
              9: "uint1", 10: "uint2", 11: "uint4", 12: "uint3", 13: "uint6", 14: "int32", 15: "uint32"}


class BlobFile:
    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.data = self.path.read_bytes()
        except OSError as e:
            raise MILFormatError(f"{self.path}: cannot read weight file ({e.strerror})") from None
        if len(self.data) < ALIGNMENT:
            raise MILFormatError(f"{self.path}: weight file shorter than its 64-byte header")
        self.count, self.version = HEADER.unpack_from(self.data, 0)
        if self.version != 2:
            raise MILFormatError(f"{self.path}: blob storage version {self.version} (expected 2)")

    def entries(self) -> list[dict]:
        """Walk every blob in file order (used by the structural check)."""
        out, off = [], ALIGNMENT
        for _ in range(self.count):
            meta = self.metadata(off)
            out.append({"offset": off, **meta})
            end = meta["data_offset"] + meta["size"]
            off = (end + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
        return out

    def metadata(self, offset: int) -> dict:
        if offset % ALIGNMENT or offset + METADATA.size > len(self.data):
            raise MILFormatError(f"{self.path}: blob offset {offset} is misaligned or past the end")
        sentinel, dtype, size, data_offset = METADATA.unpack_from(self.data, offset)
        if sentinel != SENTINEL:
            raise MILFormatError(f"{self.path}: no blob metadata at offset {offset} (sentinel {sentinel:#x})")
        if data_offset + size > len(self.data):
            raise MILFormatError(f"{self.path}: blob at {offset} runs past the end of the file")
        return {"dtype": BLOB_TYPES.get(dtype, f"unknown({dtype})"), "size": size, "data_offset": data_offset}

    def read(self, offset: int, mil_type: MILType, shape: tuple[int, ...]) -> np.ndarray:
        meta = self.metadata(offset)
        if meta["dtype"] != mil_type.name:
            raise MILFormatError(f"{self.path}: blob at {offset} holds {meta['dtype']}, program declares "
                                 f"{mil_type.name}")
        raw = np.frombuffer(self.data, dtype=np.uint8, count=meta["size"], offset=meta["data_offset"])
        count = int(np.prod(shape, dtype=np.int64))
        if mil_type.bits < 8:
            values = unpack_bits(raw, mil_type.bits, count, mil_type.signed)
        else:
            if meta["size"] != count * mil_type.np_dtype.itemsize:
                raise MILFormatError(f"{self.path}: blob at {offset} has {meta['size']} bytes, shape {shape} "
                                     f"of {mil_type.name} needs {count * mil_type.np_dtype.itemsize}")
            values = raw.view(mil_type.np_dtype.newbyteorder("<")).astype(mil_type.np_dtype)
        return values.reshape(shape)
