"""Phrase tables of the rule-based CheXpert labeler (radgen.labels.labeler).

Mention phrases follow the CheXpert labeler's lists (stanfordmlgroup/chexpert-labeler,
phrases/mention/*.txt, re-expressed as regular expressions and extended with chest X-ray wording
from IU X-Ray reports); negation and uncertainty cues follow NegEx and CheXpert's negation /
uncertainty patterns, rewritten as token-window rules because we do not run a dependency parser.

All patterns run on normalized text: lower case, IU's de-identification token ``xxxx`` kept as a word.
"""

from __future__ import annotations

# ---------------------------------------------------------------- mentions per observation
# Each value: regexes whose match (not negated) means the observation is reported.

MENTIONS: dict[str, list[str]] = {
    "Enlarged Cardiomediastinum": [
        r"\b(widen\w*|enlarg\w*|prominen\w*|large|increased|bulg\w*) (of the |upper |superior )?(cardio)?mediastin\w*",
        r"\bmediastinal (widening|enlargement|mass|adenopathy|lymphadenopathy|prominence)",
        r"\bpneumomediastinum\b",
    ],
    "Cardiomegaly": [
        r"\bcardiomegaly\b",
        r"\bcardiac (enlargement|megaly)\b",
        r"\b(enlarg\w*|large|prominent|increased) (heart|cardiac)\b",
        r"\bcardiac silhouette enlargement\b",
    ],
    "Lung Lesion": [
        r"\bmass(es)?\b",
        r"\bnodul\w*",
        r"\blump\b",
        r"\bcavitary lesion",
        r"\bcarcinoma\b",
        r"\bneoplasm\w*",
        r"\btumou?r\w*",
        r"\bgranulomas?\b",  # IU MeSH files calcified granulomas under Lung Lesion
        r"\b(lung|pulmonary|parenchymal) lesions?\b",
        r"\bmetasta\w*",
    ],
    "Lung Opacity": [
        r"\bopaci\w*",
        r"\binfiltrat\w*",
        r"\bair[- ]?space (disease|process|opaci\w*)",
        r"\bdensit(y|ies)\b",
        r"\binterstitial (marking|pattern|lung|prominence|opaci|disease|thickening|change)\w*",
        r"\b(reticular|reticulonodular|coarse|increased|prominent) (interstitial |lung |pulmonary )?markings?\b",
        r"\breticula\w*",
        r"\bscar(s|ring|red)?\b",
        r"\bperibronchial (thickening|cuffing)",
        r"\bhaz(y|iness)\b",
        r"\bground[- ]glass\b",
    ],
    "Edema": [
        r"\bedema\b",
        r"\bheart failure\b",
        r"\bchf\b",
        r"\b(vascular|venous|pulmonary|interstitial) congestion\b",
        r"\bcongestive\b",
        r"\bvascular (prominence|indistinctness|engorgement)\b",
        r"\bindistinct (pulmonary )?vascula\w*",
        r"\bcephalization\b",
        r"\bkerley\b",
        r"\b(increased|prominent|engorged) (\w+ )?(pulmonary |lung )?(vascularity|vasculature|vessels)\b",
        r"\b(pulmonary |lung )?(vascularity|vasculature|vessels) (is |are |appears? |remains? )?(?!not |no )(\w+ )?(increased|engorged|prominent)\b",
        r"\bpulmonary venous hypertension\b",
    ],
    "Consolidation": [r"\bconsolidat\w*"],
    "Pneumonia": [r"\bpneumonia\w*", r"\binfection\b", r"\binfectious( process)?\b", r"\bpneumonitis\b", r"\bbronchopneumonia\b"],
    "Atelectasis": [r"\batelecta\w*", r"\b(lobar|lobe|lung) collapse\b", r"\bcollapse of the (\w+ )?(lobe|lung)\b"],
    "Pneumothorax": [r"\bpneumothora\w*", r"\bhydropneumothora\w*"],
    "Pleural Effusion": [
        r"\beffusions?\b",
        r"\bpleural fluid\b",
        r"\bblunt\w* (of )?(the )?(\w+ )?(costophrenic|cp|costodiaphragmatic)\b",
        r"\b(costophrenic|cp) (angle|sulcus|sulci|recess)\w* (is |are |remains? )?(\w+ )?blunt\w*",
        r"\bhydrothorax\b",
        r"\bfluid in the (\w+ )?fissure",
    ],
    "Pleural Other": [
        r"\bpleural (thickening|scar\w*|plaque\w*|calcification\w*)",
        r"\bpleuro-?parenchymal (scar\w*|thickening)",
        r"\bfibrothorax\b",
        r"\bapical (pleural )?caps?\b",
        r"\bthicken\w* (of )?(the )?(\w+ )?pleura\b",
    ],
    "Fracture": [r"\bfractur\w*", r"\bfx\b"],
    "Support Devices": [
        r"\bpacer\b",
        r"\bpacemaker\w*",
        r"\bpacing (wire|lead)s?\b",
        r"\b(aicd|icd)\b",
        r"\bdefibrillator\w*",
        r"\bleads?\b(?! to\b)",
        r"\bpicc\b",
        r"\bcatheters?\b",
        r"\b(central|venous|picc|port|arterial|swan[- ]ganz|dialysis|midline|jugular|subclavian|ij) (venous )?(line|catheter|port)s?\b",
        r"\bline tip\b",
        r"\b(port[- ]a[- ]cath|porta?cath|mediport|infusion port|power ?port|chest port)\b",
        r"\btubes?\b",
        r"\btracheostomy\b",
        r"\bstents?\b",
        r"\b(prosthetic|mechanical|replaced|artificial) (\w+ )?valves?\b",
        r"\bvalve (replacement|prosthesis)\b",
        r"\b(mitral|aortic) valve replacement\b",
        r"\bhardware\b",
        r"\bscrews?\b",
        r"\b(?<!plate-)(?<!plate )plates?\b(?!-?like)",
        r"\b(spinal )?fixation\b",
        r"\brods?\b",
        r"\bprosthes[ie]s\b",
        r"\barthroplast\w*",
        r"\bdevices?\b",
        r"\bcoils?\b",
        r"\bdrains?\b",
        r"\bcannula\b",
        r"\bivc filter\b",
        r"\b(loop|event) recorder\b",
        r"\bapparatus\b",
        r"\bneurostimulator\b",
        r"\bstimulator\b",
        # IU de-identification often masks the device word itself: "right chest xxxx tip in the svc",
        # "xxxx-a-xxxx" (port-a-cath), "cardiac xxxx generator".
        r"\btip\b(?=.*\b(svc|superior vena cava|atri(um|al)|cavoatrial|caval|brachiocephalic|carina|stomach)\b)",
        r"\bxxxx-a-xxxx\b",
        r"\bgenerator\b",
        r"\bshunt( tubing)?\b",
        r"\btubing\b",
        r"\bbone anchor\b",
        r"\bprosthetic (\w+ )?(shoulder|hip|knee|joint)\b",
    ],
}

