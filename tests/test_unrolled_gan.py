"""unrolled_gan.py: the pure Adam step against torch.optim.Adam, the unrolled generator loss against the plain GAN
(K = 0), against real D steps (its value) and against finite differences (its gradient, second order), the unroll
leaving no trace on D, and the script end to end."""

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from PIL import Image
from torch.func import functional_call

import unrolled_gan as ug
from conftest import ROOT, TINY, check_bad_input, check_run_dir, read_metrics, states

LOSSES = ("gan", "mm", "lsgan", "hinge")


def mlps(seed=0):
    """A tiny float64 MLP generator (3 -> 5 -> 2) and discriminator (2 -> 6 -> 1 logit)."""
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    D = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 1), nn.Flatten(0)).double()
    return G, D


def dcgans(loss="gan", size=16, seed=0, dtype=torch.float32):
    """Tiny DCGAN G and D of the script (BN in both unless lsgan), DCGAN init."""
    torch.manual_seed(seed)
    G = ug.Generator(4, 1, size, ngf=4, batch_norm=loss != "lsgan").to(dtype)
    D = ug.Discriminator(1, size, ndf=4, batch_norm=loss != "lsgan").to(dtype)
    G.apply(ug.dcgan_init), D.apply(ug.dcgan_init)
    return G, D


def warm_adam(D, G, real, z, loss, steps=3, **adam):
    """D's Adam after a few ordinary steps on other batches, so that m, v and step are not trivial."""
    opt = torch.optim.Adam(D.parameters(), **adam)
    for _ in range(steps):
        with torch.no_grad():
            fake = G(torch.randn_like(z))
        opt.zero_grad()
        ug.d_loss(D(torch.randn_like(real) + real), D(fake), loss).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return opt


def plain_d_step(D, opt, real, fake, loss):
    """D's ordinary step of the training loop (eq. 11)."""
    opt.zero_grad(set_to_none=True)
    ug.d_loss(D(real), D(fake.detach()), loss).backward()
    opt.step()


# ------------------------------------------------------------------------------------------------ adam_step
def test_adam_step_equals_torch_adam_with_bias_correction():
    torch.manual_seed(0)
    lr, betas, eps = 0.01, (0.5, 0.9), 1e-6
    params = {"w": torch.randn(4, 3), "b": torch.randn(3)}
    live = {k: nn.Parameter(p.clone()) for k, p in params.items()}
    opt = torch.optim.Adam(live.values(), lr=lr, betas=betas, eps=eps)
    state = ug.adam_state(opt, live)
    assert len(opt.state) == 0 and all(s["step"] == 0 and not s["exp_avg"].any() for s in state.values())
    for step in range(1, 6):
        grads = {k: torch.randn_like(p) for k, p in params.items()}
        before = params
        params, state = ug.adam_step(params, grads, state, lr, betas, eps)
        for k, p in live.items():
            p.grad = grads[k].clone()
        opt.step()
        for k, p in live.items():
            assert torch.equal(params[k], p.detach()), (step, k)
            assert torch.equal(state[k]["exp_avg"], opt.state[p]["exp_avg"])
            assert torch.equal(state[k]["exp_avg_sq"], opt.state[p]["exp_avg_sq"])
            assert state[k]["step"] == opt.state[p]["step"].item() == step
        if step == 1:  # bias-corrected m_hat = g, v_hat = g^2: the first step is lr * g / (|g| + eps)
            for k, g in grads.items():
                torch.testing.assert_close(before[k] - params[k], lr * g / (g.abs() + eps), rtol=1e-5, atol=0)


def test_adam_step_leaves_the_live_optimizer_state_alone():
    torch.manual_seed(1)
    live = {"w": nn.Parameter(torch.randn(5))}
    opt = torch.optim.Adam(live.values(), lr=0.1)
    for _ in range(3):
        live["w"].grad = torch.randn(5)
        opt.step()
    snapshot = copy.deepcopy(opt.state_dict())
    weights = live["w"].detach().clone()
    new_params, new_state = ug.adam_step(
        dict(live), {"w": torch.randn(5)}, ug.adam_state(opt, live), 0.1, (0.9, 0.999), 1e-8
    )
    assert new_state["w"]["step"] == 4 and not torch.equal(new_params["w"], live["w"])
    after = opt.state_dict()
    assert after["state"][0]["step"] == snapshot["state"][0]["step"] == 3
    assert all(torch.equal(after["state"][0][k], snapshot["state"][0][k]) for k in ("exp_avg", "exp_avg_sq"))
    assert torch.equal(live["w"].detach(), weights)


