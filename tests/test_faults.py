"""Bad input and faults in all six image scripts (and fid.py, toy2d.py where the same path exists): one error line on
stderr, no traceback, exit 2 (1 for a fault during training), and nothing already written lost or changed: the run
directory, its checkpoint and summary stay byte for byte as they were, and a failed start leaves no run directory."""

import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fid
from conftest import TINY, check_bad_input, run_script

# a few-step run of every image script (tiny widths; the method's own flags at their cheapest)
SCRIPTS = {
    "gan": [],
    "lens_gan": ["--lens-channels", "4"],
    "aw_gan": ["--g-batch-size", "8", "--n-critic", "1"],
    "reg_gan": [],
    "unrolled_gan": ["--unroll-steps", "1"],
    "wgan_gp": ["--n-critic", "1"],
}
# each script's own float flags, which must reject inf and NaN as the shared ones do
METHOD_FLOATS = {
    "gan": [],
    "lens_gan": ["--lr-lens"],
    "aw_gan": ["--eps", "--delta"],
    "reg_gan": ["--gamma", "--noise-std"],
    "unrolled_gan": [],
    "wgan_gp": ["--gp-lambda"],
}
ALL = pytest.mark.parametrize("name", SCRIPTS)


def small(name, data_root, tmp_path, *extra):
    return TINY + [
        "--ngf",
        "8",
        "--ndf",
        "8",
        *SCRIPTS[name],
        "--data-root",
        data_root,
        "--out-dir",
        str(tmp_path / "runs"),
        *extra,
    ]


