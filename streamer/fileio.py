"""Input and output files: checked before the work starts, written atomically, with ordinary permissions.

* :func:`check_input`: an input file that can be opened, or an error naming the flag, the file and
  why not (missing, a folder, no permission), before the work.
* :func:`check_output`: refuse an output path that cannot be written (a folder, a parent that is a
  file, a read-only folder, an extension the writer does not make) before minutes of work, not after.
* :func:`atomic_path` / :func:`atomic_write_bytes`: readers see the old file or the complete new
  one, never a part; the new file gets the mode an ordinary ``open()`` would give it (the umask's),
  or keeps the mode of the file it replaces.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError


def check_input(flag: str, name: str | Path) -> Path:
    """``name``, the input file given with ``flag``, as a Path once it has been opened for reading.

    Raises:
        InputError: it does not exist, is a folder or cannot be read (permissions, a folder on the
            way that cannot be entered); the message names the flag and the file.
    """
    try:
        with open(name, "rb"):
            pass
    except FileNotFoundError:
        raise InputError(f"{flag} {name}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{flag} {name} is a folder; give a file") from None
    except OSError as exc:
        raise InputError(f"{flag} {name}: cannot read it: {exc.strerror or exc}") from None
    return Path(name)


def check_output(path: str | Path, suffixes: tuple[str, ...] | None = None) -> Path:
    """``path`` as a Path, or an :class:`InputError` saying why it cannot be written.

    Args:
        path: the file to write (its folder may not exist yet: it is made when writing).
        suffixes: the extensions the writer makes, lower case with the dot (None: any).
    """
    if not str(path).strip():
        raise InputError("the output file name is empty")
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        names = ", ".join(suffixes[:-1]) + " or " + suffixes[-1] if len(suffixes) > 1 else suffixes[0]
        raise InputError(f"{path}: the output must end in {names}")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # the nearest folder that exists
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"cannot write {path}: {folder} is not a folder")
    if folder == path.parent:  # try it: permissions alone miss read-only file systems (and root)
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: no permission to make a folder in {folder}")
    return path


def _new_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0o666 less the process umask."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: read it by setting it (and put it back at once)
    os.umask(mask)
    return 0o666 & ~mask


def _temp_name(path: Path) -> Path:
    """A hidden name beside ``path`` that keeps its extension (writers detect formats by it)."""
    return path.with_name(f".{path.stem}.{secrets.token_hex(6)}.tmp{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    An ``OSError`` while writing (no space left, a quota, an I/O error) becomes an
    :class:`InputError` naming ``path``, since the command's output, not its code, is at fault.

    For writers that want a file name (``np.savez``, PyAV). The suffix is kept so that
    format detection by extension still works.

    Raises:
        InputError: the folder cannot be made or written to.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    # The name is chosen before the file exists and everything after it sits in the ``try``: a
    # Ctrl-C or SIGTERM (raised between any two bytecodes) once the file is made still removes it.
    tmp = _temp_name(path)
    try:
        while True:
            try:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                break
            except FileExistsError:  # another writer's temporary: not ours to remove
                tmp = _temp_name(path)
            except OSError as exc:
                raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
        yield tmp
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)  # replacing a file keeps its mode
        except OSError:
            mode = _new_file_mode()
        os.chmod(tmp, mode)  # made private (0o600) above
        os.replace(tmp, path)
    except IsADirectoryError:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{path} is a folder; give a file name") from None
    except OSError as exc:  # a full disk or quota, an I/O error: the old file stays as it was
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsynced temp file + rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