def test_zero_gradients_from_a_fresh_adam_state_give_a_finite_generator_gradient():
    """A dead ReLU unit has exactly zero gradient, so v = 0 in the first unrolled step; sqrt'(0) = inf would turn
    the whole second-order gradient into NaN without the clamp in adam_step."""
    G, _ = mlps()
    torch.manual_seed(0)
    D = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1), nn.Flatten(0)).double()
    with torch.no_grad():
        D[0].weight[0], D[0].bias[0] = 0.0, -1.0  # unit 0 never fires
    opt = torch.optim.Adam(D.parameters(), lr=0.01)
    real, z = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    grads = torch.autograd.grad(ug.unrolled_generator_loss(D, opt, real, G(z), "gan", 2), list(G.parameters()))
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


# -------------------------------------------------------------------------------------- the unrolled loss
@pytest.mark.parametrize("loss", LOSSES)
def test_d_loss_real_is_the_real_half_of_d_loss(loss):
    r1, r2, f = torch.tensor([0.3, -2.0, 1.5]), torch.tensor([2.0, 0.1, -0.7]), torch.tensor([-1.0, 0.5, 3.0])
    torch.testing.assert_close(
        ug.d_loss(r1, f, loss) - ug.d_loss_real(r1, loss), ug.d_loss(r2, f, loss) - ug.d_loss_real(r2, loss)
    )
    assert ug.d_loss_real(r1, loss) != ug.d_loss_real(r2, loss)


def test_minimax_surrogate_is_the_value_function_f():
    """For --loss mm, f_K at K = 0 is f of eq. (1): E_x[log D(x)] + E_z[log(1 - D(G(z)))], by hand."""
    sig = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    _, D = mlps()
    real, fake = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    r, f = D(real).tolist(), D(fake).tolist()
    expected = sum(math.log(sig(t)) for t in r) / 4 + sum(math.log(1 - sig(t)) for t in f) / 4
    value = ug.unrolled_generator_loss(D, torch.optim.Adam(D.parameters()), real, fake, "mm", 0).item()
    assert value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("loss", LOSSES)
def test_zero_unroll_steps_is_exactly_the_plain_gan_generator_gradient(loss):
    G, D = dcgans(loss)
    real, z = torch.rand(6, 1, 16, 16) * 2 - 1, torch.randn(6, 4)
    opt = warm_adam(D, G, real, z, loss)
    fake = G(z)
    plain = torch.autograd.grad(ug.g_loss(D(fake), loss), list(G.parameters()), retain_graph=True)
    for first_order in (False, True):
        unrolled = torch.autograd.grad(
            ug.unrolled_generator_loss(D, opt, real, fake, loss, 0, first_order),
            list(G.parameters()),
            retain_graph=True,
        )
        assert all(torch.equal(a, b) for a, b in zip(plain, unrolled))


@pytest.mark.parametrize("loss, K", [("mm", 1), ("mm", 3), ("hinge", 2)])
def test_unrolled_value_equals_f_after_K_real_adam_steps_of_D(loss, K):
    """theta_D^K is D after K of its own Adam steps on this minibatch, from its live state (m, v, step carried
    through the unroll): f_K equals G's objective measured on a copy of D that really took those K steps."""
    G, D = dcgans(loss)
    real, z = torch.rand(6, 1, 16, 16) * 2 - 1, torch.randn(6, 4)
    opt = warm_adam(D, G, real, z, loss, lr=0.01, betas=(0.5, 0.999))
    with torch.no_grad():
        fake = G(z)
    value = ug.unrolled_generator_loss(D, opt, real, fake, loss, K).item()
    D2, opt2 = copy.deepcopy((D, opt))
    for _ in range(K):
        plain_d_step(D2, opt2, real, fake, loss)
    real_logits, fake_logits = D2(real), D2(fake)
    assert value == pytest.approx(
        (ug.g_loss(fake_logits, loss) - ug.d_loss_real(real_logits, loss)).item(), rel=1e-5, abs=1e-6
    )
    assert value != pytest.approx(ug.unrolled_generator_loss(D, opt, real, fake, loss, 0).item(), rel=1e-3)


