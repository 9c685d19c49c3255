"""`scenes`: synthetic scenes over the whole colour range, the training data meant to generalise.

Each scene has a main object plus 0-3 smaller distractors on a background. Colours come from the whole RGB range:
a colour is a name (`COLOURS`: 8 hues plus brown, black, white, gray) and a tone ('light' = pastel, '' =
saturated, 'dark'), sampled uniformly inside that name's HSV region, so near-white, near-black, pastel and
saturated colours all occur, for objects and backgrounds alike. Backgrounds are plain, striped, checked, speckled
(smooth value noise), or a linear or radial gradient between two colours; objects are solid, striped, checked,
dotted, speckled, or shaded by a linear or radial gradient. Every colour and shape name is a single word of
Gemma 3's vocabulary.

Every scene carries attributes (the main object's colour, tone, shape, size, position and region, the object
count, the background) and a caption ("a large light blue striped heart in the top left with two other shapes on
a white background"). Its `label` is "<colour> <shape>" of the main object.

Held out, for evaluation:
- split: train / validation / test scenes come from disjoint random streams (`scene_rng`);
- classes: `HELDOUT_CLASSES` (39 of the 156 colour/shape pairs, `(SHAPES.index(s) + COLOURS.index(c)) % 4 == 3`)
  are never the main object of a train-split scene; the validation and test splits draw from all classes. Every
  colour and every shape occurs in both lists, so the held-out classes are novel combinations.
The older `shapes` renderer (spae.data._shapes) is a third, different renderer for evaluation.

Rendering is numpy + Pillow at 4x supersampling then a box filter, a pure function of the numpy Generator.
"""

from __future__ import annotations

import colorsys
import math
from typing import Any, Sequence

import numpy as np

from spae._io import SpaeInputError

HUES: dict[str, tuple[float, float]] = {  # hue ranges in degrees (red wraps around 0)
    "red": (-8.0, 8.0), "orange": (22.0, 34.0), "yellow": (50.0, 60.0), "green": (95.0, 145.0),
    "cyan": (178.0, 192.0), "blue": (212.0, 238.0), "purple": (268.0, 290.0), "pink": (322.0, 342.0)}
COLOURS: tuple[str, ...] = (*HUES, "brown", "black", "white", "gray")
TONES: tuple[str, ...] = ("light", "", "dark")
# (saturation range, value range) per name and tone; a missing tone does not exist for that name.
_DEFAULT_TONES = {"light": ((0.18, 0.42), (0.9, 1.0)), "": ((0.7, 1.0), (0.75, 1.0)),
                  "dark": ((0.65, 1.0), (0.28, 0.5))}
_TONES: dict[str, dict[str, tuple[tuple[float, float], tuple[float, float]]]] = {
    **{h: _DEFAULT_TONES for h in HUES},
    "red": {**_DEFAULT_TONES, "light": ((0.35, 0.5), (0.95, 1.0))},  # paler than this is pink
    "orange": {k: v for k, v in _DEFAULT_TONES.items() if k != "dark"},  # dark orange is brown
    "yellow": {k: v for k, v in _DEFAULT_TONES.items() if k != "dark"},  # dark yellow is olive
    "pink": {"light": ((0.1, 0.25), (0.95, 1.0)), "": ((0.35, 0.65), (0.9, 1.0)), "dark": ((0.7, 1.0), (0.6, 0.8))},
    "brown": {"light": ((0.35, 0.55), (0.62, 0.78)), "": ((0.55, 0.85), (0.35, 0.55)),
              "dark": ((0.5, 0.85), (0.18, 0.3))},
    "black": {"": ((0.0, 1.0), (0.0, 0.1))},
    "white": {"": ((0.0, 0.06), (0.94, 1.0))},
    "gray": {"light": ((0.0, 0.07), (0.66, 0.84)), "": ((0.0, 0.07), (0.4, 0.62)), "dark": ((0.0, 0.07), (0.18, 0.36))},
}
_BROWN_HUE = (18.0, 35.0)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "hexagon", "diamond", "cross", "ring",
                           "moon", "oval", "rectangle", "arrow")
