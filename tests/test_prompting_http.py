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
  remote = OpenAICompatibleLM(served.url, "copy", api_key_env=None, attempts=1)
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
  lm = OpenAICompatibleLM(f"http://127.0.0.1:{port}", "m", api_key_env=None, attempts=3, backoff=0.01, timeout=2)
  src = BlobSource(names=["cat", "dog"], per_class=2)
  t = time.time()
  with pytest.raises(LMServerError, match=r"after 3 attempt\(s\)"):
    evaluate_fewshot(FewShotConfig(ways=(2,), episodes=1), tiny_tok, lm, source=src, progress=False)
  assert time.time() - t < 20


@pytest.mark.parametrize("command", ["fewshot", "generate"])
def test_cli_reports_a_silent_or_unreachable_server_in_one_line(command, tiny_tok, tmp_path, monkeypatch, capsys):
  """No LMServerError traceback, and --lm-timeout x --lm-attempts bound the wait on a server that never answers."""
  from spae import cli
  from spae.prompting import _cli
  from test_lm_openai import SilentServer

  monkeypatch.setattr(_cli, "load_tokenizer", lambda spec: tiny_tok)
  src = BlobSource(names=["cat", "dog"], per_class=3)
  for c in src.classes:
    for k in src.images_of(c):
      spae.save_image(tmp_path / "imgs" / c / (k.rsplit("/", 1)[1] + ".png"), src.load(k))
  with SilentServer() as srv:
    lm = f"openai:http://127.0.0.1:{srv.port}#m"
    args = (["fewshot", "--tokenizer", "t", "--data", str(tmp_path / "imgs"), "--ways", "2", "--episodes", "1",
             "--out", str(tmp_path / "o.jsonl"), "--no-progress"] if command == "fewshot" else
            ["generate", "--task", "inpaint", "--tokenizer", "t", "--image", str(tmp_path / "imgs/cat/0.png"),
             "-o", str(tmp_path / "gen")])
    assert cli.main(args + ["--lm", lm, "--lm-timeout", "0.2", "--lm-attempts", "2"]) == 2
    assert len(srv.conns) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "Traceback" not in err[0], err
  assert err[0].startswith(f"spae {command}: error: ") and "2 attempt(s) of up to 0.2 s" in err[0]
  assert not (tmp_path / "gen").exists() and not (tmp_path / "o.jsonl").exists()  # nothing half-written
  # and a local model spec does not take server options
  assert cli.main(args + ["--lm", "hf:/nowhere", "--lm-timeout", "1"]) == 2
  assert "apply to openai: servers" in capsys.readouterr().err
