"""Bit-identity of the six image scripts across a change: the same training, the same samples, the same numbers.

Runs each script of a checkout (and unrolled_gan.py --arch metz, the paper's own networks) from a fixed seed on the
offline MNIST (stacked MNIST for unrolled_gan.py) for a few dozen CPU steps with the classifier metrics on
(--no-fid), an EMA generator, and a resume in the middle; then --generate (PNG bytes) and --evaluate (numbers) from
the final checkpoint. Writes what it saw to OUT/<script>.pt;
--compare A B says, script by script, whether every logged number of metrics.jsonl (timings aside), every tensor of
the final checkpoint (models, optimizers, RNG states), every PNG byte and every --evaluate number is identical.

Usage: python benchmarks/bit_identity.py --root CHECKOUT --out runs/bit_identity/before
       python benchmarks/bit_identity.py --compare runs/bit_identity/before runs/bit_identity/after
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

SCRIPTS = {
    "gan.py": [],
    "lens_gan.py": ["--lens-channels", "4", "--lens-k", "12"],
    "aw_gan.py": [],
    "reg_gan.py": [],
    "unrolled_gan.py": ["--dataset", "stacked-mnist", "--unroll-steps", "2"],
    "wgan_gp.py": ["--n-critic", "2"],
    # Metz et al.'s stacked-MNIST networks: their own size and widths, so not COMMON's
    "unrolled_gan.py --arch metz": [
        "--arch",
        "metz",
        "--dataset",
        "stacked-mnist",
        "--batch-size",
        "16",
        "--unroll-steps",
        "2",
        "--exp-name",
        "unrolled_gan_metz",
    ],
}
COMMON = [
    "--dataset",
    "mnist",
    "--image-size",
    "16",
    "--batch-size",
    "16",
    "--ngf",
    "8",
    "--ndf",
    "8",
    "--seed",
    "3",
    "--num-workers",
    "0",
    "--no-download",
    "--log-every",
    "1",
    "--sample-every",
    "6",
    "--eval-every",
    "6",
    "--no-fid",
    "--classifier-samples",
    "300",
    "--ema-decay",
    "0.9",
    "--checkpoint-every",
    "6",
]
TIMINGS = ("sps", "wall_time", "unroll_ms")  # wall-clock, different at every run


def flatten(value, prefix=""):
    """{path: tensor or plain value} of a nested checkpoint (dicts, lists, tuples)."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}{key}/").items()}
    if isinstance(value, (list, tuple)) and any(isinstance(v, (dict, list, tuple, torch.Tensor)) for v in value):
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}{i}/").items()}
    return {prefix.rstrip("/"): value}


def states(ckpt):
    """What training produced, in either checkpoint format: the models', optimizers' and RNG states, the step."""
    if "counters" in ckpt:  # format 2: {"counters": (step, ...), "models": {name: state}, "optimizers": {...}}
        step, models, optimizers = ckpt["counters"][0], ckpt["models"], ckpt["optimizers"]
    else:  # format 3: flat, optimizers named opt_<model>
        step, optimizers = ckpt["step"], {k[4:]: v for k, v in ckpt.items() if k.startswith("opt_")}
        models = {
            k: v
            for k, v in ckpt.items()
            if isinstance(v, dict) and k not in ("args", "rng") and k[4:] not in optimizers
        }
    return {"step": step, **flatten({"models": models, "optimizers": optimizers, "rng": ckpt["rng"]})}


