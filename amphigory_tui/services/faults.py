"""Test-only pause points, so a fault test can ``kill -9`` amphigory at an exact moment of a job.

The pipeline and the replace protocol call ``pause_point("upload.swap", job_id)`` at the moments that matter for
crash safety. Normally that is one environment lookup and nothing else. When ``$AMPHIGORY_TEST_PAUSE_AT`` lists the
point (comma-separated names; ``name@<job id>`` restricts it to one job), the process writes the marker file
``$AMPHIGORY_TEST_MARKER_DIR/<name>.<job id>`` and then sleeps until it is killed: the test waits for the marker,
kills the process, restarts it without the variable and checks that recovery puts everything right.

Points (in the order a job meets them): ``download`` (the first chunk of the source copy is written), ``validate``
(the encode is done, before the output is probed), ``upload.placing`` (the new file sits under its temp name beside
the target, intent phase "placing"), ``upload.swap`` (same-name replace: the original is already kept as
``.original``, the new file not yet renamed over it), ``upload.placed`` (the new file is in the library, the job not
yet recorded completed), ``finalize`` (the job is recorded completed, its intent and lease dir not yet removed).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["MARKER_ENV", "PAUSE_ENV", "pause_point"]

PAUSE_ENV = "AMPHIGORY_TEST_PAUSE_AT"
MARKER_ENV = "AMPHIGORY_TEST_MARKER_DIR"


def pause_point(name: str, job_id: int | None = None) -> None:
    """Block forever at ``name`` when a fault test asked for it (see the module docstring); else return at once.

    Blocking (``time.sleep``) on purpose: the test kills the whole process here, and nothing of it must move on.
    """
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted:
        return
    for item in wanted.split(","):
        point, _, only_job = item.strip().partition("@")
        if point == name and (not only_job or only_job == str(job_id)):
            break
    else:
        return
    markers = Path(os.environ.get(MARKER_ENV) or ".")
    marker = markers / f"{name}.{job_id}"
    tmp = markers / f".{name}.{job_id}.{os.getpid()}"
    tmp.write_text(str(os.getpid()), encoding="utf-8")
    os.replace(tmp, marker)
    while True:
        time.sleep(3600)
