"""MediaStore: what the scanner found, in batches, plus the queries the Scan tab needs."""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, bindparam, case, func, or_, select, update

from amphigory_tui.domain.clock import Clock
from amphigory_tui.domain.media import Decision, LibraryStats, MediaFile, ProbeResult
from amphigory_tui.store.convert import like_contains, media_from_row, probe_columns, probe_from_row
from amphigory_tui.store.engine import Engines
from amphigory_tui.store.orm import MediaFileRow

M = cast(Table, MediaFileRow.__table__)


@dataclass(frozen=True, slots=True)
class MediaRecord:
    """One scanned file ready to be written: where it is, its stat, its probe and its decision."""

    path: str
    root: str
    size_bytes: int
    mtime_ns: int
    probe: ProbeResult
    decision: Decision


class KnownFile(NamedTuple):
    """What the store remembers of a path, for the incremental check (no probe needed if unchanged).

    A named tuple, not a dataclass: a rescan builds one per recorded file, and a frozen dataclass costs three times
    as much to build (50 ms of a 50,000-file rescan).
    """

    id: int
    size_bytes: int
    mtime_ns: int
    missing: bool
    root: str = ""
    """The library root the row was recorded under (display only: identity is the path)."""


@dataclass(frozen=True, slots=True)
class FolderTotals:
    """Present files inside some folders: how many, how many need transcoding, and their probe errors."""

    files: int
    need_transcoding: int
    probe_errors: int
    first_errors: tuple[tuple[str, str], ...]
    """``(path, probe_error)`` of the first few, in path order."""


@dataclass(frozen=True)
class MediaFilter:
    """What the Scan tab's table shows."""

    search: str = ""
    needs_transcoding_only: bool = False
    include_missing: bool = False


