"""Findings: one renderer per MeSH heading, the registry, and where a term's location puts it.

A renderer turns a parsed MeSH term into a visual sign in three steps, so both views agree and the
normal anatomy is unaffected by the random draws of findings:

1. ``adjust(body, term, rng)``: change the patient (cardiothoracic ratio, diaphragm level, spine
   curve...). Runs for every term before anything is drawn.
2. ``plan(term, geo, rng) -> plan | None``: choose the finding's place in 3-D (x, y, z patient
   coordinates; see anatomy.py) and size. ``None`` means "cannot render this variant" (e.g. a
   deformity of the humerus), and the term is reported as unrenderable.
3. ``draw(canvas, plan) -> [(box, laterality), ...]``: add the sign to one view's attenuation
   layers and return where it is (pixel boxes) for the ground truth. A view on which the sign is
   not visible (e.g. scoliosis on the lateral) returns ``[]``.

Renderers for each family live in ``signs_lung``, ``signs_pleura``, ``signs_chest``,
``signs_bone`` and ``signs_devices``; they register here with ``@register("heading", ...)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from radgen.data.phantom.anatomy import PA, Body, Canvas
from radgen.labels.mesh import MeshTerm

# Headings that say "nothing abnormal" or "not indexed": not a finding, never "unrenderable".
NON_FINDINGS = {"normal", "no indexing"}

# Severity words → a 0..1 scale used by every renderer (absent = moderate-ish default 0.5).
SEVERITY_SCALE = {
    "minimal": 0.15, "borderline": 0.2, "mild": 0.3, "small": 0.3, "focal": 0.4, "patchy": 0.45,
    "scattered": 0.45, "moderate": 0.65, "multiple": 0.5, "diffuse": 0.7, "large": 0.85, "severe": 0.95,
}


def severity(term: MeshTerm, default: float = 0.5) -> float:
    """Largest severity on the 0..1 scale among the term's severity words."""
    values = [SEVERITY_SCALE[s] for s in term.severity if s in SEVERITY_SCALE]
    return max(values) if values else default


Box = list[int]
Mark = tuple[Box, str | None]


class Renderer:
    """Base renderer; subclasses override what they need."""

    def adjust(self, body: Body, term: MeshTerm, rng: np.random.Generator) -> None:
        return None

    def plan(self, term: MeshTerm, geo: Canvas, rng: np.random.Generator) -> Any | None:
        return {}

    def draw(self, canvas: Canvas, plan: Any) -> list[Mark]:
        raise NotImplementedError


REGISTRY: dict[str, Renderer] = {}


def register(*headings: str):
    """Class decorator: register one renderer instance for these (lower-case) headings."""

    def wrap(cls):
        instance = cls()
        for heading in headings:
            REGISTRY[heading.lower()] = instance
        return cls

    return wrap


def renderer_for(term: MeshTerm) -> Renderer | None:
    return REGISTRY.get(term.heading.lower())


# -- where a term sits --------------------------------------------------------------------------

# lung zone → (u range medial→lateral, v range apex→base, z anterior(-)/posterior(+)).
ZONES: dict[str, tuple[tuple[float, float], tuple[float, float], float]] = {
    "apex": ((0.3, 0.75), (0.02, 0.14), 0.05),
    "upper lobe": ((0.2, 0.8), (0.12, 0.42), -0.05),
    "hilum": ((0.0, 0.15), (0.4, 0.52), 0.0),
    "middle lobe": ((0.15, 0.7), (0.55, 0.8), -0.35),
    "lingula": ((0.15, 0.7), (0.55, 0.8), -0.35),
    "lower lobe": ((0.2, 0.8), (0.66, 0.95), 0.3),
    "base": ((0.2, 0.85), (0.75, 0.97), 0.15),
    "retrocardiac": ((0.0, 0.1), (0.75, 0.95), 0.35),
}
LUNG_WORDS = set(ZONES) | {"lung", "lungs", "pulmonary alveoli", "interstitial", "bronchovascular"}


def side_of(term: MeshTerm, rng: np.random.Generator, default_bilateral: bool = False) -> list[str]:
    """Sides a finding is drawn on: the term's laterality, else bilateral or a random side."""
    if term.laterality == "bilateral" or (term.laterality is None and default_bilateral):
        return ["right", "left"]
    if term.laterality in ("left", "right"):
        return [term.laterality]
    side = "left" if rng.random() < 0.5 else "right"
    if term.has("lingula", "retrocardiac"):
        side = "left"
    if term.has("middle lobe"):
        side = "right"
    return [side]


def zone_of(term: MeshTerm, rng: np.random.Generator, default: str | None = None) -> str:
    for zone in ZONES:
        if term.has(zone):
            return zone
    return default or str(rng.choice(["upper lobe", "middle lobe", "lower lobe", "base", "apex"]))


@dataclass
class Spot:
    """A 3-D location in one lung with its side."""

    x: float
    y: float
    z: float
    side: str


def lung_spot(geo: Canvas, side: str, zone: str, rng: np.random.Generator) -> Spot:
    """A random point of `zone` in the `side` lung (patient coordinates, 3-D)."""
    (u0, u1), (v0, v1), z = ZONES[zone]
    u, v = rng.uniform(u0, u1), rng.uniform(v0, v1)
    if zone == "retrocardiac":
        hx, hy, rx, ry = geo.heart_geometry()
        x, y = hx + rx * rng.uniform(0.1, 0.5), hy + ry * rng.uniform(-0.2, 0.3)
    else:
        x, y = geo.lung_point(side, u, v)
    return Spot(x, y, z + rng.uniform(-0.12, 0.12), side)


def project(canvas: Canvas, spot: Spot) -> tuple[float, float]:
    """Horizontal and vertical position of a 3-D spot on this canvas's view."""
    return (spot.x, spot.y) if canvas.view == PA else (spot.z, spot.y)


def lung_side_mask(canvas: Canvas, side: str, win) -> np.ndarray:
    """Lung field of one side (PA) or the whole lung (lateral) on a window."""
    lung = canvas.lung[win]
    if canvas.view != PA:
        return lung
    X = canvas.X[win]
    return lung * (X > 0) if side == "left" else lung * (X <= 0)


def ellipse_box(canvas: Canvas, cx: float, cy: float, rx: float, ry: float) -> Box | None:
    return canvas.box(cx - rx, cy - ry, cx + rx, cy + ry)


def lobular_density(canvas: Canvas, cx, cy, rx, ry, amp, rng_seed: int, side: str, patchy: float = 0.5, angle: float = 0.0, clip_to_lung=True):
    """Soft, texture-modulated density clipped to the lung: the workhorse of parenchymal signs."""
    win, mask = canvas.ellipse(cx, cy, rx, ry, angle=angle, edge=0.5)
    if win is None:
        return None
    texture = canvas.smooth_noise(np.random.default_rng(rng_seed), 7, win)
    density = mask * (1.0 - patchy + patchy * texture)
    if clip_to_lung:
        density = density * np.clip(lung_side_mask(canvas, side, win) * 1.5, 0.0, 1.0)
    canvas.add[win] += amp * density
    return canvas.layer_box(density, 0.08, win)


def arc(cx, cy, rx, ry, a0, a1, n=12):
    return [(cx + rx * math.cos(a0 + (a1 - a0) * i / (n - 1)), cy + ry * math.sin(a0 + (a1 - a0) * i / (n - 1))) for i in range(n)]
