"""Progressive in-context generation: noise schedule, corruptions, layer-by-layer decoding, outputs, CLI."""

import argparse
import json

import numpy as np
import pytest

import spae
from spae.prompting import GenerateConfig, TokenMap, add_token_noise, corrupt, generate_pyramid, noise_schedule
from spae.prompting import generate as gen
from spae.prompting.testing import FunctionLM, WordTokenizer, majority_model


@pytest.fixture(scope="module")
def wtok(tiny_tok):
  return WordTokenizer(tiny_tok.vocabulary.words(np.arange(len(tiny_tok.vocabulary))), extra=["red", "circle"])


@pytest.fixture(scope="module")
def image():
  rng = np.random.default_rng(0)
  x = np.zeros((32, 32, 3), np.float32)
  x[..., 0] = np.linspace(0, 1, 32)[None, :]
  x[..., 1] = np.linspace(0, 1, 32)[:, None]
  x[8:24, 8:24, 2] = 1.0
  return np.clip(x + rng.normal(0, 0.02, x.shape), 0, 1).astype(np.float32)


def test_noise_schedule_and_token_noise():
  r = noise_schedule(10, 0.5, 0.2)
  assert r[0] == 0.5 and r[-1] == pytest.approx(0.2) and np.all(np.diff(r) < 0)
  rng = np.random.default_rng(0)
  ids = np.arange(100, 140)
  noisy = add_token_noise(ids, 0.25, np.arange(10), rng)  # replacements come from the pool 0..9
  changed = noisy != ids
  assert changed.sum() == 10 and np.all(noisy[changed] < 10)
  assert np.array_equal(add_token_noise(ids, 0.0, 50, rng), ids)


def test_corruptions(image):
  inp = corrupt(image, "inpaint")  # centred 16x16 gray square
  assert np.all(inp[8:24, 8:24] == 0.5) and np.array_equal(inp[:8], image[:8])
  out = corrupt(image, "outpaint")  # only the centred 16x16 survives
  assert np.array_equal(out[8:24, 8:24], image[8:24, 8:24]) and np.all(out[:8] == 0.5)
  sh = corrupt(image, "shift")
  assert np.array_equal(sh[8:, 8:], image[:24, :24])
  blur = corrupt(image, "deblur")
  assert np.abs(np.diff(blur, axis=0)).mean() < np.abs(np.diff(image, axis=0)).mean()
  assert np.array_equal(corrupt(image, "denoise", seed=3), corrupt(image, "denoise", seed=3))
  assert not np.array_equal(corrupt(image, "denoise", seed=3), image)
  with pytest.raises(spae.SpaeInputError, match="unknown image task"):
    corrupt(image, "colorize")


def test_majority_lm_denoises_back_to_the_condition(tiny_tok, wtok, image):
  """A majority vote over the noisy in-context examples recovers the condition's tokens in every layer."""
  lm = FunctionLM(wtok, majority_model(wtok))
  cond = tiny_tok.encode(corrupt(image, "inpaint")[None])
  res = generate_pyramid(lm, tiny_tok, condition=cond, config=GenerateConfig(examples=9, chunk=16))
  for layer, c in zip(res.layers, cond.ids):
    assert np.array_equal(layer, c[0])
  # layers of 1, 4 and 16 tokens in one call each, the 64-token layer in 4 chunks of 16
  assert res.calls == 7 and [c["max_new"] for c in lm.generate_calls] == [1, 4, 16, 16, 16, 16, 16]
  first = res.prompts[0]
  assert first.startswith("Learn a new language and predict the 1 tokens") and first.count("Input:") == 10
  # the generated coarser layers are fed back: the last prompt's query output starts with layers 1..3
  words = tiny_tok.vocabulary.words(np.arange(len(tiny_tok.vocabulary)))
  prefix = " ".join(words[i] for l in res.layers[:3] for i in l.reshape(-1))
  assert res.prompts[-1].rstrip().endswith("Output: " + prefix)


def test_generation_with_a_jax_lm_fills_every_layer_with_valid_ids(tiny_tok, tmp_path_factory, image):
  from spae.lm import testing as lmt

  lm = lmt.tiny_lm(tmp_path_factory.mktemp("glm"))
  cond = tiny_tok.encode(corrupt(image, "denoise")[None])
  cfg = GenerateConfig(examples=1, chunk=8, token_mode="ids", context_layers=1, layers=3)
  res = generate_pyramid(lm, tiny_tok, condition=cond, config=cfg)
  assert [l.shape for l in res.layers] == [(1, 1), (2, 2), (4, 4)] and res.calls == 4  # layer 3 in 2 chunks
  v = len(tiny_tok.vocabulary)
  assert all(l.min() >= 0 and l.max() < v for l in res.layers) and res.filled == 0
  # sampling is seeded: the same seed gives the same pyramid
  cfg2 = GenerateConfig(examples=1, token_mode="ids", layers=2, temperature=1.0, seed=4)
  a = generate_pyramid(lm, tiny_tok, condition=cond, config=cfg2)
  b = generate_pyramid(lm, tiny_tok, condition=cond, config=cfg2)
  assert all(np.array_equal(x, y) for x, y in zip(a.layers, b.layers)) and len(a.layers) == 2


