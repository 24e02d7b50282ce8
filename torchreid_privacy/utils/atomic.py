"""Atomic file writes: a file appears whole or not at all.

Why one module: checkpoints, ``results.json``, ``attack.json`` and image outputs must never be
left half-written by a killed run; every writer in the package goes through here. Two kinds:

- :func:`write_with` / :func:`write_bytes` / :func:`write_json` replace their target (a temp file
  beside it, fsync'ed, renamed over it): checkpoints and reports are meant to be replaced;
  temp names are unpredictable and created exclusively, so a symlink someone planted in the
  folder is never followed;
- :func:`write_new` never replaces anything (image folders promise an existing output is kept):
  a hard link creates the target atomically or fails, so a file appearing between the caller's
  check and the write is still kept. No fsync per file: folders hold many images, and rename
  atomicity is what keeps them whole.

Temporary names carry the writing process's id (``.NAME.PID.XXXXXXXX.tmp`` beside a file,
``.NAME-PID-XXXXXXXX.partial`` beside a folder): a run killed outright (SIGKILL, power loss) runs
no cleanup, and :func:`sweep_stale` lets the next writer of the same target remove what it left,
without touching a live run's temporaries or anything else.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Tuple, Union

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
UMASK = os.umask(0o022)  # read once (os.umask has no getter), put straight back
os.umask(UMASK)


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RANDOM = "[a-z0-9_]{8}"  # what tempfile.mkstemp/mkdtemp put between prefix and suffix


def new_temp(path: str, suffix: str = ".tmp") -> Tuple[int, str]:
    """A new temp file beside ``path``, ``.NAME.PID.XXXXXXXX{suffix}``: an unpredictable name, created
    exclusively (``O_EXCL``, so a symlink planted in the folder is never followed), the permissions a
    plain ``open`` would give. ``suffix``: ``.tmp``, or ``path``'s own (:func:`sweep_stale` knows both)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}.", suffix=suffix,
                               dir=os.path.dirname(os.path.abspath(path)))
    os.fchmod(fd, 0o666 & ~UMASK)
    return fd, tmp


