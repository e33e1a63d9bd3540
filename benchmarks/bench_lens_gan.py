"""Per-iteration cost of lens_gan.py with and without the lens, on CPU (issue 5).

Runs the script itself (lens_gan.main, in this process) on real images for --warmup + --steps iterations per
variant: --no-lens and the lens at each --lens-channels, interleaved within each repeat so that machine load hits
them alike. The time per iteration (one G update, n_critic D updates, one lens update) after the warm-up comes
from the per-step `sps` of metrics.jsonl; the table gives the median over --repeats and the ratio to --no-lens.

Usage: python benchmarks/bench_lens_gan.py --threads 1 --repeats 3
"""

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import lens_gan  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--losses", nargs="+", default=["gan", "wgan-gp"], choices=("gan", "lsgan", "wgan-gp"))
    p.add_argument("--lens-channels", nargs="+", type=int, default=[32], help="lens widths to time")
    p.add_argument(
        "--data-root", default=str(ROOT.parent / "shared" / "data" / "cifar10-test-jpg"), help="an ImageFolder tree"
    )
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=None, help="--ngf and --ndf (default: the script's per-loss default)")
    p.add_argument("--steps", type=int, default=4, help="timed iterations per run")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations at the start of each run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    return p.parse_args(argv)


def seconds_per_iteration(run_dir, warmup):
    """Mean time of the iterations after the warm-up; each record's sps covers the steps since the one before."""
    records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    times = [1 / r["sps"] for r in records if r["step"] > warmup]  # --log-every 1: one step per record
    return sum(times) / len(times)


def time_run(args, loss, lens_channels, out_dir):
    argv = [
        "--dataset",
        "folder",
        "--data-root",
        args.data_root,
        "--loss",
        loss,
        "--image-size",
        str(args.image_size),
        "--batch-size",
        str(args.batch_size),
        "--total-steps",
        str(args.warmup + args.steps),
        "--num-workers",
        "0",
        "--log-every",
        "1",
        "--sample-every",
        "0",
        "--checkpoint-every",
        "0",
        "--device",
        "cpu",
        "--out-dir",
        out_dir,
    ]
    argv += ["--ngf", str(args.width), "--ndf", str(args.width)] if args.width else []
    argv += ["--lens-channels", str(lens_channels)] if lens_channels else ["--no-lens"]
    with contextlib.redirect_stdout(io.StringIO()):
        summary = lens_gan.main(argv)
    return seconds_per_iteration(summary["run_dir"], args.warmup)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = [(loss, c) for loss in args.losses for c in [0] + args.lens_channels]  # 0: --no-lens
    times = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as out_dir:
        for _ in range(args.repeats):
            for loss, c in variants:
                times[loss, c].append(time_run(args, loss, c, out_dir))
    print(
        f"CPU, {args.threads} thread(s), batch {args.batch_size}, {args.image_size}x{args.image_size} RGB, "
        f"median of {args.repeats} runs x {args.steps} iterations (after {args.warmup} warm-up)\n"
    )
    print("| loss | n_critic | G / D width | lens | lens params | ms / iteration | x no lens |")
    print("|---|---|---|---|---|---|---|")
    for loss, c in variants:
        defaults = lens_gan.parse_args(["--loss", loss])[0]
        width = args.width or defaults.ngf
        params = sum(p.numel() for p in lens_gan.Lens(3, c).parameters()) if c else 0
        ms, base = 1000 * statistics.median(times[loss, c]), 1000 * statistics.median(times[loss, 0])
        print(
            f"| {loss} | {defaults.n_critic} | {width} | {f'{c} channels' if c else 'none'} | {params:,} | "
            f"{ms:.0f} | {ms / base:.2f} |"
        )


if __name__ == "__main__":
    main()
