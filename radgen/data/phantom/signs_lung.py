"""Lung signs: opacities, atelectasis, nodules, granulomas, scars, markings, lung volumes,
congestion/edema, lucency, hilar enlargement (pleural signs are in signs_pleura.py).

Amplitudes are in attenuation units: normal lung is ~0.3 (display ~0.3) and soft tissue ~0.8, so
an opacity of 0.2 greys a lung region clearly without making it as white as the heart; fluid
(signs_pleura) instead removes the lung air, which makes it look like soft tissue.
"""

from __future__ import annotations

import numpy as np

from radgen.data.phantom.anatomy import PA
from radgen.data.phantom.lateral import lateral_diaphragm_y
from radgen.data.phantom.findings import (
    LUNG_WORDS,
    Renderer,
    ellipse_box,
    lobular_density,
    lung_side_mask,
    lung_spot,
    project,
    register,
    severity,
    side_of,
    zone_of,
)

SEED_SPACE = 2**31


def _is_lung_term(term) -> bool:
    return not term.locations or bool(set(term.locations) & LUNG_WORDS) or term.laterality is not None


@register("opacity", "airspace disease", "infiltrate", "consolidation", "pneumonia", "density")
class AirspaceOpacity(Renderer):
    """Focal/lobar opacity at the term's zone and side; interstitial/diffuse ones become reticular."""

    def plan(self, term, geo, rng):
        if term.has("interstitial", "reticular"):
            return RETICULAR.plan(term, geo, rng)
        if term.heading.lower() == "density" and term.has("round") and not term.has("thorax", "mediastinum", "thoracic vertebrae"):
            return NODULE.plan(term, geo, rng)
        if not _is_lung_term(term) and not term.has("retrocardiac", "paratracheal"):
            return None  # e.g. "Opacity/ribs": not a lung finding we can place honestly
        if term.has("paratracheal"):
            side = side_of(term, rng)[0]
            return {"kind": "para", "side": side, "seed": int(rng.integers(SEED_SPACE))}
        sev = severity(term, 0.5)
        dense = term.heading.lower() in ("consolidation", "pneumonia")
        spots = []
        default_zone = "base" if term.heading.lower() == "airspace disease" else None
        for side in side_of(term, rng, default_bilateral=term.has("diffuse")):
            zone = zone_of(term, rng, default_zone)
            spot = lung_spot(rng=rng, geo=geo, side=side, zone=zone)
            size = 0.09 + 0.1 * sev + rng.uniform(0, 0.04)
            if term.has("diffuse"):
                size += 0.1
            spots.append((spot, size, rng.uniform(0.7, 1.3), int(rng.integers(SEED_SPACE))))
        streaky = term.has("streaky")
        amp = (0.08 + 0.2 * sev) * (1.3 if dense else 1.0)
        return {"kind": "focal", "spots": spots, "amp": amp, "streaky": streaky, "patchy": 0.65 if term.has("patchy") else 0.45}

    def draw(self, canvas, plan):
        if plan.get("kind") == "reticular":
            return RETICULAR.draw(canvas, plan)
        if plan.get("kind") == "nodule":
            return NODULE.draw(canvas, plan)
        if plan["kind"] == "para":
            s = 1 if plan["side"] == "left" else -1
            if canvas.view != PA:
                return []
            b = canvas.body
            cx = s * (b.mediastinum_w * 1.2 + 0.03)
            win, mask = canvas.ellipse(cx, -0.45, 0.06, 0.12, edge=0.5)
            canvas.add[win] += 0.25 * mask
            return [(canvas.layer_box(mask, 0.1, win), plan["side"])]
        marks = []
        for spot, size, aspect, seed in plan["spots"]:
            cx, cy = project(canvas, spot)
            rx, ry = size * aspect, size / aspect
            if plan["streaky"]:
                ry = ry * 0.35
            box = lobular_density(canvas, cx, cy, rx, ry, plan["amp"], seed, spot.side, plan["patchy"])
            if box:
                marks.append((box, spot.side))
        return marks


