"""Evaluate: confusion matrix, per-class metrics, worst mistakes, Grad-CAM and a try-it box for one run."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from apps import runs, state

EVAL_SPLITS = ("test", "val", "train", "all")
GALLERY_COLUMNS = 6
TOP_K = 5
REVIEW_MAX = 48  # images of one confusion-matrix cell shown for review


@st.cache_resource(max_entries=2, show_spinner="Loading the model…")
def load_run(run_dir: str, model_mtime: float):
    """The run's Keras model, labels and resolution, loaded once per model file (mtime keys a retrain)."""
    from workbench.serving.model_files import open_run

    return open_run(run_dir)


def cached_run(run_dir: Path):
    info = runs.run_info(run_dir)
    return load_run(str(run_dir), info.model_path.stat().st_mtime)


def report_path(run_dir: Path) -> Path:
    return Path(run_dir) / "eval" / "report.json"


def read_report(run_dir: Path) -> dict | None:
    """The run's evaluation report, if there is one at least as new as its model."""
    path = report_path(run_dir)
    model = Path(run_dir) / "model.keras"
    if not path.is_file() or (model.is_file() and path.stat().st_mtime < model.stat().st_mtime):
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def run_evaluation(run_dir: Path, split: str) -> dict | None:
    """Evaluate in this process (inference only, no training); errors become a message."""
    from workbench.evaluation import evaluate

    try:
        with st.spinner(f"Evaluating `{run_dir.name}` on its {split} split…"):
            # plots=False: this page draws its own interactive charts; `workbench evaluate` writes the PNGs.
            return evaluate(run_dir, split=split, plots=False)
    except ValueError as exc:
        st.error(f"Evaluation failed: {exc}", icon=":material/error:")
    except Exception as exc:
        st.error(f"Evaluation failed ({type(exc).__name__}): {exc}", icon=":material/error:")
    return None


# ---------------------------------------------------------------------------------------------- charts
def confusion_frame(report: dict, normalised: bool):
    import pandas as pd

    classes = report["classes"]
    raw = report["confusion_matrix"]
    norm = report["confusion_matrix_normalized"]
    rows = []
    for t, true_name in enumerate(classes):
        for p, predicted_name in enumerate(classes):
            rows.append(
                {
                    "true": true_name,
                    "predicted": predicted_name,
                    "count": raw[t][p],
                    "share of true class": norm[t][p],
                    "value": norm[t][p] if normalised else raw[t][p],
                }
            )
    return pd.DataFrame(rows)


