"""Progressive in-context generation: a frozen LLM writes an image's token pyramid layer by layer from the top.

For layer l (and, for large layers, for each chunk P of its positions) one prompt is built:

  {instruction}                                    "Learn a new language and predict the {n} tokens ..."
  Input: {C<l} {C_l[P]} Output: {G<l} {N_r1(C_l[P])}\\n     in-context example 1, noise ratio r1 = noise_start
  ...                                                      ... ratios decrease linearly ...
  Input: {C<l} {C_l[P]} Output: {G<l} {N_rE(C_l[P])}\\n     example E, rE = noise_end
  Input: {C<l} {C_l[P]} Output: {G<l}                      the LLM continues with |P| tokens

C is the condition (the corrupted image's pyramid), G the layers generated so far (fed back), and N_r replaces
a fraction r of the tokens by uniformly random codebook entries. The examples show a sequence that gets
cleaner; the LLM continues the trend and writes a cleaner layer, where "clean" is what the LLM finds likely.
Generated ids are restricted to the codebook (`allowed_ids`) and mapped back to codebook indices.

Layers with at most `chunk` tokens are written in one autoregressive call (token by token); larger layers
are written chunk by chunk, each chunk from its own prompt, which bounds the prompt length.

For class- or caption-conditioned generation the condition is text and the examples are other images:
  Input: {name_j} Output: {X_j<l} {N_ri(X_j,l[P])}\\n   ...   Input: {text} Output: {G<l}
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from spae._io import SpaeInputError, write_json_atomic, write_text_atomic
from spae._tokenizer import Tokenizer, TokenPyramid
from spae.data import LabelledSource
from spae.lm import LanguageModel
from spae.prompting import _cli
from spae.prompting._corrupt import IMAGE_TASKS, corrupt
from spae.prompting._episodes import load_image_from
from spae.prompting._metrics import image_metrics
from spae.prompting._render import Segment, Text, Tokens, fill, render, tokens
from spae.prompting._tokenmap import TokenMap

__all__ = ["IMAGE_TASKS", "TASKS", "TEXT_TASKS", "GenerateConfig", "GenerationResult", "add_generate_args",
           "add_token_noise", "corrupt", "generate_pyramid", "noise_schedule", "reference_examples", "run_generate",
           "run_image_task", "run_text_task", "token_accuracy"]

log = logging.getLogger(__name__)

TEXT_TASKS = ("class",)
TASKS = IMAGE_TASKS + TEXT_TASKS


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
  """Progressive in-context generation settings.

  Attributes:
    layers: generate the top `layers` pyramid layers (None = all).
    examples: in-context examples per prompt.
    noise_start, noise_end: random-replacement ratio of the first and last example (linear in between).
    chunk: layers with more tokens than this are generated `chunk` tokens per call.
    context_layers: how many coarser layers each prompt shows (None = all of them; fewer = shorter prompts).
    instruction, example: the prompt layout; `{n}` = tokens to write, `{condition}` and `{target}`. The query is
      the example template cut at `{target}`, followed by the layers generated so far.
    token_mode: 'auto', 'ids' (codebook shares the LM vocabulary) or 'text'.
    temperature: 0 = greedy; otherwise sampled with `seed`.
    seed: noise and sampling seed.
  """

  layers: int | None = None
  examples: int = 10
  noise_start: float = 0.5
  noise_end: float = 0.2
  chunk: int = 16
  context_layers: int | None = None
  instruction: str = "Learn a new language and predict the {n} tokens following the examples.\n"
  example: str = "Input: {condition} Output: {target}\n"
  token_mode: str = "auto"
  temperature: float = 0.0
  seed: int = 0

  def validate(self) -> None:
    if self.examples < 1:
      raise SpaeInputError(f"examples must be >= 1, got {self.examples}.")
    for name in ("noise_start", "noise_end"):
      v = getattr(self, name)
      if not 0.0 <= v <= 1.0:
        raise SpaeInputError(f"{name} must be in [0, 1], got {v}.")
    if self.chunk < 1:
      raise SpaeInputError(f"chunk must be >= 1, got {self.chunk}.")
    if self.context_layers is not None and self.context_layers < 0:
      raise SpaeInputError("context_layers must be >= 0 or None.")
    if self.example.count("{target}") != 1 or self.example.split("{target}")[0].count("{condition}") != 1:
      raise SpaeInputError(f"the example template needs {{condition}} and then {{target}}, each exactly once, "
                           f"got {self.example!r}.")


def noise_schedule(examples: int, start: float = 0.5, end: float = 0.2) -> np.ndarray:
  """float [examples]: replacement ratio per in-context example, linear from `start` down to `end`."""
  return np.linspace(start, end, examples) if examples > 1 else np.asarray([start], np.float64)


def add_token_noise(ids: np.ndarray, ratio: float, vocab: int | np.ndarray, rng: np.random.Generator
                    ) -> np.ndarray:
  """Replaces round(ratio * n) distinct positions of int [n] `ids` with uniform random codebook entries.

  `vocab`: the codebook size (entries 0..vocab-1) or an array of the entries to draw from.
  """
  ids = np.array(ids, np.int64, copy=True)
  m = int(round(ratio * ids.size))
  if m:
    pos = rng.choice(ids.size, m, replace=False)
    pool = np.arange(vocab) if isinstance(vocab, (int, np.integer)) else np.asarray(vocab, np.int64)
    ids[pos] = pool[rng.integers(0, len(pool), size=m)]
  return ids


# ------------------------------------------------------------------------------------ generation
@dataclasses.dataclass
class GenerationResult:
  """Attributes:
    layers: int [s_l, s_l] codebook indices per generated layer, top first.
    prompts: the readable prompt of every LM call (tokens as words).
    calls: number of LM generate calls.
    filled: positions the LM left unwritten (stopped early), filled from the condition / noise-free example.
    cleanest: int [s_l, s_l] per layer: the target of the last (least noisy) in-context example of every prompt,
      the baseline a generation has to beat (for image tasks: the condition with `noise_end` of it replaced).
  """

  layers: list[np.ndarray]
  prompts: list[str]
  calls: int
  filled: int
  cleanest: list[np.ndarray] = dataclasses.field(default_factory=list)


def _flat(layer: np.ndarray) -> np.ndarray:
  return np.asarray(layer, np.int64).reshape(-1)


def _joined(runs: Sequence[np.ndarray]) -> Tokens:
  """Runs of codebook ids as one run (written as words separated by single spaces)."""
  return tokens(np.concatenate([np.zeros(0, np.int64), *runs]))


def _layer_prompt(config: GenerateConfig, n: int, shots: Sequence[tuple[str | Tokens, list[np.ndarray]]],
                  query: str | Tokens, generated: list[np.ndarray]) -> list[Segment]:
  """Segments of one generation prompt: the instruction, the (condition, target runs) examples, then the query
  (the example template cut at `{target}`, followed by the layers generated so far)."""
  segs: list[Segment] = [Text(config.instruction.replace("{n}", str(n)))]
  for cond, target in shots:
    segs += fill(config.example, {"{condition}": cond, "{target}": _joined(target)})
  cut = config.example.split("{target}")[0] + "{target}"
  return segs + fill(cut, {"{condition}": query, "{target}": _joined(generated)})


def generate_pyramid(lm: LanguageModel, tokenizer: Tokenizer, *, condition: TokenPyramid | None = None,
                     text: str | None = None, examples: Sequence[tuple[str, TokenPyramid]] | None = None,
                     config: GenerateConfig = GenerateConfig(), tmap: TokenMap | None = None) -> GenerationResult:
  """Generates the top `config.layers` layers of a token pyramid with the LM.

  Args:
    lm: the language model that writes the layers.
    tokenizer: the tokenizer whose codebook the layers index.
    condition: image-to-image: the corrupted image's `TokenPyramid` (batch 1).
    text: text-conditioned: the class name / caption to generate.
    examples: text-conditioned: (name, TokenPyramid of batch 1) reference pairs for the in-context examples
      (cycled to `config.examples`).
  Returns the generated layers as codebook indices.
  """
  config.validate()
  if (condition is None) == (text is None):
    raise SpaeInputError("pass exactly one of condition (a token pyramid) or text.")
  if text is not None and not examples:
    raise SpaeInputError("text-conditioned generation needs in-context examples (name, token pyramid).")
  grids = tokenizer.config.pyramid.grids
  n_layers = config.layers or len(grids)
  if not 1 <= n_layers <= len(grids):
    raise SpaeInputError(f"layers must be in 1..{len(grids)}, got {config.layers}.")
  tmap = tmap or TokenMap(tokenizer.vocabulary, lm.tokenizer, config.token_mode)
  rng = np.random.default_rng(config.seed)
  ratios = noise_schedule(config.examples, config.noise_start, config.noise_end)
  allowed = tmap.allowed_lm_ids
  # without a shared vocabulary only single-token words can be written; noise draws from those too
  writable = np.unique(tmap.to_codebook(allowed))
  if condition is not None:
    cond = [_flat(condition.ids[l][0]) for l in range(n_layers)]
  refs = [[_flat(p.ids[l][0]) for l in range(n_layers)] for _, p in (examples or [])]
  generated: list[np.ndarray] = []
  cleanest: list[np.ndarray] = []
  prompts: list[str] = []
  calls = filled = 0
  for l in range(n_layers):
    n = grids[l] ** 2
    lo = 0 if config.context_layers is None else max(0, l - config.context_layers)
    g_prev = [generated[j] for j in range(lo, l)]
    out = np.zeros(n, np.int64)
    clean_ex = np.zeros(n, np.int64)
    starts = [0] if n <= config.chunk else list(range(0, n, config.chunk))
    for s0 in starts:
      pos = np.arange(s0, min(n, s0 + (n if n <= config.chunk else config.chunk)))
      if condition is not None:
        c_in = _joined([cond[j] for j in range(lo, l)] + [cond[l][pos]])
        shots = [(c_in, g_prev + [add_token_noise(cond[l][pos], r, writable, rng)]) for r in ratios]
      else:
        shots = [(examples[i % len(examples)][0],
                  [refs[i % len(refs)][j] for j in range(lo, l)] +
                  [add_token_noise(refs[i % len(refs)][l][pos], r, writable, rng)]) for i, r in enumerate(ratios)]
      clean_ex[pos] = shots[-1][1][-1]
      segs = _layer_prompt(config, len(pos), shots, c_in if condition is not None else text, g_prev)
      fallback = cond[l][pos] if condition is not None else refs[0][l][pos]
      out[pos], prompt, short = _write(lm, tmap, segs, fallback, config, allowed, seed=config.seed + calls,
                                       layer=l + 1)
      calls += 1
      prompts.append(prompt)
      filled += short
    generated.append(out)
    cleanest.append(clean_ex)
  layers = [g.reshape(grids[l], grids[l]) for l, g in enumerate(generated)]
  return GenerationResult(layers, prompts, calls, filled,
                          [c.reshape(grids[l], grids[l]) for l, c in enumerate(cleanest)])


def _write(lm: LanguageModel, tmap: TokenMap, segs: list[Segment], fallback: np.ndarray, config: GenerateConfig,
           allowed: np.ndarray, *, seed: int, layer: int) -> tuple[np.ndarray, str, int]:
  """One LM call that writes len(fallback) codebook ids after the prompt `segs`: (ids, the readable prompt, how
  many ids came from `fallback` because the backend stopped early)."""
  p = render(segs, tmap)
  n = len(fallback)
  if len(p.ids) + n > lm.max_length:
    raise SpaeInputError(f"layer {layer}: the prompt is {len(p.ids)} LM tokens, over max_length "
                         f"{lm.max_length}; lower --examples, --chunk or --context-layers.")
  new = lm.generate(p.ids, n, allowed_ids=allowed, temperature=config.temperature, seed=seed)
  cb = tmap.to_codebook(new)[:n]
  if np.any(cb < 0):
    raise SpaeInputError("the LM returned ids outside allowed_ids; its backend ignores the constraint.")
  if len(cb) < n:  # the backend stopped early: keep the condition's (or first example's) tokens
    log.warning("layer %d: the LM wrote %d of %d tokens; the rest keep the condition's tokens", layer, len(cb), n)
    return np.concatenate([cb, fallback[len(cb):]]), p.text, n - len(cb)
  return cb, p.text, 0


# ------------------------------------------------------------------------------------ tasks and outputs
def _pyramid(tokenizer: Tokenizer, layers: Sequence[np.ndarray]) -> TokenPyramid:
  return TokenPyramid([np.asarray(a)[None] for a in layers], tokenizer.vocabulary)


def token_accuracy(layers: Sequence[np.ndarray], target: TokenPyramid) -> float:
  """Share of the tokens in `layers` (top first) equal to the target pyramid's (batch 1) at the same positions."""
  hits = sum(int(np.sum(np.asarray(a).reshape(-1) == np.asarray(target.ids[l][0]).reshape(-1)))
             for l, a in enumerate(layers))
  return hits / max(1, sum(np.asarray(a).size for a in layers))


