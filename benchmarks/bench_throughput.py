"""Training throughput of every image script at its paper's CIFAR-10 shape (32x32x3, its batch and widths), and
the input pipeline alone (streamed by DataLoader workers vs gathered from the uint8 tensor held in memory).

    python benchmarks/bench_throughput.py                        # this checkout, 1 torch thread
    python benchmarks/bench_throughput.py --code /tmp/old .      # before/after: checkouts interleaved script by script

Each script trains on the CIFAR-10 JPEG subset of ../shared/data (2,000 images, 32x32x3; the full CIFAR-10 cannot
be downloaded here) for a fixed number of steps; steps/s is the script's own `sps` over the second half of the
run (the first half warms up). Where CUDA is available the same runs use it; the script says which device ran.
Timings, not tests: run it on a quiet machine, one benchmark at a time.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# script, its paper's CIFAR-10 setting beyond the defaults, steps to run (about half a minute each on one CPU thread)
RUNS = [
    ("gan.py", [], 120),
    ("lens_gan.py", [], 40),
    ("aw_gan.py", [], 8),
    ("reg_gan.py", ["--batch-size", "100"], 60),
    ("unrolled_gan.py", [], 10),
    ("wgan_gp.py", [], 10),
]


def train_sps(code, script, extra, steps, data, device):
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            str(Path(code) / script),
            "--dataset",
            "folder",
            "--data-root",
            data,
            "--total-steps",
            str(steps),
            "--log-every",
            str(steps // 2),
            "--sample-every",
            "0",
            "--checkpoint-every",
            "0",
            "--out-dir",
            out,
            "--device",
            device,
            *extra,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=code)
        if proc.returncode:
            return f"failed: {proc.stderr.strip().splitlines()[-1]}"
        lines = next(Path(out).glob("*/metrics.jsonl")).read_text().splitlines()
        return json.loads(lines[-1])["sps"]


def pipeline_images_per_s(data, batches=60, batch_size=64, device="cpu"):
    """Images/s of this checkout's infinite_batches, streamed (2 workers) and in memory (after the one decode)."""
    sys.path.insert(0, str(ROOT))
    import torch

    import gan

    result = {}
    for stream in (True, False):
        args = gan.parse_args(
            ["--dataset", "folder", "--data-root", data, "--batch-size", str(batch_size), "--num-workers", "2"]
            + (["--stream-data"] if stream else [])
        )[0]
        dataset = gan.make_dataset(args)
        images = gan.load_images(dataset, args)
        it = gan.infinite_batches(dataset, None if images is None else images.to(device), args, torch.device(device))
        next(it)  # workers started
        start = time.perf_counter()
        for _ in range(batches):
            batch = next(it)
        float(batch.sum())  # wait for the device
        result["streamed" if stream else "in memory"] = batches * batch_size / (time.perf_counter() - start)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--code", nargs="+", default=[str(ROOT)], help="checkouts whose scripts to time, interleaved (first = baseline)"
    )
    p.add_argument(
        "--data", default=str(ROOT.parent / "shared" / "data" / "cifar10-test-jpg"), help="32x32 ImageFolder tree"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--scripts", nargs="*", default=[r[0] for r in RUNS])
    p.add_argument("--no-pipeline", action="store_true", help="skip the input pipeline measurement")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one torch thread: comparable numbers on a shared 2-core machine
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    print(
        f"device {device}{'' if device != 'cpu' else ' (no CUDA device available)'}, "
        f"{torch.get_num_threads()} thread(s), code {' | '.join(args.code)}"
    )
    for script, extra, steps in RUNS:
        if script in args.scripts:
            sps = [train_sps(code, script, extra, steps, args.data, device) for code in args.code]
            cells = [f"{v:8.3f} steps/s" if isinstance(v, float) else v for v in sps]
            ratio = f" | x{sps[-1] / sps[0]:.3f}" if len(sps) > 1 and all(isinstance(v, float) for v in sps) else ""
            print(f"{script:16s} {' '.join(extra) or '(defaults)':20s} " + " | ".join(cells) + ratio, flush=True)
    if not args.no_pipeline:
        for how, rate in pipeline_images_per_s(args.data, device=device).items():
            print(f"input pipeline {how:10s} {rate:10.0f} images/s (batch 64)")


if __name__ == "__main__":
    main()