# Matches that look like a mention but are not one (CheXpert's "unmention" lists and IU wording).
UNMENTIONS: dict[str, list[str]] = {
    "Pleural Effusion": [r"\bpericardial effusions?\b", r"\bjoint effusions?\b"],
    "Lung Opacity": [
        r"\bpleural scar\w*",
        r"\bpleuro-?parenchymal scar\w*",
        r"\bbone densit(y|ies)\b",
        r"\bsoft[- ]tissue (opaci\w*|densit\w*)",
        r"\bnipple (shadow|opaci\w*)",
        r"\bbreast (shadow|opaci\w*|densit\w*)",
        r"\bcalcified (granuloma|nodule)\w* (opaci\w*|densit\w*)",
        r"\bnodular (opaci\w*|densit\w*)",
        r"\b(increased |decreased )?(osseous|bony) densit\w*",
        r"\bopaci\w* (of|in|within|overlying|projecting over) the (soft tissues?|breast|chest wall|abdomen|upper abdomen)",
        r"\bsternotomy scar",
        r"\b(surgical|skin|postsurgical) scar\w*",
        r"\b(metallic|radiopaque|metal|foreign body) (opaci\w*|densit\w*)",
        r"\bfibrosis of the pleura",
    ],
    "Edema": [r"\bsoft tissue edema\b"],
    "Lung Lesion": [r"\bmass effect\b", r"\bbreast mass", r"\bsoft tissue mass", r"\b(lymph )?nodes?\b(?=.*\bnodal\b)"],
    "Support Devices": [
        r"\bnasogastric tube feeding\b",
        r"\btubes? (and|or) lines? (are )?(not|no)\b",
        r"\bleads? to\b",
        r"\bdevice (of|for) the\b",
        r"\b(tubular|tubul\w*)\b",
        r"\bsilhouette\b",
        r"\bbreast (prosthes[ie]s|implants?)\b",
    ],
}

# Anatomy whose size statement decides Cardiomegaly / Enlarged Cardiomediastinum ("heart size is normal").
HEART = r"\b(heart( size)?|cardiac (silhouette|size|shadow|contour)s?|cardiac|cardiopericardial silhouette|cardiomediastinal silhouette)\b"
MEDIASTINUM = r"\b(mediastin\w*( (contour|silhouette|width|structures|configuration)s?)?|cardiomediastinal (silhouette|contour)s?|mediastinal (silhouette|contour)s?|superior mediastinum)\b"
ENLARGED = r"\b(enlarg\w*|large|larger|increased|prominen\w*|widen\w*|cardiomegaly|borderline|mildly enlarged|globular)\b"
NORMAL_SIZE = r"\b(normal|normally|within normal|unremarkable|not enlarged|no enlargement|negative|appropriate|satisfactory|upper limits? of normal|top (limits? of )?normal|upper normal|high normal)\b"

