"""Contact sheet of 16 IU-Phantom studies (PA + lateral, ground-truth boxes, MeSH terms).

    PYTHONPATH=. python benchmarks/phantom_contact_sheet.py [--csv ...] [--out docs/images/phantom_contact_sheet.png]

Picks a normal study and the first study (by uid) with each of 15 common findings, renders them
at 256 px with seed 0 and lays them out 4 x 4: PA left, lateral right, boxes in colour (blue =
patient right, red = patient left, green = midline/bilateral), the study's MeSH terms underneath.
"""

from __future__ import annotations

import argparse
import io
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from benchmarks.phantom_common import DEFAULT_CSV, iu_studies  # noqa: E402
from radgen.data.phantom.render import render_terms  # noqa: E402
from radgen.io import atomic_write_bytes  # noqa: E402

WANTED = [
    "normal", "Cardiomegaly", "Pleural Effusion", "Opacity", "Pulmonary Atelectasis", "Calcified Granuloma",
    "Pneumothorax", "Catheters, Indwelling", "Implanted Medical Device", "Scoliosis", "Lung/hyperdistention",
    "Fractures, Bone", "Surgical Instruments", "Nodule", "Pulmonary Edema", "Aorta/tortuous",
]
COLOURS = {"left": (230, 60, 60), "right": (60, 120, 240), None: (60, 200, 90), "bilateral": (60, 200, 90)}
CELL, TEXT_H = 256, 58


def pick(studies):
    chosen, used = [], set()
    for wanted in WANTED:
        for study in studies:
            terms = study.labels["mesh"]
            if study.study_id in used:
                continue
            if wanted == "normal":
                hit = terms == ["normal"]
            else:
                hit = any(t.startswith(wanted) for t in terms) and len(terms) <= 4
            if hit:
                chosen.append(study)
                used.add(study.study_id)
                break
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--out", type=Path, default=Path("docs/images/phantom_contact_sheet.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    studies = pick(iu_studies(args.csv))
    font = ImageFont.load_default()
    sheet = Image.new("RGB", (4 * 2 * CELL + 3 * 8, 4 * (CELL + TEXT_H)), (255, 255, 255))
    for k, study in enumerate(studies):
        rendering = render_terms(study.labels["mesh"], study.study_id, seed=args.seed, size=CELL)
        x0, y0 = (k % 4) * (2 * CELL + 8), (k // 4) * (CELL + TEXT_H)
        for j, view in enumerate(("PA", "LATERAL")):
            tile = Image.fromarray(rendering.images[view]).convert("RGB")
            draw = ImageDraw.Draw(tile)
            for mark in rendering.marks[view]:
                draw.rectangle(mark["box"], outline=COLOURS.get(mark["laterality"], (60, 200, 90)), width=1)
            draw.text((4, 3), f"{study.study_id} {view}", fill=(255, 255, 0), font=font)
            sheet.paste(tile, (x0 + j * CELL, y0))
        caption = "; ".join(study.labels["mesh"])
        if rendering.unrenderable:
            caption += "  [not drawn: " + "; ".join(rendering.unrenderable) + "]"
        ImageDraw.Draw(sheet).multiline_text((x0 + 3, y0 + CELL + 3), "\n".join(textwrap.wrap(caption, 84)[:4]), fill=(0, 0, 0), font=font)
    buffer = io.BytesIO()
    # A fixed palette of 60 greys + the box/label colours halves the file (the noise does not compress).
    greys = [round(255 * i / 59) for i in range(60)]
    colours = [(255, 255, 0), *{c for c in COLOURS.values()}]
    entries = [(g, g, g) for g in greys] + colours
    palette = Image.new("P", (1, 1))
    palette.putpalette([v for rgb in entries for v in rgb] + [0] * (768 - 3 * len(entries)))
    sheet.quantize(palette=palette, dither=Image.Dither.NONE).save(buffer, format="PNG", optimize=True)
    atomic_write_bytes(args.out, buffer.getvalue())
    print(f"wrote {args.out} ({len(studies)} studies)")


if __name__ == "__main__":
    main()
