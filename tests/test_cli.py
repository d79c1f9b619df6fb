"""The command line as a whole: one exit-code convention, and a quiet, quick start.

Exit codes (README, "Exit codes"): 0 success, 1 the job failed, 2 bad input or usage.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.cli import main

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, env_extra: dict | None = None, drop: tuple = ()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update({"PYTHONPATH": str(REPO), **(env_extra or {})})
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )


# ---------------------------------------------------------------------------------------------- exit codes
@pytest.mark.parametrize(
    "argv",
    [
        ["inspect", "{missing}"],
        ["train", "{missing}", "--epochs", "1"],
        ["scale-search", "{missing}"],
    ],
    ids=["inspect", "train", "scale-search"],
)
def test_a_missing_data_folder_is_bad_input_for_every_command(argv, tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    code = main([a.format(missing=missing) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert f"workbench {argv[0]}: data folder {missing} does not exist" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--epochs", "0"], "epochs=0 must be at least 1"),
        (["train", "--epochs", "many"], "epochs='many' must be an integer"),
        (["scale-search", "--tolerance", "2"], "tolerance=2.0 must be in [0, 1)"),
        (["scale-search", "--alpha-range", "1.5"], "alpha_range='1.5' must be 2 comma-separated values"),
        (["predict", "{tmp}/missing.keras", "{tmp}/missing.png"], "missing.keras"),
        (["export", "{tmp}"], str(Path("{tmp}"))),
        (["export", "{tmp}", "--format", "keras", "--tta"], "--tta: the keras format has a single entry point"),
    ],
)
def test_bad_options_and_bad_files_exit_with_2_and_one_line(argv, message, tmp_path, capsys):
    code = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"workbench {argv[0]}: ")
    assert message.format(tmp=tmp_path) in lines[0]


def test_argparse_usage_errors_exit_with_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--precision", "fp8"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2


def test_a_failed_run_exits_with_1_and_one_line_unless_verbose(tmp_path, capsys):
    from test_engine_helpers import make_image_folder

    data = make_image_folder(tmp_path / "data")
    # A tiny run (seconds) whose fine-tuning diverges: a real TrainingError, as in test_engine_recipe.
    argv = ["train", str(data), "--variant", "phi=-4", "--weights", "none", "--image-size", "32"]
    argv += ["--batch-size", "8", "--epochs", "1", "--fine-tune-epochs", "1", "--fine-tune-learning-rate", "1e30"]
    argv += ["--precision", "float32", "--strategy", "default", "--val-fraction", "0.25", "--test-fraction", "0"]
    argv += ["--out", str(tmp_path / "runs"), "--quiet"]
    assert main(argv) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("workbench train: failed: TrainingError: ") and "loss became nan" in last
    assert last.endswith("(rerun with --verbose for the traceback)")
    assert main([*argv, "--verbose"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "TrainingError" in err


# ---------------------------------------------------------------------------------------------- quiet and quick
@pytest.mark.parametrize(
    "argv", [["--help"], ["inspect"], ["scale-search", "--help"], ["train", "--help"], ["audit", "--help"]]
)
def test_commands_that_need_no_tensorflow_do_not_import_it(argv):
    code = f"""
import sys
from workbench.cli import main
try:
    code = main({argv!r})
except SystemExit as exit:
    code = exit.code
heavy = sorted(m for m in ("tensorflow", "keras", "optuna") if m in sys.modules)
print("exit", code, "heavy", heavy)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "exit 0 heavy []"


def test_tensorflow_loads_without_its_cpp_log_lines():
    code = """
from workbench.cli import quiet_tensorflow
with quiet_tensorflow():
    import tensorflow as tf
    print(int(tf.constant(1) + 1))  # a first op initialises the devices (the cuInit line on a machine without GPU)
"""
    result = run_python(code, drop=("TF_CPP_MIN_LOG_LEVEL",))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"
    assert result.stderr == "", result.stderr


def test_verbose_or_the_users_own_log_level_leaves_tensorflow_logging_alone(monkeypatch):
    from workbench.cli import quiet_tensorflow

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    meta_path = list(sys.meta_path)
    with quiet_tensorflow(enabled=False):
        assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ and sys.meta_path == meta_path
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    with quiet_tensorflow():
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0" and sys.meta_path == meta_path
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    with quiet_tensorflow():
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    if "tensorflow" not in sys.modules:  # not loaded in the block: the process is left as it was
        assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ and sys.meta_path == meta_path


def test_a_test_image_damaged_after_training_is_named_by_evaluate_with_exit_2(tmp_path, capsys):
    # Hardening report C5/D: the failure was an InvalidArgumentError traceback naming no file.
    from helpers_tiny_run import build_tiny_run
    from test_hostile_data import bad_adler_png

    from pipelines import Manifest

    run_dir = build_tiny_run(tmp_path)
    victim = Manifest.load(run_dir / "manifest.json").split_records("test")[-1]
    Path(victim.path).write_bytes(bad_adler_png())
    assert main(["evaluate", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"TensorFlow cannot read or decode the image file {victim.path}" in err
    assert "Traceback" not in err and "InvalidArgumentError" not in err
