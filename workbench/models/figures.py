"""The family table: every variant with its resolution, parameters and FLOPs.

Named variants carry their figures as data (measured once on the built graph, kept in their
family's rows), so listing them builds nothing and imports no TensorFlow;
tests/test_models_figures.py rebuilds the graphs and checks the data still holds. A custom
φ has no stored figures and is measured here on its built graph.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from workbench.models.registry import get_variant, published_names
from workbench.models.variants import VariantSpec


@dataclass(frozen=True)
class VariantRow:
    name: str
    resolution: int
    width: float
    depth: float
    dropout: float
    params: int  # with a 1000-class top
    macs: int  # multiply-accumulates per image at `resolution`
    imagenet: bool

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def as_dict(self) -> dict:
        return {**asdict(self), "flops": self.flops}


def _row(spec: VariantSpec, params: int, macs: int) -> VariantRow:
    return VariantRow(
        name=spec.name,
        resolution=spec.resolution,
        width=spec.width,
        depth=spec.depth,
        dropout=spec.dropout,
        params=params,
        macs=macs,
        imagenet=spec.has_imagenet_weights,
    )


def measure(variant: str | VariantSpec, num_classes: int = 1000) -> VariantRow:
    """Build the variant at its own resolution and measure it (ignores any stored figures)."""
    import keras

    from workbench.models.builder import build_model
    from workbench.models.flops import count_macs

    spec = get_variant(variant)
    model = build_model(spec, num_classes)
    row = _row(spec, model.count_params(), count_macs(model))
    del model
    keras.backend.clear_session()
    return row


def row(variant: str | VariantSpec) -> VariantRow:
    """The variant's stored figures when it has them, else measured on its built graph."""
    spec = get_variant(variant)
    if spec.params is None or spec.macs is None:
        return measure(spec)
    return _row(spec, spec.params, spec.macs)


def list_variants(names: list[str] | None = None) -> list[VariantRow]:
    """The published variants (or the given names), in registry order."""
    return [row(name) for name in (names or published_names())]


def format_table(rows: list[VariantRow]) -> str:
    header = f"{'variant':<12} {'res':>5} {'width':>6} {'depth':>6} {'params':>12} {'GMACs':>8} {'GFLOPs':>8}  imagenet"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.name:<12} {r.resolution:>5} {r.width:>6.3g} {r.depth:>6.3g} {r.params:>12,} "
            f"{r.macs / 1e9:>8.3f} {r.flops / 1e9:>8.3f}  {'yes' if r.imagenet else 'no'}"
        )
    lines.append("GMACs: multiply-accumulates per image (the paper's 'FLOPs'); GFLOPs = 2 × GMACs.")
    return "\n".join(lines)
