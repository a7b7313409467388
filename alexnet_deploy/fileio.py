"""Safe output files: checked before heavy work, written atomically after it."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable

from alexnet_deploy.errors import InputError

# The disk, not the program, refused the bytes: the user can fix these, so they are input errors.
_DISK_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is larger than that disk allows",
    errno.EIO: "the disk reported an I/O error",
}


def check_writable(path: Path, what: str = "output") -> Path:
    """Fail early, with a clear message, if ``path`` cannot be written as a file.

    Called before slow work, so an unusable name (too long, refused by the filesystem)
    is reported in a second instead of after a long export or build.
    """
    path = Path(path)
    try:
        return _check_writable(path, what)
    except OSError as exc:  # e.g. ENAMETOOLONG from stat() on a parent folder component
        raise InputError(f"{what} path {_short(path)} cannot be used ({exc.strerror or exc}).", "choose a shorter or simpler path") from None


def _check_writable(path: Path, what: str) -> Path:
    name_max = _name_max(path.parent if str(path.parent) else Path("."))
    if len(os.fsencode(path.name)) > name_max:
        raise InputError(
            f"{what} file name is {len(os.fsencode(path.name))} bytes; this filesystem allows {name_max}.",
            f"choose a shorter file name (at most {name_max} bytes)",
        )
    if path.is_dir():
        raise InputError(f"{what} path {path} is a directory.", "give a file name, e.g. -o model.onnx")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"{what} directory {parent} does not exist.", f"create it first: mkdir -p {parent}")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{what} directory {parent} is not writable.", "choose another -o path")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise InputError(f"{what} file {path} exists and is not writable.", "choose another -o path")
        return path
    _probe(path, what)
    return path


def _name_max(folder: Path) -> int:
    """NAME_MAX of ``folder``'s filesystem (255 on ext4, xfs, tmpfs...)."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or the folder is missing: checked later
        limit = 255
    return limit if limit and limit > 0 else 255


def _probe(path: Path, what: str) -> None:
    """Create and remove an empty file with exactly this name: the filesystem's own verdict on it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # appeared meanwhile: the later atomic replace handles it
        return
    except OSError as exc:
        raise InputError(f"{what} file {_short(path)} cannot be created ({exc.strerror or exc}).", "choose another -o name or folder") from None
    try:
        os.close(fd)
    finally:
        os.unlink(path)


def _short(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 120 else text[:60] + "…" + text[-40:]


def disk_error(exc: OSError, path: Path) -> InputError | None:
    """The one-line error for a write to ``path`` that the disk refused; None for other OSErrors."""
    reason = _DISK_ERRORS.get(exc.errno)
    if reason is None:
        return None
    folder = Path(path).parent if str(Path(path).parent) else Path(".")
    folder = folder.resolve()
    return InputError(
        f"cannot write {_short(path)}: {reason} ({errno.errorcode.get(exc.errno, exc.errno)} on the disk holding {folder}); {_short(path)} was left as it was.",
        f"free space on that disk (df -h {folder}) or write to another disk with -o",
    )


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Create ``path`` through ``write(tmp_path)``: either the whole new file appears or nothing changes.

    ``write`` gets a temporary path in the same directory; if it raises, the temporary
    file is removed and an existing ``path`` is left untouched. A full disk (and the like)
    becomes an InputError naming that disk. An existing file keeps its permissions (a 0600
    file stays private); a symlink to a file is written through, as ``cp`` does, and keeps
    pointing at the new file.
    """
    path = Path(path)
    mode = 0o666 & ~_umask()  # a new file: the usual mode for this umask
    try:
        if path.is_symlink() and path.resolve().is_file():
            path = path.resolve()
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:  # no such file yet, or a name the filesystem refuses (reported below)
        pass
    tmp_path = None
    try:
        # The name is cut short in the prefix so a name near NAME_MAX still gets a temporary file;
        # the pid in it lets a later run remove what a killed one left (sweep_dead).
        prefix = f".{path.name[:100]}."
        sweep_dead(path.parent if str(path.parent) else Path("."), prefix, ".tmp")
        fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}-", suffix=".tmp", dir=path.parent or ".")
        os.close(fd)
        tmp_path = Path(tmp)
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())  # ENOSPC/EIO of delayed allocation surface here, before the rename
        os.chmod(tmp_path, mode)  # mkstemp makes 0600
        os.replace(tmp_path, path)
    except BaseException as exc:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        mapped = disk_error(exc, path) if isinstance(exc, OSError) else None
        if mapped is not None:
            raise mapped from None
        if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
            raise InputError(f"cannot write {_short(path)}: the name is too long for its filesystem.", "choose a shorter file name") from None
        raise
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: not ours to judge
    return True


