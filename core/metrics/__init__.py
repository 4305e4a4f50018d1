"""Metrics over embeddings: structure (H1), retrieval (H2) and texture reliance (H3).

Pure functions over numpy arrays and tensors, with no file input or output.
"""
from core.metrics.bootstrap import (
    Interval,
    bootstrap_ci,
    bootstrap_groups_ci,
    bootstrap_replicates,
    paired_bootstrap_ci,
    percentile_interval,
)
from core.metrics.retrieval import (
    aggregate_by_type,
    image_to_image,
    image_to_text,
    paired_difference,
    random_ap,
    target_ranks,
    text_to_image,
    type_prompt_precision,
)
from core.metrics.structure import StructureResult, structure_ratio, structure_table
# Texture imports torch and torchvision, so it loads on first use of one of its names.
_TEXTURE_NAMES = {
    "PERTURBATIONS", "blur", "grayscale", "patch_shuffle", "perturb",
    "texture_metrics", "texture_reliance", "texture_table",
}


def __getattr__(name: str):
    if name in _TEXTURE_NAMES:
        from core.metrics import texture

        return getattr(texture, name)
    raise AttributeError(f"module 'core.metrics' has no attribute {name!r}")


__all__ = [
    "Interval",
    "PERTURBATIONS",
    "StructureResult",
    "aggregate_by_type",
    "blur",
    "bootstrap_ci",
    "bootstrap_groups_ci",
    "bootstrap_replicates",
    "grayscale",
    "image_to_image",
    "image_to_text",
    "paired_bootstrap_ci",
    "paired_difference",
    "patch_shuffle",
    "percentile_interval",
    "perturb",
    "random_ap",
    "structure_ratio",
    "structure_table",
    "target_ranks",
    "text_to_image",
    "texture_metrics",
    "texture_reliance",
    "texture_table",
    "type_prompt_precision",
]