@pytest.mark.parametrize("loss, K", [("mm", 1), ("gan", 1), ("gan", 2)])
def test_second_order_gradient_matches_finite_differences(loss, K):
    """d f(theta_G, theta_D^K(theta_G)) / d theta_G, coordinate by coordinate, by central differences in float64:
    the unrolled gradient matches it, the first-order one does not."""
    G, D = mlps()
    real, z = torch.randn(16, 2, dtype=torch.float64) + 1, torch.randn(16, 3, dtype=torch.float64)
    opt = warm_adam(D, G, real, z, loss, lr=0.05, betas=(0.5, 0.999))
    names, theta = zip(*[(n, p.detach()) for n, p in G.named_parameters()])

    def f_K(flat, first_order=False):
        chunks = flat.split([t.numel() for t in theta])
        fake = functional_call(G, {n: c.view_as(t) for n, c, t in zip(names, chunks, theta)}, (z,))
        return ug.unrolled_generator_loss(D, opt, real, fake, loss, K, first_order)

    flat = torch.cat([t.flatten() for t in theta]).requires_grad_()
    (exact,) = torch.autograd.grad(f_K(flat), flat)
    (first,) = torch.autograd.grad(f_K(flat, first_order=True), flat)
    h, eye = 1e-6, torch.eye(len(flat), dtype=torch.float64)
    numeric = torch.stack([(f_K(flat.detach() + h * e) - f_K(flat.detach() - h * e)).detach() / (2 * h) for e in eye])
    torch.testing.assert_close(exact, numeric, rtol=1e-6, atol=1e-8)
    assert (first - numeric).norm() > 0.05 * numeric.norm()  # the second-order term of eq. (12) is not small here


def test_second_order_through_batchnorm_and_inplace_leaky_relu():
    """The DCGAN D (BN, in-place LeakyReLU) in float64: a directional derivative of f_K by central differences."""
    G, D = dcgans("gan", dtype=torch.float64)
    real, z = torch.rand(4, 1, 16, 16, dtype=torch.float64) * 2 - 1, torch.randn(4, 4, dtype=torch.float64)
    opt = warm_adam(D, G, real, z, "gan", lr=0.01)
    params = dict(G.named_parameters())
    direction = {n: torch.randn_like(p) for n, p in params.items()}

    def f_K(t, first_order=False):
        fake = functional_call(G, {n: p + t * direction[n] for n, p in params.items()}, (z,))
        return ug.unrolled_generator_loss(D, opt, real, fake, "gan", 2, first_order)

    t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    (exact,) = torch.autograd.grad(f_K(t), t)
    (first,) = torch.autograd.grad(f_K(t, first_order=True), t)
    h = 1e-7  # BN makes f_K strongly curved along a random direction: a larger h is off by O(h^2) here
    numeric = (f_K(torch.tensor(h, dtype=torch.float64)) - f_K(torch.tensor(-h, dtype=torch.float64))).item() / (2 * h)
    assert exact.item() == pytest.approx(numeric, rel=1e-5)
    assert first.item() != pytest.approx(numeric, rel=1e-3)


