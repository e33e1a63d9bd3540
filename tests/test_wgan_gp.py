"""wgan_gp.py: the gradient penalty against closed forms and finite differences, the authors' networks, the
learning-rate schedule, and the script end to end (run directory, exact resume with the decay, bad input)."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scipy import stats as scipy_stats

import wgan_gp
from conftest import ROOT, TINY, check_bad_input, check_resume_exact, check_run_dir, read_metrics, run_script, states

WIDTH = ["--ngf", "8", "--ndf", "8"]


class FnCritic(torch.nn.Module):
    """A critic given as a function of the flattened sample, D(x) = fn(x.flatten(1)) -> (N,)."""

    def __init__(self, fn, *params):
        super().__init__()
        self.fn, self.params = fn, torch.nn.ParameterList(params)

    def forward(self, x):
        return self.fn(x.flatten(1), *self.params)


def test_linear_critic_penalty_and_its_weight_gradient_are_closed_form():
    """D(x) = w.x + b has grad_x D = w everywhere: penalty (||w|| - 1)^2 whatever eps, and
    d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||, d/db = 0."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(2 * 3 * 3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))
    critic = FnCritic(lambda x, w, b: x @ w + b, w, b)
    real, fake = torch.randn(5, 2, 3, 3, dtype=torch.float64), torch.randn(5, 2, 3, 3, dtype=torch.float64)
    penalty, norms = wgan_gp.gradient_penalty(critic, real, fake, return_norms=True)
    n = w.norm().item()
    assert penalty.item() == pytest.approx((n - 1) ** 2, rel=1e-12)
    assert torch.allclose(norms, torch.full((5,), n, dtype=torch.float64))  # per sample, over all 2*3*3 input dims
    grad_w, grad_b = torch.autograd.grad(penalty, (w, b), materialize_grads=True)
    assert torch.allclose(grad_w, 2 * (n - 1) * w.detach() / n) and grad_b.item() == 0


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_norm_critic_penalty_at_known_points(scale):
    """D(x) = c ||x|| has gradient c x / ||x||, of norm c at every x != 0: penalty (c - 1)^2 (0 for c = 1). Norms
    pooled over the batch instead of per sample would give (c sqrt(N) - 1)^2."""
    torch.manual_seed(1)
    critic = FnCritic(lambda x: scale * x.norm(dim=1))
    real, fake = torch.randn(6, 1, 4, 4) + 3, torch.randn(6, 1, 4, 4) + 3  # x^ stays far from 0
    penalty, norms = wgan_gp.gradient_penalty(critic, real, fake, return_norms=True)
    assert penalty.item() == pytest.approx((scale - 1) ** 2, abs=1e-5)
    assert torch.allclose(norms, torch.full((6,), scale), atol=1e-5)


def test_quadratic_critic_hand_values():
    """D(x) = c ||x||^2 / 2 has gradient c x^. With real == fake, x^ = x whatever eps: c = 0.2 at |(3, 4)| = 5 and
    |(6, 8)| = 10 gives norms 1 and 2, penalty ((1 - 1)^2 + (2 - 1)^2) / 2 = 0.5."""
    critic = FnCritic(lambda x: 0.2 * (x**2).sum(1) / 2)
    x = torch.tensor([[3.0, 4.0], [6.0, 8.0]])
    penalty, norms = wgan_gp.gradient_penalty(critic, x, x.clone(), return_norms=True)
    assert norms.tolist() == pytest.approx([1.0, 2.0]) and penalty.item() == pytest.approx(0.5)


