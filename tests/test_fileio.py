"""Output files: refused early when they cannot be written, written atomically with ordinary modes."""

from __future__ import annotations

import contextlib
import os
import resource
import stat
from pathlib import Path

import numpy as np
import pytest

from streamer.errors import InputError
from streamer.fileio import atomic_path, atomic_write_bytes, check_input, check_output


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_check_output_accepts_a_file_in_a_folder_yet_to_be_made(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "avatar.ply"
    assert check_output(target, (".ply",)) == target
    assert check_output(tmp_path / "AVATAR.PLY", (".ply",)).name == "AVATAR.PLY"  # case of the extension
    assert not (tmp_path / "new").exists()  # checking makes nothing


@pytest.mark.parametrize(
    "name, suffixes, words",
    [
        ("folder", None, "is a folder; give a file name"),
        ("", (".ply",), "the output file name is empty"),  # (Path("") is the current folder)
        ("a.txt", (".ply",), "the output must end in .ply"),
        ("clip.webm", (".mp4", ".mkv", ".mov"), "must end in .mp4, .mkv or .mov"),
        ("afile/a.ply", (".ply",), "afile is not a folder"),
        ("afile/deeper/a.ply", (".ply",), "afile is not a folder"),
    ],
)
def test_check_output_refuses_what_cannot_be_written(tmp_path: Path, monkeypatch, name, suffixes, words) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("a file, not a folder")
    with pytest.raises(InputError, match=words):
        check_output(name, suffixes)


def test_writing_under_a_file_is_an_input_error_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        atomic_write_bytes(tmp_path / "afile" / "a.json", b"{}")
    with pytest.raises(InputError, match="is a folder"):
        with atomic_path(tmp_path) as tmp:  # the folder itself as the target
            tmp.write_bytes(b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_failure_while_writing_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="encoder died"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a clip")
        raise RuntimeError("encoder died")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_an_interrupt_just_after_the_temporary_is_made_still_removes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C or SIGTERM (a KeyboardInterrupt between two bytecodes) in the instant after the
    temporary file appears, before the writer gets it: the file goes, the old output stays."""
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"old")
    real_close = os.close

    def close_then_interrupt(fd: int) -> None:
        real_close(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "close", close_then_interrupt)  # (the one call inside)
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"never reached")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Writes past ``limit`` bytes fail with EFBIG, as on a full disk (Python ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_full_disk_is_an_input_error_naming_the_output_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "avatar.ply"
    target.write_bytes(b"old")
    with file_size_limit(4096), pytest.raises(InputError, match=f"cannot write {target}: File too large"):
        atomic_write_bytes(target, bytes(100_000))
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["avatar.ply"]


def test_a_video_that_fills_the_disk_is_an_input_error_and_leaves_nothing(tmp_path: Path) -> None:
    from streamer.render.video import VideoWriter

    noise = np.random.default_rng(0).integers(0, 256, (30, 128, 128, 3), dtype=np.uint8)
    clip = tmp_path / "clip.mp4"
    with (
        file_size_limit(20_000),
        pytest.raises(InputError, match=f"cannot write {clip}: File too large"),
        VideoWriter(clip, 128, 128, crf=0) as writer,
    ):
        for rgb in noise:
            writer.write(rgb)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_while_the_video_encoder_opens_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C or SIGTERM while PyAV opens the container and the codec (slow on a busy machine, and
    the temporary file already exists): the writer never reaches its ``with``, so it cleans up itself."""
    import av

    from streamer.render.video import VideoWriter

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(av, "open", interrupted)
    try:
        VideoWriter(tmp_path / "clip.mp4", 128, 128)
    except KeyboardInterrupt:
        # looked at inside the handler, where the CLI ends the process on a SIGTERM: the garbage
        # collector, which would close the half-made writer once the exception is dropped, never runs
        left = list(tmp_path.iterdir())
    else:
        pytest.fail("the interrupt was swallowed")
    assert left == []


def test_new_files_get_the_umask_mode_and_replaced_files_keep_theirs(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
        assert mode(tmp_path / "a.json") == 0o640  # not mkstemp's private 0o600
        os.umask(0o022)
        with atomic_path(tmp_path / "clip.mp4") as tmp:
            tmp.write_bytes(b"data")
        assert mode(tmp_path / "clip.mp4") == 0o644
        os.chmod(tmp_path / "a.json", 0o600)
        atomic_write_bytes(tmp_path / "a.json", b"{ }")
        assert mode(tmp_path / "a.json") == 0o600 and (tmp_path / "a.json").read_bytes() == b"{ }"
    finally:
        os.umask(old)


def test_an_input_that_cannot_be_read_is_named_with_its_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "in.txt").write_text("x")
    assert check_input("--in", tmp_path / "in.txt") == tmp_path / "in.txt"
    with pytest.raises(InputError, match=f"--in {tmp_path / 'nope'}: no such file"):
        check_input("--in", tmp_path / "nope")
    with pytest.raises(InputError, match=f"--in {tmp_path} is a folder; give a file"):
        check_input("--in", tmp_path)

    def denied(*a: object, **k: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", denied)  # root reads anything: stand in for a locked folder
    with pytest.raises(InputError, match=f"--in {tmp_path / 'in.txt'}: cannot read it: Permission denied"):
        check_input("--in", tmp_path / "in.txt")
