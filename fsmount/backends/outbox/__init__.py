"""The outbox: a folder where closing (or renaming into) a ``*.eml`` file sends it by SMTP.

What the user sees (the root of an ``smtp``/``smtps`` account):

- ``NAME.eml`` — a message that is queued, being retried, failed, or was refused. Only names
  ending in ``.eml`` are taken, so editors' temporary and swap files are never sent: every
  other name is an ordinary local file (kept under the state dir, never sent).
- ``NAME.eml.status`` — read-only text next to each message: status (``queued``,
  ``sending``, ``retrying``, ``sent``, ``failed``, ``refused``, ``may-have-been-sent``), when
  it leaves, the last server reply, the next retry time and each recipient's fate. The same
  facts are extended attributes of the message: ``user.outbox.status``,
  ``user.outbox.last_reply``, ``user.outbox.next_retry`` (ISO 8601 UTC, empty when none),
  ``user.outbox.recipients`` (one ``address: state`` per line). Setting ``user.outbox.send``
  sends a waiting message now, and one that may have been sent, again.
- ``sent/`` — copies of sent messages when no IMAP Sent folder is linked.

A sent message leaves the outbox (into the linked IMAP account's Sent folder, flagged
``\\Seen``, or into ``sent/``). A message some recipients refused for good stays, ``failed``,
after its copy was filed, so the user sees who did not get it.

Guarantees: ``commit`` (the VFS calls it inside ``close()``) validates the message and makes
it durable in the queue (``queue``) before returning, so a successful ``close()`` means
"will be sent", across crashes and remounts. A message that cannot be sent as written is
kept under its name with status ``refused`` and the reason, and ``close()`` fails with
``EINVAL``; nothing is sent.

Sending happens in ``run`` — the mount starts it in its nursery::

    await nursery.start(backend.run)

A message is first tried ``send_delay`` seconds after it was last saved or renamed (an
editor's successive saves replace it meanwhile, so one message leaves, with the final text).
It resends what is pending at startup (a later mount after ``kill -9`` delivers), sends in
worker threads (at most ``connections`` at once), retries temporary failures from
``retry_first`` seconds, doubling up to ``retry_max``, and gives up after ``max_lifetime``.
After a crash during an attempt, a message whose Message-ID is already in the linked Sent
folder is not sent again.

Never twice: just before the final "." of DATA the record says so durably (``final_dot``).
When the answer to that dot is lost, or a restart finds the record in that state, the
message becomes ``may-have-been-sent`` (unless the linked Sent folder holds it: then it
counts as sent) and is sent again only when the user asks. ``flush_queue()`` waits until
nothing is left to try (tests).
"""
from __future__ import annotations

import os

from ...config import Account
from ...credentials import Secret
from .. import Environment
from ..base import Capabilities
from .filing import OutboxFiling
from .folder import OutboxFolder
from .sender import OutboxSender
from .state import is_message_name

__all__ = ["OutboxBackend", "create", "is_message_name"]


def create(account: Account, secret: Secret, env: Environment) -> OutboxBackend:
    return OutboxBackend(account, secret, env)


class OutboxBackend(OutboxFolder, OutboxSender, OutboxFiling):
    capabilities = Capabilities(
        ranged_read=True, write=True, overwrite=True, remove=True, rename=True, xattrs=True,
        set_mode=True, set_mtime=True,  # kept for plain files; a no-op on messages (cp -p, rsync)
        metadata_ttl=0.05,  # the sender changes the listing; ``changed`` makes re-checks free
        coupled_names=True,  # NAME.eml.status comes and goes with NAME.eml
    )

    async def aclose(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