OBJECT_FILLS: tuple[str, ...] = ("solid", "striped", "checked", "dotted", "speckled", "shaded", "radial")
BACKGROUND_FILLS: tuple[str, ...] = ("plain", "striped", "checked", "speckled", "gradient", "radial")
SIZES: tuple[str, ...] = ("small", "medium", "large")

CLASSES: tuple[str, ...] = tuple(f"{c} {s}" for s in SHAPES for c in COLOURS)
HELDOUT_CLASSES: tuple[str, ...] = tuple(
    f"{c} {s}" for si, s in enumerate(SHAPES) for ci, c in enumerate(COLOURS) if (si + ci) % 4 == 3)
TRAIN_CLASSES: tuple[str, ...] = tuple(c for c in CLASSES if c not in HELDOUT_CLASSES)

MAX_OBJECTS = 4
_SS = 4  # supersampling factor
_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
_STREAM = 0x5CE7E5  # keeps these random streams apart from the `shapes` renderer's
_MIN_CONTRAST = 90.0  # RGB distance between an object's colour and the background colours


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The generator of scene `index` of `split` ('train', 'validation', 'test') for `seed`."""
  if split not in _SPLIT_IDS:
    raise SpaeInputError(f"scenes split must be one of {sorted(_SPLIT_IDS)}, got {split!r}.")
  return np.random.default_rng([_STREAM, int(seed), _SPLIT_IDS[split], int(index)])


def split_classes(split: str) -> tuple[str, ...]:
  """The classes a split's main objects are drawn from: train never shows `HELDOUT_CLASSES`."""
  return TRAIN_CLASSES if split == "train" else CLASSES


def sample_colour(rng: np.random.Generator, name: str | None = None) -> dict[str, Any]:
  """A random colour {'name', 'tone', 'rgb': [r, g, b] floats in 0..255}; of `name` if given."""
  name = name or COLOURS[int(rng.integers(len(COLOURS)))]
  tones = _TONES[name]
  tone = tuple(tones)[int(rng.integers(len(tones)))]
  (s0, s1), (v0, v1) = tones[tone]
  h0, h1 = HUES.get(name, _BROWN_HUE if name == "brown" else (0.0, 360.0))
  h, s, v = float(rng.uniform(h0, h1)) % 360.0, float(rng.uniform(s0, s1)), float(rng.uniform(v0, v1))
  return {"name": name, "tone": tone, "rgb": [255.0 * c for c in colorsys.hsv_to_rgb(h / 360.0, s, v)]}


def _distance(a: dict[str, Any], b: dict[str, Any]) -> float:
  return float(np.linalg.norm(np.subtract(a["rgb"], b["rgb"])))


def _contrasting(rng: np.random.Generator, against: Sequence[dict[str, Any]], name: str | None = None):
  """A colour at least _MIN_CONTRAST away from every colour in `against` (the best of 30 tries otherwise)."""
  best, best_d = None, -1.0
  for _ in range(30):
    c = sample_colour(rng, name)
    d = min((_distance(c, a) for a in against), default=math.inf)
    if d >= _MIN_CONTRAST:
      return c
    if d > best_d:
      best, best_d = c, d
  return best


def _secondary(c: dict[str, Any]) -> list[float]:
  """A pattern colour of the same name: darker for light colours, lighter for dark ones."""
  rgb = np.asarray(c["rgb"])
  luma = float(rgb @ np.asarray([0.299, 0.587, 0.114]))
  out = rgb * 0.6 if luma > 110 else rgb + (255.0 - rgb) * 0.45
  return out.tolist()


