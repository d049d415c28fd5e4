"""Finding the images an ingest sends: folders (recursive), zip files and glob patterns.

Every image gets an id: its path relative to the root it was found under, with ``/`` separators,
after an optional prefix. The root of

- a folder is the folder (``scenes/`` holding ``2024/a.tif`` gives the id ``2024/a.tif``);
- a zip file is the archive (a member ``Images/farm/f01.jpg`` keeps that name);
- a glob pattern is the folder before its first wildcard (``scenes/*/a*.tif`` → ids ``2024/a1.tif``);
  a folder a pattern matches is walked, its ids relative to the pattern's root; a zip file it
  matches gives its members' names;
- a single image file is its folder (the id is the file name).

Only JPEG, PNG and TIFF files are taken (by suffix: .jpg .jpeg .png .tif .tiff, any case); other
files inside folders are counted and left alone; hidden files and folders (a leading ``.``, such as
the ingest journal) and ``__MACOSX/`` are not looked at. Zip files are opened only when named (or
matched by a pattern), never found by walking a folder. A file named directly that is no image
or zip is reported as a problem, and so is an id already taken by an earlier file.

Links to folders are followed, each folder once: a link back to a folder above it (a loop) is
reported and not followed. The same file (or zip member) reached twice — through a link, a glob
such as ``scenes/**`` that matches folders and their files, or a repeated argument — is taken once,
under the first id it was found with. A folder that cannot be listed is reported by name.
"""

from __future__ import annotations

import glob
import os
import threading
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from orbithash_cli import UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
MAX_ID_BYTES = 256  # what the gateway accepts (UTF-8)
_GLOB_CHARS = frozenset("*?[")

# Leading bytes of each accepted image type.
_MAGIC = {
    "JPEG": (b"\xff\xd8\xff",),
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "TIFF": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
}


def image_type(data: bytes) -> str | None:
    """``"JPEG"``, ``"PNG"`` or ``"TIFF"`` from the leading bytes, else None."""
    for kind, magics in _MAGIC.items():
        if data.startswith(magics):
            return kind
    return None


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _hidden(part: str) -> bool:
    return part.startswith(".") or part == "__MACOSX"


class _Archive:
    """One open zip file shared by the threads that read its members."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip = zipfile.ZipFile(path)
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return sorted(i.filename for i in self._zip.infolist()
                      if not i.is_dir() and is_image_name(i.filename)
                      and not any(_hidden(p) for p in PurePosixPath(i.filename).parts))

    def read(self, name: str) -> bytes:
        with self._lock:
            return self._zip.read(name)

    def size(self, name: str) -> int:
        return self._zip.getinfo(name).file_size

    def close(self) -> None:
        self._zip.close()


@dataclass(frozen=True)
class Source:
    """One image found: where it lives and the path its id is made of."""

    rel: str                      # path relative to its root, "/"-separated
    root: str                     # the root as given on the command line (for messages)
    path: Path | None = None      # the file, when it is on disk
    archive: _Archive | None = field(default=None, compare=False, repr=False)

    @property
    def origin(self) -> str:
        """Where the image is, for messages: a file path or ``archive.zip:member``."""
        return str(self.path) if self.path is not None else f"{self.archive.path}:{self.rel}"  # type: ignore[union-attr]

    @property
    def folder(self) -> str | None:
        """The name of the folder holding the image (its class in an ImageFolder tree), None at the root."""
        parent = PurePosixPath(self.rel).parent
        return None if parent == PurePosixPath(".") else parent.name

    @property
    def size(self) -> int:
        """Bytes on disk (uncompressed, for a zip member); 0 when that cannot be told."""
        try:
            if self.path is not None:
                return self.path.stat().st_size
            assert self.archive is not None
            return self.archive.size(self.rel)
        except (OSError, KeyError):
            return 0

    def read(self) -> bytes:
        if self.path is not None:
            return self.path.read_bytes()
        assert self.archive is not None
        return self.archive.read(self.rel)


@dataclass
class Problem:
    """Something found that cannot be ingested, by name."""

    origin: str
    reason: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.reason}"


Key = tuple[int, int] | str  # a file or folder by (st_dev, st_ino); by its path when it cannot be stat()ed


def _key(path: Path | str) -> Key:
    try:
        status = os.stat(path)
    except OSError:
        return os.path.abspath(path)
    return (status.st_dev, status.st_ino)


@dataclass
class Found:
    sources: list[Source] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    roots: list[Path] = field(default_factory=list)  # the folder (or zip) each argument stands for
    ignored: int = 0                                   # files that are not JPEG/PNG/TIFF
    walked_zips: list[Path] = field(default_factory=list)  # zip files inside folders: counted in ignored, not opened
    archives: list[_Archive] = field(default_factory=list)
    seen: set[Key] = field(default_factory=set)        # files, folders and zips taken (each once)

    def first_time(self, key: Key | tuple[Key, str]) -> bool:
        """True once per file (or zip member, or folder): what a glob, a link or a repeated argument
        reaches again is the same source, not a second one."""
        if key in self.seen:
            return False
        self.seen.add(key)  # type: ignore[arg-type]
        return True

    def zip_advice(self) -> str:
        """What to do about the zip files a folder walk passed by ('' when none)."""
        if not self.walked_zips:
            return ""
        return (f"{len(self.walked_zips)} zip file(s) among them: a zip inside a folder is opened only when named, "
                f"e.g. `orbithash ingest '{self.walked_zips[0].parent}/*.zip'`")

    def close(self) -> None:
        for archive in self.archives:
            archive.close()


def glob_root(pattern: str) -> Path:
    """The folder before the first path component with a wildcard."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def discover(arguments: Iterable[str]) -> Found:
    """Every image under the given folders, zip files, image files and glob patterns, in a stable order.

    A path that does not exist is a usage error; a pattern that matches nothing adds nothing.
    """
    found = Found()
    for argument in arguments:
        if _GLOB_CHARS & set(argument) and not Path(argument).exists():
            root = glob_root(argument)
            found.roots.append(root)
            for match in sorted(glob.glob(argument, recursive=True)):
                _add(found, Path(match), root, argument, direct=False)
            continue
        path = Path(argument)
        if not path.exists():
            raise UsageError(f"{argument}: no such file or folder")
        if path.is_dir() or _is_zip(path):
            found.roots.append(path)
            _add(found, path, path, argument, direct=True)
        else:
            found.roots.append(path.parent)
            _add(found, path, path.parent, argument, direct=True)
    return found


