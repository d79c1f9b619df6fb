"""Scaling search (issue 7): step 1 of the EfficientNet paper on a tiny generated dataset.

Every search here uses a tiny proxy (a quarter-width, quarter-depth B0 at 32 px), one epoch and a
0.1 grid, so a trained candidate costs seconds on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workbench.engine.events import read_events
from workbench.models.scaling import round_resolution
from workbench.scaling_search import Budget, ProxyConfig, SearchConfig
from workbench.scaling_search.candidates import Candidate, complete, constraint_error, feasible_grid, grid_values
from workbench.scaling_search.config import parse_amount
from workbench.scaling_search.report import choose, pareto_front

REPO = Path(__file__).resolve().parents[1]
TINY_FLAGS = [
    "--base-width",
    "0.25",
    "--base-depth",
    "0.25",
    "--base-resolution",
    "32",
    "--epochs",
    "1",
    "--batch-size",
    "32",
    "--step",
    "0.1",
    "--latency-repeats",
    "3",
    "--quiet",
]


def tiny_config(data: Path, search_dir: Path, families: Path, **overrides) -> SearchConfig:
    values = dict(
        data=str(data),
        search_dir=str(search_dir),
        families_dir=str(families),
        step=0.1,
        latency_repeats=3,
        proxy=ProxyConfig(base_width=0.25, base_depth=0.25, base_resolution=32, epochs=1, batch_size=32),
    )
    values.update(overrides)
    return SearchConfig(**values)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """3 classes x 12 PNGs of 32 px (27 train, 3 val, 6 test): noisy images around one colour per class."""
    root = tmp_path_factory.mktemp("scale-data")
    rng = np.random.default_rng(0)
    for index, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200)]):
        folder = root / f"class{index}"
        folder.mkdir()
        for i in range(12):
            pixels = (rng.normal(0, 30, (32, 32, 3)) + np.array(colour)).clip(0, 255).astype("uint8")
            Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def search(dataset, tmp_path_factory):
    """One three-trial grid search under a FLOPs budget of 1.7x the base network.

    Its few validation images cannot tell candidates apart (issue 12), so it saves its family only because
    `save_anyway` asks it to; `test_an_unclear_winner_saves_no_family_unless_asked` covers the refusal."""
    from workbench.scaling_search import run_search

    work = tmp_path_factory.mktemp("scale-search")
    config = tiny_config(
        dataset,
        work / "search",
        work / "families",
        trials=3,
        family="tiny-test",
        budget=Budget(flops="1.7x"),
        save_anyway=True,
    )
    return run_search(config), work


# ----------------------------------------------------------------------------- the search end to end
def test_three_trial_search_writes_table_plot_and_family(search):
    result, work = search
    trained = [r for r in result.rows if r["status"] == "trained"]
    assert len(trained) == 3
    table = result.table_csv.read_text().splitlines()
    assert table[0].startswith(
        "number,status,alpha,beta,gamma,product,width,depth,resolution,flops,flops_ratio,params,"
        "latency_ms,val_accuracy,train_seconds"
    )
    assert len(table) == 1 + len(result.rows)
    saved = json.loads(result.table_json.read_text())
    assert [r["number"] for r in saved["trials"]] == [r["number"] for r in result.rows]
    for row in trained:
        assert row["flops"] > 0 and row["params"] > 0 and row["latency_ms"] > 0 and row["train_seconds"] > 0
        assert 0.0 <= row["val_accuracy"] <= 1.0
        assert abs(row["alpha"] * row["beta"] ** 2 * row["gamma"] ** 2 / 2 - 1) <= 0.05
    with Image.open(result.plot) as plot:
        assert plot.format == "PNG" and plot.width > 300
    family = json.loads((work / "families" / "tiny-test.json").read_text())
    assert (family["alpha"], family["beta"], family["gamma"]) == (
        result.chosen["alpha"],
        result.chosen["beta"],
        result.chosen["gamma"],
    )
    assert result.chosen["val_accuracy"] == max(r["val_accuracy"] for r in trained)


def test_every_trained_candidate_is_within_the_budget(search):
    result, _ = search
    saved = json.loads(result.table_json.read_text())
    limit = saved["limits"]["flops"]
    assert limit == pytest.approx(1.7 * saved["base"]["flops"])
    trained = {(r["resolution"], r["params"], r["flops"]): r for r in result.rows if r["status"] == "trained"}
    assert len(trained) == 3  # three different networks
    for row in result.rows:
        if row["status"] == "trained":
            assert row["flops"] <= limit
            continue
        # measured (built) but never trained: no training log
        assert not (result.search_dir / "trials" / f"{row['number']:04d}").exists()
        if row["status"] == "skipped":
            assert row["flops"] > limit and "over budget" in row["reason"] and row["val_accuracy"] is None
        else:  # other coefficients that round to a network already trained: its result, not a new training
            assert row["status"] == "duplicate"
            twin = trained[(row["resolution"], row["params"], row["flops"])]
            assert row["val_accuracy"] == twin["val_accuracy"] and f"trial {twin['number']}" in row["reason"]


def test_progress_is_reported_per_trial_with_an_eta_in_the_events_format(search):
    result, _ = search
    events = read_events(result.search_dir)
    trials = [e for e in events if e["type"] == "trial"]
    assert {e["status"] for e in trials} >= {"start", "training", "trained"}
    finished = [e for e in trials if e["status"] == "trained"]
    assert len(finished) == 3 and all(e["eta_s"] is not None for e in finished)
    assert finished[-1]["eta_s"] == 0
    assert events[-1]["type"] == "done" and events[-1]["family"] == "tiny-test"
    for row in result.rows:  # each trained candidate's own training log: phase, epoch, done
        if row["status"] == "trained":
            kinds = [e["type"] for e in read_events(result.search_dir / "trials" / f"{row['number']:04d}")]
            assert kinds[0] == "phase" and "epoch" in kinds and kinds[-1] == "done"


def test_saved_family_builds_at_phi_0_and_1_with_the_expected_resolutions(search, monkeypatch):
    from workbench.models import build_model, get_variant

    result, work = search
    monkeypatch.setenv("WORKBENCH_FAMILIES", str(work / "families"))
    gamma = result.chosen["gamma"]
    expected = {0: 224, 1: round_resolution(224 * gamma)}
    for phi, resolution in expected.items():
        assert get_variant(f"tiny-test:phi={phi}").resolution == resolution
        model = build_model(f"tiny-test:phi={phi}", num_classes=3)
        assert model.input_shape == (None, resolution, resolution, 3)


# ----------------------------------------------------------------------------- resume
def test_an_unclear_winner_saves_no_family_unless_asked(search, dataset):
    """Issue 12: a few validation images per class cannot rank candidates, so the search says so and,
    without `save_anyway`, saves nothing. Continuing the fixture's search retrains no candidate."""
    from pipelines import Manifest
    from workbench.engine.chance import search_warning
    from workbench.scaling_search import run_search

    first, work = search
    accuracies = [r["val_accuracy"] for r in first.rows if r["status"] == "trained"]
    val_counts = list(Manifest.load(work / "search" / "manifest.json").class_counts("val").values())
    assert sum(val_counts) < 10  # (the proxy's subset keeps up to 50 per class: all of them)
    assert first.warning is not None and first.warning == search_warning(accuracies, val_counts)
    assert first.family is not None  # saved: the fixture asked with save_anyway

    again = run_search(
        tiny_config(
            dataset, work / "search", work / "families", trials=3, family="tiny-unclear", budget=Budget(flops="1.7x")
        )
    )
    assert again.warning == first.warning and "--val-per-class" in again.warning
    assert again.family is None and again.family_path is None
    assert not (work / "families" / "tiny-unclear.json").exists()
    done = [e for e in read_events(work / "search") if e["type"] == "done"][-1]
    assert done["warning"] == again.warning and done["family"] is None
    assert json.loads(again.table_json.read_text())["warning"] == again.warning


