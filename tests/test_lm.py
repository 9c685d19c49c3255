"""spae.lm: parity with transformers, KV-cached scoring, constrained generation, loaders and bad input."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest

import spae
from spae import lm as L
from spae._tensors import open_tensors
from spae.lm._gemma import _bucket
from lm_fixtures import PARITY, parity, tiny, tiny_gemma2, lm_tmp  # noqa: F401  (fixtures)

KINDS_LAYOUTS = [("gemma2", "hf"), ("gemma2", "orbax"), ("gemma3", "hf"), ("gemma3", "orbax"), ("llama", "hf")]


def _logp(lm, ids):
  return np.asarray(jax.nn.log_softmax(lm.logits(np.asarray([ids]))[0], axis=-1))


def _uncached_score(lm, prefix, cont):
  lp = _logp(lm, prefix + cont)
  return sum(lp[len(prefix) - 1 + j, cont[j]] for j in range(len(cont)))


# ------------------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("kind,layout", KINDS_LAYOUTS)
def test_parity_with_transformers(kind, layout):
  ref = np.load(PARITY / kind / "reference.npz", allow_pickle=False)
  lm = parity(kind, layout)
  out = lm.logits(ref["input_ids"])
  assert out.shape == ref["logits"].shape
  rel = np.abs(out - ref["logits"]).max() / np.abs(ref["logits"]).max()
  assert rel < 1e-4, f"{kind}/{layout}: max relative logit error {rel:.2e}"


def test_parity_configs_exercise_family_features():
  g2, g3, ll = parity("gemma2", "hf").config, parity("gemma3", "hf").config, parity("llama", "hf").config
  ref_len = np.load(PARITY / "gemma2" / "reference.npz")["input_ids"].shape[1]
  assert g2.attn_softcap and g2.final_softcap and g2.sliding_window < ref_len and g2.post_norms
  assert g2.query_pre_attn_scalar != g2.head_dim and g2.layer_types == ("sliding", "global")
  assert g3.qk_norm and dict(g3.rope_global_scaling)["rope_type"] == "linear" and g3.rope_global_base == 1e6
  assert not ll.tied_embeddings and dict(ll.rope_global_scaling)["rope_type"] == "llama3" and not ll.embed_scale
  assert parity("gemma2", "orbax").config == g2  # orbax shapes + spae_lm.json reproduce the HF config


def test_orbax_and_hf_layouts_of_tiny_models_agree():
  ids = np.arange(2, 30)[None] % 320
  np.testing.assert_allclose(tiny("gemma3", "orbax").logits(ids), tiny("gemma3", "hf").logits(ids), atol=1e-5)


# ------------------------------------------------------------------------------------------------ scoring
@pytest.mark.parametrize("kind", ["gemma2", "gemma3", "llama"])
def test_cached_score_equals_uncached_forward(kind):
  lm = parity(kind, "hf")
  lm.clear_cache()
  rng = np.random.default_rng(1)
  prefix = [2] + rng.integers(4, 320, size=13).tolist()  # longer than the sliding window (6)
  conts = [rng.integers(4, 320, size=n).tolist() for n in (1, 3, 8, 2, 5)]
  want = [_uncached_score(lm, prefix, c) for c in conts]
  np.testing.assert_allclose(lm.score(prefix, conts), want, rtol=1e-4, atol=1e-4)
  # Cache reuse: a longer prefix sharing the start (a new query after the same shots) runs only new tokens.
  longer = prefix + rng.integers(4, 320, size=7).tolist()
  np.testing.assert_allclose(lm.score(longer, conts[:2]), [_uncached_score(lm, longer, c) for c in conts[:2]],
                             rtol=1e-4, atol=1e-4)
  assert lm._cache[0] == longer
  # A prefix that diverges early (cache mostly invalid) and one that is a prefix of the cached one.
  other = prefix[:3] + [7, 8, 9]
  np.testing.assert_allclose(lm.score(other, conts[:1]), [_uncached_score(lm, other, conts[0])], rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_allclose(lm.score(other[:4], conts[:1]), [_uncached_score(lm, other[:4], conts[0])],
                             rtol=1e-4, atol=1e-4)


def test_score_after_a_long_prompt_shrinks_the_cache_and_branches_do_not_see_each_other():
  """A long prompt grows the K/V buffers; a short one sharing its start shrinks them (keeping the shared slots);
  candidates that share a first token, and one that is another's prefix, are scored as independent branches."""
  lm = parity("gemma3", "hf")
  lm.clear_cache()
  rng = np.random.default_rng(5)
  long = [2] + rng.integers(4, 320, size=150).tolist()
  conts = [[11, 12, 13], [11, 14], [11], [40, 41, 42, 43]]
  np.testing.assert_allclose(lm.score(long, conts), [_uncached_score(lm, long, c) for c in conts], rtol=1e-4,
                             atol=1e-4)
  assert lm._cache[1].shape[2] == 256
  short = long[:6] + [9, 9]
  np.testing.assert_allclose(lm.score(short, conts), [_uncached_score(lm, short, c) for c in conts], rtol=1e-4,
                             atol=1e-4)
  assert lm._cache[1].shape[2] == 64 and lm._cache[0] == short