def sample_scene(rng: np.random.Generator, classes: Sequence[str] = CLASSES,
                 max_objects: int = MAX_OBJECTS) -> dict[str, Any]:
  """The attributes of a random scene whose main object's class is drawn uniformly from `classes`.

  Returns {'label', 'colour', 'tone', 'shape', 'size', 'x', 'y', 'radius', 'region', 'count', 'background':
  {'fill', 'colour', 'colour2', ...}, 'objects': [main, *distractors]}; x, y (centre) and radius are fractions of
  the image side; objects carry their own {'shape', 'colour' (a sample_colour dict), 'fill', ...}.
  """
  colour, shape = classes[int(rng.integers(len(classes)))].split(" ")
  main = _sample_object(rng, shape, sample_colour(rng, colour), float(rng.uniform(0.1, 0.32)))
  bg_fill = BACKGROUND_FILLS[int(rng.integers(len(BACKGROUND_FILLS)))]
  bg1 = _contrasting(rng, [main["colour"]])
  two = bg_fill in ("gradient", "radial")
  bg2 = _contrasting(rng, [main["colour"]]) if two else {"name": bg1["name"], "tone": bg1["tone"],
                                                         "rgb": _secondary(bg1)}
  background = {"fill": bg_fill, "colour": bg1, "colour2": bg2, **_fill_params(rng, bg_fill)}
  # Distractors are smaller than the main object and never overlap it (they may overlap each other).
  objects = [main]
  n = int(rng.integers(1, max_objects + 1))
  for _ in range(n - 1):
    r = float(rng.uniform(0.05, max(0.06, min(0.2, 0.8 * main["radius"]))))
    o = _sample_object(rng, SHAPES[int(rng.integers(len(SHAPES)))], _contrasting(rng, [bg1, bg2]), r)
    for _ in range(40):
      if math.hypot(o["x"] - main["x"], o["y"] - main["y"]) > 1.3 * (o["radius"] + main["radius"]):
        objects.append(o)
        break
      o["x"], o["y"] = _centre(rng, r)
  return {"label": f"{colour} {shape}", "colour": colour, "tone": main["colour"]["tone"], "shape": shape,
          "size": main["size"], "x": main["x"], "y": main["y"], "radius": main["radius"],
          "region": _region(main["x"], main["y"]), "count": len(objects), "background": background,
          "objects": objects}


def _centre(rng: np.random.Generator, r: float) -> tuple[float, float]:
  ext = 1.2 * r  # the pointiest shapes reach ~1.25 r; let them touch the border, not leave it
  return tuple(float(v) for v in rng.uniform(ext, 1.0 - ext, size=2))


def _sample_object(rng: np.random.Generator, shape: str, colour: dict[str, Any], r: float) -> dict[str, Any]:
  x, y = _centre(rng, r)
  fill = OBJECT_FILLS[int(rng.integers(len(OBJECT_FILLS)))]
  angle = {"square": 20.0, "triangle": 25.0, "heart": 20.0, "diamond": 0.0, "cross": 20.0, "rectangle": 15.0}
  a = float(rng.uniform(-1.0, 1.0)) * angle.get(shape, 180.0)
  if shape == "rectangle" and rng.random() < 0.5:
    a += 90.0
  size = SIZES[0] if r < 0.14 else SIZES[1] if r < 0.22 else SIZES[2]
  return {"shape": shape, "colour": colour, "colour2": _secondary(colour), "fill": fill, "size": size, "x": x,
          "y": y, "radius": r, "angle": a, **_fill_params(rng, fill)}


def _fill_params(rng: np.random.Generator, fill: str) -> dict[str, Any]:
  """Pattern geometry, in output pixels at 64 px (scaled with the image): period, direction, centre, noise seed."""
  return {"period": float(rng.uniform(3.0, 10.0)), "direction": float(rng.uniform(0.0, 360.0)),
          "focus": [float(v) for v in rng.uniform(0.2, 0.8, size=2)], "noise_cells": int(rng.integers(3, 12)),
          "noise_seed": int(rng.integers(2**31))} if fill not in ("solid", "plain") else {}