@register("lung diseases, interstitial", "pulmonary fibrosis", "markings")
class Reticular(Renderer):
    """Interstitial markings: a fine reticular network; bronchovascular markings: thicker vessels."""

    def adjust(self, body, term, rng):
        if term.heading.lower() == "markings" and not term.has("interstitial"):
            body.vessel_gain *= 1.5 + 0.6 * severity(term, 0.4)

    def plan(self, term, geo, rng):
        if term.heading.lower() == "markings" and not term.has("interstitial"):
            return {"kind": "vascular"}
        sides = side_of(term, rng, default_bilateral=True)
        zone = zone_of(term, rng, "base") if term.has(*[z for z in ("apex", "upper lobe", "base", "lower lobe")]) else None
        amp = 0.07 + 0.09 * severity(term, 0.4) + (0.04 if term.heading.lower() == "pulmonary fibrosis" else 0.0)
        return {"kind": "reticular", "sides": sides, "zone": zone, "amp": amp, "seed": int(rng.integers(SEED_SPACE))}

    def draw(self, canvas, plan):
        if plan["kind"] == "vascular":
            if canvas.view != PA:
                return []
            boxes = [(canvas.box(-0.75, -0.55, -0.12, 0.35), "right"), (canvas.box(0.12, -0.55, 0.75, 0.35), "left")]
            return [m for m in boxes if m[0]]
        rng = np.random.default_rng(plan["seed"])
        marks = []
        for side in plan["sides"]:
            if canvas.view == PA:
                s = 1 if side == "left" else -1
                x0, x1 = (0.08, 0.85) if s > 0 else (-0.85, -0.08)
            else:
                x0, x1 = -0.65, 0.55
            y0, y1 = (-0.8, 0.7)
            if plan["zone"] in ("apex", "upper lobe"):
                y1 = -0.1
            elif plan["zone"] in ("base", "lower lobe"):
                y0 = -0.05
            win = canvas.window(x0, y0, x1, y1)
            h, w = win[0].stop - win[0].start, win[1].stop - win[1].start
            # A network: thin ridges of a mid-frequency noise field (|n - 0.5| small).
            # ~28 cells across the image: a fine network whatever the output size.
            cells = max(6, int(28 * w / canvas.size))
            noise = canvas.smooth_noise(rng, cells, win)
            ridges = np.clip(1.0 - np.abs(noise - 0.5) / 0.05, 0.0, 1.0)
            mask = lung_side_mask(canvas, side, win) * ridges
            canvas.add[win] += plan["amp"] * mask
            box = canvas.layer_box(lung_side_mask(canvas, side, win), 0.3, win)
            if box:
                marks.append((box, side))
        return marks


RETICULAR = Reticular()


@register("nodule", "mass", "granuloma")
class Nodule(Renderer):
    """Round soft-tissue nodule(s); a mass is larger and lobulated; granulomas are small and dense."""

    def plan(self, term, geo, rng):
        heading = term.heading.lower()
        if heading == "granuloma" or term.has("calcified"):
            return {"kind": "granuloma", "inner": GRANULOMA.plan(term, geo, rng)}
        if not _is_lung_term(term) and not term.has("round"):
            return None
        count = int(rng.integers(3, 6)) if term.has("multiple", "scattered") else 1
        small = term.has("small")
        spots = []
        sides = side_of(term, rng)
        for i in range(count):
            side = sides[i % len(sides)] if count == 1 or term.laterality else str(rng.choice(["right", "left"]))
            spot = lung_spot(geo, side, zone_of(term, rng), rng)
            if heading == "mass":
                r = rng.uniform(0.07, 0.12)
            else:
                r = rng.uniform(0.018, 0.03) if small else rng.uniform(0.025, 0.045)
            spots.append((spot, r, int(rng.integers(SEED_SPACE))))
        return {"kind": "nodule", "spots": spots, "amp": 0.3 if heading == "mass" else 0.24}

    def draw(self, canvas, plan):
        if plan["kind"] == "granuloma":
            return GRANULOMA.draw(canvas, plan["inner"])
        marks = []
        for spot, r, seed in plan["spots"]:
            cx, cy = project(canvas, spot)
            win, mask = canvas.ellipse(cx, cy, r, r * 0.92, edge=0.3)
            if win is None:
                continue
            lobes = canvas.smooth_noise(np.random.default_rng(seed), 4, win)
            mask = mask * (0.8 + 0.4 * lobes)
            canvas.add[win] += plan["amp"] * mask
            marks.append((canvas.box(cx - r, cy - r, cx + r, cy + r, pad=0.005), spot.side))
        return [m for m in marks if m[0]]


