"""Loading and serving a large log dir: the CAM tab against TensorBoard's own Images tab.

Generates RUNS x TAGS x STEPS samples of 8 images each, once as CAM samples (the real
format and the writer's own `add_sample`: maps of 16x16 for 2 methods, pictures encoded as
the writer encodes them) and once as Images-tab samples (the images plugin's own
`[width, height, png...]` blob sequences, PNG as `add_image` writes) holding the same 8
pictures, in two cases: the same pictures at every step (a monitor's
probe images, which the writer stores once) and new pictures at every step (a training
batch, stored with every sample). For each, and for each loader (the Rust data server and
--load_fast=false), it starts `tensorboard` and measures:
  - the time until every tag is listed, every run's last tag holds every step, and the last step's
    blobs are served;
  - the peak resident memory of the TensorBoard process tree (the data server included);
  - serving: CLIENTS concurrent clients for SECONDS requesting the tab's routes (each as likely:
    the listing, a series' steps, for CAM a step's sample, and one picture of a random step),
    errors and p50/p95 latency.
Both tabs keep every sample, so both hold the same images: the CAM plugin by its own default
(no flag), the Images tab with --samples_per_plugin images=STEPS (it reads 0, TensorBoard's
"keep all", as "keep none").
The issue's full size is --runs 20 --tags 10 --steps 1000 (200,000 samples per tab; tens of
GBs of disk and memory for the Images tab); the defaults are smaller.
With --repeats N, each tab is measured N times in turns and the medians are printed (errors summed).
Usage: python bench/bench_loading.py [--runs 20 --tags 10 --steps 100 --pictures both --loaders both --repeats 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat.proto import summary_pb2
from tensorboard.util import tensor_util

from tensorboard_plugin_cam import format as fmt
from writer_ext import SummaryWriter
from writer_ext import pictures as img
from writer_ext.demo import ShapeNet, draw_shapes
from writer_ext.summaries.sample import Pictures, add_sample


def one_cam_sample(tmp: Path) -> list[bytes]:
    """The blobs of one real CAM sample (8 images 64x64, 2 methods), read back from its event file, as stored."""
    torch.manual_seed(0)
    with SummaryWriter(str(tmp / "seed")) as writer:
        writer.add_cam("x", ShapeNet(), draw_shapes(8, np.random.default_rng(0))[0], target_layer="features",
                       methods=("gradcam", "cam"), global_step=0)
    [path] = (tmp / "seed").glob("events*")
    for event in event_file_loader.EventFileLoader(str(path)).Load():
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == fmt.PLUGIN_NAME:
                return list(value.tensor.string_val)
    raise RuntimeError("no CAM sample written")


def picture_sets(count: int, image_format: str) -> list[list[bytes]]:
    """`count` different sets of 8 drawn 64x64 pictures (the first those of `one_cam_sample`), encoded."""
    sets = []
    for seed in range(count):
        pictures = draw_shapes(8, np.random.default_rng(seed))[0]
        sets.append([img.encode(p, image_format) for p in img.images_for(pictures, None)])
    return sets


def write_logdirs(root: Path, runs: int, tags: int, steps: int, pictures: str) -> tuple[Path, Path]:
    """The two log dirs. pictures="repeat": the same 8 pictures at every step (a monitor's probes);
    "new": new pictures at every step (a training batch). Both tabs get the same pictures."""
    sample = one_cam_sample(root / pictures)
    header = fmt.parse_json_object(sample[fmt.HEADER_INDEX], "header")
    header.pop("compression")  # add_sample compresses the raw maps again
    _, maps = fmt.cam.parse_sample(*sample[:fmt.cam.FIRST_PICTURE])
    count = 1 if pictures == "repeat" else steps
    cam_sets, img_sets = picture_sets(count, img.DEFAULT_FORMAT), picture_sets(count, "png")
    assert cam_sets[0] == sample[fmt.cam.FIRST_PICTURE:]
    stored_header = sample[fmt.HEADER_INDEX]
    print(f"  one CAM sample: header {len(stored_header)} B ({len(zlib.decompress(stored_header))} B as JSON), "
          f"maps {len(sample[fmt.cam.MAPS_INDEX])} B ({len(maps)} B raw), 8 pictures "
          f"{sum(map(len, cam_sets[0]))} B as {img.DEFAULT_FORMAT} ({sum(map(len, img_sets[0]))} B as PNG)", flush=True)
    cam_dir, img_dir = root / pictures / "cam", root / pictures / "images"
    image_meta = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images", content=b""),
        data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
    )
    for r in range(runs):
        # The CAM samples go through the writer's own add_sample, which decides what pictures to share.
        with SummaryWriter(str(cam_dir / f"run{r:02d}")) as cam_writer, \
                SummaryWriter(str(img_dir / f"run{r:02d}")) as img_writer:
            for step in range(steps):
                cam_pictures, pngs = cam_sets[step % count], img_sets[step % count]
                image_blobs = [b"64", b"64", *pngs]
                for t in range(tags):
                    tag = f"tag{t:02d}"
                    add_sample(cam_writer, tag, fmt.cam.KIND, lambda sequence: {**header, "sequence": sequence},
                               [maps], Pictures(encoded=cam_pictures), step, None)
                    value = summary_pb2.Summary.Value(
                        tag=tag, metadata=image_meta,
                        tensor=tensor_util.make_tensor_proto(image_blobs, shape=[len(image_blobs)]))
                    img_writer._get_file_writer().add_summary(summary_pb2.Summary(value=[value]), step)
    return cam_dir, img_dir


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (the Rust data server), from /proc."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * 4096
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return total / 2**20


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


class Routes:
    """How to ask each tab for its listing, its last step and one picture."""

    def __init__(self, plugin: str, runs: int, tags: int, steps: int):
        self.plugin, self.runs, self.tags, self.steps = plugin, runs, tags, steps

    def listed(self, base: str) -> bool:
        if self.plugin == "cam":
            return len(json.loads(get(base + "/data/plugin/cam/series"))["series"]) == self.runs * self.tags
        listing = json.loads(get(base + "/data/plugin/images/tags"))
        return sum(len(t) for t in listing.values()) == self.runs * self.tags

    def step_count(self, base: str, run: str, tag: str) -> int:
        q = urllib.parse.urlencode
        if self.plugin == "cam":
            return len(json.loads(get(f"{base}/data/plugin/cam/steps?{q({'run': run, 'tag': tag})}"))["steps"])
        return len(json.loads(get(f"{base}/data/plugin/images/images?{q({'run': run, 'tag': tag, 'sample': 0})}")))

    def last_step_urls(self, base: str) -> list[str]:
        """The last step's blobs, once every run's last tag holds every step (the runs load in any order)."""
        tag = f"tag{self.tags - 1:02d}"
        with ThreadPoolExecutor(self.runs) as pool:  # side by side: the check must not blur the time it measures
            counts = list(pool.map(lambda r: self.step_count(base, f"run{r:02d}", tag), range(self.runs)))
        if min(counts) < self.steps:
            return []
        run = f"run{self.runs - 1:02d}"
        q = urllib.parse.urlencode
        if self.plugin == "cam":
            sample = json.loads(get(f"{base}/data/plugin/cam/sample?"
                                    f"{q({'run': run, 'tag': tag, 'step': self.steps - 1})}"))
            return [f"{base}/data/plugin/cam/blob?{q({'key': sample['maps_key']})}",
                    f"{base}/data/plugin/cam/blob?{q({'key': sample['image_keys'][0]})}"]
        images = json.loads(get(f"{base}/data/plugin/images/images?{q({'run': run, 'tag': tag, 'sample': 0})}"))
        return [f"{base}/data/plugin/images/individualImage?{images[-1]['query']}"]

    def picture_urls(self, base: str, rng: np.random.Generator, count: int) -> list[str]:
        """URLs of one picture each of `count` random samples (found before the clock starts)."""
        urls, q = [], urllib.parse.urlencode
        for _ in range(count):
            run, tag = f"run{rng.integers(self.runs):02d}", f"tag{rng.integers(self.tags):02d}"
            step, image = int(rng.integers(self.steps)), int(rng.integers(8))
            if self.plugin == "cam":
                sample = json.loads(get(f"{base}/data/plugin/cam/sample?{q({'run': run, 'tag': tag, 'step': step})}"))
                urls.append(f"{base}/data/plugin/cam/blob?{q({'key': sample['image_keys'][image]})}")
            else:
                query = q({"run": run, "tag": tag, "sample": image})
                listing = json.loads(get(f"{base}/data/plugin/images/images?{query}"))
                urls.append(f"{base}/data/plugin/images/individualImage?{listing[step]['query']}")
        return urls

    def request_mix(self, base: str, rng: np.random.Generator, pictures: list[str]) -> str:
        """One request to one of the tab's routes, each route as likely: listing, steps, (sample,) picture."""
        run, tag = f"run{rng.integers(self.runs):02d}", f"tag{rng.integers(self.tags):02d}"
        q = urllib.parse.urlencode
        picture = pictures[int(rng.integers(len(pictures)))]
        if self.plugin == "cam":
            step = int(rng.integers(self.steps))
            return rng.choice([
                f"{base}/data/plugin/cam/series",
                f"{base}/data/plugin/cam/steps?{q({'run': run, 'tag': tag})}",
                f"{base}/data/plugin/cam/sample?{q({'run': run, 'tag': tag, 'step': step})}",
                picture,
            ])
        return rng.choice([
            f"{base}/data/plugin/images/tags",
            f"{base}/data/plugin/images/images?{q({'run': run, 'tag': tag, 'sample': 0})}",
            picture,
        ])


def measure(logdir: Path, routes: Routes, load_fast: str, clients: int, seconds: float) -> dict:
    port = 6100 + int(time.time() * 1000) % 800
    # The CAM plugin keeps every step unless told otherwise; the images plugin needs the count (it reads 0 as none).
    keep_all = [] if routes.plugin == "cam" else [f"--samples_per_plugin=images={routes.steps}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port),
         f"--load_fast={load_fast}", *keep_all, "--reload_interval=0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base, start, peak = f"http://127.0.0.1:{port}", time.time(), 0.0
    try:
        ready = None
        while ready is None and time.time() - start < 1800:
            peak = max(peak, tree_rss_mib(proc.pid))
            try:
                if routes.listed(base):
                    urls = routes.last_step_urls(base)
                    with ThreadPoolExecutor(4) as pool:  # side by side, as a browser fetches a step's blobs
                        if urls and all(pool.map(get, urls)):
                            ready = time.time() - start
            except OSError:
                pass
            time.sleep(0.05)
        pictures = routes.picture_urls(base, np.random.default_rng(1), 100)
        latencies, errors, stop = [], [0], time.time() + seconds

        def client(seed):
            rng = np.random.default_rng(seed)
            while time.time() < stop:
                t = time.perf_counter()
                try:
                    get(routes.request_mix(base, rng, pictures))
                    latencies.append(time.perf_counter() - t)
                except OSError as e:
                    errors[0] += 1
                    if errors[0] <= 3:
                        print(f"    error: {e}", flush=True)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for th in threads:
            th.start()
        while any(th.is_alive() for th in threads):
            peak = max(peak, tree_rss_mib(proc.pid))
            time.sleep(0.2)
        qs = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else [float("nan")] * 19
        return {"ready_s": ready, "peak_mib": peak, "requests": len(latencies), "errors": errors[0],
                "p50_ms": 1000 * qs[9], "p95_ms": 1000 * qs[18]}
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--tags", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pictures", choices=("repeat", "new", "both"), default="both",
                        help="the same pictures at every step (a monitor's probes), new ones each step, or both")
    parser.add_argument("--loaders", choices=("rust", "python", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure each tab this many times, in turns, and print the medians (the Rust loader's "
                             "ready time moves by several tenths of a second between runs)")
    args = parser.parse_args()
    loaders = {"rust": ["true"], "python": ["false"], "both": ["true", "false"]}[args.loaders]
    with tempfile.TemporaryDirectory() as tmp:
        for pictures in ("repeat", "new") if args.pictures == "both" else (args.pictures,):
            started = time.time()
            cam_dir, img_dir = write_logdirs(Path(tmp), args.runs, args.tags, args.steps, pictures)
            sizes = [sum(f.stat().st_size for f in d.rglob("*events*")) / 2**20 for d in (cam_dir, img_dir)]
            print(f"pictures: {pictures}. {args.runs} runs x {args.tags} tags x {args.steps} steps x 8 images (64x64) "
                  f"per tab, generated in {time.time() - started:.0f} s; event files: cam {sizes[0]:.1f} MiB, "
                  f"images {sizes[1]:.1f} MiB ({sizes[0] / sizes[1]:.2f}x)", flush=True)
            for load_fast in loaders:
                print(f"  loader: {'Rust data server' if load_fast == 'true' else 'Python (--load_fast=false)'}")
                runs = {"cam": [], "images": []}
                for _ in range(args.repeats):
                    for name, logdir in (("cam", cam_dir), ("images", img_dir)):
                        runs[name].append(measure(logdir, Routes(name, args.runs, args.tags, args.steps), load_fast,
                                                  args.clients, args.seconds))
                results = {}
                for name, measured in runs.items():
                    r = results[name] = {k: statistics.median(m[k] for m in measured) for k in measured[0]}
                    r["errors"] = sum(m["errors"] for m in measured)
                    readies = ", ".join(f"{m['ready_s']:.2f}" for m in measured)
                    each = f" (each: {readies})" if len(measured) > 1 else ""
                    print(f"    {name:<7} ready {r['ready_s']:7.2f} s{each}   peak RSS {r['peak_mib']:7.0f} MiB   "
                          f"{args.clients} clients: {r['requests']:.0f} requests, {r['errors']} errors, "
                          f"p50 {r['p50_ms']:6.1f} ms, p95 {r['p95_ms']:6.1f} ms", flush=True)
                c, i = results["cam"], results["images"]
                print(f"    ratios cam/images: ready {c['ready_s'] / i['ready_s']:.2f}, "
                      f"peak RSS {c['peak_mib'] / i['peak_mib']:.2f}, p95 {c['p95_ms'] / i['p95_ms']:.2f} "
                      "(goal: ready and RSS <= 1)", flush=True)
            shutil.rmtree(cam_dir.parent)


if __name__ == "__main__":
    main()
