"""gan.py: the losses against hand-computed values, the networks, and the script end to end."""

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import gan
from conftest import ROOT, TINY, check_bad_input, check_resume_exact, check_run_dir, read_metrics, run_script, states

REAL, FAKE = torch.tensor([0.0, 2.0]), torch.tensor([-1.0, 1.0])
sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731


@pytest.mark.parametrize(
    "loss, expected_d, expected_g",
    [
        # -log D(x) - log(1 - D(G(z))), each a batch mean; G: -log D(G(z)) (gan) or log(1 - D(G(z))) (mm)
        (
            "gan",
            -(math.log(sig(0)) + math.log(sig(2))) / 2 - (math.log(1 - sig(-1)) + math.log(1 - sig(1))) / 2,
            -(math.log(sig(-1)) + math.log(sig(1))) / 2,
        ),
        (
            "mm",
            -(math.log(sig(0)) + math.log(sig(2))) / 2 - (math.log(1 - sig(-1)) + math.log(1 - sig(1))) / 2,
            (math.log(1 - sig(-1)) + math.log(1 - sig(1))) / 2,
        ),
        ("lsgan", ((0 - 1) ** 2 + (2 - 1) ** 2) / 2 + ((-1) ** 2 + 1**2) / 2, ((-1 - 1) ** 2 + (1 - 1) ** 2) / 2),
        ("hinge", (max(0, 1 - 0) + max(0, 1 - 2)) / 2 + (max(0, 1 - 1) + max(0, 1 + 1)) / 2, -(-1 + 1) / 2),
    ],
)
def test_losses_match_hand_computed_values(loss, expected_d, expected_g):
    assert gan.d_loss(REAL, FAKE, loss).item() == pytest.approx(expected_d, rel=1e-6)
    assert gan.g_loss(FAKE, loss).item() == pytest.approx(expected_g, rel=1e-6, abs=1e-7)


def test_log_losses_are_stable_for_extreme_logits():
    big = torch.tensor([100.0, -100.0])
    for loss in ("gan", "mm"):
        assert torch.isfinite(gan.d_loss(big, -big, loss)) and torch.isfinite(gan.g_loss(big, loss))
    # -log(1 - sigmoid(100)) = 100 + log(1 + e^-100): log(sigmoid) would give inf here
    assert gan.d_loss(torch.tensor([100.0]), torch.tensor([100.0]), "gan").item() == pytest.approx(100.0)


def test_saturating_and_non_saturating_gradients():
    """The point of the non-saturating loss: at D(G(z)) ~ 0 its gradient stays large while mm's vanishes."""
    x = torch.tensor([-10.0], requires_grad=True)
    (grad_ns,) = torch.autograd.grad(gan.g_loss(x, "gan"), x)
    (grad_mm,) = torch.autograd.grad(gan.g_loss(x, "mm"), x)
    assert grad_ns.item() == pytest.approx(-(1 - sig(-10)))  # d/dphi -log sigmoid(phi)
    assert grad_mm.item() == pytest.approx(-sig(-10))  # d/dphi -softplus(phi)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_networks_shapes_and_init(size):
    torch.manual_seed(0)
    G, D = gan.Generator(10, 3, size, ngf=8), gan.Discriminator(3, size, ndf=8)
    G.apply(gan.dcgan_init)
    images = G(torch.randn(5, 10))
    assert images.shape == (5, 3, size, size) and images.abs().max() <= 1
    assert D(images).shape == (5,)
    assert isinstance(D.net[1], torch.nn.LeakyReLU)  # no BN on D's first layer (DCGAN)
    convs = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)])
    assert convs.std().item() == pytest.approx(0.02, rel=0.1) and abs(convs.mean().item()) < 0.002
    assert not any(
        isinstance(m, torch.nn.BatchNorm2d) for m in gan.Discriminator(3, size, 8, batch_norm=False).modules()
    )


def test_parse_args_defaults_are_dcgan():
    args = gan.parse_args([])[0]
    assert (args.lr_g, args.lr_d, args.beta1, args.beta2, args.batch_size, args.loss) == (
        2e-4,
        2e-4,
        0.5,
        0.999,
        64,
        "gan",
    )
    assert args.exp_name == "gan" and args.eval_every == 0


