"""The export-format registry is the one list of formats: the CLI choices, the app's list and `locate_model` read it."""

from __future__ import annotations

import pytest

from workbench.serving.model_files import ModelFileError, locate_model
from workbench.serving.registry import DEFAULT_FORMAT, EXPORT_FORMATS, families, format_names, get_format


def test_formats_are_unique_and_unknown_names_list_the_known_ones():
    assert format_names() == ("savedmodel", "keras", "tflite", "tflite-fp16", "tflite-int8", "onnx")
    assert len({fmt.label for fmt in EXPORT_FORMATS}) == len(EXPORT_FORMATS) and DEFAULT_FORMAT == "savedmodel"
    assert [fmt.kind for fmt in families()] == ["savedmodel", "keras", "tflite", "onnx"]
    assert get_format("tflite-int8").describe_input(32).startswith("uint8 RGB (B, 32, 32, 3)")
    with pytest.raises(ValueError, match=r"unknown export format 'tfjs'; use one of savedmodel, keras, tflite, "):
        get_format("tfjs")


@pytest.mark.parametrize(
    "argv, flag",
    [(["export", "runs/none", "--format", "tfjs"], "--format"), (["train", "--export-format", "tflite8"], "--export")],
)
def test_cli_refuses_an_unknown_format_before_any_work(argv, flag, capsys, tmp_path, monkeypatch):
    from workbench.cli import main

    monkeypatch.chdir(tmp_path)
    try:  # argparse exits on a usage error; a main() that turns that into a return code is as good
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and flag in err and "invalid choice" in err
    assert all(f"'{name}'" in err for name in format_names())
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing exported


def test_the_app_lists_every_registered_format():
    from apps.export_section import format_labels

    assert list(format_labels().values()) == list(format_names())


def test_locate_model_names_the_format_that_opens_a_file(tmp_path):
    flatbuffer = tmp_path / "model.tflite"
    flatbuffer.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    location = locate_model(flatbuffer)
    assert (location.kind, location.format, location.labels_path) == ("tflite", "tflite", tmp_path / "labels.txt")
    get_format(location.format).verify(flatbuffer)
    renamed = tmp_path / "renamed.tflite"
    renamed.write_bytes(bytes(72))
    with pytest.raises(ModelFileError, match="not a TFLite FlatBuffer"):
        get_format("tflite").verify(renamed)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(b"")
    run = locate_model(tmp_path / "run")
    assert (run.kind, run.format, run.path.name) == ("run", "keras", "model.keras")
