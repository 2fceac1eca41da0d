"""The resumable, streaming, parallel writer behind every ``prepare`` command.

Given a list of :class:`ImageTask` (one image file each, with its patient and class) and a loader that turns
one file into a uint8 (S, S) array, :func:`prepare_images` writes a prepared dataset (see
:mod:`data_tools.dataset`) to ``OUT``:

- Work happens in a staging folder ``OUT.partial/`` next to the output: ``images.npy`` (uint8 (N, S, S),
  preallocated, written row by row with ``pwrite``), ``log.jsonl`` (one line per finished image: its pixels
  were written and synced *before* the line, so a line means the row is final), ``plan.json`` (a fingerprint
  of the task list and the preprocessing) and ``lock``.
- Killed at any moment (``kill -9`` included), the same command run again finds the plan, skips every image
  named in the log and does the rest. A run with other inputs or preprocessing starts the staging over.
- Memory stays bounded: workers return one chunk of small arrays at a time, at most ``2 * workers`` chunks are
  in flight, and the parent writes them straight to disk; nothing holds the whole dataset.
- An image that cannot be read is a *failure*: counted, listed in ``report.json`` with its reason, and left
  out. Failures found before decoding (duplicates, images without a label) count too. When failures exceed
  ``max_failure_fraction`` of the images found, the run stops with an :class:`InputError` (the report so far
  is in the staging folder).
- A finished dataset is left alone: when ``OUT`` is complete and its ``meta.json`` records the same plan
  (:mod:`data_tools.plan`: inputs, labels, preprocessing, splits), the run does nothing and says so;
  ``force=True`` rebuilds it. ``OUT`` made with another plan is rebuilt, with a warning naming the difference.
- At the end the finished rows are linked (or, when some failed, copied in order without the holes) into a
  temporary sibling with ``index.csv``, ``meta.json`` and ``report.json``, which is renamed into place by
  :func:`data_tools.dataset.publish_dir`; no reader ever sees a half-written dataset.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from data_tools.dataset import (
    FORMAT_VERSION,
    IndexTable,
    check_output_folder,
    count_table,
    publish_dir,
    stratified_split,
    tool_version,
    write_index,
)
from data_tools.errors import InputError
from data_tools.plan import (
    PLAN_KEY,
    file_stamp,
    finished_with_plan,
    plan_difference,
    plan_fingerprint,
    read_meta,
    replaced_message,
    unchanged_message,
)

logger = logging.getLogger(__name__)

STAGING_VERSION = 1
#: Seconds to sleep after each written chunk; only the kill-and-resume test sets it, to kill mid-run reliably.
CHUNK_DELAY_ENV = "PYRO_ADGM_PREPARE_CHUNK_DELAY"

Loader = Callable[[str], "tuple[np.ndarray, dict]"]


@dataclass(frozen=True)
class ImageTask:
    """One image to prepare. ``split`` is empty unless the source fixes it (``train``/``val``/``test``)."""

    id: str
    path: str
    patient: str
    class_name: str
    view: str = ""
    split: str = ""


@dataclass(frozen=True)
class Failure:
    """One image left out, with the reason: ``kind`` is a short category, ``message`` names the file."""

    id: str
    path: str
    kind: str
    message: str


@dataclass
class PrepareResult:
    """What a finished run produced: the dataset folder and the headline numbers of its report."""

    path: Path
    n_images: int
    n_failed: int
    decoded_this_run: int
    counts: dict
    report_path: Path
    report: dict = field(repr=False, default_factory=dict)
    #: True when ``path`` already held this dataset, made with the same plan, and nothing was done.
    unchanged: bool = False
    #: One line for the user about what happened to an existing ``path`` (left alone, or rebuilt and why).
    note: str = ""


def default_workers() -> int:
    """The number of CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# worker side


