"""The lateral view of the normal chest (anterior = image left, spine = image right).

The horizontal axis of a lateral canvas is z (anterior -1 → posterior +1); y is shared with the
PA view, so a finding placed in 3-D lands at the same height on both views.
"""

from __future__ import annotations

import math

import numpy as np

from radgen.data.phantom.anatomy import Canvas, ramp


def draw_lateral(canvas: Canvas, rng: np.random.Generator) -> None:
    """Lateral view (anterior = image left): lungs, heart, aorta, trachea, spine, sternum, ribs."""
    b, Z, Y = canvas.body, canvas.X, canvas.Y  # the horizontal axis is z on this view
    # Torso seen from the side: thicker overall (both shoulders and arms in the beam path).
    front = -0.74 - 0.06 * b.soft + 0.2 * ((Y + 0.05) / 0.95) ** 2
    back = 0.84 + 0.04 * b.soft - 0.1 * ((Y - 0.1) / 0.9) ** 2
    inside = ramp(Z - front, 0.04) * ramp(back - Z, 0.04)
    depth = np.clip((Z - front) / 0.25, 0, 1) * np.clip((back - Z) / 0.25, 0, 1)  # rounded chest wall
    abdomen = 0.85 + 0.15 * np.clip((Y - 0.3) / 0.3, 0.0, 1.0)
    canvas.soft = inside * (0.35 + 0.65 * depth) * abdomen * 0.95 * b.soft
    # Arms raised in front of the face: extra soft tissue over the upper field.
    canvas.blob(canvas.soft, -0.1, -1.0, 0.6, 0.35, 0.25 * b.soft, edge=0.8)
    # Lungs: one combined field; diaphragm low posteriorly (posterior costophrenic sulcus).
    dia = lateral_diaphragm_y(canvas, Z)
    apex = b.apex_y + 0.05 + 0.45 * ((Z + 0.02) / 0.7) ** 2
    lung = ramp(Z - front - 0.07, 0.05) * ramp(0.56 - Z, 0.06) * ramp(Y - apex, 0.04) * ramp(dia - Y, 0.015)
    hz, hy, hrz, hry = lateral_heart_geometry(canvas)
    win, heart = canvas.ellipse(hz, hy, hrz, hry, angle=0.5, edge=0.06)
    if win is not None:
        lung[win] *= 1.0 - heart
        canvas.add[win] += 0.06 * heart
    canvas.lung = lung
    canvas.air = lung * 1.1
    # Aorta (ascending, arch, descending) and trachea.
    arch = [(-0.12, 0.0), (-0.1, -0.3), (0.0, -0.45), (0.18, -0.45), (0.3, -0.3), (0.34 + b.aorta_tortuosity, 0.0), (0.36, 0.5)]
    aorta = canvas.strokes([arch], 0.12, blur=3)
    canvas.air -= 0.2 * aorta * canvas.lung
    trachea = canvas.strokes([[(-0.14, -1.0), (-0.05, -0.6), (0.02, -0.25)]], 0.07, blur=2)
    canvas.air += 0.25 * trachea
    canvas.blob(canvas.add, 0.02, -0.08, 0.07, 0.1, 0.08, edge=0.8)
    draw_vessels_lateral(canvas, rng)
    # Sternum anteriorly; spine posteriorly with vertebral bodies and discs.
    sternum = canvas.strokes([[(-0.66, -0.62), (-0.7, -0.2), (-0.68, 0.25)]], 0.05, blur=1.5)
    canvas.bone += 0.25 * sternum * b.bone
    win = canvas.window(0.2, -1.0, 1.0, 1.0)
    Zw, Yw = canvas.X[win], canvas.Y[win]
    axis = 0.52 + b.kyphosis * np.clip(1 - ((Yw + 0.1) / 0.9) ** 2, 0, 1)
    rel = Zw - axis
    period = 0.118
    phase = (Yw + 0.95) / period
    frac = phase - np.floor(phase)
    vbody = ramp(0.09 - np.abs(rel), 0.015) * (1.0 - 0.8 * ramp(0.13 - frac, 0.04))
    posterior = ramp(0.22 - rel, 0.04) * ramp(rel - 0.1, 0.04) * 0.5
    canvas.bone[win] += (0.2 * vbody + 0.08 * posterior) * b.bone * inside[win]
    # Posterior ribs overlap as faint oblique arcs.
    spacing = 0.13
    phase = (Yw - 0.5 * (Zw - 0.7) ** 2 + 1.0) / spacing
    fr = phase - np.floor(phase)
    canvas.bone[win] += 0.08 * np.where(fr < 0.35, 1.0, 0.0) * ramp(0.45 - rel, 0.2) * ramp(0.6 - Yw, 0.1) * b.bone * inside[win]
    # Gastric bubble under the anterior left dome.
    canvas.blob(canvas.air, -0.1, float(lateral_diaphragm_y(canvas, -0.1)) + 0.07, 0.08, 0.04, 0.3, edge=0.4)
    if b.breasts > 0:
        canvas.blob(canvas.soft, -0.8, 0.35, 0.15, 0.22, 0.3 * b.breasts, edge=0.5)


def lateral_diaphragm_y(canvas: Canvas, z) -> np.ndarray | float:
    """Diaphragm height on the lateral view (the two domes averaged), deepest posteriorly."""
    b = canvas.body
    level = (b.diaphragm["right"] + b.diaphragm["left"]) / 2
    z = np.asarray(z)
    return level - 0.05 + 0.14 * np.clip((z + 0.6) / 1.2, 0, 1) ** 2 - b.dome * np.clip(1 - ((z + 0.05) / 0.6) ** 2, 0, 1)


def lateral_heart_geometry(canvas: Canvas) -> tuple[float, float, float, float]:
    """(cz, cy, rz, ry): the heart sits anterior-inferior and grows backwards when enlarged."""
    b = canvas.body
    grow = (b.ctr - 0.43) * 1.2
    rz, ry = 0.3 + grow, b.heart_h * 1.05
    cz = -0.3 + grow * 0.5
    return cz, float(lateral_diaphragm_y(canvas, cz)) - ry * 0.35, rz, ry


def draw_vessels_lateral(canvas: Canvas, rng: np.random.Generator) -> None:
    """Hilar vessels radiating on the lateral view."""
    paths = []
    for k in range(14):
        angle = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(0.2, 0.45)
        bend = rng.uniform(-0.15, 0.15)
        x1, y1 = 0.02 + length * math.cos(angle), -0.08 + length * math.sin(angle) * 1.2
        paths.append([(0.02, -0.08), ((0.02 + x1) / 2 + bend * 0.3, (-0.08 + y1) / 2), (x1, y1)])
    canvas.vessels = 0.45 * canvas.strokes(paths, 0.014, blur=2.5) * canvas.body.vessel_gain
