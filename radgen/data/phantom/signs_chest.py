"""Heart, aorta, mediastinum and diaphragm signs.

Cardiomegaly sets the cardiothoracic ratio (CTR = transverse cardiac / inner thoracic diameter):
normal bodies draw 0.38-0.47; borderline → ~0.51, mild → ~0.55, moderate → ~0.61, severe → ~0.67.
"""

from __future__ import annotations

import math

import numpy as np

from radgen.data.phantom.anatomy import PA, ramp
from radgen.data.phantom.lateral import lateral_diaphragm_y, lateral_heart_geometry
from radgen.data.phantom.findings import Renderer, arc, lung_side_mask, register, severity, side_of
from radgen.data.phantom.signs_lung import GRANULOMA

CTR_BY_SEVERITY = (("severe", 0.67), ("large", 0.65), ("moderate", 0.61), ("mild", 0.55), ("borderline", 0.51))


def heart_box(canvas):
    if canvas.view == PA:
        hx, hy, rx, ry = canvas.heart_geometry()
        return canvas.box(hx - rx * 1.02, hy - ry * 1.05, hx + rx * 1.1, hy + ry * 0.8)
    hz, hy, rz, ry = lateral_heart_geometry(canvas)
    return canvas.box(hz - rz, hy - ry, hz + rz, hy + ry * 0.8)


@register("cardiomegaly", "cardiac shadow", "heart", "pericardial effusion")
class Cardiomegaly(Renderer):
    def _enlarged(self, term):
        return term.heading.lower() in ("cardiomegaly", "pericardial effusion") or term.has("enlarged")

    def adjust(self, body, term, rng):
        if not self._enlarged(term):
            return
        target = 0.58
        for word, ctr in CTR_BY_SEVERITY:
            if term.has(word):
                target = ctr
                break
        body.ctr = max(body.ctr, target + rng.uniform(-0.015, 0.015))
        body.heart_h *= 1.0 + (body.ctr - 0.44) * 0.6

    def plan(self, term, geo, rng):
        return {} if self._enlarged(term) else None

    def draw(self, canvas, plan):
        box = heart_box(canvas)
        return [(box, None)] if box else []


def knob_centre(body):
    return body.mediastinum_w * 0.6, -0.37


@register("aorta", "aorta, thoracic", "aortic aneurysm")
class TortuousAorta(Renderer):
    """Unfolded/tortuous aorta: larger knob, descending aorta bulging into the left lung."""

    def adjust(self, body, term, rng):
        if term.has("tortuous", "prominent", "enlarged", "dilatation") or term.heading.lower() == "aortic aneurysm":
            sev = 0.95 if term.heading.lower() == "aortic aneurysm" else severity(term, 0.5)
            body.knob_r *= 1.2 + 0.35 * sev
            body.aorta_tortuosity = 0.03 + 0.06 * sev

    def plan(self, term, geo, rng):
        if term.has("tortuous", "prominent", "enlarged", "dilatation") or term.heading.lower() == "aortic aneurysm":
            return {"bend": rng.uniform(0.8, 1.2)}
        if term.has("calcified", "calcinosis"):
            return AORTIC_CALCIFICATION.plan(term, geo, rng)
        return None

    def draw(self, canvas, plan):
        if plan.get("kind") == "aorta":
            return AORTIC_CALCIFICATION.draw(canvas, plan)
        b = canvas.body
        kx, ky = knob_centre(b)
        if canvas.view == PA:
            t = b.aorta_tortuosity * plan["bend"]
            path = [(kx, ky), (kx + 0.06 + t, -0.2), (kx + 0.05 + 1.6 * t, 0.0), (kx + 0.02 + t, 0.25)]
            layer = canvas.strokes([path], 0.09, blur=2.0)
            canvas.air *= 1.0 - 0.45 * layer  # the aorta displaces lung
            win, knob = canvas.ellipse(kx, ky, b.knob_r * 1.3, b.knob_r, edge=0.15)
            box = canvas.layer_box(layer, 0.2)
            kb = canvas.box(kx - b.knob_r * 1.3, ky - b.knob_r, kx + b.knob_r * 1.3, ky + b.knob_r)
            box = [min(box[0], kb[0]), min(box[1], kb[1]), max(box[2], kb[2]), max(box[3], kb[3])] if box else kb
            return [(box, None)] if box else []
        path = [(0.0, -0.45), (0.2, -0.48), (0.33, -0.3), (0.36 + b.aorta_tortuosity * 2, 0.0), (0.36, 0.3)]
        layer = canvas.strokes([path], 0.1, blur=2.5)
        canvas.air *= 1.0 - 0.35 * layer
        box = canvas.layer_box(layer, 0.2)
        return [(box, None)] if box else []