NODULE = Nodule()


@register("calcified granuloma", "granulomatous disease")
class CalcifiedGranuloma(Renderer):
    """Small, very dense, sharply marginated dots; 'granulomatous disease' adds calcified hilar nodes."""

    def plan(self, term, geo, rng):
        heading = term.heading.lower()
        many = term.has("multiple", "scattered") or heading == "granulomatous disease"
        count = int(rng.integers(3, 7)) if many else 1
        sides = side_of(term, rng)
        spots = []
        for i in range(count):
            side = sides[0] if (term.laterality in ("left", "right") or count == 1) else str(rng.choice(["right", "left"]))
            zone = zone_of(term, rng) if count == 1 or term.has(*[z for z in ("apex", "upper lobe", "lower lobe", "base", "middle lobe", "lingula", "hilum")]) else str(rng.choice(["upper lobe", "middle lobe", "lower lobe", "base", "apex"]))
            spots.append((lung_spot(geo, side, zone, rng), rng.uniform(0.011, 0.02)))
        nodes = []
        if heading == "granulomatous disease":
            for side in ("right", "left"):
                if rng.random() < 0.6:
                    s = 1 if side == "left" else -1
                    nodes.append((side, s * rng.uniform(0.15, 0.22), rng.uniform(-0.2, -0.05)))
        return {"spots": spots, "nodes": nodes}

    def draw(self, canvas, plan):
        marks = []
        for spot, r in plan["spots"]:
            cx, cy = project(canvas, spot)
            canvas.blob(canvas.add, cx, cy, r, r, 0.55, edge=0.35)
            box = canvas.box(cx - r, cy - r, cx + r, cy + r, pad=0.006)
            if box:
                marks.append((box, spot.side))
        for side, x, y in plan["nodes"]:
            cx = x if canvas.view == PA else 0.02
            for k in range(3):
                canvas.blob(canvas.add, cx + 0.015 * (k - 1), y + 0.02 * k, 0.012, 0.016, 0.45, edge=0.3)
            box = canvas.box(cx - 0.04, y - 0.03, cx + 0.04, y + 0.07)
            if box:
                marks.append((box, side))
        return marks


GRANULOMA = CalcifiedGranuloma()


@register("pulmonary atelectasis", "atelectasis")
class Atelectasis(Renderer):
    """Plate-like (discoid) bands at the bases; lobar atelectasis is a wedge plus volume loss."""

    def adjust(self, body, term, rng):
        if term.has("lower lobe") and term.laterality in ("left", "right"):
            body.diaphragm[term.laterality] -= 0.03  # volume loss pulls the hemidiaphragm up

    def plan(self, term, geo, rng):
        lobar = term.has("lower lobe", "middle lobe", "lingula", "upper lobe")
        items = []
        for side in side_of(term, rng):
            zone = zone_of(term, rng, "base")
            spot = lung_spot(geo, side, zone, rng)
            items.append((spot, rng.uniform(-0.25, 0.1), int(rng.integers(1, 3)), int(rng.integers(SEED_SPACE))))
        return {"items": items, "lobar": lobar, "amp": 0.16 + 0.15 * severity(term, 0.4)}

    def draw(self, canvas, plan):
        marks = []
        for spot, tilt, bands, seed in plan["items"]:
            cx, cy = project(canvas, spot)
            s = 1 if spot.side == "left" else -1
            boxes = []
            if plan["lobar"]:
                box = lobular_density(canvas, cx, cy, 0.14, 0.1, plan["amp"] * 1.2, seed, spot.side, 0.2, angle=s * 0.5 if canvas.view == PA else 0.4)
                boxes.append(box)
            else:
                for k in range(bands):
                    angle = tilt * s if canvas.view == PA else tilt
                    box = lobular_density(canvas, cx, cy + 0.05 * k, 0.15, 0.02, plan["amp"], seed + k, spot.side, 0.3, angle=angle)
                    boxes.append(box)
            boxes = [b for b in boxes if b]
            if boxes:
                marks.append(([min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)], spot.side))
        return marks


