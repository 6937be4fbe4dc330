"""Synthetic scenes in the demo detector's domain: coloured shapes on cluttered backgrounds.

Used three ways: to build the demo model's training and evaluation sets
(``scripts/build_demo_model.py``), as the ``synthetic`` frame source (moving objects with
known ground truth), and by tests and benchmarks. Drawing writes into a caller's buffer so a
live source allocates nothing per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross")


@dataclass(slots=True)
class GroundTruth:
    class_id: int
    label: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    occluded: bool = False  # a shape drawn later covers a good part of this one


@dataclass(slots=True)
class _Shape:
    class_id: int
    cx: float
    cy: float
    size: float  # side of the bounding square in pixels
    angle: float
    color: tuple[int, int, int]
    vx: float = 0.0
    vy: float = 0.0
    spin: float = 0.0


def make_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A BGR background: a colour gradient, low-frequency noise and distractor strokes."""
    c0 = rng.integers(0, 256, 3).astype(np.float32)
    c1 = rng.integers(0, 256, 3).astype(np.float32)
    t = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    if rng.random() < 0.5:
        t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    img = c0 * (1 - t) + c1 * t
    img = np.broadcast_to(img, (height, width, 3)).copy()
    small = rng.normal(0, 25, (max(2, height // 32), max(2, width // 32), 3)).astype(np.float32)
    img += cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 6))):  # thin lines: clutter that is not an object
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.line(out, p1, p2, tuple(int(c) for c in rng.integers(0, 256, 3)), int(rng.integers(1, 3)), cv2.LINE_AA)
    return out


def _contrasting_color(rng: np.random.Generator, bg: np.ndarray) -> tuple[int, int, int]:
    for _ in range(8):
        color = rng.integers(0, 256, 3)
        if np.abs(color.astype(np.int32) - bg.astype(np.int32)).sum() > 180:
            break
    return (int(color[0]), int(color[1]), int(color[2]))


def _polygon(shape: _Shape) -> np.ndarray | None:
    r = shape.size / 2
    if shape.class_id == 2:  # triangle
        angles = [shape.angle + k * 2 * math.pi / 3 - math.pi / 2 for k in range(3)]
        pts = [(shape.cx + r * math.cos(a), shape.cy + r * math.sin(a)) for a in angles]
    elif shape.class_id == 1:  # square, rotated
        angles = [shape.angle + math.pi / 4 + k * math.pi / 2 for k in range(4)]
        pts = [(shape.cx + r * math.cos(a), shape.cy + r * math.sin(a)) for a in angles]
    elif shape.class_id == 3:  # cross: 12-gon, arms a third of the size wide
        w = r / 3
        base = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
        ca, sa = math.cos(shape.angle), math.sin(shape.angle)
        pts = [(shape.cx + x * ca - y * sa, shape.cy + x * sa + y * ca) for x, y in base]
    else:
        return None
    return np.array(pts, dtype=np.float32)


def _draw(img: np.ndarray, shape: _Shape) -> tuple[float, float, float, float]:
    """Draw ``shape`` into ``img`` in place; return its tight box."""
    h, w = img.shape[:2]
    poly = _polygon(shape)
    if poly is None:
        r = shape.size / 2
        cv2.circle(img, (round(shape.cx * 16), round(shape.cy * 16)), round(r * 16), shape.color, -1, cv2.LINE_AA, shift=4)
        x1, y1, x2, y2 = shape.cx - r, shape.cy - r, shape.cx + r, shape.cy + r
    else:
        cv2.fillPoly(img, [np.round(poly * 16).astype(np.int32)], shape.color, cv2.LINE_AA, shift=4)
        x1, y1 = float(poly[:, 0].min()), float(poly[:, 1].min())
        x2, y2 = float(poly[:, 0].max()), float(poly[:, 1].max())
    return (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2))