def confusion_chart(report: dict, normalised: bool):
    """Heatmap of true (rows) × predicted (columns) with the value in every cell and a tooltip."""
    import altair as alt

    classes = report["classes"]
    frame = confusion_frame(report, normalised)
    size = max(24, min(72, 560 // max(1, len(classes))))  # pixels per cell: readable for 2 to 40 classes
    base = alt.Chart(frame).encode(
        x=alt.X("predicted:N", sort=classes, title="predicted class"),
        y=alt.Y("true:N", sort=classes, title="true class"),
    )
    # Clicking a cell selects its (true, predicted) pair: the page then shows the images behind it.
    cell = alt.selection_point(name="cell", fields=["true", "predicted"], on="click", clear=False)
    cells = (
        base.mark_rect()
        .encode(
            color=alt.Color("value:Q", scale=alt.Scale(scheme="blues"), title="share" if normalised else "images"),
            tooltip=["true", "predicted", "count", alt.Tooltip("share of true class:Q", format=".1%")],
            stroke=alt.condition(cell, alt.value("orange"), alt.value(None)),
            strokeWidth=alt.condition(cell, alt.value(3), alt.value(0)),
        )
        .add_params(cell)
    )
    fmt = ".0%" if normalised else "d"
    text = base.mark_text(fontSize=12).encode(
        text=alt.Text("value:Q", format=fmt),
        color=alt.condition(alt.datum.value > frame["value"].max() / 2, alt.value("white"), alt.value("black")),
    )
    return (cells + text).properties(width=alt.Step(size), height=alt.Step(size))


# ---------------------------------------------------------------------------------------------- page
def render() -> None:
    st.header("4 · Evaluate")
    run_dir = runs.pick_trained_run(
        "eval_run", "No trained model yet: train one in **3 · Train** (or wait for the running job to finish)."
    )
    if run_dir is None:
        return
    name = run_dir.name

    report = read_report(run_dir)
    cols = st.columns([1, 1, 3])
    split = cols[0].selectbox(
        "Split",
        EVAL_SPLITS,
        key="eval_split",
        help="test: images never used in training or model selection (the honest number).",
    )
    again = cols[1].button("Evaluate", key="eval_go", help="Run the model over the chosen split again.")
    # A finished run is evaluated on first view, once; after that only when asked.
    if again or (report is None and not state.get(f"eval_failed_{name}")):
        report = run_evaluation(run_dir, split)
        state.put(f"eval_failed_{name}", report is None)
    if report is None:
        return
    if report["split"] != split:
        cols[2].caption(f"Showing the {report['split']} split; press Evaluate for the {split} split.")

    st.caption(
        f"{report['num_examples']} images of the {report['split']} split · evaluated {report.get('created', '')}"
    )
    if report.get("kind") == "multi-label":  # its own report: per-label thresholds, no confusion matrix
        from apps.multilabel_section import render_multi_label

        render_multi_label(report)
        return
    metrics = st.columns(4)
    metrics[0].metric("Accuracy", f"{report['accuracy']:.1%}")
    metrics[1].metric(f"Top-{report['top_k']} accuracy", f"{report['top_k_accuracy']:.1%}")
    metrics[2].metric("Macro F1", f"{report['macro_avg']['f1']:.3f}")
    metrics[3].metric("Mean loss", f"{report['mean_loss']:.3f}")

    st.subheader("Confusion matrix")
    mode = st.radio("Show", ("raw counts", "normalised by true class"), horizontal=True, key="eval_cm_mode")
    clicked = st.altair_chart(
        confusion_chart(report, normalised=mode != "raw counts"),
        key="confusion_matrix",
        width="content",
        on_select="rerun",
        selection_mode="cell",
    )
    _cell_review(report, run_dir, clicked)

    left, right = st.columns(2)
    with left:
        st.subheader("Per class")
        st.dataframe(per_class_rows(report), hide_index=True, width="stretch")
    with right:
        st.subheader("Most confused")
        pairs = report["most_confused"]
        if pairs:
            st.dataframe(
                [
                    {
                        "true": p["true"],
                        "predicted as": p["predicted"],
                        "images": p["count"],
                        "share of true class": f"{p['fraction_of_true']:.0%}",
                    }
                    for p in pairs
                ],
                hide_index=True,
                width="stretch",
            )
        else:
            st.write("No confusions: every image was classified correctly.")

    _calibration(report)
    _misclassified(report)
    run = cached_run(run_dir)
    _grad_cam(run, report, run_dir)
    _try_it(run, run_dir)


def clicked_cell(selection) -> tuple[str, str] | None:
    """The (true, predicted) pair of the clicked confusion-matrix cell, from `st.altair_chart`'s selection
    state, or None when nothing is selected."""
    try:
        points = selection["selection"]["cell"]
    except (KeyError, TypeError):
        return None
    if not points:
        return None
    return points[0]["true"], points[0]["predicted"]


def _cell_review(report: dict, run_dir: Path, selection) -> None:
    """The images behind one confusion-matrix cell, each with keep / drop / relabel to the predicted class,
    and a button that writes those choices as a new dataset version (the audit's `apply_findings`)."""
    from apps.data_section import thumbnail
    from workbench.audit.review import cell_images

    classes = report["classes"]
    pair = clicked_cell(selection)
    # A new click moves the pickers (which also work without a pointer, and in tests); an old click, still the
    # chart's selection on every rerun, leaves a later pick alone.
    if pair is not None and pair != state.get("eval_cell_clicked"):
        state.put("eval_cell_clicked", pair)
        st.session_state["eval_cell_true"], st.session_state["eval_cell_predicted"] = pair
    st.subheader("Images behind a cell")
    with st.container():
        st.caption(
            "Click a cell of the matrix, or pick it here."
            + (f" Clicked: true {pair[0]}, predicted {pair[1]}." if pair is not None else "")
        )
        cols = st.columns(2)
        true = cols[0].selectbox("True class", classes, key="eval_cell_true")
        predicted = cols[1].selectbox("Predicted as", classes, key="eval_cell_predicted")
        try:
            images = cell_images(report, _split_images(run_dir, report["split"]), true, predicted)
        except ValueError as exc:
            st.info(str(exc), icon=":material/info:")
            return
        if not images:
            st.write(f"No {true} image was predicted as {predicted}.")
            return
        shown = images[:REVIEW_MAX]
        st.caption(
            f"{len(images)} image(s), most confident first"
            + (f"; the first {REVIEW_MAX} shown" if len(images) > REVIEW_MAX else "")
            + ". Choose what a new dataset version does with each; your files are never changed."
        )
        grid = st.columns(GALLERY_COLUMNS)
        choices = ("keep", "drop", "relabel") if true != predicted else ("keep", "drop")
        for n, image in enumerate(shown):
            with grid[n % GALLERY_COLUMNS]:
                try:
                    st.image(thumbnail(image["path"], 128), caption=f"{image['confidence']:.0%}", width="stretch")
                except (OSError, TypeError):
                    st.caption(Path(image["path"]).name)
                st.selectbox(
                    f"action for {Path(image['path']).name}",
                    choices,
                    key=f"eval_cell_action_{n}_{true}_{predicted}",
                    format_func=lambda c, p=predicted: f"relabel as {p}" if c == "relabel" else c,
                    label_visibility="collapsed",
                )
        if st.button("Make a dataset version from these choices", key="eval_cell_apply"):
            actions = {
                image["path"]: st.session_state.get(f"eval_cell_action_{n}_{true}_{predicted}", "keep")
                for n, image in enumerate(shown)
            }
            _write_review(report, run_dir, shown, actions)


def _write_review(report: dict, run_dir: Path, images: list[dict], actions: dict) -> None:
    from apps.audit_panel import make_version, stamp
    from workbench.audit.review import review_findings

    folder = Path(run_dir) / "eval" / "reviews" / stamp()
    try:
        path = review_findings(Path(run_dir) / "manifest.json", report["classes"], images, actions, folder)
    except ValueError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    make_version(path, folder / "version", "in **1 · Data** to train on it")


def per_class_rows(report: dict) -> list[dict]:
    return [
        {
            "class": name,
            "precision": round(m["precision"], 3),
            "recall": round(m["recall"], 3),
            "F1": round(m["f1"], 3),
            "images": m["support"],
        }
        for name, m in report["per_class"].items()
    ]


def reliability_frame(report: dict):
    """One row per non-empty confidence bin, before and after temperature scaling: the reliability diagram's
    points (mean confidence against accuracy; a calibrated model lies on the diagonal)."""
    import pandas as pd

    calibration = report.get("calibration") or {}
    rows = [
        {"when": when, "confidence": b["confidence"], "accuracy": b["accuracy"], "images": b["count"]}
        for when, key in (("before", "reliability_before"), ("after", "reliability_after"))
        for b in calibration.get(key) or []
        if b["count"]
    ]
    return pd.DataFrame(rows, columns=["when", "confidence", "accuracy", "images"])


def _calibration(report: dict) -> None:
    """Temperature, ECE before and after, the reliability diagram, and what rejection did on this split."""
    import altair as alt

    calibration = report.get("calibration")
    if not calibration:
        return
    st.subheader("Calibration and rejection")
    if not calibration["fitted"]:
        st.caption(
            "This run has no fitted calibration (no validation split, or trained before calibration existed): "
            "`workbench evaluate RUN --reject auto` fits one."
        )
    metrics = st.columns(4)
    metrics[0].metric("Temperature", f"{calibration['temperature']:.3g}")
    metrics[1].metric(
        "ECE after",
        f"{calibration['ece_after']:.3f}",
        delta=f"{calibration['ece_after'] - calibration['ece_before']:+.3f} from {calibration['ece_before']:.3f}",
        delta_color="inverse",
        help=f"Expected calibration error over {calibration['bins']} confidence bins: lower is better.",
    )
    rejection = report.get("rejection")
    if rejection:
        metrics[2].metric(
            "Accepted",
            f"{rejection['accepted']:.1%}",
            help=f"Images whose {rejection['score']} score reaches the threshold {rejection['threshold']:.4g}; "
            "the others are answered `unknown`.",
        )
        accuracy = rejection["accuracy_accepted"]
        metrics[3].metric(
            "Accuracy on accepted",
            "–" if accuracy is None else f"{accuracy:.1%}",
            delta=None if accuracy is None else f"{accuracy - rejection['accuracy_all']:+.1%} vs all",
        )
    else:
        metrics[2].caption("No rejection threshold: every image gets a class (`--reject auto` sets one).")
    frame = reliability_frame(report)
    if not frame.empty:
        diagonal = alt.Chart(alt.Data(values=[{"x": 0, "y": 0}, {"x": 1, "y": 1}])).mark_line(
            color="gray", strokeDash=[4, 4]
        )
        points = (
            alt.Chart(frame)
            .mark_line(point=True)
            .encode(
                x=alt.X("confidence:Q", scale=alt.Scale(domain=[0, 1]), title="mean confidence in bin"),
                y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), title="accuracy in bin"),
                color=alt.Color("when:N", title="temperature scaling"),
                tooltip=["when", alt.Tooltip("confidence:Q", format=".2f"), "accuracy", "images"],
            )
        )
        st.altair_chart(
            (diagonal.encode(x="x:Q", y="y:Q") + points).properties(height=280),
            key="reliability",
            width="stretch",
        )
    unknown = report.get("unknown")
    if unknown:
        rejected = unknown.get("rejected")
        st.caption(
            f"Against {unknown['num_images']} images of no class (`{unknown['dir']}`): AUROC "
            + ", ".join(f"{kind} {value:.3f}" for kind, value in unknown["auroc"].items())
            + ("" if rejected is None else f"; {rejected:.1%} of them rejected")
        )