@register("cicatrix", "fibrosis")
class Scar(Renderer):
    """Scar: a few irregular linear strands; at the apices an apical cap."""

    def plan(self, term, geo, rng):
        if not _is_lung_term(term):
            return None
        items = []
        for side in side_of(term, rng):
            zone = zone_of(term, rng)
            spot = lung_spot(geo, side, zone, rng)
            strands = [[(rng.uniform(-0.06, 0.06), rng.uniform(-0.04, 0.04)) for _ in range(3)] for _ in range(int(rng.integers(3, 6)))]
            items.append((spot, zone, strands))
        return {"items": items}

    def draw(self, canvas, plan):
        marks = []
        for spot, zone, strands in plan["items"]:
            cx, cy = project(canvas, spot)
            paths = [[(cx + dx, cy + dy) for dx, dy in strand] for strand in strands]
            layer = canvas.strokes(paths, 0.012, blur=1.0)
            if zone == "apex" and canvas.view == PA:
                s = 1 if spot.side == "left" else -1
                win, cap = canvas.ellipse(s * 0.45, canvas.body.apex_y + 0.02, 0.22, 0.06, edge=0.6)
                layer[win] += 0.6 * cap * lung_side_mask(canvas, spot.side, win)
            canvas.add += 0.2 * layer
            box = canvas.layer_box(layer, 0.1)
            if box:
                marks.append((box, spot.side))
        return marks


@register("lung", "emphysema", "pulmonary emphysema", "pulmonary disease, chronic obstructive")
class LungVolume(Renderer):
    """Hyperinflation (low flat domes, narrow heart, pruned periphery) or hypoinflation (high domes)."""

    def _mode(self, term):
        heading = term.heading.lower()
        if heading != "lung":
            return "hyper"
        if term.has("hyperdistention"):
            return "hyper"
        if term.has("hypoinflation"):
            return "hypo"
        if term.has("hilum") and term.has("enlarged", "prominent", "lymph nodes"):
            return "hilum"
        if term.has("interstitial"):
            return "interstitial"
        return None

    def adjust(self, body, term, rng):
        mode, sev = self._mode(term), severity(term, 0.5)
        if mode == "hyper":
            for side in body.diaphragm:
                body.diaphragm[side] += 0.07 + 0.08 * sev
            body.dome *= 0.35
            body.apex_y -= 0.03
            body.ctr *= 0.92
            body.lung_air *= 1.06
            if term.heading.lower() != "lung":
                body.vessel_periphery = 0.35  # emphysema destroys peripheral vessels
        elif mode == "hypo":
            for side in body.diaphragm:
                body.diaphragm[side] -= 0.08 + 0.1 * sev
            body.dome *= 1.2
            body.vessel_gain *= 1.2  # crowded bronchovascular markings

    def plan(self, term, geo, rng):
        mode = self._mode(term)
        if mode == "hilum":
            return HILUM.plan(term, geo, rng)
        if mode == "interstitial":
            return RETICULAR.plan(term, geo, rng)
        return {"mode": mode} if mode else None

    def draw(self, canvas, plan):
        if "kind" in plan:
            return (RETICULAR if plan["kind"] == "reticular" else HILUM).draw(canvas, plan)
        b = canvas.body
        low = max(b.diaphragm.values())
        if canvas.view == PA:
            return [(canvas.box(-b.thorax_w - 0.05, min(b.diaphragm.values()) - b.dome - 0.2, b.thorax_w + 0.05, low + 0.08), "bilateral")]
        return [(canvas.box(-0.7, float(lateral_diaphragm_y(canvas, 0.0)) - 0.2, 0.6, low + 0.2), "bilateral")]


