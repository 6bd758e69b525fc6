"""Devices and hardware: central lines, pacemakers with leads, sternotomy wires, surgical clips,
tubes, stents, foreign bodies, spinal fusion rods, shoulder prostheses; plus image quality.

Metal is far denser than bone, so devices use large amplitudes (0.6-1.2) and thin strokes.
"""

from __future__ import annotations

import math

from radgen.data.phantom.anatomy import PA
from radgen.data.phantom.findings import Renderer, arc, register, side_of

METAL = 0.9


def _side_sign(side):
    return 1 if side == "left" else -1


def _lateral_z(x: float) -> float:
    """Devices in the anterior chest wall (ports, generators) sit anteriorly on the lateral view."""
    return -0.62 + 0.05 * abs(x)


def _stroke_marks(canvas, paths, width, amp, laterality, blur=0.7, closed=False):
    layer = canvas.strokes(paths, width, blur=blur, closed=closed)
    canvas.add += amp * layer
    box = canvas.layer_box(layer, 0.1)
    return [(box, laterality)] if box else []


# Placement of small hardware named by a location word: (x, y, z) with x for a right-sided term.
SITES = {
    "abdomen": (-0.4, 0.72, -0.2),
    "breast": (-0.5, 0.45, -0.7),
    "shoulder": (-0.85, -0.72, 0.0),
    "humerus": (-0.88, -0.65, 0.0),
    "axilla": (-0.65, -0.45, 0.0),
    "thorax": (-0.45, -0.15, 0.0),
    "hilum": (-0.2, -0.12, 0.0),
    "neck": (-0.1, -0.95, -0.1),
    "cervical vertebrae": (0.0, -0.98, 0.45),
    "mediastinum": (0.0, -0.3, -0.2),
    "heart": (0.1, 0.3, -0.25),
    "lung": (-0.45, -0.1, 0.0),
    "spine": (0.0, 0.1, 0.52),
    "thoracic vertebrae": (0.0, 0.1, 0.52),
    "clavicle": (-0.35, -0.72, 0.0),
}


def site_of(term, rng, default="thorax"):
    for word, (x, y, z) in SITES.items():
        if term.has(word):
            name = word
            break
    else:
        name, (x, y, z) = default, SITES[default]
    sides = side_of(term, rng)
    side = sides[0]
    if x != 0.0:
        x = abs(x) * _side_sign(side)
    else:
        side = None if term.laterality is None else side
    return name, side, (x + rng.uniform(-0.05, 0.05), y + rng.uniform(-0.04, 0.04), z)


@register("catheters, indwelling", "catheter")
class CentralLine(Renderer):
    """Central venous catheter from a subclavian/jugular approach, tip at the cavoatrial junction."""

    def plan(self, term, geo, rng):
        if term.has("abdomen"):
            return {"kind": "drain", "side": term.laterality or "right", "jitter": rng.uniform(-0.05, 0.05)}
        side = term.laterality if term.laterality in ("left", "right") else ("right" if rng.random() < 0.6 else "left")
        port = rng.random() < 0.35
        tip = rng.uniform(-0.12, 0.02)
        return {"kind": "cvc", "side": side, "port": port, "tip": tip, "seed": [rng.uniform(-0.02, 0.02) for _ in range(6)]}

    def draw(self, canvas, plan):
        side = plan["side"]
        s = _side_sign(side)
        if plan["kind"] == "drain":
            x = s * 0.4 + plan["jitter"]
            if canvas.view == PA:
                path = [(x, 1.05), (x + 0.05, 0.85), (x - 0.02, 0.7)]
            else:
                path = [(-0.3, 1.05), (-0.25, 0.85), (-0.2, 0.72)]
            return _stroke_marks(canvas, [path], 0.012, 0.5, side)
        j = plan["seed"]
        if canvas.view == PA:
            path = [(s * 0.8, -1.02), (s * 0.55 + j[0], -0.8), (s * 0.3 + j[1], -0.7), (s * 0.12, -0.6), (-0.05 + j[2], -0.4), (-0.06 + j[3], plan["tip"])]
        else:
            path = [(-0.35, -1.02), (-0.45 + j[0], -0.75), (-0.3, -0.5), (-0.15 + j[4], -0.3), (-0.12, plan["tip"])]
        marks = _stroke_marks(canvas, [path], 0.011, 0.45, side)
        if plan["port"]:
            x, y = (s * 0.42, -0.58) if canvas.view == PA else (_lateral_z(0.42), -0.58)
            canvas.blob(canvas.add, x, y, 0.035, 0.03, METAL, edge=0.15)
            box = canvas.box(x - 0.04, y - 0.035, x + 0.04, y + 0.035)
            if marks and box:
                b = marks[0][0]
                marks = [([min(b[0], box[0]), min(b[1], box[1]), max(b[2], box[2]), max(b[3], box[3])], side)]
        return marks


