"""The frozen codebook: a language model's vocabulary pieces with their embedding rows."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from spae import _specs
from spae._io import SpaeInputError, atomic_path
from spae._tensors import load_tensor, open_tensors

# sentencepiece marks a leading space with U+2581; WordPiece marks continuations with '##'.
_SP_SPACE = "\u2581"
# byte-level BPE (GPT-2, SmolLM2, LLaMA 3) writes the space byte as U+0120 'Ġ'.
_BPE_SPACE = "\u0120"
_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
_UNUSED_PIECE = re.compile(r"^(<unused\d+>|\[unused\d+\]|<pad>|<mask>|\[PAD\]|\[MASK\]|\[CLS\]|\[SEP\]|\[UNK\])$")

VOCAB_FORMAT = 1


@dataclasses.dataclass(frozen=True, eq=False)
class Vocabulary:
  """A frozen codebook.

  Attributes:
    pieces: the surface string of every entry (sentencepiece pieces keep their U+2581 space marker).
    embeddings: float32 [V, d] frozen rows; row k is codebook entry k.
    llm_ids: int64 [V], entry k's id in the language model's own vocabulary (the codebook may be a subset).
    kinds: per-entry piece kind ('normal', 'control', 'unknown', 'byte', 'unused'), used by `filter`.
    metadata: free-form provenance (source, licence, scaling of the rows).
  """

  pieces: list[str]
  embeddings: np.ndarray
  llm_ids: np.ndarray
  kinds: list[str] | None = None
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    emb = np.asarray(self.embeddings)
    if emb.ndim != 2:
      raise SpaeInputError(f"embeddings must be a [V, d] matrix, got shape {emb.shape}.")
    if not np.issubdtype(emb.dtype, np.floating):
      raise SpaeInputError(f"embeddings must be floating point, got {emb.dtype}.")
    if len(self.pieces) != emb.shape[0]:
      raise SpaeInputError(
          f"vocabulary has {len(self.pieces)} pieces but the embedding table has {emb.shape[0]} rows; "
          "they must match one to one.")
    ids = np.asarray(self.llm_ids, dtype=np.int64)
    if ids.shape != (len(self.pieces),):
      raise SpaeInputError(f"llm_ids must have shape ({len(self.pieces)},), got {ids.shape}.")
    if self.kinds is not None and len(self.kinds) != len(self.pieces):
      raise SpaeInputError(f"kinds has {len(self.kinds)} entries for {len(self.pieces)} pieces.")
    if not np.all(np.isfinite(emb)):
      raise SpaeInputError("embedding table contains NaN or Inf values.")
    object.__setattr__(self, "embeddings", emb.astype(np.float32, copy=False))
    object.__setattr__(self, "llm_ids", ids)
    object.__setattr__(self, "pieces", list(self.pieces))

  # ---------------------------------------------------------------- constructors
  @classmethod
  def from_arrays(cls, pieces: Sequence[str], embeddings: Any, llm_ids: Any = None,
                  metadata: dict[str, Any] | None = None) -> "Vocabulary":
    """Any vocabulary-plus-embedding source. `llm_ids` defaults to 0..V-1."""
    emb = np.asarray(embeddings)
    ids = np.arange(len(pieces)) if llm_ids is None else np.asarray(llm_ids)
    return cls(list(pieces), emb, ids, None, dict(metadata or {}))

  @classmethod
  def from_sentencepiece(cls, model_file: str | os.PathLike, embeddings: Any, *, name: str | None = None,
                         allow_extra_rows: bool = False, scale: float = 1.0) -> "Vocabulary":
    """A sentencepiece model plus its LLM embedding table.

    Args:
      model_file: the `tokenizer.model` file.
      embeddings: an array, a `.npy` file, a `.safetensors` file (with `name`), or an orbax checkpoint
        directory (with `name` as key path, e.g. Gemma's `embedder/input_embedding`).
      allow_extra_rows: accept a table with more rows than pieces (Gemma 2 pads 256,000 pieces to 256,128
        rows); the extra rows are dropped.
      scale: multiply rows by this (Gemma's `Embedder.encode` uses sqrt(d); the raw table is the default).
    """
    import sentencepiece as spm

    model_file = Path(model_file)
    if not model_file.is_file():
      raise SpaeInputError(f"sentencepiece model {str(model_file)!r} does not exist.")
    sp = spm.SentencePieceProcessor()
    try:
      sp.Load(str(model_file))
    except Exception as e:
      raise SpaeInputError(f"{model_file} is not a sentencepiece model ({e}).") from e
    table = load_tensor(embeddings, name)
    n = sp.GetPieceSize()
    if table.ndim != 2:
      raise SpaeInputError(f"embedding tensor {name!r} has shape {table.shape}; expected [V, d].")
    if table.shape[0] < n or (table.shape[0] > n and not allow_extra_rows):
      raise SpaeInputError(
          f"tokenizer {model_file.name} has {n} pieces but the embedding table has {table.shape[0]} rows. "
          + ("Pass allow_extra_rows=True if the table is padded." if table.shape[0] > n else
             "Use the embedding table of the same model."))
    pieces, kinds = [], []
    for i in range(n):
      pieces.append(sp.IdToPiece(i))
      kinds.append("control" if sp.IsControl(i) else "unknown" if sp.IsUnknown(i) else
                   "byte" if sp.IsByte(i) else "unused" if sp.IsUnused(i) else "normal")
    meta = {"source": "sentencepiece", "model_file": model_file.name, "row_scale": scale}
    return cls(pieces, np.asarray(table[:n], np.float32) * scale, np.arange(n), kinds, meta)

  @classmethod
  def from_wordpiece(cls, vocab_txt: str | os.PathLike, embeddings: Any, *, name: str | None = None,
                     metadata: dict[str, Any] | None = None) -> "Vocabulary":
    """A BERT WordPiece `vocab.txt` (one piece per line) plus its input embedding table."""
    lines = Path(vocab_txt).read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
      lines = lines[:-1]
    table = load_tensor(embeddings, name)
    if table.ndim != 2 or table.shape[0] != len(lines):
      raise SpaeInputError(
          f"{vocab_txt} has {len(lines)} pieces but the embedding table has shape {table.shape}.")
    kinds = ["unused" if _UNUSED_PIECE.match(p) else "normal" for p in lines]
    meta = {"source": "wordpiece", **(metadata or {})}
    return cls(lines, table, np.arange(len(lines)), kinds, meta)

  @classmethod
  def from_gguf(cls, path: str | os.PathLike, *, scale: float = 1.0) -> "Vocabulary":
    """A GGUF model file's whole vocabulary with its `token_embd` rows (dequantized; [V, d] float32).

    Args:
      path: a .gguf file (llama.cpp, Ollama, LM Studio), or `gemma3-270m` / `smollm2-135m` (the `models` extra).
      scale: multiply rows by this. The default keeps the raw rows, which are what the output head uses;
        Gemma multiplies a row by sqrt(d) when it embeds a token (sqrt(640) for Gemma 3 270M), LLaMA does not.
    Pieces are as stored ('▁cat' in SentencePiece-style vocabularies, 'Ġcat' in byte-level BPE ones) and their
    kinds are the file's token types as llama.cpp reads them, so `filter` works as for other sources.
    """
    from spae._gguf_file import resolve_gguf
    from spae._gguf_vocab import read_pieces  # the pieces and kinds GGUFTokenizer reads too

    file = resolve_gguf(str(path))
    tensors = open_tensors(file, format="gguf")
    tok = read_pieces(tensors.metadata, name=str(file))
    n = len(tok.pieces)
    rows = tensors.shape("token_embd.weight")[0]
    if rows < n:
      raise SpaeInputError(f"{file}: {n} pieces but token_embd has {rows} rows; the file is inconsistent.")
    table = tensors.get("token_embd.weight", dtype=np.float32)[:n]  # rows past the pieces are padding
    meta = {"source": "gguf", "file": file.name, "architecture": tensors.metadata.get("general.architecture"),
            "tokenizer": tok.model, "row_scale": scale}
    return cls(list(tok.pieces), table if scale == 1.0 else table * np.float32(scale), np.arange(n),
               list(tok.kinds()), meta)

  # ---------------------------------------------------------------- properties
  def __len__(self) -> int:
    return len(self.pieces)

  @property
  def dim(self) -> int:
    return int(self.embeddings.shape[1])

  def words(self, ids: Any) -> list[str]:
    """Readable strings (space markers removed) for codebook entry ids."""
    return [display_piece(self.pieces[int(i)]) for i in np.asarray(ids).reshape(-1)]

  def fingerprint(self) -> str:
    """A content hash of pieces, ids and rows: keys caches and ties token files to their vocabulary."""
    h = hashlib.sha256()
    h.update("\x00".join(self.pieces).encode("utf-8"))
    h.update(self.llm_ids.tobytes())
    h.update(np.ascontiguousarray(self.embeddings).tobytes())
    return h.hexdigest()[:16]

  # ---------------------------------------------------------------- filtering
  def filter(self, *, min_length: int = 1, alphabetic_only: bool = False, ascii_only: bool = False,
             dedupe_case: bool = False, dedupe_whitespace: bool = False, drop_special: bool = True,
             drop_subword_continuations: bool = False, max_size: int | None = None,
             word_initial: bool = False, lowercase_only: bool = False) -> "Vocabulary":
    """Keeps the lexical entries; `llm_ids` still point into the LLM's vocabulary.

    Control, unknown, byte and unused pieces are always dropped when `drop_special`. Length and
    alphabet tests apply to the displayed word (without space markers). Deduplication keeps the
    lowest-id entry of each group ('Cat'/'cat' with `dedupe_case`, '▁cat'/'cat' with `dedupe_whitespace`).
    `word_initial` keeps only pieces that start a word (a leading '▁' or 'Ġ'), `lowercase_only` only
    all-lowercase words. `max_size` keeps the first N survivors in table order: for a BPE vocabulary
    (Gemma's SentencePiece BPE, whose score is minus the merge rank) that is the N most frequent.
    """
    keep: list[int] = []
    seen: set[str] = set()
    for i, piece in enumerate(self.pieces):
      kind = self.kinds[i] if self.kinds is not None else _guess_kind(piece)
      if drop_special and kind != "normal":
        continue
      if drop_subword_continuations and piece.startswith("##"):
        continue
      if word_initial and not piece.startswith((_SP_SPACE, _BPE_SPACE)):
        continue
      word = display_piece(piece)
      if len(word) < min_length:
        continue
      if lowercase_only and word != word.lower():
        continue
      if alphabetic_only and not word.isalpha():
        continue
      if ascii_only and not word.isascii():
        continue
      key = piece
      if dedupe_whitespace:
        key = word
      if dedupe_case:
        key = key.lower()
      if (dedupe_case or dedupe_whitespace) and key in seen:
        continue
      seen.add(key)
      keep.append(i)
      if max_size is not None and len(keep) >= max_size:
        break
    if not keep:
      raise SpaeInputError("Vocabulary.filter removed every entry; loosen the options.")
    return self.subset(keep)

  def subset(self, indices: Sequence[int]) -> "Vocabulary":
    idx = np.asarray(indices, dtype=np.int64)
    return Vocabulary([self.pieces[i] for i in idx], self.embeddings[idx], self.llm_ids[idx],
                      None if self.kinds is None else [self.kinds[i] for i in idx], dict(self.metadata))

  # ---------------------------------------------------------------- persistence
  def save(self, directory: str | os.PathLike) -> None:
    """Writes `vocab.json` (pieces, kinds, metadata) and `vocab.npz` (rows, ids); no pickle."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / "vocab.npz") as tmp:
      with open(tmp, "wb") as f:
        np.savez(f, embeddings=self.embeddings, llm_ids=self.llm_ids)
    with atomic_path(directory / "vocab.json") as tmp:
      tmp.write_text(json.dumps({"format": VOCAB_FORMAT, "pieces": self.pieces, "kinds": self.kinds,
                                 "metadata": self.metadata, "fingerprint": self.fingerprint()},
                                ensure_ascii=False))

  @classmethod
  def load(cls, directory: str | os.PathLike) -> "Vocabulary":
    """Reads `save`'s folder; a missing, damaged or foreign file is a one-line SpaeInputError naming it."""
    directory = Path(directory)
    if not directory.is_dir():
      raise SpaeInputError(f"vocabulary folder {str(directory)!r} "
                           f"{'is not a folder' if directory.exists() else 'does not exist'}; pass a folder "
                           "written by Vocabulary.save.")
    for name in ("vocab.json", "vocab.npz"):
      if not (directory / name).is_file():
        raise SpaeInputError(f"{directory} has no {name}; it is not a saved spae Vocabulary.")
    meta = _read_vocab_json(directory / "vocab.json")
    emb, ids = _read_vocab_npz(directory / "vocab.npz")
    try:
      vocab = cls(meta["pieces"], emb, ids, meta.get("kinds"), meta.get("metadata") or {})
    except SpaeInputError as e:
      raise SpaeInputError(f"{directory}: {str(e).rstrip('.')}; {_RESAVE}") from None
    if meta.get("fingerprint") and meta["fingerprint"] != vocab.fingerprint():
      raise SpaeInputError(f"{directory}: vocabulary files do not match their recorded fingerprint (corrupt?); "
                           f"{_RESAVE}")
    return vocab


_RESAVE = "re-save the vocabulary (Vocabulary.save) or re-export the tokenizer."


def _read_vocab_json(path: Path) -> dict[str, Any]:
  from spae._io import read_json

  meta = read_json(path, "vocabulary file", _RESAVE)
  if not isinstance(meta, dict):
    raise SpaeInputError(f"{path} must be a JSON object as written by Vocabulary.save; {_RESAVE}")
  if meta.get("format") != VOCAB_FORMAT:
    raise SpaeInputError(f"{path} has format {str(meta.get('format'))[:20]}, expected {VOCAB_FORMAT}; {_RESAVE}")
  pieces, kinds = meta.get("pieces"), meta.get("kinds")
  if not isinstance(pieces, list) or not all(isinstance(p, str) for p in pieces):
    raise SpaeInputError(f"{path}: 'pieces' must be a list of strings; {_RESAVE}")
  if kinds is not None and (not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds)):
    raise SpaeInputError(f"{path}: 'kinds' must be a list of strings or null; {_RESAVE}")
  if not isinstance(meta.get("metadata") or {}, dict) or not isinstance(meta.get("fingerprint") or "", str):
    raise SpaeInputError(f"{path}: 'metadata' must be an object and 'fingerprint' a string; {_RESAVE}")
  return meta


def _read_vocab_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
  """(embeddings, llm_ids) from vocab.npz; checks it is a zip before numpy could guess at other formats."""
  import zipfile
  import zlib

  with open(path, "rb") as f:
    head = f.read(4)
  if head not in (b"PK\x03\x04", b"PK\x05\x06"):  # numpy would call any non-zip, non-.npy file "pickled data"
    raise SpaeInputError(f"{path} is not an .npz archive (it starts with {head!r}); {_RESAVE}")
  try:
    with np.load(path, allow_pickle=False) as f:
      emb, ids = f["embeddings"], f["llm_ids"]
  except KeyError as e:
    raise SpaeInputError(f"{path} lacks the array {e}; it is not a spae vocabulary archive; {_RESAVE}") from None
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError,
          zlib.error) as e:
    raise SpaeInputError(f"{path} is damaged ({type(e).__name__}: {str(e)[:100]}); {_RESAVE}") from None
  if not np.issubdtype(ids.dtype, np.integer):
    raise SpaeInputError(f"{path}: llm_ids must be integers, got {ids.dtype}; {_RESAVE}")
  return emb, ids


@_specs.register_path("vocab", "a folder written by Vocabulary.save")
def _load_folder(spec: _specs.Spec) -> Vocabulary:
  return Vocabulary.load(spec.body)


def display_piece(piece: str) -> str:
  """'▁cat' -> 'cat', 'Ġcat' -> 'cat' (byte-level BPE), '##ing' -> 'ing'."""
  if piece.startswith("##") and len(piece) > 2:
    return piece[2:]
  return piece.replace(_SP_SPACE, " ").replace(_BPE_SPACE, " ").strip()


def _guess_kind(piece: str) -> str:
  if _BYTE_PIECE.match(piece):
    return "byte"
  if _UNUSED_PIECE.match(piece):
    return "unused"
  if piece in ("<unk>", "[UNK]"):
    return "unknown"
  if re.match(r"^<[^<>\s]+>$|^\[[A-Z]+\]$", piece):
    return "control"
  return "normal"
