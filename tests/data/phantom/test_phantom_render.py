"""IU-Phantom renderer: determinism, every sign visible inside its box, laterality, unrenderable terms."""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import pytest

from radgen.data.phantom.findings import REGISTRY
from radgen.data.phantom.render import deterministic_split, png_bytes, render_terms, stable_hash, study_seed

SIZE = 128

# One typical term per renderer family, in IU X-Ray spelling (laterality explicit where it matters).
TERMS = [
    "Lung/hypoinflation",
    "Lung/hyperdistention/mild",
    "Opacity/lung/base/left/mild",
    "Opacity/lung/bilateral/interstitial/diffuse",
    "Cardiomegaly/borderline",
    "Cardiomegaly/severe",
    "Pulmonary Atelectasis/base/right",
    "Pulmonary Atelectasis/lower lobe/left",
    "Calcinosis/aorta",
    "Calcinosis/lung/hilum/lymph nodes/right",
    "Thoracic Vertebrae/degenerative/mild",
    "Calcified Granuloma/lung/upper lobe/right",
    "Cicatrix/lung/apex/bilateral",
    "Spine/degenerative",
    "Markings/bronchovascular",
    "Aorta/tortuous",
    "Pleural Effusion/right/small",
    "Pleural Effusion/bilateral/moderate",
    "Diaphragm/left/elevated",
    "Diaphragm/bilateral/flattened",
    "Atherosclerosis/aorta",
    "Deformity/thoracic vertebrae/mild",
    "Airspace Disease/lung/base/bilateral",
    "Scoliosis/thoracic vertebrae/right/mild",
    "Density/lung/middle lobe/right/round",
    "Catheters, Indwelling/left",
    "Nodule/lung/lower lobe/right",
    "Granulomatous Disease",
    "Surgical Instruments/mediastinum",
    "Surgical Instruments/abdomen/right",
    "Aorta, Thoracic/tortuous/mild",
    "Costophrenic Angle/left/blunted",
    "Osteophyte/thoracic vertebrae/multiple",
    "Fractures, Bone/ribs/left/healed",
    "Fractures, Bone/clavicle/right",
    "Pulmonary Congestion/mild",
    "Implanted Medical Device/left",
    "Implanted Medical Device/aortic valve",
    "Emphysema",
    "Pneumothorax/apex/right/small",
    "Pulmonary Edema",
    "Hernia, Hiatal/large",
    "Tube, Inserted/trachea, carina",
    "Thickening/pleura/apex/bilateral",
    "Infiltrate/lung/upper lobe/right",
    "Spondylosis/thoracic vertebrae",
    "Kyphosis",
    "Mass/lung/upper lobe/left",
    "Technical Quality of Image Unsatisfactory",
    "Spinal Fusion",
    "Stents",
    "Foreign Bodies/thorax/left",
    "Bone Diseases, Metabolic",
    "Lucency/lung/upper lobe/right",
    "Pulmonary Artery/enlarged",
    "Mediastinum/enlarged",
    "Diaphragmatic Eventration/right",
    "Density/round",
    "Arthritis",
    "Lumbar Vertebrae/degenerative/multiple",
    "Pericardial Effusion",
    "Aortic Aneurysm",
    "Pneumoperitoneum",
    "Nipple Shadow/bilateral",
    "Lung/hilum/lymph nodes/bilateral/enlarged",
    "Pulmonary Fibrosis/lung/base/bilateral",
    "Fractures, Bone/thoracic vertebrae",
    "Fractures, Bone/ribs/right/multiple",
]

# The 25 most frequent IU X-Ray "Problems" after normal (from indiana_reports.csv), by heading.
TOP_PROBLEMS = [
    "Lung", "Opacity", "Cardiomegaly", "Pulmonary Atelectasis", "Calcinosis", "Thoracic Vertebrae",
    "Calcified Granuloma", "Cicatrix", "Spine", "Markings", "Aorta", "Pleural Effusion", "Diaphragm",
    "Atherosclerosis", "Deformity", "Airspace Disease", "Scoliosis", "Density", "Catheters, Indwelling",
    "Nodule", "Granulomatous Disease", "Surgical Instruments", "Aorta, Thoracic", "Costophrenic Angle",
    "Osteophyte", "Fractures, Bone", "Pulmonary Congestion", "Implanted Medical Device", "Emphysema", "Pneumothorax",
]


def _diff(a: dict, b: dict, view: str) -> np.ndarray:
    return np.abs(a.images[view].astype(np.int16) - b.images[view].astype(np.int16)).astype(np.float32)


def test_same_seed_same_bytes_and_different_seed_differs():
    terms = ["Cardiomegaly/mild", "Pleural Effusion/left/small", "Catheters, Indwelling/right"]
    first = render_terms(terms, "study-1", seed=7, size=SIZE)
    again = render_terms(terms, "study-1", seed=7, size=SIZE)
    for view in ("PA", "LATERAL"):
        assert png_bytes(first.images[view]) == png_bytes(again.images[view])
    assert first.marks == again.marks
    other_seed = render_terms(terms, "study-1", seed=8, size=SIZE)
    other_study = render_terms(terms, "study-2", seed=7, size=SIZE)
    assert png_bytes(other_seed.images["PA"]) != png_bytes(first.images["PA"])
    assert png_bytes(other_study.images["PA"]) != png_bytes(first.images["PA"])


def test_seed_uses_a_stable_hash_not_pythons_hash():
    expected = int.from_bytes(hashlib.sha256(b"3:iu-42").digest()[:8], "little")
    assert study_seed(3, "iu-42") == expected
    assert stable_hash("3:iu-42") == expected


