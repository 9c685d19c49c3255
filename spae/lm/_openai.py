"""`OpenAICompatibleLM`: a remote model behind an OpenAI-compatible `/v1/completions` server.

Works with vLLM, llama.cpp's server and Ollama (scoring needs `echo` + `logprobs`, which vLLM and llama.cpp
support). Only the standard library speaks HTTP. Token ids are the server's: `ServerTokenizer` calls the
`/tokenize` and `/detokenize` endpoints (vLLM and llama.cpp both have them), and every id-level request is sent
as text, so ids must survive ids -> text -> server ids; `score` checks this and `round_trip_safe` picks the
vocabulary entries for which it holds.

The API key is read from an environment variable (default OPENAI_API_KEY) at request time; it is sent only in
the Authorization header and never appears in logs, reprs or error messages.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterable, Sequence

import numpy as np

from spae._io import SpaeInputError
from spae.lm._base import Constraint, LanguageModelBase

log = logging.getLogger("spae.lm")


DEFAULTS = {"timeout": 30.0, "attempts": 3, "backoff": 0.5}  # seconds silent per attempt, attempts, first backoff


class LMServerError(SpaeInputError):
  """A language-model server could not answer (after its attempts); the message says what failed, where and what
  to do. A `SpaeInputError`, so the command line reports it in one line, like any unusable input."""


def server_options(base_url: str, **given: Any) -> tuple[str, dict[str, Any]]:
  """Splits `?timeout=S&attempts=N&backoff=S` off a server URL; keyword values that are not None win.

  Returns the URL without those options and the resolved {timeout, attempts, backoff}.
  """
  parts = urllib.parse.urlsplit(base_url)
  opts = dict(DEFAULTS)
  for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
    if k not in DEFAULTS:
      raise SpaeInputError(f"unknown option {k!r} in the server URL {base_url!r}; the options are "
                           f"{', '.join(DEFAULTS)} (e.g. http://127.0.0.1:8000?timeout=10&attempts=2).")
    opts[k] = v
  opts.update({k: v for k, v in given.items() if v is not None})
  try:
    out = {"timeout": float(opts["timeout"]), "attempts": int(opts["attempts"]), "backoff": float(opts["backoff"])}
  except ValueError:
    raise SpaeInputError(f"server options {opts} must be numbers (timeout and backoff in seconds, attempts an "
                         "integer).") from None
  if not (out["timeout"] > 0 and out["attempts"] >= 1 and out["backoff"] >= 0):
    raise SpaeInputError(f"server options need timeout > 0, attempts >= 1 and backoff >= 0; got {out}.")
  return urllib.parse.urlunsplit(parts._replace(query="")), out


class _Http:
  """JSON POST/GET with a timeout and several attempts (exponential backoff) on connection errors, timeouts,
  429/5xx and malformed JSON. Other HTTP errors (4xx) fail at once.

  `timeout` bounds how long the server may stay silent (to connect, or between bytes of its answer), so a
  server that accepts and never answers fails after about timeout x attempts (+ the backoff sleeps).
  """

  def __init__(self, base_url: str, *, api_key_env: str | None, timeout: float, attempts: int, backoff: float):
    url = base_url.rstrip("/")
    if url.endswith("/v1"):
      url = url[:-3]
    if not url.startswith(("http://", "https://")):
      raise SpaeInputError(f"server URL {base_url!r} must start with http:// or https://.")
    self.base_url = url
    self.api_key_env = api_key_env
    self.timeout = float(timeout)
    self.attempts = int(attempts)
    self.backoff = float(backoff)

  def _key(self) -> str | None:
    return os.environ.get(self.api_key_env) if self.api_key_env else None

  def _scrub(self, text: str) -> str:
    key = self._key()
    return text.replace(key, "***") if key else text

  def request(self, path: str, payload: dict[str, Any] | None = None) -> Any:
    url = self.base_url + path
    data = None if payload is None else json.dumps(payload).encode()
    last = ""
    for attempt in range(self.attempts):
      if attempt:
        time.sleep(self.backoff * 2 ** (attempt - 1))
      req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
      req.add_header("Content-Type", "application/json")
      key = self._key()
      if key:
        req.add_header("Authorization", f"Bearer {key}")
      log.debug("request %s (attempt %d/%d)", url, attempt + 1, self.attempts)
      try:
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
          body = resp.read()
      except urllib.error.HTTPError as e:
        detail = self._scrub(e.read().decode("utf-8", "replace")[:300])
        last = f"HTTP {e.code}: {detail}"
        if e.code == 429 or e.code >= 500:
          log.debug("retryable failure from %s: HTTP %d", url, e.code)
          continue
        raise LMServerError(f"{url} rejected the request ({last}).") from None
      except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        kind = "timed out" if isinstance(reason, (socket.timeout, TimeoutError)) else "unreachable"
        last = f"{kind} ({type(reason).__name__}: {self._scrub(str(reason))})"
        log.debug("retryable failure from %s: %s", url, kind)
        continue
      try:
        return json.loads(body)
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        last = f"malformed JSON in the answer ({e.msg if hasattr(e, 'msg') else e})"
        log.debug("retryable failure from %s: malformed JSON", url)
        continue
    raise LMServerError(f"{url} failed after {self.attempts} attempt(s) of up to {self.timeout:g} s; last error: "
                        f"{last}. Check that the server is running at that address and serves this model, or give "
                        "it longer (timeout / attempts: URL options, keywords, or spae --lm-timeout / "
                        "--lm-attempts).")


class ServerTokenizer:
  """The server's tokenizer through `/tokenize` and `/detokenize` (api 'vllm' or 'llamacpp')."""

  def __init__(self, http: _Http, model: str, *, api: str = "vllm", vocab_size: int | None = None,
               bos_id: int | None = None, eos_id: int | None = None):
    if api not in ("vllm", "llamacpp"):
      raise SpaeInputError(f"tokenizer api must be 'vllm' or 'llamacpp', got {api!r}.")
    self._http, self._model, self._api = http, model, api
    self.vocab_size = vocab_size  # not reported by the servers; pass it when it matters
    self._bos = bos_id
    self._bos_probed = bos_id is not None
    self.eos_id = eos_id  # not reported by the servers either
    self._pieces: dict[int, str] = {}

  @property
  def bos_id(self) -> int | None:
    """Given, or probed once: the id the server adds in front of an empty text (None if it adds nothing)."""
    if not self._bos_probed:
      ids = self.encode("", add_bos=True)
      self._bos = ids[0] if len(ids) == 1 else None
      self._bos_probed = True
    return self._bos

  def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
    if self._api == "vllm":
      out = self._http.request("/tokenize", {"model": self._model, "prompt": text, "add_special_tokens": add_bos})
    else:
      out = self._http.request("/tokenize", {"content": text, "add_special": add_bos})
    toks = out.get("tokens") if isinstance(out, dict) else None
    if not isinstance(toks, list):
      raise LMServerError(f"{self._http.base_url}/tokenize answered without a 'tokens' list.")
    return [int(t) for t in toks]

  def decode(self, ids: Sequence[int]) -> str:
    payload = {"tokens": [int(i) for i in ids]}
    if self._api == "vllm":
      payload["model"] = self._model
    out = self._http.request("/detokenize", payload)
    text = out.get("prompt", out.get("content")) if isinstance(out, dict) else None
    if not isinstance(text, str):
      raise LMServerError(f"{self._http.base_url}/detokenize answered without text.")
    return text

  def id_to_piece(self, i: int) -> str:
    if i not in self._pieces:
      self._pieces[i] = self.decode([i])
    return self._pieces[i]