@register("calcinosis", "atherosclerosis")
class Calcification(Renderer):
    """Calcified aortic knob rim (atherosclerosis), calcified hilar/mediastinal nodes, or lung granulomas."""

    def plan(self, term, geo, rng):
        heading = term.heading.lower()
        if heading == "atherosclerosis" or term.has("aorta", "aorta, thoracic", "blood vessels") or not term.locations:
            if term.locations and not term.has("aorta", "aorta, thoracic", "blood vessels"):
                return None
            return {"kind": "aorta", "a0": rng.uniform(-2.2, -1.6), "span": rng.uniform(1.4, 2.2), "severe": term.has("severe")}
        if term.has("lymph nodes", "hilum", "mediastinum", "trachea, carina"):
            if term.has("hilum"):
                sides = side_of(term, rng, default_bilateral=True)
                spots = [(side, (1 if side == "left" else -1) * rng.uniform(0.15, 0.22), rng.uniform(-0.2, -0.04)) for side in sides]
            else:
                spots = [(None, rng.uniform(-0.1, 0.12), rng.uniform(-0.45, -0.2))]
            return {"kind": "nodes", "spots": spots, "offsets": [(rng.uniform(-0.02, 0.02), rng.uniform(-0.02, 0.02)) for _ in range(4)]}
        if term.has("lung"):
            return GRANULOMA.plan(term, geo, rng)
        return None

    def draw(self, canvas, plan):
        if "spots" in plan and "kind" not in plan:
            return GRANULOMA.draw(canvas, plan)
        if plan["kind"] == "aorta":
            return AORTIC_CALCIFICATION.draw(canvas, plan)
        marks = []
        for side, x, y in plan["spots"]:
            cx = x if canvas.view == PA else 0.02 + x * 0.2
            for dx, dy in plan["offsets"]:
                canvas.blob(canvas.add, cx + dx, y + dy, 0.011, 0.013, 0.5, edge=0.3)
            box = canvas.box(cx - 0.035, y - 0.035, cx + 0.035, y + 0.035)
            if box:
                marks.append((box, side))
        return marks


class AorticCalcification(Renderer):
    def plan(self, term, geo, rng):
        return {"kind": "aorta", "a0": rng.uniform(-2.2, -1.6), "span": rng.uniform(1.4, 2.2), "severe": term.has("severe")}

    def draw(self, canvas, plan):
        b = canvas.body
        amp = 0.45 if plan["severe"] else 0.32
        if canvas.view == PA:
            kx, ky = knob_centre(b)
            path = arc(kx, ky, b.knob_r * 1.25, b.knob_r * 0.95, plan["a0"], plan["a0"] + plan["span"])
        else:
            path = arc(0.1, -0.35, 0.2, 0.13, math.pi + 0.3, math.pi + 0.3 + plan["span"])
        layer = canvas.strokes([path], 0.012, blur=0.8)
        canvas.add += amp * layer
        box = canvas.layer_box(layer, 0.1)
        return [(box, None)] if box else []


AORTIC_CALCIFICATION = AorticCalcification()


@register("mediastinum")
class WideMediastinum(Renderer):
    def adjust(self, body, term, rng):
        if term.has("enlarged", "widened", "prominent"):
            body.mediastinum_w *= 1.4 + 0.3 * severity(term, 0.5)

    def plan(self, term, geo, rng):
        return {} if term.has("enlarged", "widened", "prominent") else None

    def draw(self, canvas, plan):
        if canvas.view != PA:
            return []
        w = canvas.body.mediastinum_w * 1.4
        box = canvas.box(-w - 0.02, -0.8, w + 0.02, -0.05)
        return [(box, None)] if box else []


@register("hernia, hiatal")
class HiatalHernia(Renderer):
    """Retrocardiac rounded density with an air-fluid level."""

    def plan(self, term, geo, rng):
        return {"r": 0.07 + 0.07 * severity(term, 0.5), "dx": rng.uniform(-0.02, 0.06)}

    def draw(self, canvas, plan):
        b, r = canvas.body, plan["r"]
        if canvas.view == PA:
            hx, hy, rx, ry = canvas.heart_geometry()
            cx, cy = plan["dx"], hy + ry * 0.35
        else:
            cx, cy = 0.15, float(lateral_diaphragm_y(canvas, 0.15)) - r * 0.6
        win, mask = canvas.ellipse(cx, cy, r * 1.2, r, edge=0.12)
        if win is None:
            return []
        Y = canvas.Y[win]
        gas = mask * ramp((cy - r * 0.2) - Y, 0.01)  # air above a flat fluid level
        canvas.add[win] += 0.12 * mask
        canvas.air[win] += 0.45 * gas
        box = canvas.layer_box(mask, 0.1, win)
        return [(box, None)] if box else []