def _region(x: float, y: float) -> str:
  row = ("top", "", "bottom")[min(int(y * 3), 2)]
  col = ("left", "", "right")[min(int(x * 3), 2)]
  return f"{row} {col}".strip() or "center"


_COUNT_WORDS = ("no", "one", "two", "three", "four", "five")


def _colour_words(c: dict[str, Any]) -> str:
  return f"{c['tone']} {c['name']}".strip()


def caption_for(attrs: dict[str, Any]) -> str:
  """The caption of a scene from its attributes (see `sample_scene`)."""
  main = attrs["objects"][0]
  fill = "" if main["fill"] == "solid" else {"shaded": "shaded ", "radial": "glowing "}.get(main["fill"],
                                                                                          f"{main['fill']} ")
  where = "in the center" if attrs["region"] == "center" else (
      f"at the {attrs['region']}" if " " not in attrs["region"] else f"in the {attrs['region']}")
  text = f"{main['size']} {_colour_words(main['colour'])} {fill}{attrs['shape']} {where}"
  text = f"{'an' if text[0] in 'aeiou' else 'a'} {text}"
  others = attrs["count"] - 1
  if others:
    text += f" with {_COUNT_WORDS[others]} other shape{'s' if others > 1 else ''}"
  bg = attrs["background"]
  c1, c2 = _colour_words(bg["colour"]), _colour_words(bg["colour2"])
  if bg["fill"] == "gradient":
    return f"{text} on a {c1} to {c2} gradient background"
  if bg["fill"] == "radial":
    return f"{text} on a radial {c1} to {c2} gradient background"
  pattern = "" if bg["fill"] == "plain" else f" {bg['fill']}"
  return f"{text} on {'an' if c1[0] in 'aeiou' else 'a'} {c1}{pattern} background"


# ------------------------------------------------------------------------------------------------- drawing
def render(attrs: dict[str, Any], size: int = 64) -> np.ndarray:
  """uint8 [size, size, 3]: the scene described by `attrs` (a pure function of them)."""
  if size < 16:
    raise SpaeInputError(f"scenes image size must be >= 16 pixels, got {size}.")
  bg = attrs["background"]
  smooth = bg["fill"] in _SMOOTH
  # Smooth fills are evaluated at output pixel centres (their box filter is ~ their centre value); sharp ones are
  # supersampled and box-filtered.
  grid = _grid(0, size, 0, size, size, 1 if smooth else _SS)
  canvas = _texture(bg["fill"], bg, bg["colour"]["rgb"], bg["colour2"]["rgb"], *grid)
  canvas = canvas if smooth else _box_down(canvas)
  for o in reversed(attrs["objects"]):  # distractors first: the main object is never covered
    # Supersample only the object's bounding box (outlines reach at most 1.25 r from the centre).
    reach = 1.3 * o["radius"] * size
    x0, y0 = max(0, int(o["x"] * size - reach)), max(0, int(o["y"] * size - reach))
    x1, y1 = min(size, math.ceil(o["x"] * size + reach)), min(size, math.ceil(o["y"] * size + reach))
    mask = _shape_mask(o, size * _SS, (x0 * _SS, y0 * _SS), ((x1 - x0) * _SS, (y1 - y0) * _SS))[..., None]
    tex = _texture(o["fill"], o, o["colour"]["rgb"], o["colour2"], *_grid(x0, x1, y0, y1, size, _SS), o)
    hi = np.repeat(np.repeat(canvas[y0:y1, x0:x1], _SS, axis=0), _SS, axis=1)
    canvas[y0:y1, x0:x1] = _box_down(hi + (tex - hi) * mask)
  return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


_SMOOTH = ("plain", "gradient", "radial", "speckled")


