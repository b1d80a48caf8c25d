"""What CAM monitoring costs a training run: the demo's training loop with and without a
CamMonitor logging Grad-CAM of 8 probe images every 50 steps (goal: at most 3% more wall time).

The two runs alternate (--rounds times each) so that machine noise hits both alike; the
script prints the median wall time of each and their ratio.
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
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for monitored in (False, True):
            with tempfile.TemporaryDirectory() as logdir:
                start = time.perf_counter()
                run = train(f"{logdir}/run", args.steps, args.every if monitored else 0, quiet=True,
                            methods=("gradcam",), probes=8, topk=1, activations=False)
                run.writer.close()
                times[monitored].append(time.perf_counter() - start)
    plain, monitored = statistics.median(times[False]), statistics.median(times[True])
    print(f"demo loop, {args.steps} steps, Grad-CAM of 8 probes every {args.every} steps, "
          f"median of {args.rounds} alternating runs each")
    print(f"  without monitor {plain:6.1f} s")
    print(f"  with monitor    {monitored:6.1f} s   overhead {100 * (monitored / plain - 1):+.1f}% (goal <= 3%)")


if __name__ == "__main__":
    main()
