"""The pyfuse3 adapter: thin handlers over the Tree, one error wrapper around each.

pyfuse3 turns only ``FUSEError`` into an error reply; any other exception would end
``pyfuse3.main()`` and the whole mount. So every handler maps ``FsError`` to its errno, lets
``trio.Cancelled`` pass, and logs anything else once with its traceback as ``EIO``.
"""
from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyfuse3
import trio

from ..backends.base import Entry, Path
from ..cache.spool import Spool
from ..errors import (
    AlreadyExists, FsError, InvalidArgument, IsADirectory, NoData, NotFound, NotPermitted,
    ReadOnly, Transient, Unsupported,
)
from . import attrs, names
from .handles import DirHandle, FileHandle, HandleTable
from .inodes import MAX_INODES, InodeTable, Node
from .tree import Tree

log = logging.getLogger(__name__)
XATTR_PREFIX = "user."
DIRECT_IO_MIN = 1 << 20
SPACE_BLOCK = 4096  # the unit of statfs counts


def fs_op(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def wrapper(self: Operations, *args: Any) -> Any:
        try:
            return await method(self, *args)
        except pyfuse3.FUSEError:
            raise
        except FsError as e:
            log.debug("%s%r: %s (%s)", method.__name__, args[:2], type(e).__name__, e)
            raise pyfuse3.FUSEError(e.errno) from None
        except trio.Cancelled:
            raise
        except OSError as e:  # local spool/cache I/O
            log.warning("%s: local I/O error: %s", method.__name__, e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("unexpected error in %s%r", method.__name__, args[:2])
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def _existing(path: os.PathLike[str]) -> str:
    """``path`` or its nearest existing parent (the cache may have been removed by hand)."""
    p = os.path.abspath(path)
    while not os.path.isdir(p) and p != "/":
        p = os.path.dirname(p)
    return p


def _outcome_unknown(error: BaseException) -> bool:
    """Whether, after a change failed with ``error``, the server may hold something other
    than what the kernel was told (a refusal changed nothing; ENOENT says the name is gone)."""
    return (not isinstance(error, FsError) or type(error) is FsError
            or isinstance(error, (Transient, NotFound)))


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, tree: Tree, spool: Spool, owner: attrs.Owner,
                 max_inodes: int = MAX_INODES) -> None:
        super().__init__()
        self.tree = tree
        self.spool = spool
        self.owner = owner
        self.inodes = InodeTable(Entry("", True, mtime=time.time()), max_inodes,
                                 evict=self._kernel_forget)
        self.handles = HandleTable()
        for name, backend in tree.accounts.items():
            backend.on_fetched_ahead = functools.partial(
                self._into_page_cache, () if tree.single is not None else (name,))

    # -- helpers -------------------------------------------------------------------------

    def _node(self, inode: int) -> Node:
        node = self.inodes.get(inode)
        if node is None:
            raise NotFound(f"inode {inode}")
        return node

    def _attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        return attrs.make(node.inode, node.entry, self.tree.capabilities(node.vpath), self.owner,
                          self.tree.trust(node.vpath))

    def _kernel_forget(self, parent: Node, node: Node) -> None:
        """Ask the kernel to drop its entry for ``node``: it answered from it for as long as
        the cache trusted the listing, and must not after a change whose outcome is unknown
        (or when the inode table is full). Queued to pyfuse3's own thread: the kernel may hold
        the directory locked for a request this thread is to answer."""
        name = node.vpath[-1] if self.tree.is_top(parent.vpath) else names.local_name(node.vpath[-1])
        pyfuse3.invalidate_entry_async(parent.inode, names.to_fs(name), ignore_enoent=True)

    async def _let_kernel_forget(self) -> None:
        """Hold a walk back while the kernel forgets what it was asked to (the trio thread
        idle, pyfuse3's notifying thread gets the GIL), so that the inode table stays near its
        limit however fast the walk; given up once no FORGET has come for a while (files in
        use are not forgotten)."""
        waited, size = 0, len(self.inodes)
        while self.inodes.crowded() and waited < 20:
            await trio.sleep(0.005)
            waited = 0 if len(self.inodes) < size else waited + 1
            size = min(size, len(self.inodes))

    def _kernel_forget_path(self, vpath: Path) -> None:
        parent, node = self.inodes.at(vpath[:-1]), self.inodes.at(vpath)
        if vpath and parent is not None and node is not None:
            self._kernel_forget(parent, node)

    @contextmanager
    def _forgotten_if_unknown(self, *vpaths: Path) -> Iterator[None]:
        """A change whose outcome is unknown (done or not on the server): the kernel must
        ask about these names again."""
        try:
            yield
        except BaseException as e:
            if _outcome_unknown(e):
                for vpath in vpaths:
                    self._kernel_forget_path(vpath)
            raise

    async def _child(self, parent: Node, name: str) -> tuple[Path, Entry]:
        """The remote path and entry behind the local ``name`` in ``parent``."""
        vpath = parent.vpath + (name,)
        try:
            return vpath, await self.tree.stat(vpath)
        except NotFound:
            if not names.may_be_escaped(name):
                raise
        for entry in await self.tree.list(parent.vpath):
            if names.local_name(entry.name) == name:
                return parent.vpath + (entry.name,), entry
        raise NotFound(name)

    def _writable(self, vpath: Path, what: str) -> None:
        if self.owner.readonly:
            raise ReadOnly("mounted read-only")
        caps = self.tree.capabilities(vpath)
        if not caps.write:
            raise ReadOnly(f"{what}: this folder is read-only")

    def _into_page_cache(self, prefix: Path, path: Path, entry: Entry, data: bytes) -> None:
        """A scan fetched this file ahead: its bytes go to the kernel's page cache as well,
        and its next open keeps them, so the reader's read() costs no request at all (a cold
        scan then costs about what a warm one does).

        Only for a file the kernel knows, at the size it was told, that nobody has open:
        a read in flight holds the file's pages locked, and storing into them from this
        thread would wait for ever on the reply this thread is to send.
        """
        node = self.inodes.at(prefix + path)
        if (node is None or node.lookups <= 0 or node.handles or node.entry.size != len(data)
                or len(data) >= DIRECT_IO_MIN or node.entry.identity != entry.identity):
            return
        try:
            pyfuse3.notify_store(node.inode, 0, data)
        except OSError as e:  # the kernel let go of the inode meanwhile: it reads on open
            log.debug("page cache store of %s: %s", "/".join(node.vpath), e)
            return
        node.cached_identity = entry.identity
        log.debug("%s: in the page cache (%d bytes)", "/".join(node.vpath), len(data))

    # -- names ---------------------------------------------------------------------------

    @fs_op
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        local = names.from_fs(name)
        if local in (".", ".."):
            raise NotFound(local)
        vpath, entry = await self._child(parent, local)
        return self._attrs(self.inodes.ref(vpath, entry))

    @fs_op
    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            self.inodes.forget(inode, count)

    @fs_op
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        writers = self.handles.writers(node)
        if writers:
            return self._attrs_with_size(node, writers[0].size())
        if node.entry.identity != ("pending",):
            node.entry = await self.tree.stat(node.vpath)
        return self._attrs(node)

    def _attrs_with_size(self, node: Node, size: int) -> pyfuse3.EntryAttributes:
        a = self._attrs(node)
        a.st_size = size
        a.st_blocks = (size + 511) // 512
        a.attr_timeout = 0
        return a

    @fs_op
    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        target = self._node(inode).entry.symlink
        if target is None:
            raise InvalidArgument("not a symlink")
        return names.to_fs(target)

    # -- directories ---------------------------------------------------------------------

    @fs_op
    async def opendir(self, inode: int, ctx: Any = None) -> int:
        node = self._node(inode)
        return self.handles.add(DirHandle(node))

    @fs_op
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self.handles[fh]
        assert isinstance(handle, DirHandle)
        if handle.listing is None or start_id == 0:
            handle.start(await self.tree.list_growing(handle.node.vpath))
            trust = None if self.tree.is_top(handle.node.vpath) else self.tree.trust(handle.node.vpath + ("",))
            handle.trusted_until = None if trust is None else time.monotonic() + trust
        if not await handle.names_beyond(start_id):
            return
        if self.inodes.crowded():
            await self._let_kernel_forget()
        base = handle.node.vpath
        top = self.tree.is_top(base)  # account folders: each has its own capabilities
        caps = None if top else self.tree.capabilities(base + ("",))
        # as long as the cache trusted the listing this handle took (not a newer one)
        until = handle.trusted_until
        trust = None if until is None else max(0.0, until - time.monotonic())
        at, ref, make, owner = self.inodes.at, self.inodes.ref, attrs.make, self.owner
        listed = handle.names
        for i in range(start_id, len(listed)):  # runs once per entry of a 10k folder: kept lean
            local, entry = listed[i]
            vpath = base + (entry.name,)
            known = at(vpath)
            writers = self.handles.writers(known) if known is not None and known.handles else None
            if writers:
                node = ref(vpath, known.entry)  # type: ignore[union-attr]
                a = self._attrs_with_size(node, writers[0].size())
            else:
                node = ref(vpath, entry)
                a = make(node.inode, entry, caps or self.tree.capabilities(vpath), owner, trust)
            if not pyfuse3.readdir_reply(token, local.encode("utf-8", "surrogateescape"), a, i + 1):
                self.inodes.forget(node.inode, 1)
                break

    @fs_op
    async def releasedir(self, fh: int) -> None:
        self.inodes.release(self.handles.pop(fh).node)

    @fs_op
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        vpath = parent.vpath + (names.from_fs(name),)
        if self.tree.is_top(parent.vpath):
            raise ReadOnly("the mount root holds one folder per account")
        backend, path = self.tree.route(vpath)
        if self.owner.readonly or not backend.capabilities.mkdir:
            raise ReadOnly("cannot create folders here")
        await backend.mkdir(path)
        entry = await self.tree.stat(vpath)
        return self._attrs(self.inodes.ref(vpath, entry))

    @fs_op
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        vpath, entry = await self._child(self._node(parent_inode), names.from_fs(name))
        backend, path = self.tree.route(vpath)
        if self.owner.readonly or not backend.capabilities.mkdir:
            raise ReadOnly("cannot remove folders here")
        with self._forgotten_if_unknown(vpath):
            await backend.rmdir(path)
        self.inodes.unlink(vpath)

    @fs_op
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        vpath, entry = await self._child(self._node(parent_inode), names.from_fs(name))
        backend, path = self.tree.route(vpath)
        if self.owner.readonly:
            raise ReadOnly("mounted read-only")
        if not backend.capabilities.remove:
            raise (NotPermitted if backend.capabilities.write else ReadOnly)("cannot remove here")
        with self._forgotten_if_unknown(vpath):
            await backend.remove(path)
        self.inodes.unlink(vpath)

    @fs_op
    async def rename(self, parent_old: int, name_old: bytes, parent_new: int, name_new: bytes,
                     flags: int, ctx: Any) -> None:
        old, _ = await self._child(self._node(parent_old), names.from_fs(name_old))
        new = self._node(parent_new).vpath + (names.from_fs(name_new),)
        self.tree.same_account(old, new)
        if flags & ~pyfuse3.RENAME_NOREPLACE:
            raise InvalidArgument("rename flags not supported")
        if flags & pyfuse3.RENAME_NOREPLACE:
            try:
                await self.tree.stat(new)
            except NotFound:
                pass
            else:
                raise AlreadyExists(new[-1])
        backend, path = self.tree.route(old)
        if self.owner.readonly:
            raise ReadOnly("mounted read-only")
        if not backend.capabilities.rename:
            raise (NotPermitted if backend.capabilities.write else ReadOnly)("cannot rename here")
        for handle in self._writers_below(old):
            await self._commit(handle)
        with self._forgotten_if_unknown(old, new):
            await backend.rename(path, self.tree.route(new)[1])
        self.inodes.move(old, new)

    def _writers_below(self, vpath: Path) -> list[FileHandle]:
        n = len(vpath)
        return [h for h in self.handles.all_files() if h.writable and h.node.vpath[:n] == vpath]

    # -- files ---------------------------------------------------------------------------

    @fs_op
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.entry.is_dir:
            raise IsADirectory(node.vpath[-1] if node.vpath else "/")
        backend, path = self.tree.route(node.vpath)
        handle = FileHandle(node)
        if flags & (os.O_WRONLY | os.O_RDWR):
            self._writable(node.vpath, "writing")
            if not backend.capabilities.overwrite:
                raise NotPermitted("files here cannot be changed once written")
            backend.ensure_changeable(path)
            await self._start_spool(handle, truncate=bool(flags & os.O_TRUNC))
            info = pyfuse3.FileInfo(fh=self.handles.add(handle), direct_io=False, keep_cache=False)
            node.cached_identity = None
            return info
        told = node.entry.size  # the size the kernel has
        entry = await self.tree.stat(node.vpath)
        if entry.size == told:
            node.entry = entry  # else it stays what the kernel was told, until a getattr
        handle.reader = backend.open_reader(path, entry)
        # Large files bypass the page cache: the kernel then sends reads as large as the
        # reader asks (up to 1 MiB) instead of 128 KiB read-ahead pages, and our disk cache
        # serves re-reads. A size that is only a hint must bypass it too, or the kernel
        # would cut reads at the size it was told.
        direct = not entry.size_exact or (entry.size or 0) >= DIRECT_IO_MIN or entry.size != told
        keep = node.cached_identity == entry.identity
        node.cached_identity = entry.identity
        return pyfuse3.FileInfo(fh=self.handles.add(handle), keep_cache=keep, direct_io=direct)

    async def _start_spool(self, handle: FileHandle, truncate: bool) -> None:
        """Fill a spool with the current content (unless truncating) before the first write."""
        node = handle.node
        handle.content = content = self.spool.new()
        handle.replacing = node.entry if node.entry.identity != ("pending",) else None
        if truncate:
            handle.dirty = True
            return
        if handle.replacing is None or not handle.replacing.size:
            return
        backend, path = self.tree.route(node.vpath)
        reader = backend.open_reader(path, node.entry)
        try:
            offset, chunk = 0, 1 << 20
            while True:
                data = await reader.read(offset, chunk)
                if not data:
                    break
                if content.write(offset, data) != len(data):  # a spool disk that filled up
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                offset += len(data)
        except BaseException:
            handle.close()  # the open fails: no handle will ever release this spool
            raise
        finally:
            reader.close()

    @fs_op
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        parent = self._node(parent_inode)
        vpath = parent.vpath + (names.from_fs(name),)
        if self.tree.is_top(parent.vpath):
            raise ReadOnly("the mount root holds one folder per account")
        self._writable(vpath, "creating files")
        backend, path = self.tree.route(vpath)
        await backend.ensure_absent(path)
        entry = Entry(vpath[-1], False, 0, time.time(), identity=("pending",), mode=mode & 0o7777)
        node = self.inodes.ref(vpath, entry)
        handle = FileHandle(node)
        await self._start_spool(handle, truncate=True)
        backend.add_pending(path, entry)
        info = pyfuse3.FileInfo(fh=self.handles.add(handle), direct_io=False)
        a = self._attrs_with_size(node, 0)
        # Valid until the first write (which makes the kernel ask again): the permission
        # check after create and the writer's fstat then cost no round trips.
        a.attr_timeout = attrs.MUTABLE_TIMEOUT
        return info, a

    @fs_op
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.handles[fh]
        assert isinstance(handle, FileHandle)
        if handle.content is not None:
            return handle.content.read(off, size)
        assert handle.reader is not None
        return await handle.reader.read(off, size)

    @fs_op
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.handles[fh]
        assert isinstance(handle, FileHandle)
        if not handle.writable:
            raise pyfuse3.FUSEError(errno.EBADF)
        return handle.write(off, buf)

    @fs_op
    async def flush(self, fh: int) -> None:
        if not self._writable_anywhere():
            # ENOSYS makes the kernel stop sending FLUSH: with nothing to store at close,
            # a read-only mount (POP3, -o ro) saves one round trip per file closed.
            log.debug("flush: nothing is ever stored on this mount: ENOSYS")
            raise pyfuse3.FUSEError(errno.ENOSYS)
        handle = self.handles[fh]
        assert isinstance(handle, FileHandle)
        if handle.writable:
            await self._commit(handle)

    def _writable_anywhere(self) -> bool:
        return not self.owner.readonly and any(
            b.capabilities.write or b.capabilities.overwrite for b in self.tree.accounts.values())

    @fs_op
    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self.handles[fh]
        if isinstance(handle, FileHandle):
            await self._commit(handle)

    async def _commit(self, handle: FileHandle) -> None:
        """Upload a dirty spool; the error (if any) is what close() returns. A poisoned
        writer (a write of it failed) is never uploaded: its error is returned again."""
        async with handle.lock:
            handle.check()
            if not handle.dirty or handle.content is None:
                return
            node = handle.node
            backend, path = self.tree.route(node.vpath)
            try:
                entry = await backend.commit(path, handle.content, handle.replacing)
            except Exception:  # returned to close() or fsync() as its errno
                handle.told = True
                raise
            handle.dirty = False
            backend.drop_pending(path)
            if entry.name != path[-1]:  # the service chose the name (a message in a mailbox)
                self.inodes.unlink(node.vpath)
            node.entry = handle.replacing = entry

    @fs_op
    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh)
        assert isinstance(handle, FileHandle)
        if handle.dirty:  # close() already returned the commit's (or a write's) error
            log.info("%s: closed with changes that were not stored (%s)", "/".join(handle.node.vpath),
                     "a write failed" if handle.failed is not None else "the commit failed")
            if handle.replacing is None:
                self.tree.route(handle.node.vpath)[0].drop_pending(self.tree.route(handle.node.vpath)[1])
        handle.close()
        self.inodes.release(handle.node)

    @fs_op
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        backend, path = self.tree.route(node.vpath)
        if fields.update_size:
            await self._truncate(node, fh, attr.st_size)
        if fields.update_mode and stat.S_IMODE(attr.st_mode) != stat.S_IMODE(self._attrs(node).st_mode):
            self._writable(node.vpath, "chmod")
            for handle in self.handles.writers(node):
                await self._commit(handle)
            if backend.capabilities.set_mode:
                await backend.set_mode(path, stat.S_IMODE(attr.st_mode))
            elif not backend.capabilities.immutable:
                raise Unsupported("this server cannot change permissions")
            # messages and articles have no permissions to keep: cp -p, rsync may go on
        if fields.update_mtime:
            await self._set_mtime(node, attr.st_mtime_ns / 1e9)
        if fields.update_uid and attr.st_uid != self.owner.uid or fields.update_gid and attr.st_gid != self.owner.gid:
            raise NotPermitted("files here have no owner to change")
        return await self.getattr(inode, ctx)

    async def _truncate(self, node: Node, fh: int | None, size: int) -> None:
        handle = self.handles[fh] if fh is not None else None
        if isinstance(handle, FileHandle) and handle.writable:
            handle.truncate(size)
            return
        writers = self.handles.writers(node)
        if writers:
            writers[0].truncate(size)
            return
        self._writable(node.vpath, "truncate")
        backend, _ = self.tree.route(node.vpath)
        if not backend.capabilities.overwrite:
            raise NotPermitted("files here cannot be changed once written")
        temp = FileHandle(node)
        try:
            await self._start_spool(temp, truncate=size == 0)
            temp.truncate(size)
            await self._commit(temp)
        finally:
            temp.close()

    async def _set_mtime(self, node: Node, mtime: float) -> None:
        writers = self.handles.writers(node)
        for handle in writers:
            await self._commit(handle)
        if abs(mtime - time.time()) < 2 and (writers or node.entry.identity == ("pending",)):
            return  # "now" on a file just written: the server stamped it already
        backend, path = self.tree.route(node.vpath)
        if not backend.capabilities.set_mtime:
            raise Unsupported("this server cannot set modification times")
        self._writable(node.vpath, "touch")
        await backend.set_mtime(path, mtime)

    # -- extended attributes -------------------------------------------------------------

    def _no_xattrs_anywhere(self) -> None:
        """ENOSYS makes the kernel stop asking for good: ``ls -l`` then costs no extra round
        trips per file for its SELinux and ACL probes."""
        if not any(b.capabilities.xattrs for b in self.tree.accounts.values()):
            raise pyfuse3.FUSEError(errno.ENOSYS)

    @fs_op
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        self._no_xattrs_anywhere()
        key = names.from_fs(name)
        if not key.startswith(XATTR_PREFIX):
            # EOPNOTSUPP, not ENODATA: ls -l then stops probing SELinux labels and ACLs
            # for the rest of the mount, instead of two round trips per file listed
            raise Unsupported(f"only {XATTR_PREFIX}* attributes are kept here")
        if self.tree.is_top(self._node(inode).vpath):
            raise NoData(key)
        values = await self._xattrs(inode)
        try:
            return values[key[len(XATTR_PREFIX):]]
        except KeyError:
            raise NoData(key) from None

    @fs_op
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        self._no_xattrs_anywhere()
        if self.tree.is_top(self._node(inode).vpath):
            return []
        backend, path = self.tree.route(self._node(inode).vpath)
        if not backend.capabilities.xattrs:
            return []
        return [names.to_fs(XATTR_PREFIX + k) for k in await backend.xattr_names(path)]

    async def _xattrs(self, inode: int) -> dict[str, bytes]:
        node = self._node(inode)
        backend, path = self.tree.route(node.vpath)
        if not backend.capabilities.xattrs:
            return {}
        return await backend.get_xattrs(path)

    @fs_op
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        self._no_xattrs_anywhere()
        key = names.from_fs(name)
        node = self._node(inode)
        if not key.startswith(XATTR_PREFIX) or self.tree.is_top(node.vpath):
            raise Unsupported(key)
        backend, path = self.tree.route(node.vpath)
        if not backend.capabilities.xattrs:
            raise Unsupported("no extended attributes here")
        if self.owner.readonly:
            raise ReadOnly("mounted read-only")
        await backend.set_xattr(path, key[len(XATTR_PREFIX):], value)

    @fs_op
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        raise Unsupported("extended attributes here are set, not removed")

    # -- the rest ------------------------------------------------------------------------

    @fs_op
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        """What ``df`` shows (fsmount(1), FREE SPACE). No protocol mounted here tells
        a server's size or use, so "used" is 0 and the free space is the one limit that is
        real: a file written through the mount is held in the spool until it is stored, so
        the spool's filesystem bounds what can be written at once. A mount that cannot be
        written shows 0 free. Inode counts are unknown: 0, as btrfs reports them."""
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = SPACE_BLOCK
        s.f_namemax = names.MAX_BYTES
        s.f_files = s.f_ffree = s.f_favail = 0
        free = 0
        if self._writable_anywhere():
            local = os.statvfs(_existing(self.spool.directory))
            free = local.f_bavail * local.f_frsize // SPACE_BLOCK
        s.f_blocks = s.f_bfree = s.f_bavail = free
        return s

    @fs_op
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> None:
        raise NotPermitted("hard links are not supported")

    @fs_op
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> None:
        raise NotPermitted("symbolic links cannot be created here")

    @fs_op
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> None:
        raise NotPermitted("only regular files and folders can be created")

    async def drain(self) -> None:
        """At unmount or a signal: let commits under way finish, and never commit a file still
        open for writing. Its program has not closed (or fsynced) it since its last write, so
        its content may be any prefix of what it means to write; storing that under the file's
        name would replace the server's copy with a torn one. Such a writer is poisoned (its
        later writes and close() fail with EIO) and the server keeps what it had. A writer whose
        last commit failed was told so by close() or fsync() (its release may still be on its
        way from the kernel): no warning repeats it."""
        for handle in self.handles.all_files():
            if not handle.writable:
                continue
            async with handle.lock:  # a flush under way is a finished writer: it completes
                unfinished = handle.dirty and handle.failed is None and not handle.told
                handle.poison(errno.EIO)
            if unfinished:
                log.warning("%s: still open for writing at unmount: not stored (the server "
                            "keeps its previous version)", "/".join(handle.node.vpath))
