"""Few-shot prompting end to end through the OpenAI-compatible HTTP backend against a loopback test server."""

import time

import numpy as np
import pytest

import spae
from spae.lm._openai import LMServerError, OpenAICompatibleLM
from spae.lm.testing import FakeCompletionsServer
from spae.prompting import FewShotConfig, evaluate_fewshot
from spae.prompting.testing import FunctionLM, WordTokenizer, copy_label_model

from test_prompting import BlobSource  # noqa: E402  (same synthetic classes)


@pytest.fixture(scope="module")
def served(tiny_tok):
  wtok = WordTokenizer(tiny_tok.vocabulary.words(np.arange(len(tiny_tok.vocabulary))),
                       extra=["cat", "dog", "bird"])
  local = FunctionLM(wtok, copy_label_model(wtok, tiny_tok.vocabulary.llm_ids), max_length=2048)
  with FakeCompletionsServer(local, model="copy") as srv:
    yield srv


@pytest.mark.parametrize("mode", ["score", "generate"])
def test_copy_lm_over_http_matches_the_jaccard_probe(tiny_tok, served, mode):
  src = BlobSource(names=["cat", "dog", "bird", "zebrafish"], per_class=4, seed=1)
  remote = OpenAICompatibleLM(served.url, "copy", api_key_env=None, retries=0)
  res = evaluate_fewshot(FewShotConfig(ways=(3,), shots=(1,), layers=(2,), episodes=3, mode=mode), tiny_tok,
                         remote, source=src, progress=False)
  assert res["token_mode"] == "ids"  # the server's pieces are the codebook words: ids go straight in
  rows = res["rows"]
  assert len(rows) == 3
  for r in rows:
    q = r["queries"][0]
    assert spae.prompting.normalize_label(q["prediction"]) == q["jaccard"]
    assert q["lm_correct"] == q["jaccard_correct"]
  acc = {s["method"]: s["accuracy"] for s in res["summary"]}
  assert acc["lm"] == acc["jaccard"]


def test_unreachable_server_fails_after_retries(tiny_tok):
  import socket

  s = socket.socket()
  s.bind(("127.0.0.1", 0))
  port = s.getsockname()[1]
  s.close()  # nothing listens there now
  lm = OpenAICompatibleLM(f"http://127.0.0.1:{port}", "m", api_key_env=None, retries=2, backoff=0.01, timeout=2)
  src = BlobSource(names=["cat", "dog"], per_class=2)
  t = time.time()
  with pytest.raises(LMServerError, match="after 3 attempts"):
    evaluate_fewshot(FewShotConfig(ways=(2,), episodes=1), tiny_tok, lm, source=src, progress=False)
  assert time.time() - t < 20
