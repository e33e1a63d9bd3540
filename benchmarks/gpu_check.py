"""One prepared check of every image script on the device it is given (made for a GPU lent for a few minutes):
throughput, data wait, peak memory, exact resume, and one evaluation, in one command that keeps to a budget.

    python benchmarks/gpu_check.py --device cuda --budget-s 480     # on a GPU machine: table + JSON in --out
    python benchmarks/gpu_check.py --device cpu --budget-s 60       # the CPU smoke run (tests/test_gpu_check.py)

Per script, at its CIFAR-10 shape (the CIFAR-10 JPEG subset of ../shared/data through --dataset folder, 32x32x3,
each script's defaults, --torch-deterministic on), three runs through the script's own command line:
  B  n steps uninterrupted;  A  n/2 steps, then --resume to n steps.
- steps/s: the script's own `sps` at B's last log line (the last quarter of the run: warm);
- peak memory: torch.cuda.max_memory_allocated() of B's process (GPU only);
- non-finite: all three runs exit 0 (a script stops with exit 1 at its first non-finite loss);
- exact resume: A's logged numbers (sps aside) and final checkpoint tensors (models, optimizers) against B's:
  identical, or the largest absolute difference;
- data wait: the time to draw one batch from the script's own infinite_batches (the data held on the device),
  measured alone with the device synchronised, times the batches a step draws, as a share of a step. An upper bound:
  on a GPU the gather is queued with the step's kernels and overlaps them.
Then once: the MNIST classifier of fid.py (trained on the device, cached in --out; its test accuracy and the
classifier FD of the real test digits, 6.65 on the CPU: the same number on the device says the metric is sound
there) and FID/IS throughput with randomly initialised Inception weights (a speed figure only).

n is cut to fit: a 4-step calibration run per script gives its steps/s, and each script gets an equal share of what
the budget leaves for training; scripts that no longer fit are reported as skipped, never run past the budget.
"""

import argparse
import importlib.util
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import fid  # noqa: E402

# script, its paper's CIFAR-10 setting beyond its defaults
SCRIPTS = {
    "gan.py": [],
    "lens_gan.py": [],
    "aw_gan.py": [],
    "reg_gan.py": ["--batch-size", "100"],
    "unrolled_gan.py": [],
    "wgan_gp.py": [],
}
# runs the script as __main__ and writes its process's peak GPU memory to argv[1] on exit
PEAK = (
    "import atexit, json, runpy, sys, torch; out = sys.argv[1]; sys.argv = sys.argv[2:]; "
    "atexit.register(lambda: open(out, 'w').write(json.dumps({'peak_bytes': torch.cuda.max_memory_allocated() "
    "if torch.cuda.is_available() else None}))); runpy.run_path(sys.argv[0], run_name='__main__')"
)
EVAL_SHARE = 0.25  # of the budget, kept for the evaluation


def launch(script, flags, out_dir, timeout):
    """Run one script in its own process; (exit code, seconds, peak bytes or None, last stderr line)."""
    peak_file = Path(out_dir) / "peak.json"
    cmd = [sys.executable, "-c", PEAK, str(peak_file), str(ROOT / script), *flags]
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        return 124, time.time() - start, None, "timed out"
    peak = json.loads(peak_file.read_text())["peak_bytes"] if peak_file.exists() else None
    last = (proc.stderr.strip().splitlines() or [""])[-1]
    return proc.returncode, time.time() - start, peak, last


def metrics(run_dir):
    """The logged numbers of a run, timings (sps) aside."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "sps"} for r in rows]


def tensors(state, prefix=""):
    """Every tensor of a nested checkpoint dict, by path."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    return {k: v for key, value in items for k, v in tensors(value, f"{prefix}/{key}").items()}


def largest_difference(a, b):
    """0.0 when the two checkpoints' models and optimizers are identical, else the largest absolute difference
    (inf when their tensors differ in names or shapes). The RNG states are left out."""
    ta, tb = (tensors({k: v for k, v in c.items() if k != "rng"}) for c in (a, b))
    if ta.keys() != tb.keys() or any(ta[k].shape != tb[k].shape for k in ta):
        return math.inf
    return max([(ta[k].double() - tb[k].double()).abs().max().item() for k in ta if ta[k].numel()] + [0.0])


