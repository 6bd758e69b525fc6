"""Skeleton signs: degenerative spine (osteophytes, endplate sclerosis), scoliosis, kyphosis,
vertebral compression/deformity, rib/clavicle fractures (gap or healed callus), osteopenia."""

from __future__ import annotations

import numpy as np

from radgen.data.phantom.anatomy import PA, rib_center_y
from radgen.data.phantom.findings import Renderer, register, severity, side_of

VERTEBRA = 0.118  # vertebral period in patient units (see anatomy.draw_spine_pa)


def _vertebra_y(index: int) -> float:
    """Lower endplate height of thoracic vertebra `index` (0 = T1)."""
    return -0.95 + (index + 1) * VERTEBRA


def _spine_box(canvas, y0, y1, half=0.13):
    if canvas.view == PA:
        xs = [float(canvas.spine_x(y)) for y in np.linspace(y0, y1, 9)]
        return canvas.box(min(xs) - half, y0, max(xs) + half, y1)
    return canvas.box(0.52 - half - 0.03, y0, 0.52 + half, y1)


@register("thoracic vertebrae", "spine", "osteophyte", "spondylosis", "arthritis", "lumbar vertebrae", "cervical vertebrae")
class DegenerativeSpine(Renderer):
    """Osteophytes (beaks at endplate margins) and endplate sclerosis over several levels."""

    def plan(self, term, geo, rng):
        heading = term.heading.lower()
        if term.has("cervical vertebrae"):
            return None  # the cervical spine is mostly above a chest film's field of view
        if heading == "arthritis" and not term.has("thoracic vertebrae", "spine"):
            return {"kind": "shoulder", "inner": SHOULDER.plan(term, geo, rng)}
        if heading == "cervical vertebrae":
            return None  # mostly above a chest film's field of view
        if heading in ("thoracic vertebrae", "spine") and not term.has("degenerative") and term.severity == ():
            return None
        if term.has("shoulder", "humerus"):
            return {"kind": "shoulder", "inner": SHOULDER.plan(term, geo, rng)}
        count = int(rng.integers(4, 8)) if term.has("multiple", "diffuse", "scattered") else int(rng.integers(2, 5))
        first = int(rng.integers(3, 11 - min(count, 7)))
        if heading == "lumbar vertebrae" or term.has("lumbar vertebrae"):
            count, first = min(count, 3), 12  # L1-L3 at the bottom of the film
        size = 0.018 + 0.02 * severity(term, 0.4)
        levels = [(first + k, rng.uniform(0.6, 1.2), rng.uniform(0.6, 1.2)) for k in range(count)]
        return {"levels": levels, "size": size}

    def draw(self, canvas, plan):
        if plan.get("kind") == "shoulder":
            return SHOULDER.draw(canvas, plan["inner"])
        paths, plates = [], []
        size = plan["size"]
        for index, left, right in plan["levels"]:
            y = _vertebra_y(index)
            if canvas.view == PA:
                x = float(canvas.spine_x(y))
                for s, scale in ((-1, right), (1, left)):
                    edge = x + s * 0.075
                    paths.append([(edge, y - 0.012), (edge + s * size * scale, y + 0.004), (edge, y + 0.006)])
                plates.append([(x - 0.07, y - 0.01), (x + 0.07, y - 0.01)])
            else:
                front = 0.52 - 0.09
                paths.append([(front, y - 0.012), (front - size * left * 1.2, y + 0.004), (front, y + 0.008)])
                plates.append([(front, y - 0.01), (front + 0.17, y - 0.01)])
        layer = canvas.strokes(paths, 0.012, blur=0.8) + 0.5 * canvas.strokes(plates, 0.01, blur=1.0)
        canvas.add += 0.3 * layer
        box = canvas.layer_box(layer, 0.1)
        return [(box, None)] if box else []