def test_the_unroll_leaves_no_trace_on_D():
    """After an iteration, D's parameters, BN buffers, gradients and Adam state are those of a plain D step."""
    G, D = dcgans("gan")
    real, z = torch.rand(6, 1, 16, 16) * 2 - 1, torch.randn(6, 4)
    opt = warm_adam(D, G, real, z, "gan")
    D_plain, opt_plain = copy.deepcopy((D, opt))
    before = copy.deepcopy((D.state_dict(), opt.state_dict()))
    fake = G(z)
    ug.unrolled_generator_loss(D, opt, real, fake, "gan", 3).backward(inputs=list(G.parameters()))
    assert all(p.grad is None for p in D.parameters()) and all(p.grad.abs().sum() > 0 for p in G.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before[0].values(), D.state_dict().values()))  # incl. running stats
    assert len(opt.state) == len(opt_plain.state)
    plain_d_step(D, opt, real, fake, "gan")
    plain_d_step(D_plain, opt_plain, real, fake, "gan")
    a, b = D.state_dict(), D_plain.state_dict()
    assert any("running_mean" in k for k in a) and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = opt.state_dict()["state"], opt_plain.state_dict()["state"]
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])


# ------------------------------------------------------------------------------------------------ the script
def test_parse_args_defaults():
    args = ug.parse_args([])[0]
    assert (args.unroll_steps, args.first_order, args.loss, args.ngf, args.ndf) == (5, False, "gan", 64, 64)
    assert (args.lr_g, args.lr_d, args.beta1, args.beta2, args.batch_size, args.n_critic) == (
        2e-4,
        2e-4,
        0.5,
        0.999,
        64,
        1,
    )
    assert args.exp_name == "unrolled_gan"


def test_import_has_no_side_effects_and_bad_input_is_one_line(tmp_path):
    """Importing (and refusing a bad flag) writes nothing; the error is one line and exit code 2, no traceback."""
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); import unrolled_gan; "
        "unrolled_gan.main(['--unroll-steps', '-2'])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert (
        out.returncode == 2
        and out.stderr.strip() == "unrolled_gan.py: error: argument --unroll-steps: must be >= 0, got -2"
    )
    assert list(tmp_path.iterdir()) == []


SMALL = TINY + ["--ngf", "8", "--ndf", "8"]


def test_mnist_end_to_end(data_root, tmp_path):
    summary = ug.main(
        SMALL + ["--data-root", data_root, "--total-steps", "3", "--unroll-steps", "2", "--out-dir", str(tmp_path)]
    )
    run_dir, ckpt = check_run_dir(summary, 3, [2, 3])
    metrics = read_metrics(run_dir)
    assert set(metrics[0]) == {"step", "d_loss", "g_loss", "g_unrolled_loss", "d_real", "d_fake", "unroll_ms"}
    assert all(math.isfinite(m[k]) for m in metrics for k in m) and all(m["unroll_ms"] > 0 for m in metrics)
    assert states(ckpt) == {"G", "D", "opt_G", "opt_D"}


def test_n_critic_takes_plain_D_steps_on_fresh_batches_first(data_root, tmp_path):
    summary = ug.main(
        SMALL
        + [
            "--data-root",
            data_root,
            "--total-steps",
            "2",
            "--n-critic",
            "3",
            "--unroll-steps",
            "1",
            "--out-dir",
            str(tmp_path),
        ]
    )
    ckpt = torch.load(Path(summary["run_dir"]) / "checkpoint.pt", weights_only=True)
    assert (ckpt["step"], ckpt["batches_used"]) == (2, 6) and ckpt["opt_D"]["state"][0]["step"] == 6
    assert ckpt["opt_G"]["state"][0]["step"] == 2 and math.isfinite(summary["g_unrolled_loss"])