def _worker_init() -> None:
    # Ctrl-C is the parent's to handle; a worker must also not outlive a parent killed with SIGKILL.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _run_chunk(loader: Loader, items: list[tuple[int, str]]) -> list[tuple[int, np.ndarray | None, dict]]:
    """Load each (row, path); return (row, uint8 array or None, info or failure dict) per item."""
    from data_tools.dicom import ImageReadError

    results = []
    for row, path in items:
        try:
            array, info = loader(path)
            results.append((row, np.ascontiguousarray(array, dtype=np.uint8), info))
        except ImageReadError as error:
            results.append((row, None, {"kind": error.kind, "message": str(error)}))
        except Exception as error:  # one bad file must never stop the others
            results.append((row, None, {"kind": "unreadable", "message": f"{path}: {type(error).__name__}: {error}"}))
    return results


# staging folder


class _Staging:
    """``OUT.partial/``: the preallocated image file, the finished-image log and the plan fingerprint."""

    def __init__(self, out: Path, n: int, size: int, fingerprint: str):
        self.dir = out.with_name(out.name + ".partial")
        self.n, self.size, self.fingerprint = n, size, fingerprint
        self.images_path = self.dir / "images.npy"
        self.log_path = self.dir / "log.jsonl"
        self.plan_path = self.dir / "plan.json"
        self._lock_handle = None

    def lock(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.dir / "lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise InputError(f"{self.dir}: another `pyro-adgm prepare` is writing this output right now") from None
        self._lock_handle = handle

    def unlock(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def open(self, *, fresh: bool = False) -> dict[int, dict]:
        """Reuse a staging folder made for the same plan (unless ``fresh``), or start it over; return the
        finished-image records."""
        if not fresh and self._matches_plan():
            records = self._read_log()
            logger.info("resuming %s: %d of %d images already done", self.dir, len(records), self.n)
            return records
        if self.plan_path.exists():
            logger.warning("%s was made for other inputs or preprocessing; starting it over", self.dir)
        for child in self.dir.iterdir():
            if child.name != "lock":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        # A sparse, preallocated file: rows are written in place, in any order.
        np.lib.format.open_memmap(self.images_path, mode="w+", dtype=np.uint8, shape=(self.n, self.size, self.size))
        self.log_path.touch()
        plan = {"staging_version": STAGING_VERSION, "fingerprint": self.fingerprint, "n": self.n, "size": self.size}
        tmp = self.plan_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(plan))
        os.replace(tmp, self.plan_path)  # the plan appears last: without it a rerun starts over
        return {}

    def _matches_plan(self) -> bool:
        try:
            plan = json.loads(self.plan_path.read_text())
            images = np.load(self.images_path, mmap_mode="r")
        except (OSError, ValueError):
            return False
        return (
            plan.get("staging_version") == STAGING_VERSION
            and plan.get("fingerprint") == self.fingerprint
            and images.shape == (self.n, self.size, self.size)
            and images.dtype == np.uint8
            and self.log_path.exists()
        )

    def _read_log(self) -> dict[int, dict]:
        """Parse the log; a line cut short by a kill is dropped (and cut off the file so appends stay clean)."""
        records: dict[int, dict] = {}
        good_bytes = 0
        with open(self.log_path, "rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    break
                try:
                    record = json.loads(line)
                    row = int(record["row"])
                except (ValueError, KeyError, TypeError):
                    break
                if 0 <= row < self.n:
                    records[row] = record
                good_bytes += len(line)
        if good_bytes != self.log_path.stat().st_size:
            os.truncate(self.log_path, good_bytes)
        return records

    def row_writer(self) -> _RowWriter:
        return _RowWriter(self.images_path, self.log_path, self.size)


class _RowWriter:
    """Writes finished rows to the staging image file, syncs them, then logs them (in that order)."""

    def __init__(self, images_path: Path, log_path: Path, size: int):
        self.offset = int(np.load(images_path, mmap_mode="r").offset)
        self.row_bytes = size * size
        self.images_fd = os.open(images_path, os.O_WRONLY)
        self.log = open(log_path, "ab")

    def write(self, results: Iterable[tuple[int, np.ndarray | None, dict]]) -> list[dict]:
        records = []
        for row, array, info in results:
            if array is not None:
                os.pwrite(self.images_fd, array.tobytes(), self.offset + row * self.row_bytes)
                records.append({"row": row, "ok": True, **info})
            else:
                records.append({"row": row, "ok": False, **info})
        os.fsync(self.images_fd)
        self.log.write(b"".join(json.dumps(r).encode() + b"\n" for r in records))
        self.log.flush()
        os.fsync(self.log.fileno())
        return records

    def close(self) -> None:
        os.close(self.images_fd)
        self.log.close()


# the run


def _fingerprint(tasks: Sequence[ImageTask], image_size: int, preprocessing: dict) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"size": image_size, "preprocessing": preprocessing}, sort_keys=True).encode())
    for task in tasks:
        digest.update(f"{task.id}\0{task.path}\n".encode())
    return digest.hexdigest()


