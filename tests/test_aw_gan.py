"""aw_gan.py: Algorithm 1 on hand-built gradients (Theorem 2's geometry), one D step against a manual computation,
the SN-GAN networks, and the script end to end."""

import copy
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import aw_gan
from conftest import ROOT, TINY, check_bad_input, check_resume_exact, check_run_dir, read_metrics, run_script

SMALL = TINY + ["--ngf", "8", "--ndf", "8", "--g-batch-size", "16", "--n-critic", "2"]
T = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
OBTUSE = T(3.0, 1.0, 0.0), T(-2.0, 2.0, 1.0)  # rf = -4
ACUTE = T(3.0, 1.0, 0.0), T(1.0, 2.0, 0.0)  # rf = 5
FAVOUR_REAL, FAVOUR_FAKE, BOTH = (0.3, 0.1), (0.9, 0.1), (0.6, 0.2)  # (s_r, s_f) under the default thresholds


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The networks here are tiny: a second thread costs more than it saves (it spins on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def P(g_r, g_f):
    """The gradient products as aw_weights takes them (plain numbers)."""
    return aw_gan.gradient_products(g_r, g_f).tolist()


def direction(g_r, g_f, scores, **kw):
    w_r, w_f, case = aw_gan.aw_weights(P(g_r, g_f), *scores, **{"eps": 0.0, **kw})
    return w_r * g_r + w_f * g_f, (w_r, w_f, case)


def cos(a, b):
    return (a @ b / (a.norm() * b.norm())).item()


def test_favour_real_obtuse_is_orthogonal_to_the_fake_gradient():
    """Case 1 (Theorem 2, case 2): w_r = 1/|g_r|, w_f = -rf/(ff |g_r|); d.g_f vanishes but for the 1e-4 in ff."""
    (g_r, g_f), rr, ff, rf = OBTUSE, 10 + 1e-4, 9 + 1e-4, -4.0
    d, (w_r, w_f, case) = direction(g_r, g_f, FAVOUR_REAL)
    assert case == 1 and (w_r, w_f) == pytest.approx((1 / math.sqrt(rr), 4 / (ff * math.sqrt(rr))), rel=1e-12)
    assert (d @ g_f).item() == pytest.approx(rf / math.sqrt(rr) * 1e-4 / ff, rel=1e-6)  # the 1e-4 term's residual
    assert abs(cos(d, g_f)) < 1e-5 and cos(d, g_r) > 0  # trains L_r, leaves L_f alone to first order


def test_favour_fake_obtuse_is_orthogonal_to_the_real_gradient():
    """Case 3 (Theorem 2, case 3): w_r = -rf/(rr |g_f|), w_f = 1/|g_f|."""
    (g_r, g_f), rr, ff, rf = OBTUSE, 10 + 1e-4, 9 + 1e-4, -4.0
    d, (w_r, w_f, case) = direction(g_r, g_f, FAVOUR_FAKE)
    assert case == 3 and (w_r, w_f) == pytest.approx((4 / (rr * math.sqrt(ff)), 1 / math.sqrt(ff)), rel=1e-12)
    assert (d @ g_r).item() == pytest.approx(rf / math.sqrt(ff) * 1e-4 / rr, rel=1e-6)
    assert abs(cos(d, g_r)) < 1e-5 and cos(d, g_f) > 0


@pytest.mark.parametrize("scores, case, along", [(FAVOUR_REAL, 2, 0), (FAVOUR_FAKE, 4, 1)])
def test_acute_angle_trains_along_the_favoured_gradient(scores, case, along):
    """Cases 2 and 4: the favoured gradient alone, normalized (w = 0 on the other one)."""
    d, (w_r, w_f, taken) = direction(*ACUTE, scores)
    g = ACUTE[along]
    assert taken == case and (w_r, w_f)[1 - along] == 0
    torch.testing.assert_close(d, g / math.sqrt(g @ g + 1e-4), rtol=1e-15, atol=0)


@pytest.mark.parametrize("pair", [OBTUSE, ACUTE, (T(1.0, 0.0), T(-1.0, 1e-3)), (T(5.0, 0.0), T(0.0, 0.2))])
def test_balanced_case_is_the_angle_bisector(pair):
    """Case 5 (Theorem 2, case 1): w_r = 1/|g_r|, w_f = 1/|g_f| gives equal angles to both gradients (equal up to
    the 1e-4 in the norms), for obtuse, nearly opposite, orthogonal and acute pairs."""
    g_r, g_f = pair
    d, (w_r, w_f, case) = direction(g_r, g_f, BOTH)
    assert case == 5 and (w_r, w_f) == (1 / math.sqrt(g_r @ g_r + 1e-4), 1 / math.sqrt(g_f @ g_f + 1e-4))
    bound = 1e-4 / min(g_r @ g_r, g_f @ g_f).item()  # how far the 1e-4 can tilt d off the bisector (relative)
    assert cos(d, g_r) == pytest.approx(cos(d, g_f), abs=bound)
    assert math.degrees(math.acos(cos(d, g_r))) == pytest.approx(
        math.degrees(math.acos(cos(g_r, g_f))) / 2, abs=bound * 90
    )


@pytest.mark.parametrize("pair", [OBTUSE, ACUTE])
@pytest.mark.parametrize("scores", [FAVOUR_REAL, FAVOUR_FAKE, BOTH])
@pytest.mark.parametrize("normalized", [True, False])
def test_eps_is_added_to_both_weights(pair, scores, normalized):
    w_r0, w_f0, case0 = aw_gan.aw_weights(P(*pair), *scores, eps=0.0, normalized=normalized)
    w_r, w_f, case = aw_gan.aw_weights(P(*pair), *scores, eps=0.05, normalized=normalized)
    assert (
        case == case0 and w_r == pytest.approx(w_r0 + 0.05, abs=1e-15) and w_f == pytest.approx(w_f0 + 0.05, abs=1e-15)
    )
    assert aw_gan.aw_weights(P(*pair), *scores, normalized=normalized) == (w_r, w_f, case)  # eps defaults to 0.05


@pytest.mark.parametrize(
    "pair, scores, expected",
    [
        (OBTUSE, FAVOUR_REAL, (1, 4 / (9 + 1e-4), 1)),
        (ACUTE, FAVOUR_REAL, (1, 0, 2)),
        (OBTUSE, FAVOUR_FAKE, (4 / (10 + 1e-4), 1, 3)),
        (ACUTE, FAVOUR_FAKE, (0, 1, 4)),
        (OBTUSE, BOTH, (1, 1, 5)),
    ],
)
def test_algorithm_2_without_normalization(pair, scores, expected):
    """--no-normalize (Algorithm 2): 1/|g| -> 1, projections -rf/ff and -rf/rr; the same orthogonality."""
    d, (w_r, w_f, case) = direction(*pair, scores, normalized=False)
    assert (w_r, w_f, case) == pytest.approx(expected, rel=1e-12)
    if case in (1, 3):
        assert abs(cos(d, pair[1] if case == 1 else pair[0])) < 1e-5


def test_orthogonal_gradients_take_the_obtuse_branch():
    """rf = 0 falls under rf <= 0 (cases 1 and 3), whose projection weight is then 0: as the acute cases."""
    g_r, g_f = T(1.0, 0.0), T(0.0, 2.0)
    assert aw_gan.aw_weights(P(g_r, g_f), *FAVOUR_REAL, eps=0.0) == (1 / math.sqrt(1 + 1e-4), 0.0, 1)
    assert aw_gan.aw_weights(P(g_r, g_f), *FAVOUR_FAKE, eps=0.0) == (0.0, 1 / math.sqrt(4 + 1e-4), 3)


def test_vanishing_gradient_is_safe():
    """A zero gradient (a saturated hinge part) gives finite weights thanks to the 1e-4: |g| = 0.01."""
    w_r, w_f, case = aw_gan.aw_weights(P(torch.zeros(3), T(1.0, 0.0, 0.0).float()), *BOTH, eps=0.0)
    assert case == 5 and w_r == pytest.approx(100.0) and math.isfinite(w_f)


TINY_STEP = 2.0**-20
EDGES = [  # (s_r, s_f, delta, expected case with OBTUSE gradients); every number exact in binary
    (0.5, 0.0, 0.05, 5),
    (0.5 - TINY_STEP, 0.0, 0.05, 1),  # s_r == alpha1 is not "< alpha1"
    (0.75, 0.0, 0.05, 5),
    (0.75 + TINY_STEP, 0.0, 0.05, 3),  # s_r == alpha2 is not "> alpha2"
    (0.625, 0.75, 0.125, 5),
    (0.625, 0.75 + TINY_STEP, 0.125, 1),  # s_r == s_f - delta is not "< s_f - delta"
    (0.8125, 0.9375, 0.125, 5),
    (0.8125, 0.9375 - TINY_STEP, 0.125, 3),  # ... nor "> s_f - delta" (above alpha2)
    (0.8125, 0.9375 + TINY_STEP, 0.125, 1),  # s_r > alpha2, but the fake score is higher still: favour real
]


@pytest.mark.parametrize("s_r, s_f, delta, case", EDGES)
def test_threshold_edges_are_strict(s_r, s_f, delta, case):
    assert aw_gan.aw_weights(P(*OBTUSE), s_r, s_f, delta=delta)[2] == case


def test_gradient_angle():
    a = torch.tensor([1.0, 0.0])
    for b, degrees in (
        (torch.tensor([0.0, 3.0]), 90),
        (torch.tensor([2.0, 0.0]), 0),
        (torch.tensor([-1.0, 1.0]), 135),
        (torch.tensor([-5.0, 0.0]), 180),
        (torch.zeros(2), 90),
    ):  # undefined: 90, flagged by aw_d_step
        assert aw_gan.gradient_angle(aw_gan.gradient_products(a, b)).item() == pytest.approx(degrees, abs=1e-3)


def tiny_sn_discriminator(arch, seed=0):
    torch.manual_seed(seed)
    D = {"resnet": aw_gan.ResNetDiscriminator, "cnn": aw_gan.CNNDiscriminator}[arch](1, 16, 4)
    D.apply(aw_gan.sngan_init if arch == "resnet" else aw_gan.dcgan_init)
    return aw_gan.spectral_norm_all(D)


def manual_losses(real_logits, fake_logits, loss):
    if loss == "hinge":
        return torch.clamp(1 - real_logits, min=0).mean(), torch.clamp(1 + fake_logits, min=0).mean()
    return -torch.log(torch.sigmoid(real_logits)).mean(), -torch.log(1 - torch.sigmoid(fake_logits)).mean()


@pytest.mark.parametrize(
    "arch, loss, favour",
    [
        ("cnn", "hinge", "real"),
        ("cnn", "hinge", "fake"),
        ("cnn", "hinge", "both"),
        ("resnet", "gan", "real"),
        ("resnet", "gan", "fake"),
        ("cnn", "hinge", None),
        ("resnet", "gan", None),
    ],
)
def test_one_d_step_equals_the_manual_weighted_gradient(arch, loss, favour):
    """aw_d_step on a tiny spectral-norm D against the same step done by hand: separate backward passes of L_r and
    L_f through the same two forward passes, Algorithm 1's weights from those gradients, an SGD step. favour
    forces a branch by the thresholds (None: --no-aw, weights 1)."""
    thresholds = {
        "real": dict(alpha1=2.0),
        "fake": dict(alpha1=-1.0, alpha2=-1.0, delta=2.0),
        "both": dict(alpha1=-1.0, alpha2=2.0, delta=2.0),
    }.get(favour, {})
    D = tiny_sn_discriminator(arch)
    torch.manual_seed(1)
    real, fake = torch.rand(6, 1, 16, 16) * 2 - 1, 0.5 * torch.randn(6, 1, 16, 16)
    D_manual = copy.deepcopy(D)
    stats = aw_gan.aw_d_step(
        D, torch.optim.SGD(D.parameters(), lr=0.1), real, fake, loss, favour is not None, **thresholds
    )

    real_logits, fake_logits = D_manual(real), D_manual(fake)
    grads = []
    for part in manual_losses(real_logits, fake_logits, loss):
        D_manual.zero_grad()
        part.backward()
        grads.append(torch.cat([p.grad.flatten() for p in D_manual.parameters()]).double())
    g_r, g_f = grads
    rr, ff, rf = (g_r @ g_r).item() + 1e-4, (g_f @ g_f).item() + 1e-4, (g_r @ g_f).item()
    assert abs(g_r @ g_r) > 0 and abs(g_f @ g_f) > 0  # both parts active: the test can tell the weights apart
    w_r, w_f = {
        "real": (1 / math.sqrt(rr), -rf / (ff * math.sqrt(rr)) if rf <= 0 else 0.0),
        "fake": (-rf / (rr * math.sqrt(ff)) if rf <= 0 else 0.0, 1 / math.sqrt(ff)),
        "both": (1 / math.sqrt(rr), 1 / math.sqrt(ff)),
        None: (None, None),
    }[favour]
    expected = (w_r + 0.05) * g_r + (w_f + 0.05) * g_f if favour else g_r + g_f

    got = torch.cat([p.grad.flatten() for p in D.parameters()]).double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    for p, q, g in zip(
        D.parameters(), D_manual.parameters(), expected.float().split([p.numel() for p in D.parameters()])
    ):
        torch.testing.assert_close(p, q - 0.1 * g.view_as(q), rtol=1e-5, atol=1e-7)
    for (name, b), (_, b_manual) in zip(
        D.named_buffers(), D_manual.named_buffers()
    ):  # SN's u, v: 2 power iterations each
        assert torch.equal(b, b_manual), name
    assert stats["s_r"].item() == pytest.approx(torch.sigmoid(real_logits).mean().item(), rel=1e-6)
    assert stats["s_f"].item() == pytest.approx(torch.sigmoid(fake_logits).mean().item(), rel=1e-6)
    assert stats["d_loss"].item() == pytest.approx(sum(manual_losses(real_logits, fake_logits, loss)).item(), rel=1e-5)
    assert stats["angle"].item() == pytest.approx(
        math.degrees(math.acos(rf / math.sqrt((rr - 1e-4) * (ff - 1e-4)))), abs=1e-2
    )
    if favour:
        assert (stats["w_r"].item(), stats["w_f"].item()) == pytest.approx((w_r + 0.05, w_f + 0.05), rel=1e-4)
        case = {"real": 1 if rf <= 0 else 2, "fake": 3 if rf <= 0 else 4, "both": 5}[favour]
        assert [stats[f"case{c}"].item() for c in range(1, 6)] == [float(c == case) for c in range(1, 6)]
    else:
        assert "w_r" not in stats and "case1" not in stats


def test_unweighted_step_is_the_plain_backward():
    """--no-aw: the gradient set by aw_d_step is that of one backward pass of L_r + L_f (up to rounding: through the
    spectral norm each weight gets several gradient contributions, which the two ways sum in another order)."""
    D = tiny_sn_discriminator("resnet")
    real, fake = torch.rand(4, 1, 16, 16), torch.randn(4, 1, 16, 16)
    D_plain = copy.deepcopy(D)
    aw_gan.aw_d_step(D, torch.optim.SGD(D.parameters(), lr=0.0), real, fake, "gan", aw=False)
    sum(aw_gan.d_loss_parts(D_plain(real), D_plain(fake), "gan")).backward()
    for p, q in zip(D.parameters(), D_plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("arch", ["resnet", "cnn"])
def test_networks_shapes_and_spectral_norm(arch, size):
    G_cls, D_cls = {
        "resnet": (aw_gan.ResNetGenerator, aw_gan.ResNetDiscriminator),
        "cnn": (aw_gan.CNNGenerator, aw_gan.CNNDiscriminator),
    }[arch]
    torch.manual_seed(0)
    G, D = G_cls(10, 3, size, 8), aw_gan.spectral_norm_all(D_cls(3, size, 8))
    images = G(torch.randn(5, 10))
    assert images.shape == (5, 3, size, size) and images.abs().max() <= 1
    assert D(images).shape == (5,)
    layers = [m for m in D.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert layers and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in G.modules())
    for _ in range(20):  # power iterations in train mode: every effective weight has spectral norm ~1
        D(images)
    with torch.no_grad():
        sigmas = [torch.linalg.matrix_norm(m.weight.flatten(1), 2).item() for m in layers]
    assert sigmas == pytest.approx([1.0] * len(sigmas), abs=0.05)


def test_sngan_cifar10_configuration():
    """The published 32x32 networks: SN-GAN ResNet G (4.28M parameters at width 256) and D (1.05M at 128: two
    downsampling blocks to 8x8, then two more), the standard CNN D's widths and lReLU slope (SN-GAN Table 3b)."""
    G, D = aw_gan.ResNetGenerator(128, 3, 32, 256), aw_gan.ResNetDiscriminator(3, 32, 128)
    assert sum(p.numel() for p in G.parameters()) == 4_276_739 and sum(p.numel() for p in D.parameters()) == 1_053_824
    assert D(torch.zeros(2, 3, 32, 32)).shape == (2,)
    cnn = aw_gan.CNNDiscriminator(3, 32, 64)
    assert [m.out_channels for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)] == [
        64,
        64,
        128,
        128,
        256,
        256,
        512,
    ]
    assert {m.negative_slope for m in cnn.modules() if isinstance(m, torch.nn.LeakyReLU)} == {0.1}
    assert [
        m.out_channels for m in aw_gan.CNNGenerator(128, 3, 32, 64).modules() if isinstance(m, torch.nn.ConvTranspose2d)
    ] == [256, 128, 64]


def test_init_precedes_spectral_norm():
    """sngan_init's xavier-uniform weights are what the parametrization normalizes (init first, then SN)."""
    torch.manual_seed(0)
    D = aw_gan.ResNetDiscriminator(1, 16, 8)
    D.apply(aw_gan.sngan_init)
    before = [m.weight.detach().clone() for m in D.modules() if isinstance(m, torch.nn.Conv2d)]
    aw_gan.spectral_norm_all(D)
    after = [m.parametrizations.weight.original for m in D.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    w = after[1]  # 8 -> 8 channels, 3x3: xavier bound sqrt(6 / (fan_in + fan_out))
    assert w.abs().max() <= math.sqrt(6 / (2 * 8 * 9)) and w.std() > 0.5 * math.sqrt(2 / (2 * 8 * 9))


def test_lr_factor_decays_linearly_to_zero():
    assert [aw_gan.lr_factor(s, 8) for s in (0, 2, 4, 8, 9)] == [1.0, 0.75, 0.5, 0.0, 0.0]
    assert aw_gan.lr_factor(123, 0) == 1.0


def test_parse_args_defaults_are_sngan_cifar10():
    args = aw_gan.parse_args([])[0]
    assert (args.lr_g, args.lr_d, args.beta1, args.beta2, args.n_critic) == (2e-4, 2e-4, 0.0, 0.9, 5)
    assert (args.batch_size, args.g_batch_size, args.z_dim, args.total_steps, args.lr_decay_steps) == (
        64,
        128,
        128,
        50_000,
        50_000,
    )
    assert (args.arch, args.ngf, args.ndf, args.loss, args.aw, args.normalize) == (
        "resnet",
        256,
        128,
        "hinge",
        True,
        True,
    )
    assert (args.alpha1, args.alpha2, args.delta, args.eps) == (0.5, 0.75, 0.05, 0.05)
    assert (aw_gan.parse_args(["--arch", "cnn"])[0].ngf, aw_gan.parse_args(["--arch", "cnn"])[0].ndf) == (64, 64)
    assert args.exp_name == "aw_gan" and aw_gan.parse_args(["--total-steps", "7"])[0].lr_decay_steps == 7


def test_import_has_no_side_effects(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import aw_gan"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert list(tmp_path.iterdir()) == []


def test_mnist_end_to_end(data_root, tmp_path):
    summary = aw_gan.main(SMALL + ["--data-root", data_root, "--total-steps", "4", "--out-dir", str(tmp_path)])
    run_dir, ckpt = check_run_dir(summary, 4, [2, 4])
    metrics = read_metrics(run_dir)
    assert set(metrics[0]) == {"step", "d_loss", "g_loss", "s_r", "s_f", "angle", "grad_vanished", "w_r", "w_f"} | {
        f"case{c}" for c in range(1, 6)
    }
    for m in metrics:  # the n_critic = 2 updates of each step: a count per case, means of the rest
        assert sum(m[f"case{c}"] for c in range(1, 6)) == 2 and m["w_r"] >= 0.05 and m["w_f"] >= 0.05
        assert 0 < m["s_r"] < 1 and 0 < m["s_f"] < 1 and 0 <= m["angle"] <= 180
    assert any(k.endswith("_u") for k in ckpt["D"])  # spectral norm's power-iteration state is saved
    assert ckpt["opt_D"]["param_groups"][0]["lr"] == pytest.approx(2e-4 * (1 - 3 / 4))  # linear decay


def test_no_aw_baseline_starts_from_the_same_weights(data_root, tmp_path):
    """Same seed: the first D update sees the same D, data and noise, so its pre-update statistics agree; the weights
    then make the runs differ. --no-aw logs no weights or cases."""
    args = SMALL + ["--data-root", data_root, "--total-steps", "2", "--n-critic", "1"]
    aw = read_metrics(aw_gan.main(args + ["--out-dir", str(tmp_path / "aw")])["run_dir"])
    base = read_metrics(aw_gan.main(args + ["--out-dir", str(tmp_path / "base"), "--no-aw"])["run_dir"])
    assert {k: aw[0][k] for k in base[0] if k != "g_loss"} == {k: v for k, v in base[0].items() if k != "g_loss"}
    assert aw[0]["g_loss"] != base[0]["g_loss"] and aw[1] != base[1]
    assert set(base[0]) == {"step", "d_loss", "g_loss", "s_r", "s_f", "angle", "grad_vanished"}


def test_resume_is_exact(data_root, tmp_path):
    full, resumed = check_resume_exact(
        aw_gan.main,
        SMALL + ["--data-root", data_root, "--checkpoint-every", "0", "--lr-decay-steps", "4"],
        tmp_path,
        total=4,
        first=2,
    )
    a = torch.load(Path(full["run_dir"]) / "checkpoint.pt", weights_only=True)
    b = torch.load(Path(resumed["run_dir"]) / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(a["D"][k], b["D"][k]) for k in a["D"])


def test_standard_cnn_gan_loss_algorithm_2_end_to_end(data_root, tmp_path):
    summary = aw_gan.main(
        TINY
        + [
            "--data-root",
            data_root,
            "--image-size",
            "32",
            "--arch",
            "cnn",
            "--loss",
            "gan",
            "--no-normalize",
            "--ngf",
            "4",
            "--ndf",
            "4",
            "--g-batch-size",
            "8",
            "--n-critic",
            "1",
            "--total-steps",
            "2",
            "--out-dir",
            str(tmp_path),
        ]
    )
    run_dir, ckpt = check_run_dir(summary, 2, [2])
    assert ckpt["args"]["arch"] == "cnn" and not ckpt["args"]["normalize"]
    assert all(m["w_r"] >= 0.05 and m["w_f"] >= 0.05 for m in read_metrics(run_dir))


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--alpha1", "0.8", "--alpha2", "0.7"], ["--alpha1", "--alpha2"]),
        (["--alpha2", "1.5"], ["--alpha2", "1.5"]),
        (["--eps", "nan"], ["--eps", "nan"]),
        (["--delta", "-0.1"], ["--delta"]),
        (["--loss", "lsgan"], ["--loss", "lsgan"]),
        (["--arch", "biggan"], ["--arch", "biggan"]),
        (["--g-batch-size", "0"], ["--g-batch-size", "> 0"]),
        (["--ndf", "0"], ["--ndf", "> 0"]),
        (["--lr-decay-steps", "-1"], ["--lr-decay-steps"]),
        (["--image-size", "24"], ["--image-size", "24"]),
    ],
)
def test_bad_arguments(args, expected, capsys):
    check_bad_input(aw_gan.main, args, capsys, *expected)


def test_resume_keeps_the_lr_schedule(data_root, tmp_path, capsys):
    """--lr-decay-steps defaults to --total-steps when the run starts and is saved: extending the run keeps the
    schedule (lr 0 from step 1 on here); another horizon given on resume is refused."""
    args = SMALL + ["--data-root", data_root, "--out-dir", str(tmp_path), "--n-critic", "1"]
    aw_gan.main(args + ["--total-steps", "1"])
    check_bad_input(
        aw_gan.main,
        args + ["--total-steps", "2", "--resume", "auto", "--lr-decay-steps", "2"],
        capsys,
        "cannot resume",
        "--lr-decay-steps 1",
    )
    summary = aw_gan.main(args + ["--total-steps", "2", "--resume", "auto"])
    ckpt = torch.load(Path(summary["run_dir"]) / "checkpoint.pt", weights_only=True)
    assert summary["step"] == 2 and ckpt["args"]["lr_decay_steps"] == 1
    assert ckpt["opt_D"]["param_groups"][0]["lr"] == 0.0


def test_cli_error_is_one_line_without_traceback():
    out = run_script("aw_gan.py", "--alpha1", "0.9")
    assert out.returncode == 2 and out.stderr.strip() == (
        "aw_gan.py: error: need 0 <= --alpha1 < --alpha2 <= 1 (thresholds on a probability), got 0.9, 0.75"
    )


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--no-aw", "--alpha1", "0.4"], ["--alpha1 would be ignored", "--no-aw"]),
        (
            ["--no-aw", "--no-normalize", "--eps", "0.1", "--delta", "0.1"],
            ["--normalize, --delta, --eps would be ignored"],
        ),
    ],
)
def test_aw_flags_with_no_aw_are_refused(args, expected, capsys):
    check_bad_input(aw_gan.main, args, capsys, *expected)


def test_help_has_no_contradicting_defaults():
    out = run_script("aw_gan.py", "--help").stdout
    assert (
        "(default: 256" not in out
        and "(None: 256 for resnet, 64 for cnn)" in out
        and "not Radford's DCGAN" in " ".join(out.split())
    )