@register("diaphragm", "diaphragmatic eventration")
class Diaphragm(Renderer):
    """Elevated hemidiaphragm (side), flattened domes, or a focal eventration bump."""

    def _side(self, term):
        return term.laterality if term.laterality in ("left", "right") else "right"

    def adjust(self, body, term, rng):
        if term.heading.lower() == "diaphragm":
            if term.has("elevated"):
                body.diaphragm[self._side(term)] -= 0.07 + 0.1 * severity(term, 0.5)
            elif term.has("flattened"):
                body.dome *= 0.3
                for side in body.diaphragm:
                    body.diaphragm[side] += 0.04

    def plan(self, term, geo, rng):
        if term.heading.lower() == "diaphragmatic eventration":
            return {"kind": "eventration", "side": self._side(term), "u": rng.uniform(0.3, 0.6)}
        if term.has("elevated"):
            return {"kind": "elevated", "side": self._side(term)}
        if term.has("flattened"):
            return {"kind": "flat"}
        return None

    def draw(self, canvas, plan):
        b = canvas.body
        if plan["kind"] == "flat":
            top = min(b.diaphragm.values()) - b.dome - 0.06
            if canvas.view == PA:
                return [(canvas.box(-b.thorax_w, top, b.thorax_w, max(b.diaphragm.values()) + 0.05), "bilateral")]
            return [(canvas.box(-0.65, top, 0.6, max(b.diaphragm.values()) + 0.2), "bilateral")]
        side = plan["side"]
        s = 1 if side == "left" else -1
        if plan["kind"] == "elevated":
            if canvas.view != PA:
                return []
            level = b.diaphragm[side]
            box = canvas.box(min(0, s * b.thorax_w), level - b.dome - 0.06, max(0, s * b.thorax_w), level + 0.2)
            return [(box, side)] if box else []
        x = s * plan["u"] * b.thorax_w
        if canvas.view == PA:
            y = float(canvas.diaphragm_y(x, side))
        else:
            x, y = -0.2, float(lateral_diaphragm_y(canvas, -0.2))
        win, bump = canvas.ellipse(x, y, 0.14, 0.08, edge=0.1)
        if win is None:
            return []
        bump = bump * canvas.lung[win]
        canvas.air[win] *= 1.0 - bump
        box = canvas.layer_box(bump, 0.15, win)
        return [(box, side)] if box else []


@register("epicardial fat")
class EpicardialFat(Renderer):
    def plan(self, term, geo, rng):
        return {"side": "left" if rng.random() < 0.7 else "right"}

    def draw(self, canvas, plan):
        if canvas.view != PA:
            return []
        b = canvas.body
        hx, hy, rx, ry = canvas.heart_geometry()
        s = 1 if plan["side"] == "left" else -1
        x = hx + s * rx * (1.0 if s > 0 else 0.9)
        y = float(canvas.diaphragm_y(x, plan["side"])) - 0.04
        win, pad = canvas.ellipse(x, y, 0.09, 0.06, edge=0.5)
        pad = pad * lung_side_mask(canvas, plan["side"], win)
        canvas.air[win] *= 1.0 - 0.7 * pad
        box = canvas.layer_box(pad, 0.15, win)
        return [(box, plan["side"])] if box else []


@register("pneumoperitoneum")
class Pneumoperitoneum(Renderer):
    """Free air under the hemidiaphragms: lucent crescents below the domes."""

    def plan(self, term, geo, rng):
        return {"sides": side_of(term, rng, default_bilateral=True), "h": 0.02 + 0.03 * severity(term, 0.5)}

    def draw(self, canvas, plan):
        marks = []
        for side in plan["sides"]:
            s = 1 if side == "left" else -1
            if canvas.view == PA:
                win = canvas.window(min(0.1 * s, 0.75 * s), 0.1, max(0.1 * s, 0.75 * s), 0.9)
                X, Y = canvas.X[win], canvas.Y[win]
                dome = canvas.diaphragm_y(X, side)
                crescent = ramp(Y - dome - 0.012, 0.01) * ramp(dome + 0.012 + plan["h"] - Y, 0.012)
                crescent *= ramp(np.abs(X) - 0.2, 0.05) * ramp(canvas.rib_cage_half_width(Y) - 0.08 - np.abs(X), 0.05)
            else:
                win = canvas.window(-0.6, 0.1, 0.2, 0.9)
                Z, Y = canvas.X[win], canvas.Y[win]
                dome = lateral_diaphragm_y(canvas, Z)
                crescent = ramp(Y - dome - 0.012, 0.01) * ramp(dome + 0.012 + plan["h"] - Y, 0.012) * ramp(0.0 - Z, 0.1)
            canvas.air[win] += 0.8 * crescent
            box = canvas.layer_box(crescent, 0.2, win)
            if box:
                marks.append((box, side))
            if canvas.view != PA:
                break
        return marks


@register("nipple shadow")
class NippleShadow(Renderer):
    def plan(self, term, geo, rng):
        return {"sides": side_of(term, rng, default_bilateral=True), "y": rng.uniform(0.15, 0.35), "x": rng.uniform(0.45, 0.6)}

    def draw(self, canvas, plan):
        if canvas.view != PA:
            return []
        marks = []
        for side in plan["sides"]:
            s = 1 if side == "left" else -1
            x, y = s * plan["x"], plan["y"]
            canvas.blob(canvas.add, x, y, 0.025, 0.022, 0.16, edge=0.3)
            box = canvas.box(x - 0.03, y - 0.03, x + 0.03, y + 0.03)
            if box:
                marks.append((box, side))
        return marks