def run_image_task(lm: LanguageModel, tokenizer: Tokenizer, image: Any, task: str, out_dir: str | Path, *,
                   config: GenerateConfig = GenerateConfig(), strength: float | None = None,
                   corrupted: bool = False) -> dict[str, Any]:
  """Image-to-image generation: corrupt `image` (unless `corrupted`), generate, write PNGs and metrics.

  Writes to out_dir: condition.png (the corrupted input), target.png (the clean image, unless `corrupted`),
  grid.png (rows: condition / generation / cleanest example / target decoded from the top 1..L layers),
  layers{k}_{condition,generation,cleanest_example,target}.png, tokens.json, prompts.txt and metrics.json
  (PSNR/SSIM of each layer prefix of the generation and of its two baselines against the clean image: the
  condition decoded as it is, and the cleanest in-context example; plus each one's token accuracy against the
  clean image's own tokens). Returns the metrics.
  """
  from spae._images import image_grid, save_image

  if task not in IMAGE_TASKS:
    raise SpaeInputError(f"unknown image task {task!r}; use one of {', '.join(IMAGE_TASKS)}.")
  x, _ = tokenizer.preprocess(image)
  clean = x[0]
  cond_img = clean if corrupted else corrupt(clean, task, strength, seed=config.seed)
  cond = tokenizer.encode(cond_img[None])
  res = generate_pyramid(lm, tokenizer, condition=cond, config=config)
  gen = _pyramid(tokenizer, res.layers)
  cleanest = _pyramid(tokenizer, res.cleanest)
  target = None if corrupted else tokenizer.encode(clean[None])
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  save_image(out / "condition.png", cond_img)
  if not corrupted:
    save_image(out / "target.png", clean)
  rows: dict[str, list[np.ndarray]] = {"condition": [], "generation": [], "cleanest_example": [], "target": []}
  metrics: dict[str, Any] = {"task": task, "layers": [], "calls": res.calls, "filled": res.filled,
                             "config": dataclasses.asdict(config), "strength": strength, "corrupted": corrupted}
  for k in range(1, len(res.layers) + 1):
    imgs = {"condition": tokenizer.decode(cond, layers=k)[0], "generation": tokenizer.decode(gen, layers=k)[0],
            "cleanest_example": tokenizer.decode(cleanest, layers=k)[0]}
    if target is not None:
      imgs["target"] = tokenizer.decode(target, layers=k)[0]
    for name, im in imgs.items():
      save_image(out / f"layers{k}_{name}.png", im)
      rows[name].append(im)
    if not corrupted:
      m = {"layers": k, **{name: image_metrics(im, clean) for name, im in imgs.items()}}
      for name, pyr in (("generation", gen), ("condition", cond), ("cleanest_example", cleanest)):
        m[name]["token_accuracy"] = token_accuracy([pyr.ids[l][0] for l in range(k)], target)
      metrics["layers"].append(m)
  save_image(out / "grid.png", image_grid([r for r in rows.values() if r]))
  write_json_atomic(out / "tokens.json", {"condition": cond.to_json(), "generation": gen.to_json(),
                                          "cleanest_example": cleanest.to_json(),
                                          **({"target": target.to_json()} if target is not None else {})})
  write_text_atomic(out / "prompts.txt", "\n\n".join(f"# call {i}\n{p}" for i, p in enumerate(res.prompts)))
  write_json_atomic(out / "metrics.json", _finite(metrics))
  return metrics


