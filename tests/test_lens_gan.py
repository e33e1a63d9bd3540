"""lens_gan.py: the schedule, the lens, the losses against hand-computed values, which network each loss trains,
the paired --no-lens baseline, and the script end to end for gan, lsgan and wgan-gp."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lens_gan
from conftest import ROOT, TINY, check_bad_input, check_resume_exact, check_run_dir, read_metrics, run_script, states

SMALL = TINY + ["--ngf", "8", "--ndf", "8", "--lens-channels", "4"]
LENS_KEYS = {"lens_loss", "lens_adv_term", "lens_rec_loss", "lens_lambda", "lens_abs_err"}
sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731


def test_lens_lambda_exact_values_and_monotone():
    k = 300  # divisible by 3 and 2, so t = K/3 and K/2 are steps
    assert lens_gan.lens_lambda(0, k) == 1.0
    assert lens_gan.lens_lambda(k // 3, k) == pytest.approx(1 - 0.5, abs=1e-15)  # 1 - sin(pi/6)
    assert lens_gan.lens_lambda(k // 2, k) == pytest.approx(1 - math.sqrt(2) / 2, abs=1e-15)  # 1 - sin(pi/4)
    assert lens_gan.lens_lambda(k, k) == 0.0  # 1 - sin(pi/2)
    assert lens_gan.lens_lambda(k + 1, k) == 0.0
    values = [lens_gan.lens_lambda(t, k) for t in range(2 * k)]
    assert all(a > b for a, b in zip(values[:k], values[1 : k + 1]))  # strictly decreasing until K
    assert set(values[k:]) == {0.0}
    assert lens_gan.lens_lambda(10_000 / 3, 10_000) == pytest.approx(0.5, abs=1e-15)  # the default K


def test_lens_architecture_init_and_identity():
    torch.manual_seed(0)
    lens = lens_gan.Lens(3, width=16)
    lens.apply(lens_gan.xavier_init)
    convs = [m for m in lens.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(lens.blocks) == 8 and len(convs) == 2 * 8 + 2  # Fig. 4: 8 residual blocks, plus head and tail
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.padding == (1, 1) for c in convs)
    for c in convs:  # Xavier uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)), zero bias
        a = math.sqrt(6 / (9 * (c.in_channels + c.out_channels)))
        assert c.weight.abs().max() <= a and c.weight.std().item() == pytest.approx(a / math.sqrt(3), rel=0.15)
        assert not c.bias.any()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    assert lens(x).shape == x.shape and not torch.allclose(lens(x), x)
    torch.nn.init.zeros_(lens.tail.weight)  # the residual branch's output is zero: L is the identity, exactly
    assert torch.equal(lens(x), x)
    assert lens_gan.Lens(1, 8)(x[:, :1]).shape == (4, 1, 32, 32)


@pytest.mark.parametrize(
    "loss, expected",
    [
        ("gan", (math.log(2) + math.log(1 + math.exp(2))) / 2),  # eq. (8): -log(1 - sigmoid(phi)), phi = 0, 2
        ("lsgan", (0**2 + 2**2) / 2),  # eq. (11)
        ("wgan-gp", (0 + 2) / 2),  # eq. (14)
    ],
)
def test_lens_adversarial_loss_hand_values(loss, expected):
    assert lens_gan.lens_adversarial_loss(torch.tensor([0.0, 2.0]), loss).item() == pytest.approx(expected, rel=1e-6)


def test_lens_adversarial_loss_is_stable_for_large_logits():
    assert lens_gan.lens_adversarial_loss(torch.tensor([100.0]), "gan").item() == pytest.approx(100.0)  # not inf


def test_lens_reconstruction_loss_is_the_mean_squared_error():
    real, lensed = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert lens_gan.lens_reconstruction_loss(real, lensed).item() == (1 + 4 + 9 + 16) / 4  # eq. (2), mean


REAL, FAKE = torch.tensor([0.0, 2.0]), torch.tensor([-1.0, 1.0])  # D's outputs on L(x) and on G(z)


@pytest.mark.parametrize(
    "loss, expected_d, expected_g",
    [
        (
            "gan",
            -(math.log(sig(0)) + math.log(sig(2))) / 2 - (math.log(1 - sig(-1)) + math.log(1 - sig(1))) / 2,
            -(math.log(sig(-1)) + math.log(sig(1))) / 2,
        ),  # eqs. (7), (5)
        (
            "lsgan",
            ((0 - 1) ** 2 + (2 - 1) ** 2) / 2 + ((-1) ** 2 + 1**2) / 2,
            ((-1 - 1) ** 2 + (1 - 1) ** 2) / 2,
        ),  # (10), (9)
        ("wgan-gp", (-1 + 1) / 2 - (0 + 2) / 2, -(-1 + 1) / 2),  # eqs. (13), (12)
    ],
)
def test_gan_losses_hand_values(loss, expected_d, expected_g):
    assert lens_gan.d_loss(REAL, FAKE, loss).item() == pytest.approx(expected_d, rel=1e-6)
    assert lens_gan.g_loss(FAKE, loss).item() == pytest.approx(expected_g, rel=1e-6, abs=1e-7)


class LinearCritic(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1)


def test_gradient_penalty_closed_forms():
    # D(x) = <w, x>: grad D = w everywhere, so the penalty is (|w| - 1)^2 = (5 - 1)^2 and d/dw = 2 (|w| - 1) w / |w|
    critic = LinearCritic(torch.tensor([[[3.0, 0.0], [0.0, 4.0]]]))
    penalty = lens_gan.gradient_penalty(critic, torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2))
    assert penalty.item() == pytest.approx(16.0)
    (grad,) = torch.autograd.grad(penalty, critic.w)
    torch.testing.assert_close(grad, 2 * 4 * critic.w.detach() / 5)
    # D(x) = |x|^2 / 2: grad D(x^) = x^, so the penalty is the mean of (|x^_i| - 1)^2
    # with x^ = eps L(x) + (1 - eps) G(z)
    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    torch.manual_seed(7)
    penalty = lens_gan.gradient_penalty(lambda x: (x**2).flatten(1).sum(1) / 2, real, fake)
    torch.manual_seed(7)
    eps = torch.rand(5)  # the same draws: one eps per sample
    x_hat = eps.view(5, 1, 1, 1) * real + (1 - eps.view(5, 1, 1, 1)) * fake
    assert penalty.item() == pytest.approx(((x_hat.flatten(1).norm(dim=1) - 1) ** 2).mean().item(), rel=1e-6)


def test_parse_args_defaults_per_loss():
    gan = lens_gan.parse_args([])[0]
    assert (gan.loss, gan.lr_g, gan.lr_d, gan.lr_lens, gan.beta1, gan.beta2, gan.n_critic, gan.batch_size) == (
        "gan",
        1e-4,
        1e-4,
        1e-4,
        0.5,
        0.999,
        1,
        64,
    )
    assert (gan.lens, gan.lens_k, gan.lens_lambda, gan.lens_channels, gan.ngf, gan.exp_name) == (
        True,
        10_000,
        None,
        32,
        64,
        "lens_gan",
    )
    wgan = lens_gan.parse_args(["--loss", "wgan-gp"])[0]
    assert (wgan.beta2, wgan.n_critic, wgan.gp_lambda, wgan.ngf, wgan.ndf, wgan.z_dim) == (0.9, 5, 10.0, 128, 128, 128)
    assert lens_gan.parse_args(["--loss=wgan-gp", "--n-critic", "2"])[0].n_critic == 2  # explicit flags win


def test_import_has_no_side_effects(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import lens_gan"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def adam_spy(monkeypatch):
    """torch.optim.Adam that records, per optimizer (creation order: G, D, lens), its initial parameters and, at
    every step, which optimizer stepped and the .grad of every parameter of every optimizer at that moment."""
    made, steps = [], []

    class SpyAdam(torch.optim.Adam):
        def __init__(self, params, **kwargs):
            params = list(params)
            super().__init__(params, **kwargs)
            self.initial = [p.detach().clone() for p in params]
            made.append(self)

        def step(self, closure=None):
            grads = [[None if p.grad is None else p.grad.clone() for p in o.param_groups[0]["params"]] for o in made]
            steps.append((made.index(self), grads))
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "Adam", SpyAdam)
    return made, steps


def same(a, b):
    return all(
        (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y)) for x, y in zip(a, b)
    )


@pytest.mark.parametrize("loss", ["gan", "wgan-gp"])
def test_lens_and_discriminator_train_only_on_their_own_losses(loss, data_root, tmp_path, adam_spy):
    made, steps = adam_spy
    lens_gan.main(
        SMALL
        + [
            "--data-root",
            data_root,
            "--loss",
            loss,
            "--n-critic",
            "2",
            "--total-steps",
            "3",
            "--out-dir",
            str(tmp_path),
        ]
    )
    G, D, LENS = 0, 1, 2
    assert [who for who, _ in steps] == [D, D, LENS, G] * 3  # the lens: once per iteration whatever n_critic
    last = {LENS: [None] * len(made[LENS].initial)}
    for who, grads in steps:
        if who == D:  # D's loss put nothing into the lens: its .grad is what the lens's own step left
            # (D's: not all non-zero, the wgan-gp loss's gradient in the last bias is 1 - 1 = 0)
            assert same(grads[LENS], last[LENS])
            assert all(g is not None for g in grads[D]) and any(g.any() for g in grads[D])
        if who == LENS:  # the lens loss put nothing into D: its .grad is what D's own step left
            assert same(grads[D], last[D])
            assert all(g is not None for g in grads[LENS]) and any(g.any() for g in grads[LENS])
        last[who] = grads[who]


def test_discriminator_and_penalty_see_lensed_not_raw_images(data_root, tmp_path, monkeypatch):
    lens_io, d_inputs, penalty_reals = [], [], []

    class SpyLens(lens_gan.Lens):
        def forward(self, x):
            lens_io.append((x, super().forward(x)))
            return lens_io[-1][1]

    class SpyD(lens_gan.GulrajaniCritic):  # wgan-gp's critic: Gulrajani et al.'s network
        def forward(self, x):
            d_inputs.append(x.detach().clone())
            return super().forward(x)

    penalty = lens_gan.gradient_penalty
    monkeypatch.setattr(lens_gan, "Lens", SpyLens)
    monkeypatch.setattr(lens_gan, "GulrajaniCritic", SpyD)
    monkeypatch.setattr(
        lens_gan, "gradient_penalty", lambda D, real, fake: penalty_reals.append(real) or penalty(D, real, fake)
    )
    lens_gan.main(
        SMALL
        + [
            "--data-root",
            data_root,
            "--loss",
            "wgan-gp",
            "--n-critic",
            "2",
            "--total-steps",
            "2",
            "--sample-every",
            "0",
            "--out-dir",
            str(tmp_path),
        ]
    )
    training = lens_io[:4]  # 2 iterations x 2 critic batches; then the L(x) grid
    assert len(lens_io) == 5 and len(penalty_reals) == 4
    assert all(r is lensed for r, (_, lensed) in zip(penalty_reals, training))  # x^ between L(x) and G(z)
    for x, lensed in training:  # D sees L(x) (in its step, and again in the lens step of the last batch), never x
        assert any(torch.equal(d, lensed) for d in d_inputs) and not any(torch.equal(d, x) for d in d_inputs)


def test_no_lens_starts_from_the_same_g_and_d(data_root, tmp_path, adam_spy):
    made, _ = adam_spy
    args = SMALL + ["--data-root", data_root, "--total-steps", "2", "--out-dir", str(tmp_path)]
    lens_gan.main(args)
    baseline = lens_gan.main(
        [a for a in args if a not in ("--lens-channels", "4")] + ["--no-lens"]
    )  # lens flags: refused
    lens_gan.main(args + ["--seed", "2"])
    (g, d, lens), (g0, d0), (g2, *_) = made[:3], made[3:5], made[5:]
    assert all(torch.equal(a, b) for a, b in zip(g.initial + d.initial, g0.initial + d0.initial))
    assert not all(torch.equal(a, b) for a, b in zip(g.initial, g2.initial))  # the check can fail
    assert len(lens.initial) == 2 * 18  # 18 convs (weight, bias) in the lens run only
    run_dir, ckpt = check_run_dir(baseline, 2, [2])
    assert set(read_metrics(run_dir)[0]) == {"step", "d_loss", "g_loss", "d_real", "d_fake"}
    lensed = read_metrics(next(p for p in tmp_path.glob("mnist__lens_gan__1__*") if str(p) != baseline["run_dir"]))
    assert (
        lensed[0]["d_fake"] == read_metrics(run_dir)[0]["d_fake"]
    )  # same D, G and noise z: the lens draws no training noise
    assert states(ckpt) == {"G", "D", "opt_G", "opt_D"} and not list((run_dir / "samples").glob("lens_*"))


@pytest.mark.parametrize("loss", ["gan", "lsgan", "wgan-gp"])
def test_mnist_end_to_end(loss, data_root, tmp_path):
    summary = lens_gan.main(
        SMALL
        + [
            "--data-root",
            data_root,
            "--loss",
            loss,
            "--total-steps",
            "4",
            "--lens-k",
            "2",
            "--n-critic",
            "2" if loss == "wgan-gp" else "1",
            "--out-dir",
            str(tmp_path),
        ]
    )
    run_dir, ckpt = check_run_dir(summary, 4, [2, 4])
    assert (run_dir / "samples" / "lens_step_0000002.png").exists() and (
        run_dir / "samples" / "lens_step_0000004.png"
    ).exists()
    metrics = read_metrics(run_dir)
    expected = (
        {"step", "d_loss", "g_loss", "d_real", "d_fake"}
        | LENS_KEYS
        | ({"gradient_penalty"} if loss == "wgan-gp" else set())
    )
    assert set(metrics[0]) == expected
    assert [m["lens_lambda"] for m in metrics] == [
        1.0,
        pytest.approx(1 - math.sqrt(2) / 2),
        0.0,
        0.0,
    ]  # t = 0..3, K = 2
    for m in metrics:
        assert m["lens_loss"] == pytest.approx(m["lens_adv_term"] + m["lens_rec_loss"], rel=1e-5)  # eq. (3)
        assert m["lens_abs_err"] ** 2 <= m["lens_rec_loss"] * (1 + 1e-5)  # mean|e|^2 <= mean e^2
    assert states(ckpt) == {"G", "D", "lens", "opt_G", "opt_D", "opt_lens"}
    has_bn = lambda sd: any("running_mean" in k for k in sd)  # noqa: E731
    assert (has_bn(ckpt["G"]), has_bn(ckpt["D"])) == (loss != "lsgan", loss == "gan")


def test_fixed_lambda(data_root, tmp_path):
    summary = lens_gan.main(
        SMALL + ["--data-root", data_root, "--total-steps", "2", "--lens-lambda", "0.5", "--out-dir", str(tmp_path)]
    )
    assert [m["lens_lambda"] for m in read_metrics(summary["run_dir"])] == [
        0.5,
        0.5,
    ]  # the schedule would give 1 at t = 0


def test_resume_is_exact_with_the_lens(data_root, tmp_path):
    args = SMALL + ["--data-root", data_root, "--checkpoint-every", "0", "--loss", "wgan-gp", "--n-critic", "2"]
    full, resumed = check_resume_exact(lens_gan.main, args, tmp_path, total=6, first=3)
    a = torch.load(Path(full["run_dir"]) / "checkpoint.pt", weights_only=True)
    b = torch.load(Path(resumed["run_dir"]) / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(v, b["lens"][k]) for k, v in a["lens"].items())
    exp_avg = lambda ckpt: [s["exp_avg"] for s in ckpt["opt_lens"]["state"].values()]  # noqa: E731
    assert all(torch.equal(x, y) for x, y in zip(exp_avg(a), exp_avg(b))) and len(exp_avg(a)) == 36


def test_fid_is_measured_against_the_real_data(data_root, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(lens_gan.fid, "load_inception", lambda weights, device: None)
    monkeypatch.setattr(lens_gan.fid, "reference_statistics", lambda dataset, *a, **k: seen.setdefault("ref", dataset))
    monkeypatch.setattr(lens_gan.fid, "fid_from_generator", lambda *a, **k: {"fid": 1.0, "is_mean": 2.0})
    summary = lens_gan.main(
        SMALL + ["--data-root", data_root, "--total-steps", "2", "--eval-every", "2", "--out-dir", str(tmp_path)]
    )
    real = lens_gan.make_dataset(lens_gan.parse_args(SMALL + ["--data-root", data_root])[0])
    assert torch.equal(seen["ref"][3][0], real[3][0])  # the images x themselves, never L(x)
    assert summary["fid"] == 1.0 and read_metrics(summary["run_dir"])[-1]["fid"] == 1.0


def test_image_folder_cli_wgan_gp(image_folder, tmp_path):
    out = run_script(
        "lens_gan.py",
        "--dataset",
        "folder",
        "--data-root",
        image_folder,
        "--loss",
        "wgan-gp",
        "--image-size",
        "16",
        "--batch-size",
        "4",
        "--total-steps",
        "2",
        "--n-critic",
        "1",
        "--ngf",
        "8",
        "--ndf",
        "8",
        "--lens-channels",
        "4",
        "--num-workers",
        "0",
        "--log-every",
        "1",
        "--out-dir",
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "step 2/2" in out.stdout and "lens_lambda" in out.stdout and "gradient_penalty" in out.stdout
    run_dir = next(tmp_path.glob("folder__lens_gan__1__*"))
    assert (run_dir / "samples" / "lens_step_0000002.png").exists() and (run_dir / "checkpoint.pt").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--loss", "hinge"], ["--loss", "invalid choice"]),
        (["--lens-k", "0"], ["--lens-k", "> 0"]),
        (["--lens-channels", "-4"], ["--lens-channels"]),
        (["--lens-lambda", "-1"], ["--lens-lambda", ">= 0"]),
        (["--lens-lambda", "nan"], ["--lens-lambda"]),
        (["--gp-lambda", "inf"], ["--gp-lambda", "finite"]),
        (["--lr-lens", "0"], ["--lr-lens"]),
    ],
)
def test_bad_arguments(args, expected, capsys):
    check_bad_input(lens_gan.main, args, capsys, *expected)


def test_resume_with_a_different_lens_setting_is_refused(data_root, tmp_path, capsys):
    summary = lens_gan.main(SMALL + ["--data-root", data_root, "--total-steps", "1", "--out-dir", str(tmp_path)])
    ckpt = str(Path(summary["run_dir"]) / "checkpoint.pt")
    check_bad_input(
        lens_gan.main,
        TINY + ["--ngf", "8", "--ndf", "8", "--data-root", data_root, "--resume", ckpt, "--no-lens"],
        capsys,
        "--lens",
    )


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--no-lens", "--lens-channels", "8"], ["--lens-channels", "would be ignored", "--no-lens"]),
        (["--no-lens", "--lr-lens", "1e-3", "--lens-k", "5"], ["--lr-lens, --lens-k", "would be ignored"]),
        (["--no-lens", "--lens-lambda", "1"], ["--lens-lambda", "would be ignored"]),
        (["--lens-lambda", "1", "--lens-k", "5"], ["--lens-k would be ignored", "--lens-lambda"]),
    ],
)
def test_flags_that_would_be_ignored_are_refused(args, expected, capsys):
    check_bad_input(lens_gan.main, args, capsys, *expected)


def test_lens_update_at_lambda_zero_is_the_reconstruction_update_bit_for_bit():
    """lambda = 0 skips D(L(x)): the lens gradient of 0 * L^A + L^R equals that of L^R alone, bit for bit."""
    torch.manual_seed(0)
    lens, D = lens_gan.Lens(1, 4), lens_gan.Discriminator(1, 16, 8)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    lensed = lens(x)
    with_term = 0.0 * lens_gan.lens_adversarial_loss(D(lensed), "gan") + lens_gan.lens_reconstruction_loss(x, lensed)
    a = torch.autograd.grad(with_term, list(lens.parameters()), retain_graph=True)
    b = torch.autograd.grad(lens_gan.lens_reconstruction_loss(x, lensed), list(lens.parameters()))
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_wgan_gp_uses_the_authors_networks_as_wgan_gp_py():
    """--loss wgan-gp: Gulrajani et al.'s gan_cifar.py networks and init, the very networks of wgan_gp.py."""
    import wgan_gp

    def seeded(make):
        torch.manual_seed(0)
        return list(make().parameters())

    for ours, theirs in (
        (lambda: lens_gan.GulrajaniGenerator(16, 3, 32, 8), lambda: wgan_gp.Generator(16, 3, 32, 8)),
        (lambda: lens_gan.GulrajaniCritic(3, 32, 8), lambda: wgan_gp.Critic(3, 32, 8)),
    ):
        assert all(torch.equal(a, b) for a, b in zip(seeded(ours), seeded(theirs), strict=True))