def _random_shape(rng: np.random.Generator, width: int, height: int, min_frac: float, max_frac: float) -> _Shape:
    short = min(width, height)
    size = float(rng.uniform(min_frac, max_frac) * short)
    margin = size / 2 + 1
    return _Shape(
        class_id=int(rng.integers(0, len(CLASSES))),
        cx=float(rng.uniform(margin, width - margin)),
        cy=float(rng.uniform(margin, height - margin)),
        size=size,
        angle=float(rng.uniform(0, 2 * math.pi)),
        color=(0, 0, 0),
    )


def _place(rng: np.random.Generator, width: int, height: int, count: int, min_frac: float, max_frac: float) -> list[_Shape]:
    """Up to ``count`` shapes whose bounding squares barely overlap (no shape hides another)."""
    shapes: list[_Shape] = []
    for _ in range(count * 10):
        if len(shapes) == count:
            break
        cand = _random_shape(rng, width, height, min_frac, max_frac)
        if all(_overlap_of_smaller(cand, s) < 0.15 for s in shapes):
            shapes.append(cand)
    return shapes


def _overlap_of_smaller(a: _Shape, b: _Shape) -> float:
    ra, rb = a.size / 2, b.size / 2
    ix = max(0.0, min(a.cx + ra, b.cx + rb) - max(a.cx - ra, b.cx - rb))
    iy = max(0.0, min(a.cy + ra, b.cy + rb) - max(a.cy - ra, b.cy - rb))
    inter = ix * iy
    return inter / min(a.size, b.size) ** 2


def random_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    max_objects: int = 5,
    min_frac: float = 0.08,
    max_frac: float = 0.4,
) -> tuple[np.ndarray, list[GroundTruth]]:
    """One independent scene (for data sets): a new background and 1..max_objects shapes."""
    img = make_background(rng, width, height)
    truths = []
    for shape in _place(rng, width, height, int(rng.integers(1, max_objects + 1)), min_frac, max_frac):
        patch = img[int(shape.cy), int(shape.cx)]
        shape.color = _contrasting_color(rng, patch)
        box = _draw(img, shape)
        truths.append(GroundTruth(shape.class_id, CLASSES[shape.class_id], box))
    return img, truths


class MovingScene:
    """A fixed background with shapes that drift, bounce and spin, frame after frame.

    ``render(out)`` draws the next frame into ``out`` (H x W x 3 uint8, BGR) without
    allocating a frame-sized array, and returns the frame's ground truth.
    """

    def __init__(self, width: int, height: int, seed: int = 0, objects: int = 4, speed: float = 3.0) -> None:
        self.width, self.height = width, height
        rng = np.random.default_rng(seed)
        self._background = make_background(rng, width, height)
        self._shapes = _place(rng, width, height, objects, 0.1, 0.35)
        for shape in self._shapes:
            shape.color = _contrasting_color(rng, self._background[int(shape.cy), int(shape.cx)])
            heading = rng.uniform(0, 2 * math.pi)
            shape.vx, shape.vy = speed * math.cos(heading), speed * math.sin(heading)
            shape.spin = float(rng.uniform(-0.05, 0.05))

    def render(self, out: np.ndarray) -> list[GroundTruth]:
        np.copyto(out, self._background)
        truths = []
        for i, shape in enumerate(self._shapes):
            hidden = any(
                _overlap_of_smaller(shape, later) > 0.25 and later.size >= shape.size * 0.5 for later in self._shapes[i + 1 :]
            )
            truths.append(GroundTruth(shape.class_id, CLASSES[shape.class_id], _draw(out, shape), hidden))
        for shape in self._shapes:
            self._advance(shape)
        return truths

    def _advance(self, shape: _Shape) -> None:
        r = shape.size / 2
        shape.cx += shape.vx
        shape.cy += shape.vy
        shape.angle += shape.spin
        if not r <= shape.cx <= self.width - r:
            shape.vx = -shape.vx
            shape.cx = min(max(shape.cx, r), self.width - r)
        if not r <= shape.cy <= self.height - r:
            shape.vy = -shape.vy
            shape.cy = min(max(shape.cy, r), self.height - r)