def run_text_task(lm: LanguageModel, tokenizer: Tokenizer, text: str, examples: Sequence[tuple[str, Any]],
                  out_dir: str | Path, *, config: GenerateConfig = GenerateConfig()) -> dict[str, Any]:
  """Class/caption-conditioned generation from (name, image) reference examples; writes generation PNGs."""
  from spae._images import image_grid, save_image

  if not examples:
    raise SpaeInputError("class-conditioned generation needs reference images (pass --data).")
  names = [n for n, _ in examples]
  x = np.stack([tokenizer.preprocess(im)[0][0] for _, im in examples])
  pyr = tokenizer.encode(x)
  res = generate_pyramid(lm, tokenizer, text=text, examples=[(n, pyr[i]) for i, n in enumerate(names)],
                         config=config)
  gen = _pyramid(tokenizer, res.layers)
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  row = []
  for k in range(1, len(res.layers) + 1):
    im = tokenizer.decode(gen, layers=k)[0]
    save_image(out / f"layers{k}_generation.png", im)
    row.append(im)
  save_image(out / "grid.png", image_grid([row, [x[i] for i in range(min(len(x), len(row)))]]))
  write_json_atomic(out / "tokens.json", {"generation": gen.to_json(), "text": text, "examples": names})
  write_text_atomic(out / "prompts.txt", "\n\n".join(f"# call {i}\n{p}" for i, p in enumerate(res.prompts)))
  metrics = {"task": "class", "text": text, "calls": res.calls, "filled": res.filled,
             "config": dataclasses.asdict(config)}
  write_json_atomic(out / "metrics.json", metrics)
  return metrics


