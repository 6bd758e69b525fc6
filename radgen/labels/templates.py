"""One plain sentence per abnormal CheXpert observation, worded so that radgen's labeler reads it back
as exactly that observation (tests/generate/test_classifier_template.py checks every one).

Used by the classifier-template baseline (radgen.generate.classifier_template) and by grounded
models' findings-consistency step (radgen.models.consistency).
"""

TEMPLATES: dict[str, str] = {
    "Enlarged Cardiomediastinum": "the mediastinum is widened .",
    "Cardiomegaly": "the heart is enlarged .",
    "Lung Lesion": "there is a pulmonary nodule .",
    "Lung Opacity": "there is an airspace opacity .",
    "Edema": "there is pulmonary edema .",
    "Consolidation": "there is focal consolidation .",
    "Pneumonia": "there is pneumonia .",
    "Atelectasis": "there is atelectasis .",
    "Pneumothorax": "there is a pneumothorax .",
    "Pleural Effusion": "there is a pleural effusion .",
    "Pleural Other": "there is pleural thickening .",
    "Fracture": "there is a rib fracture .",
    "Support Devices": "a cardiac pacemaker is in place .",
}
NORMAL = "the heart is normal in size . the lungs are clear . no pleural effusion or pneumothorax ."