def _is_zip(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".zip" and zipfile.is_zipfile(path)


def _add(found: Found, path: Path, root: Path, argument: str, direct: bool) -> None:
    """Add ``path`` (a folder, zip or file) with ids relative to ``root``; what was added before is skipped."""
    if path.is_dir():
        files = sorted((file.relative_to(root).as_posix(), file) for file in _walk(path, found))
        found.sources.extend(Source(rel, argument, path=file) for rel, file in files if found.first_time(_key(file)))
    elif _is_zip(path):
        key = _key(path)
        if key in found.seen:
            return
        try:
            archive = _Archive(path)
        except (OSError, zipfile.BadZipFile) as exc:
            found.problems.append(Problem(str(path), f"cannot open the zip file ({exc})"))
            return
        found.seen.add(key)
        found.archives.append(archive)
        found.sources.extend(Source(name, argument, archive=archive) for name in archive.names())
    elif is_image_name(path.name):
        if found.first_time(_key(path)):
            found.sources.append(Source(path.relative_to(root).as_posix(), argument, path=path))
    elif direct:
        found.problems.append(Problem(str(path), "not a JPEG, PNG or TIFF image (by its suffix) nor a zip file"))
    else:
        found.ignored += 1


def _walk(folder: Path, found: Found) -> Iterator[Path]:
    """The image files under ``folder``, following links to folders, each folder once.

    A link back to a folder above it (a loop) is reported and not followed; a folder reached again
    another way (a second link to it, a glob matching it and its parent) is skipped silently, its
    images already taken; a folder that cannot be listed is reported by name.
    """
    if not found.first_time(_key(folder)):
        return
    stack: list[tuple[Path, dict[Key, Path]]] = [(folder, {_key(folder): folder})]
    while stack:
        current, above = stack.pop()  # above: the folders from the walk's start down to current
        try:
            with os.scandir(current) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            found.problems.append(Problem(str(current), f"cannot be read ({exc.strerror or exc}): "
                                                        "the images in it were not looked at"))
            continue
        folders = []
        for entry in entries:
            if _hidden(entry.name):
                continue
            if entry.is_dir():
                key = _key(entry.path)
                if key in above:
                    found.problems.append(Problem(entry.path, f"a link back to {above[key]} (a loop): not followed"))
                elif found.first_time(key):
                    folders.append((Path(entry.path), {**above, key: Path(entry.path)}))
            elif is_image_name(entry.name):
                yield Path(entry.path)
            else:
                found.ignored += 1
                if entry.name.lower().endswith(".zip"):
                    found.walked_zips.append(Path(entry.path))
        stack.extend(reversed(folders))  # depth first, in name order


def why(exc: Exception) -> str:
    """Why reading or inspecting a file failed, in a few words (an OSError's own, else the type and message)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def check_id(item_id: str) -> str | None:
    """Why the gateway would refuse ``item_id``, or None."""
    if not item_id:
        return "the id is empty"
    try:
        size = len(item_id.encode("utf-8"))
    except UnicodeEncodeError:
        return "the id is not valid UTF-8"
    if size > MAX_ID_BYTES:
        return f"the id has {size} bytes, the gateway takes at most {MAX_ID_BYTES}"
    return None