def _misclassified(report: dict) -> None:
    from apps.data_section import thumbnail

    wrong = report["misclassified"]
    st.subheader(f"Misclassified ({len(wrong)} shown, most confident mistakes first)")
    if not wrong:
        st.write("None.")
        return
    cols = st.columns(GALLERY_COLUMNS)
    for i, item in enumerate(wrong):
        caption = f"true {item['true']} → {item['predicted']} ({item['confidence']:.0%})"
        with cols[i % GALLERY_COLUMNS]:
            try:
                st.image(thumbnail(item["path"], 128), caption=caption, width="stretch")
            except (OSError, TypeError):
                st.caption(f"{Path(str(item['path'])).name}: {caption}")


def _split_images(run_dir: Path, split: str) -> list:
    from pipelines import Manifest

    manifest = Manifest.load(Path(run_dir) / "manifest.json")
    splits = ("train", "val", "test") if split == "all" else (split,)
    return [r for s in splits for r in manifest.split_records(s)]


@st.cache_data(max_entries=32, show_spinner="Computing Grad-CAM…")
def _cam(_run, run_dir: str, model_mtime: float, image_path: str, class_index: int | None):
    """(model input pixels, heatmap, explained class, probabilities); cached so that redrawing the page
    (a toggle elsewhere) does not recompute it. `_run` is not hashed: run_dir and mtime identify it."""
    from workbench.evaluation.explain import grad_cam
    from workbench.serving.imaging import load_files

    pixels = load_files([image_path], _run.resolution)[0]
    heatmap, class_index, probabilities = grad_cam(_run.model, pixels, class_index)
    return pixels, heatmap, class_index, probabilities


