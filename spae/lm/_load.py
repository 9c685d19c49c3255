"""`spae.lm.load(spec)`: one string names any supported language model (the 'lm' kind of `spae._specs`)."""

from __future__ import annotations

from typing import Any

from spae import _specs
from spae.lm._gguf import load_gguf
from spae.lm._loaders import load_gemma, load_hf
from spae.lm._openai import OpenAICompatibleLM

__all__ = ["load"]


def load(spec: str, **kwargs: Any):
  """Resolves a model spec.

  - `hf:PATH`: an HF-format folder (config.json + *.safetensors + tokenizer.model) -> `GemmaLM`.
  - `gemma:PATH`: an official Gemma orbax checkpoint directory with its tokenizer.model -> `GemmaLM`.
  - `gguf:PATH`: a llama.cpp GGUF file (gemma2, gemma3, llama; F32/F16/BF16 and Q4-Q8 types) -> `GemmaLM`;
    `gguf:gemma3-270m` and `gguf:smollm2-135m` name the models of the `models` extra.
  - `openai:URL#MODEL`: an OpenAI-compatible `/v1/completions` server -> `OpenAICompatibleLM`
    (e.g. `openai:http://127.0.0.1:8000#google/gemma-2-2b`); the URL may carry `?timeout=S&attempts=N&backoff=S`.
  Keyword arguments go to the loader (`tokenizer=`, `max_length=`, `dtype=`, `variant=`, `api_key_env=`, ...).
  """
  return _specs.resolve("lm", spec, **kwargs)


def _path(spec: _specs.Spec) -> str:
  if not spec.body:
    raise spec.error(f"has no path or URL after '{spec.scheme}:'")
  return spec.body


@_specs.register_scheme("lm", "hf", "hf:PATH")
def _hf(spec: _specs.Spec, **kwargs: Any):
  return load_hf(_path(spec), **kwargs)


@_specs.register_scheme("lm", "gemma", "gemma:PATH")
def _gemma(spec: _specs.Spec, **kwargs: Any):
  return load_gemma(_path(spec), **kwargs)


@_specs.register_scheme("lm", "gguf", "gguf:PATH|gemma3-270m|smollm2-135m")
def _gguf(spec: _specs.Spec, **kwargs: Any):
  return load_gguf(_path(spec), **kwargs)


# A URL's own `?timeout=..&attempts=..` query stays in the body: OpenAICompatibleLM reads the same URL outside specs.
@_specs.register_scheme("lm", "openai", "openai:URL[?timeout=S&attempts=N]#MODEL", takes="#")
def _openai(spec: _specs.Spec, **kwargs: Any):
  url = _path(spec)
  if not spec.fragment:
    raise spec.error("needs the served model name after '#', e.g. 'openai:http://127.0.0.1:8000#my-model'")
  return OpenAICompatibleLM(url, spec.fragment, **kwargs)
