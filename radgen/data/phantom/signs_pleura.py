"""Pleural signs: effusion / costophrenic blunting, pneumothorax, pleural thickening."""

from __future__ import annotations

import numpy as np

from radgen.data.phantom.anatomy import PA, ramp
from radgen.data.phantom.findings import Renderer, lung_side_mask, register, severity, side_of
from radgen.data.phantom.lateral import lateral_diaphragm_y
from radgen.data.phantom.signs_lung import RETICULAR


@register("pleural effusion", "costophrenic angle")
class PleuralEffusion(Renderer):
    """Fluid in the costophrenic recess: blunting, a meniscus rising laterally, height by severity."""

    def plan(self, term, geo, rng):
        heading = term.heading.lower()
        if heading == "costophrenic angle" and not term.has("blunted", "obscured"):
            return None
        sev = severity(term, 0.45)
        height = 0.07 + 0.05 * sev if heading == "costophrenic angle" else 0.08 + 0.45 * sev ** 1.3
        sides = side_of(term, rng, default_bilateral=True)
        return {"sides": [(side, height * rng.uniform(0.85, 1.15)) for side in sides]}

    def draw(self, canvas, plan):
        b = canvas.body
        marks = []
        for side, height in plan["sides"]:
            if canvas.view == PA:
                s = 1 if side == "left" else -1
                base = b.diaphragm[side] + 0.02
                win = canvas.window(min(0, s), base - height - 0.3, max(0, s), base + 0.03)
                X, Y = canvas.X[win], canvas.Y[win]
                cage = canvas.rib_cage_half_width(Y)
                u = np.clip((np.abs(X) - 0.15) / (cage - 0.15), 0.0, 1.0)
                # Meniscus: the fluid surface climbs the lateral chest wall.
                top = base - height * (0.3 + 0.7 * u ** 2)
                fluid = ramp(Y - top, 0.025) * ((X > 0) if side == "left" else (X <= 0))
            else:
                win = canvas.window(-0.7, 0.0, 0.65, 1.0)
                Z, Y = canvas.X[win], canvas.Y[win]
                floor = lateral_diaphragm_y(canvas, Z)
                rise = np.clip((Z + 0.1) / 0.6, 0.0, 1.0) ** 2  # fluid collects posteriorly
                top = floor - height * (0.2 + 0.8 * rise) * 0.9 - 0.02
                fluid = ramp(Y - top, 0.025) * ramp(Z + 0.2, 0.2)
            canvas.air[win] *= 1.0 - fluid  # fluid replaces aerated lung
            box = canvas.layer_box(fluid * (canvas.lung[win] > 0.2), 0.15, win)
            if box:
                marks.append((box, side))
        return marks


@register("pneumothorax")
class Pneumothorax(Renderer):
    """Air between lung and chest wall: visceral pleural line, no lung markings beyond it."""

    def plan(self, term, geo, rng):
        side = side_of(term, rng)[0]
        depth = 0.07 + 0.3 * severity(term, 0.4)
        return {"side": side, "depth": depth, "apical": term.has("apex", "upper lobe")}

    def draw(self, canvas, plan):
        if canvas.view != PA:
            return []  # a pneumothorax is judged on the frontal view
        b, side = canvas.body, plan["side"]
        s = 1 if side == "left" else -1
        top, bottom = b.apex_y, b.diaphragm[side]
        cy = (top + bottom) / 2 + (0.25 if plan["apical"] else 0.0)
        ry = (bottom - top) / 2 + (0.25 if plan["apical"] else 0.05)
        win = canvas.window(min(0, s), top - 0.05, max(0, s), bottom + 0.05)
        X, Y = canvas.X[win], canvas.Y[win]
        # Normalized radius around a centre near the hilum: the lung collapses towards it.
        r = np.sqrt(((X - s * 0.25) / (b.thorax_w * 0.82)) ** 2 + ((Y - cy) / ry) ** 2)
        edge = 1.0 - plan["depth"]
        lung = lung_side_mask(canvas, side, win)
        gap = ramp(r - edge, 0.01) * lung
        line = np.clip(1.0 - np.abs(r - edge) / 0.008, 0.0, 1.0) * lung
        canvas.vessels[win] *= 1.0 - gap
        canvas.add[win] += -0.1 * gap + 0.18 * line
        box = canvas.layer_box(gap, 0.3, win)
        return [(box, side)] if box else []


@register("thickening")
class PleuralThickening(Renderer):
    """Pleural thickening: an apical cap or a band along the lateral chest wall."""

    def plan(self, term, geo, rng):
        if term.has("bronchovascular"):
            return {"kind": "vascular"}
        if not term.has("pleura"):
            return None
        return {"kind": "pleura", "sides": side_of(term, rng), "apex": term.has("apex"), "y": rng.uniform(-0.3, 0.2)}

    def draw(self, canvas, plan):
        if plan["kind"] == "vascular":
            return RETICULAR.draw(canvas, plan)
        if canvas.view != PA:
            return []
        b, marks = canvas.body, []
        for side in plan["sides"]:
            s = 1 if side == "left" else -1
            if plan["apex"]:
                win, cap = canvas.ellipse(s * 0.42, b.apex_y + 0.03, 0.25, 0.07, edge=0.5)
            else:
                win = canvas.window(min(s * 0.5, s * 0.9), plan["y"] - 0.25, max(s * 0.5, s * 0.9), plan["y"] + 0.25)
                X, Y = canvas.X[win], canvas.Y[win]
                cage = canvas.rib_cage_half_width(Y)
                cap = ramp(np.abs(X) - (cage - 0.045), 0.02) * ramp(0.25 - np.abs(Y - plan["y"]), 0.08)
            cap = cap * lung_side_mask(canvas, side, win)
            canvas.add[win] += 0.25 * cap
            box = canvas.layer_box(cap, 0.15, win)
            if box:
                marks.append((box, side))
        return marks
