"""Latency and peak memory of `volseg serve` under bounded concurrent load, on 127.0.0.1.

Starts the shipped ``volseg serve`` (the CLI, as a user would) on a free port of 127.0.0.1 with a
throw-away datastore and a studies folder (a synthetic phantom by default, or ``--studies DIR``,
e.g. the shared BraTS cases), then fires, with a thread pool:

1. ``--info-rounds`` ``GET /info/`` one at a time (the cost of one request), then
   ``--info-concurrency`` concurrent ones, ``--info-rounds`` times;
2. one ``POST /infer/<bundle>?image=<study>`` (loads the model: reported apart);
3. ``--infer-concurrency`` concurrent ``POST /infer/...`` on the same study (the server runs one
   inference per model at a time, so these queue).

It prints, per phase, the request count, the answers with status 200, latency p50 / p95 / max,
and the peak resident memory of the server's process tree sampled every 50 ms (Linux ``/proc``:
VmRSS of the server and its descendants), plus the server's own kernel-kept peak (VmHWM). Every
request and the whole run are bounded in time (``--time-limit``); the server is stopped at the
end whatever happens. It measures; it asserts nothing.

    nice -n 10 python benchmarks/serve_load.py
    nice -n 10 python benchmarks/serve_load.py --studies ../shared/data/brats2018 --study Brats18_CBICA_AME_1
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` field in KiB (0 where the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from the parent ids in ``/proc/*/stat``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


class RssSampler:
    """Samples the summed VmRSS (MiB) of a process tree every ``interval_s`` in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, sum(_proc_kib(p, "VmRSS") for p in _tree(self.pid)) / 1024)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def fire(url: str, method: str, n: int, concurrency: int, deadline: float) -> list[tuple[float, int]]:
    """``n`` requests, ``concurrency`` at a time; ``(seconds, status)`` each (status 0: failed or
    timed out). Each request's timeout is what is left of the run's time."""
    def one(_: int) -> tuple[float, int]:
        left = deadline - time.monotonic()
        if left <= 0:
            return 0.0, 0
        start = time.perf_counter()
        try:
            status = httpx.request(method, url, timeout=left).status_code
        except httpx.HTTPError:
            status = 0
        return time.perf_counter() - start, status

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, range(n)))


def row(name: str, results: list[tuple[float, int]], peak_mib: float) -> str:
    times = sorted(t for t, _ in results)
    ok = sum(1 for _, s in results if s == 200)
    p95 = times[min(len(times) - 1, max(0, round(0.95 * len(times)) - 1))] if times else float("nan")
    return (f"{name:<34} {len(results):>5} {ok:>5} {statistics.median(times) if times else float('nan'):>9.3f} "
            f"{p95:>9.3f} {max(times, default=float('nan')):>9.3f} {peak_mib:>13.0f}")


def start_server(args: argparse.Namespace, studies: Path, store: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "app.cli", "serve", "--studies", str(studies), "--store", str(store), "--host", "127.0.0.1",
           "--port", str(port), "--bundle", args.bundle, "--device", args.device, "--quiet"]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def wait_ready(base: str, server: subprocess.Popen, deadline: float) -> float:
    start = time.perf_counter()
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"volseg serve exited with {server.returncode}: {server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{base}/info/", timeout=5).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError("volseg serve did not answer /info/ before the time limit")


def stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after 15 s."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=Path, help="folder of BraTS case folders (default: one synthetic phantom)")
    parser.add_argument("--study", help="study id to infer on (default: the first case folder)")
    parser.add_argument("--bundle", default="brats_unet3d")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--info-concurrency", type=int, default=20)
    parser.add_argument("--info-rounds", type=int, default=10)
    parser.add_argument("--infer-concurrency", type=int, default=4)
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds for the whole run, server start included")
    args = parser.parse_args()
    deadline = time.monotonic() + args.time_limit
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="volseg_serve_load_") as tmp:
        studies = args.studies
        if studies is None:
            from app.data.phantom import make_brats_phantom

            studies = Path(tmp) / "studies"
            make_brats_phantom(studies, "Phantom_001")
        study = args.study or sorted(p.name for p in studies.iterdir() if p.is_dir())[0]
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_server(args, studies, Path(tmp) / "store", port)
        try:
            startup = wait_ready(base, server, deadline)
            lines = [f"{'phase':<34} {'n':>5} {'200':>5} {'p50 s':>9} {'p95 s':>9} {'max s':>9} {'peak RSS MiB':>13}"]
            with RssSampler(server.pid) as rss:
                alone = fire(f"{base}/info/", "GET", args.info_rounds, 1, deadline)
            lines.append(row(f"/info/ one at a time x {args.info_rounds}", alone, rss.peak_mib))
            with RssSampler(server.pid) as rss:
                info = fire(f"{base}/info/", "GET", args.info_concurrency * args.info_rounds, args.info_concurrency, deadline)
            lines.append(row(f"/info/ {args.info_concurrency} concurrent x {args.info_rounds}", info, rss.peak_mib))
            infer_url = f"{base}/infer/{args.bundle}?image={study}"
            with RssSampler(server.pid) as rss:
                first = fire(infer_url, "POST", 1, 1, deadline)
            lines.append(row("/infer first (loads the model)", first, rss.peak_mib))
            with RssSampler(server.pid) as rss:
                infer = fire(infer_url, "POST", args.infer_concurrency, args.infer_concurrency, deadline)
            lines.append(row(f"/infer {args.infer_concurrency} concurrent", infer, rss.peak_mib))
            hwm = _proc_kib(server.pid, "VmHWM") / 1024
        finally:
            stop(server)
    print(f"volseg serve on 127.0.0.1 (free port), bundle {args.bundle}, device {args.device}, study {study} from "
          f"{args.studies or 'a synthetic phantom 120x140x110'}; {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}; load average {load:.1f} at start; server answered /info/ {startup:.1f} s after start")
    print("\n".join(lines))
    print(f"server process peak RSS (VmHWM): {hwm:.0f} MiB")


if __name__ == "__main__":
    main()