class OpenAICompatibleLM(LanguageModelBase):
  """A model served over `/v1/completions`.

  Args:
    base_url: e.g. 'http://127.0.0.1:8000' (a trailing '/v1' is accepted).
    model: the served model name.
    api_key_env: environment variable holding the API key (None: no key).
    timeout, attempts, backoff: seconds the server may stay silent per attempt (30), attempts per request (3),
      and the first backoff sleep between attempts (0.5 s, doubled each time). Also accepted as URL options
      ('http://127.0.0.1:8000?timeout=10&attempts=2'); keywords win.
    batch_size: prompts per completions request when scoring.
    tokenizer_api: 'vllm' or 'llamacpp' (shape of the /tokenize and /detokenize calls); or pass `tokenizer`.
    max_length: context length (default: the server's `max_model_len` from /v1/models, else 4096).
    verify_round_trip: `score` re-tokenizes the text it sends and raises if the server's ids differ.

  A `LanguageModel` but not a `LogitsModel`: a completions server returns the log-probs of chosen tokens, not
  whole distributions. Constrained decoding therefore scores the allowed next ids (one batched request per
  step); free generation is one completions request, decoded by the server.
  """

  def __init__(self, base_url: str, model: str, *, api_key_env: str | None = "OPENAI_API_KEY",
               timeout: float | None = None, attempts: int | None = None, backoff: float | None = None,
               batch_size: int = 16,
               tokenizer_api: str = "vllm", tokenizer: Any = None, vocab_size: int | None = None,
               bos_id: int | None = None, eos_id: int | None = None, max_length: int | None = None,
               verify_round_trip: bool = True):
    url, opts = server_options(base_url, timeout=timeout, attempts=attempts, backoff=backoff)
    self._http = _Http(url, api_key_env=api_key_env, **opts)
    self.model = model
    self.batch_size = int(batch_size)
    self.verify_round_trip = verify_round_trip
    self.tokenizer = tokenizer or ServerTokenizer(self._http, model, api=tokenizer_api, vocab_size=vocab_size,
                                                  bos_id=bos_id, eos_id=eos_id)
    self._max_length = max_length

  def __repr__(self) -> str:
    return f"OpenAICompatibleLM({self._http.base_url!r}, model={self.model!r})"

  @property
  def max_length(self) -> int:
    if self._max_length is None:
      try:
        models = self._http.request("/v1/models").get("data", [])
        found = [m.get("max_model_len") for m in models if m.get("id") == self.model]
        self._max_length = int(found[0]) if found and found[0] else 4096
      except (LMServerError, AttributeError, TypeError, ValueError):
        self._max_length = 4096
    return self._max_length

  # ------------------------------------------------------------------ requests
  def _completions(self, prompts: list[str], **kw: Any) -> list[dict[str, Any]]:
    payload = {"model": self.model, "prompt": prompts, **kw}
    out = self._http.request("/v1/completions", payload)
    choices = out.get("choices") if isinstance(out, dict) else None
    if not isinstance(choices, list) or len(choices) != len(prompts):
      raise LMServerError(f"{self._http.base_url}/v1/completions answered {type(choices).__name__} choices for "
                          f"{len(prompts)} prompts.")
    return sorted(choices, key=lambda c: c.get("index", 0))

  def _text(self, ids: Sequence[int]) -> str:
    bos = self.tokenizer.bos_id
    body = [int(i) for i in ids]
    if bos is not None and body and body[0] == bos:
      body = body[1:]  # the server adds BOS itself
    return self.tokenizer.decode(body)

  def score(self, prefix_ids: Sequence[int], continuations: Sequence[Sequence[int]]) -> np.ndarray:
    """[C] summed log-probs of each continuation, from `echo` + `logprobs` over prefix + continuation text."""
    prefix = self._as_ids(prefix_ids, "prefix_ids")
    conts = self._check_continuations(prefix, continuations)
    texts = [self._text(prefix + c) for c in conts]
    bos = self.tokenizer.bos_id
    want = [([bos] if bos is not None and (not prefix or prefix[0] != bos) else []) + prefix + c for c in conts]
    out = np.zeros((len(conts),), np.float32)
    for start in range(0, len(conts), self.batch_size):
      batch = list(range(start, min(start + self.batch_size, len(conts))))
      choices = self._completions([texts[i] for i in batch], max_tokens=1, echo=True, logprobs=1,
                                  temperature=0.0)
      for i, ch in zip(batch, choices):
        lp = (ch.get("logprobs") or {}).get("token_logprobs")
        if not isinstance(lp, list):
          raise LMServerError("the server did not return echoed prompt log-probs (needs echo=True + logprobs "
                              "support in /v1/completions).")
        if self.verify_round_trip:
          got = self.tokenizer.encode(texts[i], add_bos=bos is not None)
          if got != want[i]:
            raise SpaeInputError(
                f"token ids do not survive the text round trip (sent {len(want[i])} ids, the server reads "
                f"{len(got)}, first difference at position {_first_diff(got, want[i])}). "
                "Restrict the vocabulary with spae.lm.round_trip_safe(...).")
        n_prompt = len(want[i])
        vals = lp[n_prompt - len(conts[i]):n_prompt]
        if len(vals) != len(conts[i]) or any(v is None for v in vals):
          raise LMServerError("echoed log-probs are shorter than the prompt; the server's tokenization differs.")
        out[i] = float(np.sum(vals))
    return out

  def next_logprobs(self, ids: Sequence[int], among: np.ndarray | None = None) -> np.ndarray:
    """float [max(among) + 1]: log p(a | ids) for each id a in `among` (one batched request), -inf elsewhere.

    `among` is required: the server does not return the whole next-token distribution.
    """
    if among is None:
      raise SpaeInputError("a completions server gives the log-probs of chosen ids only; pass `among` (the ids "
                           "to score), or generate without a constraint to let the server decode.")
    among = np.asarray(among, np.int64).reshape(-1)
    dense = np.full((int(among.max()) + 1,), -np.inf)
    dense[among] = self.score([int(i) for i in ids], [[int(a)] for a in among])
    return dense

  def generate(self, ids: Sequence[int], max_new: int, *, allowed_ids: Iterable[int] | None = None,
               candidates: Sequence[Sequence[int]] | None = None, stop: Sequence[int] | None = None,
               temperature: float = 0.0, seed: int = 0) -> list[int]:
    """Constrained (allowed ids / candidates): the base decoding loop over `next_logprobs`, whose cost grows with
    the allowed set. Unconstrained: one completions request (the server samples; `seed` is sent with it)."""
    if allowed_ids is not None or candidates is not None:
      return super().generate(ids, max_new, allowed_ids=allowed_ids, candidates=candidates, stop=stop,
                              temperature=temperature, seed=seed)
    prompt = self._as_ids(ids, "ids")
    if max_new < 0:
      raise SpaeInputError(f"max_new must be >= 0, got {max_new}.")
    self._check_length(len(prompt) + max_new, "len(ids) + max_new")
    stop_set = Constraint(stop=stop, vocab_size=self.tokenizer.vocab_size).stop_set
    if max_new == 0:
      return []
    kw: dict[str, Any] = {"max_tokens": int(max_new), "temperature": float(temperature)}
    if temperature > 0:
      kw["seed"] = int(seed)
    text = self._completions([self._text(prompt)], **kw)[0].get("text", "")
    new = self.tokenizer.encode(text)
    for j, t in enumerate(new):
      if t in stop_set:
        return new[:j]
    return new[:max_new]