def test_eps_is_drawn_per_sample_from_the_global_rng_and_weights_the_real_sample():
    """x^ = eps x + (1 - eps) x~: with x~ = 0 and D = ||x||^2 / 2 the norms are eps_i ||x_i||, where eps is the first
    torch.rand(N) after seeding the global RNG."""
    critic = FnCritic(lambda x: (x**2).sum(1) / 2)
    real = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 4.0]])
    torch.manual_seed(7)
    eps = torch.rand(4)
    torch.manual_seed(7)
    penalty, norms = wgan_gp.gradient_penalty(critic, real, torch.zeros_like(real), return_norms=True)
    assert torch.allclose(norms, eps * torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert penalty.item() == pytest.approx(((eps * torch.tensor([1.0, 2.0, 3.0, 4.0]) - 1) ** 2).mean().item())


def test_eps_is_uniform_on_0_1():
    """||x|| = 2, x~ = 0, D = ||x||^2 / 2: norm_i = 2 eps_i, so eps = norm / 2 must pass a uniformity test and the
    penalty approach E[(2 eps - 1)^2] = 1/3."""
    torch.manual_seed(0)
    critic = FnCritic(lambda x: (x**2).sum(1) / 2)
    real = torch.tensor([[2.0, 0.0]]).repeat(20_000, 1)
    penalty, norms = wgan_gp.gradient_penalty(critic, real, torch.zeros_like(real), return_norms=True)
    assert scipy_stats.kstest((norms / 2).numpy(), "uniform").pvalue > 1e-3
    assert penalty.item() == pytest.approx(1 / 3, abs=0.01)


def test_constant_critic_has_zero_gradient_and_penalty_one():
    critic = FnCritic(lambda x, b: b.expand(len(x)), torch.nn.Parameter(torch.tensor(2.0)))
    penalty, norms = wgan_gp.gradient_penalty(
        critic, torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2), return_norms=True
    )
    assert penalty.item() == 1.0 and norms.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_penalty_gradient_wrt_critic_weights_matches_finite_differences(arch):
    """Double backprop (create_graph=True) through the real critics in float64: for each weight tensor W and a random
    direction U, (GP(W + hU) - GP(W - hU)) / 2h = <dGP/dW, U>."""
    torch.manual_seed(0)
    critic = wgan_gp.NETWORKS[arch][1](1, 16, 2).double()
    real, fake = (
        torch.rand(3, 1, 16, 16, dtype=torch.float64) * 2 - 1,
        torch.rand(3, 1, 16, 16, dtype=torch.float64) * 2 - 1,
    )

    def penalty():
        torch.manual_seed(1)  # the same eps at every evaluation
        return wgan_gp.gradient_penalty(critic, real, fake)

    grads = torch.autograd.grad(penalty(), list(critic.parameters()), materialize_grads=True)  # the output bias: 0

    def penalty_at(param, shift):  # the penalty needs grad mode; only the weight update is under no_grad
        with torch.no_grad():
            param += shift
        value = penalty().item()
        with torch.no_grad():
            param -= shift
        return value

    for param, grad in zip(critic.parameters(), grads):
        step = 1e-6 * torch.randn_like(param)
        numeric = (penalty_at(param, step) - penalty_at(param, -step)) / 2
        assert numeric == pytest.approx((grad * step).sum().item(), rel=1e-5, abs=1e-15)


def count(*shapes):
    """Parameters of layers given as (weight elements, bias elements) pairs."""
    return sum(w + b for w, b in shapes)


def test_dcgan_networks_are_the_authors_at_32():
    """gan_cifar.py with DIM = 128: G = Linear(128, 4*4*4*DIM) + BN, deconvs 4DIM -> 2DIM -> DIM -> 3 (5x5), BN after
    all but the last; D = convs 3 -> DIM -> 2DIM -> 4DIM (5x5, stride 2), Linear(4*4*4*DIM, 1), no normalisation."""
    torch.manual_seed(0)
    G, D, d = wgan_gp.Generator(128, 3, 32, 128), wgan_gp.Critic(3, 32, 128), 128
    assert sum(p.numel() for p in G.parameters()) == count(
        (128 * 64 * d, 64 * d),
        (64 * d, 64 * d),
        (4 * d * 2 * d * 25, 2 * d),
        (2 * d, 2 * d),
        (2 * d * d * 25, d),
        (d, d),
        (d * 3 * 25, 3),
    )
    assert sum(p.numel() for p in D.parameters()) == count(
        (3 * d * 25, d), (d * 2 * d * 25, 2 * d), (2 * d * 4 * d * 25, 4 * d), (64 * d, 1)
    )
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)) for m in D.modules())
    assert {m.kernel_size for m in D.modules() if isinstance(m, torch.nn.Conv2d)} == {(5, 5)}
    images = G(torch.randn(4, 128))
    assert images.shape == (4, 3, 32, 32) and images.abs().max() <= 1 and D(images).shape == (4,)


def test_resnet_networks_are_the_authors_at_32():
    """gan_cifar_resnet.py with DIM_G = DIM_D = 128: G = Linear(128, 4*4*DIM), 3 up-blocks (BN, two 3x3 convs, 1x1
    shortcut), BN, 3x3 conv to RGB; D = optimised block (3 -> DIM), a down block, two plain blocks (identity
    shortcuts), Linear(DIM, 1)."""
    G, D, d = wgan_gp.ResNetGenerator(128, 3, 32, 128), wgan_gp.ResNetCritic(3, 32, 128), 128
    conv, bn = (d * d * 9, d), (d, d)
    up_block = count(bn, conv, bn, conv, (d * d, d))
    assert sum(p.numel() for p in G.parameters()) == count((128 * 16 * d, 16 * d), bn, (d * 3 * 9, 3)) + 3 * up_block
    assert sum(p.numel() for p in D.parameters()) == count(
        (3 * d * 9, d),
        conv,
        (3 * d, d),  # OptimizedResBlockDisc1
        conv,
        conv,
        (d * d, d),  # the down block
        conv,
        conv,
        conv,
        conv,
        (d, 1),
    )
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())
    images = G(torch.randn(4, 128))
    assert images.shape == (4, 3, 32, 32) and D(images).shape == (4,)


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
@pytest.mark.parametrize("size, channels", [(16, 1), (64, 3)])
def test_other_sizes_and_channels(arch, size, channels):
    generator, critic = wgan_gp.NETWORKS[arch]
    images = generator(16, channels, size, 4)(torch.randn(2, 16))
    assert images.shape == (2, channels, size, size) and critic(channels, size, 4)(images).shape == (2,)


