"""Model: the EfficientNet family from the registry, a φ control for a custom variant, weights, input size."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import streamlit as st

from apps import background, state
from workbench.engine.config import SAMPLE_IMAGE_SIZE, RunConfig
from workbench.models import VariantSpec, get_variant, published_names
from workbench.models.registry import get_family, phi_family_names
from workbench.models.scaling import PAPER_FAMILY
from workbench.timefmt import format_duration

# The family table depends only on this code: its hash keys the cache, so a code change re-measures.
_REGISTRY_SOURCES = (
    "variants.py",
    "scaling.py",
    "builder.py",
    "flops.py",
    "registry.py",
    "family.py",
    "figures.py",
    "efficientnet.py",
    "efficientnet_lite.py",
)
SPEED_BATCH = 16
CUSTOM = "custom φ"


def _code_key() -> str:
    import workbench.models as models

    root = Path(models.__file__).parent
    digest = hashlib.sha256()
    for name in _REGISTRY_SOURCES:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:12]


def _cache_dir() -> Path:
    return state.runs_root() / ".cache"


def family_rows(names: list[str]) -> tuple[list[dict] | None, str | None]:
    """Registry rows (`workbench variants --json`) for `names`, measured once in the background."""
    key = hashlib.sha256(" ".join(names).encode()).hexdigest()[:8]
    cache = _cache_dir() / f"variants-{_code_key()}-{key}.json"
    argv = [sys.executable, "-m", "workbench", "variants", "--json", *names]
    return background.cached_json(cache, argv)


def speed(variant: str, image_size: int) -> tuple[dict | None, str | None, Path]:
    """Measured training throughput of `variant` at `image_size` on this machine (background, cached)."""
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in variant)
    cache = _cache_dir() / f"speed-{_code_key()}-{safe}-{image_size}-{SPEED_BATCH}.json"
    argv = [
        sys.executable,
        "-m",
        "apps.speed",
        variant,
        "--image-size",
        str(image_size),
        "--batch-size",
        str(SPEED_BATCH),
    ]
    answer, error = background.cached_json(cache, argv)
    return answer, error, cache


def default_image_size(variant: str) -> int:
    """What training uses when the image size is left empty (the engine's rule)."""
    dataset = state.dataset()
    if dataset is not None and dataset.is_sample:
        return SAMPLE_IMAGE_SIZE
    return get_variant(variant).resolution


def weights_note(variant: str) -> tuple[bool, str]:
    """(ImageNet weights exist, a plain sentence about where they come from)."""
    spec = get_variant(variant)
    if spec.imagenet == "pypi-checkpoint":
        return True, "ImageNet weights: shipped with workbench (the Lite0 checkpoint), no download needed."
    if spec.imagenet == "keras":
        from workbench.models.weights import keras_cache_dir

        cached = (keras_cache_dir() / "models" / spec.imagenet_weights.file_name(include_top=False)).is_file()
        where = (
            "already downloaded, so no internet is needed"
            if cached
            else "downloaded from keras-applications on first use (this machine needs internet once)"
        )
        return True, f"ImageNet weights: the official keras.applications file, {where}."
    return False, (
        f"No ImageNet weights exist for {spec.name}: it trains from scratch (random initialisation), "
        "which needs far more images and epochs for the same accuracy."
    )


def epoch_seconds(
    flops: float, at_size: int, native: int, train_images: int, reference: dict, reference_flops: float
) -> float:
    """Estimated seconds per training epoch: the measured seconds per image of a reference, scaled by
    FLOPs (convolution work grows with the pixel count, so FLOPs scale with (size / native)²)."""
    scaled = flops * (at_size / native) ** 2
    seconds_per_image = 1.0 / reference["images_per_s"]
    return train_images * seconds_per_image * scaled / reference_flops


def _family_label(name: str) -> str:
    family = get_family(name).scaling
    origin = "paper" if name == PAPER_FAMILY.name else "scale search"
    return f"{name} ({origin}: α={family.alpha:g}, β={family.beta:g}, γ={family.gamma:g})"


# ---------------------------------------------------------------------------------------------- page
def render() -> None:
    st.header("2 · Model")
    st.caption(
        "EfficientNet scales one network in width, depth and resolution together (compound scaling). "
        "Bigger variants are more accurate and slower."
    )
    variant = _variant_picker()
    state.put("variant", variant)
    spec = get_variant(variant)
    _weights_toggle(variant)
    size = _image_size_input(variant, spec)
    _spec_metrics(spec)
    _family_section(variant, size)
    if st.button("Next: train →", key="model_next"):
        state.go_to("Train")
        st.rerun()


def _variant_picker() -> str:
    """A published variant from the registry, or a custom φ of a scaling family; returns the variant name."""
    names = published_names()
    current = state.get("variant") or RunConfig().variant
    is_custom = current not in names
    choice = st.selectbox(
        "Variant",
        [*names, CUSTOM],
        index=len(names) if is_custom else names.index(current),
        key="model_variant",
        help="lite0 is a good start on a CPU: small, fast and it has ImageNet weights that work offline.",
    )
    if choice != CUSTOM:
        return choice
    # The registered families with a scaling rule (the paper's), then those a scale search saved.
    families = phi_family_names()
    current_family = get_variant(current).family if is_custom else PAPER_FAMILY.name
    family_name = st.selectbox(
        "Scaling family",
        families,
        index=families.index(current_family) if current_family in families else 0,
        key="model_family",
        format_func=_family_label,
        help="The paper's coefficients, or ones `workbench scale-search` found for your data.",
    )
    family = get_family(family_name).scaling
    phi = st.slider(
        "φ (compound coefficient)",
        min_value=-6.0,
        max_value=7.0,
        step=0.25,
        key="model_phi",
        value=float(get_variant(current).phi) if is_custom else -2.0,
        help=f"Depth × {family.alpha:g}^φ, width × {family.beta:g}^φ, resolution × {family.gamma:g}^φ. "
        "φ=0 is the family's base (B0 for the paper's); negative values give smaller networks.",
    )
    return f"phi={phi:g}" if family_name == PAPER_FAMILY.name else f"{family_name}:phi={phi:g}"


def _weights_toggle(variant: str) -> None:
    """ImageNet weights on or off (off, and disabled, where the variant has none); stores the choice."""
    has_imagenet, note = weights_note(variant)
    use_imagenet = st.toggle(
        "Start from ImageNet weights", value=has_imagenet, disabled=not has_imagenet, key=f"model_imagenet_{variant}"
    )
    st.caption(note)
    state.put("weights", "imagenet" if (has_imagenet and use_imagenet) else None)
    if has_imagenet and not use_imagenet:
        st.caption("Training from scratch: expect to need many more images and epochs.")


def _image_size_input(variant: str, spec: VariantSpec) -> int:
    """The input side in pixels; stored only when it differs from the variant's own resolution."""
    native = default_image_size(variant)
    size = st.number_input(
        "Image size (pixels)",
        min_value=32,
        max_value=1024,
        step=16,
        value=native,
        key=f"model_size_{variant}",
        help=f"{spec.name} was designed for {spec.resolution} px. Smaller is faster and a little less accurate.",
    )
    state.put("image_size", int(size) if int(size) != native else None)
    return int(size)


def _spec_metrics(spec: VariantSpec) -> None:
    """The variant's scaling figures and the weights choice, side by side."""
    cols = st.columns(4)
    cols[0].metric("Resolution (designed)", f"{spec.resolution} px")
    cols[1].metric("Width × / depth ×", f"{spec.width:.2f} / {spec.depth:.2f}")
    cols[2].metric("Dropout", f"{spec.dropout:.2f}")
    cols[3].metric("Weights", "ImageNet" if state.get("weights") == "imagenet" else "from scratch")


def _family_section(variant: str, size: int) -> None:
    """The family table, redrawn every 2 s while its background measurements are still running."""
    if _pending(variant, size):
        # Redraw until the background measurements land, then once more as a whole page.
        @st.fragment(run_every=2)
        def _wait() -> None:
            if not _pending(variant, size):
                st.rerun(scope="app")
            _family_table(variant, size)

        _wait()
    else:
        _family_table(variant, size)


def _family_names(variant: str) -> list[str]:
    names = list(published_names())
    return names if variant in names else [*names, variant]


def _pending(variant: str, size: int) -> bool:
    """Whether a background measurement this table needs is still running."""
    rows, error = family_rows(_family_names(variant))
    if rows is None:
        return error is None
    if state.dataset() is None:
        return False
    answer, error, _ = speed(variant, size)
    return answer is None and error is None


def _family_table(variant: str, size: int) -> None:
    """The registry table with a measured or estimated time per epoch on this machine."""
    import pandas as pd

    rows, error = family_rows(_family_names(variant))
    st.subheader("The family")
    if error:
        st.error(f"Could not measure the family: {error}")
        return
    if rows is None:
        st.info(
            "Reading the family's parameters and FLOPs (named variants are stored figures; a custom φ is measured on its built graph once)…",
            icon=":material/hourglass_top:",
        )
        return
    dataset = state.dataset()
    train_images = dataset.report["split_sizes"]["train"] if dataset else None
    reference, speed_error, cache = speed(variant, size)
    by_name = {r["name"]: r for r in rows}
    chosen = by_name.get(variant)

    table = []
    for r in rows:
        at_size = (
            size if r["name"] == variant else (SAMPLE_IMAGE_SIZE if dataset and dataset.is_sample else r["resolution"])
        )
        entry = {
            "variant": r["name"],
            "resolution (px)": r["resolution"],
            "parameters (M)": round(r["params"] / 1e6, 2),
            "GFLOPs / image": round(r["flops"] / 1e9, 3),
            "ImageNet weights": "yes" if r["imagenet"] else "no",
            "time / epoch": "",
        }
        if reference and chosen and train_images:
            seconds = epoch_seconds(
                r["flops"],
                at_size,
                r["resolution"],
                train_images,
                reference,
                chosen["flops"] * (size / chosen["resolution"]) ** 2,
            )

            kind = "measured" if r["name"] == variant else "estimated"
            entry["time / epoch"] = f"{format_duration(seconds, 'words')} ({kind}, {at_size} px)"
        table.append(entry)
    frame = pd.DataFrame(table)
    st.dataframe(
        frame.style.apply(lambda row: ["font-weight: bold" if row["variant"] == variant else "" for _ in row], axis=1),
        hide_index=True,
        width="stretch",
    )
    if not train_images:
        st.caption("Choose a dataset in 1 · Data to see the time per epoch for it.")
    elif speed_error:
        st.warning(f"Could not time {variant} on this machine: {speed_error}")
    elif reference is None:
        st.caption(f"Timing a few training steps of {variant} at {size} px on this machine…")
    else:
        st.caption(
            f"Time per epoch: {reference['images_per_s']:.1f} images/s measured for {variant} at {size} px "
            f"(full training steps, batch {reference['batch_size']}) × {train_images} training images; other "
            "variants are estimated from their FLOPs. Phase 1 (head only) runs faster than this."
        )
        if st.button("Measure again", key="model_remeasure"):
            background.forget(cache)
            st.rerun(scope="fragment")
