"""Read and write TensorFlow (TF1 ``tf.train.Saver`` / TF2 ``tf.train.Checkpoint``) checkpoints
without TensorFlow.

A checkpoint ``PREFIX`` is a "tensor bundle" of two kinds of files:

* ``PREFIX.index``: an SSTable (the LevelDB table layout). The file is a run of blocks, each
  followed by a 5-byte trailer ``[compression type: u8][masked crc32c of block + type: u32 LE]``,
  and ends with a 48-byte footer: the block handles ``(offset, size)`` (two varints each) of the
  meta-index and index blocks, zero-padded to 40 bytes, then the magic ``0xdb4775248b80fb57``
  (u64 LE). A block holds prefix-compressed entries ``varint shared, varint unshared, varint
  value_len, key[shared:], value`` followed by the restart offsets ``u32 LE * n`` and ``n``
  (``u32 LE``). The index block's values are the block handles of the data blocks, whose entries
  are the bundle's keys in byte order. Key ``""`` holds a ``BundleHeaderProto`` (1: num_shards,
  2: endianness 0 little / 1 big, 3: VersionDef {1: producer, 2: min_consumer}); every other key
  is a tensor name holding a ``BundleEntryProto`` (1: dtype enum, 2: TensorShapeProto
  {2: dim {1: size}}, 3: shard_id, 4: offset, 5: size, 6: crc32c (fixed32, masked), 7: slices).
* ``PREFIX.data-SSSSS-of-NNNNN``: the raw tensor bytes, row-major, at ``offset .. offset + size``
  of shard ``shard_id``.

Masked CRC: ``mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2**32)`` of the Castagnoli
CRC-32C. No CRC library is required: :func:`crc32c` is table driven; inputs of 64 KiB and more are
split into equal chunks whose CRC registers are computed together with NumPy and folded with a
precomputed "advance over L zero bytes" table (the CRC is linear), about 1.5 s per 100 MB on one
core; pass ``verify=False`` to :func:`read_tf_checkpoint` to skip the per-tensor check.

Shapes: tensors come back with the shape of their entry (``()`` for scalars), on the CPU, in the
dtype of :data:`TF_DTYPES` (float32, float64, float16, bfloat16, int8, int16, int32, int64, uint8,
bool).

Limitations:

* Compressed table blocks are refused (TensorFlow writes bundles uncompressed).
* String, resource, variant, complex and unsigned >8-bit tensors are refused by
  :func:`read_tf_checkpoint` (:func:`list_tf_checkpoint` names their dtype).
* Partitioned (sliced) variables are refused: the entry's ``slices`` are not assembled.
* Checkpoints of TensorFlow 0.x (``V1`` single-file format, no ``.index``) are not read.
* :func:`write_tf_checkpoint` writes one data shard, uncompressed, little-endian, no ``.meta``
  graph and no ``checkpoint`` state file.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from hdrlab.errors import HDRIOError

__all__ = [
    "TF_DTYPES",
    "checkpoint_prefix",
    "crc32c",
    "list_tf_checkpoint",
    "read_tf_checkpoint",
    "write_tf_checkpoint",
]

#: TensorFlow ``DataType`` enum -> (name, torch dtype, NumPy little-endian dtype) of the readable dtypes
TF_DTYPES: dict[int, tuple[str, torch.dtype, str]] = {
    1: ("float32", torch.float32, "<f4"),
    2: ("float64", torch.float64, "<f8"),
    3: ("int32", torch.int32, "<i4"),
    4: ("uint8", torch.uint8, "u1"),
    5: ("int16", torch.int16, "<i2"),
    6: ("int8", torch.int8, "i1"),
    9: ("int64", torch.int64, "<i8"),
    10: ("bool", torch.bool, "?"),
    14: ("bfloat16", torch.bfloat16, "<i2"),  # read as int16 bits, reinterpreted
    19: ("float16", torch.float16, "<f2"),
}
#: names of TensorFlow dtypes that are recognised but not read
_OTHER_DTYPES = {7: "string", 8: "complex64", 11: "qint8", 12: "quint8", 13: "qint32", 15: "qint16",
                 16: "quint16", 17: "uint16", 18: "complex128", 20: "resource", 21: "variant",
                 22: "uint32", 23: "uint64"}
_TORCH_TO_TF = {torch_dtype: enum for enum, (_, torch_dtype, _) in TF_DTYPES.items()}

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
_TRAILER = 5
_BUNDLE_VERSION = 1
_SUFFIX = re.compile(r"\.(index|meta|data-\d{5}-of-\d{5})$")


# ----------------------------------------------------------------------------- CRC-32C
def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1).astype(np.uint32)
    return table


_TABLE = _crc_table()
_TABLE_LIST = [int(v) for v in _TABLE]


def _crc_bytes(reg: int, data: bytes) -> int:
    table = _TABLE_LIST
    for byte in data:
        reg = table[(reg ^ byte) & 0xFF] ^ (reg >> 8)
    return reg


@lru_cache(maxsize=4)
def _advance_tables(length: int) -> tuple[list[int], ...]:
    """Four 256-entry tables: the register after ``length`` zero bytes, per register byte."""
    start = np.array([v << (8 * k) for k in range(4) for v in range(256)], dtype=np.uint32)
    for _ in range(length):
        start = _TABLE[start & 0xFF] ^ (start >> 8)
    return tuple([int(v) for v in start[256 * k:256 * (k + 1)]] for k in range(4))


def crc32c(data: bytes | bytearray | memoryview | np.ndarray) -> int:
    """CRC-32C (Castagnoli, reflected polynomial ``0x82F63B78``) of ``data``: ``crc32c(b"123456789") == 0xE3069283``."""
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    n = buf.size
    if n < 1 << 16:
        return _crc_bytes(0xFFFFFFFF, buf.tobytes()) ^ 0xFFFFFFFF
    length = 256 if n < 1 << 22 else 4096
    chunks = n // length
    rows = np.ascontiguousarray(buf[:chunks * length].reshape(chunks, length).T)
    regs = np.zeros(chunks, dtype=np.uint32)
    for row in rows:  # the registers of all chunks, each started at 0, advance together
        regs = _TABLE[(regs ^ row) & 0xFF] ^ (regs >> 8)
    t0, t1, t2, t3 = _advance_tables(length)
    reg = 0xFFFFFFFF
    for chunk_reg in regs.tolist():
        reg = t0[reg & 0xFF] ^ t1[(reg >> 8) & 0xFF] ^ t2[(reg >> 16) & 0xFF] ^ t3[reg >> 24] ^ chunk_reg
    return _crc_bytes(reg, buf[chunks * length:].tobytes()) ^ 0xFFFFFFFF


def _mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# ----------------------------------------------------------------------------- protobuf wire format
class _Corrupt(ValueError):
    """A malformed varint, block or protobuf message (turned into one HDRIOError line)."""


class _Compressed(ValueError):
    """A table block whose trailer names a compression (the value is the type byte)."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Corrupt("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _put_varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 fields are ten-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """``[(field number, value)]`` of a protobuf message (varint / fixed as int, length-delimited as bytes)."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise _Corrupt("truncated fixed64")
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 5:
            if pos + 4 > len(buf):
                raise _Corrupt("truncated fixed32")
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise _Corrupt("truncated length-delimited field")
            value, pos = bytes(buf[pos:pos + size]), pos + size
        else:
            raise _Corrupt(f"unsupported protobuf wire type {wire}")
        if number == 0:
            raise _Corrupt("protobuf field number 0")
        out.append((number, value))
    return out


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _put_varint(number << 3 | 2) + _put_varint(len(payload)) + payload


def _field_varint(number: int, value: int) -> bytes:
    return _put_varint(number << 3) + _put_varint(value)


class _Entry:
    """A decoded ``BundleEntryProto``."""

    __slots__ = ("crc", "dtype", "offset", "shape", "shard", "size", "sliced")

    def __init__(self, value: bytes) -> None:
        self.dtype, self.shape, self.shard, self.offset, self.size = 0, (), 0, 0, 0
        self.crc: int | None = None
        self.sliced = False
        dims: list[int] = []
        for number, field_value in _fields(value):
            if number == 1:
                self.dtype = int(field_value)
            elif number == 2:
                for sub, dim in _fields(_as_bytes(field_value)):
                    if sub == 2:
                        size = next((_signed(int(v)) for n, v in _fields(_as_bytes(dim)) if n == 1), 0)
                        dims.append(size)
            elif number == 3:
                self.shard = _signed(int(field_value))
            elif number == 4:
                self.offset = _signed(int(field_value))
            elif number == 5:
                self.size = _signed(int(field_value))
            elif number == 6:
                self.crc = int(field_value)
            elif number == 7:
                self.sliced = True
        self.shape = tuple(dims)


def _as_bytes(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise _Corrupt("a message field is not length-delimited")
    return value


# ----------------------------------------------------------------------------- SSTable
def _block(data: bytes, offset: int, size: int, what: str) -> bytes:
    """Contents of the block at ``(offset, size)``, its trailer checked (type 0, masked CRC)."""
    if offset < 0 or size < 0 or offset + size + _TRAILER > len(data):
        raise _Corrupt(f"{what} block lies outside the file")
    contents = data[offset:offset + size]
    kind = data[offset + size]
    if kind != 0:
        raise _Compressed(kind)
    stored = int.from_bytes(data[offset + size + 1:offset + size + _TRAILER], "little")
    if _mask(crc32c(data[offset:offset + size + 1])) != stored:
        raise _Corrupt(f"{what} block checksum mismatch")
    return contents


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise _Corrupt("block shorter than its restart count")
    restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * restarts
    if restarts < 1 or end < 0:
        raise _Corrupt("bad restart array")
    out: list[tuple[bytes, bytes]] = []
    key = b""
    pos = 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + value_len > end:
            raise _Corrupt("bad block entry")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        out.append((key, block[pos:pos + value_len]))
        pos += value_len
    return out


def _table_entries(data: bytes) -> list[tuple[bytes, bytes]]:
    if len(data) < _FOOTER:
        raise _Corrupt("shorter than the 48-byte table footer")
    footer = data[-_FOOTER:]
    if int.from_bytes(footer[-8:], "little") != _MAGIC:
        raise _Corrupt("no table magic number at the end")
    _, pos = _varint(footer, 0)  # meta-index handle: bundles keep no meta blocks
    _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    entries: list[tuple[bytes, bytes]] = []
    for _, handle in _block_entries(_block(data, index_offset, index_size, "index")):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
        entries.extend(_block_entries(_block(data, offset, size, "data")))
    return entries


# ----------------------------------------------------------------------------- bundle
def checkpoint_prefix(path: str | Path) -> Path:
    """The checkpoint prefix of ``PREFIX``, ``PREFIX.index``, ``PREFIX.meta`` or ``PREFIX.data-00000-of-00001``."""
    path = Path(path)
    return path.with_name(_SUFFIX.sub("", path.name))


def _read_index(path: str | Path) -> tuple[Path, int, bool, dict[str, _Entry]]:
    """``(prefix, num_shards, big_endian, {name: entry})`` of a checkpoint's ``.index``."""
    prefix = checkpoint_prefix(path)
    index = prefix.with_name(prefix.name + ".index")
    if not index.is_file():
        raise HDRIOError(f"{index} does not exist; give the checkpoint prefix (model.ckpt) or its .index file, "
                         "with the .index and .data-* files side by side")
    data = index.read_bytes()
    try:
        raw = _table_entries(data)
        num_shards, big_endian, entries = 1, False, {}
        for key, value in raw:
            if key == b"":
                for number, field_value in _fields(value):
                    if number == 1:
                        num_shards = int(field_value)
                    elif number == 2:
                        big_endian = int(field_value) == 1
                    elif number == 3:
                        version = dict(_fields(_as_bytes(field_value)))
                        if int(version.get(2, 0)) > _BUNDLE_VERSION:
                            raise HDRIOError(f"{index} needs tensor-bundle reader version {version.get(2)} "
                                             f"(this reader is version {_BUNDLE_VERSION}); re-save the "
                                             "checkpoint with an older TensorFlow")
                continue
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                raise _Corrupt(f"non-UTF-8 key {key[:40]!r} (a partitioned variable's slice?)") from None
            entries[name] = _Entry(value)
    except _Corrupt as err:
        raise HDRIOError(f"{index} is not a TensorFlow checkpoint index ({err}); give an intact "
                         "<prefix>.index written by tf.train.Saver / tf.train.Checkpoint") from err
    except _Compressed as err:
        raise HDRIOError(f"{index} has a compressed table block (compression type {err}); only uncompressed "
                         "bundles (what TensorFlow writes) are read: re-save it with TensorFlow") from None
    return prefix, num_shards, big_endian, entries