def _output_plan(
    tasks: Sequence[ImageTask],
    early_failures: Sequence[Failure],
    inputs: Sequence[str | os.PathLike],
    settings: dict,
) -> str:
    """The plan fingerprint of a finished dataset (see :mod:`data_tools.plan`)."""
    rows = [("task", t.id, t.path, t.patient, t.class_name, t.view, t.split, file_stamp(t.path)) for t in tasks]
    rows += [("left-out", f.id, f.path, f.kind, f.message) for f in early_failures]
    rows += [("input", str(path), file_stamp(path)) for path in inputs]
    return plan_fingerprint(settings, rows)


def _unchanged_result(out: Path, meta: dict, max_failure_fraction: float) -> PrepareResult:
    """The result of a run that found ``out`` finished with its plan; the failure limit still applies."""
    report_path = out / "report.json"
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{report_path}: not readable JSON ({error}); rerun with --force to rebuild {out}") from None
    failures = [Failure(**f) for f in report.get("failures", [])]
    found = int(report.get("images_found", 0))
    if len(failures) > max_failure_fraction * found:
        raise _failure_error(len(failures), found, max_failure_fraction, report_path, failures)
    return PrepareResult(
        path=out, n_images=int(report.get("images_prepared", 0)), n_failed=len(failures), decoded_this_run=0,
        counts=meta.get("counts", {}), report_path=report_path, report=report, unchanged=True,
        note=unchanged_message(out),
    )


def _chunks(rows: list[int], chunk_size: int) -> Iterable[list[int]]:
    for start in range(0, len(rows), chunk_size):
        yield rows[start : start + chunk_size]


def _decode(
    tasks: Sequence[ImageTask],
    todo: list[int],
    loader: Loader,
    workers: int,
    chunk_size: int,
    on_chunk: Callable[[list[tuple[int, np.ndarray | None, dict]]], None],
) -> None:
    """Run the loader over ``todo`` rows, in this process (workers=0) or a pool, calling ``on_chunk`` per chunk."""
    delay = float(os.environ.get(CHUNK_DELAY_ENV, "0") or 0)
    chunks = ([(row, tasks[row].path) for row in rows] for rows in _chunks(todo, chunk_size))
    if workers == 0:
        for items in chunks:
            on_chunk(_run_chunk(loader, items))
            time.sleep(delay)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init) as pool:
        pending = set()
        try:
            for items in chunks:
                pending.add(pool.submit(_run_chunk, loader, items))
                # A bounded window of chunks in flight keeps memory flat however many images there are.
                while len(pending) >= 2 * workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        on_chunk(future.result())
                        time.sleep(delay)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    on_chunk(future.result())
                    time.sleep(delay)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _failure_error(n_failed: int, total: int, limit: float, report_path: Path, failures: list[Failure]) -> InputError:
    kinds: dict[str, int] = {}
    for failure in failures:
        kinds[failure.kind] = kinds.get(failure.kind, 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    example = f"; first: {failures[0].message}" if failures else ""
    return InputError(
        f"{n_failed} of {total} images failed ({summary}), more than the {limit:.0%} allowed by "
        f"--max-failure-fraction; see {report_path}{example}"
    )


def _report(
    *,
    meta: dict,
    total: int,
    n_ok: int,
    failures: list[Failure],
    decoded_now: int,
    done_before: int,
    max_failure_fraction: float,
    identical: list[list[str]],
    report_extra: dict,
) -> dict:
    counts: dict[str, int] = {}
    for failure in failures:
        counts[failure.kind] = counts.get(failure.kind, 0) + 1
    return {
        "source": meta.get("source", ""),
        "images_found": total,
        "images_prepared": n_ok,
        "images_failed": len(failures),
        "images_decoded_this_run": decoded_now,
        "images_done_in_earlier_runs": done_before,
        "max_failure_fraction": max_failure_fraction,
        "failure_counts": dict(sorted(counts.items())),
        "failures": [asdict(f) for f in failures],
        "identical_files": identical,
        **report_extra,
    }


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=False) + "\n")