@register("shoulder")
class ShoulderArthritis(Renderer):
    """Degenerative glenohumeral/AC joints: sclerotic, spurred humeral head margins."""

    def plan(self, term, geo, rng):
        if term.heading.lower() == "shoulder" and not term.has("degenerative"):
            return None
        return {"sides": side_of(term, rng, default_bilateral=True), "a": rng.uniform(-0.3, 0.3)}

    def draw(self, canvas, plan):
        if canvas.view != PA:
            return []
        marks = []
        for side in plan["sides"]:
            s = 1 if side == "left" else -1
            cx, cy = s * 0.9, -0.74
            rim = [(cx + 0.115 * np.cos(t), cy + 0.125 * np.sin(t)) for t in np.linspace(2.2 + plan["a"], 4.2 + plan["a"], 8)]
            if s > 0:
                rim = [(2 * cx - x, y) for x, y in rim]
            layer = canvas.strokes([rim], 0.02, blur=0.8)
            canvas.add += 0.3 * layer
            spur = canvas.strokes([[(cx - s * 0.1, cy + 0.1), (cx - s * 0.14, cy + 0.13)]], 0.015, blur=0.6)
            canvas.add += 0.35 * spur
            box = canvas.layer_box(layer + spur, 0.1)
            if box:
                marks.append((box, side))
        return marks


SHOULDER = ShoulderArthritis()


@register("scoliosis")
class Scoliosis(Renderer):
    """Lateral curvature; 'right' = convex to the patient's right (spine bows to image left)."""

    def _side(self, term, rng):
        return term.laterality if term.laterality in ("left", "right") else None

    def adjust(self, body, term, rng):
        side = self._side(term, rng) or ("right" if rng.random() < 0.7 else "left")
        amp = 0.035 + 0.09 * severity(term, 0.45)
        body.scoliosis = amp if side == "left" else -amp

    def plan(self, term, geo, rng):
        return {"side": "left" if geo.body.scoliosis > 0 else "right"}

    def draw(self, canvas, plan):
        if canvas.view != PA:
            return []
        box = _spine_box(canvas, -0.85, 0.75, half=0.16)
        return [(box, plan["side"])] if box else []


@register("kyphosis")
class Kyphosis(Renderer):
    def adjust(self, body, term, rng):
        body.kyphosis = 0.06 + 0.08 * severity(term, 0.5)

    def draw(self, canvas, plan):
        if canvas.view == PA:
            return []
        box = _spine_box(canvas, -0.9, 0.8, half=0.15)
        return [(box, None)] if box else []


class VertebralCompression(Renderer):
    """A wedged, sclerotic vertebra with narrowed height (compression deformity/fracture)."""

    def plan(self, term, geo, rng):
        return {"index": int(rng.integers(5, 11))}

    def draw(self, canvas, plan):
        y = _vertebra_y(plan["index"]) - VERTEBRA * 0.5
        if canvas.view == PA:
            x = float(canvas.spine_x(y))
            canvas.blob(canvas.add, x, y + 0.015, 0.075, 0.022, 0.22, edge=0.2)
            canvas.blob(canvas.add, x, y - 0.035, 0.07, 0.015, -0.08, edge=0.3)
            box = canvas.box(x - 0.09, y - 0.06, x + 0.09, y + 0.05)
        else:
            # Anterior wedge: the front of the body loses height.
            canvas.blob(canvas.add, 0.5, y + 0.01, 0.09, 0.025, 0.22, edge=0.2)
            canvas.blob(canvas.add, 0.45, y - 0.035, 0.05, 0.02, -0.1, edge=0.4)
            box = canvas.box(0.38, y - 0.06, 0.62, y + 0.05)
        return [(box, None)] if box else []


COMPRESSION = VertebralCompression()