def test_import_has_no_side_effects(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import gan"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert list(tmp_path.iterdir()) == []


def test_mnist_end_to_end(data_root, tmp_path):
    summary = gan.main(TINY + ["--data-root", data_root, "--total-steps", "4", "--out-dir", str(tmp_path)])
    run_dir, ckpt = check_run_dir(summary, 4, [2, 4])
    assert set(read_metrics(run_dir)[0]) == {"step", "d_loss", "g_loss", "d_real", "d_fake"}
    assert states(ckpt) == {"G", "D", "opt_G", "opt_D"}
    assert all(math.isfinite(summary[k]) for k in ("d_loss", "g_loss"))
    from PIL import Image

    assert Image.open(run_dir / "samples" / "step_0000004.png").size == (8 * 16 + 9 * 2, 8 * 16 + 9 * 2)  # 8x8 grid


def test_same_seed_same_weights_and_losses(data_root, tmp_path):
    args = TINY + ["--data-root", data_root, "--total-steps", "3", "--loss", "hinge"]
    a = gan.main(args + ["--out-dir", str(tmp_path / "a")])
    b = gan.main(args + ["--out-dir", str(tmp_path / "b")])
    c = gan.main(args + ["--out-dir", str(tmp_path / "c"), "--seed", "2"])
    assert read_metrics(a["run_dir"]) == read_metrics(b["run_dir"]) != read_metrics(c["run_dir"])


def test_resume_is_exact(data_root, tmp_path):
    full, resumed = check_resume_exact(gan.main, TINY + ["--data-root", data_root, "--checkpoint-every", "0"], tmp_path)
    a = torch.load(Path(full["run_dir"]) / "checkpoint.pt", weights_only=True)
    b = torch.load(Path(resumed["run_dir"]) / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(a["G"][k], b["G"][k]) for k in a["G"])


def test_resume_drops_metrics_logged_after_the_checkpoint(data_root, tmp_path):
    """A run killed after logging past its last checkpoint must not keep those steps twice when resumed."""
    args = TINY + ["--data-root", data_root, "--out-dir", str(tmp_path), "--checkpoint-every", "0"]
    run_dir = Path(gan.main(args + ["--total-steps", "2"])["run_dir"])
    (run_dir / "checkpoint.pt").rename(run_dir / "step2.pt")
    gan.main(args + ["--total-steps", "3", "--resume", str(run_dir / "step2.pt")])  # logs step 3, saves checkpoint.pt
    gan.main(args + ["--total-steps", "3", "--resume", str(run_dir / "step2.pt")])  # as if step 3 had been lost
    assert [m["step"] for m in read_metrics(run_dir)] == [1, 2, 3]


def test_stacked_mnist_is_seeded_rgb(data_root):
    a = gan.make_dataset(gan.parse_args(["--dataset", "stacked-mnist", "--data-root", data_root, "--seed", "3"])[0])
    b = gan.make_dataset(gan.parse_args(["--dataset", "stacked-mnist", "--data-root", data_root, "--seed", "3"])[0])
    image, mode = a[5]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert torch.equal(image, b[5][0]) and mode == b[5][1] and 0 <= mode < 1000
    mnist = a.mnist
    i, j, k = a.triples[5].tolist()
    assert torch.equal(image[1], mnist[j][0][0]) and mode == 100 * mnist[i][1] + 10 * mnist[j][1] + mnist[k][1]
    assert len({a[n][1] for n in range(300)}) > 250  # three independent digits: most triples are distinct modes


def test_mnist_is_padded_to_32_and_mapped_to_minus_one_one(data_root):
    image, _ = gan.make_dataset(gan.parse_args(["--dataset", "mnist", "--data-root", data_root])[0])[0]
    image = gan.to_model_range(image)
    assert image.shape == (1, 32, 32)
    assert (image[:, :2] == -1).all() and (image[:, :, -2:] == -1).all() and image.max() == 1  # 2-pixel black border


def test_image_folder_cli_end_to_end(image_folder, tmp_path):
    out = run_script(
        "gan.py",
        "--dataset",
        "folder",
        "--data-root",
        image_folder,
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--total-steps",
        "3",
        "--ngf",
        "8",
        "--ndf",
        "8",
        "--num-workers",
        "1",
        "--log-every",
        "1",
        "--out-dir",
        tmp_path,
        "--loss",
        "lsgan",
    )
    assert out.returncode == 0, out.stderr
    assert "step 3/3" in out.stdout and "steps/s" in out.stdout and "ETA" in out.stdout
    run_dir = next(tmp_path.glob("folder__gan__1__*"))
    assert (run_dir / "samples" / "step_0000003.png").exists() and (run_dir / "checkpoint.pt").exists()
    assert json.loads((run_dir / "args.json").read_text())["loss"] == "lsgan"


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(data_root, tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "gan.py"),
            *TINY,
            "--data-root",
            data_root,
            "--total-steps",
            "100000",
            "--checkpoint-every",
            "0",
            "--out-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not list(tmp_path.glob("*/metrics.jsonl")) or not read_metrics(next(tmp_path.glob("*")))[:2]:
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    run_dir = next(tmp_path.glob("*"))
    step = torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"]
    assert step >= 2 and read_metrics(run_dir)[-1]["step"] == step


def test_non_finite_loss_stops_with_a_clear_message(data_root, tmp_path, capsys, monkeypatch):
    real_d_loss, calls = gan.d_loss, []

    def d_loss_nan_at_step_3(*a):
        calls.append(1)
        return real_d_loss(*a) * (float("nan") if len(calls) == 3 else 1)

    monkeypatch.setattr(gan, "d_loss", d_loss_nan_at_step_3)
    with pytest.raises(SystemExit) as exc:
        gan.main(TINY + ["--data-root", data_root, "--total-steps", "6", "--out-dir", str(tmp_path)])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite loss at step 3" in err[0] and "d_loss nan" in err[0] and "step 2" in err[0]
    assert torch.load(next(tmp_path.glob("*/checkpoint.pt")), weights_only=True)["step"] == 2  # last good one kept


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--dataset", "imagenet"], ["invalid choice", "imagenet"]),
        (["--batch-size", "0"], ["--batch-size", "> 0"]),
        (["--lr-d", "-1e-4"], ["--lr-d"]),
        (["--image-size", "24"], ["--image-size", "24"]),
        (["--loss", "wgan"], ["--loss"]),
    ],
)
def test_bad_arguments(args, expected, capsys):
    check_bad_input(gan.main, args, capsys, *expected)


