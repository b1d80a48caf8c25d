"""Hostile load on a real `tensorboard`: the server's memory per attack beside the plugin's budget, both loaders.

Starts `python -m tensorboard.main` on 127.0.0.1 (a free port) over hostile_logs.py's log dir, once with
--load_fast=false (Python loader) and once with --load_fast=true (Rust loader), and runs each attack of
issue 23's table for a bounded count while sampling the tensorboard process's RSS every 10 ms. Prints, per
attack and loader: peak RSS over the idle RSS (after start-up and a few ordinary requests: what the attacks
so far have added, the figure the goal is for) and over the RSS the attack started at, beside the budget and
the +100 MB goal; the answer codes; and how long an ordinary request takes after it.
Usage: python bench/bench_hostile_load.py [--quick] [--loader false|true] [--attack NAME ...] [--count N]
       [--budget-mb MB] [--demo-steps N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hostile_logs import write_logs

from tensorboard_plugin_cam import budget

MB = 1e6
GOAL_MB = 100
BASE = "/data/plugin/cam"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 60) -> tuple[int, bytes]:
    """(status, body) of a GET; a timeout is status 0."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (TimeoutError, urllib.error.URLError):
        return 0, b""


class Server:
    """A real tensorboard over `logdir` and a thread sampling its RSS."""

    def __init__(self, logdir: Path, load_fast: str, budget_mb: int | None):
        self.url = f"http://127.0.0.1:{_free_port()}"
        extra = [] if budget_mb is None else [f"--{budget.FLAG}={budget_mb}"]
        self.log = open(logdir.parent / f"tensorboard-{load_fast}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
             "--port", self.url.rsplit(":", 1)[1], f"--load_fast={load_fast}", "--reload_interval=0", *extra],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=logdir.parent)
        self.peak = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set() and self.proc.poll() is None:
            try:
                self.peak = max(self.peak, self.rss())
            except (OSError, ValueError):
                return
            time.sleep(0.01)

    def wait_loaded(self, targets: dict, timeout: float = 180) -> None:
        """Until every target series but the absurd one (left out by design) lists all its steps."""
        deadline = time.time() + timeout
        for name, (run, tag, steps) in targets.items():
            if name == "absurd_length":
                continue
            query = urllib.parse.urlencode({"run": run, "tag": tag})
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"tensorboard exited with {self.proc.returncode}")
                status, body = get(f"{self.url}{BASE}/steps?{query}", timeout=10)
                listed = json.loads(body) if status == 200 else {}
                if listed and (len(listed["steps"]) == len(steps) or listed.get("kept_by") == "budget"):
                    break
                if time.time() > deadline:
                    raise TimeoutError(f"{tag} never listed its {len(steps)} steps")
                time.sleep(0.5)

    def close(self) -> None:
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def sample_url(run: str, tag: str, step: int, prefix: str = "") -> str:
    return f"{prefix}{BASE}/sample?" + urllib.parse.urlencode({"run": run, "tag": tag, "step": step})


def ordinary_ms(server: Server, targets: dict) -> float:
    """Median time of the tab's ordinary requests (series, steps, a sample) over the ordinary series."""
    run, tag, steps = targets["ordinary"]
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    spent = []
    for i in range(5):
        start = time.perf_counter()
        for path in (f"{BASE}/series", f"{BASE}/steps?{query}", sample_url(run, tag, steps[i % len(steps)])):
            status, _ = get(server.url + path, timeout=30)
            if status != 200:
                return float("inf")
        spent.append(time.perf_counter() - start)
    return 1000 * statistics.median(spent)


# -- the attacks: each returns the list of answer codes -----------------------------------------------------


def experiment_ids(server: Server, targets: dict, count: int) -> list[int]:
    """Plain GETs, each under a new /experiment/<id>/ prefix: ids of 200 characters (served), every tenth
    one of 16 KiB (refused)."""
    run, tag, steps = targets["ordinary"]
    codes = []
    for i in range(count):
        eid = f"e{i:06d}" + ("x" * 16_384 if i % 10 == 9 else "y" * 193)
        prefix = f"{server.url}/experiment/{eid}"
        query = urllib.parse.urlencode({"run": run, "tag": tag})
        path = (sample_url(run, tag, steps[i % len(steps)]), f"{BASE}/steps?{query}", f"{BASE}/series")[i % 3]
        codes.append(get(prefix + path)[0])
    return codes


def _samples(name: str):
    def attack(server: Server, targets: dict, count: int) -> list[int]:
        run, tag, steps = targets[name]
        return [get(server.url + sample_url(run, tag, steps[i % len(steps)]))[0] for i in range(count)]
    attack.__doc__ = f"/sample of each step of {name}, in turn"
    return attack