def _dtype_name(enum: int) -> str:
    if enum in TF_DTYPES:
        return TF_DTYPES[enum][0]
    return _OTHER_DTYPES.get(enum, f"dtype#{enum}")


def list_tf_checkpoint(prefix: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (dtype name, shape)}`` of every tensor of a checkpoint, read from its ``.index`` only.

    dtype names are those of :data:`TF_DTYPES` (``"float32"``) or the TensorFlow name of an
    unreadable dtype (``"string"``, ``"resource"``). Names come in the bundle's byte order.

    Raises:
        HDRIOError: the ``.index`` is missing, corrupt, or compressed.
    """
    _, _, _, entries = _read_index(prefix)
    return {name: (_dtype_name(e.dtype), e.shape) for name, e in entries.items()}


def read_tf_checkpoint(prefix: str | Path, *, verify: bool = True) -> dict[str, torch.Tensor]:
    """Every tensor of a TensorFlow checkpoint as ``{name: CPU tensor}`` (names in byte order).

    Args:
        prefix: ``PREFIX`` or one of ``PREFIX.index`` / ``PREFIX.meta`` / ``PREFIX.data-*``.
        verify: check each tensor's CRC-32C against its index entry.

    Raises:
        HDRIOError: a missing ``.index`` or data shard, a corrupt or truncated file, a checksum
            mismatch, an unsupported dtype, or a partitioned variable (one line each).
    """
    prefix, num_shards, big_endian, entries = _read_index(prefix)
    index = prefix.with_name(prefix.name + ".index")
    out: dict[str, torch.Tensor] = {}
    handles = {}
    try:
        for name, entry in entries.items():
            if entry.sliced:
                raise HDRIOError(f"{index}: {name!r} is a partitioned variable (saved in slices), which is not read; "
                                 "re-save it unpartitioned")
            if entry.dtype not in TF_DTYPES:
                raise HDRIOError(f"{index}: {name!r} has dtype {_dtype_name(entry.dtype)}, which is not read (only "
                                 f"{', '.join(v[0] for v in TF_DTYPES.values())}); drop it from the checkpoint")
            dtype_name, torch_dtype, np_dtype = TF_DTYPES[entry.dtype]
            if not 0 <= entry.shard < num_shards:
                raise HDRIOError(f"{index}: {name!r} lies in shard {entry.shard} of {num_shards}; the index is corrupt")
            shard = prefix.with_name(f"{prefix.name}.data-{entry.shard:05d}-of-{num_shards:05d}")
            if entry.shard not in handles:
                if not shard.is_file():
                    raise HDRIOError(f"{shard} is missing (checkpoint data shard {entry.shard} of {num_shards}); "
                                     "put every .data-* file next to the .index")
                handles[entry.shard] = open(shard, "rb")  # noqa: SIM115 - closed below
            numel = int(np.prod(entry.shape, dtype=np.int64)) if entry.shape else 1
            itemsize = np.dtype(np_dtype).itemsize
            if any(d < 0 for d in entry.shape) or entry.size != numel * itemsize:
                raise HDRIOError(f"{index}: {name!r} has shape {entry.shape} of {dtype_name} but {entry.size} bytes; "
                                 "the index is corrupt")
            handle = handles[entry.shard]
            handle.seek(entry.offset)
            raw = handle.read(entry.size)
            if len(raw) != entry.size:
                raise HDRIOError(f"{shard} is truncated: {name!r} needs bytes {entry.offset}..{entry.offset + entry.size} "
                                 "of it; copy the complete checkpoint again")
            if verify and entry.crc is not None and _mask(crc32c(raw)) != entry.crc:
                raise HDRIOError(f"{shard}: {name!r} fails its CRC-32C check; the checkpoint is corrupt, copy it again")
            array = np.frombuffer(raw, dtype=np.dtype(np_dtype).newbyteorder(">" if big_endian else "<"))
            tensor = torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True)).reshape(entry.shape)
            out[name] = tensor.view(torch.bfloat16) if torch_dtype is torch.bfloat16 else tensor
    finally:
        for handle in handles.values():
            handle.close()
    return out


# ----------------------------------------------------------------------------- writing
class _BlockBuilder:
    def __init__(self, restart_interval: int) -> None:
        self.interval = restart_interval
        self.buf = bytearray()
        self.restarts = [0]
        self.count = 0
        self.last = b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.count < self.interval:
            limit = min(len(key), len(self.last))
            while shared < limit and key[shared] == self.last[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buf))
            self.count = 0
        self.buf += _put_varint(shared) + _put_varint(len(key) - shared) + _put_varint(len(value))
        self.buf += key[shared:] + value
        self.last = key
        self.count += 1

    def size(self) -> int:
        return len(self.buf) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        return bytes(self.buf) + b"".join(struct.pack("<I", r) for r in self.restarts) + struct.pack(
            "<I", len(self.restarts))


def _emit_block(out: bytearray, contents: bytes) -> bytes:
    """Append ``contents`` + trailer to ``out``; returns its encoded block handle."""
    handle = _put_varint(len(out)) + _put_varint(len(contents))
    out += contents + b"\x00"
    out += struct.pack("<I", _mask(crc32c(contents + b"\x00")))
    return handle


def _table(entries: list[tuple[bytes, bytes]], *, block_size: int, restart_interval: int) -> bytes:
    out = bytearray()
    index = _BlockBuilder(1)
    block = _BlockBuilder(restart_interval)
    for key, value in entries:
        block.add(key, value)
        if block.size() >= block_size:
            index.add(block.last, _emit_block(out, block.finish()))  # the last key bounds the block
            block = _BlockBuilder(restart_interval)
    if block.count or not index.count:
        index.add(block.last, _emit_block(out, block.finish()))
    meta_handle = _emit_block(out, _BlockBuilder(restart_interval).finish())
    index_handle = _emit_block(out, index.finish())
    footer = (meta_handle + index_handle).ljust(_FOOTER - 8, b"\x00") + struct.pack("<Q", _MAGIC)
    return bytes(out + footer)


def write_tf_checkpoint(prefix: str | Path, tensors: Mapping[str, torch.Tensor], *,
                        block_size: int = 262144, restart_interval: int = 16) -> Path:
    """Write ``tensors`` as a TensorFlow checkpoint ``PREFIX.index`` + ``PREFIX.data-00000-of-00001``.

    ``tf.train.load_checkpoint(PREFIX)`` / ``tf.compat.v1.train.Saver.restore`` read it (the
    variable names are the keys). Returns the prefix.

    Args:
        prefix: checkpoint prefix (``.../model.ckpt``); its folder must exist.
        tensors: ``{name: tensor}`` of a dtype of :data:`TF_DTYPES`; names are non-empty.
        block_size: data-block size at which the index table starts a new block (TensorFlow's 256 KiB).
        restart_interval: keys per prefix-compression restart point (TensorFlow's 16).

    Raises:
        HDRIOError: the folder is missing, a name is empty, or a dtype has no TensorFlow counterpart.
    """
    prefix = checkpoint_prefix(prefix)
    if not prefix.parent.is_dir():
        raise HDRIOError(f"{prefix.parent} does not exist; create the folder of the checkpoint prefix first")
    items: list[tuple[bytes, str, torch.Tensor]] = []
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not name or name.startswith("\x00"):
            raise HDRIOError(f"tensor name {name!r} cannot be a checkpoint key; give a non-empty string")
        if tensor.dtype not in _TORCH_TO_TF:
            raise HDRIOError(f"tensor {name!r} has dtype {tensor.dtype}, which has no TensorFlow bundle dtype here; "
                             f"convert it to one of {', '.join(v[0] for v in TF_DTYPES.values())}")
        items.append((name.encode("utf-8"), name, tensor))
    items.sort(key=lambda item: item[0])
    data_path = prefix.with_name(prefix.name + ".data-00000-of-00001")
    entries: list[tuple[bytes, bytes]] = []
    header = _field_varint(1, 1) + _field_varint(2, 0) + _field_bytes(3, _field_varint(1, _BUNDLE_VERSION))
    entries.append((b"", header))
    offset = 0
    with open(data_path, "wb") as f:
        for key, _name, tensor in items:
            t = tensor.detach().cpu().contiguous()
            if t.dtype is torch.bfloat16:
                t = t.view(torch.int16)
            raw = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
            f.write(raw)
            shape = b"".join(_field_bytes(2, _field_varint(1, d)) for d in tensor.shape)
            entry = (_field_varint(1, _TORCH_TO_TF[tensor.dtype]) + _field_bytes(2, shape)
                     + (_field_varint(4, offset) if offset else b"") + (_field_varint(5, len(raw)) if raw else b"")
                     + _put_varint(6 << 3 | 5) + struct.pack("<I", _mask(crc32c(raw))))
            entries.append((key, entry))
            offset += len(raw)
    prefix.with_name(prefix.name + ".index").write_bytes(
        _table(entries, block_size=block_size, restart_interval=restart_interval))
    return prefix
