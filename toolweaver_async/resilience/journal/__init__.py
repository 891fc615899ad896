"""The outage journal (hinted handoff): writes that could not reach Redis, replayed when it is back.

While Redis is unreachable, every ``set``, ``delete``, ``invalidate`` and ``clear`` it missed is
kept here, latest wins: one operation per key (a newer write replaces an older one), an
invalidation of a namespace drops that namespace's earlier operations, a clear drops everything.
The journal keeps them in the order they happened and hands them back in that order for replay.

Until a key's operation has landed, Redis must not serve that key (it may hold an older value):
:meth:`OutageJournal.covers` answers that question with a dict lookup, and nothing at all while
the journal is empty.

**Bounded.** At most ``max_entries`` operations. When full, the namespace with the most journaled
keys is *poisoned*: its key operations are dropped and replaced by one invalidation of the
namespace, so Redis forgets every older value of it instead of serving one (a miss is always
safe, a stale hit is not). When only namespace invalidations are left, they collapse into one
clear; while a clear is pending, nothing else needs recording (Redis will hold nothing older).

**Overtaken.** Once the store is back, a new write of a journaled key goes straight to it
instead of queueing behind the replay (the journaled operation is held back, then forgotten once
the newer write has landed), unless an invalidation or clear of its namespace is pending or an
older value of the key may still be on its way there (see :mod:`.handoff`).

Layout: :mod:`.records` (the operations and their framing), :mod:`.ledger` (the rules above, no
I/O), :mod:`.handoff` (replay batches and overtaking writes), :mod:`.log` (one slot file per
process), :mod:`.outage` (the ledger kept in that log).

**Persistent.** With a folder, the journal is an append-only log of msgpack records, each framed
by its length and CRC32, beside the file store (not inside its prefix folder, which ``clear``
empties). Records are written by one worker-thread hop per 10 ms of changes, never on the event
loop; a process that dies loses at most the records of its last 10 ms, and a torn tail is
ignored on load. The log is compacted (rewritten to the live operations, also in the worker
thread) when it grows past twice their size, and emptied when the journal drains. Each process
claims one slot file with an exclusive ``flock``, so processes sharing a cache folder keep
separate journals; opening also adopts the journals dead processes left in the other slots.

**Restarts.** A set loaded from disk is replayed as a *delete*: another process may have written
a newer value to Redis while this one was down, and a delete can never bring back an older value.
The written value itself is still in the file store beside the journal, and reads copy it back
into Redis. Loaded operations are then all removals, which commute, so journals of several dead
processes merge in any order.
"""

from .handoff import ReplayLedger
from .ledger import JournalLedger
from .log import SLOTS
from .outage import OutageJournal
from .records import JournalClear, JournalDelete, JournalInvalidate, JournalOp, JournalSet

__all__ = [
    "SLOTS",
    "JournalClear",
    "JournalDelete",
    "JournalInvalidate",
    "JournalLedger",
    "JournalOp",
    "JournalSet",
    "OutageJournal",
    "ReplayLedger",
]
