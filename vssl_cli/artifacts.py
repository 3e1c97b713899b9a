"""Artifact manifests: schema, identity digests, lineage, atomic writes, locks.

Every stage writes one artifact (a directory, a Zarr store or an HDF5 file) whose
``manifest.json`` says what it is, how it was made and from what. Downstream commands
trust nothing else, so this module is the only place that reads or writes manifests.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import glob
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from vssl_cli import __version__
from vssl_cli.errors import UsageProblem, VsslError
from vssl_cli.safe_io import finite, loads, read_bytes

SCHEMA = 1
KINDS = ("frames", "model", "eval", "export")
MANIFEST_NAME = "manifest.json"
REQUIRED_FIELDS = ("schema", "kind", "id", "created", "vssl_version", "command", "config",
                   "inputs", "outputs", "metrics", "environment")


def digest(obj: Any, length: int = 16) -> str:
    """Stable short hash of any JSON-serialisable value (keys sorted, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_digest(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """Content hash of a file, streamed so memory stays flat for any size."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: str | None = None) -> dict:
    """Where the artifact was made; torch is only asked about if the command imported it."""
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "torch": _package_version("torch"), "cuda": None, "device": device or "cpu"}
    torch = sys.modules.get("torch")
    if torch is not None:
        env["cuda"] = torch.version.cuda
    return env


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_manifest(kind: str, config: dict, inputs: list[dict], *, id: str | None = None,
                 outputs: dict | None = None, metrics: dict | None = None,
                 device: str | None = None) -> dict:
    """A manifest whose ``id`` is the digest of the resolved config and the input ids."""
    assert kind in KINDS, kind
    if id is None:
        id = digest({"kind": kind, "config": config, "inputs": input_ids(inputs)})
    return {"schema": SCHEMA, "kind": kind, "id": id, "created": now(),
            "vssl_version": __version__, "command": list(sys.argv), "config": config,
            "inputs": inputs, "outputs": outputs or {}, "metrics": metrics or {},
            "environment": environment(device)}


def input_ids(inputs: list[dict]) -> list:
    """What of the inputs an artifact's id depends on: each input's id, and for a model
    the digest of the weights it holds, so that an evaluation cached for one set of
    weights is never taken for another's (evaluate/artifact.py)."""
    return [[i.get("id"), i["weights"]] if i.get("weights") else i.get("id") for i in inputs]


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_beside(path: Path) -> tuple[int, str]:
    """A temporary file in ``path``'s directory (same file system, so rename is atomic),
    with the permissions a plain ``open`` would give (mkstemp's are 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~umask())
    return fd, tmp


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to a temporary file beside ``path``, fsync it, then rename over ``path``.

    A reader sees the old file or the new one, never half of either.
    """
    path = Path(path)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(finite(obj), f, indent=1, sort_keys=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_manifest(manifest: Any, source: str) -> dict:
    """Validate the fields every stage relies on; raise a one-line error naming ``source``."""
    if not isinstance(manifest, dict):
        raise VsslError("manifest is not a JSON object", source)
    missing = [k for k in REQUIRED_FIELDS if k not in manifest]
    if missing:
        raise VsslError(f"manifest lacks field(s) {', '.join(missing)}", source)
    if not isinstance(manifest["schema"], int) or manifest["schema"] > SCHEMA:
        raise VsslError(f"manifest schema {manifest['schema']!r} is newer than this vssl "
                        f"understands ({SCHEMA}); upgrade vssl", source)
    if manifest["kind"] not in KINDS:
        raise VsslError(f"unknown artifact kind {manifest['kind']!r}", source)
    for field, kind in (("config", dict), ("outputs", dict), ("metrics", dict),
                        ("inputs", list), ("command", list), ("environment", dict)):
        if not isinstance(manifest[field], kind):
            what = "an object" if kind is dict else "a list"
            raise VsslError(f"manifest field {field} is not {what}", source)
    from vssl_cli.schema import KIND_CHECKS
    check = KIND_CHECKS.get(manifest["kind"])
    if check is not None:
        check(manifest, source)
    return manifest


def parse_manifest(text: str | bytes, source: str) -> dict:
    try:
        obj = loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise VsslError(f"corrupt manifest: {e}", source) from None
    return check_manifest(obj, source)


def manifest_path(artifact: str | os.PathLike) -> Path:
    return Path(artifact) / MANIFEST_NAME


def load_manifest(artifact: str | os.PathLike) -> dict:
    """Read the manifest of any artifact: a directory (incl. Zarr) or an HDF5 file."""
    artifact = str(artifact)
    if not os.path.exists(artifact):
        raise VsslError("no such artifact", artifact)
    if os.path.isfile(artifact):
        if artifact.endswith(MANIFEST_NAME):
            return parse_manifest(read_bytes(artifact, "manifest"), artifact)
        from vssl_cli.store import read_file_manifest  # HDF5 keeps it as a root attribute
        return read_file_manifest(artifact)
    path = manifest_path(artifact)
    if not path.exists():
        raise VsslError("not a vssl artifact: no manifest.json", artifact)
    return parse_manifest(read_bytes(path, "manifest"), str(path))


def expect_kind(manifest: dict, kind: str, artifact: str) -> dict:
    if manifest["kind"] != kind:
        raise UsageProblem(f"expected a {kind} artifact, got a {manifest['kind']} artifact",
                           artifact)
    return manifest


def lineage(artifact: str, manifest: dict) -> dict:
    """The entry a downstream manifest keeps in ``inputs`` for one upstream artifact."""
    return {"path": os.path.abspath(artifact), "id": manifest["id"], "kind": manifest["kind"]}


def resolve_input(arg: str, stdin=None) -> str:
    """``-`` means: the upstream command printed the artifact path on our stdin."""
    if arg != "-":
        return arg
    stdin = stdin or sys.stdin
    for line in stdin:
        line = line.strip()
        if line:
            return line
    raise UsageProblem("expected an artifact path on standard input, got nothing", "-")


def artifact_file(name, artifact) -> str:
    """A file name a manifest gives for a file of its artifact: a plain name inside it,
    never a path that leads elsewhere."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name \
            or "\\" in name or name.startswith("."):
        raise VsslError(f"the manifest names the file {name!r}, which is not a plain file "
                        "name inside the artifact", artifact)
    return name


def _manifest_kind(path: Path) -> str | None:
    """The kind of the artifact at ``path``, None when it is not one."""
    try:
        return load_manifest(path)["kind"]
    except VsslError:
        return None


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output(output: str | os.PathLike, kind: str, inputs=(), *,
                 also_ours=None) -> None:
    """Refuse ``output`` unless writing it can only replace an artifact of ``kind``.

    Allowed: a path that does not exist, an empty folder, or an artifact whose manifest
    says ``kind`` (``also_ours(path)`` may accept more: a store killed before its first
    manifest, a dataset that synth wrote). Anything else is somebody's data: a usage
    error naming it, before anything is touched. The output may also never be one of
    ``inputs`` or a folder that holds one (its rebuild would destroy what it reads).
    Parent folders are created, as ``mkdir -p`` would.
    """
    out = Path(os.path.abspath(output))
    real = Path(os.path.realpath(out))
    for item in inputs:
        if item in (None, "-") or "://" in str(item):
            continue
        source = Path(os.path.realpath(item))
        if _inside(source, real):
            raise UsageProblem(f"the output would replace the input {item}; choose another "
                               "output", output)
    for folder in real.parents:           # writing inside a Zarr store would corrupt it
        if (folder / "zarr.json").is_file():
            raise UsageProblem(f"the output would be inside the Zarr store {folder}; choose "
                               "another output", output)
    if os.path.lexists(out) and not os.path.exists(out):
        raise UsageProblem("the output is a broken symbolic link", output)
    if os.path.exists(real):
        empty_dir = real.is_dir() and not any(real.iterdir())
        found = _manifest_kind(real)
        if not (empty_dir or found == kind or (found is None and also_ours is not None
                                               and also_ours(real))):
            what = f"a {found} artifact" if found else (
                "a folder that is not a vssl artifact" if real.is_dir()
                else "a file that is not a vssl artifact")
            raise UsageProblem(f"refusing to replace {what} (this command writes a {kind} "
                               "artifact); choose another output or remove it yourself",
                               output)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VsslError(f"cannot create the output's folder: {e.strerror}", out.parent) \
            from None


def remove_stale_partials(final: str | os.PathLike) -> None:
    """Delete ``.NAME.*.partial`` / ``.NAME.*.tmp`` leftovers of killed writes of ``final``
    (the caller holds its lock, so no live writer owns them)."""
    final = Path(os.path.abspath(final))
    if not final.parent.is_dir():
        return
    for leftover in final.parent.glob(f".{glob.escape(final.name)}.*"):
        if leftover.name.endswith((".partial", ".tmp")) and not leftover.is_symlink():
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


LOCK_TAG = "vssl lock, pid "
LOCK_BYTES = 64


def lock_path_for(artifact: str | os.PathLike) -> Path:
    """``ARTIFACT.lock`` beside the artifact (``-o .`` locks ``../NAME.lock``, never a file
    inside the folder it is about to fill)."""
    path = Path(os.path.abspath(artifact))
    if not path.name:
        raise UsageProblem("the file system root cannot be an artifact; choose another "
                           "output", os.fspath(artifact))
    return path.with_name(f"{path.name}.lock")


def _is_our_lock(fd: int) -> bool:
    """A lock file vssl wrote: a plain file holding our tag and a PID (or, from versions
    before the tag, a PID alone)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > LOCK_BYTES:
        return False
    text = os.pread(fd, LOCK_BYTES, 0).decode("ascii", "replace").strip()
    return text.removeprefix(LOCK_TAG.strip()).strip().isdigit()


def _open_lock(lock_path: Path, artifact) -> int:
    """An open descriptor of ``lock_path``, flock'ed by us: created exclusively, or a stale
    lock of ours taken over. Never follows a link nor truncates a file that is not ours."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(20):
        created = False
        try:
            fd = os.open(lock_path, flags | os.O_CREAT | os.O_EXCL, 0o644)
            created = True
        except FileExistsError:
            try:
                fd = os.open(lock_path, flags)
            except FileNotFoundError:
                continue          # its holder just removed it: create it again
            except OSError:       # a symbolic link (ELOOP), a folder (EISDIR), no access
                fd = -1
            if fd < 0 or not _is_our_lock(fd):
                if fd >= 0:
                    os.close(fd)
                raise UsageProblem(f"{lock_path} is in the way: vssl keeps its lock there, "
                                   "and that file is not a vssl lock; move it away",
                                   artifact) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise VsslError("another vssl process is writing this artifact "
                            f"(lock held on {lock_path})", artifact) from None
        try:
            same = os.path.samestat(os.lstat(lock_path), os.fstat(fd))
        except FileNotFoundError:
            same = False
        if same:      # not a file its last holder unlinked while we waited for it
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{LOCK_TAG}{os.getpid()}\n".encode(), 0)
            except OSError:       # a full disk: leave nothing behind
                if created:
                    os.unlink(lock_path)
                os.close(fd)
                raise
            return fd
        os.close(fd)
    raise VsslError(f"could not take the lock {lock_path}: it keeps changing", artifact)


@contextlib.contextmanager
def exclusive_lock(artifact: str | os.PathLike) -> Iterator[None]:
    """Refuse a second writer of the same artifact instead of letting both corrupt it.

    The lock is ``ARTIFACT.lock``; only a file that is our lock is ever written or removed
    (a user's file or link of that name is refused, untouched)."""
    lock_path = lock_path_for(artifact)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_lock(lock_path, artifact)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.lstat(lock_path), os.fstat(fd)):
                os.unlink(lock_path)      # still ours: unlinked while we hold it
        os.close(fd)


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Build a directory artifact under a temporary name, then swap it into place.

    The previous artifact (if any) survives any failure before the swap.
    """
    final = Path(os.path.abspath(final))   # `-o .` names the folder itself
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    tmp.chmod(0o777 & ~umask())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_path(tmp, final)


def replace_path(new: Path, final: Path) -> None:
    """Move ``new`` onto ``final``; an old ``final`` is moved aside first, then deleted."""
    old, final = None, Path(os.path.abspath(final))
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(new, final)
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