@register("implanted medical device", "medical device", "pacemaker, artificial", "defibrillators, implantable", "prostheses and implants", "heart valve prosthesis")
class ImplantedDevice(Renderer):
    """Pacemaker (generator + leads to RA/RV), prosthetic valve ring, shoulder prosthesis, or a small implant."""

    def plan(self, term, geo, rng):
        if term.has("aortic valve", "mitral valve", "heart", "heart atria", "heart ventricles") or term.heading.lower() == "heart valve prosthesis":
            return {"kind": "valve", "mitral": term.has("mitral valve"), "tilt": rng.uniform(-0.4, 0.4)}
        if term.has("humerus", "shoulder"):
            return {"kind": "shoulder", "side": side_of(term, rng)[0]}
        if term.has("cervical vertebrae"):
            return {"kind": "plate", "side": None, "x": 0.0, "y": -0.97}
        if term.has("pulmonary artery"):
            return {"kind": "coil", "side": side_of(term, rng)[0]}
        side = term.laterality if term.laterality in ("left", "right") else ("left" if rng.random() < 0.8 else "right")
        leads = int(rng.integers(1, 4))
        return {"kind": "pacer", "side": side, "leads": leads, "dx": rng.uniform(-0.06, 0.06), "dy": rng.uniform(-0.05, 0.05), "j": [rng.uniform(-0.03, 0.03) for _ in range(6)]}

    def draw(self, canvas, plan):
        kind = plan["kind"]
        if kind == "valve":
            hx, hy, rx, ry = canvas.heart_geometry()
            cx, cy = (hx - rx * 0.1, hy - ry * 0.35) if canvas.view == PA else (-0.15, 0.1)
            if plan["mitral"]:
                cx, cy = cx + 0.08, cy + 0.05
            path = arc(cx, cy, 0.05, 0.035, 0, 2 * math.pi, n=20)
            return _stroke_marks(canvas, [path], 0.014, METAL, None)
        if kind == "shoulder":
            s = _side_sign(plan["side"])
            if canvas.view != PA:
                return []
            canvas.blob(canvas.add, s * 0.88, -0.74, 0.1, 0.1, METAL, edge=0.08)
            stem = canvas.strokes([[(s * 0.9, -0.7), (s * 0.95, -0.35)]], 0.04, blur=0.8)
            canvas.add += METAL * stem
            box = canvas.box(s * 0.88 - 0.11, -0.85, s * 0.88 + 0.11, -0.3)
            return [(box, plan["side"])] if box else []
        if kind == "plate":
            x, y = (0.0, -0.97) if canvas.view == PA else (0.38, -0.97)
            return _stroke_marks(canvas, [[(x, y - 0.08), (x, y + 0.08)]], 0.03, METAL, None)
        if kind == "coil":
            s = _side_sign(plan["side"])
            x, y = (s * 0.2, -0.15) if canvas.view == PA else (0.05, -0.15)
            path = [(x + 0.02 * math.cos(k), y + 0.004 * k) for k in range(12)]
            return _stroke_marks(canvas, [path], 0.01, METAL, plan["side"])
        # Pacemaker: generator in the upper chest wall, leads via the subclavian vein into the heart.
        side, s, j = plan["side"], _side_sign(plan["side"]), plan["j"]
        gx, gy = s * 0.55 + plan["dx"], -0.66 + plan["dy"]
        hx, hy, rx, ry = canvas.heart_geometry()
        targets = [(-0.05, hy - ry * 0.5), (hx + rx * 0.4, hy + ry * 0.5), (hx + rx * 0.7, hy)]
        if canvas.view == PA:
            paths = [[(gx, gy), (s * 0.3 + j[k], -0.72), (s * 0.08, -0.6), (-0.05 + j[k + 3], -0.3), target] for k, target in enumerate(targets[: plan["leads"]])]
            gen = (gx, gy)
        else:
            lat_targets = [(-0.2, 0.0), (-0.45, 0.35), (-0.1, 0.25)]
            gen = (_lateral_z(gx), gy)
            paths = [[gen, (-0.45, -0.6), (-0.2, -0.3), target] for target in lat_targets[: plan["leads"]]]
        leads = canvas.strokes(paths, 0.01, blur=0.7)
        canvas.add += 0.7 * leads
        canvas.blob(canvas.add, gen[0], gen[1], 0.07, 0.05, METAL * 1.2, edge=0.12)
        box = canvas.layer_box(leads, 0.1)
        gb = canvas.box(gen[0] - 0.075, gen[1] - 0.055, gen[0] + 0.075, gen[1] + 0.055)
        if box and gb:
            box = [min(box[0], gb[0]), min(box[1], gb[1]), max(box[2], gb[2]), max(box[3], gb[3])]
        return [(box or gb, side)] if (box or gb) else []