def _assign_splits(tasks: list[ImageTask], val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Keep splits fixed by the source; draw the others by patient, stratified by class, seeded."""
    splits = np.array([t.split for t in tasks], dtype=object)
    free = np.flatnonzero(splits == "")
    if len(free):
        drawn = stratified_split(
            [tasks[i].patient for i in free],
            [tasks[i].class_name for i in free],
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
        )
        splits[free] = drawn
    return splits


def _copy_rows(src: Path, dst: Path, rows: np.ndarray, size: int) -> None:
    """Copy ``rows`` of a uint8 (N, S, S) .npy into a new (len(rows), S, S) .npy, one row at a time."""
    np.lib.format.open_memmap(dst, mode="w+", dtype=np.uint8, shape=(len(rows), size, size))
    src_offset = int(np.load(src, mmap_mode="r").offset)
    dst_offset = int(np.load(dst, mmap_mode="r").offset)
    row_bytes = size * size
    src_fd, dst_fd = os.open(src, os.O_RDONLY), os.open(dst, os.O_WRONLY)
    try:
        for k, row in enumerate(rows):
            data = os.pread(src_fd, row_bytes, src_offset + int(row) * row_bytes)
            os.pwrite(dst_fd, data, dst_offset + k * row_bytes)
        os.fsync(dst_fd)
    finally:
        os.close(src_fd)
        os.close(dst_fd)


def _remove_stale_temporaries(out: Path) -> None:
    # A kill during finalisation leaves a temporary sibling; the lock says no other run is using one.
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def prepare_images(
    tasks: Sequence[ImageTask],
    out: str | os.PathLike,
    *,
    loader: Loader,
    image_size: int,
    preprocessing: dict,
    meta: dict,
    workers: int = 0,
    early_failures: Sequence[Failure] = (),
    report_extra: dict | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.0,
    seed: int = 0,
    max_failure_fraction: float = 0.05,
    chunk_size: int = 32,
    progress: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
    force: bool = False,
) -> PrepareResult:
    """Prepare ``tasks`` into the dataset folder ``out`` (see the module docstring).

    loader: path -> (uint8 (image_size, image_size), info); a picklable callable when ``workers`` > 0 (0 runs
    it in this process). ``info`` may carry ``view`` and ``sha`` (a content digest, to list identical files).
    preprocessing: what the loader does, recorded in ``meta.json`` and part of the resume fingerprint.
    meta: the source's ``source``, ``class_names``, ``tasks`` and anything else it wants recorded.
    early_failures: images already left out by the source (duplicates, no label); they count as failures.
    inputs: the source's other input files (label CSVs, an archive); their size and time join the plan.
    force: rebuild ``out`` even when it is finished with the same plan, and start any staging over.
    """
    out = Path(out)
    tasks = list(tasks)
    early_failures = list(early_failures)
    if image_size < 1:
        raise InputError(f"image size (--size) {image_size}: expected a positive number of pixels")
    if workers < 0:
        raise InputError(f"workers (--workers) {workers}: expected 0 (this process) or more")
    if not 0 <= max_failure_fraction <= 1:
        raise InputError(f"max_failure_fraction (--max-failure-fraction) {max_failure_fraction}: expected a number in [0, 1]")
    stratified_split([], [], val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)  # checks fractions
    check_output_folder(out, [t.path for t in tasks] + [str(path) for path in inputs])
    if len({t.id for t in tasks}) != len(tasks):
        raise ValueError("prepare_images: task ids must be unique (the source should report duplicates)")
    total = len(tasks) + len(early_failures)
    limit = max_failure_fraction * total
    report_extra = dict(report_extra or {})

    splits = {"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed}
    settings = {"format_version": FORMAT_VERSION, "tool_version": tool_version(), "image_size": image_size,
                "preprocessing": preprocessing, "meta": meta, "splits": splits}
    plan = _output_plan(tasks, early_failures, inputs, settings)
    note = ""
    finished = finished_with_plan(out, plan)
    if finished is not None and not force:
        return _unchanged_result(out, finished, max_failure_fraction)
    if finished is not None:
        note = f"{out}: rebuilding it (--force)"
        logger.info("%s", note)
    elif (old_meta := read_meta(out)) is not None:
        note = replaced_message(out, plan_difference(old_meta, image_size=image_size, preprocessing=preprocessing,
                                                     splits=splits, source=str(meta.get("source", ""))))
        logger.warning("%s", note)

    staging = _Staging(out, len(tasks), image_size, _fingerprint(tasks, image_size, preprocessing))
    staging.lock()
    try:
        report_path = staging.dir / "report.json"

        def stop_if_too_many(failures: list[Failure], records: dict[int, dict], decoded_now: int) -> None:
            if len(failures) > limit:
                n_ok = sum(1 for r in records.values() if r["ok"])
                _write_json(
                    report_path,
                    _report(
                        meta=meta, total=total, n_ok=n_ok, failures=failures, decoded_now=decoded_now,
                        done_before=len(records) - decoded_now, max_failure_fraction=max_failure_fraction,
                        identical=[], report_extra=report_extra,
                    ),
                )
                raise _failure_error(len(failures), total, max_failure_fraction, report_path, failures)

        stop_if_too_many(early_failures, {}, 0)
        if not tasks:
            raise InputError(f"no images to prepare for {out} (every image found was left out; see {report_path})")
        records = staging.open(fresh=force)
        done_before = len(records)
        failures = early_failures + [
            Failure(tasks[row].id, tasks[row].path, rec["kind"], rec["message"])
            for row, rec in sorted(records.items())
            if not rec["ok"]
        ]
        stop_if_too_many(failures, records, 0)
        todo = [row for row in range(len(tasks)) if row not in records]
        decoded_now = 0

        from tqdm import tqdm

        bar = tqdm(
            total=len(tasks), initial=done_before, unit="img", desc=f"prepare {out.name}",
            disable=None if progress else True, smoothing=0.05,
        )
        row_writer = staging.row_writer()

        def on_chunk(results):
            nonlocal decoded_now
            for record in row_writer.write(results):
                records[record["row"]] = record
                if not record["ok"]:
                    task = tasks[record["row"]]
                    failures.append(Failure(task.id, task.path, record["kind"], record["message"]))
                    logger.debug("failed: %s", record["message"])
            decoded_now += len(results)
            bar.update(len(results))
            stop_if_too_many(failures, records, decoded_now)

        try:
            _decode(tasks, todo, loader, workers, chunk_size, on_chunk)
        finally:
            row_writer.close()
            bar.close()

        return _finalise(
            out, staging, tasks, records, failures, meta=meta, image_size=image_size, preprocessing=preprocessing,
            total=total, decoded_now=decoded_now, done_before=done_before, max_failure_fraction=max_failure_fraction,
            report_extra=report_extra, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
            plan=plan, note=note,
        )
    finally:
        staging.unlock()


def _finalise(
    out: Path,
    staging: _Staging,
    tasks: list[ImageTask],
    records: dict[int, dict],
    failures: list[Failure],
    *,
    meta: dict,
    image_size: int,
    preprocessing: dict,
    total: int,
    decoded_now: int,
    done_before: int,
    max_failure_fraction: float,
    report_extra: dict,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    plan: str,
    note: str,
) -> PrepareResult:
    """Build the final folder from the staging one and rename it into place; remove the staging folder."""
    ok_rows = np.array([row for row in range(len(tasks)) if records[row]["ok"]], dtype=np.int64)
    if len(ok_rows) == 0:
        raise InputError(f"no image of {out} could be prepared; see {staging.dir / 'report.json'}")
    kept = [tasks[row] for row in ok_rows]
    splits = _assign_splits(kept, val_fraction, test_fraction, seed)
    index = IndexTable(
        id=np.array([t.id for t in kept], dtype=object),
        patient=np.array([t.patient for t in kept], dtype=object),
        class_name=np.array([t.class_name for t in kept], dtype=object),
        view=np.array([t.view or records[row].get("view", "") for t, row in zip(kept, ok_rows)], dtype=object),
        split=splits,
    )
    by_digest: dict[str, list[str]] = {}
    for task, row in zip(kept, ok_rows):
        digest = records[row].get("sha")
        if digest:
            by_digest.setdefault(digest, []).append(task.id)
    identical = [ids for ids in by_digest.values() if len(ids) > 1]
    report = _report(
        meta=meta, total=total, n_ok=len(kept), failures=failures, decoded_now=decoded_now,
        done_before=done_before, max_failure_fraction=max_failure_fraction, identical=identical,
        report_extra=report_extra,
    )
    full_meta = dict(meta)
    full_meta.update(
        format_version=FORMAT_VERSION,
        tool_version=tool_version(),
        image_size=image_size,
        preprocessing=preprocessing,
        splits={"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed},
        counts=count_table(index),
        failures=len(failures),
    )
    full_meta[PLAN_KEY] = plan

    _remove_stale_temporaries(out)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        if len(ok_rows) == len(tasks):
            try:
                os.link(staging.images_path, tmp / "images.npy")  # same bytes, no copy
            except OSError:
                shutil.copyfile(staging.images_path, tmp / "images.npy")
        else:
            _copy_rows(staging.images_path, tmp / "images.npy", ok_rows, image_size)
        write_index(tmp / "index.csv", index)
        _write_json(tmp / "meta.json", full_meta)
        _write_json(tmp / "report.json", report)
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(staging.dir, ignore_errors=True)
    logger.info("wrote %d images to %s (%d failed, %d decoded in this run)", len(kept), out, len(failures), decoded_now)
    for message in thin_dataset_warnings(full_meta["counts"], meta.get("class_names", ())):
        logger.warning("%s: %s", out, message)
    return PrepareResult(
        path=out, n_images=len(kept), n_failed=len(failures), decoded_this_run=decoded_now,
        counts=full_meta["counts"], report_path=out / "report.json", report=report, note=note,
    )


def thin_dataset_warnings(counts: dict[str, dict[str, int]], class_names: Sequence[str]) -> list[str]:
    """What a prepared dataset lacks for training (its ``counts`` per split and class): a ``val`` split to choose
    checkpoints on, or a second class. Warnings, not errors: such a dataset can still be evaluated on."""
    messages = []
    if not sum(counts.get("val", {}).values()):
        messages.append("no images in the val split, which training needs (a larger --val-fraction, or more images)")
    present = [name for name in class_names if counts.get("all", {}).get(name)]
    if len(present) < 2:
        messages.append(f"images of {len(present)} class{'es' if len(present) != 1 else ''} only ({', '.join(present) or 'none'}); training needs two or more")
    return messages