def test_text_conditioned_generation_uses_reference_examples(tiny_tok, wtok, image):
  lm = FunctionLM(wtok, majority_model(wtok))
  ref = tiny_tok.encode(image[None])
  res = generate_pyramid(lm, tiny_tok, text="red circle", examples=[("red circle", ref)],
                         config=GenerateConfig(examples=5, layers=3))
  assert all(np.array_equal(a, b[0]) for a, b in zip(res.layers, ref.ids[:3]))
  assert "Input: red circle Output:" in res.prompts[0]
  with pytest.raises(spae.SpaeInputError, match="examples"):
    generate_pyramid(lm, tiny_tok, text="red circle", config=GenerateConfig())


def test_image_task_outputs_and_metrics(tiny_tok, wtok, image, tmp_path):
  lm = FunctionLM(wtok, majority_model(wtok))
  m = gen.run_image_task(lm, tiny_tok, image, "outpaint", tmp_path, config=GenerateConfig(examples=9))
  for k in range(1, 5):
    for name in ("condition", "generation", "target"):
      assert (tmp_path / f"layers{k}_{name}.png").is_file()
  assert (tmp_path / "grid.png").is_file() and (tmp_path / "prompts.txt").read_text().startswith("# call 0")
  saved = json.loads((tmp_path / "metrics.json").read_text())
  assert [r["layers"] for r in saved["layers"]] == [1, 2, 3, 4]
  for r in m["layers"]:  # the majority LM reproduces the condition, so their metrics agree
    assert r["generation"]["psnr"] == pytest.approx(r["condition"]["psnr"])
    assert np.isfinite(r["generation"]["psnr"]) and -1 <= r["generation"]["ssim"] <= 1
  toks = json.loads((tmp_path / "tokens.json").read_text())
  assert toks["generation"]["ids"] == toks["condition"]["ids"]
  # the baselines: the cleanest example is the condition with noise_end (20%) of its tokens replaced
  target = tiny_tok.encode(tiny_tok.preprocess(image)[0])
  last = m["layers"][-1]
  acc = {name: last[name]["token_accuracy"] for name in ("generation", "condition", "cleanest_example")}
  assert acc["generation"] == acc["condition"] == pytest.approx(gen.token_accuracy(
      [np.asarray(toks["condition"]["ids"][l])[0] for l in range(4)], target))
  cond_ids = [np.asarray(a).reshape(-1) for a in toks["condition"]["ids"]]
  clean_ids = [np.asarray(a).reshape(-1) for a in toks["cleanest_example"]["ids"]]
  same = np.mean(np.concatenate([a == b for a, b in zip(cond_ids, clean_ids)]))
  assert 0.7 <= same < 0.95, same
  assert (tmp_path / "layers4_cleanest_example.png").is_file()


def test_token_accuracy_counts_matching_positions(tiny_tok, image):
  target = tiny_tok.encode(tiny_tok.preprocess(image)[0])
  same = [target.ids[l][0] for l in range(3)]
  assert gen.token_accuracy(same, target) == 1.0
  changed = [a.copy() for a in same]
  changed[2][0, :2] = (changed[2][0, :2] + 1) % len(tiny_tok.vocabulary)  # 2 of 1 + 4 + 16 tokens
  assert gen.token_accuracy(changed, target) == pytest.approx(19 / 21)


def test_image_metrics():
  from spae.prompting._metrics import image_metrics

  rng = np.random.default_rng(0)
  a = rng.random((16, 16, 3)).astype(np.float32)
  same = image_metrics(a, a)
  assert same["psnr"] == float("inf") and same["ssim"] == pytest.approx(1.0)
  assert image_metrics(a, np.clip(a + 0.1, 0, 1))["psnr"] > image_metrics(a, np.clip(a + 0.3, 0, 1))["psnr"]
  assert image_metrics(np.zeros((4, 4, 3)), np.full((4, 4, 3), 0.1))["psnr"] == pytest.approx(20.0, abs=1e-4)
  assert image_metrics(a, rng.random((16, 16, 3)))["ssim"] < 0.2


