"""Extracting .zip and .tar archives that may be hostile.

`safe_extract` writes only below its destination folder. It refuses, with
ArchiveError:

- member names that are absolute, contain ``..``, a backslash or a NUL
  (a leading ``./`` and repeated slashes are harmless and dropped);
- a member written through a symlink, or over an entry extracted before
  (duplicate names): files are created with ``O_EXCL | O_NOFOLLOW`` and every
  parent folder must be a real folder made by this extraction;
- symlinks that are absolute or, once everything is extracted, resolve
  outside the destination (checked on disk, so chains of links are caught);
- hard links (tar) that do not name a regular file extracted earlier (a valid
  one is extracted as a copy, never as a real hard link);
- devices, fifos, sockets and any other special member; encrypted zip members;
- more than `max_bytes` of content, checked against the sizes the archive
  declares (all at once for zip, member by member for tar) *and* against the
  bytes actually written, so a lying header cannot get past it; more than
  `max_members` entries; more declared content than the free disk space;
- truncated or corrupt archives (whatever the compression layer reports).

Owners, times and special mode bits are dropped: files become 0644 (0755 if
any executable bit was set), folders 0755. The destination may hold a partial
extraction after an error: callers extract into a temporary folder.
"""

from __future__ import annotations

import contextlib
import errno
import lzma
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from typing import IO

from lightstore.exchange._tree import COPY_CHUNK, inside, link_leaves
from lightstore.foundation.errors import ArchiveError, UsageError
from lightstore.foundation.files import PATH_MAX

#: Default limit of the bytes an archive may unpack to (64 GiB); pass
#: ``max_bytes=None`` for no limit or a smaller number to be stricter.
DEFAULT_MAX_BYTES = 64 * 1024**3
#: Default limit of the number of entries an archive may hold.
DEFAULT_MAX_MEMBERS = 10_000_000
#: Longest symlink target accepted (Linux PATH_MAX).
_MAX_LINK = 4096

# Archive kinds by file-name suffix (longest match wins); tar compression is
# detected from the content when reading, chosen by the name when writing.
_SUFFIXES: list[tuple[str, str]] = [
    (".tar.gz", "tar.gz"),
    (".tgz", "tar.gz"),
    (".tar.bz2", "tar.bz2"),
    (".tbz2", "tar.bz2"),
    (".tbz", "tar.bz2"),
    (".tar.xz", "tar.xz"),
    (".txz", "tar.xz"),
    (".tar", "tar"),
    (".zip", "zip"),
]
SUPPORTED_SUFFIXES = tuple(s for s, _ in _SUFFIXES)

# What the stdlib raises for damaged or truncated input, at every layer.
_READ_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    NotImplementedError,
    RuntimeError,
    UnicodeError,
    OSError,
)


def archive_kind(path: str) -> str:
    """'zip', 'tar', 'tar.gz', 'tar.bz2' or 'tar.xz', from the file name.

    Raises ArchiveError for any other name.
    """
    lower = os.fspath(path).lower()
    for suffix, kind in _SUFFIXES:
        if lower.endswith(suffix):
            return kind
    raise ArchiveError(
        f"unknown archive type for {os.fspath(path)!r}; use a name ending in "
        f"{', '.join(SUPPORTED_SUFFIXES)}"
    )