class RibLesion(Renderer):
    """Rib fracture: a lucent gap across a posterior rib, or a healed fusiform callus."""

    def plan(self, term, geo, rng):
        count = int(rng.integers(2, 4)) if term.has("multiple") else 1
        healed = term.has("healed", "chronic", "old")
        items = []
        sides = side_of(term, rng)
        for k in range(count):
            side = sides[k % len(sides)]
            items.append((side, int(rng.integers(3, 9)), rng.uniform(0.45, 0.72), rng.uniform(-0.6, 0.6)))
        return {"items": items, "healed": healed}

    def draw(self, canvas, plan):
        if canvas.view != PA:
            return []
        marks = []
        for side, index, lateral, tilt in plan["items"]:
            s = 1 if side == "left" else -1
            x = s * lateral * canvas.body.thorax_w
            y = rib_center_y(canvas, index, x)
            if plan["healed"]:
                canvas.blob(canvas.add, x, y, 0.04, 0.028, 0.14, angle=s * 0.4, edge=0.5)
            else:
                gap = canvas.strokes([[(x - 0.008 + tilt * 0.01, y - 0.03), (x + 0.008 - tilt * 0.01, y + 0.03)]], 0.009, blur=0.6)
                canvas.add -= 0.16 * gap * canvas.body.bone
                canvas.blob(canvas.add, x + s * 0.01, y + 0.012, 0.02, 0.01, 0.08, edge=0.4)
            box = canvas.box(x - 0.045, y - 0.04, x + 0.045, y + 0.04)
            if box:
                marks.append((box, side))
        return marks


RIB = RibLesion()


class ClavicleLesion(Renderer):
    def plan(self, term, geo, rng):
        side = side_of(term, rng)[0]
        return {"side": side, "t": rng.uniform(0.3, 0.6), "healed": term.has("healed", "chronic") or term.heading.lower() == "deformity"}

    def draw(self, canvas, plan):
        if canvas.view != PA:
            return []
        s = 1 if plan["side"] == "left" else -1
        x = s * (0.1 + plan["t"] * 0.5)
        y = -0.66 - plan["t"] * 0.13
        if plan["healed"]:
            canvas.blob(canvas.add, x, y, 0.04, 0.03, 0.18, edge=0.5)
        else:
            gap = canvas.strokes([[(x, y - 0.04), (x + 0.01, y + 0.04)]], 0.01, blur=0.6)
            canvas.add -= 0.3 * gap
        box = canvas.box(x - 0.05, y - 0.05, x + 0.05, y + 0.05)
        return [(box, plan["side"])] if box else []


CLAVICLE = ClavicleLesion()


@register("fractures, bone", "deformity", "rib fractures")
class Fracture(Renderer):
    """Dispatch on the bone named in the term: ribs (default for fractures), clavicle, vertebrae."""

    def plan(self, term, geo, rng):
        if term.has("clavicle"):
            return ("clavicle", CLAVICLE.plan(term, geo, rng))
        if term.has("thoracic vertebrae", "spine", "lumbar vertebrae"):
            return ("spine", COMPRESSION.plan(term, geo, rng))
        if term.has("ribs") or (term.heading.lower() != "deformity" and not term.has("sternum", "humerus", "shoulder", "scapula")):
            return ("rib", RIB.plan(term, geo, rng))
        if term.heading.lower() == "deformity" and not term.locations:
            return ("spine", COMPRESSION.plan(term, geo, rng))
        return None

    def draw(self, canvas, plan):
        kind, inner = plan
        return {"clavicle": CLAVICLE, "spine": COMPRESSION, "rib": RIB}[kind].draw(canvas, inner)


@register("bone diseases, metabolic", "osteoporosis")
class Osteopenia(Renderer):
    """Demineralized bones: ribs, spine and clavicles lose contrast."""

    def adjust(self, body, term, rng):
        body.bone *= 0.45

    def draw(self, canvas, plan):
        b = canvas.body
        if canvas.view == PA:
            box = canvas.box(-b.thorax_w - 0.08, -0.9, b.thorax_w + 0.08, 0.6)
        else:
            box = canvas.box(0.3, -0.9, 0.8, 0.8)
        return [(box, None)] if box else []