class MediaStore:
    """Named operations on ``media_files``."""

    def __init__(self, engines: Engines, clock: Clock) -> None:
        self._db = engines
        self._clock = clock

    def known(self, folder: str | None = None) -> dict[str, KnownFile]:
        """Every recorded path (inside ``folder``, whatever root it was recorded under): one query, for rescans."""
        query = select(M.c.path, M.c.id, M.c.size_bytes, M.c.mtime_ns, M.c.missing, M.c.root)
        if folder is not None:
            query = query.where(_under(folder))
        with self._db.read() as conn, _gc_paused():
            # The DB-API rows directly: SQLAlchemy's row objects would cost more than the query (these columns need
            # no result processing; SQLite's 0/1 becomes a bool here).
            return {
                path: KnownFile(id_, size, mtime, bool(missing), root)
                for path, id_, size, mtime, missing, root in conn.execute(query).cursor.fetchall()
            }

    def known_under(self, folder: str) -> dict[str, KnownFile]:
        """Every recorded path inside ``folder`` (a deleted directory, for watch mode)."""
        return self.known(folder)

    def present_under(self, folders: Sequence[str]) -> dict[str, int]:
        """How many present files lie inside each of these folders (a scan's progress total)."""
        out: dict[str, int] = {}
        with self._db.read() as conn:
            for folder in folders:
                query = select(func.count()).select_from(M).where(_under(folder), M.c.missing.is_(False))
                out[folder] = int(conn.execute(query).scalar_one())
        return out

    def totals_under(self, folders: Sequence[str], error_limit: int) -> FolderTotals:
        """The end-of-scan figures of these folders: one pass over the table, a second only if there are errors."""
        if not folders:
            return FolderTotals(0, 0, 0, ())
        inside = or_(*(_under(f) for f in folders)) & M.c.missing.is_(False)
        query = select(
            func.count(), _sum_if(M.c.should_transcode.is_(True)), _sum_if(M.c.probe_error.is_not(None))
        ).where(inside)
        with self._db.read() as conn:
            files, need, errors = (int(n) for n in conn.execute(query).one())
            rows = (
                conn.execute(
                    select(M.c.path, M.c.probe_error)
                    .where(inside, M.c.probe_error.is_not(None))
                    .order_by(M.c.path)
                    .limit(error_limit)
                ).all()
                if errors
                else []
            )
        return FolderTotals(files, need, errors, tuple((path, str(error)) for path, error in rows))

    def set_root(self, ids: Iterable[int], root: str) -> None:
        """Record the library root of unchanged files filed under another one (no probe, no other column)."""
        id_list = list(ids)
        if not id_list:
            return
        with self._db.write() as conn:
            for chunk in _chunks(id_list, 500):
                conn.execute(update(M).where(M.c.id.in_(chunk)).values(root=root))

    def upsert(self, records: Sequence[MediaRecord]) -> dict[str, int]:
        """Insert or update scanned files in one transaction; returns path -> id."""
        if not records:
            return {}
        now = self._clock.now()
        paths = [r.path for r in records]
        with self._db.write() as conn:
            existing = dict(conn.execute(select(M.c.path, M.c.id).where(M.c.path.in_(paths))).all())
            inserts: list[dict[str, Any]] = []
            updates: list[dict[str, Any]] = []
            for r in records:
                values = _record_values(r, now)
                if r.path in existing:
                    updates.append({"_id": existing[r.path], **values})
                else:
                    inserts.append({**values, "path": r.path, "discovered_at": now})
            if inserts:
                conn.execute(M.insert(), inserts)
            if updates:
                stmt = (
                    update(M)
                    .where(M.c.id == bindparam("_id"))
                    .values({k: bindparam(k) for k in updates[0] if k != "_id"})
                )
                conn.execute(stmt, updates)
            return dict(conn.execute(select(M.c.path, M.c.id).where(M.c.path.in_(paths))).all())

    def mark_missing(self, ids: Iterable[int]) -> int:
        """Flag files that disappeared from disk (their rows stay: history and jobs refer to them)."""
        id_list = list(ids)
        if not id_list:
            return 0
        now = self._clock.now()
        count = 0
        with self._db.write() as conn:
            for chunk in _chunks(id_list, 500):
                result = conn.execute(
                    update(M)
                    .where(M.c.id.in_(chunk), M.c.missing.is_(False))
                    .values(missing=True, should_transcode=False, reason="missing from disk", updated_at=now)
                )
                count += int(result.rowcount or 0)
        return count

    def update_decisions(self, decisions: Sequence[tuple[int, Decision]]) -> None:
        """Store re-evaluated decisions without touching the probe results."""
        if not decisions:
            return
        now = self._clock.now()
        params = [
            {
                "_id": media_id,
                "should_transcode": d.should_transcode,
                "reason": d.reason,
                "priority": d.priority,
                "est_savings_pct": d.est_savings_pct,
                "updated_at": now,
            }
            for media_id, d in decisions
        ]
        stmt = (
            update(M)
            .where(M.c.id == bindparam("_id"))
            .values(
                should_transcode=bindparam("should_transcode"),
                reason=bindparam("reason"),
                priority=bindparam("priority"),
                est_savings_pct=bindparam("est_savings_pct"),
                updated_at=bindparam("updated_at"),
            )
        )
        with self._db.write() as conn:
            conn.execute(stmt, params)

    def record_transcoded(
        self, media_id: int, path: str, size_bytes: int, mtime_ns: int, probe: ProbeResult, decision: Decision
    ) -> None:
        """A transcode replaced the file: the row now describes the new file (its path may have a new extension).

        A stale row already holding the new path (a file once scanned there, since gone) is removed first, so
        the library view shows one row for the one file.
        """
        values = {"path": path, **_scan_values(size_bytes, mtime_ns, probe, decision, self._clock.now())}
        with self._db.write() as conn:
            conn.execute(M.delete().where(M.c.path == path, M.c.id != media_id))
            conn.execute(update(M).where(M.c.id == media_id).values(values))

    def iter_for_reevaluation(self, batch: int = 2000) -> Iterator[list[tuple[int, str, int, ProbeResult]]]:
        """Batches of ``(id, path, size, probe)`` of present files, for re-running the rules."""
        last_id = 0
        while True:
            with self._db.read() as conn:
                rows = (
                    conn.execute(
                        select(M).where(M.c.id > last_id, M.c.missing.is_(False)).order_by(M.c.id).limit(batch)
                    )
                    .mappings()
                    .all()
                )
            if not rows:
                return
            last_id = rows[-1]["id"]
            yield [(r["id"], r["path"], r["size_bytes"], probe_from_row(r)) for r in rows]

    def get(self, media_id: int) -> MediaFile | None:
        """One media file by id."""
        with self._db.read() as conn:
            row = conn.execute(select(M).where(M.c.id == media_id)).mappings().first()
        return media_from_row(row) if row else None

    def get_by_path(self, path: str) -> MediaFile | None:
        """One media file by path."""
        with self._db.read() as conn:
            row = conn.execute(select(M).where(M.c.path == path)).mappings().first()
        return media_from_row(row) if row else None

    def list_media(
        self, flt: MediaFilter | None = None, *, offset: int = 0, limit: int | None = None
    ) -> list[MediaFile]:
        """Media files for the Scan tab, highest priority first."""
        query = _filtered(select(M), flt or MediaFilter()).order_by(M.c.priority.desc(), M.c.path).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        with self._db.read() as conn:
            return [media_from_row(r) for r in conn.execute(query).mappings()]

    def ordered_ids(self, flt: MediaFilter | None = None) -> list[int]:
        """The ids of every media file matching a filter, in ``list_media`` order (the TUI pages by index)."""
        query = _filtered(select(M.c.id), flt or MediaFilter()).order_by(M.c.priority.desc(), M.c.path)
        with self._db.read() as conn:
            return [row[0] for row in conn.execute(query).cursor.fetchall()]

    def get_many(self, media_ids: Sequence[int]) -> list[MediaFile]:
        """The media files with these ids (any order; unknown ids are left out)."""
        out: list[MediaFile] = []
        with self._db.read() as conn:
            for chunk in _chunks(list(media_ids), 500):
                out.extend(media_from_row(r) for r in conn.execute(select(M).where(M.c.id.in_(chunk))).mappings())
        return out

    def count(self, flt: MediaFilter | None = None) -> int:
        """How many media files match a filter."""
        query = _filtered(select(func.count()).select_from(M), flt or MediaFilter())
        with self._db.read() as conn:
            return int(conn.execute(query).scalar_one())

    def stats(self, target_codec: str, last_scan_at: float | None) -> LibraryStats:
        """Counts for the Scan tab in one pass."""
        present = M.c.missing.is_(False)
        query = select(
            _sum_if(present),
            _sum_if(present & M.c.should_transcode.is_(True)),
            _sum_if(present & (M.c.video_codec == target_codec)),
            _sum_if(present & M.c.reason.like("excluded%")),
            _sum_if(present & M.c.probe_error.is_not(None)),
            _sum_if(M.c.missing.is_(True)),
            func.coalesce(func.sum(M.c.size_bytes).filter(present), 0),
            func.coalesce(
                func.sum(M.c.size_bytes * M.c.est_savings_pct / 100.0).filter(present & M.c.should_transcode.is_(True)),
                0,
            ),
        )
        with self._db.read() as conn:
            row = conn.execute(query).one()
        return LibraryStats(
            files=int(row[0]),
            need_transcoding=int(row[1]),
            already_target=int(row[2]),
            excluded=int(row[3]),
            probe_errors=int(row[4]),
            missing=int(row[5]),
            total_bytes=int(row[6]),
            est_saving_bytes=int(row[7]),
            last_scan_at=last_scan_at,
        )


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern (escape ``\\``) matching strings that start with ``prefix`` literally."""
    return like_contains(prefix)[1:]  # the shared helper's "%needle%" without its leading "%"


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a bulk read builds 100,000s of tuples that all stay alive.

    Each collection walks every tracked object, and the allocations themselves trigger them: building a rescan's
    50,000 known files took 120 ms with the collector on, 70–85 ms without (bench/rescan.py). Tuples of ints and
    strings make no cycles, so nothing is left for the collector to find afterwards.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _under(folder: str) -> Any:
    """Rows whose path lies inside ``folder``: a prefix that ends at a separator, so /lib/Movies2 is not in it."""
    prefix = folder.rstrip("/") + "/"
    # LIKE narrows the rows; the substr comparison is the exact test, because SQLite's LIKE ignores ASCII case
    # (a scan of /lib/movies must not take in /lib/Movies).
    return M.c.path.like(_like_prefix(prefix), escape="\\") & (func.substr(M.c.path, 1, len(prefix)) == prefix)


def _sum_if(cond: Any) -> Any:
    """``SUM(CASE WHEN cond THEN 1 ELSE 0 END)``, portable across SQLite and PostgreSQL."""
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


def _record_values(r: MediaRecord, now: float) -> dict[str, Any]:
    return {"root": r.root, **_scan_values(r.size_bytes, r.mtime_ns, r.probe, r.decision, now)}


def _scan_values(size_bytes: int, mtime_ns: int, probe: ProbeResult, decision: Decision, now: float) -> dict[str, Any]:
    """The columns a scan (or a finished transcode) writes: the file's stat, its probe and the rules' verdict."""
    return {
        "size_bytes": size_bytes,
        "mtime_ns": mtime_ns,
        **probe_columns(probe),
        "probed_at": now,
        "should_transcode": decision.should_transcode,
        "reason": decision.reason,
        "priority": decision.priority,
        "est_savings_pct": decision.est_savings_pct,
        "missing": False,
        "updated_at": now,
    }


def _filtered(query: Any, flt: MediaFilter) -> Any:
    if not flt.include_missing:
        query = query.where(M.c.missing.is_(False))
    if flt.needs_transcoding_only:
        query = query.where(M.c.should_transcode.is_(True))
    if flt.search:
        pattern = like_contains(flt.search)
        query = query.where(or_(M.c.path.ilike(pattern, escape="\\"), M.c.reason.ilike(pattern, escape="\\")))
    return query


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
