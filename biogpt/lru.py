"""One keyed cache for everything the server builds once and keeps a while: loaded models
(biogpt.serving) and attention analyses (biogpt.interpret).

Two rules make it fit both. A missing key is built once however many threads ask at the same
time (a per-key lock: the others wait for that build and get its value). And entries leave
least recently used first while the cache is over its bounds (a count, and bytes as `size`
measures them), except the newest ones a caller asks to keep: the value in front of the user
keeps answering even if alone it is over the bound.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from typing import Callable, Generic, Hashable, Iterator, TypeVar

Value = TypeVar("Value")


class BuildOnceLRU(Generic[Value]):
    """A thread-safe LRU whose `get_or_build` runs the builder once per missing key.

    `max_bytes` may be a callable, for a bound that is known only once a device is chosen.
    `size(value)` is asked again at every trim, so values that grow (an analysis memoising its
    views) are counted as they are now. `on_evict(value)` runs for each dropped value, outside
    the lock; `after_evict()` once after a trim that dropped any.
    """

    def __init__(
        self,
        *,
        max_entries: int | None = None,
        max_bytes: int | Callable[[], int] | None = None,
        size: Callable[[Value], int] = lambda value: 0,
        on_evict: Callable[[Value], None] | None = None,
        after_evict: Callable[[], None] | None = None,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.size = size
        self.on_evict = on_evict
        self.after_evict = after_evict
        self._entries: OrderedDict[Hashable, Value] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[Hashable, threading.Lock] = {}
        self._reserved = 0  # bytes promised to builds in progress (see `reserve`)

    # ----- reading ------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._entries)

    def values(self) -> list[Value]:
        with self._lock:
            return list(self._entries.values())

    def items(self) -> list[tuple[Hashable, Value]]:
        with self._lock:
            return list(self._entries.items())

    @property
    def nbytes(self) -> int:
        """What the entries hold now, as `size` counts it."""
        return sum(self.size(value) for value in self.values())

    def byte_bound(self) -> int | None:
        return self.max_bytes() if callable(self.max_bytes) else self.max_bytes

    def get(self, key: Hashable) -> Value | None:
        """The cached value (now the most recently used), or None; never builds."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    # ----- building -----------------------------------------------------------------------

    def get_or_build(self, key: Hashable, build: Callable[[], Value]) -> Value:
        """The cached value, or `build()` run once however many callers ask at the same time;
        if the build raises, every waiting caller tries again (nothing is cached)."""
        value = self.get(key)
        if value is not None:
            return value
        with self._lock:
            lock = self._building.setdefault(key, threading.Lock())
        with lock:
            value = self.get(key)  # built by the caller this one waited for
            if value is not None:
                return value
            try:
                value = build()
            except BaseException:
                with self._lock:
                    self._building.pop(key, None)
                raise
            with self._lock:  # stored and unmarked at once: a caller in between would build it again
                self._entries[key] = value
                self._building.pop(key, None)
            self.trim(keep=1)
            return value

    @contextlib.contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Count `nbytes` against the byte bound while a build runs, after making room for them
        (every entry may go), so that two loads at once cannot both fit only on paper."""
        with self._lock:
            self._reserved += nbytes
        self.trim(keep=0)
        try:
            yield
        finally:
            with self._lock:
                self._reserved -= nbytes

    # ----- dropping -----------------------------------------------------------------------

    def trim(self, keep: int = 1) -> None:
        """Drop least recently used entries, never the `keep` newest, while the count or the
        bytes (entries plus reservations) are over their bounds."""
        bound = self.byte_bound()
        # Sizes are read outside the lock: a value may take its own lock to count itself.
        # One snapshot: keys and values read under two locks could pair a key with another's value.
        entries = self.items() if bound is not None else []
        sizes = {key: self.size(value) for key, value in entries}
        del entries
        with self._lock:
            held = sum(sizes.get(key, 0) for key in self._entries) + self._reserved
            dropped = []
            while len(self._entries) > keep and (
                (self.max_entries is not None and len(self._entries) > self.max_entries)
                or (bound is not None and held > bound)
            ):
                key, value = self._entries.popitem(last=False)
                held -= sizes.get(key, 0)
                dropped.append(value)
        for value in dropped:  # callers holding a dropped value finish with it normally
            if self.on_evict is not None:
                self.on_evict(value)
        if dropped:
            del dropped, value
            if self.after_evict is not None:
                self.after_evict()

    def clear(self) -> None:
        with self._lock:
            dropped = list(self._entries.values())
            self._entries.clear()
        for value in dropped:
            if self.on_evict is not None:
                self.on_evict(value)
