"""The files of a checkpoint directory: rank files, manifests, ``latest.json``, the owner.

Every function here is local to one rank (no collectives) and raises ``CheckpointError``
naming the file and what is wrong with it; :mod:`dlion.checkpoint` gathers the outcome of every
rank before anything is committed or restored.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError

#: Version of the layout below; a checkpoint of another format is refused, naming both.
FORMAT = 2
LATEST = "latest.json"
MANIFEST = "manifest.json"
OWNER = "owner.json"
META = "__meta__"


def rank_file(rank: int) -> str:
    return f"rank-{rank:05d}.npz"


def step_folder(root: Path, step: int) -> Path:
    return root / f"step-{int(step):08d}"


def encode_rank_file(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> bytes:
    """The bytes of one rank's ``.npz`` file (numpy arrays and a JSON ``__meta__``, no pickle)."""
    buffer = io.BytesIO()
    payload = {**arrays, META: np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    np.savez(buffer, **payload)  # type: ignore[arg-type]
    return buffer.getvalue()


def checksum(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` under a temporary name, flush it to disk, rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: no {what} ({e.strerror})") from e
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: the {what} cannot be read: {type(e).__name__}: {e}") from e
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: the {what} is not a JSON object")
    return value


def latest(root: Path) -> int | None:
    """The step ``latest.json`` names, or None when there is none."""
    path = root / LATEST
    if not path.exists():
        return None
    step = read_json(path, LATEST).get("step")
    if not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path}: 'step' is {step!r}, not an int >= 0")
    return step


def read_manifest(folder: Path, size: int, any_size: bool = False) -> dict[str, Any]:
    """The manifest of a complete checkpoint of this format and world size (``any_size``:
    of any world size, for a restore at another size)."""
    if not (folder / MANIFEST).exists():
        raise CheckpointError(f"{folder} is not a complete checkpoint (no {MANIFEST})")
    manifest = read_json(folder / MANIFEST, MANIFEST)
    if manifest.get("format") != FORMAT:
        raise CheckpointError(
            f"{folder / MANIFEST}: checkpoint format {manifest.get('format')!r} (written by "
            f"dlion {manifest.get('dlion_version', '?')}); this dlion reads format {FORMAT}"
        )
    for key in ("world_size", "step", "job", "files", "entries", "sites"):
        if key not in manifest:
            raise CheckpointError(f"{folder / MANIFEST}: no {key!r}; the manifest is damaged")
    if manifest["world_size"] != size and not any_size:
        raise CheckpointError(
            f"the checkpoint {folder} was written by {manifest['world_size']} ranks, this job "
            f"has {size}: resume with {manifest['world_size']} ranks, or restore the merged "
            "replicas at this size with load(..., elastic='average')"
        )
    return manifest


def read_rank_file(
    folder: Path, manifest: dict[str, Any], rank: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """This rank's file, checked against the manifest (checksum, job, rank, step, format):
    its ``__meta__`` and its arrays."""
    path = folder / rank_file(rank)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({type(e).__name__}: {e.strerror})") from e
    want = manifest["files"].get(rank_file(rank)) if isinstance(manifest["files"], dict) else None
    if checksum(data) != want:
        raise CheckpointError(
            f"{path}: checksum {checksum(data)[:23]}... differs from the manifest's "
            f"{str(want)[:23]}...: the file is truncated, damaged or from another job"
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(arrays.pop(META).tobytes())
    except Exception as e:  # noqa: BLE001 - a damaged zip fails in many ways
        raise CheckpointError(f"{path}: cannot be decoded: {type(e).__name__}: {e}") from e
    expect = {"format": FORMAT, "job": manifest["job"]["id"], "rank": rank}
    expect["step"] = manifest["step"]
    for key, value in expect.items():
        if meta.get(key) != value:
            raise CheckpointError(
                f"{path}: its {key} is {meta.get(key)!r}, the manifest's {value!r}: it is not "
                f"rank {rank}'s file of this checkpoint"
            )
    return meta, arrays


def write_manifest(root: Path, folder: Path, manifest: dict[str, Any], keep: int) -> None:
    """Rank 0, after every rank wrote its file: the manifest, then latest.json, then pruning."""
    atomic_write(folder / MANIFEST, json.dumps(manifest, indent=1).encode())
    latest_record = {"step": manifest["step"], "path": folder.name, "job": manifest["job"]["id"]}
    atomic_write(root / LATEST, json.dumps(latest_record).encode())
    prune(root, keep, folder)


def prune(root: Path, keep: int, current: Path) -> None:
    """Keep ``current`` and the ``keep - 1`` other complete checkpoints of the highest steps
    (``keep`` 0: all). ``current`` is never removed, even when it is an older step than the
    others (a run restarted from an earlier checkpoint)."""
    if keep == 0:
        return
    done = [p for p in root.glob("step-*") if (p / MANIFEST).exists() and p != current]
    done.sort(key=_step_of)
    for old in done[: max(len(done) - (keep - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)


def _step_of(folder: Path) -> int:
    digits = folder.name.removeprefix("step-")
    return int(digits) if digits.isdigit() else -1


def owner(root: Path) -> dict[str, Any] | None:
    """Who writes ``root``: its ``owner.json``; for a directory of checkpoints without one, the
    job of its newest checkpoint; None for a directory no job has written."""
    if (root / OWNER).exists():
        return read_json(root / OWNER, OWNER)
    if (root / LATEST).exists():
        record = read_json(root / LATEST, LATEST)
        return {"job": record.get("job", "unknown (a checkpoint of an older dlion)")}
    return None


def claim(root: Path, job: dict[str, Any], resumed_from: str | None) -> None:
    """Rank 0, before any rank writes: make ``root`` this job's, or refuse.

    A directory is this job's when no job wrote it (then ``owner.json`` is created, exclusively:
    of two jobs starting together one wins), when this job claimed it before, or when this job
    resumed from a checkpoint of the job that owns it (then it takes the directory over).
    """
    record = {"job": job["id"], "host": socket.gethostname(), "pid": os.getpid(), "since": _now()}
    current = owner(root)
    if current is None:
        try:
            fd = os.open(root / OWNER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            current = owner(root)
        else:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({**record, "resumed_from": None}))
            return
    assert current is not None
    if current.get("job") == job["id"]:
        return
    if resumed_from is not None and current.get("job") == resumed_from:
        atomic_write(root / OWNER, json.dumps({**record, "resumed_from": resumed_from}).encode())
        return
    raise CheckpointError(
        f"{root} holds the checkpoints of another job ({current.get('job')}, since "
        f"{current.get('since', '?')} on {current.get('host', '?')}, pid {current.get('pid', '?')}"
        f"); this job ({job['id']}) did not resume from it. Two jobs writing one directory "
        "would mix their files: use another directory, load() from this one first to continue "
        "that run, or remove it to start over"
    )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def ensure_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
