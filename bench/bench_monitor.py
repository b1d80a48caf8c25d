"""What CAM monitoring costs a training run: the demo's training loop with and without a
CamMonitor logging Grad-CAM of 8 probe images every 50 steps (goal: at most 3% more wall time).

The two runs alternate (--rounds times each) so that machine noise hits both alike; the
script prints the median wall time of each and their ratio, and, less noisy, the time spent
inside the monitor's calls as a share of the unmonitored run's wall time.
Usage: python bench/bench_monitor.py [--steps 600] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from writer_ext.demo import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[bool, list[float]] = {False: [], True: []}
    inside: list[float] = []
    for _ in range(args.rounds):
        for monitored in (False, True):
            with tempfile.TemporaryDirectory() as logdir:
                start = time.perf_counter()
                run = train(f"{logdir}/run", args.steps, args.every if monitored else 0, quiet=True,
                            methods=("gradcam",), probes=8, topk=1, activations=False)
                run.writer.close()
                times[monitored].append(time.perf_counter() - start)
                if monitored:
                    inside.append(run.monitor_seconds)
    plain, monitored = statistics.median(times[False]), statistics.median(times[True])
    print(f"demo loop, {args.steps} steps, Grad-CAM of 8 probes every {args.every} steps, "
          f"median of {args.rounds} alternating runs each")
    print(f"  without monitor {plain:6.1f} s")
    print(f"  with monitor    {monitored:6.1f} s   wall-time difference {100 * (monitored / plain - 1):+.1f}%")
    share = statistics.median(inside) / plain
    print(f"  time inside the monitor's calls {statistics.median(inside):.2f} s = {100 * share:.2f}% of the run "
          "(goal <= 3%)")


if __name__ == "__main__":
    main()
