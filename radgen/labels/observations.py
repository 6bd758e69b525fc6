"""The 14 CheXpert observations, in the order CheXpert/CheXbert and R2Gen's CE code use."""

CHEXPERT_14: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

# The five observations most papers also report on their own (CheXpert competition tasks).
CHEXPERT_5: tuple[str, ...] = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")

NO_FINDING = "No Finding"

# Label values, as the CheXpert labeler writes them.
POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
