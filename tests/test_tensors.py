"""spae._tensors: one reader for safetensors, npz, npy, orbax and GGUF, with checked `get`."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import spae
from spae._tensors import GGUF_TYPES, Tensors, load_tensor, open_tensors

RNG = np.random.default_rng(0)


def test_safetensors_shards_keep_dtype_and_are_memory_mapped(tmp_path):
  from safetensors.numpy import save_file

  a = RNG.normal(size=(3, 4)).astype(np.float32)
  b = RNG.normal(size=(5,)).astype(ml_dtypes.bfloat16)
  save_file({"a": a}, str(tmp_path / "model-00001-of-00002.safetensors"))
  save_file({"b": b, "i": np.arange(6, dtype=np.int64).reshape(2, 3)},
            str(tmp_path / "model-00002-of-00002.safetensors"))
  t = open_tensors(tmp_path)
  assert t.format == "safetensors" and sorted(t) == ["a", "b", "i"]
  assert t.stored_dtype("b") == "bfloat16" and t.shape("i") == (2, 3)
  raw = t.raw("a")
  assert isinstance(raw.base, np.memmap) or isinstance(raw, np.memmap)
  assert not raw.flags.writeable
  np.testing.assert_array_equal(t.get("a", (3, 4)), a)
  assert t.get("b").dtype == ml_dtypes.bfloat16  # kept as stored
  np.testing.assert_array_equal(t.get("b", dtype=np.float32), b.astype(np.float32))
  assert t.get("i", dtype=np.float32).dtype == np.float32  # integers may be read as floats
  assert open_tensors(tmp_path, dtype=np.float32)["b"].dtype == np.float32  # the store's default dtype
  with pytest.raises(spae.SpaeInputError, match=r"model-00001-of-00002.safetensors: tensor 'a' has shape \(3, 4\) "
                     r"but the model configuration implies \(4, 3\)"):
    t.get("a", (4, 3))
  with pytest.raises(spae.SpaeInputError, match=r"tensor 'b' is stored as bfloat16; it cannot be read as int32"):
    t.get("b", dtype=np.int32)
  with pytest.raises(spae.SpaeInputError, match=r"\*.safetensors: missing tensor 'c' \(expected shape \(2,\)\)"):
    t.get("c", (2,))


def test_truncated_safetensors_names_the_file(tmp_path):
  from safetensors.numpy import save_file

  save_file({"a": np.zeros((64, 64), np.float32)}, str(tmp_path / "m.safetensors"))
  data = (tmp_path / "m.safetensors").read_bytes()
  (tmp_path / "m.safetensors").write_bytes(data[:-100])
  with pytest.raises(spae.SpaeInputError, match=r"m.safetensors: tensor 'a' lies outside the file"):
    open_tensors(tmp_path / "m.safetensors")
  (tmp_path / "m.safetensors").write_bytes(b"\xff" * 16)
  with pytest.raises(spae.SpaeInputError, match="is not a readable safetensors file"):
    open_tensors(tmp_path / "m.safetensors")


def test_npz_npy_orbax_and_in_memory(tmp_path):
  import orbax.checkpoint as ocp

  x = RNG.normal(size=(4, 2)).astype(np.float32)
  np.savez(tmp_path / "w.npz", x=x, y=np.arange(3))
  t = open_tensors(tmp_path / "w.npz")
  assert t.format == "npz" and t.shape("x") == (4, 2) and t.stored_dtype("y") == "int64"
  np.testing.assert_array_equal(t["x"], x)
  np.save(tmp_path / "table.npy", x)
  assert list(open_tensors(tmp_path / "table.npy")) == ["table"]
  np.testing.assert_array_equal(load_tensor(tmp_path / "table.npy"), x)
  ocp.PyTreeCheckpointer().save((tmp_path / "ck").absolute(), {"enc": {"layers": [{"w": x}, {"w": 2 * x}]}})
  o = open_tensors(tmp_path / "ck")
  assert o.format == "orbax" and sorted(o) == ["enc/layers/0/w", "enc/layers/1/w"]
  np.testing.assert_array_equal(open_tensors(tmp_path / "ck", sep=".")["enc.layers.1.w"], 2 * x)
  sub = Tensors.from_arrays({"params/a": x, "b": x}, "mem").subset("params/")
  assert list(sub) == ["a"]
  with pytest.raises(spae.SpaeInputError, match="pass name="):
    load_tensor(tmp_path / "w.npz")
  with pytest.raises(spae.SpaeInputError, match="expected a safetensors checkpoint|no .safetensors"):
    open_tensors(tmp_path / "w.npz", format="safetensors")
  (tmp_path / "notes.txt").write_text("hello")
  with pytest.raises(spae.SpaeInputError, match=r"notes.txt.*expected .safetensors, .npz, .npy, .gguf"):
    open_tensors(tmp_path / "notes.txt")
  with pytest.raises(spae.SpaeInputError, match="does not exist"):
    open_tensors(tmp_path / "nope.npz")


# ------------------------------------------------------------------------------------------------ GGUF
def _write_gguf(path, tensors: dict[str, tuple[np.ndarray, str]], kv: dict[str, str] | None = None) -> None:
  import gguf

  w = gguf.GGUFWriter(str(path), arch="llama")
  for k, v in (kv or {}).items():
    w.add_string(k, v)
  for name, (arr, kind) in tensors.items():
    q = gguf.GGMLQuantizationType[kind]
    if kind in ("F32", "F16"):
      w.add_tensor(name, arr)
    elif arr.dtype == np.uint8:  # raw blocks
      w.add_tensor(name, arr, raw_dtype=q)
    else:
      w.add_tensor(name, gguf.quants.quantize(arr, q), raw_dtype=q)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def _k_blocks(kind: str, rows: int, cols: int) -> np.ndarray:
  """Random raw blocks of a k-quant type (gguf-py cannot quantize them) with small finite fp16 scales."""
  import gguf

  block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]]
  raw = RNG.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
  scale = np.full((rows, cols // block, 1), 0.01, np.float16).view(np.uint8)
  if kind == "Q6_K":  # d is the last two bytes
    raw[..., -2:] = scale
  else:  # Q4_K / Q5_K: d, dmin first
    raw[..., 0:2] = scale
    raw[..., 2:4] = scale
  return raw.reshape(rows, -1)


def test_gguf_types_shapes_and_dequantization(tmp_path):
  import gguf

  x = RNG.normal(size=(3, 256)).astype(np.float32)
  tensors = {"f32": (x, "F32"), "f16": (x.astype(np.float16), "F16"), "bf16": (x, "BF16")}
  for kind in ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"):
    tensors[kind.lower()] = (x, kind)
  for kind in ("Q4_K", "Q5_K", "Q6_K"):
    tensors[kind.lower()] = (_k_blocks(kind, 3, 256), kind)
  _write_gguf(tmp_path / "m.gguf", tensors, {"general.name": "tiny"})
  t = open_tensors(tmp_path / "m.gguf")
  assert t.format == "gguf" and t.metadata["general.name"] == "tiny"
  assert {t.stored_dtype(k) for k in t} == {"float32", "float16", "bfloat16", *GGUF_TYPES[3:]}
  for name in t:
    assert t.shape(name) == (3, 256), name  # numpy order: ggml's [256, 3] reversed
    got = t.get(name, (3, 256), np.float32)
    assert got.dtype == np.float32 and np.all(np.isfinite(got))
  np.testing.assert_array_equal(t.get("f32"), x)
  assert t.get("f16").dtype == np.float16 and t.get("bf16").dtype == ml_dtypes.bfloat16
  np.testing.assert_allclose(t.get("bf16", dtype=np.float32), x, atol=1e-2)
  for kind, tol in (("Q8_0", 0.03), ("Q4_0", 0.5), ("Q4_1", 0.5), ("Q5_0", 0.25), ("Q5_1", 0.25)):
    err = np.abs(t.get(kind.lower()) - x).max()
    assert 0 < err < tol, (kind, err)  # really quantized, and close
  for kind in ("Q4_K", "Q5_K", "Q6_K", "Q8_0"):  # Q8_0 has its own fast path
    want = gguf.quants.dequantize(t.raw(kind.lower()).reshape(3, -1), gguf.GGMLQuantizationType[kind])
    np.testing.assert_array_equal(t.get(kind.lower()), want)
  with pytest.raises(spae.SpaeInputError, match="tensor 'q4_k' is stored as Q4_K; it cannot be read as int8"):
    t.get("q4_k", dtype=np.int8)


def test_gguf_bad_files_get_one_line(tmp_path):
  x = RNG.normal(size=(2, 256)).astype(np.float32)
  q2 = np.zeros((2, 84), np.uint8)  # one Q2_K block per row
  _write_gguf(tmp_path / "m.gguf", {"w": (x, "Q8_0"), "q2": (q2, "Q2_K")})
  t = open_tensors(tmp_path / "m.gguf")
  with pytest.raises(spae.SpaeInputError, match=r"m.gguf: tensor 'q2' is stored as GGML type Q2_K, which spae does "
                     r"not read; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K"):
    t.get("q2")
  data = (tmp_path / "m.gguf").read_bytes()
  for cut in (len(data) - 40, 200, 10):
    (tmp_path / "cut.gguf").write_bytes(data[:cut])
    with pytest.raises(spae.SpaeInputError, match=r"cut.gguf (is truncated|is not a readable GGUF file)") as e:
      open_tensors(tmp_path / "cut.gguf")
    assert "\n" not in str(e.value)
  (tmp_path / "fake.gguf").write_bytes(b"PK\x03\x04" + bytes(100))
  with pytest.raises(spae.SpaeInputError, match="fake.gguf is not a GGUF file"):
    open_tensors(tmp_path / "fake.gguf")


def test_gguf_big_endian_files_read_and_malformed_headers_are_named(tmp_path):
  """A file written on a big-endian machine reads to the same values; a version spae does not read, an unknown
  metadata value type and a quantized row that is no whole number of blocks each get one line naming the file."""
  import struct

  import gguf

  x = RNG.normal(size=(2, 64)).astype(np.float32)
  w = gguf.GGUFWriter(str(tmp_path / "be.gguf"), arch="llama", endianess=gguf.GGUFEndian.BIG)
  w.add_string("general.name", "big")
  w.add_array("tokenizer.ggml.scores", [0.5, -1.0])
  w.add_tensor("w", x.copy())  # the writer swaps the bytes itself
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  assert (tmp_path / "be.gguf").read_bytes()[4:8] == struct.pack(">I", 3)  # really big-endian
  t = open_tensors(tmp_path / "be.gguf")
  assert t.metadata["general.name"] == "big"
  np.testing.assert_array_equal(t.metadata["tokenizer.ggml.scores"], np.array([0.5, -1.0], np.float32))
  np.testing.assert_array_equal(t.get("w", dtype=np.float32), x)

  _write_gguf(tmp_path / "m.gguf", {"w": (RNG.normal(size=(2, 256)).astype(np.float32), "Q8_0")},
              {"general.name": "tiny"})
  data = bytearray((tmp_path / "m.gguf").read_bytes())
  v1 = data.copy()
  v1[4:8] = struct.pack("<I", 1)
  (tmp_path / "v1.gguf").write_bytes(bytes(v1))
  with pytest.raises(spae.SpaeInputError, match="v1.gguf is GGUF version 1; spae reads versions 2 and 3"):
    open_tensors(tmp_path / "v1.gguf")
  # The first metadata value's type (after 'general.architecture', the first key the writer puts) set to 99.
  key = b"general.architecture"
  at = data.index(key) + len(key)
  bad = data.copy()
  bad[at:at + 4] = struct.pack("<I", 99)
  (tmp_path / "vt.gguf").write_bytes(bytes(bad))
  with pytest.raises(spae.SpaeInputError, match="vt.gguf has an unknown GGUF value type 99"):
    open_tensors(tmp_path / "vt.gguf")
  # Tensor 'w' (Q8_0, blocks of 32) described with rows of 250 values.
  info = data.index(struct.pack("<Q", 1) + b"w") + 9  # its name (length 1, 'w'), then n_dims and the dims
  odd = data.copy()
  odd[info + 4:info + 12] = struct.pack("<Q", 250)  # ggml order: the row length first
  (tmp_path / "odd.gguf").write_bytes(bytes(odd))
  with pytest.raises(spae.SpaeInputError, match="odd.gguf: tensor 'w' has rows of 250 values, not a multiple of "
                     "Q8_0's block of 32; the file is corrupt"):
    open_tensors(tmp_path / "odd.gguf")


def test_gguf_type_table_matches_gguf_py():
  import gguf

  from spae._gguf_file import GGML_BLOCKS, GGML_TYPE_NAMES

  for t, size in gguf.GGML_QUANT_SIZES.items():
    if t.name in GGML_BLOCKS:
      assert GGML_TYPE_NAMES[int(t)] == t.name and GGML_BLOCKS[t.name] == tuple(size), t.name