def files(folder):
    """{relative path: bytes} of every file below folder."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def run_dirs(tmp_path):
    return sorted((tmp_path / "runs").glob("*__*")) if (tmp_path / "runs").exists() else []


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-step run of every script (module scope: trained once)."""
    from conftest import SHARED_DATA

    if not (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip("offline test data not found")
    runs = {}
    for name in SCRIPTS:
        tmp = tmp_path_factory.mktemp(name)
        summary = importlib.import_module(name).main(small(name, str(SHARED_DATA), tmp, "--total-steps", "2"))
        runs[name] = (Path(summary["run_dir"]), str(SHARED_DATA))
    return runs


@ALL
def test_resuming_a_finished_run_changes_nothing(name, finished, capsys):
    """Defect 1: nothing to train is one line and exit 0; a --total-steps below the checkpoint's step is refused; the
    run's files (summary, args, metrics, checkpoint) stay byte for byte."""
    main = importlib.import_module(name).main
    run_dir, _ = finished[name]
    before = files(run_dir)
    with pytest.raises(SystemExit) as exc:
        main(["--resume", str(run_dir / "checkpoint.pt")])
    assert exc.value.code == 0 and "already at step 2: nothing to train" in capsys.readouterr().out
    check_bad_input(
        main,
        ["--resume", str(run_dir / "checkpoint.pt"), "--total-steps", "1"],
        capsys,
        "--total-steps 1 is below its step 2",
    )
    assert files(run_dir) == before


@ALL
def test_resume_with_another_dataset_is_refused_before_any_data_is_loaded(name, finished, capsys, tmp_path):
    """Defect 11: run-defining flags are compared first (the data root here holds nothing at all)."""
    run_dir, _ = finished[name]
    before = files(run_dir)
    ckpt = str(run_dir / "checkpoint.pt")
    main = importlib.import_module(name).main
    check_bad_input(
        main,
        ["--resume", ckpt, "--dataset", "cifar10", "--data-root", str(tmp_path / "nothing")],
        capsys,
        "trained with --dataset mnist, not cifar10",
    )
    assert files(run_dir) == before and not (tmp_path / "nothing").exists()


@ALL
def test_damaged_checkpoints_are_named_for_what_they_are(name, finished, capsys, tmp_path):
    """Defect 5: random bytes, an empty file, a truncated checkpoint, a torch file that is no cleangan checkpoint."""
    main = importlib.import_module(name).main
    good = (finished[name][0] / "checkpoint.pt").read_bytes()
    cases = {"random.pt": np.random.default_rng(0).bytes(4096), "empty.pt": b"", "truncated.pt": good[: len(good) // 2]}
    for file, content in cases.items():
        (tmp_path / file).write_bytes(content)
        line = check_bad_input(
            main,
            ["--resume", str(tmp_path / file)],
            capsys,
            "cannot resume",
            file,
            "not a readable checkpoint (truncated or not a torch file)",
        )
        assert "_use_new_zipfile_serialization" not in line and "miniz" not in line
    torch.save({"a": 1}, tmp_path / "other.pt")
    check_bad_input(main, ["--resume", str(tmp_path / "other.pt")], capsys, "not a cleangan checkpoint")
    check_bad_input(main, ["--resume", str(tmp_path)], capsys, "cannot resume", "Is a directory")


@ALL
def test_infinite_and_nan_floats_are_refused(name, data_root, tmp_path, capsys):
    """Defect 4: every float flag (the shared ones and the method's) rejects inf and NaN before anything starts."""
    main = importlib.import_module(name).main
    for flag in ["--lr-d", "--lr-g", "--ema-decay", "--beta1"] + METHOD_FLOATS[name]:
        for value in ("inf", "1e309", "nan", "-inf"):
            check_bad_input(main, small(name, data_root, tmp_path, f"{flag}={value}"), capsys, flag, "finite")
    assert run_dirs(tmp_path) == []


@ALL
def test_a_corrupt_image_is_named_and_leaves_no_run_directory(name, image_folder, tmp_path, capsys):
    """Defect 2 (and 6): a text file named x.jpg in a class folder."""
    (Path(image_folder) / "a" / "x.jpg").write_text("not an image")
    args = small(name, image_folder, tmp_path, "--dataset", "folder")
    check_bad_input(importlib.import_module(name).main, args, capsys, "cannot read an image", "x.jpg")
    assert run_dirs(tmp_path) == []


@ALL
def test_filesystem_errors(name, data_root, finished, tmp_path, capsys):
    """Defect 3: --out-dir that is a file; a run directory that cannot be written on resume; a checkpoint that
    cannot be replaced during training (exit 1, the old checkpoint kept, no .tmp left). Made with folders where files
    go, so that they hold for root too."""
    main = importlib.import_module(name).main
    (tmp_path / "file").write_text("x")
    check_bad_input(
        main,
        small(name, data_root, tmp_path) + ["--out-dir", str(tmp_path / "file")],
        capsys,
        "cannot create a run directory",
        "Not a directory",
    )
    run = tmp_path / "run"
    summary = main(small(name, data_root, tmp_path, "--total-steps", "2", "--out-dir", str(run)))
    run_dir = Path(summary["run_dir"])
    (run_dir / "metrics.jsonl").unlink()
    (run_dir / "metrics.jsonl").mkdir()  # cannot be written as a file
    before = files(run_dir)
    check_bad_input(
        main,
        ["--resume", str(run_dir / "checkpoint.pt"), "--total-steps", "4"],
        capsys,
        "cannot write to",
        str(run_dir),
    )
    assert files(run_dir) == before
    (run_dir / "metrics.jsonl").rmdir()
    ckpt = run_dir / "checkpoint.pt"
    ckpt.rename(run_dir / "saved.pt")
    ckpt.mkdir()  # os.replace(checkpoint.pt.tmp, checkpoint.pt) fails
    with pytest.raises(SystemExit) as exc:
        main(["--resume", str(run_dir / "saved.pt"), "--total-steps", "4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 1 and len(err) == 1 and "cannot write" in err[0] and "checkpoint.pt" in err[0], err
    assert not list(run_dir.glob("*.tmp"))


def test_an_interrupted_save_leaves_no_tmp(tmp_path, monkeypatch):
    """Defect 12: a second Ctrl-C (KeyboardInterrupt) during the save leaves the old checkpoint and no .tmp."""
    import gan

    (tmp_path / "checkpoint.pt").write_bytes(b"old")

    def interrupted(obj, path):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gan.save_checkpoint(tmp_path / "checkpoint.pt", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"old"


def test_missing_inception_weights_leave_no_run_directory(data_root, tmp_path, capsys, monkeypatch):
    """Defect 6: --eval-every with FID and no weights offline fails before the run directory is made."""
    import gan

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("CLEANGAN_FID_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    check_bad_input(gan.main, small("gan", data_root, tmp_path, "--eval-every", "2"), capsys, "--fid-weights")
    assert run_dirs(tmp_path) == []


def test_missing_data_says_where_the_files_go(tmp_path, capsys):
    """Defect 7: the files expected, the flag to point elsewhere, and no folder left behind by a failed download."""
    import gan

    for dataset, expected in (
        ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
        ("cifar10", "cifar-10-batches-py"),
        ("fashion-mnist", "FashionMNIST/raw/train-images-idx3-ubyte"),
    ):
        line = check_bad_input(
            gan.main,
            ["--dataset", dataset, "--data-root", str(tmp_path / "data"), "--no-download"],
            capsys,
            str(tmp_path / "data" / expected),
            "--data-root",
            "--download",
        )
        assert "download=True" not in line
    (tmp_path / "empty").mkdir()
    check_bad_input(
        gan.main,
        ["--dataset", "folder", "--data-root", str(tmp_path / "empty")],
        capsys,
        str(tmp_path / "empty" / "<class>" / "<image>"),
        "--data-root",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_evaluate_no_fid_uses_n_writes_a_file_and_fid_py_reproduces_it_from_pngs(data_root, tmp_path, capsys):
    """Defects 8 and 9: --evaluate N --no-fid evaluates N samples (not --classifier-samples) and writes
    evaluate_step<S>_n<N>.json; `python fid.py --mnist` on the --generate N PNGs gives the same numbers."""
    import gan

    summary = gan.main(small("gan", data_root, tmp_path, "--total-steps", "2", "--image-size", "32"))
    ckpt = str(Path(summary["run_dir"]) / "checkpoint.pt")
    result = gan.main(["--resume", ckpt, "--evaluate", "30", "--no-fid", "--classifier-samples", "100"])
    written = json.loads((Path(summary["run_dir"]) / "evaluate_step0000002_n30.json").read_text())
    assert written["samples"] == 30 and written["classifier_fd"] == result["classifier_fd"]
    assert "(30 samples, step 2)" in capsys.readouterr().out
    gan.main(["--resume", ckpt, "--generate", "30", "--generate-dir", str(tmp_path / "png")])
    from_pngs = fid.main(["--mnist", str(tmp_path / "png"), "--data-root", data_root, "--cache-dir", str(tmp_path)])
    assert from_pngs["classifier_fd"] == pytest.approx(result["classifier_fd"], rel=1e-9)
    assert from_pngs["class_kl"] == pytest.approx(result["class_kl"], rel=1e-9)


def test_help_shows_every_default(capsys):
    """Defect 10: every script's --help gives the batch size's default, what --checkpoint-every 0 means, and lens_gan
    says which defaults --loss wgan-gp changes; fid.py's bad values are one line."""
    for name in SCRIPTS:
        with pytest.raises(SystemExit):
            importlib.import_module(name).parse_args(["--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--batch-size BATCH_SIZE" in text and "(default: 64)" in text.split("--batch-size BATCH_SIZE")[2][:120]
        assert "0: only the one always written at the end" in text
    with pytest.raises(SystemExit):
        importlib.import_module("lens_gan").parse_args(["--help"])
    assert "(--loss wgan-gp: 5) (default: 1)" in " ".join(capsys.readouterr().out.split())
    out = run_script("fid.py", "a", "b", "--batch-size", "0")
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "fid.py: error: --batch-size must be >= 1 and --num-workers >= 0"
    ]
    out = run_script("toy2d.py", "--help")
    assert "samples per batch of D and of G (default: 512)" in " ".join(out.stdout.split())
    out = run_script("toy2d.py", "--lr-d", "inf")
    assert out.returncode == 2 and "--lr-d must be a finite number" in out.stderr


def test_toy2d_out_dir_that_is_a_file(tmp_path, capsys):
    import toy2d

    (tmp_path / "file").write_text("x")
    check_bad_input(
        toy2d.main,
        ["--method", "gan", "--steps", "2", "--jobs", "1", "--out-dir", str(tmp_path / "file")],
        capsys,
        "cannot create a run directory",
        "Not a directory",
    )


def test_wall_time_sums_the_parts_of_a_resumed_run(data_root, tmp_path):
    """Defect 12: summary.json's wall_time covers every part of a resumed run."""
    import gan

    first = gan.main(small("gan", data_root, tmp_path, "--total-steps", "2"))
    ckpt = torch.load(Path(first["run_dir"]) / "checkpoint.pt", weights_only=True)
    assert 0 < ckpt["wall_time"] <= first["wall_time"]
    second = gan.main(["--resume", str(Path(first["run_dir"]) / "checkpoint.pt"), "--total-steps", "4"])
    assert second["wall_time"] > ckpt["wall_time"] and math.isfinite(second["wall_time"])


def test_lens_grid_spreads_over_the_classes_of_a_folder(tmp_path):
    """Defect 12: the lens grid's real images come from the whole folder (sorted by class), not its first class: 70
    black images in class a, 10 white ones in b; the first 64 would all be black."""
    import lens_gan

    for cls, count, value in (("a", 70, 0), ("b", 10, 255)):
        (tmp_path / "folder" / cls).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (16, 16), (value,) * 3).save(tmp_path / "folder" / cls / f"{i:02d}.png")
    summary = lens_gan.main(
        [
            "--dataset",
            "folder",
            "--data-root",
            str(tmp_path / "folder"),
            "--image-size",
            "16",
            "--batch-size",
            "8",
            "--num-workers",
            "0",
            "--ngf",
            "8",
            "--ndf",
            "8",
            "--lens-channels",
            "4",
            "--total-steps",
            "1",
            "--out-dir",
            str(tmp_path / "runs"),
        ]
    )
    grid = np.array(
        Image.open(Path(summary["run_dir"]) / "samples" / "lens_step_0000001.png").convert("L"), dtype=float
    )
    assert grid.max() > 200 and grid.min() < 50  # white digits' tiles beside black ones
