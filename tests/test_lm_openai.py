"""spae.lm.OpenAICompatibleLM against a local fake vLLM-like server on 127.0.0.1 (loopback only)."""

from __future__ import annotations

import logging
import socket

import numpy as np
import pytest

import spae
from spae import lm as L
from lm_fixtures import parity

KEY = "sk-test-DO-NOT-LEAK-4242"


@pytest.fixture(scope="module")
def local():
  return parity("gemma2", "hf")


@pytest.fixture(scope="module")
def server(local):
  with L.testing.FakeCompletionsServer(local, model="tiny") as srv:
    yield srv


@pytest.fixture()
def remote(server, monkeypatch):
  monkeypatch.setenv("SPAE_TEST_KEY", KEY)
  server.faults.clear()
  return L.load(f"openai:{server.url}/v1#tiny", api_key_env="SPAE_TEST_KEY", attempts=3, backoff=0.01,
                timeout=60)


def _prompt(local):
  tok = local.tokenizer
  return tok.encode("Input: cat dog red", add_bos=True), [tok.encode(w) for w in ("cat", "green tree", "a")]


def test_score_matches_the_local_model(local, remote):
  prefix, conts = _prompt(local)
  np.testing.assert_allclose(remote.score(prefix, conts), local.score(prefix, conts), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(remote.score_text("Input: cat dog red", [" cat", " a"]),
                             local.score_text("Input: cat dog red", [" cat", " a"]), rtol=1e-4, atol=1e-4)
  assert remote.max_length == local.max_length  # read from /v1/models
  assert remote.tokenizer.bos_id == 2  # probed through /tokenize


def test_batching_splits_requests(local, server, remote):
  prefix, conts = _prompt(local)
  remote.batch_size = 2
  remote.verify_round_trip = False
  before = len(server.paths)
  remote.score(prefix, conts)
  assert server.paths[before:].count("/v1/completions") == 2  # 3 continuations in batches of 2


def test_generate_free_and_constrained(local, remote):
  prefix, conts = _prompt(local)
  assert remote.generate(prefix, 4) == local.generate(prefix, 4)
  assert remote.generate(prefix, 5, candidates=conts) == local.generate(prefix, 5, candidates=conts)
  out = remote.generate(prefix, 3, allowed_ids=[40, 41], temperature=1.0, seed=1)
  assert len(out) == 3 and set(out) <= {40, 41}
  assert remote.generate_text("Input: cat", 6, candidates=[" red", " blue tree"]).strip() in ("red", "blue tree")
  # a server gives log-probs of chosen ids, not distributions: a LanguageModel without the logits capability
  assert isinstance(remote, L.LanguageModel) and not isinstance(remote, L.LogitsModel)
  np.testing.assert_allclose(remote.next_logprobs(prefix, np.asarray([40, 41]))[[40, 41]],
                             local.next_logprobs(prefix)[[40, 41]], rtol=1e-4, atol=1e-4)
  with pytest.raises(spae.SpaeInputError, match="pass `among`"):
    remote.next_logprobs(prefix)


def test_api_key_is_sent_but_never_logged_or_shown(local, server, remote, caplog):
  caplog.set_level(logging.DEBUG, logger="spae.lm")
  prefix, conts = _prompt(local)
  remote.score(prefix, conts[:1])
  assert server.headers[-1]["Authorization"] == f"Bearer {KEY}"
  server.faults.append("auth401")  # the server echoes the credentials in its error body
  with pytest.raises(L.LMServerError) as err:
    remote.score(prefix, conts[:1])
  assert "401" in str(err.value) and "***" in str(err.value)
  server.faults += ["http500"] * 3
  with pytest.raises(L.LMServerError) as err2:
    remote.score(prefix, conts[:1])
  assert caplog.records, "requests are logged at DEBUG"
  for text in [caplog.text, str(err.value), str(err2.value), repr(remote), repr(remote.__dict__)]:
    assert KEY not in text


def test_http_500_is_retried_then_clear_error(local, server, remote):
  prefix, conts = _prompt(local)
  server.faults += ["http500"]
  np.testing.assert_allclose(remote.score(prefix, conts[:1]), local.score(prefix, conts[:1]), rtol=1e-4)
  server.faults += ["http500"] * 3
  before = server.requests
  with pytest.raises(L.LMServerError, match=r"failed after 3 attempt\(s\) of up to 60 s; last error: HTTP 500"):
    remote.score(prefix, conts[:1])
  assert server.requests - before == 3


def test_malformed_json_is_retried_then_clear_error(local, server, remote):
  prefix, conts = _prompt(local)
  server.faults += ["badjson"]
  remote.score(prefix, conts[:1])  # one bad answer, then a good one
  server.faults += ["badjson"] * 3
  with pytest.raises(L.LMServerError, match="malformed JSON"):
    remote.score(prefix, conts[:1])


def test_timeout_is_retried_then_clear_error(local, server, monkeypatch):
  monkeypatch.delenv("OPENAI_API_KEY", raising=False)
  slow = L.OpenAICompatibleLM(server.url, "tiny", timeout=0.2, attempts=2, backoff=0.01, max_length=256)
  server.faults.clear()
  server.faults += [("sleep", 0.6), ("sleep", 0.6)]
  with pytest.raises(L.LMServerError, match=r"failed after 2 attempt\(s\) of up to 0.2 s; last error: timed out"):
    slow.tokenizer.encode("cat")


def test_unreachable_server_errors_after_retries():
  with socket.socket() as s:  # a free loopback port with nothing listening
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  dead = L.OpenAICompatibleLM(f"http://127.0.0.1:{port}", "m", attempts=3, backoff=0.01, timeout=1, max_length=64)
  with pytest.raises(L.LMServerError, match=r"127\.0\.0\.1:\d+/tokenize failed after 3 attempt\(s\) of up "
                                            r"to 1 s; last error: unreachable.*server is running"):
    dead.tokenizer.encode("hello")


def test_spae_words_survive_the_server_round_trip(local, remote):
  vocab = local.vocabulary()
  safe = L.round_trip_safe(vocab, remote.tokenizer)
  # The server's tokenizer agrees with the local one on which entries are safe.
  assert safe.pieces == L.round_trip_safe(vocab, local.tokenizer).pieces and 0 < len(safe) < len(vocab)
  rng = np.random.default_rng(0)
  for _ in range(5):
    words = rng.choice(safe.llm_ids, size=10).tolist()
    assert remote.tokenizer.encode(remote.tokenizer.decode(words)) == words
    remote.score([2] + words, [[int(safe.llm_ids[0])]])  # verify_round_trip passes for safe words


def test_unsafe_ids_are_reported(local, remote):
  tok = local.tokenizer
  cat = tok.encode("cat")[0]
  # A piece without a space marker that merges with 'cat' when the text is re-tokenized.
  glued = next(i for i in range(4, 320) if tok.encode(tok.decode([cat, i])) != [cat, i])
  with pytest.raises(spae.SpaeInputError, match="do not survive the text round trip.*round_trip_safe"):
    remote.score([2, cat], [[glued]])


def test_bad_urls():
  with pytest.raises(spae.SpaeInputError, match="must start with http"):
    L.OpenAICompatibleLM("127.0.0.1:8000", "m")


class SilentServer:
  """Accepts TCP connections on loopback and never answers (counts them)."""

  def __enter__(self):
    import threading

    self.sock = socket.socket()
    self.sock.bind(("127.0.0.1", 0))
    self.sock.listen(8)
    self.port, self.conns, self.stop = self.sock.getsockname()[1], [], threading.Event()

    def serve():
      self.sock.settimeout(0.05)
      while not self.stop.is_set():
        try:
          self.conns.append(self.sock.accept()[0])
        except OSError:
          pass

    self.thread = threading.Thread(target=serve, daemon=True)
    self.thread.start()
    return self

  def __exit__(self, *exc):
    self.stop.set()
    self.thread.join()
    for c in self.conns:
      c.close()
    self.sock.close()


def test_a_server_that_never_answers_fails_after_the_chosen_timeout_and_attempts():
  import time

  with SilentServer() as srv:
    lm = L.load(f"openai:http://127.0.0.1:{srv.port}?timeout=0.3&attempts=2&backoff=0#m", max_length=64)
    t = time.monotonic()
    with pytest.raises(L.LMServerError, match=r"after 2 attempt\(s\) of up to 0.3 s; last error: timed out"):
      lm.tokenizer.encode("hello")
    waited = time.monotonic() - t
  assert len(srv.conns) == 2  # one connection per attempt
  assert 0.6 <= waited < 10  # it waited each attempt's timeout, and not the default 30 s x 3


def test_server_options_from_the_url_and_keywords():
  lm = L.load("openai:http://127.0.0.1:1/v1?timeout=2.5&attempts=4#m")
  assert (lm._http.timeout, lm._http.attempts, lm._http.backoff) == (2.5, 4, 0.5)
  assert lm._http.base_url == "http://127.0.0.1:1"  # options and /v1 are not part of the requests' URL
  lm = L.load("openai:http://127.0.0.1:1?timeout=2.5#m", timeout=7, attempts=1)  # keywords win
  assert (lm._http.timeout, lm._http.attempts) == (7.0, 1)
  assert L.OpenAICompatibleLM("http://127.0.0.1:1", "m")._http.timeout == 30.0
  with pytest.raises(spae.SpaeInputError, match="unknown option 'retries'.*timeout, attempts, backoff"):
    L.load("openai:http://127.0.0.1:1?retries=2#m")
  with pytest.raises(spae.SpaeInputError, match="attempts >= 1"):
    L.load("openai:http://127.0.0.1:1#m", attempts=0)
  with pytest.raises(spae.SpaeInputError, match="must be numbers"):
    L.load("openai:http://127.0.0.1:1?timeout=abc#m")
  assert issubclass(L.LMServerError, spae.SpaeInputError)  # the CLI reports it in one line
