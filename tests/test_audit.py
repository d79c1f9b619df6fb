"""Data health (`workbench audit`): what it finds, how it reports it, and the dataset versions its fixes make.

Pure functions are specified on small arrays; one end-to-end audit runs a randomly initialised lite0 at 32 px
on a dozen synthetic images (the ImageNet-weighted figures are benchmarks/bench_audit.py's).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipelines import DataError, Manifest, ingest
from pipelines import splits as splitting
from pipelines.groups import assign_grouped
from workbench.audit import duplicates as dup
from workbench.audit import label_errors as le
from workbench.audit import outliers as outl
from workbench.audit.apply import apply_findings, chosen_actions, parse_kinds
from workbench.audit.findings import FORMAT, load_findings
from workbench.audit.stats import dataset_stats


def picture(seed: int, size: int = 64) -> Image.Image:
    """A smooth random colour picture (blurred noise): distinct seeds give unrelated pictures."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.BICUBIC)


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def blobs(per_class: int = 30, classes: int = 3, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well separated Gaussian clusters, one per class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, (classes, dim))
    y = np.repeat(np.arange(classes), per_class)
    return (centres[y] + rng.normal(0, 1, (len(y), dim))).astype(np.float32), y


# ------------------------------------------------------------------------------------------------ duplicates
def test_duplicates_are_reported_as_groups_closed_under_transitivity():
    assert dup.groups_from_pairs(6, [(0, 1), (1, 4), (2, 3)]) == [[0, 1, 4], [2, 3]]
    assert dup.groups_from_pairs(3, []) == []


def test_hamming_pairs_do_not_depend_on_the_chunk_size():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 50, dtype=np.uint64)
    hashes[7] = hashes[3] ^ np.uint64(0b1011)  # 3 bits apart
    pairs = dup.hamming_pairs(hashes, 3, chunk=1000)
    assert (3, 7, 3) in pairs
    assert dup.hamming_pairs(hashes, 3, chunk=4) == pairs


def test_each_image_proposes_its_k_most_similar_images_whatever_the_chunk_size():
    x, _ = blobs(per_class=5, classes=4, dim=16)
    x[19] = x[2] * 1.01  # a scaled copy: cosine 1 after centring
    unit = dup.centred_unit(x)
    assert np.allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    similarity = lambda i, j: unit[i:j] @ unit.T  # noqa: E731
    pairs = dup.top_k_pairs(similarity, len(unit), 1, chunk=3)
    assert (2, 19) in pairs and all(a < b for a, b in pairs)
    assert pairs == dup.top_k_pairs(similarity, len(unit), 1, chunk=1000)
    assert dup.top_k_pairs(similarity, len(unit), 3) >= pairs


def _small(images) -> np.ndarray:
    """Images as the scan keeps them for the pixel check: box-filtered to SOURCE x SOURCE."""
    from workbench.audit.align import SOURCE

    return np.stack([np.asarray(Image.fromarray(np.asarray(im)).resize((SOURCE, SOURCE), Image.BOX)) for im in images])


def test_the_pixel_check_aligns_a_cropped_mirrored_copy_and_measures_brightness():
    from workbench.audit import align

    # Area resampling keeps a flat image flat; so does the blur.
    assert np.allclose(align.area_matrix(32, 24, 0, 32).sum(axis=1), 1.0)
    assert np.allclose(align.blur_matrix().sum(axis=1), 1.0)
    original = picture(1, 96)
    copy = ImageOps.mirror(jpeg(original.crop((5, 3, 93, 94)).resize((70, 70)), 70))
    brighter = np.clip(np.asarray(original).astype(int) + 40, 0, 255).astype(np.uint8)
    scores = align.verify_pairs(_small([original, copy, brighter, picture(2, 96)]), [(1, 0), (0, 2), (0, 3)])
    assert scores.pairs.tolist() == [[0, 1], [0, 2], [0, 3]]  # each pair once, i < j
    (copy_corr, bright_corr, other_corr), (copy_rms, bright_rms, _) = scores.correlation, scores.rms
    assert copy_corr > 0.97 and copy_rms < 5  # aligned through the crop and the mirror
    assert bright_corr > 0.97 and bright_rms > 30  # the same shapes, another brightness: not a copy
    assert other_corr < 0.6