def _grad_cam(run, report: dict, run_dir: Path) -> None:
    import numpy as np

    from workbench.evaluation.explain import overlay

    st.subheader("Grad-CAM: where the model looked")
    try:
        records = _split_images(run_dir, report["split"])
    except ValueError as exc:
        st.error(str(exc))
        return
    if not records:
        return
    wrong_paths = [m["path"] for m in report["misclassified"]]
    paths = wrong_paths + [r.path for r in records if r.path not in wrong_paths]
    labels = {r.path: r.label for r in records}
    cols = st.columns([2, 1])
    path = cols[0].selectbox(
        "Image",
        paths,
        key="eval_cam_image",
        format_func=lambda p: (
            f"{labels.get(p, '?')} / {Path(p).name}" + ("  (misclassified)" if p in wrong_paths else "")
        ),
    )
    target = cols[1].selectbox("Explain class", ["predicted class", *run.class_names], key="eval_cam_class")
    record = next((r for r in records if r.path == path), None)
    class_index = None if target == "predicted class" else run.class_names.index(target)
    model_mtime = (Path(run_dir) / "model.keras").stat().st_mtime
    pixels, heatmap, class_index, probabilities = _cam(
        run, str(run_dir), model_mtime, record.source_path if record else path, class_index
    )
    image = pixels.astype(np.uint8)
    predicted = run.class_names[int(np.argmax(probabilities))]
    left, right = st.columns(2)
    left.image(
        image,
        caption=f"true {labels.get(path, '?')} · predicted {predicted} ({float(np.max(probabilities)):.0%})",
        width="stretch",
    )
    right.image(
        overlay(image, heatmap),
        caption=f"Grad-CAM for {run.class_names[class_index]} (probability {float(probabilities[class_index]):.0%})",
        width="stretch",
    )


