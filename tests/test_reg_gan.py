"""reg_gan.py: Roth et al.'s JS regularizer against closed forms, finite differences and gradcheck; the annealing
schedule; the noise null model; the script end to end, its baselines and exact resume."""

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.func import functional_call, replace_all_batch_norm_modules_, vmap

import gan
import reg_gan as reg
from conftest import ROOT, TINY, check_bad_input, check_resume_exact, check_run_dir, read_metrics, run_script, states

sig = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
SMALL = ["--ngf", "8", "--ndf", "8"]


@pytest.fixture(autouse=True)
def one_thread():
    """These networks are tiny: a second thread only adds synchronization (gradcheck ran 25x slower with two
    threads on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def linear_d(w, b):
    """phi(x) = w . flatten(x) + b."""
    D = nn.Sequential(nn.Flatten(), nn.Linear(w.numel(), 1), nn.Flatten(0)).double()
    with torch.no_grad():
        D[1].weight.copy_(w.view(1, -1))
        D[1].bias.fill_(b)
    return D


def test_js_regularizer_hand_value():
    """phi(x) = 3 x1 + 4 x2 at x = 0: sigmoid = 1/2 and |grad phi|^2 = 25, so Omega = 25 (1/4 + 1/4)."""
    zeros = lambda n: torch.zeros(n, 2, dtype=torch.float64)  # noqa: E731
    out = reg.js_regularizer(linear_d(torch.tensor([3.0, 4.0]), 0.0), zeros(2), zeros(3))
    assert (out.omega.item(), out.omega_real.item(), out.omega_fake.item()) == pytest.approx((12.5, 6.25, 6.25))


def test_js_regularizer_linear_closed_form():
    """Linear logit: grad phi = w everywhere, so Omega = |w|^2 (mean_P (1 - sigmoid)^2 + mean_Q sigmoid^2), the norm
    over all input dims (C, H, W), each expectation a mean over its own batch (sizes differ here)."""
    torch.manual_seed(0)
    w, b = torch.randn(3, 2, 2, dtype=torch.float64), 0.7
    real, fake = torch.randn(5, 3, 2, 2, dtype=torch.float64), torch.randn(3, 3, 2, 2, dtype=torch.float64)
    out = reg.js_regularizer(linear_d(w, b), real, fake)
    phi = lambda x: (x * w).sum((1, 2, 3)) + b  # noqa: E731
    w2 = (w**2).sum().item()
    expected_real = w2 * sum((1 - sig(t)) ** 2 for t in phi(real).tolist()) / 5
    expected_fake = w2 * sum(sig(t) ** 2 for t in phi(fake).tolist()) / 3
    assert out.omega_real.item() == pytest.approx(expected_real, rel=1e-12)
    assert out.omega_fake.item() == pytest.approx(expected_fake, rel=1e-12)
    assert out.omega.item() == pytest.approx(expected_real + expected_fake, rel=1e-12)
    assert torch.allclose(out.real_logits, phi(real)) and torch.allclose(out.fake_logits, phi(fake))  # the same pass


def finite_difference_input_grad(D, x, h=1e-6):
    """d/dx of sum_i phi(x_i) by central differences in float64, one input element at a time; each perturbed copy
    of the batch is a separate batch for D (vmap), so batch-statistics BN sees exactly that batch."""
    n = x.numel()
    eye = torch.eye(n, dtype=x.dtype).view(n, *x.shape)
    phi_sums = vmap(lambda batch: D(batch).sum())(torch.cat([x + h * eye, x - h * eye]))
    return ((phi_sums[:n] - phi_sums[n:]) / (2 * h)).view_as(x)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_js_regularizer_matches_finite_difference_input_gradients(batch_norm):
    """Omega computed independently: input gradients by finite differences, eq. (30) by hand. Without BN this is
    the per-sample gradient of phi(x_i); with batch-statistics BN it is grad of sum_j phi(x_j) (the authors' choice)."""
    torch.manual_seed(1)
    D = reg.Discriminator(1, 16, ndf=4, batch_norm=batch_norm).double()
    replace_all_batch_norm_modules_(D)  # batch statistics only (no running-stat updates, which vmap forbids)
    D.net[0].weight.data.mul_(4)  # sigmoid(phi) well away from 1/2
    real, fake = torch.randn(3, 1, 16, 16, dtype=torch.float64), torch.randn(2, 1, 16, 16, dtype=torch.float64)
    out = reg.js_regularizer(D, real, fake)
    with torch.no_grad():
        grad2_real = finite_difference_input_grad(D, real).flatten(1).pow(2).sum(1)
        grad2_fake = finite_difference_input_grad(D, fake).flatten(1).pow(2).sum(1)
        expected_real = ((1 - torch.sigmoid(D(real))) ** 2 * grad2_real).mean().item()
        expected_fake = (torch.sigmoid(D(fake)) ** 2 * grad2_fake).mean().item()
    assert grad2_real.min() > 1e-2 and grad2_fake.min() > 1e-2  # the check is not vacuous
    assert out.omega_real.item() == pytest.approx(expected_real, rel=1e-6)
    assert out.omega_fake.item() == pytest.approx(expected_fake, rel=1e-6)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_js_regularizer_weight_gradient_passes_gradcheck(batch_norm):
    """d Omega / d theta_D through the double backward (create_graph=True) against finite differences, float64,
    on the DCGAN discriminator that reg_gan trains (tiny width)."""
    torch.manual_seed(2)
    D = reg.Discriminator(1, 16, ndf=2, batch_norm=batch_norm).double()
    D.net[0].weight.data.mul_(4)
    names = [n for n, _ in D.named_parameters()]
    real, fake = torch.randn(3, 1, 16, 16, dtype=torch.float64), torch.randn(3, 1, 16, 16, dtype=torch.float64)

    def omega(*params):
        return reg.js_regularizer(lambda x: functional_call(D, dict(zip(names, params)), (x,)), real, fake).omega

    params = tuple(p.detach().clone().requires_grad_(True) for p in D.parameters())
    grads = torch.autograd.grad(omega(*params), params)
    assert all(torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert torch.autograd.gradcheck(omega, params, eps=1e-6, atol=1e-8, rtol=1e-6)


class ConstantLogit(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.b = nn.Parameter(torch.tensor(value))

    def forward(self, x):
        return self.b.expand(len(x))


def test_js_regularizer_is_zero_for_a_constant_logit():
    """Large weights (1 - D)^2 or D^2 but no gradient: Omega = 0 exactly, and so is its gradient."""
    real, fake = torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)
    for value in (-5.0, 0.0, 5.0):
        D = ConstantLogit(value)
        out = reg.js_regularizer(D, real, fake)
        assert out.omega.item() == 0 and out.omega_real.item() == 0 and out.omega_fake.item() == 0
        assert torch.autograd.grad(out.omega, D.b)[0].item() == 0
    D = reg.Discriminator(1, 16, ndf=4)  # the real network with its last layer zeroed: phi = its bias
    D.apply(reg.dcgan_init)
    D.net[-1].weight.data.zero_()
    out = reg.js_regularizer(D, real, fake)
    assert out.omega.item() == 0
    assert all(torch.equal(g, torch.zeros_like(g)) for g in torch.autograd.grad(out.omega, list(D.parameters())))


def test_gamma_schedule():
    assert reg.gamma_schedule(0, 100, 2.0, True) == 2.0
    assert reg.gamma_schedule(25, 100, 2.0, True) == pytest.approx(2.0 * 0.01**0.25)  # 0.6325
    assert reg.gamma_schedule(50, 100, 2.0, True) == pytest.approx(0.2)
    assert reg.gamma_schedule(100, 100, 2.0, True) == pytest.approx(0.02)  # 1% of gamma0 at T
    assert [reg.gamma_schedule(t, 100, 2.0, False) for t in (0, 50, 99)] == [2.0, 2.0, 2.0]
    assert reg.gamma_schedule(50, 100, 0.0, True) == 0.0
    assert reg.gamma_schedule(150, 100, 2.0, True) == pytest.approx(0.02)  # past T (an extended run): stays at 1%
    assert reg.gamma_schedule(50, 100, 2.0, True, decay_factor=0.25) == pytest.approx(1.0)  # 2 * 0.25^0.5


def test_extending_a_run_keeps_its_annealing_curve(data_root, tmp_path, capsys):
    """One rule for every schedule: its horizon is resolved when the run starts (default --total-steps) and saved;
    --resume PATH --total-steps 6 continues the 3-step curve (then flat at 1%), another --anneal-steps is refused."""
    args = TINY + SMALL + ["--data-root", data_root, "--out-dir", str(tmp_path)]
    first = reg.main(args + ["--total-steps", "3"])
    ckpt = str(Path(first["run_dir"]) / "checkpoint.pt")
    reg.main(["--resume", ckpt, "--total-steps", "6"])
    gammas = [m["gamma"] for m in read_metrics(first["run_dir"])]
    assert gammas == pytest.approx([2.0 * 0.01 ** (min(t, 3) / 3) for t in range(6)])
    check_bad_input(reg.main, ["--resume", ckpt, "--total-steps", "6", "--anneal-steps", "6"], capsys, "--anneal-steps")


def test_add_noise():
    torch.manual_seed(0)
    x = torch.full((200_000,), 0.3)
    noise = reg.add_noise(x, 0.5) - x
    assert noise.std().item() == pytest.approx(0.5, rel=0.01) and abs(noise.mean().item()) < 0.005
    state = torch.get_rng_state()
    assert reg.add_noise(x, 0.0) is x and torch.equal(torch.get_rng_state(), state)  # std 0 draws nothing


def test_parse_args_defaults_are_the_papers():
    args = reg.parse_args([])[0]
    assert (args.lr_g, args.lr_d, args.beta1, args.beta2, args.batch_size, args.loss) == (
        2e-4,
        2e-4,
        0.5,
        0.999,
        64,
        "gan",
    )
    assert (args.gamma, args.anneal, args.noise_std, args.exp_name) == (2.0, True, 0.0, "reg_gan")


def test_import_has_no_side_effects(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import reg_gan"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert list(tmp_path.iterdir()) == []


def test_mnist_end_to_end(data_root, tmp_path):
    summary = reg.main(TINY + SMALL + ["--data-root", data_root, "--total-steps", "4", "--out-dir", str(tmp_path)])
    run_dir, ckpt = check_run_dir(summary, 4, [2, 4])
    metrics = read_metrics(run_dir)
    assert set(metrics[0]) == {
        "step",
        "d_loss",
        "g_loss",
        "d_real",
        "d_fake",
        "gamma",
        "omega",
        "omega_real",
        "omega_fake",
    }
    assert [m["gamma"] for m in metrics] == pytest.approx([reg.gamma_schedule(t, 4, 2.0, True) for t in range(4)])
    for m in metrics:
        assert (
            m["omega"] == pytest.approx(m["omega_real"] + m["omega_fake"], rel=1e-5)
            and m["omega_real"] > 0 < m["omega_fake"]
        )
    assert states(ckpt) == {"G", "D", "opt_G", "opt_D"}


def test_gamma_zero_is_the_plain_gan_from_the_same_init(data_root, tmp_path):
    """--gamma 0 trains exactly as gan.py; the regularized run starts from the same weights and data (identical
    step-1 scores and BCE, both logged before D's first update), then differs."""
    args = TINY + SMALL + ["--data-root", data_root, "--total-steps", "3"]
    regularized = read_metrics(reg.main(args + ["--out-dir", str(tmp_path / "reg")])["run_dir"])
    baseline = read_metrics(reg.main(args + ["--gamma", "0", "--out-dir", str(tmp_path / "base")])["run_dir"])
    plain = read_metrics(gan.main(args + ["--out-dir", str(tmp_path / "gan")])["run_dir"])
    assert [{k: m[k] for k in p} for m, p in zip(baseline, plain)] == plain
    assert set(baseline[0]) == set(plain[0]) | {"gamma"} and all(m["gamma"] == 0 for m in baseline)
    for k in ("d_loss", "d_real", "d_fake"):
        assert regularized[0][k] == baseline[0][k]
    assert regularized[0]["g_loss"] != baseline[0]["g_loss"]  # D's first update already differs


def test_the_d_loss_is_bce_plus_half_gamma_omega(data_root, tmp_path, monkeypatch):
    """The loop minimizes d_loss + gamma/2 * Omega and nothing else (eq. 27): with Omega replaced by a function K of
    the logits, a run with --gamma 0.5 trains exactly as an unregularized run whose d_loss adds 0.25 K by hand."""
    js_regularizer, d_loss = reg.js_regularizer, reg.d_loss

    def K(real_logits, fake_logits):
        return (real_logits**2).mean() + (fake_logits**2).mean()

    def js_regularizer_k(*a):
        out = js_regularizer(*a)
        return out._replace(omega=K(out.real_logits, out.fake_logits))

    def run(gamma, name):  # d_loss itself logs the GAN loss only
        args = TINY + SMALL + ["--data-root", data_root, "--total-steps", "3", "--no-anneal", "--gamma", gamma]
        metrics = read_metrics(reg.main(args + ["--out-dir", str(tmp_path / name)])["run_dir"])
        return [{k: m[k] for k in ("g_loss", "d_real", "d_fake")} for m in metrics]

    plain = run("0", "plain")
    monkeypatch.setattr(reg, "js_regularizer", js_regularizer_k)
    regularized = run("0.5", "regularized")
    monkeypatch.setattr(reg, "js_regularizer", js_regularizer)
    monkeypatch.setattr(reg, "d_loss", lambda r, f, loss: d_loss(r, f, loss) + 0.25 * K(r, f))
    by_hand = run("0", "by_hand")
    assert regularized == by_hand != plain


def test_add_noise_copies():
    """batch/m images with m noise draws each: the batch keeps its size, the copies differ only by their noise."""
    torch.manual_seed(0)
    x = torch.arange(8.0).view(8, 1, 1, 1).expand(8, 1, 4, 4)
    noisy = reg.add_noise(x, 1e-3, copies=4)
    assert noisy.shape == x.shape and torch.allclose(
        noisy, torch.tensor([0.0] * 4 + [1.0] * 4).view(8, 1, 1, 1).expand(8, 1, 4, 4), atol=0.01
    )
    assert not torch.equal(noisy[0], noisy[1])


@pytest.mark.parametrize("noise_on, per_step", [("data", 1), ("both", 3)])
def test_noise_null_model(noise_on, per_step, data_root, tmp_path, monkeypatch):
    """--noise-std: no regularizer; noise on the data D sees (Sec. 4.2), or on every input of D in D's and G's step
    (--noise-on both, the appendix variant)."""
    calls = []

    def recording_add_noise(x, std, copies=1, add_noise=reg.add_noise):
        calls.append((std, copies))
        return add_noise(x, std, copies)

    args = TINY + SMALL + ["--data-root", data_root, "--total-steps", "3", "--gamma", "0"]
    baseline = read_metrics(reg.main(args + ["--out-dir", str(tmp_path / "base")])["run_dir"])
    monkeypatch.setattr(reg, "add_noise", recording_add_noise)
    noisy = read_metrics(
        reg.main(
            args
            + [
                "--noise-std",
                "0.5",
                "--noise-copies",
                "2",
                "--noise-on",
                noise_on,
                "--out-dir",
                str(tmp_path / "noise"),
            ]
        )["run_dir"]
    )
    assert calls[:per_step] == [(0.5, 2)] + [(0.5, 1)] * (per_step - 1) and len(calls) == 3 * per_step
    assert set(noisy[0]) == set(baseline[0]) and all(math.isfinite(v) for m in noisy for v in m.values())
    assert noisy[0]["d_real"] != baseline[0]["d_real"]  # D saw noisy data from the first step
    assert (noisy[0]["d_fake"] == baseline[0]["d_fake"]) == (noise_on == "data")  # clean fakes: same D, G, z at step 1


def test_resume_is_exact(data_root, tmp_path):
    check_resume_exact(
        reg.main, TINY + SMALL + ["--data-root", data_root, "--checkpoint-every", "0", "--no-anneal"], tmp_path
    )


def test_resume_is_exact_while_annealing(data_root, tmp_path, monkeypatch):
    """gamma_t depends on --total-steps, so resume a run of the same length from its step-3 checkpoint."""

    def keep_copies(path, state, save=reg.save_checkpoint):
        save(path, state)
        shutil.copy(path, path.with_name(f"step{state['step']}.pt"))

    monkeypatch.setattr(reg, "save_checkpoint", keep_copies)
    args = (
        TINY
        + SMALL
        + ["--data-root", data_root, "--total-steps", "6", "--checkpoint-every", "3", "--out-dir", str(tmp_path)]
    )
    run_dir = Path(reg.main(args)["run_dir"])
    full = read_metrics(run_dir)
    reg.main(args + ["--resume", str(run_dir / "step3.pt")])
    assert read_metrics(run_dir) == full and len(set(m["gamma"] for m in full)) == 6


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--gamma", "-1"], ["--gamma", "-1"]),
        (["--gamma", "nan"], ["--gamma", "nan"]),
        (["--gamma", "inf"], ["--gamma"]),
        (["--gamma", "0", "--noise-std", "-0.1"], ["--noise-std"]),
        (["--noise-std", "0.1"], ["--noise-std", "--gamma 0"]),
        (["--gamma", "0", "--noise-copies", "2"], ["--noise-copies", "would be ignored"]),
        (["--gamma", "0", "--noise-std", "0.1", "--noise-copies", "3"], ["--noise-copies", "divide --batch-size"]),
        (["--loss", "hinge"], ["--loss", "hinge"]),
    ],
)
def test_bad_arguments(args, expected, capsys):
    check_bad_input(reg.main, args, capsys, *expected)


def test_cli_error_is_one_line_without_traceback():
    out = run_script("reg_gan.py", "--noise-std", "0.2")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith("reg_gan.py: error: --noise-std replaces the regularizer")