def test_re_encoded_resized_cropped_and_mirrored_copies_are_one_group_and_other_pictures_are_not(tmp_path):
    from workbench.audit.scan import scan_images

    original = picture(1, size=96)
    images = {
        "a.png": original,
        "b.jpg": jpeg(original, 60),
        "c.jpg": jpeg(original.resize((64, 64)), 80),
        "d.jpg": ImageOps.mirror(jpeg(original.crop((4, 2, 92, 93)).resize((70, 70)), 70)),
        **{f"o{seed}.png": picture(seed, 96) for seed in range(2, 14)},
    }
    for name, image in images.items():
        image.save(tmp_path / name)
    scan = scan_images([str(tmp_path / name) for name in images])
    groups = dup.find_duplicates(scan.hashes, scan.pixels, None, scan.thumbs)
    assert [g.members for g in groups] == [[0, 1, 2, 3]]
    g = groups[0]
    assert g.kind == "near" and "thumbnail" in g.evidence and g.evidence[-1] == "pixels"
    assert g.min_correlation >= dup.DEFAULT_MIN_CORRELATION and g.max_rms <= dup.DEFAULT_MAX_RMS


def test_among_look_alikes_only_a_copy_that_stands_out_is_linked():
    from workbench.audit.align import verify_pairs

    # Twelve variations of one picture, each within the correlation and RMS bounds of the others (plain shirts on
    # black, say), and a near-exact copy of the first: only the copy is a duplicate.
    rng = np.random.default_rng(0)
    base = np.asarray(picture(1, 32), dtype=np.float32)
    looks = [base + (np.asarray(picture(100 + i, 32), dtype=np.float32) - 128) * 0.12 for i in range(12)]
    copy = looks[0] + rng.normal(0, 1.0, base.shape)
    pixels = np.clip(np.stack([*looks, copy]), 0, 255).astype(np.uint8)
    n = len(pixels)
    scores = verify_pairs(pixels, [(i, j) for i in range(12) for j in range(i + 1, 12)])
    assert (scores.correlation >= dup.DEFAULT_MIN_CORRELATION).all() and (scores.rms <= dup.DEFAULT_MAX_RMS).all()
    assert (scores.rms > dup.SURE_RMS).all()  # none is near-exact
    same_hash = np.zeros(n, np.uint64)  # so that every pair is proposed
    groups = dup.find_duplicates(dup.ImageHashes([str(i) for i in range(n)], same_hash, same_hash), pixels)
    assert [g.members for g in groups] == [[0, 12]]


def test_equal_bytes_are_an_exact_group_and_a_group_spanning_splits_is_leakage():
    far = np.array([0, 0xFFFF_FFFF_0000_0000, 0, 0x0000_FFFF_FFFF_0000], dtype=np.uint64)  # 32 bits apart
    hashes = dup.ImageHashes(sha256=["a", "b", "a", "c"], phash=far, phash_mirror=far)
    groups = dup.find_duplicates(hashes, _small([picture(s, 32) for s in (1, 2, 1, 3)]))
    assert [(g.members, g.kind, g.evidence) for g in groups] == [([0, 2], "exact", ("bytes",))]
    assert groups[0].min_correlation is None  # no near link
    assert dup.spans_splits(["train", "test"]) and not dup.spans_splits(["train", "train"])