def _grid(x0: int, x1: int, y0: int, y1: int, size: int, ss: int) -> tuple[np.ndarray, np.ndarray]:
  """(xx, yy) float32 [h, w]: sample positions (fractions of the side) of output pixels x0:x1, y0:y1, ss² each."""
  xs = (np.arange(x0 * ss, x1 * ss, dtype=np.float32) + 0.5) / np.float32(size * ss)
  ys = (np.arange(y0 * ss, y1 * ss, dtype=np.float32) + 0.5) / np.float32(size * ss)
  return np.broadcast_to(xs[None, :], (ys.size, xs.size)), np.broadcast_to(ys[:, None], (ys.size, xs.size))


def _box_down(hi: np.ndarray) -> np.ndarray:
  """[h*SS, w*SS, C] -> [h, w, C] mean over SS x SS blocks; strided sums beat reshape().mean()."""
  rows = sum(hi[i::_SS] for i in range(_SS))
  return sum(rows[:, i::_SS] for i in range(_SS)) * np.float32(1.0 / (_SS * _SS))


def _texture(fill: str, p: dict[str, Any], rgb1: Sequence[float], rgb2: Sequence[float], xx: np.ndarray,
             yy: np.ndarray, obj: dict[str, Any] | None = None) -> np.ndarray:
  """float32 [h, w, 3] of a fill at pixel positions (xx, yy) (fractions of the image side)."""
  c1, c2 = np.asarray(rgb1, np.float32), np.asarray(rgb2, np.float32)
  if fill in ("solid", "plain"):
    return np.broadcast_to(c1, (*xx.shape, 3)).copy()
  period = p["period"] / 64.0  # a fraction of the side: the same look at any image size
  th = math.radians(p["direction"])
  if obj is not None:  # objects' gradients and noise are laid over the object, the background's over the image
    x0, y0, span = obj["x"] - obj["radius"] * 1.25, obj["y"] - obj["radius"] * 1.25, obj["radius"] * 2.5
  else:
    x0, y0, span = 0.0, 0.0, 1.0
  u, v = (xx - x0) / span, (yy - y0) / span  # 0..1 over the region
  if fill == "striped":
    t = ((xx * math.cos(th) + yy * math.sin(th)) / period) % 1.0 < 0.5
  elif fill == "checked":
    t = (np.floor(xx / period) + np.floor(yy / period)) % 2 == 1
  elif fill == "dotted":
    cx, cy = (xx / period) % 1.0 - 0.5, (yy / period) % 1.0 - 0.5
    t = cx * cx + cy * cy <= 0.3 ** 2
  elif fill in ("shaded", "gradient"):
    t = np.clip((u - 0.5) * math.cos(th) + (v - 0.5) * math.sin(th) + 0.5, 0.0, 1.0)
  elif fill == "radial":
    fx, fy = p["focus"]
    t = np.clip(np.hypot(u - fx, v - fy) / 0.85, 0.0, 1.0)
  elif fill == "speckled":
    t = _value_noise(p["noise_seed"], p["noise_cells"], u, v)
  else:  # pragma: no cover - the fill lists are closed
    raise AssertionError(fill)
  t = t.astype(np.float32)[..., None]
  return c1 + (c2 - c1) * t


