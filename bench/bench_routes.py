"""What one request costs the CAM tab's backend under the Rust loader, and why it keeps what it read.

Writes RUNS x TAGS x STEPS CAM samples with new pictures at every step (bench_loading's log dir),
starts TensorBoard's Rust data server on it and prints, one request at a time:
  - each kind of data-provider call the backend makes (median of 50): one series' metadata
    (a filtered list_blob_sequences), one series' steps with their blob keys (read_blob_sequences),
    one header blob (read_blob), every series' metadata;
  - each route through TensorBoard's own WSGI app (median of 100): /series, /steps, /sample of a
    step never read and of a step read before, /blob of a picture.
Usage: python bench/bench_routes.py [--runs 20 --tags 10 --steps 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_loading import write_logdirs
from tensorboard import context
from tensorboard.backend import application
from tensorboard.data import provider, server_ingester
from tensorboard.plugins import base_plugin
from tensorboard.util import grpc_util
from werkzeug import test, wrappers

from tensorboard_plugin_cam import format as fmt
from tensorboard_plugin_cam.plugin import CamPlugin


def median_ms(call, times: int) -> float:
    spent = []
    for i in range(times):
        start = time.perf_counter()
        call(i)
        spent.append(time.perf_counter() - start)
    return 1000 * statistics.median(spent)


def start_data_server(logdir: Path, runs: int, tags: int, steps: int):
    """TensorBoard's Rust data server on `logdir`, once it holds every step of every series."""
    ingester = server_ingester.SubprocessServerDataIngester(
        server_binary=server_ingester.get_server_binary(), logdir=str(logdir), reload_interval=0,
        channel_creds_type=grpc_util.ChannelCredsType.LOCAL, samples_per_plugin={fmt.PLUGIN_NAME: 0})
    ingester.start()
    data, ctx, deadline = ingester.data_provider, context.RequestContext(), time.time() + 300
    while time.time() < deadline:
        listing = data.list_blob_sequences(ctx, experiment_id="", plugin_name=fmt.PLUGIN_NAME)
        if sum(ts.max_step == steps - 1 for tags_ in listing.values() for ts in tags_.values()) == runs * tags:
            return ingester
        time.sleep(0.2)
    raise TimeoutError("the data server did not load the log dir")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--tags", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    def series(i: int) -> tuple[str, str]:
        return f"run{i % args.runs:02d}", f"tag{(i // args.runs) % args.tags:02d}"

    with tempfile.TemporaryDirectory() as tmp:
        cam_dir, _ = write_logdirs(Path(tmp), args.runs, args.tags, args.steps, "new")
        ingester = start_data_server(cam_dir, args.runs, args.tags, args.steps)
        try:
            data, ctx = ingester.data_provider, context.RequestContext()
            one = provider.RunTagFilter(runs=["run00"], tags=["tag00"])
            blobs = data.read_blob_sequences(ctx, experiment_id="", plugin_name=fmt.PLUGIN_NAME, downsample=10**6,
                                             run_tag_filter=one)["run00"]["tag00"]
            header_key = blobs[-1].values[fmt.HEADER_INDEX].blob_key
            print(f"{args.runs} runs x {args.tags} tags x {args.steps} steps, Rust data server; data-provider calls "
                  "(median of 50):")
            for name, call in [
                ("one series' metadata (list_blob_sequences, filtered)", lambda i: data.list_blob_sequences(
                    ctx, experiment_id="", plugin_name=fmt.PLUGIN_NAME, run_tag_filter=one)),
                ("one series' steps and blob keys (read_blob_sequences)", lambda i: data.read_blob_sequences(
                    ctx, experiment_id="", plugin_name=fmt.PLUGIN_NAME, downsample=10**6, run_tag_filter=one)),
                ("one header blob (read_blob)", lambda i: data.read_blob(ctx, blob_key=header_key)),
                ("every series' metadata (list_blob_sequences)", lambda i: data.list_blob_sequences(
                    ctx, experiment_id="", plugin_name=fmt.PLUGIN_NAME)),
            ]:
                print(f"  {name:<56} {median_ms(call, 50):6.1f} ms")

            plugin_ctx = base_plugin.TBContext(logdir=str(cam_dir), data_provider=data, sampling_hints={})
            app = application.TensorBoardWSGI([CamPlugin(plugin_ctx)], data_provider=data)
            client = test.Client(app, wrappers.Response)

            def get(route: str, **query) -> bytes:
                response = client.get(f"/data/plugin/cam/{route}", query_string=query)
                assert response.status_code == 200, (route, query, response.status_code)
                return response.get_data()

            samples = [(*series(i), int(rng.integers(args.steps))) for i in range(100)]
            picture = json.loads(get("sample", run="run00", tag="tag00", step=0))["image_keys"][0]
            print("routes, one request at a time (median of 100):")
            for name, call in [
                ("/series", lambda i: get("series")),
                ("/steps (first request of each series)", lambda i: get("steps", run=series(i)[0],
                                                                         tag=series(i)[1])),
                ("/steps (again)", lambda i: get("steps", run=series(i)[0], tag=series(i)[1])),
                ("/sample of a step never read", lambda i: get("sample", run=samples[i][0], tag=samples[i][1],
                                                               step=samples[i][2])),
                ("/sample of a step read before", lambda i: get("sample", run=samples[i][0], tag=samples[i][1],
                                                                step=samples[i][2])),
                ("/blob of a picture", lambda i: get("blob", key=picture)),
            ]:
                print(f"  {name:<56} {median_ms(call, 100):6.1f} ms")
        finally:
            ingester._stdin_handle.close()  # the server runs with --die-after-stdin


if __name__ == "__main__":
    main()