def test_images_are_8bit_grayscale_of_the_requested_size():
    rendering = render_terms(["normal"], "n", size=96)
    for view in ("PA", "LATERAL"):
        image = rendering.images[view]
        assert image.dtype == np.uint8 and image.shape == (96, 96)
        assert image.std() > 20  # a radiograph, not a blank frame
    assert rendering.marks == {"PA": [], "LATERAL": []} and rendering.unrenderable == []


def test_radiograph_polarity_lungs_dark_mediastinum_and_abdomen_bright():
    image = render_terms(["normal"], "polarity", size=256).images["PA"].astype(float)
    lung_right = image[90:150, 50:90].mean()  # image left = patient right lung field
    mediastinum = image[60:120, 120:136].mean()
    abdomen = image[215:240, 100:156].mean()
    assert lung_right + 40 < mediastinum and lung_right + 40 < abdomen


@functools.lru_cache(maxsize=None)
def _baseline(study: str, seed: int):
    return render_terms([], study, seed=seed, size=SIZE)


@pytest.mark.parametrize("term", TERMS)
def test_each_term_changes_the_image_inside_its_boxes(term):
    study = f"t-{len(term) % 3}"  # a few different patients, each rendered once without findings
    with_term = render_terms([term], study, seed=1, size=SIZE)
    without = _baseline(study, 1)
    assert with_term.unrenderable == [], f"{term} should be renderable"
    marks = with_term.marks["PA"] + with_term.marks["LATERAL"]
    assert marks, f"{term} produced no ground-truth box"
    for view in ("PA", "LATERAL"):
        diff = _diff(with_term, without, view)
        outside = np.ones(diff.shape, bool)
        for mark in with_term.marks[view]:
            x0, y0, x1, y1 = mark["box"]
            outside[y0:y1, x0:x1] = False
        for mark in with_term.marks[view]:
            x0, y0, x1, y1 = mark["box"]
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE, f"{term}: box {mark['box']} outside the image"
            assert mark["term"] == term
            inside = diff[y0:y1, x0:x1]
            assert inside.max() >= 12 and inside.mean() >= 1.0, f"{term} on {view}: no visible change inside {mark['box']}"
            if outside.any():  # the sign is where the box says, not elsewhere
                assert inside.mean() > diff[outside].mean(), f"{term} on {view}: more change outside {mark['box']} than inside"


@pytest.mark.parametrize(
    "term",
    [
        "Opacity/lung/base/{side}",
        "Pleural Effusion/{side}/moderate",
        "Pneumothorax/{side}/moderate",
        "Nodule/lung/upper lobe/{side}",
        "Pulmonary Atelectasis/base/{side}",
        "Diaphragm/{side}/elevated",
        "Fractures, Bone/ribs/{side}/healed",
        "Calcified Granuloma/lung/lower lobe/{side}",
        "Catheters, Indwelling/{side}",
    ],
)
def test_left_findings_appear_on_the_image_right_of_the_pa_view(term):
    for side in ("left", "right"):
        text = term.format(side=side)
        with_term = render_terms([text], "lat", seed=2, size=SIZE)
        without = _baseline("lat", 2)
        diff = _diff(with_term, without, "PA")
        left_half, right_half = diff[:, : SIZE // 2].sum(), diff[:, SIZE // 2 :].sum()
        boxes = [m["box"] for m in with_term.marks["PA"]]
        centre = np.mean([(b[0] + b[2]) / 2 for b in boxes])
        if side == "left":  # patient's left = image right on a PA film
            assert right_half > left_half and centre > SIZE / 2, text
        else:
            assert left_half > right_half and centre < SIZE / 2, text
        assert all(m["laterality"] == side for m in with_term.marks["PA"]), text


def test_unrenderable_terms_are_listed_and_normal_is_not():
    terms = ["normal", "No Indexing", "Sulcus/left", "Deformity/humerus/right", "Cardiac Shadow/irregular", "Cardiomegaly/mild"]
    rendering = render_terms(terms, "u", size=SIZE)
    assert rendering.unrenderable == ["Sulcus/left", "Deformity/humerus/right", "Cardiac Shadow/irregular"]
    assert [m["term"] for m in rendering.marks["PA"]] == ["Cardiomegaly/mild"]
    assert rendering.marks["PA"][0]["observation"] == "Cardiomegaly"


def test_the_most_frequent_iu_problems_have_renderers():
    missing = [heading for heading in TOP_PROBLEMS if heading.lower() not in REGISTRY]
    assert missing == []


def test_adding_a_term_leaves_the_rest_of_the_patient_unchanged():
    base = render_terms(["Cardiomegaly/mild"], "iso", seed=4, size=SIZE)
    more = render_terms(["Cardiomegaly/mild", "Nodule/lung/upper lobe/left"], "iso", seed=4, size=SIZE)
    diff = _diff(more, base, "PA")
    x0, y0, x1, y1 = [m for m in more.marks["PA"] if m["term"].startswith("Nodule")][0]["box"]
    outside = diff.copy()
    outside[max(0, y0 - 3) : y1 + 3, max(0, x0 - 3) : x1 + 3] = 0
    assert outside.max() == 0 and diff[y0:y1, x0:x1].max() > 10


def test_deterministic_split_is_about_80_10_10():
    splits = [deterministic_split(str(i)) for i in range(3000)]
    counts = {name: splits.count(name) / len(splits) for name in ("train", "val", "test")}
    assert abs(counts["train"] - 0.8) < 0.03 and abs(counts["val"] - 0.1) < 0.02 and abs(counts["test"] - 0.1) < 0.02
    assert deterministic_split("42") == deterministic_split("42")


def test_tiny_size_is_a_clear_error():
    from radgen.errors import DataError

    with pytest.raises(DataError, match="--size"):
        render_terms(["normal"], "x", size=16)
