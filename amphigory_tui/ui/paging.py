"""A paged list: every id in display order (cheap, one query) and a bounded cache of the loaded items.

The Queue and Scan tables render only the rows on screen; the items behind those rows are fetched by id in a
thread worker and kept here. Looking up row 73,000 is an index into an ``array`` of ids, so scrolling anywhere in
100,000 jobs costs one small by-id query at most.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class PagedRows(Generic[T]):
    """Ids in display order plus the loaded items, found by id."""

    def __init__(self, key: Callable[[T], int], *, max_cached: int = 4000) -> None:
        self._key = key
        self._ids: array[int] = array("q")
        self._items: dict[int, T] = {}
        self._pending: set[int] = set()
        self.max_cached = max_cached
        self.generation = 0
        """Bumped whenever the id list is replaced, so late results of an older list are recognised."""
        self._positions: dict[int, int] | None = None

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> Sequence[int]:
        """Every id, in display order."""
        return self._ids

    def set_ids(self, ids: Iterable[int]) -> None:
        """Replace the id list (a new filter or a structural change); cached items stay valid by id."""
        self._ids = ids if isinstance(ids, array) else array("q", ids)
        self._pending.clear()
        self._positions = None
        self.generation += 1

    def id_at(self, index: int) -> int | None:
        """The id shown at ``index``, if any."""
        return self._ids[index] if 0 <= index < len(self._ids) else None

    def item_at(self, index: int) -> T | None:
        """The loaded item shown at ``index`` (None while it is still loading)."""
        item_id = self.id_at(index)
        return None if item_id is None else self._items.get(item_id)

    def get(self, item_id: int) -> T | None:
        """A loaded item by id."""
        return self._items.get(item_id)

    def index_of(self, item_id: int) -> int | None:
        """Where ``item_id`` is in the display order (a linear search: for one-off lookups)."""
        if self._positions is not None:
            return self._positions.get(item_id)
        try:
            return self._ids.index(item_id)
        except ValueError:
            return None

    def position(self, item_id: int) -> int | None:
        """Where ``item_id`` is, from a map built once per id list (for lookups several times a second)."""
        if self._positions is None:
            self._positions = {item_id: n for n, item_id in enumerate(self._ids)}
        return self._positions.get(item_id)

    def missing_any(self, start: int, stop: int) -> bool:
        """Whether any id in ``[start, stop)`` is neither loaded nor being loaded."""
        start, stop = max(start, 0), min(stop, len(self._ids))
        items, pending = self._items, self._pending
        return any(i not in items and i not in pending for i in self._ids[start:stop])

    def missing(self, start: int, stop: int) -> list[int]:
        """Ids in ``[start, stop)`` that are neither loaded nor being loaded; marks them as being loaded."""
        start, stop = max(start, 0), min(stop, len(self._ids))
        wanted = [i for i in self._ids[start:stop] if i not in self._items and i not in self._pending]
        self._pending.update(wanted)
        return wanted

    def to_fetch(self, start: int, stop: int) -> list[int]:
        """Ids to load so a few screens around ``[start, stop)`` are ready; none while the loaded margin suffices.

        Loading ahead in one query, and only when the margin runs low, lets scrolling and paging mostly find their
        rows already there.
        """
        height = max(stop - start, 10)
        if not self.missing_any(start - height, stop + height):
            return []
        return self.missing(start - 2 * height, stop + 4 * height)

    @staticmethod
    def keep_around(start: int, stop: int) -> tuple[int, int]:
        """The window of rows worth keeping cached around the visible ``[start, stop)``."""
        margin = max(stop - start, 10) * 3
        return start - margin, stop + margin

    def put(self, items: Iterable[T], *, keep: tuple[int, int] | None = None) -> None:
        """Store loaded items; when the cache is over its bound, drop items far from ``keep`` (a row range)."""
        for item in items:
            item_id = self._key(item)
            self._items[item_id] = item
            self._pending.discard(item_id)
        if len(self._items) > self.max_cached and keep is not None:
            self._evict(*keep)

    def forget_pending(self, ids: Iterable[int]) -> None:
        """Ids whose load failed or was superseded: they may be requested again."""
        self._pending.difference_update(ids)

    def update(self, item: T) -> bool:
        """Replace a loaded item with a fresher copy; False when it was not loaded."""
        item_id = self._key(item)
        if item_id in self._items:
            self._items[item_id] = item
            return True
        return False

    def invalidate(self) -> None:
        """Drop every loaded item (they will be fetched again when shown)."""
        self._items.clear()
        self._pending.clear()

    def _evict(self, start: int, stop: int) -> None:
        keep = set(self._ids[max(start, 0) : max(stop, 0)])
        for item_id in [i for i in self._items if i not in keep]:
            del self._items[item_id]
