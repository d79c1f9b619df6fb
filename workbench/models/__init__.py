"""EfficientNet builders with compound scaling (B0–B7, any φ, Lite0–4) and weights.

Families are data (`family.py`), registered in `registry.py`. Importing this package imports
Keras lazily: the scaling math and family tables are plain Python, and `build_model` pulls in
Keras on first use.
"""

from workbench.models.family import Family
from workbench.models.registry import get_variant, published_names, register_family, registered_families
from workbench.models.scaling import ALPHA, BETA, GAMMA, ScalingFamily, round_filters, round_repeats
from workbench.models.variants import VariantSpec, custom_variant


def build_model(*args, **kwargs):
    from workbench.models.builder import build_model as _build

    return _build(*args, **kwargs)


build_model.__doc__ = "Build an EfficientNet classifier; see workbench.models.builder.build_model."


def list_variants(*args, **kwargs):
    from workbench.models.figures import list_variants as _list

    return _list(*args, **kwargs)


list_variants.__doc__ = "The family table; see workbench.models.figures.list_variants."

__all__ = [
    "ALPHA",
    "BETA",
    "GAMMA",
    "Family",
    "ScalingFamily",
    "VariantSpec",
    "build_model",
    "custom_variant",
    "get_variant",
    "list_variants",
    "published_names",
    "register_family",
    "registered_families",
    "round_filters",
    "round_repeats",
]
