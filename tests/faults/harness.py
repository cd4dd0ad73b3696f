"""The fault-test rig: a library of tiny real clips, a config, real `amphigory worker` processes, a HandBrakeCLI
wrapper that logs every start and end (and can freeze the encode or crash its worker on demand), and checks.

Everything is real: each worker is ``python -m amphigory_tui --config X worker`` in its own process, encoding with
the real HandBrakeCLI (x264 ultrafast, 320×180, ~0.7 s per clip), and the test kills it with real signals.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amphigory_tui.config import load_settings
from amphigory_tui.domain.jobs import Job, JobStatus
from amphigory_tui.domain.media import Decision
from amphigory_tui.services.probe import probe_file
from amphigory_tui.services.proc import is_same_process, process_start_ticks
from amphigory_tui.store import MediaRecord, Store, open_store
from tests.media import make_clip

REPO = Path(__file__).resolve().parents[2]
REAL_HANDBRAKE = "/usr/bin/HandBrakeCLI"
EXTRA_ARGS = ["-e", "x264", "--encoder-preset", "ultrafast", "-q", "40", "-w", "320", "-l", "180"]

# The wrapper runs the real HandBrakeCLI as its child, in the process group amphigory made for it, and:
# - logs {"event": "start"|"end", "job": id, "tag": worker tag, "pid", "child", "rc"} as JSON lines;
# - with $AMPHIGORY_TEST_HB_FREEZE = "<job id>[,<tag>]", SIGSTOPs HandBrake after its first progress record and
#   writes the marker "transcode.<job>" (the exact "mid-transcode" moment), once per job;
# - with $AMPHIGORY_TEST_POISON_JOB = "<job id>", kills the worker that started it (a job that crashes its worker);
# - with $AMPHIGORY_TEST_HB_DEAF = "1", ignores SIGINT/SIGTERM/SIGHUP (HandBrake too) and hangs once HandBrake is done:
#   a tool that will not stop (marker "deaf.<job>" after the first progress record)
# It ignores the polite signals itself (the group signal reaches HandBrake directly) and exits the way HandBrake did.
WRAPPER = r"""#!{python} -I
import json, os, re, signal, subprocess, sys, time
LOG = {log!r}
REAL = {real!r}
args = sys.argv[1:]
source = args[args.index("-i") + 1] if "-i" in args else ""
m = re.search(r"/job-(\d+)/", source)
job = int(m.group(1)) if m else None
tag = os.environ.get("AMPHIGORY_TEST_TAG", "")

def log(event, **extra):
    with open(LOG, "a") as fh:
        fh.write(json.dumps(dict(event=event, job=job, tag=tag, pid=os.getpid(), **extra)) + "\n")

if os.environ.get("AMPHIGORY_TEST_POISON_JOB") == str(job):
    log("poison")
    os.kill(os.getppid(), signal.SIGKILL)
    sys.exit(1)
freeze = os.environ.get("AMPHIGORY_TEST_HB_FREEZE", "").split(",")
markers = os.environ.get("AMPHIGORY_TEST_MARKER_DIR", ".")
# Once per job: a later attempt runs normally.
frozen = freeze[0] == str(job) and (len(freeze) < 2 or freeze[1] == tag)
frozen = frozen and not os.path.exists(os.path.join(markers, "transcode.%s" % job))
deaf = os.environ.get("AMPHIGORY_TEST_HB_DEAF") == "1"
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN if deaf else (lambda *_: None))
child = subprocess.Popen([REAL] + args, stdout=subprocess.PIPE)
if not deaf:
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda *_: None)
log("start", child=child.pid)
out = sys.stdout.buffer
while True:
    try:
        chunk = os.read(child.stdout.fileno(), 65536)
    except InterruptedError:
        continue
    if not chunk:
        break
    out.write(chunk)
    out.flush()
    if deaf and b"Encoding: task" in chunk:
        with open(os.path.join(markers, "deaf.%s" % job), "w") as fh:
            fh.write(str(os.getpid()))
    if frozen and b"Encoding: task" in chunk:
        frozen = False
        os.kill(child.pid, signal.SIGSTOP)
        with open(os.path.join(markers, "transcode.%s" % job), "w") as fh:
            fh.write(str(child.pid))