def sweep_dead(folder: Path, prefix: str, suffix: str = "") -> int:
    """Remove ``folder``'s entries named ``PREFIX<pid>-...SUFFIX`` whose process is gone; how many went.

    Temporaries carry their writer's pid, so what a killed run left (a half-written model of
    hundreds of MB, a quantization work folder) is removed by the next run that looks, and a
    running process's files never are.
    """
    import shutil

    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix) or not name.endswith(suffix):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            pass
    return removed


def scratch_dir(prefix: str):
    """A TemporaryDirectory named ``PREFIX<pid>-...`` in the system's temp folder, after sweeping
    away those a killed run of the same kind left (see sweep_dead)."""
    base = Path(tempfile.gettempdir())
    sweep_dead(base, prefix)
    return tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-", dir=base)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class FolderLock:
    """An exclusive lock on ``folder`` for one run, held with ``flock`` on ``folder/name``.

    ``with FolderLock(folder, name, what, fix):`` takes it without waiting; the lock file then
    holds the holder's pid, host, start time and command line (JSON). A second run that cannot
    take it raises InputError naming the holder, and has changed nothing in ``folder`` (the lock
    file already exists: opening it changes nothing). The kernel releases ``flock`` when the
    holding process dies, so a lock file a killed run left behind never blocks: only a live
    holder does. The file is kept (removing it would let two runs lock two different files).
    POSIX only (Linux, macOS): where ``fcntl`` is missing, EnvironmentFailure.
    """

    def __init__(self, folder: Path, name: str, what: str = "another run", fix: str = "wait for it to finish, or use another folder"):
        self.folder = Path(folder)
        self.path = self.folder / name
        self.what = what
        self.fix = fix
        self.fd: int | None = None
        self.holder: dict | None = None

    def __enter__(self) -> "FolderLock":
        try:
            import fcntl
        except ImportError:  # Windows
            from alexnet_deploy.errors import EnvironmentFailure

            raise EnvironmentFailure(f"cannot lock {self.folder}: this platform has no fcntl (Linux and macOS do).", "run it on Linux or macOS") from None
        try:  # never through a link: a planted link must not make us truncate the file it points at
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise InputError(f"cannot lock {self.folder}: {self.path.name} cannot be opened there ({exc.strerror or exc}).",
                             f"remove {self.path} if it is not a plain file, or choose a folder you can write to") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise InputError(f"cannot lock {self.folder}: {self.path.name} is not a plain file.", f"remove {self.path}")
        if info.st_nlink != 1:  # a hard link planted there: emptying it would empty the file it shares
            os.close(fd)
            raise InputError(f"cannot lock {self.folder}: {self.path.name} is a hard link to another file ({info.st_nlink} names).", f"remove {self.path}")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise InputError(f"{self.folder} is in use by {self.what}: {describe_holder(holder)}.", self.fix) from None
        except OSError as exc:  # ENOLCK: a filesystem without locks
            os.close(fd)
            raise InputError(f"cannot lock {self.folder} ({exc.strerror or exc}): two runs could overwrite each other there.", "use a folder on a local disk") from None
        import json
        import shlex
        import socket
        import sys
        import time

        self.fd = fd
        self.holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                       "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else ""}
        data = (json.dumps(self.holder) + "\n").encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except OSError:  # a full disk: the lock holds all the same, a refused run just cannot say by whom
            pass
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)  # still held: nobody reads a finished run as the holder
            except OSError:
                pass
            os.close(self.fd)  # releases the lock
            self.fd = None


def _lock_holder(fd: int) -> dict | None:
    """The holder's JSON from the lock file; None when unreadable. The holder writes it just after
    locking, so an empty file is read again for up to half a second."""
    import json
    import time

    for _ in range(25):
        try:
            text = os.pread(fd, 65536, 0).decode("utf-8", "replace")
            if text.strip():
                value = json.loads(text)
                return value if isinstance(value, dict) else None
        except (OSError, ValueError):
            return None
        time.sleep(0.02)
    return None


def describe_holder(holder: dict | None) -> str:
    """'pid 123 on HOST, started 2024-05-01 12:00:00 +0000, command: alexnet optimize ...' (one line,
    whatever the lock file holds)."""
    if not holder:
        return "a process that has not said who it is"

    def field(name: str, limit: int = 100) -> str:
        text = " ".join(str(holder.get(name) or "").split())
        return text if len(text) <= limit else text[:limit] + "…"

    parts = [f"pid {field('pid', 20) or '?'}" + (f" on {field('host')}" if field("host") else "")]
    if field("started"):
        parts.append(f"started {field('started')}")
    if field("command"):
        parts.append(f"command: {field('command', 300)}")
    return ", ".join(parts)
