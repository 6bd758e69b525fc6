"""Generate tiny dataset folders in each supported layout, for the adapter and CLI tests."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_png(path: Path, value: int = 128, size: tuple[int, int] = (16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), value, dtype=np.uint8)).save(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[list], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# ------------------------------------------------------------------------------------------ MIMIC

MIMIC_REPORTS = {
    # (subject, study): report text (None: report file absent, bytes: raw bytes)
    ("10000032", "50414267"): (
        "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n"
        " INDICATION:  ___F with cough\n\n FINDINGS:\n\n The lungs are clear.  No pleural\n effusion.\n\n"
        " IMPRESSION:\n\n No acute process.\n"
    ),
    ("10000032", "53189527"): "FINDINGS AND IMPRESSION:\n Heart size normal. Lungs clear.\n",
    ("10000764", "57375967"): "findings: Lateral view only.\nimpression: Normal.\n",
    ("10000898", "50771383"): None,
    ("10000935", "51111111"): "IMPRESSION: No pneumothorax.\n",
    ("11000011", "52222222"): "FINDINGS: Cardiomégalie légère.".encode("latin-1"),
    ("11000022", "53333333"): "PA and lateral views of the chest.\nNo acute cardiopulmonary process.\n",
}
MIMIC_IMAGES = [
    # dicom_id, subject, study, view, split, file exists
    ("d1", "10000032", "50414267", "PA", "train", True),
    ("d2", "10000032", "50414267", "LATERAL", "train", True),
    ("d3", "10000032", "53189527", "AP", "train", True),
    ("d4", "10000764", "57375967", "LATERAL", "validate", True),
    ("d5", "10000898", "50771383", "PA", "test", True),
    ("d6", "10000935", "51111111", "PA", "test", True),
    ("d7", "11000011", "52222222", "AP", "train", True),
    ("d8", "11000022", "53333333", "PA", "validate", False),
]


def build_mimic(root: Path) -> Path:
    write_csv(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"],
              [[d, study, subject, split] for d, subject, study, _, split, _ in MIMIC_IMAGES], gz=True)
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", ["dicom_id", "subject_id", "study_id", "ViewPosition", "Rows", "Columns"],
              [[d, subject, study, view, 16, 16] for d, subject, study, view, _, _ in MIMIC_IMAGES], gz=True)
    for d, subject, study, _, _, exists in MIMIC_IMAGES:
        if exists:
            write_png(root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{d}.jpg")
    for (subject, study), text in MIMIC_REPORTS.items():
        if text is None:
            continue
        path = root / "mimic-cxr-reports" / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return root


# ------------------------------------------------------------------------------------------ IU X-Ray

IU_REPORTS = [
    # uid, MeSH, Problems, findings, impression
    ("1", "normal", "normal", "The heart is normal. The lungs are clear.", "Normal chest x-XXXX."),
    ("2", "Cardiomegaly/borderline;Pulmonary Artery/enlarged", "Cardiomegaly;Pulmonary Artery", "Borderline cardiomegaly.", "No acute findings."),
    ("3", "Pleural Effusion/right/small;Opacity/lung/base/right", "Pleural Effusion;Opacity", "", "Small right effusion."),
    ("4", "normal", "normal", "", ""),
    ("5", "Scoliosis/mild", "Scoliosis", "Mild scoliosis. 1. No acute disease.", "Stable."),
    ("6", "normal", "normal", "Clear lungs.", "Normal."),
]
IU_PROJECTIONS = [
    ("1", "1_IM-0001-4001.dcm.png", "Frontal"),
    ("1", "1_IM-0001-3001.dcm.png", "Lateral"),
    ("2", "2_IM-0652-1001.dcm.png", "Frontal"),
    ("2", "2_IM-0652-2001.dcm.png", "Lateral"),
    ("3", "3_IM-1384-1001.dcm.png", "Frontal"),
    ("5", "5_IM-2117-1003002.dcm.png", "Lateral"),
    ("6", "6_IM-2192-1001.dcm.png", "Frontal"),
]
IU_PRESENT_IMAGES = {"1_IM-0001-4001.dcm.png", "1_IM-0001-3001.dcm.png", "2_IM-0652-1001.dcm.png", "6_IM-2192-1001.dcm.png"}


def build_iu_kaggle(root: Path, images: bool = True) -> Path:
    write_csv(root / "indiana_reports.csv", ["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"],
              [[uid, mesh, problems, "Xray Chest PA and Lateral", "Cough.", "None.", findings, impression]
               for uid, mesh, problems, findings, impression in IU_REPORTS])
    write_csv(root / "indiana_projections.csv", ["uid", "filename", "projection"], [list(row) for row in IU_PROJECTIONS])
    if images:
        for name in IU_PRESENT_IMAGES:
            write_png(root / "images" / "images_normalized" / name)
    return root


def build_iu_r2gen(root: Path, with_csv: bool = False) -> Path:
    def record(uid: str, names: list[str]) -> dict:
        findings, impression = next((f, i) for u, _, _, f, i in IU_REPORTS if u == uid)
        return {"id": uid, "report": f"{findings} {impression}".strip(), "image_path": names}

    annotation = {
        "train": [record("1", ["CXR1_IM-0001-4001.png", "CXR1_IM-0001-3001.png"]), record("2", ["CXR2_IM-0652-1001.png"])],
        "val": [record("5", ["CXR5_IM-2117-1003002.png"])],
        "test": [{"id": "CXR6_IM-2192", "report": "Clear lungs. Normal.", "image_path": ["CXR6_IM-2192/0.png"]}],
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotation.json").write_text(json.dumps(annotation), encoding="utf-8")
    write_png(root / "images" / "CXR1_IM-0001-4001.png")
    write_png(root / "images" / "CXR1_IM-0001-3001.png")
    write_png(root / "images" / "CXR6_IM-2192" / "0.png")
    if with_csv:
        build_iu_kaggle(root, images=False)
    return root


OPENI_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
  <meta type="rr"/>
  <uId id="CXR{uid}"/>
  <pmcId id="{uid}"/>
  <docSource>CXR</docSource>
  <IUXRId id="{uid}"/>
  <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
    <Article PubModel="Electronic">
      <Abstract>
        <AbstractText Label="COMPARISON">None.</AbstractText>
        <AbstractText Label="INDICATION">Chest pain</AbstractText>
        <AbstractText Label="FINDINGS">{findings}</AbstractText>
        <AbstractText Label="IMPRESSION">{impression}</AbstractText>
      </Abstract>
    </Article>
  </MedlineCitation>
  <MeSH>
    {mesh}
  </MeSH>
  {images}
</eCitation>
"""