@pytest.mark.parametrize("smallest", [1, 2, 16])
def test_buckets_pad_at_most_a_quarter_and_respect_the_cap(smallest):
  sizes = set()
  for n in range(1, 3000):
    b = _bucket(n, 1 << 30, smallest)
    sizes.add(b)
    assert b >= n and b >= smallest
    assert b <= max(smallest, n + (n - 1) // 4 + 1)
  assert len(sizes) <= 7 + 4 * 10  # few compiled shapes: 4 per octave
  assert _bucket(700, 512, 16) == 700 and _bucket(300, 320, 16) == 320 and _bucket(3, 100, 16) == 16


def test_score_many_equals_score_per_request_with_one_head_pass(monkeypatch):
  """score_many gives each request what `score` and the uncached forward give, running the requests in order
  through the prefix cache (the second extends the first's prefix) and the output head once for all of them;
  continuations that share a context share its head row."""
  import spae.lm._gemma as G
  import spae.lm._gemma_forward as F

  lm = parity("gemma3", "hf")
  lm.clear_cache()
  rng = np.random.default_rng(7)
  p1 = [2] + rng.integers(4, 320, size=11).tolist()
  p2 = p1 + [9, 10]
  p3 = [2, 5, 6]
  reqs = [(p1, [[5, 6], [5, 7], [8]]), (p2, [[3], [4, 4, 4]]), (p3, [[5]])]
  heads = []
  head = F.token_logp_fn
  monkeypatch.setattr(F, "token_logp_fn", lambda *a: heads.append(a[2].shape) or head(*a))
  got = lm.score_many(reqs)
  assert len(heads) == 1 and len(got) == 3 and lm._cache[0] == p3
  for (prefix, conts), g in zip(reqs, got):
    assert g.shape == (len(conts),) and g.dtype == np.float32
    np.testing.assert_allclose(g, [_uncached_score(lm, prefix, c) for c in conts], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(g, lm.score(prefix, conts), rtol=1e-6)
  # rows: () and (5,) for p1's three continuations; (), (4,), (4, 4) for p2's
  assert lm._branches(p1, reqs[0][1])[1] == 2 and lm._branches(p2, reqs[1][1])[1] == 3
  # With room for 4 scored tokens per head pass, the head runs per group (p1; p2; p3) with the same scores.
  heads.clear()
  monkeypatch.setattr(G, "HEAD_ROWS", 4)
  again = lm.score_many(reqs)
  assert len(heads) == 3 and len(again) == 3
  for g, w in zip(again, got):
    np.testing.assert_allclose(g, w, rtol=1e-6)

def test_logits_batch_and_1d():
  lm = parity("gemma2", "hf")
  ids = np.random.default_rng(0).integers(0, 320, size=(3, 9))
  batch = lm.logits(ids)
  np.testing.assert_allclose(batch[1], lm.logits(ids[1]), atol=1e-5)
  assert batch.dtype == np.float32 and batch.shape == (3, 9, 320)


def test_score_text_uses_the_tokenizer():
  lm = parity("gemma2", "hf")
  tok = lm.tokenizer
  got = lm.score_text("Input: cat dog", [" red", " blue tree"])
  prefix = tok.encode("Input: cat dog", add_bos=True)
  # each continuation is scored with the ids it has in the joint text
  conts = [tok.encode("Input: cat dog" + c, add_bos=True)[len(prefix):] for c in (" red", " blue tree")]
  np.testing.assert_allclose(got, lm.score(prefix, conts), rtol=1e-6)
  assert prefix[0] == tok.bos_id == 2 and all(len(c) for c in conts)


# ------------------------------------------------------------------------------------------------ generation
def test_greedy_generation_follows_argmax_and_is_deterministic():
  lm = parity("gemma3", "hf")
  prompt = [2, 40, 41, 42]
  out = lm.generate(prompt, 5)
  assert out == lm.generate(prompt, 5) and len(out) == 5
  seq = list(prompt)
  for t in out:  # each greedy token is the argmax of the uncached forward
    assert t == int(np.argmax(_logp(lm, seq)[-1]))
    seq.append(t)


def test_sampling_is_seeded():
  lm = parity("gemma2", "hf")
  prompt = [2, 50, 60]
  a = lm.generate(prompt, 8, temperature=1.5, seed=3)
  assert a == lm.generate(prompt, 8, temperature=1.5, seed=3)
  others = {tuple(lm.generate(prompt, 8, temperature=1.5, seed=s)) for s in range(4, 8)}
  assert len(others | {tuple(a)}) > 1  # different seeds give different samples
  assert lm.generate(prompt, 8, temperature=0.0, seed=1) == lm.generate(prompt, 8, temperature=0.0, seed=2)


def test_allowed_ids_constrain_every_token():
  lm = parity("llama", "hf")
  allowed = [11, 12, 13]
  for seed in range(3):
    out = lm.generate([2, 70 + seed], 6, allowed_ids=allowed, temperature=1.0, seed=seed)
    assert len(out) == 6 and set(out) <= set(allowed)
  # greedy under the constraint picks the best allowed token
  first = lm.generate([2, 70], 1, allowed_ids=allowed)[0]
  assert first == allowed[int(np.argmax(_logp(lm, [2, 70])[-1][allowed]))]


def test_candidates_constrain_output_to_one_candidate():
  lm = parity("gemma2", "hf")
  cands = [[30, 31, 32], [30, 33], [34], [35, 36, 37, 38]]
  for seed in range(4):
    out = lm.generate([2, 80 + seed], 10, candidates=cands, temperature=1.0, seed=seed)
    assert out in cands
  greedy = lm.generate([2, 80], 10, candidates=cands)
  assert greedy == max(cands, key=lambda c: -np.inf if c[0] != greedy[0] else 0) or greedy in cands
  # the greedy first token is the best of the candidates' first tokens
  firsts = sorted({c[0] for c in cands})
  assert greedy[0] == firsts[int(np.argmax(_logp(lm, [2, 80])[-1][firsts]))]


def test_candidates_with_shared_prefix_end_at_stop():
  lm = parity("gemma2", "hf")
  cands = [[30], [30, 31]]
  # At [30] a candidate is complete; the stop id is allowed there, so the output is [30] or [30, 31].
  outs = {tuple(lm.generate([2, 90], 5, candidates=cands, stop=[1], temperature=2.0, seed=s)) for s in range(6)}
  assert outs <= {(30,), (30, 31)}
  # Without a stop id the trie continues to the longer candidate.
  assert lm.generate([2, 90], 5, candidates=cands) == [30, 31]


def test_generate_text_with_candidates_and_stop():
  lm = parity("gemma3", "hf")
  text = lm.generate_text("Input: cat", 6, candidates=[" red", " blue tree", " green"])
  assert text.strip() in ("red", "blue tree", "green")
  free = lm.generate_text("Input: cat", 12, stop=["a"])
  assert "a" not in free


# ------------------------------------------------------------------------------------------------ vocabulary
def test_vocabulary_raw_and_scaled_rows(tiny_gemma2):
  raw, scaled = tiny_gemma2.vocabulary(), tiny_gemma2.vocabulary(scaled=True)
  assert isinstance(raw, spae.Vocabulary) and len(raw) == 320
  np.testing.assert_allclose(scaled.embeddings, raw.embeddings * np.sqrt(32), rtol=1e-6)
  assert raw.pieces[2] == "<s>" and raw.kinds[2] == "control"
  assert "<s>" not in raw.filter().pieces  # kinds are kept, so filter drops special pieces
  llama = parity("llama", "hf")
  np.testing.assert_array_equal(llama.vocabulary(scaled=True).embeddings, llama.vocabulary().embeddings)


def test_round_trip_safe_with_local_tokenizer(tiny_gemma2):
  vocab = tiny_gemma2.vocabulary()
  tok = tiny_gemma2.tokenizer
  safe = L.round_trip_safe(vocab, tok)
  assert 0 < len(safe) < len(vocab)
  assert all(p.startswith("\u2581") for p in safe.pieces)  # pieces glued to the previous word fail
  rng = np.random.default_rng(0)
  for _ in range(20):
    ids = rng.choice(safe.llm_ids, size=12).tolist()
    assert tok.encode(tok.decode(ids)) == ids


# ------------------------------------------------------------------------------------------------ bad input
def _copy_hf(src, dst):
  shutil.copytree(src, dst)
  shutil.copy(PARITY / "gemma2" / "tokenizer.model", dst / "tokenizer.model")
  return dst


def test_config_shape_mismatch_is_named(tmp_path):
  d = _copy_hf(PARITY / "gemma2" / "hf", tmp_path / "m")
  cfg = json.loads((d / "config.json").read_text())
  cfg["intermediate_size"] = 80
  (d / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(spae.SpaeInputError, match=r"mlp\.gate_proj\.weight.*\(64, 32\).*\(80, 32\)"):
    L.load(f"hf:{d}")


def test_missing_tensor_is_named(tmp_path):
  from safetensors.numpy import save_file
  d = _copy_hf(PARITY / "llama" / "hf", tmp_path / "m")
  tensors = {k: np.array(v) for k, v in open_tensors(d / "model.safetensors").items()}
  del tensors["model.layers.1.self_attn.v_proj.weight"]
  save_file(tensors, str(d / "model.safetensors"))
  with pytest.raises(spae.SpaeInputError, match=r"missing tensor 'model\.layers\.1\.self_attn\.v_proj\.weight'"):
    L.load(f"hf:{d}")


def test_orbax_missing_tensor_and_unknown_size(tmp_path):
  import orbax.checkpoint as ocp
  tree = ocp.PyTreeCheckpointer().restore(str((PARITY / "gemma2" / "orbax").absolute()))
  del tree["transformer/layer_1/mlp/linear"]
  ocp.PyTreeCheckpointer().save(str(tmp_path / "a"), tree)
  shutil.copy(PARITY / "gemma2" / "orbax" / "spae_lm.json", tmp_path / "a")
  with pytest.raises(spae.SpaeInputError, match=r"missing tensor 'layer_1/mlp/linear'"):
    L.load(f"gemma:{tmp_path / 'a'}", tokenizer=PARITY / "gemma2" / "tokenizer.model")
  shutil.copytree(PARITY / "gemma2" / "orbax", tmp_path / "b")
  (tmp_path / "b" / "spae_lm.json").unlink()
  with pytest.raises(spae.SpaeInputError, match="matches no released size"):
    L.load(f"gemma:{tmp_path / 'b'}", tokenizer=PARITY / "gemma2" / "tokenizer.model")


def test_tokenizer_vocab_size_mismatch(tmp_path):
  other = L.testing.train_sentencepiece(tmp_path / "tok", 300)
  with pytest.raises(spae.SpaeInputError, match="tokenizer has 300 pieces but the embedding table has 320 rows"):
    L.load(f"hf:{PARITY / 'gemma2' / 'hf'}", tokenizer=other)
  lm = L.load(f"hf:{PARITY / 'gemma2' / 'hf'}", tokenizer=other, allow_extra_rows=True)
  out = lm.generate([2, 5], 4, temperature=1.0)
  assert all(t < 300 for t in out)  # padded rows are never emitted


def test_prompt_longer_than_context_is_rejected():
  lm = parity("gemma2", "hf")
  n = lm.max_length  # 256 in the fixture config
  with pytest.raises(spae.SpaeInputError, match="exceeds the model context max_length=256"):
    lm.score([2] * (n - 1), [[5, 6]])
  with pytest.raises(spae.SpaeInputError, match="len\\(ids\\) \\+ max_new = 258"):
    lm.generate([2] * (n - 2), 4)
  with pytest.raises(spae.SpaeInputError, match="length 257 > max_length 256"):
    lm.logits(np.zeros((1, n + 1), np.int32))


def test_bad_ids_and_specs():
  lm = parity("gemma2", "hf")
  with pytest.raises(spae.SpaeInputError, match="token ids in \\[0, 320\\)"):
    lm.score([2, 999], [[3]])
  with pytest.raises(spae.SpaeInputError, match="at least one token"):
    lm.score([2], [[]])
  # One id where a list belongs, ragged nesting and text get one line that says what was expected.
  with pytest.raises(spae.SpaeInputError, match=r"continuations\[0\] must be a flat sequence of token ids, got int"):
    lm.score([2, 5], [5, 6])
  with pytest.raises(spae.SpaeInputError, match="prefix_ids must be a flat sequence of token ids"):
    lm.score_many([([[2, 5], [6]], [[3]])])
  with pytest.raises(spae.SpaeInputError, match="not text"):
    lm.score([2, 5], "red")
  with pytest.raises(spae.SpaeInputError, match="allowed_ids is empty"):
    lm.generate([2], 3, allowed_ids=[])
  # The rest of the id and text API's checks, each one line.
  for call, message in ((lambda: lm.score([], [[3]]), "prefix_ids is empty; start it with BOS"),
                        (lambda: lm.score([2], []), "continuations is empty"),
                        (lambda: lm.generate([], 3), "ids is empty; start the prompt with BOS"),
                        (lambda: lm.generate([2], -1), "max_new must be >= 0, got -1"),
                        (lambda: lm.generate([2], 2, candidates=[]), "candidates is empty"),
                        (lambda: lm.generate([2], 2, candidates=[[3], []]), "candidate 1 is empty"),
                        (lambda: lm.generate([2, 999], 2), r"ids must be integer token ids in \[0, 320\)"),
                        (lambda: lm.score_text("a", "b"), "continuations must be a list of strings, not one"),
                        (lambda: lm.score_text("a", [""]), "continuation '' encodes to no tokens"),
                        (lambda: lm.generate_text("a", 2, candidates="b"), "candidates must be a list of strings")):
    with pytest.raises(spae.SpaeInputError, match=message):
      call()
  with pytest.raises(spae.SpaeInputError, match="unknown model spec scheme"):
    L.load("foo:bar")
  with pytest.raises(spae.SpaeInputError, match="needs the served model name"):
    L.load("openai:http://127.0.0.1:1")
  with pytest.raises(spae.SpaeInputError, match="has no config.json"):
    L.load(f"hf:{PARITY / 'gemma2'}")


def test_trie_constraint_and_interface():
  t = L.Trie([[1, 2], [1, 3], [4]])
  assert t.next_ids([]) == [1, 4] and t.next_ids([1]) == [2, 3] and t.is_complete([4]) and not t.is_complete([1])
  c = L.Constraint(candidates=[[1, 2], [1], [4]], allowed_ids=[1, 2, 3, 4], stop=[9], vocab_size=10)
  assert c.step([])[0].tolist() == [1, 4] and not c.step([])[1]
  assert c.step([1])[0].tolist() == [2, 9]  # [1] is complete: a stop id may end it, or it continues to [1, 2]
  assert c.step([1, 2]) == (None, True) and not c.free and L.Constraint(stop=[3]).free
  assert L.Constraint(allowed_ids=[5], stop=[9]).step([5, 5])[0].tolist() == [5, 9]
  with pytest.raises(spae.SpaeInputError, match="outside \\[0, 10\\)"):
    L.Constraint(candidates=[[12]], vocab_size=10)
  lm = parity("gemma2", "hf")
  assert isinstance(lm, L.LanguageModel) and isinstance(lm, L.LogitsModel)
  assert isinstance(lm.tokenizer, L.TextTokenizer)


def test_next_logprobs_is_the_forward_and_drives_the_one_decoding_loop():
  lm = parity("gemma3", "hf")
  ids = [2, 40, 41, 42, 43]
  np.testing.assert_allclose(lm.next_logprobs(ids), _logp(lm, ids)[-1], rtol=1e-4, atol=1e-4)
  # A backend made only of next_logprobs decodes exactly like GemmaLM (same loop, same constraint semantics).
  from spae.prompting.testing import FunctionLM
  fn = FunctionLM(lm.tokenizer, lambda seq: lm.next_logprobs(seq))
  cands = [[30, 31, 32], [30, 33], [34]]
  for kw in ({}, {"candidates": cands, "stop": [1]}, {"allowed_ids": [11, 12, 13], "temperature": 1.0, "seed": 3}):
    assert fn.generate(ids, 4, **kw) == lm.generate(ids, 4, **kw)
  np.testing.assert_allclose(fn.score(ids, cands), lm.score(ids, cands), rtol=1e-4, atol=1e-4)


def _orbax_shapes(family: str, d: int, layers: int, heads: int = 4, kv: int = 1, head_dim: int = 8, ff: int = 32,
                  fused: bool = False):
  """Tensors with the shapes of a Gemma orbax checkpoint (normalised names; values never read)."""
  from spae._tensors import Tensors

  z = lambda *s: np.zeros(s, np.float32)
  arrays = {"embedder/input_embedding": z(64, d), "final_norm/scale": z(d)}
  for i in range(layers):
    p = f"layer_{i}/"
    if fused:  # multi-head checkpoints store q, k and v in one einsum
      arrays[p + "attn/qkv_einsum/w"] = z(3, heads, d, head_dim)
    else:
      arrays[p + "attn/q_einsum/w"] = z(heads, d, head_dim)
      arrays[p + "attn/kv_einsum/w"] = z(2, kv, d, head_dim)
    arrays[p + "mlp/linear"] = z(ff, d)
    if family == "gemma3":
      arrays[p + "attn/_query_norm/scale"] = z(head_dim)
  return Tensors.from_arrays(arrays)


def test_orbax_config_from_shapes_presets_and_overrides():
  """An orbax checkpoint carries no config: its shapes give the sizes, a released size (matched by family, width
  and depth, or named) the rest; an unreleased size needs the missing fields given, and a broken one says what."""
  from spae._tensors import Tensors
  from spae.lm._loaders import config_from_orbax

  # Gemma 3 270M's width and depth: its preset's window and context; GQA heads from q_einsum / kv_einsum.
  cfg = config_from_orbax(_orbax_shapes("gemma3", 640, 18))
  assert (cfg.family, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.hidden_dim) == ("gemma3", 4, 1, 8, 32)
  assert (cfg.sliding_window, cfg.max_length, cfg.qk_norm) == (512, 32768, True)
  # A named variant wins over the matched one, and a global RoPE factor becomes linear scaling.
  cfg = config_from_orbax(_orbax_shapes("gemma3", 640, 18), variant="gemma3-4b")
  assert cfg.sliding_window == 1024 and dict(cfg.rope_global_scaling) == {"rope_type": "linear", "factor": 8.0}
  with pytest.raises(spae.SpaeInputError, match="unknown Gemma variant 'gemma9'"):
    config_from_orbax(_orbax_shapes("gemma3", 640, 18), variant="gemma9")
  # A fused qkv einsum (multi-head attention): as many kv heads as heads.
  cfg = config_from_orbax(_orbax_shapes("gemma2", 48, 2, heads=2, fused=True), overrides={"sliding_window": 16})
  assert (cfg.family, cfg.num_heads, cfg.num_kv_heads, cfg.sliding_window) == ("gemma2", 2, 2, 16)
  with pytest.raises(spae.SpaeInputError, match="matches no released size"):
    config_from_orbax(_orbax_shapes("gemma2", 48, 2), where="ckpt")
  with pytest.raises(spae.SpaeInputError, match="ckpt: no layer_0/... tensors found"):
    config_from_orbax(Tensors.from_arrays({"embedder/input_embedding": np.zeros((4, 8))}),
                        where="ckpt")
  with pytest.raises(spae.SpaeInputError, match=r"ckpt: missing tensor 'embedder/input_embedding'; this is not a "
                                                r"Gemma orbax checkpoint"):
    config_from_orbax(Tensors.from_arrays({"w": np.zeros(2)}), where="ckpt")
