"""Deliberately broken variants of the product, for showing that the simulator finds bugs.

Test-only (`quorumdb sim --broken NAME`, and the tests): each replaces one safety check of a
role's pure core for the duration of a run, and puts it back afterwards. The product itself
has no switch for them: nothing here is reachable from a node process.

  journal-accepts-stale-epoch   a journal replica accepts an append from a writer whose epoch
                                is below the one it promised (a deposed leader still writes)
  storage-reads-early           a storage copy answers a read at ts before its closed
                                timestamp covers ts (it may miss commits at or below ts)
  adjudicator-skips-commit-wait the leader acknowledges a commit without waiting until
                                now().earliest > commit_ts (a later transaction on a node
                                whose clock is behind may start below it and not see it)
"""
from __future__ import annotations

import contextlib
from typing import Iterator

VARIANTS = ("journal-accepts-stale-epoch", "storage-reads-early", "adjudicator-skips-commit-wait")


@contextlib.contextmanager
def variant(name: str | None) -> Iterator[None]:
    if name is None:
        yield
        return
    if name not in VARIANTS:
        raise ValueError(f"unknown broken variant {name!r}: one of {', '.join(VARIANTS)}")
    if name == "journal-accepts-stale-epoch":
        from journal.core import ReplicaCore

        original = ReplicaCore.append

        def append(self, epoch, *args, **kwargs):
            if epoch < self.promised_epoch:  # forget the promise for this one append
                promised, self.promised_epoch = self.promised_epoch, epoch
                try:
                    return original(self, epoch, *args, **kwargs)
                finally:
                    self.promised_epoch = max(self.promised_epoch, promised)
            return original(self, epoch, *args, **kwargs)

        owner, attribute = ReplicaCore, "append"
    elif name == "adjudicator-skips-commit-wait":
        from adjudicator.service import AdjudicatorNode

        original = AdjudicatorNode._commit_wait

        async def commit_wait(self, commit_ts):
            return None

        owner, attribute, append = AdjudicatorNode, "_commit_wait", commit_wait
    else:
        from storage_node.core import Readiness, Segment

        original = Segment.readiness

        def readiness(self, ts):
            answer = original(self, ts)
            return Readiness.READY if answer is Readiness.WAIT else answer

        owner, attribute, append = Segment, "readiness", readiness
    setattr(owner, attribute, append)
    try:
        yield
    finally:
        setattr(owner, attribute, original)
