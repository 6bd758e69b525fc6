"""IU X-Ray MeSH annotations: parsing and mapping to the 14 CheXpert observations.

An IU study's `MeSH` field is a ';'-separated list of terms such as
``Opacity/lung/base/left/mild`` or ``Pleural Effusion/right/small``: a MeSH heading followed by
qualifiers for anatomy, location, laterality and severity. `parse_mesh` splits a term into those
parts; `mesh_to_chexpert` maps a study's terms to CheXpert observations (1 = present), which is how
we check a report labeler against human labels and how IU-Phantom labels its renders.

The mapping follows the CheXpert labeler's mention lists (e.g. "blunting of the costophrenic angle"
counts as Pleural Effusion, "pulmonary congestion" as Edema, nodules/masses/granulomas as Lung
Lesion). Terms with no CheXpert counterpart (e.g. Scoliosis, Calcinosis of the aorta) map to nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from radgen.labels.observations import CHEXPERT_14, NO_FINDING

LATERALITIES = ("left", "right", "bilateral")
SEVERITIES = ("minimal", "mild", "borderline", "small", "moderate", "large", "severe", "multiple", "focal", "diffuse", "scattered", "patchy", "chronic", "tortuous")


@dataclass(frozen=True)
class MeshTerm:
    """One parsed MeSH term: heading plus qualifiers sorted into location, laterality and severity."""

    heading: str
    locations: tuple[str, ...] = ()
    laterality: str | None = None
    severity: tuple[str, ...] = ()
    raw: str = field(default="", compare=False)

    def has(self, *qualifiers: str) -> bool:
        """True if any of `qualifiers` appears among this term's locations or severities."""
        words = set(self.locations) | set(self.severity)
        return any(q.lower() in words for q in qualifiers)


def parse_mesh(term: str) -> MeshTerm:
    """Parse one term such as ``'Opacity/lung/base/left/mild'``."""
    parts = [part.strip() for part in term.strip().split("/") if part.strip()]
    if not parts:
        return MeshTerm(heading="", raw=term)
    heading, qualifiers = parts[0], [q.lower() for q in parts[1:]]
    laterality = None
    locations: list[str] = []
    severity: list[str] = []
    for qualifier in qualifiers:
        if qualifier in LATERALITIES:
            # "left" then "right" in one term means both sides.
            laterality = qualifier if laterality in (None, qualifier) else "bilateral"
        elif qualifier in SEVERITIES:
            severity.append(qualifier)
        else:
            locations.append(qualifier)
    return MeshTerm(heading=heading, locations=tuple(locations), laterality=laterality, severity=tuple(severity), raw=term.strip())


def parse_mesh_field(value: str | list[str] | None) -> list[MeshTerm]:
    """Parse a whole MeSH field (';'-separated string or list of terms); empty entries are dropped."""
    if value is None:
        return []
    items = value.split(";") if isinstance(value, str) else list(value)
    return [parse_mesh(item) for item in items if item and item.strip()]


# heading (lower case) -> observation, when the heading alone decides it.
_HEADING_TO_OBSERVATION: dict[str, str] = {
    "cardiomegaly": "Cardiomegaly",
    "pulmonary atelectasis": "Atelectasis",
    "atelectasis": "Atelectasis",
    "pleural effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "pulmonary edema": "Edema",
    "edema": "Edema",
    "pulmonary congestion": "Edema",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "airspace disease": "Lung Opacity",
    "opacity": "Lung Opacity",
    "infiltrate": "Lung Opacity",
    "nodule": "Lung Lesion",
    "mass": "Lung Lesion",
    "calcified granuloma": "Lung Lesion",
    "granuloma": "Lung Lesion",
    "fractures, bone": "Fracture",
    "catheters, indwelling": "Support Devices",
    "tube, inserted": "Support Devices",
    "implanted medical device": "Support Devices",
    "medical device": "Support Devices",
    "stents": "Support Devices",
}


def _observation_for(term: MeshTerm) -> str | None:
    heading = term.heading.lower()
    if heading in _HEADING_TO_OBSERVATION:
        observation = _HEADING_TO_OBSERVATION[heading]
        # Opacities outside the lung (e.g. of soft tissue) are not Lung Opacity.
        if observation == "Lung Opacity" and term.locations and not term.has("lung", "base", "apex", "lingula", "upper lobe", "lower lobe", "middle lobe", "hilum", "bilateral"):
            return None
        return observation
    if heading == "density" and term.has("lung", "base", "apex", "upper lobe", "lower lobe", "middle lobe", "lingula"):
        return "Lung Opacity"
    # CheXpert's mention list counts lung scarring and interstitial markings as (Lung/Airspace) Opacity.
    if heading == "cicatrix" and term.has("lung", "base", "apex", "upper lobe", "lower lobe", "middle lobe", "lingula"):
        return "Lung Opacity"
    if heading == "markings" and term.has("interstitial"):
        return "Lung Opacity"
    if heading == "costophrenic angle" and term.has("blunted"):
        return "Pleural Effusion"
    if heading == "thickening" and term.has("pleura"):
        return "Pleural Other"
    if heading in ("cardiac shadow", "heart") and term.has("enlarged"):
        return "Cardiomegaly"
    if heading == "mediastinum" and term.has("enlarged", "widened"):
        return "Enlarged Cardiomediastinum"
    return None


def mesh_to_chexpert(terms: str | list[str] | list[MeshTerm] | None) -> dict[str, int]:
    """Map a study's MeSH terms to CheXpert observations: {observation: 1} for each present one.

    Observations not implied by any term are absent from the result (not negative): MeSH lists what
    was found, not what was ruled out. ``normal`` maps to ``{"No Finding": 1}``. A study with findings
    but none among the 14 (e.g. only Scoliosis) also counts as No Finding, as CheXpert defines it
    (no observation other than Support Devices present).
    """
    if terms and isinstance(terms, list) and isinstance(terms[0], MeshTerm):
        parsed = list(terms)  # type: ignore[arg-type]
    else:
        parsed = parse_mesh_field(terms)  # type: ignore[arg-type]
    result: dict[str, int] = {}
    for term in parsed:
        observation = _observation_for(term)
        if observation is not None:
            result[observation] = 1
    if not any(obs for obs in result if obs not in (NO_FINDING, "Support Devices")):
        headings = {term.heading.lower() for term in parsed}
        if headings and headings != {"no indexing"}:
            result[NO_FINDING] = 1
    return {name: result[name] for name in CHEXPERT_14 if name in result}