def test_unroll_steps_change_G_only_from_the_same_init(data_root, tmp_path):
    """K = 0 (the plain GAN), K = 2 and K = 2 first-order start from the same G and D and see the same minibatch:
    step 1's D-side numbers and D after it agree exactly (D's step never depends on the unroll); G's do not."""
    runs = {}
    for name, extra in (
        ("k0", ["--unroll-steps", "0"]),
        ("k2", ["--unroll-steps", "2"]),
        ("fo", ["--unroll-steps", "2", "--first-order"]),
    ):
        summary = ug.main(
            SMALL + ["--data-root", data_root, "--total-steps", "1", "--out-dir", str(tmp_path / name)] + extra
        )
        runs[name] = (
            read_metrics(summary["run_dir"])[0],
            torch.load(Path(summary["run_dir"]) / "checkpoint.pt", weights_only=True),
        )
    (m0, c0), (m2, c2), (mf, cf) = runs["k0"], runs["k2"], runs["fo"]
    for k in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert m0[k] == m2[k] == mf[k]
    assert m0["g_unrolled_loss"] != m2["g_unrolled_loss"] == mf["g_unrolled_loss"]  # same theta_D^K, value-wise
    for k in c0["D"]:
        assert torch.equal(c0["D"][k], c2["D"][k]) and torch.equal(c0["D"][k], cf["D"][k])
    weights = [k for k in c0["G"] if k.endswith("weight")]
    assert any(not torch.equal(c0["G"][k], c2["G"][k]) for k in weights)
    assert any(not torch.equal(c2["G"][k], cf["G"][k]) for k in weights)


def test_resume_is_exact(data_root, tmp_path, capsys):
    """4 steps in one go == 2 steps + resume to 4 (metrics without the wall-clock fields, and the final weights and
    optimizer states); then a resume with another --unroll-steps is refused."""
    args = SMALL + ["--data-root", data_root, "--checkpoint-every", "0", "--unroll-steps", "2"]
    full = ug.main(args + ["--total-steps", "4", "--out-dir", str(tmp_path / "full")])
    ug.main(args + ["--total-steps", "2", "--out-dir", str(tmp_path / "split")])
    resumed = ug.main(args + ["--total-steps", "4", "--out-dir", str(tmp_path / "split"), "--resume", "auto"])
    drop = ("sps", "unroll_ms")
    assert read_metrics(full["run_dir"], drop) == read_metrics(resumed["run_dir"], drop)
    assert [m["step"] for m in read_metrics(resumed["run_dir"])] == [1, 2, 3, 4]
    a, b = (torch.load(Path(r["run_dir"]) / "checkpoint.pt", weights_only=True) for r in (full, resumed))
    for net in ("G", "D"):
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net])
        sa, sb = a[f"opt_{net}"]["state"], b[f"opt_{net}"]["state"]
        assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    ckpt = str(Path(resumed["run_dir"]) / "checkpoint.pt")
    check_bad_input(
        ug.main,
        args + ["--total-steps", "5", "--resume", ckpt, "--unroll-steps", "3"],
        capsys,
        "cannot resume",
        "--unroll-steps",
    )


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--unroll-steps", "-1"], ["--unroll-steps", "-1"]),
        (["--unroll-steps", "two"], ["--unroll-steps"]),
        (["--ndf", "0"], ["--ndf"]),
    ],
)
def test_bad_arguments(args, expected, capsys):
    check_bad_input(ug.main, args, capsys, *expected)


def test_unknown_loss_raises_in_both_halves():
    x = torch.zeros(2)
    for fn in (lambda: ug.d_loss(x, x, "wgan"), lambda: ug.d_loss_real(x, "wgan")):
        with pytest.raises(ValueError, match="unknown loss"):
            fn()


@pytest.mark.parametrize(
    "make, what",
    [
        (lambda ps: torch.optim.Adam(ps, lr=1e-3, weight_decay=1e-2), "weight_decay"),
        (lambda ps: torch.optim.Adam(ps, lr=1e-3, amsgrad=True), "amsgrad"),
        (lambda ps: torch.optim.Adam(ps, lr=1e-3, maximize=True), "maximize"),
        (lambda ps: torch.optim.Adam([{"params": ps[:1]}, {"params": ps[1:]}], lr=1e-3), "2 group(s)"),
        (lambda ps: torch.optim.SGD(ps, lr=1e-3), "1 group(s)"),
    ],
)
def test_adam_state_refuses_what_adam_step_does_not_implement(make, what):
    """adam_step is plain Adam: an optimizer with anything else would be unrolled wrongly (by up to 1e-2 a step)."""
    params = [torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(2))]
    with pytest.raises(ValueError, match=what.replace("(", r"\(").replace(")", r"\)")):
        ug.adam_state(make(params), dict(zip("ab", params)))


