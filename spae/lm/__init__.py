"""Frozen language models for SPAE prompting: one interface, JAX-native and remote backends.

- `LanguageModel` (every backend: next-token log-probs, scoring, constrained generation) and `LogitsModel`
  (local models: also full logits); `LanguageModelBase` holds the one decoding loop, `Constraint` what it may emit.
- `GemmaLM` / `GemmaConfig`: Gemma 2, Gemma 3 (text) and LLaMA-style decoders in JAX, with a KV cache.
- `OpenAICompatibleLM`: a `/v1/completions` server (vLLM, llama.cpp, Ollama).
- `load(spec)`: 'hf:PATH', 'gemma:PATH', 'gguf:PATH' (or 'gguf:gemma3-270m', 'gguf:smollm2-135m') or
  'openai:URL[?timeout=S&attempts=N]#MODEL'.
- `gguf_tokenizer(path)`: a GGUF file's tokenizer (SentencePiece-style or byte-level BPE), ids as llama.cpp's.
- `round_trip_safe(vocabulary, tokenizer)`: the vocabulary entries that survive ids -> text -> ids.
- `testing`: tiny on-the-fly models, tokenizers and a fake completions server for hermetic tests.
"""

from spae.lm import testing
from spae.lm._base import (Constraint, LanguageModel, LanguageModelBase, LogitsModel, TextTokenizer, Trie,
                           choose_next)
from spae.lm._gemma import GemmaConfig, GemmaLM
from spae.lm._gguf import load_gguf
from spae.lm._gguf_tokenizer import GGUFTokenizer, gguf_tokenizer
from spae.lm._load import load
from spae.lm._loaders import PRESETS, config_from_hf, load_gemma, load_hf
from spae.lm._openai import LMServerError, OpenAICompatibleLM, ServerTokenizer, round_trip_safe
from spae.lm._sp import SentencePieceTokenizer

__all__ = ["Constraint", "LanguageModel", "LanguageModelBase", "LogitsModel", "TextTokenizer", "Trie", "choose_next",
           "GemmaConfig", "GemmaLM", "load", "PRESETS", "config_from_hf", "load_gemma", "load_hf", "load_gguf",
           "LMServerError", "OpenAICompatibleLM", "ServerTokenizer", "round_trip_safe", "SentencePieceTokenizer",
           "GGUFTokenizer", "gguf_tokenizer", "testing"]
