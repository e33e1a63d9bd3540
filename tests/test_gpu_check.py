"""benchmarks/gpu_check.py, the prepared GPU check: its comparisons against constructed checkpoints, and a CPU smoke
run of the whole check (one script, a small budget) so that it never rots before a GPU comes."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def checkpoint(w):
    return {
        "step": 2,
        "G": {"w": torch.tensor([1.0, w])},
        "opt_G": {"state": {0: {"exp_avg": torch.zeros(2)}}, "param_groups": [{"lr": 1e-3}]},
    }


def test_largest_difference_of_checkpoints():
    assert gpu_check.largest_difference(checkpoint(2.0), checkpoint(2.0)) == 0.0
    assert gpu_check.largest_difference(checkpoint(2.0), checkpoint(2.25)) == 0.25
    other = checkpoint(2.0)
    other["G"]["v"] = torch.zeros(1)  # a tensor the other lacks
    assert gpu_check.largest_difference(checkpoint(2.0), other) == math.inf


def test_metrics_compare_without_timings(tmp_path):
    for name, sps in (("a", 1.0), ("b", 2.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text(json.dumps({"step": 4, "g_loss": 0.5, "sps": sps}) + "\n")
    assert gpu_check.metrics(tmp_path / "a") == gpu_check.metrics(tmp_path / "b") == [{"step": 4, "g_loss": 0.5}]


@pytest.mark.skipif(not (DATA / "cifar10-test-jpg").is_dir(), reason="needs ../shared/data")
def test_cpu_smoke_run(tmp_path, capsys):
    report = gpu_check.main(
        [
            "--device",
            "cpu",
            "--budget-s",
            "100",
            "--max-steps",
            "8",
            "--max-fid-images",
            "20",
            "--scripts",
            "gan.py",
            "--out",
            str(tmp_path),
        ]
    )
    row = report["scripts"][0]
    assert row["steps"] >= 4 and row["steps_per_s"] > 0 and row["finite"]
    assert row["resume_metrics_identical"] and row["resume_max_abs_diff"] == 0.0  # exact resume on the CPU
    assert row["batches_per_step"] == 1.0 and 0 <= row["data_wait_share"] < 1
    assert report["evaluation"]["fid_images"] >= 10
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| gan.py |" in table and table.strip() in capsys.readouterr().out
    assert json.loads((tmp_path / "gpu_check.json").read_text())["scripts"] == report["scripts"]