def _concurrent(name: str):
    def attack(server: Server, targets: dict, count: int) -> list[int]:
        run, tag, steps = targets[name]
        urls = [server.url + sample_url(run, tag, steps[i % len(steps)]) for i in range(count)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            return [status for status, _ in pool.map(get, urls)]
    attack.__doc__ = f"/sample of {name}'s steps, 8 requests at once"
    return attack


def absurd_length(server: Server, targets: dict, count: int) -> list[int]:
    """/series, then /steps and /sample of the series declaring 10^8 blobs (each given 20 s)."""
    run, tag, _ = targets["absurd_length"]
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    codes = []
    for i in range(count):
        path = (f"{BASE}/series", f"{BASE}/steps?{query}", sample_url(run, tag, 0))[i % 3]
        codes.append(get(server.url + path, timeout=20)[0])
    return codes


def raw_blob(server: Server, targets: dict, count: int) -> list[int]:
    """/blob of raw_maps' maps blobs (keys from /sample), 8 requests at once."""
    run, tag, steps = targets["raw_maps"]
    keys = [json.loads(get(server.url + sample_url(run, tag, s))[1]).get("maps_key") for s in steps]
    if None in keys:  # a sample refused whole gives no keys: nothing to ask for
        return [0] * count
    urls = [f"{server.url}{BASE}/blob?" + urllib.parse.urlencode({"key": keys[i % len(keys)]}) for i in range(count)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return [status for status, _ in pool.map(get, urls)]


def many_keys(server: Server, targets: dict, count: int) -> list[int]:
    """/steps of the series of 1,026-blob steps, 4 requests at once, each under a new /experiment/<id>/."""
    run, tag, _ = targets["many_keys"]
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    urls = [f"{server.url}/experiment/k{i:04d}{'z' * 200}{BASE}/steps?{query}" for i in range(count)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return [status for status, _ in pool.map(get, urls)]


# name -> (attack, full count, quick count)
ATTACKS = {
    "experiment_ids": (experiment_ids, 1000, 300),
    "header_bomb": (_samples("header_bomb"), 20, 5),
    "header_items": (_samples("header_items"), 20, 5),
    "big_headers": (_samples("big_headers"), 150, 60),
    "huge_maps": (_concurrent("huge_maps"), 16, 8),
    "wide_maps": (_concurrent("wide_maps"), 16, 8),
    "absurd_length": (absurd_length, 6, 3),
    "raw_maps": (_concurrent("raw_maps"), 16, 8),
    "raw_blob": (raw_blob, 16, 8),
    "many_keys": (many_keys, 4, 4),  # each listing under a new id costs the whole series (Python provider)
}


def run_loader(logdir: Path, targets: dict, load_fast: str, names: list[str], quick: bool,
               budget_mb: int | None, count: int | None = None) -> list[dict]:
    server = Server(logdir, load_fast, budget_mb)
    try:
        server.wait_loaded(targets)
        before = ordinary_ms(server, targets)
        time.sleep(0.5)
        idle = server.rss()
        results = []
        for name in names:
            attack, full, short = ATTACKS[name]
            server.peak = before_attack = server.rss()
            start = time.perf_counter()
            codes = attack(server, targets, min(count, full) if count else short if quick else full)
            seconds = time.perf_counter() - start
            peak = max(server.peak, server.rss())
            after = ordinary_ms(server, targets)
            results.append({"loader": "python" if load_fast == "false" else "rust", "attack": name,
                            "requests": len(codes), "codes": dict(sorted(Counter(codes).items())),
                            "seconds": round(seconds, 1), "idle_mb": round(idle / MB, 1),
                            "peak_over_idle_mb": round((peak - idle) / MB, 1),
                            "peak_over_before_mb": round((peak - before_attack) / MB, 1),
                            "ordinary_ms_before": round(before, 1), "ordinary_ms_after": round(after, 1)})
        return results
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions of each attack")
    parser.add_argument("--loader", choices=("false", "true"), action="append",
                        help="--load_fast value(s) to run (default: both)")
    parser.add_argument("--attack", choices=tuple(ATTACKS), action="append", help="attacks to run (default: all)")
    parser.add_argument("--count", type=int, help="requests per attack, at most its full count (default: its own)")
    parser.add_argument("--budget-mb", type=int, default=None, help="--cam_memory_budget_mb (default: unset)")
    parser.add_argument("--demo-steps", type=int, default=100,
                        help="the demo's training steps for the ordinary series (0: one small series instead)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    names, loaders = args.attack or list(ATTACKS), args.loader or ["false", "true"]
    budget_mb = args.budget_mb or budget.budget_mb(None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        logdir = Path(tmp) / "logs"
        started = time.time()
        targets = write_logs(logdir, args.demo_steps)
        print(f"log dir written in {time.time() - started:.0f} s; budget {budget_mb} MB, goal +{GOAL_MB} MB",
              flush=True)
        for load_fast in loaders:
            for row in run_loader(logdir, targets, load_fast, names, args.quick, args.budget_mb, args.count):
                rows.append(row)
                within = row["peak_over_idle_mb"] <= min(budget_mb, GOAL_MB)
                print(f"{row['loader']:6s} {row['attack']:14s} {row['requests']:4d} requests {row['seconds']:5.1f} s"
                      f"  peak over idle {row['peak_over_idle_mb']:+6.1f} MB, over its start "
                      f"{row['peak_over_before_mb']:+6.1f} (idle {row['idle_mb']:.0f} MB; budget {budget_mb}, goal "
                      f"+{GOAL_MB}: {'ok' if within else 'OVER'})  codes {row['codes']}  ordinary request "
                      f"{row['ordinary_ms_before']:.0f} -> {row['ordinary_ms_after']:.0f} ms",
                      flush=True)
    if args.json:
        args.json.write_text(json.dumps({"budget_mb": budget_mb, "goal_mb": GOAL_MB, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
