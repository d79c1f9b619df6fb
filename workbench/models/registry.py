"""The family registry: every model family by name, and variant names resolved through it.

Adding a family (EfficientNetV2 next) is one module holding its `Family` data (see
`efficientnet_lite.py`) and one `register_family(...)` line in `_register_builtin_families`.
Registration happens on first use, not at import time. Names resolve as:

* `b0`…`b7`, `lite0`…`lite4`, `b0v2`…`b3v2`, `sv2`, `mv2`, `lv2` (also spelled `efficientnet-b0`,
  `EfficientNetB0`, `efficientnetv2-s`, `EfficientNetV2B0`): a family's named rows;
* `phi=<float>`: the paper's family (EfficientNet) at any compound coefficient φ;
* `<family>:phi=<float>`: a registered family with a scaling rule, or a family saved by
  `workbench scale-search` (`workbench.models.families`), at any φ.
"""

from __future__ import annotations

import re

from workbench.models import families as saved_families
from workbench.models.family import Family
from workbench.models.scaling import PAPER_FAMILY
from workbench.models.variants import VariantSpec, custom_variant

_FAMILIES: dict[str, Family] = {}
_BUILTINS_LOADED = False
_ALIAS_PREFIX = re.compile(r"^(?:efficient[-_]?net)?[-_]?")
# keras.applications' spellings of V2 names, "efficientnetv2-b0" / "EfficientNetV2S", → "b0v2" / "sv2".
_V2_ALIAS = re.compile(r"^(?:efficient[-_]?net)?[-_]?v2[-_]?([a-z0-9]+)$")
_PHI = re.compile(r"^(?:(?P<family>[a-z0-9_.-]+):)?phi=(?P<phi>[-+]?\d+(?:\.\d*)?|[-+]?\.\d+)$")


def _register_builtin_families() -> None:
    """The families that ship with workbench, registered once, on first use."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    from workbench.models.efficientnet import EFFICIENTNET
    from workbench.models.efficientnet_lite import EFFICIENTNET_LITE
    from workbench.models.efficientnet_v2 import EFFICIENTNET_V2_FAMILIES

    register_family(EFFICIENTNET)
    register_family(EFFICIENTNET_LITE)
    for family in EFFICIENTNET_V2_FAMILIES:  # B0–B3, S, M, L: four stage tables
        register_family(family)


def register_family(family: Family) -> Family:
    """Add `family` to the registry and return it; its name and its variants' names must be new."""
    _register_builtin_families()
    taken = {v.name for f in _FAMILIES.values() for v in f.variants}
    clashes = sorted(taken & {v.name for v in family.variants})
    if family.name in _FAMILIES:
        raise ValueError(f"cannot register family {family.name!r}: a family of that name is registered")
    if clashes:
        raise ValueError(f"cannot register family {family.name!r}: variant names {clashes} are taken")
    _FAMILIES[family.name] = family
    return family


def registered_families() -> list[Family]:
    """Registered families in registration order."""
    _register_builtin_families()
    return list(_FAMILIES.values())


def get_family(name: str) -> Family:
    """A registered family, else a saved scaling family grown on the paper's B0."""
    for family in registered_families():
        if family.name == name:
            return family
    return custom_variant(0.0, saved_families.load_family(name)).architecture


def published_names() -> list[str]:
    """Every named variant, family by family: b0…b7, lite0…lite4, b0v2…b3v2, sv2, mv2, lv2."""
    return [v.name for family in registered_families() for v in family.variants]


def names_with_imagenet_weights() -> list[str]:
    return [v.name for family in registered_families() for v in family.variants if v.weights is not None]


def phi_family_names() -> list[str]:
    """Families usable with `phi=`: registered ones with a scaling rule (the paper's first), then saved ones."""
    return [f.name for f in registered_families() if f.scaling is not None] + saved_families.list_families()


def get_variant(variant: str | VariantSpec | None = None, *, phi: float | None = None) -> VariantSpec:
    """Resolve a variant name (or `phi=`) to its spec; unknown names raise ValueError listing the valid ones."""
    if isinstance(variant, VariantSpec):
        return variant
    if variant is None:
        if phi is None:
            raise ValueError("pass a variant name (e.g. 'b0', 'lite0', 'phi=1.5') or phi=<float>")
        return custom_variant(phi)
    if phi is not None:
        raise ValueError(f"pass either variant={variant!r} or phi={phi!r}, not both")
    key = str(variant).strip().lower()
    named = _named(key) or _named(_ALIAS_PREFIX.sub("", key, count=1)) or _named(_V2_ALIAS.sub(r"\1v2", key))
    if named is not None:
        return named
    match = _PHI.match(key.replace(" ", ""))
    if match:
        return _scaled(match.group("family") or PAPER_FAMILY.name, float(match.group("phi")))
    known = ", ".join(published_names())
    saved = saved_families.list_families()
    extra = f"; saved families: {', '.join(f'{f}:phi=<float>' for f in saved)}" if saved else ""
    raise ValueError(
        f"unknown variant {variant!r}. Valid names: {known}, or phi=<float> for a custom φ (e.g. phi=1.5){extra}"
    )


def _named(name: str) -> VariantSpec | None:
    for family in registered_families():
        row = family.variant(name)
        if row is not None:
            return VariantSpec.named(family, row)
    return None


def _scaled(family_name: str, phi: float) -> VariantSpec:
    family = next((f for f in registered_families() if f.name == family_name), None)
    if family is None:
        return custom_variant(phi, saved_families.load_family(family_name))
    if family.scaling is None:
        scalable = ", ".join(f"{n}:phi=<float>" for n in phi_family_names())
        raise ValueError(
            f"family {family_name!r} has no compound-scaling rule, only its named variants "
            f"({', '.join(v.name for v in family.variants)}); families that take a φ: {scalable}"
        )
    return custom_variant(phi, family.scaling, base=family)