def member_parts(name: str) -> list[str]:
    """The safe path components of a member name; raises ArchiveError for unsafe names."""
    if not isinstance(name, str) or "\x00" in name or "\\" in name:
        raise ArchiveError(f"member name {name!r} contains a NUL or a backslash; refused")
    if name.startswith("/"):
        raise ArchiveError(f"member {name!r} has an absolute path; refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"member {name!r} climbs out with '..'; refused")
    return parts


class Limits:
    """What one extraction (or one pull from a remote cache) may write.

    At most `max_bytes` of content (None: no limit), at most `max_members`
    entries, and never more declared content than the free space of the
    filesystem of `dest`. `subject` names what is written in messages (an
    archive's path, "pull from <url>: the closure"); `noun` names its entries.
    Each check raises ArchiveError before the bytes it counts are written;
    a limit that is not a number >= 0 (or None) raises UsageError.
    """

    def __init__(
        self,
        subject: str,
        dest: str,
        max_bytes: int | None,
        max_members: int | None,
        *,
        noun: str = "members",
        why: str = "as a possible archive bomb",
    ) -> None:
        for what, limit in (("max_bytes", max_bytes), ("max_members", max_members)):
            # NaN compares false with everything: it would silently mean "no limit".
            if limit is not None and (
                isinstance(limit, bool) or not isinstance(limit, int | float) or not limit >= 0
            ):
                raise UsageError(f"{what} is a number of at least 0, or None; got {limit!r}")
        self.subject = subject
        self.dest = dest
        self.max_bytes = max_bytes
        self.max_members = max_members
        self.noun = noun
        self.why = why
        self.declared = 0
        self.written = 0
        self.members = 0
        self.free: int | None
        try:
            self.free = shutil.disk_usage(dest).free
        except OSError:
            self.free = None

    def count_member(self, name: str) -> None:
        """Count one more entry (`name` is for messages)."""
        self.members += 1
        if self.max_members is not None and self.members > self.max_members:
            raise ArchiveError(
                f"{self.subject} holds more than {self.max_members} {self.noun}; refused "
                "(raise max_members to allow it)"
            )

    def declare(self, size: int, name: str) -> None:
        """Count `size` bytes an entry says it holds, before writing them."""
        if size < 0:
            raise ArchiveError(f"member {name!r} declares a negative size; refused")
        self.declared += size
        self._check(self.declared, "declares")
        if self.free is not None and self.declared > self.free:
            raise ArchiveError(
                f"{self.subject} unpacks to at least {self.declared} bytes but only {self.free} "
                f"bytes are free on the filesystem of {self.dest}; free some space"
            )

    def wrote(self, n: int) -> None:
        """Count `n` bytes actually written (a lying header cannot get past the limit)."""
        self.written += n
        self._check(self.written, "unpacks to")

    def _check(self, total: int, verb: str) -> None:
        if self.max_bytes is not None and total > self.max_bytes:
            raise ArchiveError(
                f"{self.subject} {verb} more than {self.max_bytes} bytes; refused {self.why} "
                "(pass a larger max_bytes, or None, if you trust it)"
            )


class _Extractor(Limits):
    """The state of one extraction: destination, limits, counters, links made."""

    def __init__(self, archive: str, dest: str, max_bytes: int | None, max_members: int | None):
        super().__init__(archive, os.path.abspath(dest), max_bytes, max_members)
        self.archive = archive
        self.links: list[tuple[str, str]] = []  # (member name, path on disk)
        # Folders already checked to be real folders: a deep tree costs one
        # lookup per member, not one lstat per level of every member.
        self.folders: set[str] = {self.dest}

    # -- writing ---------------------------------------------------------------

    def _folder(self, parts: list[str], name: str, create: bool = True) -> str:
        """The real folder `dest/parts...`, made if missing; never through a symlink or a file."""
        whole = os.path.join(self.dest, *parts)
        if whole in self.folders:
            return whole
        self._fits(whole, name)
        path = self.dest
        for part in parts:
            path = os.path.join(path, part)
            if path in self.folders:
                continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if not create:
                    raise ArchiveError(
                        f"member {name!r} is a hard link into {'/'.join(parts)!r}, which the "
                        "archive does not contain before it; refused"
                    ) from None
                os.mkdir(path, 0o755)
                self.folders.add(path)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise ArchiveError(
                    f"member {name!r} would be written through {'/'.join(parts)!r}, which is "
                    "a symlink or a file; refused"
                )
            self.folders.add(path)
        return path

    def _fits(self, path: str, name: str) -> None:
        if len(os.fsencode(path)) >= PATH_MAX:
            raise ArchiveError(
                f"member {name[:60]!r}... makes a path of {len(os.fsencode(path))} bytes, longer "
                f"than this system allows (PATH_MAX, {PATH_MAX} bytes); refused"
            )

    def directory(self, name: str) -> None:
        parts = member_parts(name)
        self._folder(parts, name)

    def _target(self, name: str) -> tuple[list[str], str]:
        parts = member_parts(name)
        if not parts:
            raise ArchiveError(f"member {name!r} names the top folder but is not a folder")
        folder = self._folder(parts[:-1], name)
        target = os.path.join(folder, parts[-1])
        self._fits(target, name)
        return parts, target

    def file(self, name: str, source: IO[bytes], executable: bool) -> None:
        _, target = self._target(name)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            raise ArchiveError(f"member {name!r} appears twice in the archive; refused") from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ArchiveError(f"member {name!r} would overwrite a symlink; refused") from e
            raise
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(COPY_CHUNK):
                self.wrote(len(chunk))
                out.write(chunk)
        os.chmod(target, 0o755 if executable else 0o644)

    def symlink(self, name: str, link: str) -> None:
        parts, target = self._target(name)
        if not link or "\x00" in link or len(link) > _MAX_LINK:
            raise ArchiveError(f"member {name!r} is a symlink with an invalid target; refused")
        if os.path.isabs(link):
            raise ArchiveError(
                f"member {name!r} is a symlink to the absolute path {link!r}; refused"
            )
        # A first, lexical check; the check on disk after extraction catches chains.
        if link_leaves("/".join(parts), link):
            raise ArchiveError(
                f"member {name!r} is a symlink pointing outside the archive ({link!r}); refused"
            )
        try:
            os.symlink(link, target)
        except FileExistsError:
            raise ArchiveError(f"member {name!r} appears twice in the archive; refused") from None
        self.links.append((name, target))

    def hardlink(self, name: str, link: str) -> None:
        try:
            source_parts = member_parts(link)
        except ArchiveError as e:
            raise ArchiveError(f"member {name!r} is a hard link outside the archive: {e}") from e
        st, source = None, ""
        if source_parts:
            folder = self._folder(source_parts[:-1], name, create=False)
            source = os.path.join(folder, source_parts[-1])
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(source)
        if st is None or not stat.S_ISREG(st.st_mode):
            raise ArchiveError(
                f"member {name!r} is a hard link to {link!r}, which is not a regular file "
                "extracted before it (a link outside the archive?); refused"
            )
        self.declare(st.st_size, name)
        with open(source, "rb") as src:
            self.file(name, src, bool(st.st_mode & stat.S_IXUSR))

    def finish(self) -> None:
        for name, path in self.links:
            if not inside(path, self.dest):
                raise ArchiveError(
                    f"member {name!r} is a symlink that resolves outside the archive "
                    f"(through other links); refused"
                )


def _extract_zip(ex: _Extractor, path: str) -> None:
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        for info in infos:
            ex.count_member(info.filename)
        for info in infos:
            ex.declare(info.file_size, info.filename)
        for info in infos:
            name = info.filename
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if info.flag_bits & 0x1:
                raise ArchiveError(f"member {name!r} is encrypted; encrypted archives are refused")
            if name.endswith("/") or kind == stat.S_IFDIR:
                ex.directory(name)
            elif kind == stat.S_IFLNK:
                if info.file_size > _MAX_LINK:
                    raise ArchiveError(f"member {name!r} is a symlink with a too long target")
                ex.symlink(name, z.read(info).decode("utf-8"))
            elif kind in (0, stat.S_IFREG):
                with z.open(info) as src:
                    ex.file(name, src, bool(mode & 0o111))
            else:
                raise ArchiveError(
                    f"member {name!r} is a device, fifo or socket (mode {oct(mode)}); refused"
                )


def _extract_tar(ex: _Extractor, path: str) -> None:
    with tarfile.open(path, "r:*") as t:
        for m in t:
            ex.count_member(m.name)
            if m.isdir():
                ex.directory(m.name)
            elif m.issym():
                ex.symlink(m.name, m.linkname)
            elif m.islnk():
                ex.hardlink(m.name, m.linkname)
            elif m.isfile():
                ex.declare(m.size, m.name)
                data = t.extractfile(m)
                if data is None:
                    raise ArchiveError(f"member {m.name!r} has no data")
                with data:
                    ex.file(m.name, data, bool(m.mode & 0o111))
            else:
                raise ArchiveError(
                    f"member {m.name!r} is a device, fifo or other special file; refused"
                )
        # Read the compressed stream to its end, so that its own check (the
        # gzip CRC and length, the xz and bz2 end markers) runs: an archive cut
        # after its last member is still refused. The padding counts against
        # `max_bytes` too, so trailing garbage cannot make this run forever.
        rest = t.fileobj
        if rest is not None:
            while chunk := rest.read(COPY_CHUNK):
                ex.wrote(len(chunk))


def safe_extract(
    archive_path: str,
    dest: str,
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    max_members: int | None = DEFAULT_MAX_MEMBERS,
) -> None:
    """Extract a .zip or .tar (.tar.gz, .tgz, .tar.bz2, .tar.xz) archive into the folder `dest`.

    The kind is chosen by the file name (see `archive_kind`). See the module
    documentation for what is refused. Raises ArchiveError; `dest` may then
    hold a partial extraction.
    """
    archive = os.fspath(archive_path)
    kind = archive_kind(archive)
    if not os.path.isfile(archive):
        raise ArchiveError(f"cannot read the archive {archive}: no such file")
    os.makedirs(dest, exist_ok=True)
    ex = _Extractor(archive, dest, max_bytes, max_members)
    extract: Callable[[_Extractor, str], None] = _extract_zip if kind == "zip" else _extract_tar
    try:
        extract(ex, archive)
        ex.finish()
    except ArchiveError:
        raise
    except _READ_ERRORS as e:
        raise ArchiveError(
            f"cannot extract {archive}: {type(e).__name__}: {e} (is it truncated or damaged?)"
        ) from e