def test_resnet_shortcut_equals_the_authors_order():
    """The 1x1 shortcut runs at the lower resolution: pool-then-conv = the authors' conv-then-pool (ConvMeanPool),
    conv-then-upsample = their upsample-then-conv (UpsampleConv)."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    down, up = wgan_gp.ResidualBlock(4, 6, "down"), wgan_gp.ResidualBlock(4, 6, "up", batch_norm=True)
    conv_down, conv_up = down.shortcut[1], up.shortcut[1]
    assert torch.allclose(down.shortcut(x), torch.nn.functional.avg_pool2d(conv_down(x), 2), atol=1e-6)
    assert torch.allclose(up.shortcut(x), conv_up(torch.nn.functional.interpolate(x, scale_factor=2)), atol=1e-6)
    assert isinstance(wgan_gp.ResidualBlock(4, 4).shortcut, torch.nn.Identity)


def test_tflib_init_stds():
    """Uniform weights with the authors' std: he sqrt(4 / (fan_in + fan_out)), Glorot sqrt(2 / (fan_in + fan_out)),
    a stride-2 conv's fan_out and a stride-2 transposed conv's fan_in over 4."""
    torch.manual_seed(0)
    cases = [
        (torch.nn.Conv2d(64, 128, 5, 2, 2), True, 64 * 25 + 128 * 25 / 4),
        (torch.nn.ConvTranspose2d(128, 64, 5, 2, 2, output_padding=1), True, 128 * 25 / 4 + 64 * 25),
        (torch.nn.Conv2d(64, 64, 1), False, 64 + 64),
        (torch.nn.Linear(512, 256), False, 512 + 256),
    ]
    for layer, he, fans in cases:
        wgan_gp.tflib_init(layer, he)
        std = math.sqrt((4 if he else 2) / fans)
        assert layer.weight.std().item() == pytest.approx(std, rel=0.03)
        assert layer.weight.abs().max().item() <= std * math.sqrt(3) and layer.bias.abs().max() == 0


def test_linear_decay():
    assert [wgan_gp.linear_decay(s, 100) for s in (0, 25, 100, 150)] == [1.0, 0.75, 0.0, 0.0]
    assert wgan_gp.linear_decay(10**6, 0) == 1.0


def test_parse_args_defaults_are_the_authors(capsys):
    a = wgan_gp.parse_args([])[0]
    assert (
        a.arch,
        a.lr_g,
        a.lr_d,
        a.beta1,
        a.beta2,
        a.n_critic,
        a.gp_lambda,
        a.batch_size,
        a.z_dim,
        a.ngf,
        a.ndf,
        a.total_steps,
        a.lr_decay_steps,
        a.g_batch_multiple,
    ) == ("dcgan", 1e-4, 1e-4, 0.5, 0.9, 5, 10.0, 64, 128, 128, 128, 200_000, 0, 1)
    assert a.exp_name == "wgan_gp"
    r = wgan_gp.parse_args(["--arch", "resnet"])[0]
    assert (r.lr_g, r.lr_d, r.beta1, r.beta2, r.n_critic, r.total_steps, r.lr_decay_steps, r.g_batch_multiple) == (
        2e-4,
        2e-4,
        0.0,
        0.9,
        5,
        100_000,
        100_000,
        2,
    )
    short = wgan_gp.parse_args(["--arch", "resnet", "--total-steps", "20000"])[
        0
    ]  # the decay spans the run's own length
    assert short.lr_decay_steps == 20_000
    assert wgan_gp.parse_args(["--arch", "resnet", "--lr-g", "1e-3"])[0].lr_g == 1e-3  # explicit flags win
    with pytest.raises(SystemExit):
        wgan_gp.parse_args(["--arch", "resnet", "--help"])[0]
    shown = " ".join(capsys.readouterr().out.split())  # --help shows the arch's defaults
    assert "(default: 0.0002)" in shown and "(default: 0.0001)" not in shown


def test_import_has_no_side_effects(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import wgan_gp"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert list(tmp_path.iterdir()) == []


def test_mnist_end_to_end(data_root, tmp_path):
    summary = wgan_gp.main(
        TINY + WIDTH + ["--data-root", data_root, "--total-steps", "4", "--n-critic", "2", "--out-dir", str(tmp_path)]
    )
    run_dir, ckpt = check_run_dir(summary, 4, [2, 4])
    metrics = read_metrics(run_dir)
    assert set(metrics[0]) == {"step", "d_loss", "g_loss", "wasserstein", "gradient_penalty", "grad_norm"}
    for m in metrics:  # eq. (3): L_D = -(E[D(x)] - E[D(G(z))]) + lambda * GP
        assert m["d_loss"] == pytest.approx(-m["wasserstein"] + 10 * m["gradient_penalty"], abs=1e-5)
        assert m["gradient_penalty"] >= 0 and m["grad_norm"] > 0
    assert states(ckpt) == {"G", "D", "opt_G", "opt_D"}
    assert not any("running_mean" in k for k in ckpt["D"])  # critic without BatchNorm
    assert ckpt["G"]["net.7.weight"].shape[1] == 1  # MNIST: a 1-channel generator
    assert ckpt["opt_D"]["param_groups"][0]["betas"] == (0.5, 0.9)


def test_generator_batch_and_critic_updates_per_step(data_root, tmp_path, monkeypatch):
    """Per generator step: n_critic fake batches of --batch-size for the critic, then one batch of
    --g-batch-multiple x --batch-size for G (then the 64-image sample grid at the end)."""
    sizes, forward = [], wgan_gp.Generator.forward
    monkeypatch.setattr(wgan_gp.Generator, "forward", lambda self, z: sizes.append(len(z)) or forward(self, z))
    wgan_gp.main(
        TINY
        + WIDTH
        + [
            "--data-root",
            data_root,
            "--total-steps",
            "1",
            "--n-critic",
            "3",
            "--g-batch-multiple",
            "2",
            "--out-dir",
            str(tmp_path),
        ]
    )
    assert sizes == [8, 8, 8, 16, 64]


def test_resume_is_exact_with_lr_decay(data_root, tmp_path):
    args = (
        TINY
        + WIDTH
        + [
            "--data-root",
            data_root,
            "--arch",
            "resnet",
            "--n-critic",
            "2",
            "--lr-decay-steps",
            "10",
            "--checkpoint-every",
            "0",
        ]
    )
    full, resumed = check_resume_exact(wgan_gp.main, args, tmp_path, total=4, first=2)
    a = torch.load(Path(full["run_dir"]) / "checkpoint.pt", weights_only=True)
    b = torch.load(Path(resumed["run_dir"]) / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(a["D"][k], b["D"][k]) for k in a["D"])
    for ckpt in (a, b):  # the lr of the last step (3 of 10 done before it): 2e-4 * (1 - 3 / 10)
        assert ckpt["opt_G"]["param_groups"][0]["lr"] == pytest.approx(2e-4 * 0.7)
        assert ckpt["opt_D"]["param_groups"][0]["betas"] == (0.0, 0.9)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--gp-lambda", "-1"], ["--gp-lambda", "-1"]),
        (["--gp-lambda", "nan"], ["--gp-lambda", "nan"]),
        (["--arch", "vgg"], ["invalid choice", "vgg"]),
        (["--lr-decay-steps", "-5"], ["--lr-decay-steps", "-5"]),
        (["--g-batch-multiple", "0"], ["--g-batch-multiple"]),
        (["--batch-size", "1"], ["--batch-size", "dcgan"]),
        (["--image-size", "24"], ["--image-size", "24"]),
    ],
)
def test_bad_arguments(args, expected, capsys):
    check_bad_input(wgan_gp.main, args, capsys, *expected)


def test_cli_error_is_one_line_without_traceback():
    out = run_script("wgan_gp.py", "--gp-lambda", "-1")
    assert (
        out.returncode == 2
        and out.stderr.strip() == "wgan_gp.py: error: argument --gp-lambda: must be a finite number >= 0, got -1"
    )


def test_resnet_generator_runs_on_two_halves_like_the_authors():
    """gan_cifar_resnet.py's G sees each batch as two halves: BN statistics per half (resnet), the whole batch
    (dcgan)."""
    torch.manual_seed(0)
    G = wgan_gp.ResNetGenerator(8, 3, 32, 8)
    z = torch.randn(6, 8)
    halves = wgan_gp.generate_like_the_authors(G, z, "resnet")
    assert torch.equal(halves, torch.cat([G(z[:3]), G(z[3:])])) and not torch.allclose(halves, G(z))
    assert torch.equal(wgan_gp.generate_like_the_authors(G, z, "dcgan"), G(z))