def run(root, script, flags):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, str(Path(root) / script), *flags]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def record(root, out, data_root, script, steps):
    """Train `steps` // 2 steps, resume to `steps`, generate and evaluate; what came out, as plain values."""
    runs = out / "runs"  # one folder: the MNIST classifier is trained (or copied) once, into runs/fid_stats
    common = COMMON
    if "--arch metz" in script:  # the paper's networks have their own image size and widths
        common = [f for i, f in enumerate(COMMON) if not {f, COMMON[i - 1]} & {"--image-size", "--ngf", "--ndf"}]
    flags = common + SCRIPTS[script] + ["--out-dir", str(runs), "--data-root", data_root]
    exp = flags[flags.index("--exp-name") + 1] if "--exp-name" in flags else Path(script.split()[0]).stem
    script = script.split()[0]
    run(root, script, flags + ["--total-steps", str(steps // 2)])
    run(root, script, flags + ["--total-steps", str(steps), "--resume", "auto"])
    (run_dir,) = runs.glob(f"*__{exp}__3__*")
    ckpt = run_dir / "checkpoint.pt"
    png = run_dir / "png"
    run(root, script, ["--resume", str(ckpt), "--generate", "20", "--generate-dir", str(png), "--device", "cpu"])
    run(root, script, ["--resume", str(ckpt), "--evaluate", "200", "--no-fid", "--device", "cpu"])
    metrics = [
        {k: v for k, v in json.loads(line).items() if k not in TIMINGS}
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    (evaluated,) = run_dir.glob("evaluate_step*.json")
    numbers = {k: v for k, v in json.loads(evaluated.read_text()).items() if k not in ("checkpoint",)}
    return {
        "metrics": metrics,
        "states": states(torch.load(ckpt, weights_only=True)),
        "evaluate": numbers,
        "png": [hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(png.iterdir())],
    }


def record_name(script):
    return script.replace(" --", "_").replace(" ", "_") + ".pt"


def same(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def compare(a_dir, b_dir):
    ok = True
    for script in SCRIPTS:
        if not all((Path(d) / f"{record_name(script)}").exists() for d in (a_dir, b_dir)):
            print(f"{script:27s} not in both records")
            ok = False
            continue
        a, b = (torch.load(Path(d) / record_name(script), weights_only=False) for d in (a_dir, b_dir))
        keys = set(a["states"]) | set(b["states"])
        differ = sorted(k for k in keys if not same(a["states"].get(k), b["states"].get(k)))
        lines = sum(len(m) - 1 for m in a["metrics"])
        checks = {
            f"metrics.jsonl ({len(a['metrics'])} lines, {lines} numbers)": a["metrics"] == b["metrics"],
            f"checkpoint ({len(keys)} tensors and values)": not differ,
            f"--generate ({len(a['png'])} PNGs)": a["png"] == b["png"],
            f"--evaluate ({', '.join(k for k in a['evaluate'] if k not in ('step', 'samples'))})": a["evaluate"]
            == b["evaluate"],
        }
        for what, equal in checks.items():
            print(f"{script:27s} {what:60s} {'identical' if equal else 'DIFFERENT'}")
            ok &= equal
        if differ:
            print(f"{script:27s} differing checkpoint entries: {differ[:8]}")
    print("all identical" if ok else "NOT identical")
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=".", help="the checkout whose scripts run")
    p.add_argument("--out", help="folder for the record (one .pt per script)")
    p.add_argument("--data-root", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    p.add_argument("--steps", type=int, default=24, help="generator steps (resumed at half)")
    p.add_argument("--scripts", nargs="+", choices=tuple(SCRIPTS), default=tuple(SCRIPTS))
    p.add_argument("--classifier-cache", help="a fid_stats folder with the trained MNIST classifier (else trained)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two records instead of running")
    args = p.parse_args()
    if args.compare:
        sys.exit(0 if compare(*args.compare) else 1)
    out = Path(args.out).resolve()
    if out.exists():
        sys.exit(f"{out} exists: choose a new --out")
    (out / "runs" / "fid_stats").mkdir(parents=True)
    for cached in Path(args.classifier_cache or out).glob("mnist_classifier_*.pt"):
        shutil.copy(cached, out / "runs" / "fid_stats")
    for script in args.scripts:
        result = record(Path(args.root).resolve(), out, str(Path(args.data_root).resolve()), script, args.steps)
        torch.save(result, out / record_name(script))
        print(f"{script}: recorded", flush=True)


if __name__ == "__main__":
    main()