@register("surgical instruments", "sternotomy", "surgical staplers")
class SurgicalHardware(Renderer):
    """Median sternotomy wires (mediastinum or unspecified) or clusters of surgical clips elsewhere."""

    def plan(self, term, geo, rng):
        if term.has("mediastinum", "sternum") or (not term.locations and term.laterality is None):
            n = int(rng.integers(5, 8))
            return {"kind": "wires", "ys": sorted(rng.uniform(-0.6, 0.25, n).tolist()), "dx": rng.uniform(-0.03, 0.03)}
        name, side, (x, y, z) = site_of(term, rng, "thorax")
        if name == "abdomen" and not term.laterality:
            x, side = -0.4, "right"  # cholecystectomy clips, right upper quadrant
        if name == "abdomen":
            y = max(y, 0.6)
        clips = [(rng.uniform(-0.06, 0.06), rng.uniform(-0.06, 0.06), rng.uniform(0, math.pi)) for _ in range(int(rng.integers(3, 7)))]
        return {"kind": "clips", "side": side, "at": (x, y, z), "clips": clips}

    def draw(self, canvas, plan):
        if plan["kind"] == "wires":
            paths = []
            for y in plan["ys"]:
                if canvas.view == PA:
                    x = plan["dx"]
                    paths.append(arc(x, y, 0.03, 0.012, 0, 2 * math.pi, n=10) + [(x, y + 0.03)])
                else:
                    z = -0.68
                    paths.append([(z - 0.02, y), (z + 0.03, y + 0.01)])
            return _stroke_marks(canvas, paths, 0.01, METAL, None, closed=False)
        x, y, z = plan["at"]
        cx = x if canvas.view == PA else z
        paths = [[(cx + dx - 0.015 * math.cos(a), y + dy - 0.015 * math.sin(a)), (cx + dx + 0.015 * math.cos(a), y + dy + 0.015 * math.sin(a))] for dx, dy, a in plan["clips"]]
        return _stroke_marks(canvas, paths, 0.009, METAL, plan["side"])


