"""Parameter counts and memory estimates for a recipe, from the meta device (no weights, no network).

Memory model (per parameter), for what a training run must hold besides activations:
- fp32:  weights 4 B; gradients 4 B per trainable; AdamW 8 B per trainable (two fp32 moments).
- bf16:  weights 2 B; gradients 2 B per trainable; AdamW 8 B per trainable (moments kept in fp32;
         pure-bf16 training, no fp32 master copy — add 4 B per trainable for mixed precision).
- int8:  frozen weights 1 B (bitsandbytes LLM.int8), trainable weights 4 B (adapters stay fp32);
         gradients 4 B and AdamW 8 B per trainable.
"""

from __future__ import annotations

from typing import Any

from radgen.config import RecipeConfig
from radgen.models.generator import build_model

GIB = 1024**3


def memory_estimate(total: int, trainable: int) -> dict[str, dict[str, float]]:
    frozen = total - trainable
    rows = {
        "fp32": (total * 4, trainable * 4, trainable * 8),
        "bf16": (total * 2, trainable * 2, trainable * 8),
        "int8": (frozen * 1 + trainable * 4, trainable * 4, trainable * 8),
    }
    return {name: {"weights_gib": w / GIB, "gradients_gib": g / GIB, "adamw_gib": a / GIB, "total_gib": (w + g + a) / GIB}
            for name, (w, g, a) in rows.items()}


def model_info(recipe: RecipeConfig) -> dict[str, Any]:
    """Build `recipe` on the meta device; count parameters per component for every stage."""
    model = build_model(recipe, meta=True, apply_first_stage=False)
    stages = []
    for stage in recipe.stages:
        model.set_trainable(stage.train)
        counts = model.parameter_counts()
        total = sum(c[0] for c in counts.values())
        trainable = sum(c[1] for c in counts.values())
        stages.append({
            "name": stage.name,
            "train": list(stage.train),
            "components": {name: {"total": c[0], "trainable": c[1]} for name, c in counts.items()},
            "total": total,
            "trainable": trainable,
            "trainable_percent": 100.0 * trainable / total if total else 0.0,
            "memory": memory_estimate(total, trainable),
        })
    return {
        "recipe": recipe.name,
        "source": recipe.source,
        "num_visual_tokens": model.num_visual_tokens,
        "encoder_tokens": model.encoder.num_tokens(),
        "image_size": model.encoder.image_size,
        "stages": stages,
    }


def format_info(info: dict[str, Any]) -> str:
    lines = [f"recipe {info['recipe']}", f"  source: {info['source']}",
             f"  image {info['image_size']}px → {info['encoder_tokens']} encoder tokens → {info['num_visual_tokens']} visual tokens"]
    for stage in info["stages"]:
        lines.append(f"stage '{stage['name']}' (train: {', '.join(stage['train'])})")
        lines.append(f"  {'component':<12}{'total':>16}{'trainable':>16}")
        for name, c in stage["components"].items():
            lines.append(f"  {name:<12}{c['total']:>16,}{c['trainable']:>16,}")
        lines.append(f"  {'all':<12}{stage['total']:>16,}{stage['trainable']:>16,}  ({stage['trainable_percent']:.2f}% trainable)")
        lines.append(f"  memory (GiB, no activations): {'weights':>9}{'grads':>9}{'AdamW':>9}{'sum':>9}")
        for dtype, m in stage["memory"].items():
            lines.append(f"    {dtype:<27}{m['weights_gib']:>9.2f}{m['gradients_gib']:>9.2f}{m['adamw_gib']:>9.2f}{m['total_gib']:>9.2f}")
    return "\n".join(lines)
