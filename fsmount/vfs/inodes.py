"""Inode numbers for paths, with the kernel's lookup counts.

A node lives while the kernel holds a reference (lookup count) or a handle is open; then
``forget`` lets it go, so browsing 100,000 messages does not grow memory for ever.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyfuse3

from ..backends.base import Entry, Path


@dataclass(eq=False, slots=True)
class Node:
    inode: int
    vpath: Path
    entry: Entry
    lookups: int = 0
    handles: int = 0
    cached_identity: tuple | None = None  # identity whose bytes the kernel page cache holds


class InodeTable:
    def __init__(self, root: Entry) -> None:
        self._next = pyfuse3.ROOT_INODE + 1
        root_node = Node(pyfuse3.ROOT_INODE, (), root, lookups=1)
        self._by_inode: dict[int, Node] = {root_node.inode: root_node}
        self._by_path: dict[Path, Node] = {(): root_node}

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
        else:
            node.entry = entry
        node.lookups += 1
        return node

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
            if self._by_path.get(node.vpath) is node:
                del self._by_path[node.vpath]

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