def test_cli_generate(tiny_tok, wtok, image, tmp_path, monkeypatch, capsys):
  from spae.prompting import _cli

  lm = FunctionLM(wtok, majority_model(wtok))
  monkeypatch.setattr(_cli, "load_tokenizer", lambda spec: tiny_tok)
  monkeypatch.setattr(_cli, "load_lm", lambda spec, **kw: lm)
  spae.save_image(tmp_path / "in.png", image)
  p = argparse.ArgumentParser()
  gen.add_generate_args(p)
  args = p.parse_args(["--task", "inpaint", "--tokenizer", "tiny", "--lm", "x", "--image", str(tmp_path / "in.png"),
                       "-o", str(tmp_path / "out"), "--examples", "3", "--layers", "2"])
  assert gen.run_generate(args) == 0
  assert "layers 1..2: generation PSNR" in capsys.readouterr().out
  assert (tmp_path / "out" / "layers2_generation.png").is_file()
  with pytest.raises(spae.SpaeInputError, match="--image"):
    gen.run_generate(p.parse_args(["--task", "deblur", "--tokenizer", "t", "--lm", "x", "-o", str(tmp_path)]))
  with pytest.raises(spae.SpaeInputError, match="noise_start"):
    gen.run_generate(p.parse_args(["--task", "deblur", "--tokenizer", "t", "--lm", "x", "-o", str(tmp_path),
                                   "--image", str(tmp_path / "in.png"), "--noise-start", "1.5"]))
  # class-conditioned: reference images of --data's classes as the in-context examples, --text the query
  args = p.parse_args(["--task", "class", "--tokenizer", "tiny", "--lm", "x", "--text", "red circle", "--data",
                       "shapes-memory:12@32", "-o", str(tmp_path / "cls"), "--examples", "3", "--layers", "2"])
  assert gen.run_generate(args) == 0 and "LM calls; outputs in" in capsys.readouterr().out
  written = json.loads((tmp_path / "cls" / "tokens.json").read_text())
  assert written["text"] == "red circle" and len(written["examples"]) == 3
  assert (tmp_path / "cls" / "layers2_generation.png").is_file()
  with pytest.raises(spae.SpaeInputError, match="--task class needs --text"):
    gen.run_generate(p.parse_args(["--task", "class", "--tokenizer", "t", "--lm", "x", "-o", str(tmp_path)]))


class _Backend(FunctionLM):
  """A FunctionLM whose generate answers as a backend might: stopping after `keep` tokens, or writing an id it was
  not allowed to."""

  def __init__(self, tokenizer, fn, *, keep=None, stray=None, max_length=100_000):
    super().__init__(tokenizer, fn, max_length=max_length)
    self.keep, self.stray = keep, stray

  def generate(self, ids, max_new, **kwargs):
    out = super().generate(ids, max_new, **kwargs)
    if self.stray is not None:
      return [self.stray] + out[1:]
    return out[:self.keep] if self.keep is not None else out


def test_a_backend_that_stops_early_leaves_the_conditions_tokens_and_counts_them(tiny_tok, wtok, image):
  """An LM that writes fewer tokens than asked: the rest keep the condition's tokens, and `filled` counts them."""
  cond = tiny_tok.encode(corrupt(image, "inpaint")[None])
  first_word = wtok.encode(tiny_tok.vocabulary.words([0])[0])  # always writes codebook entry 0, then stops
  lm = _Backend(wtok, lambda ids: np.eye(wtok.vocab_size)[first_word[0]] * 10.0, keep=2)
  res = generate_pyramid(lm, tiny_tok, condition=cond, config=GenerateConfig(examples=2, layers=3, chunk=16))
  # layers of 1, 4 and 16 positions: every call writes 2 tokens (entry 0), the rest are the condition's
  assert res.filled == 0 + 2 + 14
  assert res.layers[0][0, 0] == 0
  for layer, c in zip(res.layers[1:], cond.ids[1:3]):
    flat, want = layer.reshape(-1), c[0].reshape(-1)
    assert np.all(flat[:2] == 0) and np.array_equal(flat[2:], want[2:])


def test_a_backend_that_ignores_the_allowed_ids_or_a_prompt_too_long_is_one_line(tiny_tok, wtok, image):
  cond = tiny_tok.encode(corrupt(image, "inpaint")[None])
  stray = wtok.vocab_size - 1  # an LM token that is no codebook entry (the WordTokenizer's last special piece)
  assert TokenMap(tiny_tok.vocabulary, wtok, "auto").to_codebook(np.array([stray]))[0] < 0
  lm = _Backend(wtok, majority_model(wtok), stray=stray)
  with pytest.raises(spae.SpaeInputError, match="outside allowed_ids; its backend ignores the constraint"):
    generate_pyramid(lm, tiny_tok, condition=cond, config=GenerateConfig(examples=2, layers=1))
  short = FunctionLM(wtok, majority_model(wtok), max_length=20)
  with pytest.raises(spae.SpaeInputError, match=r"layer 1: the prompt is \d+ LM tokens, over max_length 20"):
    generate_pyramid(short, tiny_tok, condition=cond, config=GenerateConfig(examples=2, layers=1))
