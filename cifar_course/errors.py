"""The one exception type the course raises for problems a learner can fix, and the one place
that turns the operating system's refusals (a full disk, a denied permission, a name too long)
into a line that says what to do."""

from __future__ import annotations

import errno


class CourseError(Exception):
    """A problem with the learner's data, files or arguments, with a message saying what to do."""


# What to do about each of the operating system's refusals; errno's own words follow it.
_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space, or choose a folder on another disk",
    errno.EDQUOT: "the disk quota is used up: free some space, or choose another folder",
    errno.EFBIG: "the file would grow past what this process may write (see ulimit -f)",
    errno.EACCES: "permission denied: choose a path you may use, or change its permissions",
    errno.EPERM: "permission denied: choose a path you may use, or change its permissions",
    errno.EROFS: "the file system is read-only: choose a folder you can write to",
    errno.ENAMETOOLONG: "the name is too long for the file system: choose a shorter one",
    errno.EISDIR: "it is a folder where a file was expected: give a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.ENOENT: "it does not exist: check the path",
    errno.EEXIST: "it exists already: choose another name",
    errno.EMFILE: "too many files are open: close other programs and try again",
    errno.ENFILE: "too many files are open: close other programs and try again",
    errno.EIO: "the disk reported an input/output error: check the disk, or use another one",
}


def os_error_message(exc: OSError) -> str:
    """One line for an operating-system error: which file, what happened, what to do, and that
    what the course had already saved is intact (checkpoints are written whole or not at all)."""
    where = f"'{exc.filename}'" if exc.filename is not None else "a file"
    reason = exc.strerror or str(exc) or type(exc).__name__
    advice = _ADVICE.get(exc.errno) if exc.errno is not None else None
    what = f"{advice} ({reason})" if advice else reason
    return f"cannot use {where}: {what}. Files saved before this are intact."
