"""IU X-Ray (Indiana University chest X-ray collection, Open-I) in its three common layouts.

* ``iu-xray-r2gen``: R2Gen's ``annotation.json`` ({"train"|"val"|"test": [{id, report, image_path}]},
  images under ROOT/images/). R2Gen's ``report`` is findings and impression joined; it is stored as
  the ``findings`` section so that ``section="findings"`` reproduces the R2Gen protocol exactly.
  If ``indiana_reports.csv`` / ``indiana_projections.csv`` sit beside it, MeSH labels,
  indication/comparison and image views are attached from them (matched on the IU uid).
* ``iu-xray-kaggle``: ``indiana_reports.csv`` + ``indiana_projections.csv``; images under
  ROOT/images/images_normalized/ (the Kaggle archive), ROOT/images_normalized/ or ROOT/images/.
* ``iu-xray-openi``: one XML per report (ecgen-radiology/*.xml) with AbstractText sections, MeSH
  major/minor terms and parentImage ids; images ROOT/NLMCXR_png/<id>.png (or ROOT/images/).

Every IU study gets the id ``iu-<uid>`` in every layout, so manifests from different layouts can be
joined. IU has no patient ids: each report is its own subject. Kaggle and Open-I carry no split;
`prepare()` assigns one from --split-ratio/--seed.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from radgen.data.adapters.common import (
    OUTSIDE_ROOT,
    AdapterResult,
    canonical_split,
    canonical_view,
    first_existing_dir,
    path_under,
    read_csv_rows,
    read_text_file,
)
from radgen.data.study import ImageRef, Study
from radgen.errors import DataError
from radgen.labels.mesh import mesh_to_chexpert

REPORTS_CSV = "indiana_reports.csv"
PROJECTIONS_CSV = "indiana_projections.csv"
_UID_RE = re.compile(r"(?:CXR)?(\d+)")


def _uid(value: str) -> str | None:
    """'3321', 'CXR3321', 'CXR3321_IM-1588' → '3321'."""
    match = _UID_RE.match(str(value).strip())
    return match.group(1) if match else None


def _image_key(filename: str) -> str:
    """Normalise IU image names across layouts: 'CXR1_1_IM-0001-4001.png', '1_IM-0001-4001.dcm.png',
    'CXR1_IM-0001-4001.png' all describe image '1_IM-0001-4001' of report 1."""
    name = Path(filename).name
    for suffix in (".png", ".jpg", ".jpeg", ".dcm"):
        name = name.removesuffix(suffix)
    name = name.removeprefix("CXR")
    parts = name.split("_")
    # Open-I ids repeat the uid: CXR1_1_IM-0001-4001 → 1_IM-0001-4001
    if len(parts) >= 3 and parts[0] == parts[1]:
        name = "_".join(parts[1:])
    return name


def _mesh_terms(value: str) -> list[str]:
    return [term.strip() for term in value.split(";") if term.strip()]


def _labels(mesh: list[str], problems: list[str] | None = None) -> dict:
    labels: dict = {"mesh": mesh, "chexpert": mesh_to_chexpert(mesh)}
    if problems is not None:
        labels["problems"] = problems
    return labels


def _sections(**parts: str) -> dict[str, str]:
    # Text is kept as written (only stripped): R2Gen's report is exactly findings + " " + impression
    # of the CSV, and its cleaner is sensitive to spacing, so we must not normalise here.
    return {name: text.strip() for name, text in parts.items() if text and text.strip()}


def _read_kaggle_tables(root: Path, required: bool) -> tuple[dict[str, dict], dict[str, list[tuple[str, str]]]] | None:
    reports_path = root / REPORTS_CSV
    if not reports_path.is_file():
        if required:
            raise DataError(f"{reports_path}: not found; --root must hold {REPORTS_CSV} and {PROJECTIONS_CSV} (Kaggle IU X-Ray)")
        return None
    reports = {row["uid"].strip(): row for row in read_csv_rows(reports_path, required=("uid", "MeSH", "findings", "impression"))}
    projections: dict[str, list[tuple[str, str]]] = {}
    projections_path = root / PROJECTIONS_CSV
    if projections_path.is_file():
        for row in read_csv_rows(projections_path, required=("uid", "filename", "projection")):
            projections.setdefault(row["uid"].strip(), []).append((row["filename"].strip(), row["projection"].strip()))
    elif required:
        raise DataError(f"{projections_path}: not found; the Kaggle IU layout needs it to find each study's images")
    return reports, projections


def load_r2gen(root: str | Path) -> AdapterResult:
    root = Path(root)
    annotation_path = root / "annotation.json"
    try:
        annotation = json.loads(read_text_file(annotation_path))
    except json.JSONDecodeError as err:
        raise DataError(f"{annotation_path}: not valid JSON ({err.msg} at line {err.lineno}); download R2Gen's annotation.json again") from None
    if not isinstance(annotation, dict) or not any(key in annotation for key in ("train", "val", "test")):
        raise DataError(f"{annotation_path}: expected an object with 'train'/'val'/'test' lists (R2Gen's annotation.json)")
    tables = _read_kaggle_tables(root, required=False)
    view_of: dict[str, str] = {}
    if tables:
        for entries in tables[1].values():
            for filename, projection in entries:
                view_of[_image_key(filename)] = canonical_view(projection)
    image_dir = root / "images"
    result = AdapterResult()
    for split_name, records in annotation.items():
        split = canonical_split(split_name)
        if split is None or not isinstance(records, list):
            result.skip(f"annotation key {split_name!r} is not train/val/test", split_name, count=len(records) if isinstance(records, list) else 1)
            continue
        for number, record in enumerate(records):
            uid = _uid(record.get("id", "")) if isinstance(record, dict) else None
            if uid is None:
                result.skip("record without a usable 'id'", str(record)[:60])
                continue
            names = record.get("image_path") or []
            if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
                # A bare string would otherwise be iterated into one "path" per character.
                raise DataError(f"{annotation_path}: {split_name}[{number}] (id {record.get('id')!r}): 'image_path' must be a list of "
                                f"file names, got {type(names).__name__}; fix that record")
            paths = [path_under(image_dir, name) for name in names]
            if None in paths:
                result.skip(OUTSIDE_ROOT, f"{split_name}[{number}]")
                continue
            images = [ImageRef(path, view_of.get(_image_key(name), "UNKNOWN")) for path, name in zip(paths, names)]
            labels, sections = {}, _sections(findings=str(record.get("report") or ""))
            if tables and uid in tables[0]:
                row = tables[0][uid]
                labels = _labels(_mesh_terms(row["MeSH"]), _mesh_terms(row.get("Problems", "")))
                sections.update(_sections(indication=row.get("indication", ""), comparison=row.get("comparison", "")))
            result.studies.append(
                Study(
                    study_id=f"iu-{uid}", subject_id=uid, images=images, sections=sections, labels=labels,
                    split=split, source="iu-xray-r2gen", meta={"r2gen_id": str(record.get("id")), "findings_is": "r2gen report (findings + impression)"},
                )
            )
    if tables:
        result.note("MeSH labels attached from indiana_reports.csv", count=sum(1 for s in result.studies if s.labels))
    return result


def load_kaggle(root: str | Path) -> AdapterResult:
    root = Path(root)
    reports, projections = _read_kaggle_tables(root, required=True)  # type: ignore[misc]
    image_dir = first_existing_dir([root / "images" / "images_normalized", root / "images_normalized", root / "images"])
    image_dir = image_dir or root / "images" / "images_normalized"
    result = AdapterResult()
    for uid, row in reports.items():
        if not uid:
            result.skip("row without uid")
            continue
        entries = projections.get(uid, [])
        paths = [path_under(image_dir, filename) for filename, _ in entries]
        if None in paths:
            result.skip(OUTSIDE_ROOT, f"{PROJECTIONS_CSV} uid {uid}")
            continue
        images = [ImageRef(path, canonical_view(projection)) for path, (_, projection) in zip(paths, entries)]
        result.studies.append(
            Study(
                study_id=f"iu-{uid}",
                subject_id=uid,
                images=images,
                sections=_sections(
                    findings=row["findings"], impression=row["impression"],
                    indication=row.get("indication", ""), comparison=row.get("comparison", ""),
                ),
                labels=_labels(_mesh_terms(row["MeSH"]), _mesh_terms(row.get("Problems", ""))),
                source="iu-xray-kaggle",
                meta={"image_description": row.get("image", "")} if row.get("image") else {},
            )
        )
    return result


def _parse_openi_xml(path: Path) -> Study:
    root_el = ET.fromstring(read_text_file(path))
    uid = None
    for tag in ("IUXRId", "uId", "pmcId"):
        element = root_el.find(f".//{tag}")
        if element is not None and element.get("id"):
            uid = _uid(element.get("id", ""))
            if uid:
                break
    if uid is None:
        raise DataError(f"{path}: no IUXRId/uId element; not an Open-I IU report")
    texts: dict[str, str] = {}
    for element in root_el.iter("AbstractText"):
        label = (element.get("Label") or "").strip().lower()
        texts[label] = " ".join("".join(element.itertext()).split())
    mesh = [(el.text or "").strip() for part in ("major", "minor") for el in root_el.iter(part) if (el.text or "").strip()]
    image_ids = [el.get("id", "") for el in root_el.iter("parentImage") if el.get("id")]
    return Study(
        study_id=f"iu-{uid}",
        subject_id=uid,
        images=[ImageRef(image_id, "UNKNOWN") for image_id in image_ids],  # resolved to files by the caller
        sections=_sections(
            findings=texts.get("findings", ""), impression=texts.get("impression", ""),
            indication=texts.get("indication", ""), comparison=texts.get("comparison", ""),
        ),
        labels=_labels(mesh),
        source="iu-xray-openi",
        meta={"xml": path.name},
    )


def load_openi(root: str | Path) -> AdapterResult:
    root = Path(root)
    xml_dir = first_existing_dir([root / "ecgen-radiology", root / "reports", root])
    xml_files = sorted(xml_dir.rglob("*.xml")) if xml_dir else []
    if not xml_files:
        raise DataError(f"{root}: no *.xml reports found; --root must hold ecgen-radiology/*.xml (Open-I IU reports)")
    image_dir = first_existing_dir([root / "NLMCXR_png", root / "images"]) or root / "NLMCXR_png"
    result = AdapterResult()
    seen: set[str] = set()
    for path in xml_files:
        try:
            study = _parse_openi_xml(path)
        except ET.ParseError as err:
            result.skip("XML not well-formed", f"{path.name} ({err})")
            continue
        except DataError:
            result.skip("XML is not an Open-I report (no IUXRId/uId)", path.name)
            continue
        if study.study_id in seen:
            result.skip("duplicate report id", path.name)
            continue
        seen.add(study.study_id)
        paths = [path_under(image_dir, f"{ref.path}.png") for ref in study.images]
        if None in paths:
            result.skip(OUTSIDE_ROOT, path.name)
            continue
        study.images = [ImageRef(image, ref.view) for image, ref in zip(paths, study.images)]
        result.studies.append(study)
    return result