# ---------------------------------------------------------------- cues
# Phrases that look like negation but are not (NegEx "pseudo-negations"): masked before cue search.
PSEUDO_NEGATION = [
    r"\bno (significant |interval |substantial |appreciable |definite |acute )?(change|increase|decrease|worsening|improvement|progression)\b",
    r"\bnot (significantly |substantially )?(changed|increased|decreased|only)\b",
    r"\bgram negative\b",
    r"\bwithout (change|interval change)\b",
    r"\bnot (been )?excluded\b",
    r"\bcannot be (excluded|ruled out)\b",
    r"\bcan not be (excluded|ruled out)\b",
]

# A negation that ends its own statement ("pneumothorax no longer seen, small effusion"): masked in the
# text before a later mention so it does not negate it; after its own mention it is the negation.
SPENT_NEGATION = [
    r"\bno longer\b(?= (be )?(present|seen|visible|identified|evident|demonstrated|appreciated))",
]

# Negation cues before the mention (scope: to the end of the clause). No "normal heart ..." cue: its
# scope would negate what follows ("normal heart size, small left effusion"); size statements
# (HEART / NORMAL_SIZE below) decide the heart and mediastinum themselves.
PRE_NEGATION = [
    r"\bno\b",
    r"\bnot\b",
    r"\bnor\b",
    r"\bwithout\b",
    r"\bnegative for\b",
    r"\bnegative\b(?= (\w+ ){0,2}(for|of)\b)",
    r"\bfree of\b",
    r"\bclear of\b",
    r"\babsence of\b",
    r"\babsent\b",
    r"\bresolution of\b",
    r"\bresolved\b",
    r"\bremoval of\b",
    r"\binterval removal\b",
    r"\bruled out\b",
    r"\brule out\b(?! (of )?(pneumonia|infection))",
    r"\bno (evidence|sign|signs|finding|findings) of\b",
    r"\bif\b",  # hypothetical: "if there is concern for fracture, consider a rib series"
]

# Negation cues after the mention, within a short window ("effusion is not seen", "heart size normal").
POST_NEGATION = [
    r"^(\s*\w+){0,4}? (is|are|was|were|has|have|remains?)( been)? (not|no longer)\b",
    r"^(\s*\w+){0,4}? (not|no longer) (seen|identified|present|visualized|demonstrated|evident|appreciated|detected|noted|visible)\b",
    r"^(\s*\w+){0,4}? (absent|resolved|removed|cleared|resolving)\b",
    r"^(\s*\w+){0,4}? (has|have) (resolved|cleared|been removed)\b",
    r"^(\s*\w+){0,2}? (negative|none)\b",
    r"^ ?(is|are) no longer\b",
    r"^(\s*\w+){0,4}? (within (the )?(normal )?limits|within limits of normal)\b",
    r"^(\s*\w+){0,2}? (may|might) not be (seen|demonstrated|visible|detected|apparent)\b",
    r"^(\s*\w+){0,4}? (is|are|was|were|has been|have been) (ruled out|excluded)\b",
]

# Uncertainty cues before the mention.
PRE_UNCERTAINTY = [
    r"\b(possible|possibly|probable|probably|likely|questionable|question of|questioned|suspect\w*|suspicious|equivocal|indeterminate|cannot exclude|can not exclude|could|may|might|perhaps|presumed|presumably|suggest\w*|concern\w*|worrisome|vs|versus|differential|consider\w*)\b",
    r"\bor\s*$",  # "atelectasis or [scarring]": an alternative right before the mention
    r"\bcompatible with\b",
    r"\bcannot (rule out|be excluded)\b",
    r"\?",
]

# Uncertainty that wins over negation (CheXpert's pre-negation uncertainty patterns).
NEGATED_UNCERTAINTY = [
    r"\bcannot (exclude|rule out|be excluded|be ruled out)\b",
    r"\bcan not (exclude|rule out|be excluded|be ruled out)\b",
    r"\bnot (be |been )?(entirely |completely |fully )?(excluded|ruled out)\b",
    r"\bno new\b",
    r"\bno (evidence|findings?) to (exclude|rule out)\b",
]

# Uncertainty cues after the mention.
POST_UNCERTAINTY = [
    r"^(\s*\w+){0,5}? (is|are|was|were)? ?(possible|possibly|probable|likely|suspected|questioned|not excluded|not ruled out|cannot be excluded|cannot be ruled out|can not be excluded|not entirely excluded)\b",
    r"^ ?(or|and/or|/) ?\w",  # "atelectasis or scarring", "atelectasis/scarring": alternatives
    # "opacity may represent atelectasis": the opacity is certain, what it represents is not (CheXpert:
    # "may represent XXX" makes the object uncertain); "effusion may be present" is uncertain itself
    r"^(\s*\w+){0,3}? (could|may|might|can|cannot) (be|have)\b",
    r"^(\s*\w+){0,1}? (vs|versus)\b",
    r"^\s*\?",
]

# Where a cue's scope ends (CheXpert / NegEx termination terms) besides sentence boundaries.
SCOPE_TERMINATORS = r"\b(but|however|although|though|except|aside from|apart from|otherwise|which|whereas|while|yet|since|(?<!if )there is|(?<!if )there are|there has been|and there|with (a|an|the|mild|moderate|small|large|minimal|new|persistent|stable|increased|decreased|interval))\b|;| - |:"

