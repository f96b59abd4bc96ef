"""Run ``trailwarden-manager start`` that dies (``os._exit``) at one point of its commit path.

Usage: ``python crash_manager.py CONFIG POINT``. The process ends abruptly
(no cleanup, exit status 137, as after SIGKILL) the first time a group
reaches POINT:

* ``after_begin``: the journal's BEGIN is written, no alert byte is;
* ``mid_write``: half of the group's alerts.json bytes are appended;
* ``after_write``: the alerts are appended (not fsynced), no COMMIT;
* ``after_commit``: COMMIT is written, the agent is not acknowledged yet.

Test-only: the manager itself has no such hooks.
"""

from __future__ import annotations

import os
import sys

from trailwarden.manager.alert_files import AlertFiles, WritePlan
from trailwarden.manager.batch_journal import BatchJournal
from trailwarden.manager.cli import main

KILLED = 137


def install(point: str) -> None:
    real_commit = AlertFiles.commit
    real_journal_commit = BatchJournal.commit

    def files_commit(self: AlertFiles, plan: WritePlan) -> None:
        if point == "after_begin":
            os._exit(KILLED)
        if point == "mid_write":
            json_range = plan.ranges()[0]
            assert json_range.path is not None
            with open(json_range.path, "ab") as handle:
                handle.write(json_range.data[: len(json_range.data) // 2])
            os._exit(KILLED)
        real_commit(self, plan)
        if point == "after_write":
            os._exit(KILLED)

    def journal_commit(self: BatchJournal, group: int) -> None:
        real_journal_commit(self, group)
        if point == "after_commit":
            os._exit(KILLED)

    AlertFiles.commit = files_commit  # type: ignore[method-assign]
    BatchJournal.commit = journal_commit  # type: ignore[method-assign]


if __name__ == "__main__":
    install(sys.argv[2])
    sys.exit(main(["start", "--config", sys.argv[1]]))
