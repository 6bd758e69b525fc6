"""Normal chest anatomy for IU-Phantom: body parameters, the drawing canvas and the two views.

Everything is drawn as *attenuation* (mu, "how much tissue the beam crosses"): soft tissue,
lung air (negative), bone, vessels and whatever the findings add. `compose` turns mu into a
radiograph (white = dense), adds exposure variation and noise, and returns 8-bit pixels.

Coordinates. Anatomy lives in patient coordinates: y runs from -1 (top) to 1 (bottom); on the
PA view x runs from -1 (patient's RIGHT, image left) to 1 (patient's LEFT, image right), so a
left-sided finding lands on the image's right as radiologists expect. On the lateral view the
horizontal axis is z: -1 anterior (image left) to 1 posterior (image right). A finding is placed
once in 3-D (x, y, z) and projected into each view, so both views agree.

Each patient gets a random body (size, thorax shape, heart size in the normal range, diaphragm
height, rotation, shift, exposure); findings then *adjust* these parameters (cardiomegaly, elevated
hemidiaphragm, scoliosis...) or *draw* on the canvas. Shapes are analytic functions of
precomputed coordinate grids (vectorized numpy, no per-pixel Python) and thin structures (vessels,
clavicles, wires) are drawn with PIL and blurred, which keeps a 512 px view well under 0.1 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PA, LATERAL = "PA", "LATERAL"


def ramp(t: np.ndarray, width: float) -> np.ndarray:
    """Soft step 0→1 as t crosses 0 over `width` (a cheap, clipped linear sigmoid)."""
    return np.clip(t / width + 0.5, 0.0, 1.0)


@dataclass
class Body:
    """One patient's anatomy and acquisition; findings adjust these fields before drawing."""

    scale: float = 0.95  # body size in the image (fraction of the half-width)
    rotation: float = 0.0  # radians, patient rotation in the image plane
    shift: tuple[float, float] = (0.0, 0.0)
    soft: float = 1.0  # soft-tissue thickness (body habitus)
    thorax_w: float = 0.78  # inner rib-cage half-width (patient units)
    apex_y: float = -0.78
    diaphragm: dict = field(default_factory=lambda: {"right": 0.50, "left": 0.55})  # lateral dome level
    dome: float = 0.14  # dome height above the costophrenic angle
    ctr: float = 0.44  # cardiothoracic ratio
    heart_h: float = 0.25
    heart_y: float = 0.30
    mediastinum_w: float = 0.10
    knob_r: float = 0.052  # aortic knob radius
    aorta_tortuosity: float = 0.0  # lateral bulge of the descending aorta
    hilum_r: float = 0.055
    vessel_gain: float = 1.0
    vessel_upper: float = 1.0  # relative upper-zone vessel calibre (cephalisation raises it)
    vessel_periphery: float = 1.0  # peripheral pruning (emphysema lowers it)
    lung_air: float = 0.55  # how much lung air lowers attenuation
    bone: float = 1.0  # bone mineral density
    scoliosis: float = 0.0  # lateral spine displacement at the apex of the curve (signed, +x = patient left)
    kyphosis: float = 0.0
    breasts: float = 0.0
    gain: float = 1.7  # exposure: mu → film density
    window: tuple[float, float] = (0.18, 0.92)
    gamma: float = 1.0
    noise: float = 0.02
    heel: float = 0.0  # vertical exposure gradient


def sample_body(rng: np.random.Generator) -> Body:
    """A random normal adult; every draw here happens in the same order for every study."""
    u = rng.uniform
    body = Body(
        scale=u(0.8, 1.02),  # patient size / field of view
        rotation=u(-0.06, 0.06),
        shift=(u(-0.05, 0.05), u(-0.07, 0.09)),  # centring; how much neck/abdomen is in the field
        soft=u(0.8, 1.25),
        thorax_w=u(0.72, 0.82),
        apex_y=u(-0.82, -0.74),
        diaphragm={"right": u(0.40, 0.58), "left": 0.0},  # inspiration depth; left set below (it sits lower)
        dome=u(0.10, 0.17),
        ctr=u(0.38, 0.47),
        heart_h=u(0.29, 0.34),
        heart_y=u(0.31, 0.37),
        mediastinum_w=u(0.095, 0.125),
        knob_r=u(0.042, 0.058),
        hilum_r=u(0.045, 0.06),
        vessel_gain=u(0.8, 1.2),
        lung_air=u(0.55, 0.66),
        bone=u(0.85, 1.15),
        breasts=u(0.0, 1.0) if u() < 0.5 else 0.0,
        gain=u(1.3, 1.8),
        window=(u(0.12, 0.24), u(0.9, 1.0)),
        gamma=u(0.8, 1.25),
        noise=u(0.012, 0.03),
        heel=u(-0.06, 0.06),
        scoliosis=u(-0.008, 0.008),
    )
    body.diaphragm["left"] = body.diaphragm["right"] + u(0.02, 0.06)
    return body


@lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image-normalized pixel centres in [-1, 1], shared by every render of this size."""
    axis = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    return np.broadcast_to(axis[None, :], (size, size)), np.broadcast_to(axis[:, None], (size, size))


class Canvas:
    """One view being drawn: coordinate grids, attenuation layers and the patient→pixel transform."""

    def __init__(self, size: int, view: str, body: Body):
        self.size, self.view, self.body = size, view, body
        self.cos, self.sin = math.cos(body.rotation), math.sin(body.rotation)
        xi, yi = _pixel_grid(size)
        # Inverse transform of `to_image`: image-normalized → patient coordinates.
        ax, ay = (xi - body.shift[0]) / body.scale, (yi - body.shift[1]) / body.scale
        self.X = (self.cos * ax + self.sin * ay).astype(np.float32)
        self.Y = (-self.sin * ax + self.cos * ay).astype(np.float32)
        zeros = lambda: np.zeros((size, size), np.float32)  # noqa: E731
        self.soft, self.air, self.bone, self.vessels, self.add = zeros(), zeros(), zeros(), zeros(), zeros()
        self.lung = zeros()  # lung field mask (0..1) used to clip lung findings

    # -- geometry -----------------------------------------------------------------------------
    def to_image(self, x, y):
        """Patient coordinates → image-normalized coordinates."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        b = self.body
        return (self.cos * x - self.sin * y) * b.scale + b.shift[0], (self.sin * x + self.cos * y) * b.scale + b.shift[1]

    def to_pixel(self, x, y):
        ix, iy = self.to_image(x, y)
        return (ix + 1.0) * 0.5 * self.size, (iy + 1.0) * 0.5 * self.size

    def box(self, x0: float, y0: float, x1: float, y1: float, pad: float = 0.0) -> list[int] | None:
        """Pixel box [x0, y0, x1, y1] covering a patient-space rectangle, clipped to the image."""
        xs, ys = self.to_pixel([x0 - pad, x1 + pad, x0 - pad, x1 + pad], [y0 - pad, y0 - pad, y1 + pad, y1 + pad])
        bx0, by0 = max(0, int(math.floor(xs.min()))), max(0, int(math.floor(ys.min())))
        bx1, by1 = min(self.size, int(math.ceil(xs.max()))), min(self.size, int(math.ceil(ys.max())))
        if bx1 - bx0 < 1 or by1 - by0 < 1:
            return None
        return [bx0, by0, bx1, by1]

    def layer_box(self, layer: np.ndarray, threshold: float = 0.05, win=None) -> list[int] | None:
        """Pixel box of where `layer` (full frame, or the window `win`) exceeds `threshold`."""
        rows = np.flatnonzero((np.abs(layer) > threshold).any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero((np.abs(layer[rows[0] : rows[-1] + 1]) > threshold).any(axis=0))
        r0, c0 = (win[0].start, win[1].start) if win is not None else (0, 0)
        return [int(c0 + cols[0]), int(r0 + rows[0]), int(c0 + cols[-1] + 1), int(r0 + rows[-1] + 1)]

    def window(self, x0: float, y0: float, x1: float, y1: float):
        """Slices of the pixel grid covering a patient-space rectangle (for drawing locally)."""
        b = self.box(x0, y0, x1, y1, pad=0.01)
        if b is None:
            return None
        return (slice(b[1], b[3]), slice(b[0], b[2]))

    # -- primitives ---------------------------------------------------------------------------
    def ellipse(self, cx, cy, rx, ry, angle=0.0, edge=0.25, win=None):
        """Soft elliptical mask (1 inside) on the window `win` (defaults to the ellipse's bounds)."""
        r = max(rx, ry) * (1 + edge)
        win = win or self.window(cx - r, cy - r, cx + r, cy + r)
        if win is None:
            return None, None
        X, Y = self.X[win] - cx, self.Y[win] - cy
        if angle:
            c, s = math.cos(angle), math.sin(angle)
            X, Y = c * X + s * Y, -s * X + c * Y
        d = np.sqrt((X / rx) ** 2 + (Y / ry) ** 2)
        return win, ramp(1.0 - d, max(edge, 1e-3))

    def blob(self, layer: np.ndarray, cx, cy, rx, ry, amp, angle=0.0, edge=0.25):
        win, mask = self.ellipse(cx, cy, rx, ry, angle, edge)
        if win is not None:
            layer[win] += amp * mask
        return win

    def strokes(self, paths, width: float, blur: float = 0.7, closed: bool = False, fills=None) -> np.ndarray:
        """Rasterize polylines (patient coordinates, width in patient units) to a blurred 0..1 layer.

        `width` may be a list (one per path) and `fills` a list of 0..1 intensities. The blur runs
        only on the drawn region's bounding box: blurring whole frames dominated the render time.
        """
        img = Image.new("L", (self.size, self.size), 0)
        draw = ImageDraw.Draw(img)
        widths = width if isinstance(width, (list, tuple)) else [width] * len(paths)
        for k, path in enumerate(paths):
            xs, ys = self.to_pixel([p[0] for p in path], [p[1] for p in path])
            points = list(zip(xs.tolist(), ys.tolist()))
            if closed:
                points.append(points[0])
            px_width = max(1, int(round(widths[k] * self.body.scale * self.size / 2)))
            fill = 255 if fills is None else int(round(255 * fills[k]))
            draw.line(points, fill=fill, width=px_width, joint="curve")
        radius = blur * self.size / 512
        bbox = img.getbbox()
        if radius > 0 and bbox is not None:
            margin = int(math.ceil(3 * radius)) + 1
            x0, y0 = max(0, bbox[0] - margin), max(0, bbox[1] - margin)
            x1, y1 = min(self.size, bbox[2] + margin), min(self.size, bbox[3] + margin)
            img.paste(img.crop((x0, y0, x1, y1)).filter(ImageFilter.GaussianBlur(radius)), (x0, y0))
        return np.asarray(img, dtype=np.float32) * (1.0 / 255.0)

    def smooth_noise(self, rng: np.random.Generator, cells: int, win=None) -> np.ndarray:
        """Smooth random field in [0, 1] (bicubic upsampled low-resolution noise) over `win`."""
        h = self.size if win is None else win[0].stop - win[0].start
        w = self.size if win is None else win[1].stop - win[1].start
        low = rng.random((cells, cells), dtype=np.float32)
        field_ = Image.fromarray(low, mode="F").resize((max(w, 1), max(h, 1)), Image.BICUBIC)
        return np.clip(np.asarray(field_, dtype=np.float32), 0.0, 1.0)

    # -- anatomy helpers shared by views and findings -------------------------------------------
    def rib_cage_half_width(self, y: np.ndarray | float) -> np.ndarray | float:
        """Inner rib-cage half-width at height y: rounded apex, widest over the bases."""
        b = self.body
        t = np.clip((np.asarray(y) - b.apex_y) / 0.8, 0.0, 1.0)
        return b.thorax_w * (np.sqrt(np.clip(1.0 - (1.0 - t) ** 2, 0.0, 1.0)) * 0.9 + 0.1 * t) + 0.03

    def diaphragm_y(self, x: np.ndarray | float, side: str) -> np.ndarray | float:
        """Hemidiaphragm height on the PA view: dome peaks mid-hemithorax, lowest at the CP angle."""
        b = self.body
        u = np.clip(np.abs(np.asarray(x)) / b.thorax_w, 0.0, 1.2)
        return b.diaphragm[side] - b.dome * np.clip(1.0 - ((u - 0.45) / 0.62) ** 2, 0.0, 1.0)

    def spine_x(self, y: np.ndarray | float) -> np.ndarray | float:
        """Spinal centreline on the PA view (scoliosis bends it)."""
        b = self.body
        t = np.clip((np.asarray(y) + 0.9) / 1.6, 0.0, 1.0)
        return b.scoliosis * np.sin(np.pi * t)

    def heart_geometry(self) -> tuple[float, float, float, float]:
        """(cx, cy, rx, ry) of the cardiac silhouette on the PA view from the CTR."""
        b = self.body
        width = b.ctr * 2 * b.thorax_w  # transverse cardiac diameter
        rx = width / 2
        return rx / 3.0, b.heart_y, rx, b.heart_h  # 1/3 right of midline, 2/3 left

    def lung_point(self, side: str, u: float, v: float) -> tuple[float, float]:
        """Lung-relative point (u: 0 medial..1 lateral, v: 0 apex..1 base) → patient (x, y)."""
        b = self.body
        s = 1.0 if side == "left" else -1.0
        base = b.diaphragm[side]
        y = b.apex_y + 0.05 + v * (base - b.dome * 0.5 - b.apex_y - 0.05)
        medial = b.mediastinum_w + 0.04
        if y > b.heart_y - b.heart_h * 0.6:
            hx, _, hrx, _ = self.heart_geometry()
            medial = max(medial, hrx * (4 / 3 if s > 0 else 2 / 3) * 0.85)
        lateral = float(self.rib_cage_half_width(y)) - 0.03
        return s * (medial + u * max(lateral - medial, 0.05)), y


def heart_mask(canvas: Canvas):
    """Cardiac silhouette on the PA view: a left-ventricular lobe plus the right atrial border."""
    hx, hy, rx, ry = canvas.heart_geometry()
    r = max(rx, ry) * 1.3
    win = canvas.window(hx - r, hy - r, hx + r, hy + r)
    if win is None:
        return None, None
    _, lv = canvas.ellipse(hx + rx * 0.12, hy + ry * 0.12, rx * 0.9, ry * 1.12, angle=-0.6, edge=0.05, win=win)
    _, ra = canvas.ellipse(hx - rx * 0.45, hy + ry * 0.05, rx * 0.55, ry * 0.85, angle=0.1, edge=0.06, win=win)
    return win, np.maximum(lv, ra)


def lung_air_profile(canvas: Canvas) -> None:
    """Fill canvas.lung (lung field mask) and canvas.air for the PA view."""
    b, X, Y = canvas.body, canvas.X, canvas.Y
    ax = np.abs(X)
    cage = canvas.rib_cage_half_width(Y)
    inside_cage = ramp(cage - ax, 0.02) * ramp(Y - b.apex_y, 0.03)
    below = np.where(X < 0, canvas.diaphragm_y(X, "right"), canvas.diaphragm_y(X, "left"))
    above_diaphragm = ramp(below - Y, 0.015)
    # Upper mediastinum widens from the thoracic inlet down to the hila (SVC right, aorta left).
    mediastinum = ramp(ax - b.mediastinum_w * (1.0 + 0.35 * np.clip((Y + 0.8) / 0.7, 0, 1)), 0.02)
    canvas.lung = inside_cage * above_diaphragm * mediastinum
    # Heart and aortic knob displace lung.
    win, heart = heart_mask(canvas)
    if win is not None:
        canvas.lung[win] *= 1.0 - heart
    win, knob = canvas.ellipse(b.mediastinum_w * 0.6, -0.37, b.knob_r * 1.6, b.knob_r, edge=0.15)
    if win is not None:
        canvas.lung[win] *= 1.0 - knob
    # Pulmonary trunk and left atrial appendage: the left border runs on from the knob to the heart.
    # (A straight, slightly concave border from below the knob to the upper left heart border.)
    hx, hy, hrx, hry = canvas.heart_geometry()
    y0, y1 = -0.33, hy - hry * 0.45
    x0, x1 = b.mediastinum_w * 1.15 + b.knob_r * 0.5, hx + hrx * 0.8
    win = canvas.window(0.0, y0 - 0.02, x1 + 0.05, y1 + 0.02)
    if win is not None and y1 > y0:
        Xw, Yw = canvas.X[win], canvas.Y[win]
        t = np.clip((Yw - y0) / (y1 - y0), 0.0, 1.0)
        border = x0 + (x1 - x0) * t**1.6
        trunk = ramp(border - Xw, 0.015) * ramp(Yw - y0, 0.03) * ramp(y1 + 0.05 - Yw, 0.05)
        canvas.lung[win] *= 1.0 - trunk
    # Lungs are thickest mid-field and thin towards the chest wall and the apices.
    thickness = (0.7 + 0.3 * np.clip(1.0 - ((ax - 0.42) / 0.5) ** 2, 0.0, 1.0)) * (1.0 - 0.25 * np.clip(Y / 0.5, 0.0, 1.0))
    canvas.air = canvas.lung * thickness


def draw_pa(canvas: Canvas, rng: np.random.Generator) -> None:
    """Soft tissue, lungs, mediastinum, heart, ribs, clavicles, spine, vessels on a PA canvas."""
    b, X, Y = canvas.body, canvas.X, canvas.Y
    ax = np.abs(X)
    # Soft tissue: neck, shoulders and an elliptical torso; thickness falls off laterally.
    torso_w = np.where(Y < -0.72, 0.24 + (0.98 - 0.24) * ramp(Y + 0.86, 0.12), 0.98 - 0.05 * np.clip(Y - 0.2, 0, 1))
    torso_w = torso_w * (0.92 + 0.1 * b.soft)
    inside = ramp(torso_w - ax, 0.03)
    # The mediastinum is thinner than the upper abdomen, so the spine shows through it.
    abdomen = 0.8 + 0.2 * np.clip((Y - 0.25) / 0.35, 0.0, 1.0)
    canvas.soft = inside * (0.2 + 0.8 * np.clip(1.0 - (X / torso_w) ** 2, 0.0, 1.0) ** 0.75) * abdomen * b.soft
    lung_air_profile(canvas)
    # Breast shadows raise lower-zone density laterally.
    if b.breasts > 0:
        for s in (-1, 1):
            canvas.blob(canvas.soft, s * 0.5, 0.52, 0.32, 0.22, 0.18 * b.breasts, edge=0.6)
    # Abdomen below the domes is denser (liver, spleen); a gastric air bubble under the left dome.
    win, heart = heart_mask(canvas)
    if win is not None:
        canvas.add[win] += 0.06 * heart  # heart is a bit denser than mediastinal fat
    gastric = canvas.body.diaphragm["left"] + 0.08
    canvas.blob(canvas.air, 0.35, gastric, 0.09, 0.05, 0.35, edge=0.4)
    # Mediastinum and aortic knob (part of the soft tissue, already excluded from lung); trachea air.
    canvas.blob(canvas.add, b.mediastinum_w * 0.6, -0.37, b.knob_r * 1.3, b.knob_r, 0.05, edge=0.3)
    win = canvas.window(-0.06, -1.1, 0.06, -0.28)
    if win is not None:
        tx = canvas.spine_x(Y[win]) * 0.5
        canvas.air[win] += 0.28 * ramp(0.028 - np.abs(X[win] - tx), 0.012) * ramp(-0.3 - Y[win], 0.03) * ramp(Y[win] + 0.95, 0.1)
    bronchi = canvas.strokes([[(0.0, -0.31), (-0.16, -0.16)], [(0.0, -0.31), (0.15, -0.13)]], 0.03, blur=1.5)
    canvas.air += 0.16 * bronchi
    # Descending aorta: faint left paraspinal stripe down behind the heart.
    dax = 0.05 + b.mediastinum_w * 0.5 + b.aorta_tortuosity
    path = [(b.mediastinum_w * 0.6, -0.35), (dax + 0.01, -0.15), (dax + b.aorta_tortuosity * 0.6, 0.15), (dax * 0.8, 0.5)]
    canvas.add += 0.05 * canvas.strokes([path], 0.06, blur=3)
    # Hila.
    for s in (-1, 1):
        canvas.blob(canvas.add, s * 0.18, -0.12, b.hilum_r, b.hilum_r * 1.6, 0.10, edge=0.8)
    draw_vessels(canvas, rng)
    draw_ribs_pa(canvas)
    draw_spine_pa(canvas)
    # Clavicles: S-shaped, lateral end higher; humeral heads at the corners.
    clav = []
    for s in (-1, 1):
        clav.append([(s * 0.05, -0.64), (s * 0.2, -0.69), (s * 0.4, -0.74), (s * 0.58, -0.80), (s * 0.68, -0.79)])
    canvas.bone += 0.30 * canvas.strokes(clav, 0.05, blur=1.6)
    for s in (-1, 1):
        canvas.blob(canvas.bone, s * 0.9, -0.74, 0.11, 0.12, 0.22, edge=0.1)
        canvas.blob(canvas.soft, s * 0.95, -0.72, 0.2, 0.2, 0.25 * b.soft, edge=0.5)
    # Scapular edges over the upper lateral lungs.
    scap = [[(s * 0.62, -0.72), (s * 0.55, -0.45), (s * 0.60, -0.25)] for s in (-1, 1)]
    canvas.bone += 0.06 * canvas.strokes(scap, 0.03, blur=2.5)


def draw_vessels(canvas: Canvas, rng: np.random.Generator) -> None:
    """Branching pulmonary vessels from each hilum, tapered and clipped to the lungs.

    The tree is drawn in lung-relative units, so a hyperinflated or small lung stretches the same
    random tree: the random draws do not depend on the findings.
    """
    b = canvas.body
    paths_thick, paths_mid, paths_thin = [], [], []
    for side in ("right", "left"):
        s = 1.0 if side == "left" else -1.0
        hx, hy = s * 0.2, -0.12
        for k in range(12):
            # Fan of primary vessels: angle 0 = lateral, negative = upward.
            angle = -1.25 + 2.6 * (k + rng.uniform(-0.3, 0.3)) / 11
            length = rng.uniform(0.75, 1.0)
            _grow(canvas, side, hx, hy, angle, length, 0, rng, (paths_thick, paths_mid, paths_thin))
    # One raster for all calibres and a single blur; thick vessels are drawn last so a dimmer thin
    # branch never overwrites a thick vessel's centre.
    paths = paths_thin + paths_mid + paths_thick
    widths = [0.008] * len(paths_thin) + [0.014] * len(paths_mid) + [0.026] * len(paths_thick)
    fills = [0.4] * len(paths_thin) + [0.55] * len(paths_mid) + [0.8] * len(paths_thick)
    layer = canvas.strokes(paths, widths, blur=2.2, fills=fills)
    # Upper zones carry thinner vessels (gravity) unless cephalised; periphery pruned in emphysema.
    upper = np.clip((-canvas.Y - 0.1) / 0.5, 0.0, 1.0)
    peripheral = np.clip((np.abs(canvas.X) - 0.35) / 0.3, 0.0, 1.0)
    weight = (1.0 - 0.35 * upper * (2.0 - b.vessel_upper)) * (1.0 - peripheral * (1.0 - b.vessel_periphery))
    canvas.vessels = layer * weight * b.vessel_gain


def _grow(canvas, side, x, y, angle, length, depth, rng, buckets):
    b = canvas.body
    s = 1.0 if side == "left" else -1.0
    reach_x = b.thorax_w - 0.2
    reach_up = 0.12 - b.apex_y
    reach_down = b.diaphragm[side] - 0.12
    seg = 0.42 * length * (0.62 ** depth)
    dx, dy = math.cos(angle), math.sin(angle)
    nx = x + s * dx * seg * reach_x
    ny = y + dy * seg * (reach_down if dy > 0 else reach_up)
    wobble = 0.12 * seg
    path = [(x, y)]
    for t in (0.33, 0.66):
        path.append((x + (nx - x) * t + rng.uniform(-wobble, wobble), y + (ny - y) * t + rng.uniform(-wobble, wobble)))
    path.append((nx, ny))
    buckets[min(depth, 2)].append(path)
    if depth < 3:
        for turn in (-1, 1):
            _grow(canvas, side, nx, ny, angle + turn * rng.uniform(0.2, 0.5), length * rng.uniform(0.8, 1.0), depth + 1, rng, buckets)


def draw_ribs_pa(canvas: Canvas) -> None:
    """Posterior ribs (bright bands with cortical margins) and faint anterior ribs, one expression for all."""
    b = canvas.body
    win = canvas.window(-1.0, -0.95, 1.0, 0.85)
    X, Y = canvas.X[win], canvas.Y[win]
    # Ribs follow a scoliotic spine only partly (the cage deforms less than the column bends).
    d = np.abs(X - 0.4 * canvas.spine_x(Y))
    cage = canvas.rib_cage_half_width(Y)
    # Posterior ribs: leave the spine nearly horizontally, curve downwards laterally.
    spacing = (b.diaphragm["right"] + 0.15 - b.apex_y) / 10.5
    phase = (Y - (0.75 * d * d - 0.1 * d) - (b.apex_y - 0.1)) / spacing
    frac = phase - np.floor(phase)
    t = frac / 0.42
    in_rib = (t < 1.0) & (phase >= 0) & (phase < 11.0)
    profile = np.where(in_rib, 0.55 + 0.45 * np.abs(2 * t - 1) ** 3, 0.0) * np.clip(1 - np.abs(2 * t - 1) ** 8, 0, 1)
    extent = ramp(cage + 0.06 - d, 0.03) * ramp(d - 0.06, 0.03)
    # Below the domes the ribs overlie liver/spleen and the film shows them faintly.
    domes = np.where(X < 0, canvas.diaphragm_y(X, "right"), canvas.diaphragm_y(X, "left"))
    ribs = profile * extent * (0.45 + 0.55 * ramp(domes + 0.05 - Y, 0.08))
    # Anterior ribs: fainter, running down-medially from the lateral chest wall.
    phase_a = (Y + 0.45 * (cage - d) - (b.apex_y + 0.12)) / (spacing * 0.95)
    frac_a = phase_a - np.floor(phase_a)
    anterior = np.where((frac_a < 0.4) & (phase_a >= 0) & (phase_a < 6), 1.0, 0.0) * ramp(d - 0.3, 0.08) * ramp(cage - d, 0.02)
    canvas.bone[win] += (0.13 * ribs + 0.05 * anterior) * b.bone


def rib_center_y(canvas: Canvas, index: int, x: float) -> float:
    """Height of posterior rib `index` (0 = first visible) at patient x; used by rib findings."""
    b = canvas.body
    d = abs(x - 0.4 * float(canvas.spine_x(0.0)))
    spacing = (b.diaphragm["right"] + 0.15 - b.apex_y) / 10.5
    return (index + 0.25) * spacing + (0.75 * d * d - 0.1 * d) + (b.apex_y - 0.1)


def draw_spine_pa(canvas: Canvas) -> None:
    """Vertebral bodies with disc spaces and pedicles along the (possibly scoliotic) centreline."""
    b = canvas.body
    win = canvas.window(-0.4, -1.0, 0.4, 1.0)
    X, Y = canvas.X[win], canvas.Y[win]
    rel = X - canvas.spine_x(Y)
    period = 0.118
    phase = (Y + 0.95) / period
    frac = phase - np.floor(phase)
    body_ = ramp(0.075 - np.abs(rel), 0.02) * (1.0 - 0.7 * ramp(0.12 - frac, 0.05))
    ped = np.sqrt(((np.abs(rel) - 0.055) / 0.02) ** 2 + ((frac - 0.45) * period / 0.028) ** 2)
    pedicles = ramp(1.0 - ped, 0.5) * (1.0 - 0.5 * ramp(0.6 - ped, 0.3))
    canvas.bone[win] += (0.11 * body_ + 0.07 * pedicles) * b.bone


def compose(canvas: Canvas, rng: np.random.Generator) -> np.ndarray:
    """Attenuation → 8-bit radiograph: exposure, window, gamma, heel effect, anatomical and quantum noise."""
    b = canvas.body
    texture = canvas.smooth_noise(rng, 24) - 0.5  # tissue heterogeneity, not tied to any finding
    # Lung air replaces a fraction of the tissue along the beam (multiplicative, so thin patients
    # keep visible lungs); bones, vessels and findings add on top.
    mu = (
        canvas.soft * (1.0 + 0.08 * texture) * (1.0 - b.lung_air * np.clip(canvas.air, 0.0, 1.2))
        + canvas.bone
        + 0.24 * canvas.vessels * canvas.lung
        + canvas.add
    )
    mu = np.maximum(mu, 0.0)
    film = 1.0 - np.exp(-b.gain * mu)
    lo, hi = b.window
    img = np.clip((film - lo) / (hi - lo), 0.0, 1.0)
    img = img ** b.gamma
    img *= 1.0 + b.heel * canvas.Y
    img += rng.normal(0.0, b.noise, img.shape).astype(np.float32)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
