"""TensorFlow checkpoint (tensor bundle) reader/writer without TensorFlow: a TensorFlow-written
fixture, round trips, list-only mode, CRC-32C, corrupt / missing / truncated files."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from hdrlab.errors import HDRIOError
from hdrlab.tf_checkpoint import (
    _block_entries,
    _mask,
    _varint,
    checkpoint_prefix,
    crc32c,
    list_tf_checkpoint,
    read_tf_checkpoint,
    write_tf_checkpoint,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tf_checkpoint"

pytestmark = pytest.mark.usefixtures("single_thread")


def test_reads_the_tensorflow_written_fixture_exactly():
    expected = np.load(FIXTURE / "expected.npz")
    tensors = read_tf_checkpoint(FIXTURE / "model.ckpt")
    assert sorted(tensors) == sorted(expected.files)
    assert len(tensors) == 25
    for name in expected.files:
        assert tensors[name].numpy().dtype == expected[name].dtype, name
        assert tuple(tensors[name].shape) == expected[name].shape, name
        np.testing.assert_array_equal(tensors[name].numpy(), expected[name], err_msg=name)
    assert tensors["global_step"].dtype == torch.int64 and int(tensors["global_step"]) == 123456789012
    assert tensors["hallucination_net/alpha"].shape == () and float(tensors["hallucination_net/alpha"]) == 0.25
    assert tensors["dequantization_net/conv1/kernel"].shape == (3, 3, 3, 4)
    assert tensors["misc/empty"].shape == (0, 4)


def test_fixture_paths_of_every_file_name_the_same_checkpoint():
    for name in ("model.ckpt", "model.ckpt.index", "model.ckpt.data-00000-of-00001", "model.ckpt.meta"):
        assert checkpoint_prefix(FIXTURE / name) == FIXTURE / "model.ckpt"
    a = read_tf_checkpoint(FIXTURE / "model.ckpt.index")
    b = read_tf_checkpoint(str(FIXTURE / "model.ckpt.data-00000-of-00001"))
    assert all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_list_reads_the_index_only(tmp_path):
    shutil.copy(FIXTURE / "model.ckpt.index", tmp_path / "model.ckpt.index")  # no data shard
    listing = list_tf_checkpoint(tmp_path / "model.ckpt")
    assert listing["dequantization_net/conv1/kernel"] == ("float32", (3, 3, 3, 4))
    assert listing["global_step"] == ("int64", ())
    assert listing["misc/half"] == ("float16", (2, 5))
    assert listing["misc/double"] == ("float64", (3,))
    assert listing["misc/int32"] == ("int32", (2, 3))
    assert list(listing) == sorted(listing)  # byte order of the table
    with pytest.raises(HDRIOError, match=r"model\.ckpt\.data-00000-of-00001 is missing"):
        read_tf_checkpoint(tmp_path / "model.ckpt")


def test_crc32c_known_values_and_chunked_path():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4 test vector
    data = np.random.default_rng(0).integers(0, 256, 300_001, dtype=np.uint8).tobytes()
    reg = 0xFFFFFFFF  # plain bytewise reference for the NumPy chunked path
    for byte in data:
        reg ^= byte
        for _ in range(8):
            reg = (reg >> 1) ^ (0x82F63B78 if reg & 1 else 0)
    assert crc32c(data) == reg ^ 0xFFFFFFFF


def _random_tensors(count: int = 60) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    tensors: dict[str, torch.Tensor] = {
        "scalar": torch.tensor(3.25),
        "a/b/c/d/e/f": torch.randn(2, 3, 4, 5, generator=gen),
        "half": torch.randn(7, generator=gen).half(),
        "double": torch.randn(3, 2, generator=gen).double(),
        "bf16": torch.randn(9, generator=gen).bfloat16(),
        "int8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "int16": torch.tensor([-32768, 5, 32767], dtype=torch.int16),
        "int32": torch.tensor([[-(2**31), 0], [1, 2**31 - 1]], dtype=torch.int32),
        "int64": torch.tensor(-(2**62), dtype=torch.int64),
        "uint8": torch.tensor([0, 1, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False]),
        "empty": torch.zeros(0, 3),
        "name with spaces:0/and-dashes.dots": torch.arange(4.0),
        "global_step": torch.tensor(7, dtype=torch.int64),
        "big": torch.randn(300, 300, generator=gen),  # 360 kB: the chunked CRC path
    }
    for i in range(count):  # shared prefixes across restart points
        tensors[f"net/scope_{i % 7}/layer_{i:03d}/kernel"] = torch.randn(1, 1, 2, i % 5 + 1, generator=gen)
    return tensors


@pytest.mark.parametrize("block_size", [262144, 300])
def test_write_read_round_trip_all_dtypes(tmp_path, block_size):
    tensors = _random_tensors()
    prefix = write_tf_checkpoint(tmp_path / "model.ckpt", tensors, block_size=block_size, restart_interval=4)
    assert prefix == tmp_path / "model.ckpt"
    assert (tmp_path / "model.ckpt.index").is_file() and (tmp_path / "model.ckpt.data-00000-of-00001").is_file()
    back = read_tf_checkpoint(prefix)
    assert list(back) == sorted(tensors, key=lambda k: k.encode())
    for name, tensor in tensors.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape, name
        assert torch.equal(back[name], tensor), name
    listing = list_tf_checkpoint(prefix)
    assert listing["bf16"] == ("bfloat16", (9,)) and listing["scalar"] == ("float32", ())
    assert listing["bool"] == ("bool", (2,)) and listing["empty"] == ("float32", (0, 3))


def test_small_blocks_make_several_data_blocks(tmp_path):
    tensors = {f"v{i:04d}": torch.full((2,), float(i)) for i in range(400)}
    write_tf_checkpoint(tmp_path / "a", tensors)
    write_tf_checkpoint(tmp_path / "b", tensors, block_size=256)
    assert (tmp_path / "b.index").stat().st_size > (tmp_path / "a.index").stat().st_size  # more block trailers
    back = read_tf_checkpoint(tmp_path / "b")
    assert [float(back[f"v{i:04d}"][1]) for i in range(400)] == [float(i) for i in range(400)]


def test_data_layout_is_raw_little_endian(tmp_path):
    write_tf_checkpoint(tmp_path / "m", {"x": torch.tensor([1.0, -2.0]), "y": torch.tensor([3], dtype=torch.int64)})
    raw = (tmp_path / "m.data-00000-of-00001").read_bytes()
    assert raw == struct.pack("<ff", 1.0, -2.0) + struct.pack("<q", 3)


def test_truncated_shard_fails_with_one_line(tmp_path):
    prefix = write_tf_checkpoint(tmp_path / "m", _random_tensors(5))
    shard = tmp_path / "m.data-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(HDRIOError, match="is truncated") as err:
        read_tf_checkpoint(prefix)
    assert "\n" not in str(err.value)


def test_flipped_data_byte_fails_the_crc(tmp_path):
    prefix = write_tf_checkpoint(tmp_path / "m", {"x": torch.arange(10.0)})
    shard = tmp_path / "m.data-00000-of-00001"
    data = bytearray(shard.read_bytes())
    data[5] ^= 0x40
    shard.write_bytes(bytes(data))
    with pytest.raises(HDRIOError, match=r"'x' fails its CRC-32C check"):
        read_tf_checkpoint(prefix)
    assert read_tf_checkpoint(prefix, verify=False)["x"].shape == (10,)


def test_missing_index_and_garbage_index_fail(tmp_path):
    with pytest.raises(HDRIOError, match=r"nothing\.index does not exist"):
        read_tf_checkpoint(tmp_path / "nothing")
    (tmp_path / "bad.index").write_bytes(b"\x00" * 100)
    with pytest.raises(HDRIOError, match="is not a TensorFlow checkpoint index .no table magic") as err:
        list_tf_checkpoint(tmp_path / "bad")
    assert "\n" not in str(err.value)
    (tmp_path / "short.index").write_bytes(b"abc")
    with pytest.raises(HDRIOError, match="shorter than the 48-byte table footer"):
        read_tf_checkpoint(tmp_path / "short.index")


def test_corrupt_index_block_fails_its_checksum(tmp_path):
    prefix = write_tf_checkpoint(tmp_path / "m", {"abc": torch.ones(2)})
    index = tmp_path / "m.index"
    data = bytearray(index.read_bytes())
    data[data.find(b"abc")] ^= 0x01
    index.write_bytes(bytes(data))
    with pytest.raises(HDRIOError, match="data block checksum mismatch"):
        list_tf_checkpoint(prefix)


def _first_data_block(data: bytes) -> tuple[int, int]:
    """``(offset, size)`` of the first data block of an index table (footer -> index block -> handle)."""
    footer = data[-48:]
    _, pos = _varint(footer, 0)
    _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    handle = _block_entries(data[index_offset:index_offset + index_size])[0][1]
    offset, pos = _varint(handle, 0)
    return offset, _varint(handle, pos)[0]


def _reseal(data: bytearray, offset: int, size: int, kind: int = 0) -> None:
    """Rewrite the trailer of the block at ``(offset, size)``: compression ``kind`` and a valid CRC."""
    data[offset + size] = kind
    data[offset + size + 1:offset + size + 5] = struct.pack("<I", _mask(crc32c(bytes(data[offset:offset + size + 1]))))


def test_compressed_block_is_refused(tmp_path):
    prefix = write_tf_checkpoint(tmp_path / "m", {"abc": torch.ones(2)})
    index = tmp_path / "m.index"
    data = bytearray(index.read_bytes())
    _reseal(data, *_first_data_block(bytes(data)), kind=1)  # 1: snappy
    index.write_bytes(bytes(data))
    with pytest.raises(HDRIOError, match=r"compressed table block \(compression type 1\)"):
        read_tf_checkpoint(prefix)


def test_unsupported_dtype_and_bad_names_fail(tmp_path):
    with pytest.raises(HDRIOError, match="complex64"):
        write_tf_checkpoint(tmp_path / "m", {"z": torch.zeros(2, dtype=torch.complex64)})
    with pytest.raises(HDRIOError, match="tensor name '' cannot be a checkpoint key"):
        write_tf_checkpoint(tmp_path / "m", {"": torch.zeros(2)})
    with pytest.raises(HDRIOError, match="does not exist; create the folder"):
        write_tf_checkpoint(tmp_path / "missing" / "m", {"a": torch.zeros(2)})
    # a string tensor as TensorFlow would list it: the entry's dtype enum 1 (float32) becomes 7 (string)
    prefix = write_tf_checkpoint(tmp_path / "s", {"name": torch.zeros(1)})
    index = tmp_path / "s.index"
    data = bytearray(index.read_bytes())
    at = data.find(b"name") + 4
    assert data[at:at + 2] == b"\x08\x01"  # field 1 (dtype), varint 1
    data[at + 1] = 7
    _reseal(data, *_first_data_block(bytes(data)))
    index.write_bytes(bytes(data))
    assert list_tf_checkpoint(prefix) == {"name": ("string", (1,))}
    with pytest.raises(HDRIOError, match="'name' has dtype string, which is not read"):
        read_tf_checkpoint(prefix)


def test_fixture_index_has_two_restart_points():
    data = (FIXTURE / "model.ckpt.index").read_bytes()
    offset, size = _first_data_block(data)
    assert int.from_bytes(data[offset + size - 4:offset + size], "little") == 2  # 26 keys, TensorFlow's interval 16