# ---------------------------------------------------------------------------------------------- label errors
def test_label_errors_are_found_out_of_sample_ranked_and_given_the_right_suggestion():
    x, truth = blobs(per_class=30, classes=3)
    given = truth.copy()
    flipped = [4, 40, 75]
    given[flipped] = (truth[flipped] + 1) % 3
    probabilities = le.out_of_sample_probabilities(x, given, c=1.0)
    issues = le.find_label_issues(given, probabilities)
    assert {i.index for i in issues[:3]} == set(flipped)
    assert all(i.suggested == truth[i.index] for i in issues[:3])
    assert [i.quality for i in issues] == sorted(i.quality for i in issues)  # most suspicious first


def test_too_few_images_per_class_for_cross_validation_is_a_clear_message():
    with pytest.raises(le.TooFewImages, match=r"at least 5 images.*'cat' \(3\)"):
        le.check_enough(np.array([0] * 8 + [1] * 3), ["dog", "cat"])


# -------------------------------------------------------------------------------------------------- outliers
def test_the_image_far_from_every_other_is_the_first_outlier():
    x, y = blobs(per_class=20, classes=3, dim=8)
    x = np.vstack([x, np.full((1, 8), 40.0)])
    y = np.append(y, 0)
    unit = dup.centred_unit(x)
    found, scores = outl.find_outliers(unit, y, 3)
    assert found and found[0].index == len(x) - 1
    assert np.allclose(outl.knn_distances(unit, 5, chunk=7), scores)
    blank = np.zeros(len(x), bool)
    blank[3] = True  # a flat image is reported even where its features look ordinary, and first
    assert [o.index for o in outl.find_outliers(unit, y, 3, blank=blank)[0]][:2] == [3, len(x) - 1]
    noisy = np.zeros(len(x), bool)
    noisy[5] = True  # so is a noise-like one, after the blank ones
    assert [o.index for o in outl.find_outliers(unit, y, 3, blank=blank, noisy=noisy)[0]][:3] == [3, 5, len(x) - 1]


def test_static_and_fine_stripes_look_like_noise_and_pictures_flat_or_not_do_not():
    rng = np.random.default_rng(0)
    static = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    stripes = np.zeros((32, 32, 3), np.uint8)
    stripes[:, ::3] = (40, 200, 120)
    flat = np.full((32, 32, 3), 90, np.uint8)
    pictures = [np.asarray(picture(s, 32)) for s in range(5)]
    pixels = np.stack([static, stripes, flat, *pictures])
    correlation = outl.neighbour_correlation(pixels)
    assert correlation[0] < 0.1 and correlation[1] < 0.1 and correlation[2] == 0.0
    assert (correlation[3:] > 0.5).all()
    blank = np.array([False, False, True] + [False] * 5)
    assert outl.noise_like(pixels, blank).tolist() == [True, True] + [False] * 6


# ----------------------------------------------------------------------------------------------------- stats
def test_a_flat_coloured_image_is_blank_and_a_gray_one_is_grayscale(tmp_path):
    from workbench.audit.scan import scan_images

    Image.new("RGB", (20, 20), (200, 30, 90)).save(tmp_path / "flat.png")
    Image.fromarray(np.asarray(picture(3).convert("L"))).convert("RGB").save(tmp_path / "gray.png")
    picture(4).save(tmp_path / "colour.png")
    scan = scan_images([str(tmp_path / n) for n in ("flat.png", "gray.png", "colour.png")])
    assert scan.blank.tolist() == [True, False, False]
    assert scan.grayscale.tolist() == [False, True, False]


def test_statistics_count_small_images_grayscale_and_imbalance():
    from pipelines.manifest import Record

    def rec(w, h, label):
        return Record(f"/d/{label}/{w}x{h}.png", label, "train", w, h, "PNG", "ok")

    records = [rec(32, 32, "a"), rec(400, 300, "a"), rec(300, 600, "a"), rec(224, 224, "b")]
    st = dataset_stats(records, ["a", "b"], 224, np.array([1, 0, 0, 0], bool), np.zeros(4, bool))
    assert st["upscaled_a_lot"] == 1  # 32 px to 224 is 7x
    assert st["grayscale_share"] == 0.25
    assert st["class_counts"] == {"a": 3, "b": 1} and st["imbalance_ratio"] == 3.0
    assert st["aspect_ratio"]["portrait"] == 1 and st["aspect_ratio"]["landscape"] == 1