# ------------------------------------------------------------------------------ --arch metz (Table 2's networks)
METZ = ["--arch", "metz", "--dataset", "stacked-mnist", "--num-workers", "0", "--log-every", "1"]


def test_metz_networks_shapes_and_parameter_counts():
    """Hand-counted from PacGAN's model.py (weights + biases, BN scale + shift):
    G: linear 256*1024 + 1024 = 263,168; BN 64: 128; deconv 64->32 3x3: 64*32*9 + 32 = 18,464; BN 32: 64;
    deconv 32->16: 4,624; BN 16: 32; deconv 16->8: 1,160; BN 8: 16; conv 8->3: 8*3*9 + 3 = 219; total 287,875.
    D 1/4 (2, 4, 8): conv 3*2*9 + 2 = 56, BN 4, 2*4*9 + 4 = 76, BN 8, 4*8*9 + 8 = 296, BN 16, linear 128 + 1 = 129:
    585. D 1/2 (4, 8, 16): 112 + 8 + 296 + 16 + 1,168 + 32 + 257 = 1,889."""

    def count(net):
        return sum(p.numel() for p in net.parameters())

    G = ug.MetzGenerator(256)
    assert count(G) == 287_875
    assert (
        count(ug.MetzDiscriminator(3, ug.METZ_D_WIDTH["quarter"])),
        count(ug.MetzDiscriminator(3, ug.METZ_D_WIDTH["half"])),
    ) == (585, 1_889)
    shapes, h = [], G.project(torch.randn(5, 256)).view(5, 64, 4, 4)
    for layer in G.net:
        h = layer(h)
        if isinstance(layer, nn.ReLU):
            shapes.append(tuple(h.shape[1:]))
    assert shapes == [(64, 4, 4), (32, 7, 7), (16, 14, 14), (8, 28, 28)] and h.shape == (5, 3, 28, 28)
    assert h.abs().max() <= 1  # tanh
    D, shapes, x = ug.MetzDiscriminator(3, 2), [], h.detach()
    for layer in D.net:
        x = layer(x)
        if isinstance(layer, nn.LeakyReLU):
            shapes.append(tuple(x.shape[1:]))
            assert layer.negative_slope == 0.3
    assert shapes == [(2, 14, 14), (4, 7, 7), (8, 4, 4)] and x.shape == (5, 1) and D(h).shape == (5,)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == 3  # BN on the first layer too


def test_metz_init_is_dcgan_tensorflow_ops():
    torch.manual_seed(0)
    G, D = ug.MetzGenerator(256), ug.MetzDiscriminator(3, 4)
    G.apply(ug.metz_init), D.apply(ug.metz_init)
    assert abs(G.project.weight.std().item() - 0.02) < 2e-4 and G.project.weight.abs().max() > 0.06  # not truncated
    convs = [m.weight for m in (*G.modules(), *D.modules()) if type(m) is nn.Conv2d]
    assert len(convs) == 4 and all(w.abs().max() <= 0.04 for w in convs)  # truncated at 2 std
    norms = [m for m in (*G.modules(), *D.modules()) if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
    biases = [m.bias for m in (*G.modules(), *D.modules()) if getattr(m, "bias", None) is not None]
    assert len(biases) == 16 and all(not b.any() for b in biases)  # G 5 layers + 4 BN, D 4 layers + 3 BN


def test_metz_defaults_are_the_papers_and_explicit_flags_win():
    args = ug.parse_args(["--arch", "metz", "--dataset", "stacked-mnist"])[0]
    assert (args.z_dim, args.lr_d, args.lr_g, args.beta1, args.beta2, args.batch_size, args.image_size) == (
        256,
        2e-4,
        1e-4,
        0.5,
        0.99,
        128,
        28,
    )
    assert (args.d_size, args.unroll_steps, args.loss) == ("quarter", 5, "gan")
    args = ug.parse_args(["--arch", "metz", "--dataset", "stacked-mnist", "--batch-size", "64", "--d-size", "half"])[0]
    assert (args.batch_size, args.d_size, args.z_dim) == (64, "half", 256)
    assert (ug.parse_args([])[0].arch, ug.parse_args([])[0].d_size) == ("dcgan", None)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--arch", "metz"], ["--arch metz", "--dataset cifar10"]),
        (["--arch", "metz", "--dataset", "stacked-mnist", "--ndf", "16"], ["--ndf 16", "--d-size"]),
        (["--arch", "metz", "--dataset", "stacked-mnist", "--image-size", "32"], ["--image-size 32"]),
        (["--dataset", "stacked-mnist", "--d-size", "half"], ["--d-size", "--arch metz"]),
        (["--dataset", "stacked-mnist", "--image-size", "28"], ["--image-size 28", "--arch metz"]),
        (["--arch", "metz", "--d-size", "third"], ["--d-size", "third"]),
    ],
)
def test_metz_bad_arguments(args, expected, capsys):
    check_bad_input(ug.main, args, capsys, *expected)


