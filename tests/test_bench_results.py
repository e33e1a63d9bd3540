"""Tests of benchmarks/bench_results.py, the script behind docs/results.md: its table numbers against hand-computed
means, stds and bests of constructed runs, its figures, and that it skips finished runs and resumes interrupted ones."""
import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_results  # noqa: E402


def fake_run(out, exp, seed, modes, kls, steps=2000):
    run = out / f"stacked-mnist__{exp}__{seed}__100{seed}"
    (run / "samples").mkdir(parents=True)
    rows = [{"step": 100, "d_loss": 1.0}] + [{"step": 500 * (i + 1), "modes": m, "modes_kl": k} for i, (m, k) in enumerate(zip(modes, kls))]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "summary.json").write_text(json.dumps({"step": steps, "wall_time": 1.0}))
    Image.new("RGB", (40, 30), (seed * 50, 0, 0)).save(run / "samples" / "step_0002000.png")
    return run


def test_report_final_best_mean_std_and_figures(tmp_path, capsys):
    out, figures = tmp_path / "runs", tmp_path / "figures"
    figures.mkdir()
    fake_run(out, "unrolled-K0", 1, [100, 300, 200], [3.0, 2.0, 2.5])
    fake_run(out, "unrolled-K0", 2, [400, 500, 600], [1.5, 1.0, 0.5])
    fake_run(out, "unrolled-K5", 1, [700, 800, 900], [0.9, 0.8, 0.7])
    fake_run(out, "unrolled-K10", 1, [5, 6], [6.0, 5.0], steps=1000)  # interrupted: not in the table
    (out / "wall_times.json").write_text(json.dumps({"unrolled-K0__1": 60, "unrolled-K0__2": 180}))
    bench_results.report(out, ["unrolled"], figures)
    table = capsys.readouterr().out
    # K0: final 200, 600 -> 400 +- 282.8 (n - 1); best (max modes) 300, 600 -> 450 +- 212.1;
    # KL final 2.5, 0.5 -> 1.50 +- 1.41; best (min) 2.0, 0.5 -> 1.25 +- 1.06; wall 60 s, 180 s -> 2.0 min
    assert "| unrolled | K0 | 2 | 400 ± 283 | 450 ± 212 | 1.50 ± 1.41 | 1.25 ± 1.06 | 2.0 |" in table
    assert "| unrolled | K5 | 1 | 900 ± 0 | 900 ± 0 | 0.700 ± 0.000 | 0.700 ± 0.000 | 0.0 |" in table  # summary's wall time
    assert "K10" not in table  # no finished run of it
    assert (figures / "results_stacked-mnist.png").stat().st_size > 0
    sheet = Image.open(figures / "results_stacked-mnist_samples.png")
    assert sheet.size == (4 * 40, 30 + 14)  # 4 columns, one row: the grid of seed 1 of each arm, under its label
    assert sheet.convert("RGB").getpixel((10, 20)) == (50, 0, 0)  # K0's grid is seed 1's


def test_finished_runs_are_skipped_and_interrupted_ones_resumed(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    (tmp_path / "logs").mkdir()
    flags = ["--dataset", "stacked-mnist", "--unroll-steps", "5"]
    fake_run(tmp_path, "unrolled-K5", 1, [1], [1.0])
    assert bench_results.train(str(tmp_path), "data", "unrolled", "K5", 1, "unrolled_gan.py", flags) == "unrolled-K5 seed 1: done before"
    assert calls == []
    run = fake_run(tmp_path, "unrolled-K5", 2, [1], [1.0], steps=1500)  # stopped early: no summary of the last step
    (run / "checkpoint.pt").touch()
    bench_results.train(str(tmp_path), "data", "unrolled", "K5", 2, "unrolled_gan.py", flags)
    bench_results.train(str(tmp_path), "data", "unrolled", "K5", 3, "unrolled_gan.py", flags)  # never started
    assert calls[0][-2:] == ["--resume", "auto"] and "--resume" not in calls[1]
    assert calls[1][calls[1].index("--seed") + 1] == "3" and calls[1][calls[1].index("--total-steps") + 1] == "2000"