# ---------------------------------------------------------------------------------------- grouped splitting
def test_without_groups_the_grouped_split_is_the_ordinary_split():
    keys = [f"cat/{i}.png" for i in range(40)]
    plain = splitting.assign(keys, seed=3, val_fraction=0.2, test_fraction=0.2)
    grouped = assign_grouped(
        keys, ["cat"] * 40, [""] * 40, classes=["cat"], seed=3, val_fraction=0.2, test_fraction=0.2
    )
    assert grouped == plain


def test_every_group_lands_on_one_side_of_the_split():
    keys = [f"{c}/p{i // 4}_{i}.png" for c in "ab" for i in range(40)]
    labels = [k[0] for k in keys]
    groups = [k.split("/")[1].split("_")[0] + k[0] for k in keys]
    out = assign_grouped(keys, labels, groups, classes=["a", "b"], seed=0, val_fraction=0.2, test_fraction=0.2)
    by_group: dict[str, set] = {}
    for g, s in zip(groups, out, strict=True):
        by_group.setdefault(g, set()).add(s)
    assert all(len(s) == 1 for s in by_group.values())
    assert set(out) == {"train", "val", "test"}


def test_ingest_groups_by_file_name_and_records_it(tmp_path):
    for c in ("a", "b"):
        for i in range(24):
            (tmp_path / "data" / c).mkdir(parents=True, exist_ok=True)
            picture(i).resize((16, 16)).save(tmp_path / "data" / c / f"patient{i // 3}_{i}.png")
    manifest = ingest(tmp_path / "data", tmp_path / "w", group_by=r"^(patient\d+)_")
    splits_of: dict[str, set] = {}
    for r in manifest.usable():
        splits_of.setdefault(r.label + r.group, set()).add(r.split)
    assert len(splits_of) == 16 and all(len(s) == 1 for s in splits_of.values())
    reloaded = Manifest.load(tmp_path / "w" / "manifest.json")
    assert reloaded.grouping.startswith("file names") and reloaded.usable()[0].group.startswith("patient")
    with pytest.raises(DataError, match="no capture group"):
        ingest(tmp_path / "data", tmp_path / "w2", group_by=r"patient\d+")


def test_training_splits_by_the_configured_groups(tmp_path):
    from workbench.engine.config import RunConfig, with_overrides
    from workbench.engine.context import _load_data

    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(12):
            picture(i).resize((16, 16)).save(tmp_path / "data" / c / f"clip{i // 4}-frame{i}.png")
    config = with_overrides(RunConfig(data=str(tmp_path / "data")), {"recipe.group_by": r"^(clip\d+)-"})
    manifest = _load_data(config, tmp_path / "run", resuming=False)
    assert manifest.grouping.startswith("file names") and "clip" in manifest.grouping
    for c in ("a", "b"):
        for clip in range(3):
            assert len({r.split for r in manifest.usable() if r.label == c and r.group == f"clip{clip}"}) == 1


# ------------------------------------------------------------------------------------ findings and fixes
def _findings_stub(paths: dict[str, str]) -> dict:
    def member(p, s):
        return {
            "file": p,
            "path": paths[p],
            "label": "a",
            "split": "train",
            "action": "keep",
            "suggested_action": s,
        }

    return {
        "format": FORMAT,
        "version": 1,
        "classes": ["a", "b"],
        "duplicates": [{"id": "duplicate-0001", "members": [member("x", "keep"), member("y", "drop")]}],
        "label_errors": {
            "items": [member("z", "relabel") | {"relabel_to": "b"}, member("y", "relabel") | {"relabel_to": "b"}]
        },
        "outliers": {"items": [member("w", "drop")]},
    }