@register("tube, inserted", "tube")
class Tube(Renderer):
    """Endotracheal tube (trachea), nasogastric tube (abdomen) or chest tube (thorax, a side)."""

    def plan(self, term, geo, rng):
        if term.has("abdomen"):
            return {"kind": "ng", "j": rng.uniform(-0.03, 0.03)}
        if term.has("thorax") or (term.laterality in ("left", "right") and not term.has("trachea")):
            return {"kind": "chest", "side": term.laterality or side_of(term, rng)[0], "j": rng.uniform(-0.05, 0.05)}
        return {"kind": "ett", "tip": rng.uniform(-0.55, -0.42)}

    def draw(self, canvas, plan):
        if plan["kind"] == "ett":
            if canvas.view == PA:
                walls = [[(x, -1.05), (x, plan["tip"])] for x in (-0.018, 0.018)]
            else:
                walls = [[(-0.16 + dz, -1.05), (-0.04 + dz, plan["tip"])] for dz in (-0.015, 0.015)]
            return _stroke_marks(canvas, walls, 0.008, 0.55, None)
        if plan["kind"] == "ng":
            b = canvas.body
            if canvas.view == PA:
                path = [(0.0, -1.05), (0.02, -0.3), (0.05 + plan["j"], 0.3), (0.3, b.diaphragm["left"] + 0.15)]
            else:
                path = [(0.3, -1.05), (0.3, -0.3), (0.2, 0.3), (-0.05, b.diaphragm["left"] + 0.12)]
            return _stroke_marks(canvas, [path], 0.01, 0.55, None)
        s = _side_sign(plan["side"])
        if canvas.view == PA:
            path = [(s * 0.95, 0.45), (s * 0.72, 0.35 + plan["j"]), (s * 0.55, -0.1), (s * 0.35, -0.55)]
        else:
            path = [(0.2, 0.6), (0.1, 0.2), (0.0, -0.4)]
        return _stroke_marks(canvas, [path], 0.018, 0.5, plan["side"])


@register("stents", "foreign bodies", "spinal fusion", "fixation, internal")
class SmallHardware(Renderer):
    """Stents (mesh tube), foreign bodies (dense fragment) and spinal fusion rods with screws."""

    def plan(self, term, geo, rng):
        heading = term.heading.lower()
        if heading in ("spinal fusion", "fixation, internal") and (heading == "spinal fusion" or term.has("spine", "thoracic vertebrae")):
            return {"kind": "fusion", "y0": rng.uniform(-0.2, 0.2), "levels": int(rng.integers(3, 7))}
        default = "heart" if heading == "stents" else "thorax"
        name, side, at = site_of(term, rng, default)
        return {"kind": heading.split(",")[0], "side": side, "at": at, "angle": rng.uniform(0, math.pi), "n": int(rng.integers(1, 3))}

    def draw(self, canvas, plan):
        if plan["kind"] == "fusion":
            y0, y1 = plan["y0"], plan["y0"] + plan["levels"] * 0.118
            if canvas.view == PA:
                x = float(canvas.spine_x((y0 + y1) / 2))
                paths = [[(x + dx, y0), (x + dx, y1)] for dx in (-0.05, 0.05)]
                paths += [[(x + dx - 0.025, y), (x + dx + 0.025, y)] for dx in (-0.05, 0.05) for y in (y0, y1)]
            else:
                paths = [[(0.64, y0), (0.64, y1)]] + [[(0.5, y), (0.66, y)] for y in (y0, y1)]
            return _stroke_marks(canvas, paths, 0.015, METAL, None)
        x, y, z = plan["at"]
        cx = x if canvas.view == PA else z
        a = plan["angle"]
        if plan["kind"] == "stents":
            c, s = math.cos(a), math.sin(a)
            paths = [[(cx - 0.04 * c + w * s, y - 0.04 * s - w * c), (cx + 0.04 * c + w * s, y + 0.04 * s - w * c)] for w in (-0.012, 0.012)]
            paths += [[(cx + t * c - 0.012 * s, y + t * s + 0.012 * c), (cx + (t + 0.01) * c + 0.012 * s, y + (t + 0.01) * s - 0.012 * c)] for t in (-0.04, -0.02, 0.0, 0.02)]
            return _stroke_marks(canvas, paths, 0.005, 0.7, plan["side"])
        paths = [[(cx - 0.02 * math.cos(a + k), y - 0.02 * math.sin(a + k)), (cx + 0.02 * math.cos(a + k), y + 0.02 * math.sin(a + k))] for k in range(plan["n"])]
        return _stroke_marks(canvas, paths, 0.02, METAL * 1.2, plan["side"])


@register("technical quality of image unsatisfactory")
class PoorQuality(Renderer):
    """Underexposed, noisy, rotated film: a whole-image finding."""

    def adjust(self, body, term, rng):
        body.noise *= 2.2
        body.gain *= 0.7
        body.rotation += rng.choice([-1, 1]) * 0.05

    def draw(self, canvas, plan):
        return [([0, 0, canvas.size, canvas.size], None)]

