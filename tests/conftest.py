"""Shared test helpers. Every method script is tested the same way: unit tests of its paper functions, a few
real training steps on ../shared/data MNIST (skipped when that folder is absent), exact resume, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CLEANGAN_TEST_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)  # tiny nets: threads only add overhead, and CI has 2 busy cores

# A few-second MNIST run at tiny width; every image script accepts these shared flags.
TINY = [
    "--dataset",
    "mnist",
    "--image-size",
    "16",
    "--batch-size",
    "8",
    "--num-workers",
    "0",
    "--log-every",
    "1",
    "--sample-every",
    "2",
    "--checkpoint-every",
    "2",
]


@pytest.fixture(autouse=True)
def quick_mnist_classifier(monkeypatch):
    """The real MNIST classifier trains for minutes on first use: scripts evaluated on MNIST in tests get one trained
    for a few steps on a few digits instead (tests/test_classifier.py tests the real training function)."""
    import fid

    def quick(root, cache_dir, device="cpu", download=False):
        images, labels = fid.mnist_digits(root, train=True, download=download)
        return fid.train_mnist_classifier(images[:256], labels[:256], steps=5, device=device), 0.0

    monkeypatch.setattr(fid, "mnist_classifier", quick)


@pytest.fixture
def data_root():
    """The offline MNIST of ../shared/data; tests that need it are skipped in a clone without it."""
    if not (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip(f"offline test data not found at {SHARED_DATA}")
    return str(SHARED_DATA)


@pytest.fixture
def image_folder(tmp_path):
    """A tiny ImageFolder tree (2 classes x 8 random 40x40 RGB images) written by the test itself."""
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "folder" / cls).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
                tmp_path / "folder" / cls / f"{i}.png"
            )
    return str(tmp_path / "folder")


def run_script(script, *args, timeout=600):
    """Run a script as a user would; returns the CompletedProcess (stdout, stderr, returncode)."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def read_metrics(run_dir, drop=("sps",)):
    """metrics.jsonl as a list of dicts, without the wall-clock fields that legitimately differ between runs."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in lines]


def states(ckpt):
    """The names of the state dicts a checkpoint holds (models and optimizers, the latter as opt_<model>)."""
    return {k for k, v in ckpt.items() if isinstance(v, dict) and k not in ("args", "rng")}


def check_run_dir(summary, steps, sample_steps):
    """The run directory has everything SPEC §2 promises and summary.json equals what main returned."""
    run_dir = Path(summary["run_dir"])
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert json.loads((run_dir / "args.json").read_text())["total_steps"] == steps
    assert [m["step"] for m in read_metrics(run_dir)] == list(range(1, steps + 1))
    assert sorted(p.name for p in (run_dir / "samples").glob("step_*.png")) >= [
        f"step_{s:07d}.png" for s in sample_steps
    ]
    assert list(run_dir.glob("events.out.tfevents.*")), "no TensorBoard events"
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == steps
    return run_dir, ckpt


def check_resume_exact(main, args, tmp_path, total=8, first=4, drop=("sps",)):
    """A run of `total` steps and a run of `first` steps resumed to `total` log identical metrics (except the
    wall-clock fields in `drop`)."""
    full = main(args + ["--total-steps", str(total), "--out-dir", str(tmp_path / "full")])
    main(args + ["--total-steps", str(first), "--out-dir", str(tmp_path / "split")])
    resumed = main(args + ["--total-steps", str(total), "--out-dir", str(tmp_path / "split"), "--resume", "auto"])
    a, b = read_metrics(full["run_dir"], drop), read_metrics(resumed["run_dir"], drop)
    assert [m["step"] for m in b] == list(range(1, total + 1))
    assert a == b
    return full, resumed


def check_bad_input(main, args, capsys, *expected):
    """Bad input: exit code 2 and one error line on stderr naming the problem (no traceback: any other
    exception would propagate and fail the test)."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ": error: " in err[0], err
    for word in expected:
        assert word in err[0], err[0]
    return err[0]
