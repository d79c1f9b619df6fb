"""Atomic writes: readers never see half a file, threads never collide, results keep the umask's mode."""

import os
import stat
import threading

import pytest

from pipelines.files import (
    atomic_directory,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    remove_stale_temporaries,
)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_written_file_has_the_mode_open_would_give(tmp_path, umask_022):
    path = atomic_write_text(tmp_path / "labels.txt", "a\nb\n")
    assert path.read_text() == "a\nb\n" and mode(path) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["labels.txt"]


def test_threads_of_one_process_writing_one_file_never_collide(tmp_path):
    # The app's sessions are threads of one process: pid-based temporary names collided (report B7).
    errors = []

    def write(k):
        try:
            for i in range(100):
                atomic_write_json(tmp_path / "report.json", {"writer": k, "i": i})
        except Exception as exc:  # the assertion below shows what went wrong
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "config.yaml", "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_a_staged_directory_appears_whole_with_readable_modes_and_never_replaces(tmp_path, umask_022):
    target = tmp_path / "saved_models" / "m" / "1"
    with atomic_directory(target) as staging:
        (staging / "variables").mkdir()
        (staging / "variables" / "v.data").write_bytes(b"x")
        assert not target.exists()
    assert mode(target) == 0o755 and mode(target / "variables") == 0o755
    assert mode(target / "variables" / "v.data") == 0o644
    with pytest.raises(FileExistsError), atomic_directory(target):
        pass
    assert [p.name for p in target.parent.iterdir()] == ["1"]


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    (tmp_path / ".best.weights.abc.weights.h5").write_bytes(b"x")
    (tmp_path / ".3-xyz").mkdir()
    (tmp_path / "best.weights.h5").write_bytes(b"keep")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".3-xyz", ".best.weights.abc.weights.h5"]
    assert [p.name for p in tmp_path.iterdir()] == ["best.weights.h5"]
