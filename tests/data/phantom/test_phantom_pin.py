"""IU-Phantom's pixels for fixed studies and seeds, pinned per PHANTOM_VERSION.

Studies, trained models and benchmark numbers name a phantom version; a renderer change that alters
the images without bumping the version would silently make them incomparable. The pins are the
renderer's own output by design (a change detector, not a correctness check): change them only
together with a PHANTOM_VERSION bump, adding the new version's entry and keeping the old one
(`python tests/data/phantom/test_phantom_pin.py` writes the current version's file).

Why not exact hashes (the pins until 2026-12-01): numpy computes float32 exp and power with
different SIMD code on different CPUs (AVX-512 vs AVX2-only, aarch64), which differ in the last
bit, so a few pixels land one grey level apart. On an AVX2-only AMD EPYC two of six pinned images
hashed differently from the AVX-512 machine that pinned them. Such a last-bit difference moves a
rare pixel by one grey level (a scratch check: one exp in float64 instead of float32). So the
pin is the image's 8x8 block sums (exact integers), and a render passes when it is within a few
grey levels of them in total; a real change (geometry, noise, seed, a finding) moves hundreds of
blocks (`test_the_pin_catches_a_changed_render`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from radgen.data.phantom.render import PHANTOM_VERSION, render_terms

FINDINGS = ["Cardiomegaly/mild", "Pleural Effusion/right/small", "Nodule/lung/upper lobe/left"]
# (study id, terms, seed, size); 512 is the default size
PINNED_STUDIES = [("pin-study", tuple(FINDINGS), 7, 256), ("pin-study", tuple(FINDINGS), 7, 512), ("pin-normal", ("normal",), 0, 128)]
PIN_FILE = Path(__file__).with_name(f"phantom_pins_v{PHANTOM_VERSION}.npz")
BLOCK = 8
# grey levels a render may differ from its pin, summed over the image, and in any one 8x8 block:
# covers last-bit differences between CPUs (a few pixels, 1 level each) with room to spare
TOTAL_TOLERANCE, BLOCK_TOLERANCE = 24, 4

# ground-truth boxes of the 256 px study, per view, in FINDINGS order (pinned with the pixels)
BOXES_V1 = {
    "PA": [[98, 120, 201, 192], [38, 153, 69, 173], [158, 51, 166, 59]],
    "LATERAL": [[50, 105, 157, 178], [151, 155, 202, 187], [115, 50, 123, 58]],
}


def block_sums(image) -> np.ndarray:
    """Sums of the 8-bit pixels over BLOCK x BLOCK tiles (int64, exact)."""
    pixels = np.asarray(image, dtype=np.int64)
    h, w = pixels.shape
    return pixels.reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).sum(axis=(1, 3))


def pin_name(study: tuple, view: str) -> str:
    return f"{study[0]}-{study[2]}-{study[3]}px-{view}"


def render(study: tuple) -> dict:
    study_id, terms, seed, size = study
    return render_terms(list(terms), study_id, seed=seed, size=size).images


def distance(got: np.ndarray, pinned: np.ndarray) -> tuple[int, int]:
    """(total, largest-block) absolute difference in grey levels."""
    diff = np.abs(got - pinned)
    return int(diff.sum()), int(diff.max())


@pytest.fixture(scope="module")
def pins() -> dict:
    assert PIN_FILE.exists(), f"a new PHANTOM_VERSION needs its pins: run python {Path(__file__).as_posix()}"
    with np.load(PIN_FILE, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


def test_this_version_has_pins(pins):
    assert sorted(pins) == sorted(pin_name(s, v) for s in PINNED_STUDIES for v in ("PA", "LATERAL"))


@pytest.mark.parametrize("study", PINNED_STUDIES, ids=lambda s: f"{s[0]}-{s[3]}px")
def test_pixels_match_the_pin(study, pins):
    for view, image in render(study).items():
        total, worst = distance(block_sums(image), pins[pin_name(study, view)])
        assert total <= TOTAL_TOLERANCE and worst <= BLOCK_TOLERANCE, (
            f"renderer output changed ({view}: {total} grey levels in all, {worst} in one block): "
            f"bump PHANTOM_VERSION (now {PHANTOM_VERSION})")


def test_the_pin_catches_a_changed_render(pins):
    # the tolerance would be worthless if small real changes passed: another seed, one finding
    # fewer, or a 1% brighter image are all far outside it
    study = PINNED_STUDIES[2]
    pinned = pins[pin_name(study, "PA")]
    other_seed = render_terms(list(study[1]), study[0], seed=study[2] + 1, size=study[3]).images["PA"]
    assert distance(block_sums(other_seed), pinned)[0] > 20 * TOTAL_TOLERANCE
    brighter = np.clip(np.asarray(render(study)["PA"], dtype=np.float64) * 1.01 + 0.5, 0, 255).astype(np.uint8)
    assert distance(block_sums(brighter), pinned)[0] > 20 * TOTAL_TOLERANCE
    fewer = render_terms(FINDINGS[:2], "pin-study", seed=7, size=256).images["PA"]
    assert distance(block_sums(fewer), pins[pin_name(PINNED_STUDIES[0], "PA")])[1] > BLOCK_TOLERANCE


def test_ground_truth_of_the_pinned_study():
    rendering = render_terms(FINDINGS, "pin-study", seed=7, size=256)
    assert rendering.unrenderable == []
    for view in ("PA", "LATERAL"):
        marks = rendering.marks[view]
        # observation and side follow from the MeSH terms (CheXpert mapping), independent of the renderer
        assert [(m["term"], m["observation"], m["laterality"]) for m in marks] == [
            ("Cardiomegaly/mild", "Cardiomegaly", None),
            ("Pleural Effusion/right/small", "Pleural Effusion", "right"),
            ("Nodule/lung/upper lobe/left", "Lung Lesion", "left"),
        ]
        if PHANTOM_VERSION == 1:
            assert [m["box"] for m in marks] == BOXES_V1[view]


def test_seed_and_study_change_the_pixels():
    # the pin would be worthless if the render ignored its inputs
    base = render_terms(FINDINGS, "pin-study", seed=7, size=128).images["PA"]
    assert not (render_terms(FINDINGS, "pin-study", seed=8, size=128).images["PA"] == base).all()
    assert not (render_terms(FINDINGS, "pin-study-2", seed=7, size=128).images["PA"] == base).all()
    assert not (render_terms(FINDINGS[:1], "pin-study", seed=7, size=128).images["PA"] == base).all()


if __name__ == "__main__":
    if PIN_FILE.exists():
        raise SystemExit(f"{PIN_FILE} exists: pins change only with a PHANTOM_VERSION bump")
    np.savez_compressed(PIN_FILE, **{pin_name(s, v): block_sums(im).astype(np.uint16)
                                     for s in PINNED_STUDIES for v, im in render(s).items()})
    print(f"wrote {PIN_FILE}")