@pytest.mark.slow  # ~30 s: a killed search and its resume; the default suite keeps the three-trial search
def test_killed_search_resumes_without_retraining_finished_trials(dataset, tmp_path):
    from workbench.cli import main

    search_dir, families = tmp_path / "search", tmp_path / "families"
    command = [
        sys.executable,
        "-m",
        "workbench",
        "scale-search",
        str(dataset),
        "--search-dir",
        str(search_dir),
        "--families-dir",
        str(families),
        "--trials",
        "2",
        *TINY_FLAGS,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        # The next trial's start event comes after Optuna has stored the first one as complete.
        while time.monotonic() < deadline and process.poll() is None:
            statuses = [e.get("status") for e in read_events(search_dir) if e["type"] == "trial"]
            if "trained" in statuses and statuses.count("start") >= 2:  # killed in trial 2 (or between)
                break
            time.sleep(0.1)
        assert process.poll() is None, "the search ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    first = [e for e in read_events(search_dir) if e["type"] == "trial" and e["status"] == "trained"]
    assert len(first) >= 1 and not (search_dir / "results.csv").exists()

    assert (
        main(
            [
                "scale-search",
                str(dataset),
                "--search-dir",
                str(search_dir),
                "--families-dir",
                str(families),
                "--trials",
                "2",
                *TINY_FLAGS,
            ]
        )
        == 0
    )

    events = [e for e in read_events(search_dir) if e["type"] == "trial"]
    trained = [(e["alpha"], e["beta"], e["gamma"]) for e in events if e["status"] == "trained"]
    assert len(trained) == 2 and len(set(trained)) == 2  # no candidate trained twice
    started_training = [(e["alpha"], e["beta"], e["gamma"]) for e in events if e["status"] == "training"]
    for finished in first:
        assert started_training.count((finished["alpha"], finished["beta"], finished["gamma"])) == 1
    rows = json.loads((search_dir / "results.json").read_text())["trials"]
    assert sum(r["status"] == "trained" for r in rows) == 2
    # One training log per training start: the finished trial's log was not written again.
    logs = sorted((search_dir / "trials").iterdir())
    assert sum(1 for d in logs for e in read_events(d) if e["type"] == "phase") == len(started_training)


@pytest.mark.slow  # ~30 s: a second whole search, with the Bayesian sampler
def test_bayesian_search_completes_gamma_and_records_misses(dataset, tmp_path):
    from workbench.scaling_search import run_search

    # One candidate at chance on 6 validation images: saved only because it is asked to (issue 12).
    config = tiny_config(
        dataset, tmp_path / "s", tmp_path / "f", strategy="bayes", trials=1, family="tpe", save_anyway=True
    )
    result = run_search(config)
    assert sum(r["status"] == "trained" for r in result.rows) == 1
    for row in result.rows:
        error = abs(row["alpha"] * row["beta"] ** 2 * row["gamma"] ** 2 / 2 - 1)
        if row["status"] == "trained":
            assert error <= config.tolerance
        else:
            assert row["status"] == "skipped" and error > config.tolerance and row["reason"].startswith("constraint")
    assert (tmp_path / "f" / "tpe.json").exists()


def test_rerun_with_other_options_is_refused(dataset, tmp_path, capsys):
    from workbench.scaling_search.search import prepare_dir

    config = tiny_config(dataset, tmp_path / "s", tmp_path / "f")
    prepare_dir(config)
    with pytest.raises(ValueError, match="tolerance"):
        prepare_dir(tiny_config(dataset, tmp_path / "s", tmp_path / "f", tolerance=0.2))
    prepare_dir(tiny_config(dataset, tmp_path / "s", tmp_path / "f", trials=20))  # more trials: fine


# ----------------------------------------------------------------------------- the parts
def test_candidates_hold_the_flops_constraint():
    paper = complete(1.2, 1.1, step=0.05, gamma_range=(1.0, 1.5))
    assert paper == Candidate(1.2, 1.1, 1.15)
    assert constraint_error(paper) == pytest.approx(abs(1.2 * 1.1**2 * 1.15**2 / 2 - 1))
    space = feasible_grid(
        grid_values(1.0, 2.0, 0.05), grid_values(1.0, 1.5, 0.05), step=0.05, gamma_range=(1.0, 1.5), tolerance=0.05
    )
    assert paper in space
    assert all(constraint_error(c) <= 0.05 and c.gamma >= 1.0 for c in space)
    assert grid_values(1.0, 1.3, 0.1) == [1.0, 1.1, 1.2, 1.3]


def test_budget_amounts_absolute_and_relative():
    assert parse_amount("--max-flops", "150M") == (150e6, False)
    assert parse_amount("--max-flops", "2.5x") == (2.5, True)
    limits = Budget(flops="2x", params="1.5M", latency_ms=4).limits({"flops": 1e6, "params": 9})
    assert limits == {"flops": 2e6, "params": 1.5e6, "latency_ms": 4.0}
    assert Budget(latency_ms=3).primary_metric() == "latency_ms"
    with pytest.raises(ValueError, match="--max-params='lots'"):
        Budget(params="lots").validate()


def test_pareto_front_and_choice():
    rows = [
        {"number": n, "status": "trained", "flops": f, "val_accuracy": a}
        for n, f, a in [(0, 10, 0.5), (1, 20, 0.4), (2, 30, 0.7), (3, 15, 0.7)]
    ]
    rows.append({"number": 4, "status": "skipped", "flops": 5, "val_accuracy": None})
    assert [r["number"] for r in pareto_front(rows, "flops")] == [0, 3]
    assert choose(rows)["number"] == 3  # the tie at 0.7 goes to fewer FLOPs


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max-flops", "abc"], "--max-flops='abc' is not an amount"),
        (["--tolerance", "2"], "tolerance=2.0 must be in [0, 1)"),
        (["--alpha-range", "0.5,1.5"], "alpha_range=(0.5, 1.5)"),
        (["--family", "My Family"], "invalid family name 'My Family'"),
    ],
)
def test_cli_rejects_bad_options_with_a_clear_message(flags, message, capsys):
    from workbench.cli import main

    assert main(["scale-search", "somewhere", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
