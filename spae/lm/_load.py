"""`spae.lm.load(spec)`: one string names any supported language model."""

from __future__ import annotations

from typing import Any

from spae._io import SpaeInputError


def load(spec: str, **kwargs: Any):
  """Resolves a model spec.

  - `hf:PATH`: an HF-format folder (config.json + *.safetensors + tokenizer.model) -> `GemmaLM`.
  - `gemma:PATH`: an official Gemma orbax checkpoint directory with its tokenizer.model -> `GemmaLM`.
  - `gguf:PATH`: a llama.cpp GGUF file (gemma2, gemma3, llama; F32/F16/BF16 and Q4-Q8 types) -> `GemmaLM`;
    `gguf:gemma3-270m` and `gguf:smollm2-135m` name the models of the `models` extra.
  - `openai:URL#MODEL`: an OpenAI-compatible `/v1/completions` server -> `OpenAICompatibleLM`
    (e.g. `openai:http://127.0.0.1:8000#google/gemma-2-2b`).
  Keyword arguments go to the loader (`tokenizer=`, `max_length=`, `dtype=`, `variant=`, `api_key_env=`, ...).
  """
  if not isinstance(spec, str) or ":" not in spec:
    raise SpaeInputError(f"model spec {spec!r} must look like 'hf:PATH', 'gemma:PATH', 'gguf:PATH' or "
                         "'openai:URL#MODEL'.")
  scheme, rest = spec.split(":", 1)
  if not rest:
    raise SpaeInputError(f"model spec {spec!r} has no path or URL after '{scheme}:'.")
  if scheme == "hf":
    from spae.lm._loaders import load_hf
    return load_hf(rest, **kwargs)
  if scheme == "gemma":
    from spae.lm._loaders import load_gemma
    return load_gemma(rest, **kwargs)
  if scheme == "gguf":
    from spae.lm._gguf import load_gguf
    return load_gguf(rest, **kwargs)
  if scheme == "openai":
    from spae.lm._openai import OpenAICompatibleLM
    url, _, model = rest.partition("#")
    if not model:
      raise SpaeInputError(f"model spec {spec!r} needs the served model name after '#', e.g. "
                           "'openai:http://127.0.0.1:8000#my-model'.")
    return OpenAICompatibleLM(url, model, **kwargs)
  raise SpaeInputError(f"unknown model spec scheme {scheme!r} in {spec!r}; use hf:, gemma:, gguf: or openai:.")
