"""Clinical labels: the 14 CheXpert observations and the IU X-Ray MeSH vocabulary.

This package is the single owner of observation names and the MeSH → CheXpert mapping; the
phantom renderer, the report labeler and the clinical metrics import them from here.
"""

from radgen.labels.mesh import MeshTerm, mesh_to_chexpert, parse_mesh, parse_mesh_field
from radgen.labels.observations import CHEXPERT_14, CHEXPERT_5, NO_FINDING

__all__ = ["CHEXPERT_14", "CHEXPERT_5", "NO_FINDING", "MeshTerm", "mesh_to_chexpert", "parse_mesh", "parse_mesh_field"]
