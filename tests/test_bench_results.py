"""Tests of benchmarks/bench_results.py, the script behind docs/results.md: the verdict rule against hand-computed
values, the report built from kept run files alone (tables, verdicts, figures), keeping runs, and that it skips kept
runs and resumes interrupted ones."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_results  # noqa: E402


def fake_run(out, exp, seed, modes, kls, steps=2000):
    """A run directory as the scripts write it (stacked MNIST)."""
    run = out / f"stacked-mnist__{exp}__{seed}__100{seed}"
    (run / "samples").mkdir(parents=True)
    rows = [{"step": 100, "d_loss": 1.0}]
    rows += [{"step": 500 * (i + 1), "modes": m, "modes_kl": k} for i, (m, k) in enumerate(zip(modes, kls))]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "summary.json").write_text(json.dumps({"step": steps, "wall_time": 1.0}))
    (run / "args.json").write_text(json.dumps({"seed": seed}))
    Image.new("RGB", (40, 30), (seed * 50, 0, 0)).save(run / "samples" / "step_0002000.png")
    return run


def test_verdict_by_hand():
    # higher is better: d = 3, 1, 2 -> mean 2, sd 1, t(0.975, 2) = 4.302653 -> half 4.302653 / sqrt(3) = 2.48414
    v = bench_results.verdict({1: 10, 2: 10, 3: 10}, {1: 13, 2: 11, 3: 12}, higher_is_better=True)
    assert (v["k"], v["n"], v["mean"]) == (3, 3, 2.0)
    assert v["low"] == pytest.approx(2 - 2.484138, abs=1e-5) and v["high"] == pytest.approx(2 + 2.484138, abs=1e-5)
    assert v["verdict"] == "not established at this scale"  # better on 3 of 3, but the interval contains 0
    # lower is better (FD): d = baseline - method = 10, 12, 11, 9, 13 -> mean 11, sd 1.5811, t(0.975, 4) = 2.776445
    v = bench_results.verdict({s: 100 for s in range(1, 6)}, {1: 90, 2: 88, 3: 89, 4: 91, 5: 87, 6: 0}, False)
    assert v["seeds"] == [1, 2, 3, 4, 5] and v["k"] == 5  # seed 6 has no baseline: not paired, left out
    assert v["low"] == pytest.approx(11 - 2.776445 * 1.581139 / 5**0.5, abs=1e-5)
    assert v["verdict"] == "better"
    assert bench_results.verdict({1: 1, 2: 2, 3: 3}, {1: 5, 2: 7, 3: 8}, False)["verdict"] == "worse"  # d = -4, -5, -5
    assert bench_results.verdict({1: 1}, {1: 5}, True)["verdict"] == "too few seeds"



def test_mean_std_formats():
    assert bench_results.mean_std([0.5, 1.5]) == "1.00 ± 0.71"  # sd = sqrt(0.5) with n - 1
    assert bench_results.mean_std([0.25, 0.35]) == "0.300 ± 0.071"
    assert bench_results.mean_std([1, 1, 1]) == "1 ± 0" and bench_results.mean_std([150.5, 250.5]) == "200 ± 71"
    # mode counts averaged over three evaluations stay counts: (41 + 1 + 1) / 3 and 353
    assert bench_results.mean_std([43 / 3, 353], counts=True) == "184 ± 239"
    assert bench_results.mean_std([43 / 3, 20], counts=True) == "17 ± 4"

def test_report_from_kept_files_alone(tmp_path, capsys):
    out, kept, figures = tmp_path / "runs", tmp_path / "kept", tmp_path / "figures"
    figures.mkdir()
    fake_run(out, "unrolled-K0", 1, [100, 300, 200], [3.0, 2.0, 2.5])
    fake_run(out, "unrolled-K0", 2, [400, 500, 600], [1.5, 1.0, 0.5])
    fake_run(out, "unrolled-K5", 1, [700, 800, 900], [0.9, 0.8, 0.7])
    fake_run(out, "unrolled-K5", 2, [700, 800, 700], [0.9, 0.8, 0.7])
    fake_run(out, "unrolled-K10", 1, [5, 6], [6.0, 5.0], steps=1000)  # interrupted: not kept
    assert bench_results.keep(out, kept, ["unrolled"]) == 4
    assert sorted(p.name for p in (kept / "unrolled" / "K0" / "1").iterdir()) == [
        "args.json",
        "metrics.jsonl",
        "samples.png",
        "summary.json",
    ]  # seed 1 keeps its last grid
    assert not (kept / "unrolled" / "K0" / "2" / "samples.png").exists()
    (kept / "unrolled" / "K0" / "1" / "bench.json").write_text(json.dumps({"wall_s": 60}))
    (kept / "unrolled" / "K0" / "2" / "bench.json").write_text(json.dumps({"wall_s": 180}))
    floor = {
        "test digits": {"classifier_fd": 6.64531, "class_kl": 0.00173},
        "uniform noise": {"classifier_fd": 2133.27, "class_kl": 2.02623},
    }
    (kept / "floor.json").write_text(json.dumps(floor))  # written when runs are trained; no data or classifier here
    bench_results.report(kept, ["unrolled"], figures)  # the runs folder is not read
    table = capsys.readouterr().out
    assert "| test digits | 6.6453 | 0.0017 |\n| uniform noise | 2133.2700 | 2.0262 |" in table
    # K0: final 200, 600 -> 400 +- 282.8 (n - 1); best (max modes) 300, 600 -> 450 +- 212.1;
    # KL final 2.5, 0.5 -> 1.50 +- 1.41; best (min) 2.0, 0.5 -> 1.25 +- 1.06; wall 60 s, 180 s -> 2.0 min
    assert "| unrolled | K0 | 2 | 400 ± 283 | 450 ± 212 | 1.50 ± 1.41 | 1.25 ± 1.06 | 2.0 |" in table
    # K5 vs K0 on modes: d = 900 - 200 = 700, 700 - 600 = 100 -> mean 400, sd 424.26, t(0.975, 1) = 12.7062: half 3811.9
    assert "| unrolled | K5 vs K0 | 2 of 2 | 400.0 | [-3411.9, 4211.9] | not established at this scale |" in table
    assert "1: 200 → 900, 2: 600 → 700" in table
    # the mean of the last three evaluations per seed: K0 200, 500 -> 350 +- 212.1; K5 800, 733.3 -> 767 +- 47.1
    assert "| not established at this scale | 350 ± 212 → 767 ± 47 | 1: 200" in table
    assert "K10" not in table
    assert (figures / "results_stacked-mnist.png").stat().st_size > 0
    sheet = Image.open(figures / "results_stacked-mnist_samples.png")
    assert sheet.size == (2 * 40, 30 + 14)  # one row: the grid of seed 1 of each kept arm (K0, K5), under its label
    assert sheet.convert("RGB").getpixel((10, 20)) == (50, 0, 0)  # K0's grid is seed 1's


def test_kept_runs_are_skipped_interrupted_ones_resumed_finished_ones_kept(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(bench_results, "KEPT", tmp_path / "kept")
    monkeypatch.setattr(
        subprocess, "run", lambda cmd, **kw: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0, "")
    )
    out = tmp_path / "runs"
    (out / "logs").mkdir(parents=True)
    flags = ["--dataset", "stacked-mnist", "--unroll-steps", "5"]
    run = fake_run(out, "unrolled-K5", 1, [1], [1.0])
    bench_results.keep(out, tmp_path / "kept", ["unrolled"])
    result = bench_results.train(str(out), "data", "unrolled", "K5", 1, "unrolled_gan.py", flags)
    assert result == "unrolled-K5 seed 1: kept before" and calls == []
    run = fake_run(out, "unrolled-K5", 2, [1], [1.0], steps=1500)  # stopped early: no summary of the last step
    (run / "checkpoint.pt").touch()
    assert "ended before its last step" in bench_results.train(
        str(out), "data", "unrolled", "K5", 2, "unrolled_gan.py", flags
    )
    bench_results.train(str(out), "data", "unrolled", "K5", 3, "unrolled_gan.py", flags)  # never started
    training = [c for c in calls if c[0] == sys.executable]
    assert training[0][-2:] == ["--resume", "auto"] and "--resume" not in training[1]
    assert training[1][training[1].index("--seed") + 1] == "3"
    assert training[1][training[1].index("--total-steps") + 1] == "2000"
    fake_run(out, "unrolled-K5", 4, [7], [1.0])  # finishes: its text files are kept, with the wall time and command
    monkeypatch.setattr(
        bench_results, "run_dir", lambda *a: ("unrolled-K5", out / "stacked-mnist__unrolled-K5__4__1004", True)
    )
    assert bench_results.train(str(out), "data", "unrolled", "K5", 4, "unrolled_gan.py", flags)[:2] == (
        "unrolled-K5",
        4,
    )
    bench = json.loads((tmp_path / "kept" / "unrolled" / "K5" / "4" / "bench.json").read_text())
    assert bench["command"].startswith("python unrolled_gan.py --dataset stacked-mnist") and bench["resumed"] is False
    assert bench_results.kept("unrolled", "K5", 4, tmp_path / "kept") is not None


def test_report_without_a_needed_file_is_one_line_and_exit_2(tmp_path, capsys):
    """A fresh clone without the floor file, with no kept runs, or with a kept run missing its metrics: one error line
    naming what and where, exit 2, no traceback."""
    kept = tmp_path / "kept"
    fake_run(tmp_path / "runs", "unrolled-K0", 1, [100], [3.0])
    bench_results.keep(tmp_path / "runs", kept, ["unrolled"])
    cases = [(lambda: None, "no classifier floor at", "floor.json")]
    cases.append(
        (
            lambda: (kept / "floor.json").write_text(
                json.dumps({n: {"classifier_fd": 1, "class_kl": 0} for n in ("test digits", "uniform noise")})
            ),
            "no finished runs of references kept under",
            str(kept),
        )
    )
    cases.append((lambda: (kept / "unrolled" / "K0" / "1" / "metrics.jsonl").unlink(), "has no metrics.jsonl", "K0"))
    for prepare, *expected in cases:
        prepare()
        with pytest.raises(SystemExit) as exc:
            bench_results.report(kept, ["references"] if "no finished" in expected[0] else ["unrolled"], tmp_path)
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("bench_results.py: error: ")
        assert all(word in err[0] for word in expected), err[0]


def test_report_runs_in_a_fresh_clone_without_data(tmp_path):
    """The committed kept runs alone rebuild the report: a subprocess with no MNIST anywhere near (HOME and the
    working folder elsewhere, the default --data-root absent) prints the floor and the verdict tables."""
    if not (bench_results.KEPT / "floor.json").is_file():
        pytest.skip("no kept runs in this checkout")
    figures = tmp_path / "figures"
    figures.mkdir()
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import bench_results as b; "
        f"b.report(b.KEPT, ['unrolled', 'reg'], __import__('pathlib').Path({str(figures)!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "| test digits | 6.6453 | 0.0017 |" in out.stdout and "| reg | gamma0.4 vs gamma0 | 5 of 5 |" in out.stdout
    assert (figures / "results_mnist.png").is_file() and (figures / "results_stacked-mnist.png").is_file()