def _value_noise(seed: int, cells: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Smooth noise in [0, 1]: a cells×cells random grid, bilinearly interpolated (smoothstep) at (u, v)."""
  g = np.random.default_rng(seed).random((cells + 2, cells + 2)).astype(np.float32)
  gx, gy = np.clip(u, 0.0, 1.0) * cells, np.clip(v, 0.0, 1.0) * cells
  ix, iy = np.minimum(gx.astype(np.int32), cells), np.minimum(gy.astype(np.int32), cells)
  fx, fy = gx - ix, gy - iy
  fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
  top = g[iy, ix] + (g[iy, ix + 1] - g[iy, ix]) * fx
  bottom = g[iy + 1, ix] + (g[iy + 1, ix + 1] - g[iy + 1, ix]) * fx
  return top + (bottom - top) * fy


def _polygon(points: Sequence[tuple[float, float]], angle: float) -> list[tuple[float, float]]:
  c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
  return [(x * c - y * s, x * s + y * c) for x, y in points]


def _ngon(k: int, r: float, phase: float = -90.0) -> list[tuple[float, float]]:
  return [(r * math.cos(math.radians(phase + 360.0 * i / k)), r * math.sin(math.radians(phase + 360.0 * i / k)))
          for i in range(k)]


def _heart() -> list[tuple[float, float]]:
  t = np.linspace(0.0, 2 * np.pi, 72, endpoint=False)
  x = 16 * np.sin(t) ** 3
  y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
  y = y - (y.max() + y.min()) / 2
  scale = 1.2 / max(np.abs(x).max(), np.abs(y).max())
  return list(zip((x * scale).tolist(), (y * scale).tolist()))


_W, _H = 0.38, 1.15
_UNIT: dict[str, list[tuple[float, float]]] = {  # outlines in units of the radius, before rotation
    "circle": _ngon(64, 1.0),
    "square": _ngon(4, 1.2, phase=45.0),
    "triangle": [(x, y + 0.2) for x, y in _ngon(3, 1.25)],
    "star": [p for pair in zip(_ngon(5, 1.25), _ngon(5, 0.5, phase=-54.0)) for p in pair],
    "heart": _heart(),
    "hexagon": _ngon(6, 1.1, phase=0.0),
    "diamond": [(0.0, -1.25), (0.8, 0.0), (0.0, 1.25), (-0.8, 0.0)],
    "cross": [(-_W, -_H), (_W, -_H), (_W, -_W), (_H, -_W), (_H, _W), (_W, _W), (_W, _H), (-_W, _H), (-_W, _W),
              (-_H, _W), (-_H, -_W), (-_W, -_W)],
    "ring": _ngon(64, 1.0),
    "moon": _ngon(64, 1.0),
    "oval": [(1.2 * math.cos(a), 0.65 * math.sin(a)) for a in np.linspace(0, 2 * np.pi, 64, endpoint=False)],
    "rectangle": [(-1.2, -0.65), (1.2, -0.65), (1.2, 0.65), (-1.2, 0.65)],
    "arrow": [(-1.15, -0.25), (0.2, -0.25), (0.2, -0.7), (1.15, 0.0), (0.2, 0.7), (0.2, 0.25), (-1.15, 0.25)],
}
# Shapes with a hole: (outline scale, offset along the rotation direction) of the part cut out again.
_HOLES = {"ring": (0.55, 0.0), "moon": (0.85, 0.55)}


def _shape_mask(o: dict[str, Any], big: int, origin: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
  """float32 [h, w] coverage of object `o` (1 inside) in the window at `origin` of a big×big supersampled image."""
  from PIL import Image, ImageDraw

  im = Image.new("L", shape, 0)
  draw = ImageDraw.Draw(im)
  cx, cy, r = o["x"] * big - origin[0], o["y"] * big - origin[1], o["radius"] * big
  pts = _polygon(_UNIT[o["shape"]], o["angle"])
  draw.polygon([(cx + r * x, cy + r * y) for x, y in pts], fill=255)
  if o["shape"] in _HOLES:
    scale, shift = _HOLES[o["shape"]]
    a = math.radians(o["angle"])
    hx, hy = cx + shift * r * math.cos(a), cy + shift * r * math.sin(a)
    draw.polygon([(hx + scale * r * x, hy + scale * r * y) for x, y in _UNIT["circle"]], fill=0)
  return np.asarray(im, np.float32) / np.float32(255.0)


def scene_example(seed: int, split: str, index: int, size: int = 64) -> tuple[np.ndarray, str, dict[str, Any]]:
  """(uint8 [size, size, 3], caption, attributes) of scene `index` of `split` for `seed`."""
  attrs = sample_scene(scene_rng(seed, split, index), split_classes(split))
  return render(attrs, size), caption_for(attrs), attrs
