"""Image results on a CPU: every method against its own paired baseline on MNIST and stacked MNIST, in the setting of
its paper's own experiment (GROUPS names the table or figure), scaled to fit 2 CPU cores; scored by the MNIST
classifier of fid.py (no Inception weights needed). The numbers and figures of docs/results.md.

    python benchmarks/bench_results.py                 # all runs (skips kept ones; resumes interrupted ones)
    python benchmarks/bench_results.py --only unrolled reg   # some groups
    python benchmarks/bench_results.py --report        # tables, verdicts (markdown) and figures from the kept runs

One torch thread per run, --jobs runs at a time. Paired arms differ only in the method's flag: the same seed gives
them the same initial weights and noise. Runs train in runs/results/<dataset>__<group>-<arm>__<seed>__<time>/; a
finished run's args.json, metrics.jsonl and summary.json (and bench.json: wall time, command, commit) are kept in
docs/results/runs/<group>/<arm>/<seed>/, committed: the report reads nothing else, so the benchmark can run in parts
on several machines (--keep-from copies finished runs of another runs folder, with seed 1's last sample grid).
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import scipy.stats
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import fid  # noqa: E402

STEPS = 2000  # generator steps of a run, unless STEPS_OF says otherwise
WIDTH = ["--ngf", "32", "--ndf", "32"]  # DCGAN at half width: ~3x faster than 64 here
MNIST = ["--dataset", "mnist", "--classifier-samples", "10000"]
STACKED = ["--dataset", "stacked-mnist"]  # 26,000 samples for the modes (Metz et al.)
FIVE, THREE = (1, 2, 3, 4, 5), (1, 2, 3)
UNROLL = {f"K{k}": ["--unroll-steps", str(k)] for k in (0, 5, 10)}  # the arms of the unrolled groups
METZ = STACKED + ["--arch", "metz", "--loss", "gan", "--classifier-samples", "25600"]  # Metz et al.'s own networks
# group: (script, shared flags, {arm: flags}, seeds, paper source); the first arm of a group is its baseline
GROUPS = {
    # Metz et al. Table 2, the row with D at 1/4 of G's width, where the GAN collapses (30.6 modes at K = 0, 236.4 at
    # K = 5, 327.2 at K = 10); the non-saturating loss: with --loss mm D wins outright at this scale (docs/results.md)
    "unrolled": (
        "unrolled_gan.py",
        STACKED + ["--loss", "gan", "--ngf", "32", "--ndf", "8"],
        UNROLL,
        FIVE,
        "Metz et al. Table 2 (D 1/4 of G)",
    ),
    # Metz et al. Table 2 in its own setting: the paper's stacked-MNIST networks (unrolled_gan.py --arch metz: 28x28, z
    # 256, Adam D 2e-4 / G 1e-4 (0.5, 0.99), batch 128), D at 1/4 and 1/2 of G; the non-saturating G loss, as PacGAN's
    # re-run of K = 0 in this setting; 10,000 steps (the paper's runs are far longer: docs/unrolled_gan.md, the pilot)
    "unrolled-metz": (
        "unrolled_gan.py",
        METZ + ["--d-size", "quarter"],
        UNROLL,
        FIVE,
        "Metz et al. Table 2 (their networks, D 1/4)",
    ),
    "unrolled-metz-half": (
        "unrolled_gan.py",
        METZ + ["--d-size", "half"],
        {k: UNROLL[k] for k in ("K0", "K5")},
        THREE,
        "Metz et al. Table 2 (their networks, D 1/2)",
    ),
    # Sajjadi et al. Sec. 4.1 / Fig. 4: LSGAN on MNIST mostly fails without the lens; the paper's lens (32 channels),
    # K = half the run, so that the lens acts for 1,000 steps and training goes on for 1,000 after it
    "lens-lsgan": (
        "lens_gan.py",
        MNIST + WIDTH + ["--loss", "lsgan"],
        {"no-lens": ["--no-lens"], "lens": ["--lens-channels", "32", "--lens-k", str(STEPS // 2)]},
        FIVE,
        "Sajjadi et al. Sec. 4.1, Fig. 4 (LSGAN)",
    ),
    "lens-gan": (
        "lens_gan.py",
        MNIST + WIDTH + ["--loss", "gan"],
        {"no-lens": ["--no-lens"], "lens": ["--lens-channels", "32", "--lens-k", str(STEPS // 2)]},
        THREE,
        "Sajjadi et al. Sec. 4.1, Fig. 4 (GAN)",
    ),
    # Roth et al. Fig. 2 (MNIST, constant gamma = 0.1 on inputs in [0, 1], i.e. 0.4 here: docs/reg_gan.md)
    "reg": (
        "reg_gan.py",
        MNIST + WIDTH + ["--no-anneal"],
        {"gamma0": ["--gamma", "0"], "gamma0.4": ["--gamma", "0.4"]},
        FIVE,
        "Roth et al. Fig. 2",
    ),
    # Zadorozhnyy et al. Table 2 trains SN-GAN (sngan.pytorch's standard CNN on CIFAR-10) with n_dis = 5, G batch 128,
    # Adam 2e-4 (0, 0.9), linear decay: aw_gan.py's defaults; no EMA, like every other arm here
    "aw": (
        "aw_gan.py",
        MNIST + WIDTH + ["--arch", "cnn", "--ema-decay", "0", "--n-critic", "5"],
        {"no-aw": ["--no-aw"], "aw": []},
        THREE,
        "Zadorozhnyy et al. Table 2 (SN-GAN, n_dis 5)",
    ),
    "references": ("gan.py", MNIST + WIDTH, {"gan": []}, FIVE, "DCGAN"),
    "references-wgan-gp": ("wgan_gp.py", MNIST + WIDTH, {"wgan-gp": []}, THREE, "Gulrajani et al."),
}
SEEDS_OF = {("unrolled", "K10"): THREE, ("unrolled-metz", "K10"): THREE}  # K = 10 costs 2x K = 5
# aw: 5 D steps per G step with two backward passes each (0.4 steps/s): 500 G steps = 2,500 D steps; WGAN-GP: 5 critic
# steps per G step
STEPS_OF = {"aw": 500, "references-wgan-gp": 500, "unrolled-metz": 10_000, "unrolled-metz-half": 10_000}
EVALS_OF = {
    "unrolled-metz": 10,
    "unrolled-metz-half": 10,
}  # evaluations per run (default 4): the last three are reported
METRICS = {"mnist": (("classifier_fd", min), ("class_kl", min)), "stacked-mnist": (("modes", max), ("modes_kl", min))}
KEPT = ROOT / "docs" / "results" / "runs"  # <group>/<arm>/<seed>/{args.json, metrics.jsonl, summary.json, bench.json}
KEEP = ("args.json", "metrics.jsonl", "summary.json")
FLOOR = KEPT / "floor.json"  # what real digits and noise score with the classifier of the kept runs (written by main)


def runs(groups, only_arms=None):
    for group in groups:
        script, shared, arms, seeds, _ = GROUPS[group]
        for arm, flags in arms.items() if not only_arms else ((a, f) for a, f in arms.items() if a in only_arms):
            for seed in SEEDS_OF.get((group, arm), seeds):
                yield group, arm, seed, script, shared + flags


def kept(group, arm, seed, root=None):
    """The kept (committed) files of a finished run under root (default KEPT), or None."""
    d = Path(root or KEPT) / group / arm / str(seed)
    summary = d / "summary.json"
    if summary.exists() and json.loads(summary.read_text())["step"] == STEPS_OF.get(group, STEPS):
        return d
    return None


def run_dir(out, group, arm, seed, flags):
    """(exp-name, the newest run directory of this arm and seed or None, whether that run reached its last step)."""
    exp, dataset = f"{group}-{arm}", flags[flags.index("--dataset") + 1]
    found = sorted(Path(out).glob(f"{dataset}__{exp}__{seed}__*"), key=lambda d: d.stat().st_mtime)
    run = found[-1] if found else None
    summary = run / "summary.json" if run else None
    return (
        exp,
        run,
        bool(summary and summary.exists() and json.loads(summary.read_text())["step"] == STEPS_OF.get(group, STEPS)),
    )


def train(out, data_root, group, arm, seed, script, flags):
    """One run, unless it is kept already; an interrupted one continues from its checkpoint (--resume auto). A finished
    run's small text files are copied to KEPT/<group>/<arm>/<seed>/ (committed: the report needs nothing else)."""
    exp, found, _ = run_dir(out, group, arm, seed, flags)
    steps = STEPS_OF.get(group, STEPS)
    if kept(group, arm, seed):
        return f"{exp} seed {seed}: kept before"
    cmd = [
        script,
        *flags,
        "--exp-name",
        exp,
        "--seed",
        str(seed),
        "--data-root",
        data_root,
        "--out-dir",
        out,
        "--download" if data_root == "data" else "--no-download",
        "--num-workers",
        "0",
        "--total-steps",
        str(steps),
        "--eval-every",
        str(steps // EVALS_OF.get(group, 4)),
        "--no-fid",
        "--log-every",
        "100",
        "--sample-every",
        str(steps // 4),
        "--checkpoint-every",
        str(min(500, steps // 4)),
    ]
    if found and (found / "checkpoint.pt").exists():
        cmd += ["--resume", "auto"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log = Path(out) / "logs" / f"{exp}__{seed}.log"
    start = time.time()
    with open(log, "a") as f:
        rc = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    seconds = time.time() - start
    if rc:
        return f"{exp} seed {seed}: FAILED (exit {rc}, see {log})"
    _, run, finished = run_dir(out, group, arm, seed, flags)
    if not finished:
        return f"{exp} seed {seed}: ended before its last step (see {log})"
    dest = KEPT / group / arm / str(seed)
    dest.mkdir(parents=True, exist_ok=True)
    for name in KEEP:
        shutil.copyfile(run / name, dest / name)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    bench = {
        "wall_s": round(seconds, 1),
        "resumed": "--resume" in cmd,
        "commit": commit,
        "threads": 1,
        "command": " ".join(["python", *cmd]),
        "finished": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    (dest / "bench.json").write_text(json.dumps(bench, indent=1) + "\n")
    return exp, seed, seconds


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out-dir", default="runs/results")
    p.add_argument("--data-root", default="../shared/data", help="where MNIST is ('data' downloads it)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--only", nargs="+", choices=tuple(GROUPS), default=tuple(GROUPS))
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="only these seeds (default: each arm's own)")
    p.add_argument("--arms", nargs="+", default=None, help="only these arms of the groups (default: all)")
    p.add_argument("--report", action="store_true", help="no training: tables and figures of the kept runs")
    p.add_argument(
        "--keep-from", default=None, help="no training: copy the finished runs of this runs folder into the kept runs"
    )
    args = p.parse_args()
    if args.report:  # from the kept files alone: no data, no classifier
        return report(KEPT, args.only)
    # the MNIST classifier (trained here, for runs and report alike) with 2 threads, as for every kept run: its
    # weights depend on the thread count (the order of the reductions)
    torch.set_num_threads(2)
    out = Path(args.out_dir)
    if args.keep_from:
        return print(f"{keep(Path(args.keep_from), KEPT, args.only)} finished runs kept in {KEPT}")
    (out / "logs").mkdir(parents=True, exist_ok=True)
    start = time.time()  # the classifier is trained once here (about a minute on 2 cores), not by two runs at once
    model, accuracy = fid.mnist_classifier(args.data_root, out / "fid_stats", download=args.data_root == "data")
    print(f"MNIST classifier ready ({100 * accuracy:.2f} % test accuracy, {time.time() - start:.0f} s)", flush=True)
    FLOOR.parent.mkdir(parents=True, exist_ok=True)
    FLOOR.write_text(json.dumps(floor(model, args.data_root) | {"test_accuracy": accuracy}, indent=1) + "\n")
    todo = [r for r in runs(args.only, args.arms) if args.seeds is None or r[2] in args.seeds]
    todo = sorted(todo, key=lambda r: (r[2], -cost(r)))  # seed by seed (pairs complete early), longest first
    with ThreadPoolExecutor(args.jobs) as pool:
        for future in as_completed([pool.submit(train, str(out), args.data_root, *r) for r in todo]):
            result = future.result()
            if isinstance(result, str):
                print(result, flush=True)
                continue
            exp, seed, seconds = result
            print(
                f"{exp} seed {seed}: {seconds / 60:.1f} min ({(time.time() - start) / 60:.0f} min so far)", flush=True
            )
    print(f"all runs done in {(time.time() - start) / 60:.1f} min", flush=True)


def cost(r):
    """Relative cost of a run (steps/s measured on this 2-core machine, two runs at a time)."""
    group, arm, seed, script, flags = r
    sps = {
        "unrolled_gan.py": {"K0": 15, "K5": 4.4}.get(arm, 2.5),
        "lens_gan.py": 10 if "--no-lens" in flags else 1.0,
        "reg_gan.py": 8.8,
        "gan.py": 15,
        "aw_gan.py": 0.4,
    }.get(script, 1.8)
    return STEPS_OF.get(group, STEPS) / sps


def evaluations(run):
    """The classifier-metric records of a run, in step order."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "modes" in r or "classifier_fd" in r]


def mean_std(values, counts=False):
    """'mean ± std' over seeds (std with n - 1; 0 for one seed); counts (or values that are whole or >= 100) as whole
    numbers."""
    v = np.asarray(values, dtype=float)
    counts = counts or abs(v.mean()) >= 100 or (v == v.round()).all()
    fmt = ".0f" if counts else ".2f" if abs(v.mean()) >= 1 else ".3f"
    return f"{v.mean():{fmt}} ± {v.std(ddof=1) if len(v) > 1 else 0:{fmt}}"


def keep(out, root=KEPT, groups=tuple(GROUPS)):
    """Copy every finished run of a runs folder (bench_results' --out-dir) into root: its text files and, for seed 1,
    its last sample grid (samples.png). Returns how many runs were copied."""
    copied = 0
    for group, arm, seed, _, flags in runs(groups):
        _, run, finished = run_dir(out, group, arm, seed, flags)
        if not finished:
            continue
        dest = Path(root) / group / arm / str(seed)
        dest.mkdir(parents=True, exist_ok=True)
        for name in KEEP:
            shutil.copyfile(run / name, dest / name)
        if seed == 1:
            shutil.copyfile(sorted((run / "samples").glob("step_*.png"))[-1], dest / "samples.png")
        copied += 1
    return copied


def collect(root, groups):
    """{dataset: {(group, arm): {"seeds": [...], "evals": [[records] per seed], "wall": [s per seed], "grid": path}}}
    from the kept runs under root alone."""
    found = {}
    for group, arm, seed, _, flags in runs(groups):
        run = kept(group, arm, seed, root)
        if run is None:
            continue
        dataset = flags[flags.index("--dataset") + 1]
        entry = found.setdefault(dataset, {}).setdefault(
            (group, arm), {"seeds": [], "evals": [], "wall": [], "grid": None}
        )
        if not (run / "metrics.jsonl").is_file():
            fail(f"kept run {run} has no metrics.jsonl (keep args.json, metrics.jsonl, summary.json, bench.json)")
        entry["seeds"].append(seed)
        entry["evals"].append(evaluations(run))
        bench = run / "bench.json"
        wall = (
            json.loads(bench.read_text())["wall_s"]
            if bench.exists()
            else json.loads((run / "summary.json").read_text())["wall_time"]
        )
        entry["wall"].append(wall)
        entry["grid"] = entry["grid"] or (run / "samples.png" if (run / "samples.png").exists() else None)
    return found


def verdict(baseline, method, higher_is_better):
    """The verdict rule of docs/results.md on paired seeds ({seed: final value} per arm, the seeds both arms have):
    the improvement d_s = method - baseline (baseline - method where lower is better) per seed; k = how many d_s > 0;
    the mean of d_s with its 95 % t interval (n - 1 degrees of freedom). 'better' / 'worse' when the interval lies
    above / below 0, 'not established at this scale' when it contains 0, 'too few seeds' under 2 pairs."""
    seeds = sorted(set(baseline) & set(method))
    d = np.array([(method[s] - baseline[s]) * (1 if higher_is_better else -1) for s in seeds], dtype=float)
    n = len(d)
    if n < 2:
        return {
            "seeds": seeds,
            "k": int((d > 0).sum()),
            "n": n,
            "mean": float(d.mean()) if n else math.nan,
            "low": math.nan,
            "high": math.nan,
            "verdict": "too few seeds",
        }
    half = scipy.stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)
    low, high = d.mean() - half, d.mean() + half
    word = "better" if low > 0 else "worse" if high < 0 else "not established at this scale"
    return {
        "seeds": seeds,
        "k": int((d > 0).sum()),
        "n": n,
        "mean": float(d.mean()),
        "low": float(low),
        "high": float(high),
        "verdict": word,
    }


def floor(model, data_root):
    """What real digits score: the official test digits against the training digits' statistics (as a run's samples
    are), both 10,000; and, for scale, uniform noise. {images: {metric: value}}, kept as FLOOR beside the runs."""
    train = fid.mnist_digits(data_root, True)[0]
    reference = fid.statistics(fid.classify(model, train)[0])
    test = fid.mnist_digits(data_root, False)[0]
    noise = torch.randint(0, 256, test.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return {
        name: fid.mnist_quality(model, images, reference)
        for name, images in (("test digits", test[:10_000]), ("uniform noise", noise))
    }


def fail(message):
    """One error line and exit 2, never a traceback."""
    print(f"bench_results.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def report(root, groups, figures=ROOT / "docs" / "figures"):
    """From the kept files under root alone (no data, no classifier): the classifier floor (root/floor.json), markdown
    tables on stdout (per arm: final and best of each metric, mean ± std over seeds, minutes per run; per pair: the
    verdict on the first metric at the last evaluation and the per-seed values); figures of the metrics over training
    (paired arms in one panel) and of one sample grid per arm (seed 1). A missing file: one line, exit 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image, ImageDraw

    path = Path(root) / FLOOR.name
    if not path.is_file():
        fail(f"no classifier floor at {path}: a training run of this script writes it (MNIST at --data-root)")
    rows = json.loads(path.read_text())
    print(
        "MNIST classifier floor (10,000 images against the training digits' statistics)\n\n"
        "| images | classifier_fd | class_kl |\n|---|---|---|"
    )
    for name in ("test digits", "uniform noise"):
        print(f"| {name} | {rows[name]['classifier_fd']:.4f} | {rows[name]['class_kl']:.4f} |")
    found = collect(root, groups)
    if not found:
        fail(f"no finished runs of {', '.join(groups)} kept under {root}")
    for dataset, arms in found.items():
        names = METRICS[dataset]
        print(f"\n### {dataset}\n")
        print("| group | arm | seeds | " + " | ".join(f"{m} final | {m} best" for m, _ in names) + " | min / run |")
        print("|---|---|---|" + "---|---|" * len(names) + "---|")
        for (group, arm), r in arms.items():
            cells = []
            for m, best in names:
                cells += [
                    mean_std([e[-1][m] for e in r["evals"]]),
                    mean_std([best(x[m] for x in e) for e in r["evals"]]),
                ]
            print(
                f"| {group} | {arm} | {len(r['seeds'])} | " + " | ".join(cells) + f" | {np.mean(r['wall']) / 60:.1f} |"
            )
        metric, best = names[0]
        print(
            f"\n#### {dataset}: verdicts on {metric} at the last evaluation (paired seeds; improvement = "
            f"{'method - baseline' if best is max else 'baseline - method'}, 95 % t interval)\n"
        )
        print(
            "| group | method vs baseline | better on | mean improvement | 95 % interval | verdict "
            "| mean of the last 3 evaluations (baseline → method) | per seed (baseline → method) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for group in dict.fromkeys(g for g, _ in arms):
            base_arm = next(iter(GROUPS[group][2]))
            if (group, base_arm) not in arms:
                continue
            finals = {
                a: dict(zip(r["seeds"], (e[-1][metric] for e in r["evals"])))
                for (g, a), r in arms.items()
                if g == group
            }
            last3 = {  # per seed, the mean of the last three evaluations: steadier for a generator that hops
                a: dict(zip(r["seeds"], (np.mean([x[metric] for x in e[-3:]]) for e in r["evals"])))
                for (g, a), r in arms.items()
                if g == group
            }
            for arm in [a for a in finals if a != base_arm]:
                v = verdict(finals[base_arm], finals[arm], best is max)
                pairs = ", ".join(f"{s}: {finals[base_arm][s]:.0f} → {finals[arm][s]:.0f}" for s in v["seeds"])
                steadier = " → ".join(mean_std([last3[a][s] for s in v["seeds"]], counts=metric == "modes")
                                      for a in (base_arm, arm))
                print(
                    f"| {group} | {arm} vs {base_arm} | {v['k']} of {v['n']} | {v['mean']:.1f} | "
                    f"[{v['low']:.1f}, {v['high']:.1f}] | {v['verdict']} | {steadier} | {pairs} |"
                )
        panels = list(dict.fromkeys(g for g, _ in arms))
        fig, axes = plt.subplots(len(names), len(panels), figsize=(3.2 * len(panels), 2.6 * len(names)), squeeze=False)
        for col, group in enumerate(panels):
            for row, (m, _) in enumerate(names):
                ax = axes[row, col]
                for i, ((g, arm), r) in enumerate((k, v) for k, v in arms.items() if k[0] == group):
                    for e in r["evals"]:  # one thin line per seed, the mean thick
                        ax.plot([x["step"] for x in e], [x[m] for x in e], color=f"C{i}", alpha=0.3, lw=0.8)
                    n = min(len(e) for e in r["evals"])
                    mean = np.mean([[x[m] for x in e[:n]] for e in r["evals"]], 0)
                    ax.plot([x["step"] for x in r["evals"][0][:n]], mean, color=f"C{i}", lw=2, label=arm)
                ax.set_title(group if row == 0 else "", fontsize=9)
                ax.set_ylabel(m if col == 0 else "", fontsize=8)
                ax.set_yscale("log" if m == "classifier_fd" else "linear")
                ax.tick_params(labelsize=7)
                if row == len(names) - 1:
                    ax.set_xlabel("generator step", fontsize=8)
                if row == 0:
                    ax.legend(fontsize=7)
        fig.tight_layout()
        path = figures / f"results_{dataset}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
        grids = [(f"{g}: {a}", Image.open(r["grid"]).convert("RGB")) for (g, a), r in arms.items() if r["grid"]]
        if not grids:
            continue
        w, h = grids[0][1].size
        cols = min(4, len(grids))
        sheet = Image.new("RGB", (cols * w, -(-len(grids) // cols) * (h + 14)), "white")
        for i, (label, grid) in enumerate(grids):
            x, y = i % cols * w, i // cols * (h + 14)
            sheet.paste(grid, (x, y + 14))
            ImageDraw.Draw(sheet).text((x + 4, y + 1), label, fill="black")
        sheet.quantize(256).save(figures / f"results_{dataset}_samples.png", optimize=True)


if __name__ == "__main__":
    main()
