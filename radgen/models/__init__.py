"""Models: image encoder → connector → text decoder, composed into a `ReportGenerator`.

    from radgen.config import load_recipe
    from radgen.models import build_model, ReportGenerator
    model = build_model(load_recipe("radgen-small", size="tiny"))
    model.save_pretrained("out/model"); ReportGenerator.from_pretrained("out/model")
"""

from radgen.models.generator import GeneratedReport, ReportGenerator, ReportOutput, build_model

__all__ = ["GeneratedReport", "ReportGenerator", "ReportOutput", "build_model"]