def test_missing_data_offline(tmp_path, capsys):
    check_bad_input(
        gan.main,
        ["--dataset", "mnist", "--data-root", str(tmp_path), "--no-download"],
        capsys,
        "mnist",
        str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"),
        "--data-root",
        "--download",
    )
    assert not (tmp_path / "MNIST").exists()  # nothing left behind


def test_bad_checkpoints(data_root, tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    check_bad_input(
        gan.main, TINY + ["--data-root", data_root, "--resume", str(garbage)], capsys, "cannot resume", "garbage.pt"
    )
    check_bad_input(
        gan.main, TINY + ["--data-root", data_root, "--resume", str(tmp_path / "missing.pt")], capsys, "cannot resume"
    )
    summary = gan.main(TINY + ["--data-root", data_root, "--total-steps", "1", "--out-dir", str(tmp_path)])
    ckpt = str(Path(summary["run_dir"]) / "checkpoint.pt")
    before = (Path(summary["run_dir"]) / "metrics.jsonl").read_text()
    check_bad_input(gan.main, TINY + ["--data-root", data_root, "--resume", ckpt, "--ngf", "16"], capsys, "--ngf")
    assert (Path(summary["run_dir"]) / "metrics.jsonl").read_text() == before  # nothing already written is lost


def test_cli_error_is_one_line_without_traceback():
    out = run_script("gan.py", "--batch-size", "0")
    assert out.returncode == 2 and out.stderr.strip() == "gan.py: error: argument --batch-size: must be > 0, got 0"


def test_fid_during_training(data_root, tmp_path):
    """--eval-every runs fid.py on G's samples against cached statistics of the real training set (random
    Inception weights: the real ones cannot be downloaded here; fid.py's own tests check the network)."""
    import fid

    torch.manual_seed(0)
    torch.save(fid.InceptionFeatures(weights=False).state_dict(), tmp_path / "random_inception.pth")
    args = TINY + [
        "--data-root",
        data_root,
        "--total-steps",
        "2",
        "--eval-every",
        "2",
        "--fid-samples",
        "4",
        "--fid-weights",
        str(tmp_path / "random_inception.pth"),
        "--out-dir",
        str(tmp_path / "runs"),
    ]
    summary = gan.main(args)
    metrics = read_metrics(summary["run_dir"])
    assert (
        "fid" not in metrics[0]
        and math.isfinite(metrics[1]["fid"])
        and metrics[1]["fid"] == summary["fid"] == summary["best_fid"]
    )
    assert [p.name for p in (tmp_path / "runs" / "fid_stats").iterdir()] == ["mnist_train_16px_n4.npz"]


def test_fid_without_weights_offline_is_one_line(data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("CLEANGAN_FID_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    check_bad_input(
        gan.main,
        TINY + ["--data-root", data_root, "--eval-every", "2", "--out-dir", str(tmp_path)],
        capsys,
        "pt_inception-2015-12-05-6726825d.pth",
        "--fid-weights",
    )