def test_only_chosen_or_accepted_actions_apply_and_drop_wins_over_relabel():
    f = _findings_stub({k: f"/d/{k}" for k in "wxyz"})
    assert chosen_actions(f) == {}  # an audit changes nothing by itself
    assert chosen_actions(f, ("duplicates", "label_errors")) == {"/d/y": ("drop", None), "/d/z": ("relabel", "b")}
    f["outliers"]["items"][0]["action"] = "drop"
    assert chosen_actions(f) == {"/d/w": ("drop", None)}
    assert parse_kinds("all") == ("duplicates", "label_errors", "outliers")
    with pytest.raises(ValueError, match="unknown kind"):
        parse_kinds("dupes")


def test_findings_with_an_impossible_action_are_refused_naming_the_entry(tmp_path):
    f = _findings_stub({k: f"/d/{k}" for k in "wxyz"})
    f["outliers"]["items"][0]["action"] = "relabel"
    (tmp_path / "f.json").write_text(json.dumps(f))
    with pytest.raises(ValueError, match="outliers entry 'w' has action 'relabel'; use one of keep, drop"):
        load_findings(tmp_path / "f.json")
    f["outliers"]["items"][0]["action"] = "keep"
    f["label_errors"]["items"][0] |= {"action": "relabel", "relabel_to": "zebra"}
    (tmp_path / "f.json").write_text(json.dumps(f))
    with pytest.raises(ValueError, match="'zebra', which is not a class"):
        load_findings(tmp_path / "f.json")
    (tmp_path / "f.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a workbench audit findings file"):
        load_findings(tmp_path / "f.json")


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def make_photos(root: Path, per_class: int = 3) -> Path:
    """train/<class>/ of `per_class` pictures and test/<class>/ of one, plus a byte copy of a train cat in test."""
    for k, c in enumerate(("cat", "dog", "owl")):
        for s in range(10 * k, 10 * k + per_class):
            (root / "train" / c).mkdir(parents=True, exist_ok=True)
            picture(s).save(root / "train" / c / f"{s}.png")
        (root / "test" / c).mkdir(parents=True, exist_ok=True)
        picture(100 + k).save(root / "test" / c / "t.png")
    (root / "test" / "cat" / "leak.png").write_bytes((root / "train" / "cat" / "0.png").read_bytes())
    return root


def test_an_audit_writes_findings_from_cached_features_and_its_fixes_make_a_version_that_training_records(tmp_path):
    from workbench.audit import run_audit
    from workbench.audit.features import FEATURES_FILE, cache_key
    from workbench.engine.features import save_cache

    data = make_photos(tmp_path / "photos")
    before = _tree_digest(data)
    out = tmp_path / "audit"
    # Features cached for exactly this data, variant and size are read back: no backbone runs.
    manifest = ingest(str(data), out)
    rng = np.random.default_rng(0)
    save_cache(out / FEATURES_FILE, cache_key(manifest, "lite0", "imagenet", 32), {"x": rng.normal(size=(13, 16))})

    f = run_audit(str(data), out, image_size=32)
    assert f["features"]["cached"] is True
    assert json.loads((out / "findings.json").read_text())["format"] == FORMAT
    assert (out / "summary.txt").read_text().startswith("audit of")
    leak = [g for g in f["duplicates"] if g["kind"] == "exact"]
    assert len(leak) == 1 and leak[0]["leakage"] and "test" in leak[0]["splits"]  # val is carved from train/
    assert {m["file"] for m in leak[0]["members"]} == {"train/cat/0.png", "test/cat/leak.png"}
    # 4 images per class cannot be cross-validated: a message, not a crash.
    assert f["label_errors"]["status"] == "skipped" and "at least 5 images" in f["label_errors"]["message"]
    assert f["stats"]["images"] == 13 and f["summary"]["leakage_groups"] >= 1

    version = apply_findings(out / "findings.json", tmp_path / "v2", accept=("duplicates",))
    assert _tree_digest(data) == before  # the originals are untouched
    assert version.info["dropped"] == 1 and version.info["images"] == 12
    targets = {os.readlink(p) for p in (tmp_path / "v2").rglob("*.png")}
    assert str(data / "train" / "cat" / "0.png") not in targets  # the test copy stays, the train one goes
    assert os.path.islink(tmp_path / "v2" / "test" / "cat" / "leak.png")
    with pytest.raises(ValueError, match="never overwritten"):
        apply_findings(out / "findings.json", tmp_path / "v2")
    manifest = ingest(tmp_path / "v2", tmp_path / "run")
    assert manifest.dataset_version["id"] == version.info["id"]
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["dataset_version"]["id"] == version.info["id"]