def data_wait(script, flags, device, sps, batches_per_step, draws=50):
    """Seconds to draw one batch from the script's own pipeline (device synchronised), as a share of a step."""
    spec = importlib.util.spec_from_file_location(Path(script).stem, ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.parse_args(flags)[0]
    dataset = module.make_dataset(args)
    images = module.load_images(dataset, args)
    dev = torch.device(device)
    batches = module.infinite_batches(dataset, None if images is None else images.to(dev), args, dev)
    next(batches)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(draws):
        batch = next(batches)
    sync()
    del batch
    seconds = (time.perf_counter() - start) / draws
    return seconds, seconds * batches_per_step * sps


def check(script, extra, data_root, device, steps, work, deadline):
    """The row of one script: steps/s, data wait, peak memory, non-finite, exact resume."""
    flags = [
        "--dataset",
        "folder",
        "--data-root",
        data_root,
        "--image-size",
        "32",
        "--device",
        device,
        "--num-workers",
        "0",
        "--sample-every",
        "0",
        "--eval-every",
        "0",
        "--checkpoint-every",
        "0",
        "--torch-deterministic",
        "--seed",
        "1",
        *extra,
    ]
    runs = {}
    for name, total, resume in (("B", steps, False), ("A", steps // 2, False), ("A", steps, True)):
        out = work / name
        out.mkdir(exist_ok=True)
        run_flags = [
            *flags,
            "--out-dir",
            str(out),
            "--exp-name",
            name,
            "--total-steps",
            str(total),
            "--log-every",
            str(max(steps // 4, 1)),
        ] + (["--resume", "auto"] if resume else [])
        rc, seconds, peak, last = launch(script, run_flags, out, deadline - time.time())
        if rc:
            return {"script": script, "steps": steps, "error": f"exit {rc} ({name}, step {total}): {last}"}
        runs[name] = (next(out.glob("*/metrics.jsonl")).parent, seconds, peak)
    (b_dir, b_seconds, peak), (a_dir, _, _) = runs["B"], runs["A"]
    b_ckpt, a_ckpt = (torch.load(d / "checkpoint.pt", map_location="cpu", weights_only=False) for d in (b_dir, a_dir))
    same_metrics = metrics(a_dir) == metrics(b_dir)
    difference = largest_difference(a_ckpt, b_ckpt)
    sps = json.loads((b_dir / "metrics.jsonl").read_text().splitlines()[-1])["sps"]
    draw_s, share = data_wait(script, flags, device, sps, b_ckpt["batches_used"] / steps)
    return {
        "script": script,
        "steps": steps,
        "steps_per_s": round(sps, 3),
        "run_s": round(b_seconds, 1),
        "batches_per_step": b_ckpt["batches_used"] / steps,
        "batch_draw_ms": round(1000 * draw_s, 4),
        "data_wait_share": round(share, 5),
        "peak_mem_mib": None if peak is None else round(peak / 2**20, 1),
        "finite": True,
        "resume_metrics_identical": same_metrics,
        "resume_max_abs_diff": difference,
    }


def evaluate(data_root, device, cache, deadline, max_images=10_000):
    """The MNIST classifier on the device (accuracy, the classifier FD of the test digits) and FID/IS images/s with
    randomly initialised Inception weights, as many images as a third of the time left allows (10 to max_images)."""
    result = {}
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    model = fid.InceptionFeatures(weights=False).to(dev).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    fake = lambda n: torch.rand(n, 3, 32, 32, generator=gen).to(dev) * 2 - 1  # noqa: E731
    t = time.time()
    reference = fid.statistics(fid.activations(fake, model, n=10, transform=fid.to_unit_interval)[0])  # also warm-up
    sync()
    per_image = (time.time() - t) / 10
    n = int(min(max_images, max(10, (deadline - time.time()) / 3 / per_image / 2)) // 10 * 10)
    if n > 10:
        reference = fid.statistics(fid.activations(fake, model, n=n, transform=fid.to_unit_interval)[0])
    sync()
    t = time.time()
    with torch.no_grad():
        scores = fid.fid_from_generator(fake, n, reference, model)
    sync()
    result["fid_images"] = n
    result["fid_images_per_s"] = round(n / (time.time() - t), 1)
    result["fid_is_random_weights"] = f"{scores['fid']:.4g} / {scores['is_mean']:.4g}"
    if deadline - time.time() < (90 if dev.type == "cpu" else 30):
        result["classifier"] = "skipped: not within the budget"
        return result
    t = time.time()
    classifier, accuracy = fid.mnist_classifier(data_root, cache, device=device)
    result["classifier_train_s"] = round(time.time() - t, 1)
    result["classifier_test_accuracy"] = round(accuracy, 4)
    train, test = fid.mnist_digits(data_root, True)[0], fid.mnist_digits(data_root, False)[0]
    reference = fid.statistics(fid.classify(classifier, train)[0])
    sync()
    t = time.time()
    quality = fid.mnist_quality(classifier, test[:10_000], reference)
    sync()
    result["classifier_images_per_s"] = round(10_000 / (time.time() - t), 1)
    result["test_digits_classifier_fd"] = round(quality["classifier_fd"], 4)
    return result


def table(report):
    lines = [
        f"device: {report['device']}; commit {report['commit']}; {report['date']}; budget {report['budget_s']} s, "
        f"used {report['used_s']} s",
        "",
        "| script | steps | steps/s | data wait (share of a step) | peak GPU MiB | finite | resume: metrics identical "
        "| resume: largest tensor difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["scripts"]:
        if "error" in r or "skipped" in r:
            lines.append(f"| {r['script']} | {r.get('steps', '')} | {r.get('error') or r['skipped']} | | | | | |")
            continue
        lines.append(
            f"| {r['script']} | {r['steps']} | {r['steps_per_s']} | {r['data_wait_share']:.2%} | "
            f"{r['peak_mem_mib'] if r['peak_mem_mib'] is not None else 'n/a'} | {'yes' if r['finite'] else 'no'} | "
            f"{'yes' if r['resume_metrics_identical'] else 'no'} | {r['resume_max_abs_diff']:.3g} |"
        )
    lines += ["", "| evaluation | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in report["evaluation"].items()]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto (cuda when present, else cpu) | cpu | cuda | cuda:N")
    p.add_argument("--budget-s", type=float, default=480, help="wall-clock budget of the whole check, in seconds")
    p.add_argument(
        "--data-root",
        default=str(ROOT.parent / "shared" / "data"),
        help="folder with cifar10-test-jpg/ and MNIST/ (../shared/data)",
    )
    p.add_argument("--out", default="runs/gpu_check", help="where the table (gpu_check.md) and JSON go")
    p.add_argument("--scripts", nargs="+", choices=tuple(SCRIPTS), default=tuple(SCRIPTS))
    p.add_argument("--max-steps", type=int, default=400, help="the most steps of a run B")
    p.add_argument("--max-fid-images", type=int, default=10_000, help="the most images of the FID/IS speed figure")
    args = p.parse_args(argv)
    start = time.time()
    deadline = start + args.budget_s
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    cifar, out = str(Path(args.data_root) / "cifar10-test-jpg"), Path(args.out)
    if not Path(cifar).is_dir() or not (Path(args.data_root) / "MNIST").is_dir():
        sys.exit(f"gpu_check: {args.data_root} needs cifar10-test-jpg/ and MNIST/ (copy ../shared/data there)")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, script in enumerate(args.scripts):
            share = (deadline - time.time() - EVAL_SHARE * args.budget_s) / (len(args.scripts) - i)  # of what is left
            work = Path(tmp) / Path(script).stem
            (work / "cal").mkdir(parents=True)
            flags = [
                "--dataset",
                "folder",
                "--data-root",
                cifar,
                "--device",
                device,
                "--num-workers",
                "0",
                "--sample-every",
                "0",
                "--checkpoint-every",
                "0",
                "--log-every",
                "2",
                "--total-steps",
                "4",
                "--out-dir",
                str(work / "cal"),
                *SCRIPTS[script],
            ]
            if share < 10:
                rows.append({"script": script, "skipped": f"skipped: {max(share, 0):.0f} s left for it"})
                continue
            # 4 steps: the seconds a run costs beyond its steps, and the steps/s (the last 2 steps)
            rc, seconds, _, last = launch(script, flags, work / "cal", share)
            if rc:
                why = f"4 steps took over its {share:.0f} s" if rc == 124 else f"exit {rc} in a 4-step run: {last}"
                rows.append({"script": script, "error": why})
                continue
            sps = json.loads(next((work / "cal").glob("*/metrics.jsonl")).read_text().splitlines()[-1])["sps"]
            overhead = max(seconds - 4 / sps, 0)
            steps = min(args.max_steps, int((share - seconds - 3 * overhead) * sps / 2) // 4 * 4)  # B + A: 2n steps
            if steps < 4:
                rows.append(
                    {
                        "script": script,
                        "skipped": f"skipped: {share:.0f} s left for it, a run costs "
                        f"{overhead:.0f} s + {1 / sps:.2f} s a step",
                    }
                )
                continue
            rows.append(check(script, SCRIPTS[script], cifar, device, steps, work, deadline))
    evaluation = evaluate(args.data_root, device, out / "fid_stats", deadline, args.max_fid_images)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    report = {
        "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
        "commit": commit.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "budget_s": args.budget_s,
        "used_s": round(time.time() - start, 1),
        "torch": torch.__version__,
        "scripts": rows,
        "evaluation": evaluation,
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "gpu_check.md").write_text(table(report) + "\n")
    print(table(report))
    return report


if __name__ == "__main__":
    main()