def _finite(obj: Any) -> Any:
  """JSON has no inf: PSNR of identical images is written as null."""
  if isinstance(obj, float) and not np.isfinite(obj):
    return None
  if isinstance(obj, dict):
    return {k: _finite(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_finite(v) for v in obj]
  return obj


def reference_examples(source: LabelledSource, count: int, seed: int = 0) -> list[tuple[str, Any]]:
  """`count` (class name, image) pairs from a labelled source, classes taken in a seeded round robin over the
  classes that have images (a source may name classes none of its images belong to)."""
  images = {c: list(source.images_of(c)) for c in source.classes}
  classes = [c for c, keys in images.items() if keys]
  if not classes:
    raise SpaeInputError("the reference data has no labelled images.")
  rng = np.random.default_rng(seed)
  order = [classes[i] for i in rng.permutation(len(classes))]
  out = []
  for i in range(count):
    c = order[i % len(order)]
    keys = images[c]
    out.append((c, load_image_from(source, keys[int(rng.integers(len(keys)))])))
  return out


# ------------------------------------------------------------------------------------ CLI
def add_generate_args(p: argparse.ArgumentParser) -> None:
  """Arguments of `spae generate`."""
  p.add_argument("--task", choices=TASKS, required=True,
                 help="image-to-image: denoise, inpaint, outpaint, deblur, shift; text-conditioned: class")
  p.add_argument("--tokenizer", required=True, help="tokenizer directory, or 'tiny' (untrained built-in)")
  p.add_argument("--lm", required=True, help="gguf:gemma3-270m, gguf:PATH, gemma:PATH, hf:PATH or openai:URL#model")
  _cli.add_lm_server_args(p)
  p.add_argument("--image", default=None, help="input image (image-to-image tasks)")
  p.add_argument("--corrupted", action="store_true",
                 help="the input is already corrupted: use it as the condition (no target, no metrics)")
  p.add_argument("--strength", type=float, default=None, help="corruption strength (task-specific default)")
  p.add_argument("--text", default=None, help="class name / caption to generate (task 'class')")
  p.add_argument("--data", default=None, help="reference images for task 'class' (spae.data.make_source spec)")
  p.add_argument("-o", "--output", required=True, help="output folder")
  p.add_argument("--layers", type=int, default=None, help="generate the top K layers (default all)")
  p.add_argument("--examples", type=int, default=GenerateConfig.examples)
  p.add_argument("--noise-start", type=float, default=GenerateConfig.noise_start)
  p.add_argument("--noise-end", type=float, default=GenerateConfig.noise_end)
  p.add_argument("--chunk", type=int, default=GenerateConfig.chunk, help="tokens per call for large layers")
  p.add_argument("--context-layers", type=int, default=None, help="coarser layers shown per prompt (default all)")
  p.add_argument("--token-mode", choices=("auto", "ids", "text"), default="auto")
  p.add_argument("--temperature", type=float, default=0.0)
  p.add_argument("--seed", type=int, default=0)


def run_generate(args: argparse.Namespace) -> int:
  """`spae generate`: runs one task and writes PNGs, tokens, prompts and metrics to --output."""
  from spae._images import load_image

  config = GenerateConfig(layers=args.layers, examples=args.examples, noise_start=args.noise_start,
                          noise_end=args.noise_end, chunk=args.chunk, context_layers=args.context_layers,
                          token_mode=args.token_mode, temperature=args.temperature, seed=args.seed)
  config.validate()
  if args.task in IMAGE_TASKS:
    if not args.image:
      raise SpaeInputError(f"--task {args.task} needs --image.")
    image = load_image(args.image)
  else:
    if not args.text or not args.data:
      raise SpaeInputError("--task class needs --text (what to generate) and --data (reference images).")
  tokenizer = _cli.load_tokenizer(args.tokenizer)
  lm = _cli.load_lm(args.lm, timeout=args.lm_timeout, attempts=args.lm_attempts)
  if lm is None:
    raise SpaeInputError("generation needs a language model; --lm none is only for `spae fewshot`.")
  if args.task in IMAGE_TASKS:
    m = run_image_task(lm, tokenizer, image, args.task, args.output, config=config, strength=args.strength,
                       corrupted=args.corrupted)
    for row in m["layers"]:
      print(f"layers 1..{row['layers']}: " + " | ".join(
          f"{name} PSNR {row[name]['psnr']:.2f} SSIM {row[name]['ssim']:.3f} tokens {row[name]['token_accuracy']:.0%}"
          for name in ("generation", "condition", "cleanest_example")))
  else:
    refs = reference_examples(_cli.load_source(args.data), config.examples, config.seed)
    m = run_text_task(lm, tokenizer, args.text, refs, args.output, config=config)
  print(f"{m['calls']} LM calls; outputs in {args.output}")
  return 0