def test_28px_mnist_is_the_digits_themselves_and_is_scored_padded_like_them(data_root):
    """At --image-size 28 the data are MNIST's own uint8 digits (no pad, no resize); the classifier sees 28 px samples
    padded by 2 pixels of background to 32, exactly as its training digits (so real 28 px digits score as they do)."""
    import torchvision

    import fid

    args = ug.parse_args(METZ + ["--data-root", data_root, "--no-download"])[0]
    dataset = ug.make_dataset(args)
    mnist = torchvision.datasets.MNIST(data_root, train=True)
    i, j = 7, dataset.triples[7].tolist()
    assert torch.equal(dataset[i][0], mnist.data[j])
    padded = fid.mnist_digits(data_root, True)[0]
    x = ug.to_model_range(mnist.data[:50, None])  # [-1, 1], 28 px
    assert torch.equal(fid.to_uint8(fid.as_32px_digits(x)), padded[:50])


def test_metz_end_to_end_with_modes_and_exact_resume(data_root, tmp_path):
    """A few steps of the paper's networks on 28 px stacked MNIST: metrics, the modes of the classifier, a 28 px
    sample grid, a checkpoint; a run resumed without repeating --arch metz (its flags come from the checkpoint)
    continues exactly."""
    args = METZ + [
        "--data-root",
        data_root,
        "--no-download",
        "--batch-size",
        "16",
        "--unroll-steps",
        "2",
        "--sample-every",
        "2",
        "--checkpoint-every",
        "0",
        "--eval-every",
        "4",
        "--no-fid",
        "--classifier-samples",
        "64",
    ]
    full = ug.main(args + ["--total-steps", "4", "--out-dir", str(tmp_path / "full")])
    run_dir, ckpt = check_run_dir(full, 4, [2, 4])
    saved = json.loads((run_dir / "args.json").read_text())
    assert (saved["arch"], saved["d_size"], saved["z_dim"], saved["image_size"]) == ("metz", "quarter", 256, 28)
    metrics = read_metrics(run_dir)
    assert 1 <= metrics[-1]["modes"] <= 64 and metrics[-1]["modes_kl"] > 0
    assert ckpt["G"]["project.weight"].shape == (1024, 256) and ckpt["D"]["net.10.weight"].shape == (1, 128)
    grid = Image.open(run_dir / "samples" / "step_0000004.png")
    assert grid.size == (8 * 28 + 9 * 2,) * 2  # the fixed 64 samples, 8 per row, 2 px apart
    ug.main(args + ["--total-steps", "2", "--out-dir", str(tmp_path / "split")])
    resumed = ug.main(
        [
            "--resume",
            "auto",
            "--dataset",
            "stacked-mnist",
            "--out-dir",
            str(tmp_path / "split"),
            "--total-steps",
            "4",
            "--data-root",
            data_root,
        ]
    )
    drop = ("sps", "unroll_ms", "modes", "modes_kl")  # the 2-step part is evaluated at its own last step too
    assert read_metrics(full["run_dir"], drop) == read_metrics(resumed["run_dir"], drop)
    assert read_metrics(full["run_dir"])[-1]["modes_kl"] == read_metrics(resumed["run_dir"])[-1]["modes_kl"]