rc = child.wait()
log("end", rc=rc)
while deaf:
    time.sleep(3600)
if rc < 0:
    signal.signal(-rc, signal.SIG_DFL)
    os.kill(os.getpid(), -rc)
sys.exit(rc)
"""


@dataclass
class Clip:
    """One library file a job transcodes, with the facts the checks need."""

    path: Path
    sha256: str
    duration_s: float
    job_id: int = 0


@dataclass
class Worker:
    """One running ``amphigory worker`` process."""

    tag: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        """The worker's pid."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the worker process only (not to its tools)."""
        if self.alive():
            self.process.send_signal(sig)

    def kill9(self) -> None:
        """``kill -9`` the worker and reap it; its tools keep running, as after a real crash."""
        self.signal(signal.SIGKILL)
        self.process.wait()

    def wait(self, timeout: float) -> int:
        """Wait for the exit; the exit code (``TimeoutExpired`` names the worker's log on timeout)."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker {self.tag} still running after {timeout} s; log:\n{self.output()}") from None

    def output(self) -> str:
        """The worker's stderr/stdout so far (for failure messages)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-6000:]


class Rig:
    """A library, a config, a database and the worker processes of one fault test."""

    def __init__(
        self,
        root: Path,
        *,
        workers: int = 1,
        stall_timeout_s: int = 20,
        kill_grace_s: float = 3.0,
        max_retries: int = 3,
        policy: str = "keep",
        watch: bool = False,
    ) -> None:
        self.policy = policy
        self.backup = root / "backup"
        self.root = root
        self.library = root / "library"
        self.work = root / "work"
        self.markers = root / "markers"
        self.bin = root / "bin"
        self.logs = root / "logs"
        self.hb_log = root / "handbrake.jsonl"
        for folder in (self.library, self.markers, self.bin, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        wrapper = self.bin / "HandBrakeCLI"
        wrapper.write_text(
            WRAPPER.format(python=sys.executable, log=str(self.hb_log), real=REAL_HANDBRAKE), encoding="utf-8"
        )
        wrapper.chmod(0o755)
        self.config = root / "config.toml"
        self.config.write_text(
            "\n".join(
                [
                    "[database]",
                    f'url = "sqlite:///{root / "db" / "amphigory.db"}"',
                    "[library]",
                    f'roots = ["{self.library}"]',
                    "[paths]",
                    f'work_dir = "{self.work}"',
                    f'backup_dir = "{self.backup}"',
                    "[workers]",
                    f"count = {workers}",
                    "heartbeat_interval_s = 1",
                    f"stall_timeout_s = {stall_timeout_s}",
                    f"kill_grace_s = {kill_grace_s}",
                    "poll_interval_s = 0.1",
                    "stall_check_interval_s = 0.5",
                    "[jobs]",
                    f"max_retries = {max_retries}",
                    "retry_delay_s = 0.0",
                    "retry_backoff = 1.0",
                    "[tools]",
                    f'handbrake = "{wrapper}"',
                    "[transcode]",
                    "extra_args = [" + ", ".join(f'"{a}"' for a in EXTRA_ARGS) + "]",
                    f'original_policy = "{policy}"',
                    "[scanner]",
                    f"watch = {'true' if watch else 'false'}",
                    "watch_hold_s = 0.5",
                    "[logging]",
                    'level = "info"',
                    "",
                ]
            ),
            encoding="utf-8",
        )
        self.settings = load_settings(self.config)
        self.store: Store = open_store(self.settings)
        self.clips: dict[int, Clip] = {}
        self.workers: list[Worker] = []
        self._count = 0

    # ------------------------------------------------------------------ setup
    def add_jobs(
        self, count: int, *, seconds: float = 2.0, prefix: str = "movie", ext: str = "mkv", media: bool = False
    ) -> list[Clip]:
        """``count`` real clips in the library (high bitrate, so the encode is smaller) and a queued job each.

        ``media``: each clip also gets its library row (as a scan records it) and its job points at it.
        """
        made = []
        for i in range(count):
            name = f"{prefix} {len(self.clips) + i:02d}.{ext}"
            path = make_clip(self.library / name, seconds=seconds, bitrate="1M")
            st = path.stat()
            probe = probe_file(str(path))
            media_id = None
            if media:
                record = MediaRecord(
                    str(path), str(self.library), st.st_size, st.st_mtime_ns, probe, Decision(True, "h264 → hevc")
                )
                media_id = self.store.media.upsert([record])[str(path)]
            job = self.store.jobs.create(
                str(path), source_size=st.st_size, source_mtime_ns=st.st_mtime_ns, media_file_id=media_id
            )
            clip = Clip(path, sha256(path), probe.duration_s or seconds, job.id)
            self.clips[job.id] = clip
            made.append(clip)
        return made

    # ------------------------------------------------------------------ workers
    def start(self, *args: str, tag: str | None = None, env: dict[str, str] | None = None) -> Worker:
        """Start ``amphigory --config X worker ARGS`` (its own session, output to a log file)."""
        self._count += 1
        name = tag or f"w{self._count}"
        log_path = self.logs / f"{name}-{self._count}.log"
        child_env = dict(os.environ)
        child_env.update(
            {
                "AMPHIGORY_TEST_TAG": name,
                "AMPHIGORY_TEST_MARKER_DIR": str(self.markers),
                "PYTHONUNBUFFERED": "1",
            }
        )
        for key in (
            "AMPHIGORY_TEST_PAUSE_AT",
            "AMPHIGORY_TEST_HB_FREEZE",
            "AMPHIGORY_TEST_POISON_JOB",
            "AMPHIGORY_TEST_HB_DEAF",
        ):
            child_env.pop(key, None)
        child_env.update(env or {})
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "amphigory_tui", "--config", str(self.config), "worker", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env,
                cwd=REPO,
                start_new_session=True,
            )
        worker = Worker(name, process, log_path)
        self.workers.append(worker)
        return worker

    def drain(self, timeout: float = 90.0, *, env: dict[str, str] | None = None) -> Worker:
        """Start a ``--drain`` worker and wait for its exit 0 (every job done)."""
        worker = self.start("--drain", env=env)
        code = worker.wait(timeout)
        assert code == 0, f"drain worker exited {code}:\n{worker.output()}"
        return worker

    def wait_marker(self, name: str, worker: Worker | None = None, timeout: float = 45.0) -> Path:
        """Wait until a kill point wrote its marker (the process now sleeps there)."""
        marker = self.markers / name
        wait_until(
            marker.exists,
            timeout,
            lambda: f"marker {name} never appeared" + (f"; worker log:\n{worker.output()}" if worker else ""),
        )
        return marker

    def job(self, job_id: int) -> Job:
        """The job as the database has it now."""
        return self.store.jobs.get(job_id)

    # ------------------------------------------------------------------ the wrapper's log
    def hb_events(self) -> list[dict[str, Any]]:
        """Every HandBrakeCLI start/end/poison the wrapper logged."""
        if not self.hb_log.exists():
            return []
        return [json.loads(line) for line in self.hb_log.read_text(encoding="utf-8").splitlines() if line.strip()]

    def starts(self) -> Counter[int]:
        """HandBrakeCLI starts per job."""
        return Counter(e["job"] for e in self.hb_events() if e["event"] == "start")

    def finished_encodes(self) -> Counter[int]:
        """HandBrakeCLI runs per job that ended with exit code 0."""
        return Counter(e["job"] for e in self.hb_events() if e["event"] == "end" and e["rc"] == 0)

    def leftover_tools(self) -> list[int]:
        """Pids of logged HandBrakeCLI/wrapper processes still alive (not zombies)."""
        alive = []
        for event in self.hb_events():
            for pid in (event.get("pid"), event.get("child")):
                if pid and process_start_ticks(pid) is not None and is_same_process(pid, process_start_ticks(pid)):
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}").exists() else b""
                    if b"HandBrakeCLI" in cmdline:
                        alive.append(pid)
        return sorted(set(alive))

    # ------------------------------------------------------------------ checks
    def library_state(self, clip: Clip, path: Path | None = None) -> str:
        """What a library path (default: the clip's) holds: "original", "new" (a valid encode), "missing" or damage."""
        path = path or clip.path
        if not path.exists():
            return "missing"
        if sha256(path) == clip.sha256:
            return "original"
        probe = probe_file(str(path))
        valid = probe.error is None and probe.video_codec == "h264" and probe.width == 320
        if valid and probe.duration_s and abs(probe.duration_s - clip.duration_s) <= max(1.0, 0.01 * clip.duration_s):
            return "new"
        return f"damaged ({probe.error or probe.video_codec} {probe.width}x{probe.height} {probe.duration_s})"

    def check_library_path(self, clip: Clip) -> str:
        """Assert the library path holds the complete original or a complete valid new file; which one."""
        state = self.library_state(clip)
        assert state in ("original", "new"), f"{clip.path.name}: library holds {state}"
        return state

    def check_completed(self, clip: Clip) -> None:
        """Completed job: a valid new file in place, the original kept byte-identical, exactly one success."""
        job = self.job(clip.job_id)
        assert job.status is JobStatus.COMPLETED, f"job {job.id} is {job.status.value}: {job.error_message}"
        assert self.check_library_path(clip) == "new"
        kept = Path(str(clip.path) + ".original")
        assert kept.exists() and sha256(kept) == clip.sha256, f"{kept.name} is not the byte-identical original"
        assert not Path(str(clip.path) + ".original.2").exists(), f"job {job.id} replaced the library file twice"
        outcomes = [a.outcome for a in self.store.jobs.attempts(job.id)]
        assert outcomes.count("completed") == 1, f"job {job.id} attempts: {outcomes}"

    def temp_files(self) -> list[Path]:
        """Files amphigory made that are still around: anything in work_dir, temp names in the library."""
        left = [p for p in self.work.rglob("*") if not p.is_dir()] if self.work.exists() else []
        left += [p for p in self.library.rglob("*") if p.name.startswith(".amphigory") or p.name.endswith(".part")]
        return left

    def check_clean(self) -> None:
        """No temp file anywhere, no HandBrakeCLI left running."""
        assert self.temp_files() == [], f"temp files left: {self.temp_files()}"
        assert self.leftover_tools() == [], f"HandBrakeCLI processes left: {self.leftover_tools()}"

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Kill every worker and tool this rig started (by pid), close the database."""
        for worker in self.workers:
            if worker.alive():
                worker.kill9()
        for pid in self.leftover_tools():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.store.close()


def sha256(path: Path) -> str:
    """The file's SHA-256."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_until(condition: Callable[[], bool], timeout: float, what: Callable[[], str] | str) -> None:
    """Poll ``condition`` every 50 ms; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(what() if callable(what) else what)
        time.sleep(0.05)


def job_of_path(path: str) -> int | None:
    """The job id in a lease path ``…/job-<id>/…``."""
    match = re.search(r"/job-(\d+)/", path)
    return int(match.group(1)) if match else None


@contextlib.contextmanager
def rig(root: Path, **kwargs: Any) -> Iterator[Rig]:
    """A ``Rig`` that is always torn down."""
    made = Rig(root, **kwargs)
    try:
        yield made
    finally:
        made.close()