@pytest.mark.slow
def test_the_backbone_features_are_computed_once_then_read_from_the_cache(tmp_path):
    from workbench.audit import run_audit

    data = make_photos(tmp_path / "photos", per_class=5)
    first = run_audit(str(data), tmp_path / "audit", weights="none", image_size=32, batch_size=8)
    assert first["features"] == {"file": "features.npz", "cached": False, "dim": 1280}
    assert first["label_errors"]["status"] == "ok"
    second = run_audit(str(data), tmp_path / "audit", weights="none", image_size=32, batch_size=8)
    assert second["features"]["cached"] is True
    assert [g["members"] for g in second["duplicates"]] == [g["members"] for g in first["duplicates"]]


def test_the_command_refuses_data_with_apply_and_accept_without_it(tmp_path, capsys):
    from workbench.cli import main

    assert main(["audit", str(tmp_path), "--apply", str(tmp_path / "findings.json")]) == 2
    assert "either DATA" in capsys.readouterr().err
    assert main(["audit", str(tmp_path), "--accept", "duplicates"]) == 2
    assert "--accept goes with --apply" in capsys.readouterr().err
    assert main(["audit", "--apply", str(tmp_path / "findings.json")]) == 2
    assert "run `workbench audit DATA` first" in capsys.readouterr().err


def test_a_version_of_unsplit_data_keeps_kept_duplicates_together_through_its_groups_csv(tmp_path):
    from workbench.audit import run_audit
    from workbench.audit.features import FEATURES_FILE, cache_key
    from workbench.engine.features import save_cache

    data = tmp_path / "pool"
    for k, c in enumerate(("cat", "dog")):
        (data / c).mkdir(parents=True)
        for s in range(10 * k, 10 * k + 8):
            picture(s).save(data / c / f"{s}.png")
    for n in range(3):  # three byte copies of one cat: one exact group
        (data / "cat" / f"copy{n}.png").write_bytes((data / "cat" / "0.png").read_bytes())
    out = tmp_path / "audit"
    manifest = ingest(str(data), out)
    x = np.random.default_rng(1).normal(size=(len(manifest.usable()), 16))
    save_cache(out / FEATURES_FILE, cache_key(manifest, "lite0", "imagenet", 32), {"x": x})
    findings = run_audit(str(data), out, image_size=32)
    group = next(g for g in findings["duplicates"] if g["kind"] == "exact")
    assert len(group["members"]) == 4

    version = apply_findings(out / "findings.json", tmp_path / "v")  # every action is keep
    assert version.info["layout"] == "classes" and version.info["groups"] == "groups.csv"
    assert (tmp_path / "v" / "groups.csv").read_text().count(group["id"]) == 4
    resplit = ingest(tmp_path / "v", tmp_path / "run", test_fraction=0.3)
    assert resplit.grouping.endswith("groups.csv")
    assert len({r.split for r in resplit.usable() if r.group == group["id"]}) == 1