@register("pulmonary congestion", "pulmonary edema", "edema", "heart failure")
class Congestion(Renderer):
    """Cephalisation and perihilar haze; edema adds Kerley B lines and a denser bat-wing haze."""

    def adjust(self, body, term, rng):
        body.vessel_upper = 1.9
        body.vessel_gain *= 1.25
        if term.heading.lower() == "heart failure":
            body.ctr = max(body.ctr, rng.uniform(0.54, 0.6))

    def plan(self, term, geo, rng):
        edema = term.heading.lower() in ("pulmonary edema", "edema", "heart failure")
        amp = 0.08 + 0.08 * severity(term, 0.4) + (0.07 if edema else 0.0)
        kerley = []
        if edema:
            for side in ("right", "left"):
                for _ in range(5):
                    kerley.append((side, rng.uniform(0.82, 0.97), rng.uniform(0.55, 0.9)))
        return {"sides": side_of(term, rng, default_bilateral=True), "amp": amp, "kerley": kerley, "seed": int(rng.integers(SEED_SPACE))}

    def draw(self, canvas, plan):
        marks = []
        for side in plan["sides"]:
            s = 1 if side == "left" else -1
            cx = s * 0.3 if canvas.view == PA else 0.0
            box = lobular_density(canvas, cx, -0.1, 0.3, 0.32, plan["amp"], plan["seed"] + (s > 0), side, 0.3)
            lines = []
            for kside, u, v in plan["kerley"]:
                if kside != side:
                    continue
                x, y = canvas.lung_point(side, u, v) if canvas.view == PA else (0.45, canvas.lung_point(side, u, v)[1])
                lines.append([(x, y), (x - s * 0.06, y)])
            if lines:
                layer = canvas.strokes(lines, 0.006, blur=0.8)
                canvas.add += 0.12 * layer * canvas.lung
                kb = canvas.layer_box(layer, 0.1)
                if kb and box:
                    box = [min(box[0], kb[0]), min(box[1], kb[1]), max(box[2], kb[2]), max(box[3], kb[3])]
            if box:
                marks.append((box, side))
        return marks


@register("lucency", "lung, hyperlucent", "cystic fibrosis", "bullous emphysema")
class Lucency(Renderer):
    """A bulla: focal lucency with a hairline wall (hyperlucent lung: a whole lung darker)."""

    def plan(self, term, geo, rng):
        if not _is_lung_term(term):
            return None
        side = side_of(term, rng)[0]
        whole = term.heading.lower() == "lung, hyperlucent"
        return {"side": side, "whole": whole, "spot": lung_spot(geo, side, zone_of(term, rng, "upper lobe"), rng), "r": rng.uniform(0.06, 0.1)}

    def draw(self, canvas, plan):
        side = plan["side"]
        if plan["whole"]:
            if canvas.view != PA:
                return []
            s = 1 if side == "left" else -1
            win = canvas.window(min(0, s), -1, max(0, s), 1)
            lung = lung_side_mask(canvas, side, win)
            canvas.add[win] -= 0.08 * lung
            canvas.vessels[win] *= 1 - 0.5 * lung
            return [(canvas.layer_box(lung, 0.3, win), side)]
        cx, cy = project(canvas, plan["spot"])
        r = plan["r"]
        win, inner = canvas.ellipse(cx, cy, r, r * 0.85, edge=0.08)
        if win is None:
            return []
        _, outer = canvas.ellipse(cx, cy, r * 1.08, r * 0.85 * 1.08, edge=0.06, win=win)
        lung = lung_side_mask(canvas, side, win)
        canvas.add[win] += (-0.1 * inner + 0.1 * np.clip(outer - inner, 0, 1)) * lung
        canvas.vessels[win] *= 1.0 - inner
        return [(ellipse_box(canvas, cx, cy, r * 1.1, r), side)]


@register("pulmonary artery", "hypertension, pulmonary", "lymph nodes", "lymphadenopathy")
class HilarEnlargement(Renderer):
    """Enlarged hila (pulmonary arteries or nodes): bigger lobulated hilar densities."""

    def plan(self, term, geo, rng):
        return {"kind": "hilum", "sides": side_of(term, rng, default_bilateral=True), "r": 0.07 + 0.03 * severity(term, 0.5)}

    def draw(self, canvas, plan):
        marks = []
        for side in plan["sides"]:
            s = 1 if side == "left" else -1
            cx = s * 0.2 if canvas.view == PA else 0.03
            canvas.blob(canvas.add, cx, -0.12, plan["r"], plan["r"] * 1.4, 0.16, edge=0.5)
            box = canvas.box(cx - plan["r"], -0.12 - plan["r"] * 1.4, cx + plan["r"], -0.12 + plan["r"] * 1.4)
            if box:
                marks.append((box, side))
        return marks


HILUM = HilarEnlargement()