def write_with(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> str:
    """Call ``write(f)`` on a temp file opened for binary writing, then rename it to ``path``."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = new_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)
    _fsync_dir(path)
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> str:
    return write_with(path, lambda f: f.write(data))


def write_json(path: str | os.PathLike, obj: Any) -> str:
    """``obj`` as indented JSON (numpy/torch scalars written as floats)."""
    text = json.dumps(obj, indent=2, default=float)
    return write_bytes(path, text.encode("utf-8"))


def _temp_beside(path: Path, data: bytes) -> Path:
    fd, tmp = new_temp(str(path))
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(tmp)


def write_new(path: PathLike, data: bytes) -> Path:
    """Create ``path`` holding ``data``; FileExistsError (nothing written) if it exists already."""
    path = Path(path)
    if os.path.lexists(path):  # the common case, without touching the folder
        raise FileExistsError(f"{path} already exists; it is never overwritten")
    path.parent.mkdir(parents=True, exist_ok=True)
    return link_into_place(_temp_beside(path, data), path)


def link_into_place(tmp: PathLike, path: PathLike) -> Path:
    """Give the finished temp file ``tmp`` the name ``path``, only if ``path`` does not exist.

    A hard link creates ``path`` atomically or fails (FileExistsError, nothing replaced); on a
    file system without hard links, check, then rename. ``tmp`` is gone afterwards either way.
    Streamed outputs (a video, its sealed sidecar) are written to a temp file and end here too.
    """
    tmp, path = Path(tmp), Path(path)
    try:
        try:
            os.link(tmp, path)  # atomic and exclusive: fails if path exists
        except FileExistsError:
            raise FileExistsError(f"{path} already exists; it is never overwritten") from None
        except OSError:  # a file system without hard links: check, then rename
            if os.path.lexists(path):
                raise FileExistsError(f"{path} already exists; it is never overwritten") from None
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path



def check_new_folder(path: PathLike, flag: str) -> Path:
    """``path`` (absolute) if a new folder may appear there: absent, or an empty folder."""
    p = Path(path).expanduser().absolute()
    if p.is_symlink() or (p.exists() and (not p.is_dir() or any(p.iterdir()))):
        raise FileExistsError(f"{flag}: {p} already exists and is not an empty folder; nothing is written into it")
    parent = next((q for q in p.parents if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValueError(f"{flag}: {p}: {parent} is a file, not a folder")
    return p


def new_folder_beside(path: Path, *, private: bool = False) -> Path:
    """A fresh hidden folder ``.NAME-PID-XXXXXXXX.partial`` beside ``path``, to fill and then rename
    into place (:func:`move_into_place`); what killed runs left for ``path`` is swept first.

    Its mode is what a plain mkdir gives, or 0700 with ``private`` (decrypted originals: until it is
    renamed, and if a killed run leaves it behind, only the owner can list or read it; renaming
    keeps the mode, so the output folder stays 0700 too).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    tmp = tempfile.mkdtemp(prefix=f".{path.name}-{os.getpid()}-", suffix=".partial", dir=path.parent)
    if not private:
        os.chmod(tmp, 0o777 & ~UMASK)  # the mode a plain mkdir gives, not mkdtemp's 0700
    return Path(tmp)


def _temp_patterns(path: Path) -> Tuple["re.Pattern[str]", "re.Pattern[str]"]:
    """The names :func:`new_temp` (file) and :func:`new_folder_beside` (folder) give ``path``'s temporaries."""
    name = re.escape(path.name)
    suffixes = {".tmp", path.suffix.lower()} - {""}
    ends = "|".join(re.escape(x) for x in sorted(suffixes))
    return (re.compile(rf"\.{name}\.([0-9]+)\.{_RANDOM}(?:{ends})"),
            re.compile(rf"\.{name}-([0-9]+)-{_RANDOM}\.partial"))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` may still be running (and writing its temporaries): only a
    ProcessLookupError says no; a process of another user (PermissionError) counts as alive."""
    if pid <= 0:  # 0 and negative ids name process groups, never a writer
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, OSError):  # PermissionError: another user's process
        return True
    return True


def sweep_stale(path: PathLike) -> int:
    """Remove the temporaries of ``path`` (a file's or a folder's) left by processes no longer running.

    Only entries whose name is exactly one of ``path``'s temp names (:func:`new_temp`,
    :func:`new_folder_beside`), that are what that name's writer makes (a regular file, a real
    folder; never a symbolic link) and that belong to this user are considered; of these, those whose
    PID is alive (or may be: another user's, a recycled id) are kept. Each removal is logged; returns
    how many were removed. A folder that cannot be listed sweeps nothing.
    """
    path = Path(path).expanduser().absolute()
    file_name, folder_name = _temp_patterns(path)
    try:
        entries = os.listdir(path.parent)
    except OSError:
        return 0
    removed = 0
    for entry in entries:
        for pattern, is_dir in ((file_name, False), (folder_name, True)):
            match = pattern.fullmatch(entry)
            if match is None:
                continue
            stale = path.parent / entry
            try:
                st = os.lstat(stale)
            except OSError:
                continue
            kind_ok = stat.S_ISDIR(st.st_mode) if is_dir else stat.S_ISREG(st.st_mode)
            pid = int(match.group(1))
            if not kind_ok or st.st_uid != os.geteuid() or _alive(pid):
                continue
            try:
                if is_dir:
                    shutil.rmtree(stale)
                else:
                    os.unlink(stale)
            except FileNotFoundError:  # another run swept it meanwhile
                continue
            except OSError as exc:
                log.warning("%s: cannot remove this temporary left by process %d, no longer running (%s)",
                            stale, pid, exc)
                continue
            removed += 1
            log.warning("%s: removed; a temporary %s left by process %d, which is no longer running",
                        stale, "folder" if is_dir else "file", pid)
    return removed


def move_into_place(tmp: Path, path: Path, flag: str) -> Path:
    """Rename the filled folder ``tmp`` to ``path``: atomic, and replaces only an empty folder."""
    try:
        os.rename(tmp, path)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FileExistsError(f"{flag}: {path} appeared meanwhile and is not empty; nothing was written") from None
    return path


@contextlib.contextmanager
def new_folder(path: PathLike, flag: str) -> Iterator[Path]:
    """A whole folder, or none: fill the yielded temporary folder; it becomes ``path`` when the block succeeds."""
    out = check_new_folder(path, flag)
    tmp = new_folder_beside(out)
    try:
        yield tmp
        move_into_place(tmp, out, flag)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ output folders without symbolic links
class UnsafeOutput(OSError):
    """A path we would write passes through a symbolic link (the link would send the write elsewhere,
    possibly into an input folder)."""


def safe_child(folder: PathLike, name: PathLike, flag: str = "") -> Path:
    """``folder / name``, refusing (:class:`UnsafeOutput`) when any part of it below ``folder``
    (a subfolder on the way, or the file itself) is a symbolic link. ``name`` is relative, without
    ``..``; ``flag`` (e.g. ``--output``) starts the message."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"{flag + ': ' if flag else ''}{name}: expected a name inside {folder}")
    path = Path(folder)
    for part in rel.parts:
        path = path / part
        if path.is_symlink():
            where = "" if path == Path(folder) / rel else f"{Path(folder) / rel}: "
            raise UnsafeOutput(f"{flag + ': ' if flag else ''}{where}{path} is a symbolic link; outputs are never "
                               "written through links (remove the link)")
    return path


def safe_output_dir(path: PathLike, flag: str, children: Tuple[PathLike, ...] = ()) -> Path:
    """``path`` (absolute, links not resolved) if it may be an output folder: not a symbolic link
    itself, not a file, no file on the way to it, and none of ``children`` (the names written into
    it) passes through a link below it (:func:`safe_child`). Refuses naming ``flag``."""
    given = path
    p = Path(path).expanduser().absolute()
    if p.is_symlink():
        raise UnsafeOutput(f"{flag}: {given} is a symbolic link (to {os.path.realpath(p)}); outputs are never "
                           "written through links: give the folder itself")
    if p.exists() and not p.is_dir():
        raise ValueError(f"{flag}: {given} exists and is not a folder")
    parent = next((q for q in p.parents if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValueError(f"{flag}: {given}: {parent} is a file, not a folder")
    for child in children:
        safe_child(p, child, flag)
    return p
