"""Inode numbers for paths, with the kernel's lookup counts.

A node lives while the kernel holds a reference (lookup count) or a handle is open; then
``forget`` lets it go. The kernel gives an inode back only under memory pressure, so after a
walk of a big tree it would hold every entry it saw, and fsmount a node for each (a few hundred
bytes). Past ``limit`` nodes the table asks the kernel to drop the files looked up first
(``evict``: one directory entry invalidated each); its FORGET then frees their nodes.
Directories are never asked: a shell's working directory invalidated would make getcwd() fail.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import pyfuse3

from ..backends.base import Entry, Path

log = logging.getLogger(__name__)

#: Default of the ``max_inodes`` setting.
MAX_INODES = 100_000


class Node:
    __slots__ = ("inode", "vpath", "entry", "lookups", "handles", "cached_identity")

    def __init__(self, inode: int, vpath: Path, entry: Entry, lookups: int = 0) -> None:
        self.inode = inode
        self.vpath = vpath
        self.entry = entry
        self.lookups = lookups
        self.handles = 0
        self.cached_identity: tuple | None = None  # identity whose bytes the kernel page cache holds


class InodeTable:
    def __init__(self, root: Entry, limit: int = MAX_INODES,
                 evict: Callable[[Node, Node], None] | None = None) -> None:
        self._next = pyfuse3.ROOT_INODE + 1
        root_node = Node(pyfuse3.ROOT_INODE, (), root, lookups=1)
        self._by_inode: dict[int, Node] = {root_node.inode: root_node}
        self._by_path: dict[Path, Node] = {(): root_node}
        self.limit = max(1, limit)
        self._evict = evict
        self._high = self.limit  # shrink when the table grows past this
        self._asked: set[int] = set()  # asked to be forgotten, FORGET not received yet

    def __len__(self) -> int:
        return len(self._by_inode)

    def __getitem__(self, inode: int) -> Node:
        return self._by_inode[inode]

    def get(self, inode: int) -> Node | None:
        return self._by_inode.get(inode)

    def at(self, vpath: Path) -> Node | None:
        return self._by_path.get(vpath)

    def ref(self, vpath: Path, entry: Entry) -> Node:
        """The node for ``vpath`` (made if new), its lookup count raised by one."""
        node = self._by_path.get(vpath)
        if node is None:
            node = Node(self._next, vpath, entry)
            self._next += 1
            self._by_inode[node.inode] = node
            self._by_path[vpath] = node
            if len(self._by_inode) > self._high and self._evict is not None:
                self._shrink()
        else:
            node.entry = entry
        node.lookups += 1
        return node

    def _shrink(self) -> None:
        """Ask the kernel to forget the oldest files, down to 80 % of the limit. Until their
        FORGETs arrive the table stays big: ask again only once it grew by another tenth."""
        excess = wanted = len(self._by_inode) - self.limit * 8 // 10
        asked, by_path = self._asked, self._by_path
        for node in self._by_inode.values():  # oldest first; evict() changes nothing here
            if excess <= 0:
                break
            if node.entry.is_dir or node.handles or node.inode in asked or not node.vpath:
                continue
            parent = by_path.get(node.vpath[:-1])
            if parent is None or by_path.get(node.vpath) is not node:
                continue
            asked.add(node.inode)
            self._evict(parent, node)  # type: ignore[misc]
            excess -= 1
        self._high = len(self._by_inode) + max(1, self.limit // 10)
        log.debug("%d inodes (limit %d): the kernel is asked to forget %d files", len(self._by_inode),
                  self.limit, wanted - excess)

    def crowded(self) -> bool:
        """Well past the limit with forgets still to come: pyfuse3's notifying thread needs
        the GIL for each entry, so while the trio thread stays busy it falls behind a walk."""
        return len(self._by_inode) > self.limit + self.limit // 2 and bool(self._asked)

    def forget(self, inode: int, count: int) -> None:
        node = self._by_inode.get(inode)
        if node is None or inode == pyfuse3.ROOT_INODE:
            return
        node.lookups -= count
        self._maybe_drop(node)

    def release(self, node: Node) -> None:
        node.handles -= 1
        self._maybe_drop(node)

    def _maybe_drop(self, node: Node) -> None:
        if node.lookups <= 0 and node.handles <= 0:
            del self._by_inode[node.inode]
            self._asked.discard(node.inode)
            if self._by_path.get(node.vpath) is node:
                del self._by_path[node.vpath]
            if len(self._by_inode) <= self.limit:
                self._high = self.limit

    def unlink(self, vpath: Path) -> None:
        """``vpath`` is gone: a later lookup of the same name must make a new node."""
        self._by_path.pop(vpath, None)

    def move(self, old: Path, new: Path) -> None:
        """Re-key the node at ``old`` and everything below it."""
        n = len(old)
        moved = [(p, node) for p, node in self._by_path.items() if p[:n] == old]
        for p, _ in moved:
            del self._by_path[p]
        self._by_path.pop(new, None)
        for p, node in moved:
            node.vpath = new + p[n:]
            self._by_path[node.vpath] = node
