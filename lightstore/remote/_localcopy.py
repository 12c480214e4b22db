"""Copying between two local files in one pass, hashed on the way.

A file moves in one pass: small ones in one read and one write, large ones
copied by the kernel (`copy_file_range`) window by window while another
thread hashes the window before (`copy_hashed`). Where the kernel cannot copy
between the two files (another file system, a file that reports no size),
the bytes go through memory. Failures are `CopyError`, which says on which
side the error was (the store's or the remote's, for the caller to blame).
"""

from __future__ import annotations

import errno
import mmap
import os
from concurrent.futures import Future, ThreadPoolExecutor

from blake3 import blake3

from lightstore.foundation.files import write_all

#: Local files up to this size move in one read and one write (held in memory); larger
#: ones are copied by the kernel in windows of `_WINDOW`, hashed by a second thread.
WHOLE_FILE = 1024 * 1024
_WINDOW = 8 * 1024 * 1024
#: Errors of copy_file_range that mean "not between these files": copied through memory.
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}


class CopyError(Exception):
    """A copy between two local files failed: `error` on its `source` side, or its
    destination's."""

    def __init__(self, error: OSError, source: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.source = source

    def __reduce__(self) -> tuple[type[CopyError], tuple[OSError, bool]]:
        return (CopyError, (self.error, self.source))  # pickles (a pool's worker raises it)


#: Errors of a kernel copy that are the destination's (copy_file_range does not say which
#: side failed).
_DESTINATION_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


def read_upto(fd: int, limit: int) -> bytes:
    """At most `limit` bytes from `fd` (fewer only at its end)."""
    data = os.read(fd, limit)
    if len(data) == limit or not data:
        return data
    parts = [data]
    got = len(data)
    while got < limit:
        more = os.read(fd, limit - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _kernel_copy(src: int, dst: int, want: int) -> int | None:
    """Bytes copied by the kernel (copy_file_range), or None where it cannot copy
    between these files."""
    try:
        return os.copy_file_range(src, dst, want)
    except OSError as e:
        if e.errno in _NO_KERNEL_COPY:
            return None
        raise CopyError(e, source=e.errno not in _DESTINATION_ERRNOS) from None


def _memory_copy(src: int, dst: int, want: int, whole: bool = False) -> bytes:
    """Copy up to `want` bytes of `src` into `dst` through memory (all of them with
    `whole`, else one read); the bytes copied. Raises CopyError naming the side."""
    try:
        data = read_upto(src, want) if whole else os.read(src, want)
    except OSError as e:
        raise CopyError(e, source=True) from None
    try:
        write_all(dst, data)
    except OSError as e:
        raise CopyError(e, source=False) from None
    return data


def _hash_window(h: blake3, fd: int, offset: int, length: int) -> None:
    """Feed bytes [offset, offset + length) of the file `fd` to `h`, through a memory map
    (no copy) where the file system allows one."""
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    try:
        window = mmap.mmap(
            fd, offset + length - start, mmap.MAP_SHARED | _POPULATE, mmap.PROT_READ, offset=start
        )
    except (OSError, ValueError):
        h.update(os.pread(fd, length, offset))
        return
    with window, memoryview(window) as view, view[offset - start :] as part:
        h.update(part)


def copy_hashed(src: int, dst: int, limit: int, hash_written: bool) -> tuple[int, bytes]:
    """Copy at most `limit` bytes from the file `src` into the new file `dst` (both at
    offset 0) in one pass; return how many, with the blake3 of those bytes.

    With `hash_written`, what is hashed is what `dst` holds (it must be open for reading
    too): for a source that may change meanwhile, such as a remote's file. Otherwise the
    source is hashed (a store's file, which does not change). Up to `WHOLE_FILE` bytes
    are read whole; more are copied by the kernel, window by window, while a second
    thread hashes the window before through a memory map: memory stays bounded by the
    window, and copying and hashing use two cores. Raises CopyError.
    """
    if limit <= WHOLE_FILE:
        data = _memory_copy(src, dst, limit, whole=True)
        return len(data), blake3(data).digest()
    h = blake3()
    hashed = dst if hash_written else src
    done = 0
    kernel = True
    pending: Future[None] | None = None
    with ThreadPoolExecutor(1, thread_name_prefix="hash") as hasher:
        while done < limit:
            want = min(_WINDOW, limit - done)
            n = _kernel_copy(src, dst, want) if kernel else None
            if not n:
                # Not possible between these files, or the end: a file system whose files
                # report no size (procfs, some FUSE) is read through memory to be sure.
                kernel = False
                n = len(_memory_copy(src, dst, want))
                if not n:
                    break
            if pending is not None:
                _hash_result(pending, hash_written)
            pending = hasher.submit(_hash_window, h, hashed, done, n)
            done += n
        if pending is not None:
            _hash_result(pending, hash_written)
    return done, h.digest()


def copy_local(source: str, target: str, size: int) -> None:
    """Copy the local file `source` (`size` bytes, already checked) into the new file
    `target`, by the kernel where it can. Raises OSError."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            left = size
            kernel = True
            while left > 0:
                n = _kernel_copy(src, dst, min(left, 1 << 30)) if kernel else None
                if not n:
                    kernel = False
                    n = len(_memory_copy(src, dst, min(left, _WINDOW)))
                    if not n:
                        break
                left -= n
        except CopyError as e:
            raise e.error from None
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _hash_result(pending: Future[None], hash_written: bool) -> None:
    try:
        pending.result()
    except OSError as e:
        raise CopyError(e, source=not hash_written) from None
