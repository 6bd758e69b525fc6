"""IU-Phantom's pixels for fixed studies and seeds, pinned by hash per PHANTOM_VERSION.

Studies, trained models and benchmark numbers name a phantom version; a renderer change that alters
the images without bumping the version would silently make them incomparable. These hashes are the
renderer's own output by design (a change detector, not a correctness check): change them only
together with a PHANTOM_VERSION bump, adding the new version's entry and keeping the old one.
The hashes are over the decoded 8-bit pixels, not PNG bytes (those depend on the zlib build).
"""

from __future__ import annotations

import hashlib

import pytest

from radgen.data.phantom.render import PHANTOM_VERSION, render_terms

FINDINGS = ["Cardiomegaly/mild", "Pleural Effusion/right/small", "Nodule/lung/upper lobe/left"]

# version -> {(study id, terms, seed, size): {view: sha256 of the pixels}}
PINNED = {
    1: {
        ("pin-study", tuple(FINDINGS), 7, 256): {
            "PA": "13d42e540c90faaf4ddcdb3768825e7c060fd975cc45d0c24a2bb7d578052e1c",
            "LATERAL": "9519238484d11bcb6d08643a5d28b75980f83271d18015b44d5c1334952c19f8",
        },
        ("pin-study", tuple(FINDINGS), 7, 512): {  # the default size
            "PA": "e488cd33685c12e0ecf5d3af41a5ac0c7aed817bf91949b3cfeee312988ecc49",
            "LATERAL": "ad8312a49bedd913dc8ad2d4fe2348ec0de4fbdd03d55224f9e6ca82458e030b",
        },
        ("pin-normal", ("normal",), 0, 128): {
            "PA": "81124b5531c362fad52c13ac6b81cc6ed0430e93a3193c3774e229c654b63fa1",
            "LATERAL": "f5f7350d3e54faaceb5406883b38f566b9db959753654bc4593b59d859faf32b",
        },
    },
}

# ground-truth boxes of the 256 px study, per view, in FINDINGS order (pinned with the pixels)
BOXES_V1 = {
    "PA": [[98, 120, 201, 192], [38, 153, 69, 173], [158, 51, 166, 59]],
    "LATERAL": [[50, 105, 157, 178], [151, 155, 202, 187], [115, 50, 123, 58]],
}


def test_this_version_has_pins():
    assert PHANTOM_VERSION in PINNED, "a new PHANTOM_VERSION needs its hashes in PINNED"


@pytest.mark.parametrize("key", list(PINNED.get(PHANTOM_VERSION, {})), ids=lambda k: f"{k[0]}-{k[3]}px")
def test_pixels_match_the_pinned_hash(key):
    study_id, terms, seed, size = key
    rendering = render_terms(list(terms), study_id, seed=seed, size=size)
    got = {view: hashlib.sha256(image.tobytes()).hexdigest() for view, image in rendering.images.items()}
    assert got == PINNED[PHANTOM_VERSION][key], f"renderer output changed: bump PHANTOM_VERSION (now {PHANTOM_VERSION})"


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
    # the pin would be worthless if the hash ignored its inputs
    base = render_terms(FINDINGS, "pin-study", seed=7, size=128).images["PA"]
    assert not (render_terms(FINDINGS, "pin-study", seed=8, size=128).images["PA"] == base).all()
    assert not (render_terms(FINDINGS, "pin-study-2", seed=7, size=128).images["PA"] == base).all()
    assert not (render_terms(FINDINGS[:1], "pin-study", seed=7, size=128).images["PA"] == base).all()