def build_iu_openi(root: Path) -> Path:
    reports = root / "ecgen-radiology"
    reports.mkdir(parents=True, exist_ok=True)
    entries = [
        ("1", "The heart is normal.\n        Lungs clear.", "Normal chest.", ["normal"], [], ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]),
        ("7", "Heart is enlarged.", "Cardiomegaly.", ["Cardiomegaly/mild"], ["Calcinosis/aorta"], ["CXR7_1_IM-2263-1001"]),
        ("8", "", "", ["normal"], [], []),
    ]
    for uid, findings, impression, major, minor, images in entries:
        mesh = "".join(f"<major>{m}</major>" for m in major) + "".join(f"<minor>{m}</minor>" for m in minor)
        image_xml = "".join(f'<parentImage id="{i}"><figureId>F1</figureId></parentImage>' for i in images)
        (reports / f"{uid}.xml").write_text(
            OPENI_XML.format(uid=uid, findings=findings, impression=impression, mesh=mesh, images=image_xml), encoding="utf-8"
        )
    (reports / "9.xml").write_text("<eCitation><uId id='CXR9'/><unclosed></eCitation>", encoding="utf-8")
    write_png(root / "NLMCXR_png" / "CXR1_1_IM-0001-4001.png")
    write_png(root / "NLMCXR_png" / "CXR7_1_IM-2263-1001.png")
    return root