def _first_diff(a: Sequence[int], b: Sequence[int]) -> int:
  return next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def round_trip_safe(vocabulary, tokenizer, *, context: str = "Input:"):
  """The entries of `vocabulary` whose token survives text round trips through `tokenizer`.

  Entry id i is kept when encode(decode(ids)) == ids for ids = [i] and [i, i], and appending i to the ids of
  `context` appends exactly i after the text round trip: the token reads back as itself alone, repeated, and
  after prompt text. Sentencepiece pieces without a leading-space marker usually fail (they merge with the
  text before them). Works with any TextTokenizer (a local
  SentencePieceTokenizer or a ServerTokenizer). Returns a `spae.Vocabulary` subset (llm ids unchanged).
  """
  ctx = list(tokenizer.encode(context))
  ctx_back = list(tokenizer.encode(tokenizer.decode(ctx)))  # the context as it reads back (unknown chars)
  keep = []
  for row, i in enumerate(np.asarray(vocabulary.llm_ids).tolist()):
    if (list(tokenizer.encode(tokenizer.decode([i]))) == [i]
        and list(tokenizer.encode(tokenizer.decode([i, i]))) == [i, i]
        and list(tokenizer.encode(tokenizer.decode(ctx + [i]))) == ctx_back + [i]):
      keep.append(row)
  if not keep:
    raise SpaeInputError("no vocabulary entry survives the text round trip with this tokenizer; is it the "
                         "tokenizer of the same model?")
  return vocabulary.subset(keep)