@st.cache_resource(max_entries=2, show_spinner="Loading the calibrated model…")
def load_runtime(model_path: str, model_mtime: float, calibration_mtime: float):
    """The run's model with its calibration applied (what `workbench predict RUN` answers with), loaded once per
    model and calibration file."""
    from workbench.serving.formats.keras_file import KerasRuntime

    return KerasRuntime(Path(model_path))


def _try_it(run, run_dir: Path) -> None:
    import numpy as np
    import tensorflow as tf

    from workbench.serving.imaging import check_image_bytes, decode_batch

    st.subheader("Try it")
    uploaded = st.file_uploader(
        "An image to classify", type=["jpg", "jpeg", "png", "gif", "bmp", "webp"], key="eval_try"
    )
    if uploaded is None:
        return
    data = uploaded.getvalue()
    try:
        # The header first: an upload over the ingest pixel limit is refused before it is decoded. Then the
        # serving decode (EXIF orientation, alpha over white), so the model sees what training saw.
        check_image_bytes(data, uploaded.name)
        pixels = decode_batch(tf.constant([data]), run.resolution).numpy()[0]
    except ValueError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    except tf.errors.InvalidArgumentError:
        st.error(
            f"{uploaded.name}: not an image TensorFlow can decode; upload a JPEG, PNG, GIF, BMP or WebP file.",
            icon=":material/error:",
        )
        return
    from workbench.evaluation.calibrate import CALIBRATION_FILE
    from workbench.evaluation.rejection import UNKNOWN_INDEX

    model_path = Path(run_dir) / "model.keras"
    calibration_path = Path(run_dir) / CALIBRATION_FILE
    try:
        runtime = load_runtime(
            str(model_path),
            model_path.stat().st_mtime,
            calibration_path.stat().st_mtime if calibration_path.is_file() else 0.0,
        )
    except ValueError as exc:  # an unreadable calibration.json or ood.npz names the file and the fix
        st.error(str(exc), icon=":material/error:")
        return
    probabilities, indices = runtime.classify_images(pixels[None])
    probabilities = probabilities[0]
    order = np.argsort(-probabilities, kind="stable")[: min(TOP_K, len(run.class_names))]
    left, right = st.columns([1, 2])
    left.image(pixels.astype(np.uint8), caption=uploaded.name, width="stretch")
    right.dataframe(
        [{"class": run.class_names[i], "probability": f"{probabilities[i]:.1%}"} for i in order],
        hide_index=True,
        width="stretch",
    )
    if int(indices[0]) == UNKNOWN_INDEX:
        right.warning(
            f"Prediction: **unknown**. The closest class is {run.class_names[order[0]]} "
            f"({probabilities[order[0]]:.0%}), but the image falls below the run's rejection threshold.",
            icon=":material/help:",
        )
    else:
        right.success(f"Prediction: **{run.class_names[order[0]]}** ({probabilities[order[0]]:.0%})")
