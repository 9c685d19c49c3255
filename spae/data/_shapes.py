"""`shapes`: a synthetic captioned dataset of procedural scenes, the offline stand-in for ImageNet.

Every scene has 1-3 non-overlapping objects. Each object has a shape, a named colour, a size (small/large), a
texture (solid/striped/dotted/checkered) and a position; the scene has a background colour. The caption describes
them ("a small red circle above a large blue striped square on a gray background"). The single `label` of a
scene is its first object's "<colour> <shape>" (80 classes), which is what few-shot episodes classify.

Held-out classes: `HELDOUT_CLASSES` (20 of the 80) are the colour/shape pairs with
`(SHAPES.index(shape) + COLOURS.index(colour)) % 4 == 3`; `TRAIN_CLASSES` are the other 60. Every shape and every
colour occurs in both lists, so the held-out classes are novel *combinations* of familiar attributes. Train a
tokenizer on `make_source(..., classes=TRAIN_CLASSES)` and run few-shot on `classes=HELDOUT_CLASSES`.

The tfds builder that writes them as array_record is `spae.data._shapes_tfds`.

Rendering is numpy + Pillow at 4x supersampling then a box filter (antialiased), and is a pure function of the
numpy Generator passed in, so the same seed gives the same bytes.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from spae._io import SpaeInputError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon")
# Named colours; values chosen so every pair is distinguishable at 32 px.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 38, 38),
    "green": (40, 165, 60),
    "blue": (40, 80, 225),
    "yellow": (245, 215, 35),
    "purple": (135, 55, 185),
    "orange": (245, 135, 25),
    "white": (248, 248, 248),
    "black": (18, 18, 18),
    "pink": (250, 135, 195),
    "brown": (125, 75, 35),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SIZES: tuple[str, ...] = ("small", "large")
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted", "checkered")
# Mid-tone backgrounds so that both white and black objects stay visible.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (120, 120, 120),
    "sand": (180, 155, 112),
    "teal": (45, 112, 118),
    "slate": (88, 96, 128),
    "olive": (112, 118, 60),
}
BACKGROUND_NAMES: tuple[str, ...] = tuple(BACKGROUNDS)

CLASSES: tuple[str, ...] = tuple(f"{c} {s}" for s in SHAPES for c in COLOUR_NAMES)
HELDOUT_CLASSES: tuple[str, ...] = tuple(
    f"{c} {s}" for si, s in enumerate(SHAPES) for ci, c in enumerate(COLOUR_NAMES) if (si + ci) % 4 == 3)
TRAIN_CLASSES: tuple[str, ...] = tuple(c for c in CLASSES if c not in HELDOUT_CLASSES)

MAX_OBJECTS = 3
_SS = 4  # supersampling factor for antialiasing
# Radius ranges as fractions of the image side.
_RADIUS = {"small": (0.085, 0.115), "large": (0.16, 0.205)}
_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


def class_name(colour: str, shape: str) -> str:
  """The `label` class of a scene whose first object has this colour and shape."""
  return f"{colour} {shape}"


def render_scene(rng: np.random.Generator, size: int = 64,
                 max_objects: int = MAX_OBJECTS) -> tuple[np.ndarray, str, dict[str, Any]]:
  """Renders one random scene.

  Args:
    rng: the only source of randomness; the same generator state gives the same image, caption and attributes.
    size: image side in pixels (>= 16; 32, 64, 128 are the intended sizes).
    max_objects: scenes have 1..max_objects objects (at most 3).

  Returns:
    image: uint8 [size, size, 3].
    caption: e.g. "a small red circle above a large blue striped square on a gray background".
    attributes: {"label": "red circle", "background": "gray", "objects": [{"shape", "colour", "size", "texture",
      "x", "y", "radius"}, ...]} with x, y the object centre and radius its nominal radius, as fractions of size.
  """
  if size < 16:
    raise SpaeInputError(f"shapes image size must be >= 16 pixels, got {size}.")
  attrs = sample_attributes(rng, max_objects)
  image = _draw(rng, size, attrs["background"], attrs["objects"])
  return image, caption_for(attrs), attrs


def sample_attributes(rng: np.random.Generator, max_objects: int = MAX_OBJECTS) -> dict[str, Any]:
  """The attributes `render_scene` draws from `rng` before it renders (the same draws, so a generator in the same
  state gives the same attributes without the cost of drawing the image)."""
  if not 1 <= max_objects <= MAX_OBJECTS:
    raise SpaeInputError(f"max_objects must be in 1..{MAX_OBJECTS}, got {max_objects}.")
  n = int(rng.integers(1, max_objects + 1))
  objects = _place_objects(rng, n)
  background = BACKGROUND_NAMES[int(rng.integers(len(BACKGROUND_NAMES)))]
  return {"label": class_name(objects[0]["colour"], objects[0]["shape"]), "background": background,
          "objects": objects}


def _place_objects(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
  objects: list[dict[str, Any]] = []
  for _ in range(n):
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
    texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
    size_name = SIZES[int(rng.integers(len(SIZES)))]
    angle = float(rng.uniform(-20.0, 20.0))
    # Rejection-sample a centre that does not overlap earlier objects; shrink to small, then give up on the object
    # (never on the first one, which always fits), so every scene is valid and generation always terminates.
    for attempt in range(80):
      if attempt == 40:
        size_name = "small"
      r = float(rng.uniform(*_RADIUS[size_name]))
      ext = 1.25 * r  # the pointiest shapes reach ~1.2 r
      x, y = (float(v) for v in rng.uniform(ext + 0.02, 1.0 - ext - 0.02, size=2))
      if all(math.hypot(x - o["x"], y - o["y"]) > 1.25 * (r + o["radius"]) + 0.02 for o in objects):
        objects.append({"shape": shape, "colour": colour, "size": size_name, "texture": texture,
                        "x": x, "y": y, "radius": r, "angle": angle})
        break
  return objects


def caption_for(attrs: dict[str, Any]) -> str:
  """The caption of a scene from its attributes (see `render_scene`)."""
  objs = attrs["objects"]
  text = _describe(objs[0])
  if len(objs) == 1:
    text += f" {_region(objs[0])}"
  else:
    text += f" {_relation(objs[0], objs[1])} {_describe(objs[1])}"
    if len(objs) == 3:
      text += f" and {_describe(objs[2])} {_region(objs[2])}"
  return f"{text} on {_a(attrs['background'])} background"


def _describe(o: dict[str, Any]) -> str:
  texture = "" if o["texture"] == "solid" else f" {o['texture']}"
  return f"a {o['size']} {o['colour']}{texture} {o['shape']}"


def _a(word: str) -> str:
  return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _relation(a: dict[str, Any], b: dict[str, Any]) -> str:
  dx, dy = b["x"] - a["x"], b["y"] - a["y"]  # image coordinates: y grows downwards
  if abs(dy) >= abs(dx):
    return "above" if dy > 0 else "below"
  return "to the left of" if dx > 0 else "to the right of"


def _region(o: dict[str, Any]) -> str:
  row = ("top", "", "bottom")[min(int(o["y"] * 3), 2)]
  col = ("left", "", "right")[min(int(o["x"] * 3), 2)]
  if row and col:
    return f"in the {row} {col}"
  if row:
    return f"at the {row}"
  return f"on the {col}" if col else "in the center"


def _draw(rng: np.random.Generator, size: int, background: str, objects: list[dict[str, Any]]) -> np.ndarray:
  from PIL import Image, ImageDraw

  big = size * _SS
  # A gentle vertical brightness gradient so that backgrounds are not perfectly flat. It is linear, so its box
  # filter is just its value at each output row's centre: the background is built at output resolution.
  ramp = np.linspace(-1.0, 1.0, big, dtype=np.float32).reshape(size, _SS).mean(axis=1)
  ramp = ramp[:, None, None] * np.float32(rng.uniform(-18.0, 18.0))
  canvas = np.broadcast_to(np.asarray(BACKGROUNDS[background], np.float32) + ramp, (size, size, 3)).copy()
  period = max(3, round(size * 0.07)) * _SS  # texture period: ~4.5 px at 64 px, never below 3 output px
  for o in objects:
    # Supersample only the object's bounding box (shapes reach at most ~1.25 r from the centre), snapped to the
    # output pixel grid: upsample what is there, composite the object at 4x, box-filter back down.
    reach = 1.3 * o["radius"] * size
    x0, y0 = max(0, int(o["x"] * size - reach)), max(0, int(o["y"] * size - reach))
    x1, y1 = min(size, math.ceil(o["x"] * size + reach)), min(size, math.ceil(o["y"] * size + reach))
    mask_im = Image.new("L", ((x1 - x0) * _SS, (y1 - y0) * _SS), 0)
    _draw_shape(ImageDraw.Draw(mask_im), o, big, (x0 * _SS, y0 * _SS))
    mask = np.asarray(mask_im, np.float32)[..., None] / 255.0
    fill = np.asarray(COLOURS[o["colour"]], np.float32)
    yy, xx = np.mgrid[y0 * _SS:y1 * _SS, x0 * _SS:x1 * _SS]
    if o["texture"] == "striped":
      pattern = ((xx + yy) // (period // 2)) % 2 == 1
    elif o["texture"] == "dotted":
      cy, cx = yy % period - period / 2, xx % period - period / 2
      pattern = cy * cy + cx * cx <= (period * 0.28) ** 2
    elif o["texture"] == "checkered":
      pattern = ((xx // period) + (yy // period)) % 2 == 1
    else:
      pattern = None
    tex = fill if pattern is None else np.where(pattern[..., None], _secondary(fill), fill)
    hi = np.repeat(np.repeat(canvas[y0:y1, x0:x1], _SS, axis=0), _SS, axis=1)
    hi += (tex - hi) * mask
    canvas[y0:y1, x0:x1] = _box_down(hi)
  return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def _box_down(hi: np.ndarray) -> np.ndarray:
  """[h*SS, w*SS, C] -> [h, w, C] mean over SS x SS blocks (antialiasing); strided sums beat reshape().mean()."""
  rows = sum(hi[i::_SS] for i in range(_SS))
  return sum(rows[:, i::_SS] for i in range(_SS)) * np.float32(1.0 / (_SS * _SS))


def _secondary(fill: np.ndarray) -> np.ndarray:
  """The pattern colour of a textured object: darker for light colours, lighter for dark ones."""
  luma = float(fill @ np.asarray([0.299, 0.587, 0.114], np.float32))
  return fill * 0.45 if luma > 90 else fill + (255.0 - fill) * 0.55


def _regular(cx: float, cy: float, r: float, k: int, angle: float, phase: float = -90.0) -> list[tuple[float, float]]:
  return [(cx + r * math.cos(math.radians(phase + angle + 360.0 * i / k)),
           cy + r * math.sin(math.radians(phase + angle + 360.0 * i / k))) for i in range(k)]


def _rotate(points: list[tuple[float, float]], cx: float, cy: float, angle: float) -> list[tuple[float, float]]:
  c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
  return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in points]


def _draw_shape(draw: Any, o: dict[str, Any], big: int, origin: tuple[int, int]) -> None:
  cx, cy = o["x"] * big - origin[0], o["y"] * big - origin[1]
  r, a = o["radius"] * big, o["angle"]
  shape = o["shape"]
  if shape == "circle":
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
  elif shape == "ring":
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    q = 0.55 * r
    draw.ellipse([cx - q, cy - q, cx + q, cy + q], fill=0)
  elif shape == "square":
    draw.polygon(_regular(cx, cy, 1.2 * r, 4, a, phase=45.0), fill=255)
  elif shape == "triangle":
    draw.polygon(_regular(cx + 0, cy + 0.2 * r, 1.25 * r, 3, a), fill=255)
  elif shape == "hexagon":
    draw.polygon(_regular(cx, cy, 1.1 * r, 6, a, phase=0.0), fill=255)
  elif shape == "diamond":
    # Not rotated, and taller than wide, so it never looks like a (+-20 degree) square.
    draw.polygon([(cx, cy - 1.25 * r), (cx + 0.8 * r, cy), (cx, cy + 1.25 * r), (cx - 0.8 * r, cy)], fill=255)
  elif shape == "star":
    outer = _regular(cx, cy, 1.25 * r, 5, a)
    inner = _regular(cx, cy, 0.5 * r, 5, a, phase=-90.0 + 36.0)
    draw.polygon([p for pair in zip(outer, inner) for p in pair], fill=255)
  elif shape == "cross":
    w, h = 0.38 * r, 1.15 * r
    pts = [(-w, -h), (w, -h), (w, -w), (h, -w), (h, w), (w, w), (w, h), (-w, h), (-w, w), (-h, w), (-h, -w),
           (-w, -w)]
    draw.polygon(_rotate([(cx + x, cy + y) for x, y in pts], cx, cy, a), fill=255)
  else:  # pragma: no cover - SHAPES is closed
    raise AssertionError(shape)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The generator that renders example `index` of `split` in a dataset built with `seed`."""
  return np.random.default_rng([int(seed), _SPLIT_IDS[split], int(index)])


def encode_png(image: np.ndarray) -> bytes:
  """uint8 [H, W, 3] -> PNG bytes (deterministic: fixed compression settings, no metadata)."""
  from PIL import Image

  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG", compress_level=6)
  return buf.getvalue()
