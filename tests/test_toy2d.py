"""Tests of toy2d.py: metrics on constructed samples with known answers, the mixtures, the method functions
against closed forms / torch.optim.Adam / finite differences, short end-to-end runs of every method, bad input."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import toy2d  # noqa: E402

FAST = ["--batch-size", "64", "--z-dim", "16", "--jobs", "1"]


# ------------------------------------------------------------------------------------------------ metrics
def test_metrics_all_samples_at_the_means():
    samples = toy2d.mixture_means("ring8").repeat(100, 1)
    assert toy2d.mode_metrics(samples, "ring8") == {
        "modes": 8,
        "hq": 100.0,
        "reverse_kl": pytest.approx(0.0, abs=1e-12),
        "top_mode": 0,  # a tie: the first
        "top_share": pytest.approx(1 / 8),
    }


@pytest.mark.parametrize("name, k", [("grid25", 25), ("ring7-3d", 7)])
def test_metrics_other_mixtures_at_the_means(name, k):
    m = toy2d.mode_metrics(toy2d.mixture_means(name).repeat(10, 1), name)
    assert (m["modes"], m["hq"]) == (k, 100.0) and m["reverse_kl"] == pytest.approx(0.0, abs=1e-12)


def test_metrics_everything_on_one_mode():
    samples = toy2d.mixture_means("ring8")[3].repeat(2500, 1) + 0.01 * torch.randn(2500, 2).clamp(-2, 2)
    m = toy2d.mode_metrics(samples, "ring8")
    assert m["modes"] == 1 and m["hq"] == 100.0 and m["reverse_kl"] == pytest.approx(math.log(8))
    assert (m["top_mode"], m["top_share"]) == (3, 1.0)


def test_metrics_two_modes_closed_form():
    means = toy2d.mixture_means("ring8")
    samples = torch.cat([means[0].repeat(30, 1), means[5].repeat(50, 1)])
    m = toy2d.mode_metrics(samples, "ring8")
    assert m["reverse_kl"] == pytest.approx(3 / 8 * math.log(3) + 5 / 8 * math.log(5))  # sum p log(8 p), p 3/8, 5/8
    assert (m["top_mode"], m["top_share"]) == (5, pytest.approx(5 / 8))


def test_metrics_hq_threshold_is_three_std():
    means, std = toy2d.mixture_means("ring8"), 0.01
    radial = means / means.norm(dim=1, keepdim=True)  # push each sample straight out from its mean
    off4 = toy2d.mode_metrics(means + 4 * std * radial, "ring8")
    assert off4["hq"] == 0.0 and off4["modes"] == 0 and off4["reverse_kl"] == pytest.approx(0.0, abs=1e-12)
    off2 = toy2d.mode_metrics(means + 2.9 * std * radial, "ring8")
    assert off2["hq"] == 100.0 and off2["modes"] == 8


def test_metrics_non_finite_samples_are_not_hq():
    samples = torch.cat([toy2d.mixture_means("ring8"), torch.full((8, 2), float("nan"))])
    m = toy2d.mode_metrics(samples, "ring8")
    assert m["hq"] == 50.0 and m["modes"] == 8 and m["reverse_kl"] == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------------ mixtures
@pytest.mark.parametrize("name, d, k, std", [("ring8", 2, 8, 0.01), ("grid25", 2, 25, 0.05), ("ring7-3d", 3, 7, 0.01)])
def test_sample_mixture_shapes_means_and_std(name, d, k, std):
    n = 50_000
    x = toy2d.sample_mixture(name, n, torch.Generator().manual_seed(0))
    assert x.shape == (n, d) and x.dtype == torch.float32
    means = toy2d.mixture_means(name)
    assert means.shape == (k, d)
    nearest = torch.cdist(x, means).argmin(1)
    counts = torch.bincount(nearest, minlength=k)
    assert (counts - n / k).abs().max() < 5 * math.sqrt(n / k)  # uniform components
    for j in range(k):
        cluster = x[nearest == j]
        assert torch.allclose(cluster.mean(0), means[j], atol=5 * std / math.sqrt(len(cluster)))
        per_axis = (cluster - means[j]).pow(2).sum(0).sum() / len(cluster) / 2  # 2 noise dimensions (in-plane)
        assert per_axis.sqrt() == pytest.approx(std, rel=0.05)


def test_sample_mixture_uses_the_generator():
    a, b = (toy2d.sample_mixture("ring8", 100, torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, toy2d.sample_mixture("ring8", 100, torch.Generator().manual_seed(4)))


def test_ring8_and_grid25_means():
    assert torch.allclose(toy2d.mixture_means("ring8")[2], torch.tensor([0.0, 1.0]), atol=1e-6)
    assert torch.allclose(toy2d.mixture_means("ring8").norm(dim=1), torch.ones(8))
    assert set(map(tuple, toy2d.mixture_means("grid25").tolist())) == {
        (a, b) for a in range(-4, 5, 2) for b in range(-4, 5, 2)
    }


def test_ring7_3d_lies_on_the_rotated_plane():
    R, t = toy2d.ROTATION_3D, toy2d.TRANSLATION_3D
    assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-6) and torch.linalg.det(R) == pytest.approx(1.0)
    axis = torch.tensor([1.0, -1.0, 0.0]) / math.sqrt(2)
    assert torch.allclose(R @ axis, axis, atol=1e-6)  # rotation about (1, -1, 0)/sqrt(2) ...
    normal = R @ torch.tensor([0.0, 0.0, 1.0])
    assert math.acos(normal[2].item()) == pytest.approx(math.pi / 4)  # ... by pi/4
    x = toy2d.sample_mixture("ring7-3d", 10_000)
    assert ((x - t) @ normal).abs().max() < 1e-5  # on the plane through t with that normal
    means = toy2d.mixture_means("ring7-3d")
    assert torch.allclose((means - t).norm(dim=1), torch.ones(7), atol=1e-6)  # unit circle around t
    angles = torch.linspace(0, 2 * math.pi, 8)[:-1]  # Roth et al.: 7 means, no duplicate at 2 pi
    assert torch.allclose(toy2d.plane_coordinates(means), torch.stack([angles.cos(), angles.sin()], 1), atol=1e-6)


# ------------------------------------------------------------------------------------------------ methods
def test_lens_lambda_schedule():
    assert toy2d.lens_lambda(0, 100) == 1.0
    assert toy2d.lens_lambda(50, 100) == pytest.approx(1 - math.sin(math.pi / 4))
    assert toy2d.lens_lambda(100, 100) == pytest.approx(0.0, abs=1e-12)
    assert toy2d.lens_lambda(101, 100) == 0.0 and toy2d.lens_lambda(10**6, 100) == 0.0
    values = [toy2d.lens_lambda(t, 100) for t in range(102)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def _grads(angle_deg, norm_r=3.0, norm_f=7.0):
    a = math.radians(angle_deg)
    g_r = torch.tensor([norm_r, 0.0, 0.0], dtype=torch.float64)
    return g_r, torch.tensor([norm_f * math.cos(a), norm_f * math.sin(a), 0.0], dtype=torch.float64)


@pytest.mark.parametrize(
    "s_r, s_f, angle, case",
    [
        (0.3, 0.2, 120, 1),
        (0.3, 0.2, 60, 2),
        (0.6, 0.8, 120, 1),
        (0.9, 0.2, 120, 3),
        (0.9, 0.2, 60, 4),
        (0.6, 0.2, 120, 5),
    ],
)
def test_aw_weights_cases_and_directions(s_r, s_f, angle, case):
    g_r, g_f = _grads(angle)
    w_r, w_f, got = toy2d.aw_weights(toy2d.gradient_products(g_r, g_f).tolist(), s_r, s_f, eps=0.0)
    assert got == case
    direction = w_r * g_r + w_f * g_f
    if case == 1:  # favour real, obtuse: orthogonal to g_f, acute with g_r (Thm. 2 case 2)
        assert direction.dot(g_f).item() == pytest.approx(0.0, abs=1e-4) and direction.dot(g_r) > 0
    if case == 3:  # favour fake, obtuse: orthogonal to g_r (Thm. 2 case 3)
        assert direction.dot(g_r).item() == pytest.approx(0.0, abs=1e-4) and direction.dot(g_f) > 0
    if case == 2:
        assert (w_r, w_f) == (pytest.approx(1 / math.sqrt(9 + 1e-4)), 0.0)
    if case == 4:
        assert (w_r, w_f) == (0.0, pytest.approx(1 / math.sqrt(49 + 1e-4)))
    if case == 5:  # angle bisector: equal angles with both gradients
        cos_r = direction.dot(g_r) / (direction.norm() * g_r.norm())
        cos_f = direction.dot(g_f) / (direction.norm() * g_f.norm())
        assert cos_r.item() == pytest.approx(cos_f.item(), abs=1e-5)


def test_aw_weights_epsilon_and_algorithm_2():
    g_r, g_f = _grads(120)
    rf, ff = g_r.dot(g_f).item(), g_f.dot(g_f).item() + 1e-4
    products = toy2d.gradient_products(g_r, g_f).tolist()
    w_r, w_f, case = toy2d.aw_weights(products, 0.3, 0.2)
    assert case == 1 and w_r == pytest.approx(1 / math.sqrt(9 + 1e-4) + 0.05)
    assert w_f == pytest.approx(-rf / (ff * math.sqrt(9 + 1e-4)) + 0.05)
    w_r, w_f, case = toy2d.aw_weights(products, 0.3, 0.2, normalized=False)  # Algorithm 2: 1/|g| -> 1
    assert case == 1 and w_r == pytest.approx(1.05) and w_f == pytest.approx(-rf / ff + 0.05)


def test_gradient_penalty_of_a_linear_critic():
    torch.manual_seed(0)
    critic = nn.Linear(2, 1)
    w = critic.weight.detach().flatten()
    real, fake = torch.randn(32, 2), torch.randn(32, 2)
    assert toy2d.gradient_penalty(critic, real, fake).item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[0.6, 0.8]]))
    assert toy2d.gradient_penalty(critic, real, fake).item() == pytest.approx(0.0, abs=1e-10)


def test_js_regularizer_of_a_linear_discriminator():
    torch.manual_seed(0)
    D = nn.Sequential(nn.Linear(3, 1), nn.Flatten(0))
    real, fake = torch.randn(16, 3), torch.randn(24, 3)
    w2 = D[0].weight.pow(2).sum()  # |grad_x phi|^2 of a linear logit, everywhere
    expected = ((1 - torch.sigmoid(D(real))).pow(2).mean() + torch.sigmoid(D(fake)).pow(2).mean()) * w2
    reg = toy2d.js_regularizer(D, real, fake)
    omega = reg.omega
    assert torch.equal(reg.real_logits, D(real)) and torch.equal(reg.fake_logits, D(fake))  # reused by the D loss
    assert omega.item() == pytest.approx(expected.item(), rel=1e-6)
    omega.backward()  # differentiable w.r.t. D's parameters (the regularizer trains D)
    assert D[0].weight.grad is not None and D[0].weight.grad.abs().sum() > 0


def test_adam_step_equals_torch_adam_bit_for_bit():
    torch.manual_seed(0)
    D = toy2d.mlp(2, 8, 8, 1, final=[nn.Flatten(0)])
    opt = torch.optim.Adam(D.parameters(), lr=1e-2, betas=(0.5, 0.9))
    params = {k: p.detach().clone() for k, p in D.named_parameters()}
    state = toy2d.adam_state(opt, dict(D.named_parameters()))
    state = {k: {kk: vv.clone() if torch.is_tensor(vv) else vv for kk, vv in v.items()} for k, v in state.items()}
    for _ in range(4):
        x = torch.randn(16, 2)
        loss = D(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        grads = {k: p.grad.clone() for k, p in D.named_parameters()}
        opt.step()
        params, state = toy2d.adam_step(params, grads, state, 1e-2, (0.5, 0.9), 1e-8)
        for k, p in D.named_parameters():
            assert torch.equal(params[k], p.detach()) and torch.equal(
                state[k]["exp_avg_sq"], opt.state[p]["exp_avg_sq"]
            )


def _tiny_d_with_adam_state():
    torch.manual_seed(0)
    D = toy2d.mlp(2, 6, 6, 1, final=[nn.Flatten(0)]).double()
    opt = torch.optim.Adam(D.parameters(), lr=0.05, betas=(0.5, 0.999))
    real, fake = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    for _ in range(3):  # a live Adam state (m, v, step) to start the unroll from
        opt.zero_grad()
        toy2d.bce_d_loss(D(real), D(fake)).backward()
        opt.step()
    return D, opt, real, fake


def test_unrolled_first_step_is_ds_own_adam_step_and_leaves_d_alone():
    D, opt, real, fake = _tiny_d_with_adam_state()
    before = {k: p.detach().clone() for k, p in D.named_parameters()}
    state_before = [(k, v.clone()) for s in opt.state.values() for k, v in s.items()]
    unrolled = toy2d.unrolled_discriminator(D, opt, real, fake, 1)
    for k, p in D.named_parameters():
        assert torch.equal(p, before[k])  # the unrolled copies are thrown away
    state_after = [(k, v) for s in opt.state.values() for k, v in s.items()]
    assert all(k == k2 and torch.equal(v, v2) for (k, v), (k2, v2) in zip(state_before, state_after, strict=True))
    opt.zero_grad()
    toy2d.bce_d_loss(D(real), D(fake)).backward()
    opt.step()
    for k, p in D.named_parameters():
        assert torch.equal(unrolled[k], p)  # bit for bit: the unroll is D's own Adam step


def test_unrolled_gradient_is_exact_second_order():
    """d/d(fake) of the generator loss at theta_D^K(fake), against central finite differences (float64)."""
    D, opt, real, fake = _tiny_d_with_adam_state()

    def g_loss(f):
        params = toy2d.unrolled_discriminator(D, opt, real, f, 3)
        logits = toy2d.functional_call(D, params, (f,))
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))

    f = fake.clone().requires_grad_(True)
    grad = torch.autograd.grad(g_loss(f), f)[0]
    numeric, h = torch.zeros_like(fake), 1e-6
    with torch.enable_grad():  # the unroll itself needs autograd
        for i in range(fake.numel()):
            e = torch.zeros_like(fake).view(-1)
            e[i] = h
            numeric.view(-1)[i] = (g_loss(fake + e.view_as(fake)).item() - g_loss(fake - e.view_as(fake)).item()) / (
                2 * h
            )
    assert torch.allclose(grad, numeric, rtol=1e-4, atol=1e-7)
    first_order = torch.autograd.grad(
        F.binary_cross_entropy_with_logits(
            toy2d.functional_call(
                D, {k: p.detach() for k, p in toy2d.unrolled_discriminator(D, opt, real, fake, 3).items()}, (f,)
            ),
            torch.ones(len(f), dtype=torch.float64),
        ),
        f,
    )[0]
    assert not torch.allclose(grad, first_order, rtol=1e-3)  # the second-order term matters here


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("method", toy2d.METHODS)
def test_every_method_trains_and_writes_a_complete_run_dir(method, tmp_path):
    summary = toy2d.main(
        ["--method", method, "--steps", "200", "--eval-every", "100", "--out-dir", str(tmp_path), *FAST]
    )
    run_dir = Path(summary["run_dir"])
    assert {p.name for p in run_dir.iterdir()} == {"summary.json", "metrics.jsonl", "toy2d_ring8.png"}
    assert json.loads((run_dir / "summary.json").read_text()) == json.loads(json.dumps(summary))
    final = summary["results"]["ring8"][method]["per_seed"][0]
    assert final["steps_done"] == 200 and not final["diverged"]
    assert math.isfinite(final["d_loss"]) and math.isfinite(final["g_loss"])
    assert 0 <= final["modes"] <= 8 and 0 <= final["hq"] <= 100 and 0 <= final["reverse_kl"] <= math.log(8) + 1e-9
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [100, 200] and all(r["method"] == method for r in records)
    assert (run_dir / "toy2d_ring8.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("method, flags", [("reg", ["--gamma", "0"])])
def test_zero_strength_is_exactly_the_plain_gan(method, flags, tmp_path):
    args = ["--steps", "30", "--out-dir", str(tmp_path), *FAST]
    gan = toy2d.main(["--method", "gan", *args])["results"]["ring8"]["gan"]["per_seed"][0]
    other = toy2d.main(["--method", method, *flags, *args])["results"]["ring8"][method]["per_seed"][0]
    for key in ("d_loss", "g_loss", "modes", "hq", "reverse_kl"):
        assert gan[key] == other[key]


def test_collapse_is_reverse_kl_within_half_a_nat_of_log_modes():
    assert toy2d.collapsed(math.log(8), 8) and toy2d.collapsed(math.log(8) - 0.5, 8)  # one mode; the threshold
    assert not toy2d.collapsed(math.log(8) - 0.51, 8) and not toy2d.collapsed(math.log(4), 8)  # two modes: log 4
    assert toy2d.collapsed(math.log(25) - 0.4, 25) and not toy2d.collapsed(0.0, 25)


def test_seeds_mean_std_and_determinism(tmp_path):
    args = ["--method", "gan", "--steps", "40", "--out-dir", str(tmp_path), *FAST]
    res = toy2d.main([*args, "--seeds", "1", "2", "3"])["results"]["ring8"]["gan"]
    per_seed = [r["reverse_kl"] for r in res["per_seed"]]
    assert [r["seed"] for r in res["per_seed"]] == [1, 2, 3] and len(set(per_seed)) == 3
    mean = sum(per_seed) / 3
    assert res["reverse_kl"] == pytest.approx(mean)
    assert res["reverse_kl_std"] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in per_seed) / 2))
    assert res["collapsed"] == sum(v >= math.log(8) - 0.5 for v in per_seed)
    again = toy2d.main([*args, "--seeds", "2"])["results"]["ring8"]["gan"]["per_seed"][0]
    assert again["reverse_kl"] == res["per_seed"][1]["reverse_kl"] and again["g_loss"] == res["per_seed"][1]["g_loss"]


@pytest.mark.parametrize("dataset", ["grid25", "ring7-3d"])
def test_other_datasets_run(dataset, tmp_path):
    summary = toy2d.main(
        ["--method", "wgan-gp", "--dataset", dataset, "--steps", "20", "--out-dir", str(tmp_path), *FAST]
    )
    assert summary["n_modes"] == {dataset: {"grid25": 25, "ring7-3d": 7}[dataset]}
    assert (Path(summary["run_dir"]) / f"toy2d_{dataset}.png").exists()


def _cli(*argv, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "toy2d.py"), *argv], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_cli_prints_the_summary_as_its_last_line(tmp_path):
    out = _cli("--method", "reg", "--steps", "20", *FAST, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["results"]["ring8"]["reg"]["per_seed"][0]["steps_done"] == 20
    assert Path(tmp_path, summary["run_dir"], "summary.json").exists()  # default --out-dir runs, relative to cwd


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--method", "vae"], "--method"),
        (["--dataset", "swissroll"], "--dataset"),
        (["--steps", "0"], "--steps"),
        (["--steps", "-3"], "--steps"),
        (["--seeds"], "--seeds"),
        (["--seeds", "1", "1"], "distinct"),
        (["--batch-size", "0"], "--batch-size"),
        (["--gamma", "nan"], "--gamma"),
        (["--device", "nonsense"], "device"),
        (["--steps", "ten"], "--steps"),
        (["--preset", "metz", "--method", "gan"], "--method would be ignored"),
        (["--preset", "nature"], "--preset"),
        (["--lr-decay-start", "2"], "--lr-decay-start"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, words, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        toy2d.main([*argv, "--out-dir", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0]
    assert not (tmp_path / "runs").exists()


def test_bad_input_from_the_command_line_has_no_traceback(tmp_path):
    out = _cli("--method", "all", "--seeds", cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert "--seeds" in out.stderr and not (tmp_path / "runs").exists()


def test_import_has_no_side_effects(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import toy2d"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and out.stdout == "" and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ issue 12
IMAGE_SCRIPT_FUNCTIONS = [
    ("unrolled_gan.py", "adam_state"),
    ("unrolled_gan.py", "adam_step"),
    ("aw_gan.py", "gradient_products"),
    ("aw_gan.py", "aw_weights"),
    ("wgan_gp.py", "gradient_penalty"),
    ("lens_gan.py", "lens_lambda"),
    ("reg_gan.py", "JSRegularizer"),
    ("reg_gan.py", "js_regularizer"),
]


def _definition(path, name):
    import ast

    text = path.read_text()
    for node in ast.parse(text).body:
        if getattr(node, "name", None) == name or (
            isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets)
        ):
            return ast.get_source_segment(text, node)


@pytest.mark.parametrize("script, name", IMAGE_SCRIPT_FUNCTIONS)
def test_toy_functions_are_the_image_scripts_text(script, name):
    """The toy methods are the image scripts' algorithms: the functions they share are the same text."""
    ours = _definition(ROOT / "toy2d.py", name)
    assert ours is not None and ours == _definition(ROOT / script, name)


def test_toy_unroll_has_unrolled_gan_semantics(monkeypatch, tmp_path):
    """One shared minibatch per iteration and simultaneous updates: G's unroll starts from the D parameters and
    Adam state that D's own step of the same iteration starts from, on the batch that step uses."""
    batches, unrolls, d_steps = [], [], []
    sample = toy2d.sample_mixture

    def spy_sample(*a, **k):
        batches.append(sample(*a, **k))
        return batches[-1]

    def spy_unroll(D, optimizer, real, fake, k, original=toy2d.unrolled_generator_loss):
        unrolls.append((real, [p.detach().clone() for p in D.parameters()], len(batches)))
        return original(D, optimizer, real, fake, k)

    step = torch.optim.Adam.step

    def spy_step(self, *a, **k):
        if self.param_groups[0]["params"][-1].shape == (1,):  # D's optimizer (its last bias has one unit)
            d_steps.append([p.detach().clone() for p in self.param_groups[0]["params"]])
        return step(self, *a, **k)

    monkeypatch.setattr(toy2d, "sample_mixture", spy_sample)
    monkeypatch.setattr(toy2d, "unrolled_generator_loss", spy_unroll)
    monkeypatch.setattr(torch.optim.Adam, "step", spy_step)
    toy2d.main(["--method", "unrolled", "--unroll-steps", "2", "--steps", "3", "--out-dir", str(tmp_path), *FAST])
    assert (
        len(unrolls) == len(d_steps) == 3 and len(batches) == 3 + 1
    )  # one batch per iteration, and the figure's target
    for (real, d_params, n_drawn), before_d_step in zip(unrolls, d_steps):
        assert real is batches[n_drawn - 1]  # the iteration's only batch
        assert all(torch.equal(a, b) for a, b in zip(d_params, before_d_step))  # simultaneous: same theta_D


def test_presets_parse_to_their_documented_settings():
    for name, preset in toy2d.PRESETS.items():
        args = toy2d.parse_args(["--preset", name])
        derived = ("lens_k", "eval_every")  # 0: from --steps
        assert args.dataset == preset["datasets"] and args.seeds == preset.get("seeds", [1, 2, 3])
        assert all(getattr(args, k) == v for k, v in preset["settings"].items() if not (k in derived and v == 0))
    metz = toy2d.parse_args(["--preset", "metz"])
    assert (metz.layers, metz.width, metz.z_dim, metz.lr_d, metz.lr_g, metz.beta1, metz.batch_size) == (
        2,
        128,
        256,
        1e-4,
        1e-3,
        0.5,
        512,
    )
    roth = toy2d.parse_args(["--preset", "roth", "--steps", "7"])  # explicit flags still win
    assert (roth.z_dim, roth.init, roth.reg_g_loss, roth.steps, roth.dataset) == (2, "normal0.1", "mm", 7, ["ring7-3d"])
    assert (roth.beta1, roth.lr_d, roth.lr_g, roth.seeds) == (0.9, 1e-3, 1e-3, [1, 2, 3])  # the appendix's text
    assert (metz.activation, metz.init, metz.steps, metz.eval_every) == ("relu", "default", 3000, 300)
    gul = toy2d.parse_args(["--preset", "gulrajani"])
    assert (gul.layers, gul.width, gul.activation, gul.gp_lambda, gul.batch_size, gul.lr_d, gul.beta2) == (
        3,
        512,
        "relu",
        0.1,
        256,
        1e-4,
        0.9,
    )
    assert gul.dataset == ["ring8", "grid25", "swissroll"]
    train = toy2d.parse_args(["--preset", "gulrajani-train"])
    assert (train.z_dim, train.n_critic, train.seeds, train.steps) == (2, None, [1], 1000)
    default = toy2d.parse_args([])  # the collapse setting
    assert (
        default.layers,
        default.activation,
        default.init,
        default.lr_g,
        default.lr_d,
        default.lr_decay_start,
        default.steps,
    ) == (2, "relu", "default", 1e-3, 1e-4, 1.0, 3000)
    tuned = toy2d.parse_args(["--setting", "tuned", "--steps", "5"])  # explicit flags still win
    assert (tuned.layers, tuned.activation, tuned.lr_g, tuned.beta1, tuned.lr_decay_start, tuned.steps) == (
        3,
        "tanh",
        2e-3,
        0.5,
        0.5,
        5,
    )
    with pytest.raises(SystemExit) as exc:
        toy2d.parse_args(["--preset", "metz", "--setting", "tuned"])  # would be ignored
    assert exc.value.code == 2


@pytest.mark.parametrize("preset", sorted(toy2d.PRESETS))
def test_every_preset_runs_a_few_steps(preset, tmp_path):
    summary = toy2d.main(
        [
            "--preset",
            preset,
            "--steps",
            "4",
            "--batch-size",
            "32",
            "--width",
            "16",
            "--out-dir",
            str(tmp_path),
            "--jobs",
            "1",
            "--seeds",
            "1",
        ]
    )
    preset_def = toy2d.PRESETS[preset]
    assert summary["datasets"] == preset_def["datasets"]
    if preset_def.get("critic_only"):  # Fig. 1a per dataset and constraint, Fig. 1b per constraint
        fig1a = [f"fig1a {ds} {c}" for ds in preset_def["datasets"] for c in ("clip 0.01", "gp 0.1")]
        fig1b = [f"fig1b swissroll {c}" for c in ("clip 0.1", "clip 0.01", "clip 0.001", "gp 0.1")]
        assert list(summary["results"]) == fig1a + fig1b
        assert all(math.isfinite(r["w_estimate"]) for r in summary["results"].values())
        assert {"fig1a_value_surfaces.png", "fig1b_gradient_norms.png"} <= {p.name for p in tmp_path.glob("*/*.png")}
        return
    for dataset in preset_def["datasets"]:
        assert list(summary["results"][dataset]) == [label for label, *_ in preset_def["runs"]]
        assert (Path(summary["run_dir"]) / f"toy2d_{dataset}.png").exists()


def test_lr_decays_linearly_over_the_second_half():
    assert [toy2d.lr_factor(d, 10, 0.5) for d in (0, 5, 6, 9)] == [1.0, 1.0, pytest.approx(0.8), pytest.approx(0.2)]
    assert toy2d.lr_factor(9, 10, 1.0) == 1.0


def test_parallel_jobs_give_the_sequential_numbers(tmp_path):
    args = [
        "--method",
        "all",
        "--steps",
        "12",
        "--batch-size",
        "32",
        "--z-dim",
        "8",
        "--width",
        "16",
        "--out-dir",
        str(tmp_path),
    ]
    one = toy2d.main(args + ["--jobs", "1"])["results"]["ring8"]
    two = toy2d.main(args + ["--jobs", "2"])["results"]["ring8"]
    strip = lambda r: {k: v for k, v in r["per_seed"][0].items() if k != "wall_time"}  # noqa: E731
    assert all(strip(one[m]) == strip(two[m]) for m in toy2d.METHODS)


# ------------------------------------------------------------------- Gulrajani et al. Fig. 1: critics, generator fixed
def test_swiss_roll_is_make_swiss_roll_scaled():
    x = toy2d.swiss_roll(20000, noise=0.0, generator=torch.Generator().manual_seed(0))
    assert x.shape == (20000, 2)
    t = x.norm(dim=1) * 7.5  # without noise a point is (t cos t, t sin t) / 7.5: its radius is t / 7.5
    assert t.min() >= 1.5 * math.pi - 1e-3 and t.max() <= 4.5 * math.pi + 1e-3  # t = 1.5 pi (1 + 2u)
    assert t.mean().item() == pytest.approx(3 * math.pi, rel=0.01)  # t uniform on [1.5 pi, 4.5 pi]
    assert torch.allclose(7.5 * x, torch.stack([t * t.cos(), t * t.sin()], 1), atol=2e-3)  # on the spiral
    noisy = toy2d.swiss_roll(20000, generator=torch.Generator().manual_seed(0))  # noise 0.25 per coordinate
    assert (noisy - x).std().item() == pytest.approx(0.25 / 7.5, rel=0.03)


def test_weight_clipping_keeps_every_critic_parameter_in_range():
    torch.manual_seed(0)
    critic = toy2d.mlp(2, 64, 64, 1, activation="relu")
    optimizer = torch.optim.RMSprop(critic.parameters(), lr=0.5)  # large steps: most parameters leave [-c, c]
    critic(torch.randn(32, 2)).mean().backward()
    optimizer.step()
    assert max(p.abs().max().item() for p in critic.parameters()) > 0.01
    toy2d.clip_weights(critic, 0.01)
    flat = torch.cat([p.detach().flatten() for p in critic.parameters()])
    c = torch.tensor(0.01)  # in float32
    assert flat.abs().max() == c and (flat.abs() == c).float().mean() > 0.5  # at the bounds, biases too


def test_critic_training_never_moves_the_fixed_generator(monkeypatch):
    """The fixed generator's batches are the same whatever the critic and its constraint do."""
    original, batches = toy2d.fixed_generator, []

    def spy(real, generator=None):
        fake = original(real, generator)
        batches[-1].append(fake.clone())
        return fake

    monkeypatch.setattr(toy2d, "fixed_generator", spy)
    args = toy2d.parse_args(["--preset", "gulrajani", "--steps", "5", "--batch-size", "16"])
    for constraint in (("clip", 0.01), ("gp", 0.1)):
        batches.append([])
        toy2d.train_critic(args, "ring8", constraint, 1, 2, 8)
    clip, gp = batches
    assert len(clip) == len(gp) == 5 + 1  # every step, and the final estimate
    assert all(torch.equal(a, b) for a, b in zip(clip, gp))
    real = toy2d.gan_toy_data("ring8", 4, torch.Generator().manual_seed(3))
    noise = torch.randn(4, 2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(original(real, torch.Generator().manual_seed(4)), real + noise)  # data + N(0, I)


def test_layer_gradient_norms_of_a_linear_critic():
    """D(x) = w2 . (W1 x): for L = mean D(fake) - mean D(real), dL/dW1 = w2 d^T and dL/dw2 = W1 d, d the difference
    of the means."""
    critic = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1, bias=False))  # no activation between
    with torch.no_grad():
        critic[0].weight.copy_(torch.tensor([[1.0, 2.0], [0.0, -1.0]]))
        critic[0].bias.zero_()
        critic[1].weight.copy_(torch.tensor([[3.0, 4.0]]))
    real, fake = torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[1.0, 0.0], [2.0, 1.0]])  # d = (1, 0)
    (critic(fake).mean() - critic(real).mean()).backward()
    w1, w2 = toy2d.layer_gradient_norms(critic)
    assert w1 == pytest.approx(5.0)  # ||(3, 4)^T (1, 0)|| = 5
    assert w2 == pytest.approx(1.0)  # ||W1 (1, 0)|| = ||(1, 0)|| = 1


def test_resolved_modes_counts_peaks_of_the_value_surface():
    means = toy2d.mixture_means("ring8")

    def bumps(x):  # a peak on each mode
        return torch.exp(-(torch.cdist(x, means).min(1).values ** 2) / 0.01)

    assert toy2d.resolved_modes(bumps, means, ring=True) == 8
    assert toy2d.resolved_modes(lambda x: -(x.norm(dim=1) - 1).abs(), means, ring=True) == 0  # a ring-shaped ridge
    assert toy2d.resolved_modes(lambda x: x[:, 0], means, ring=True) == 1  # a slope: only the rightmost mode
    grid = toy2d.mixture_means("grid25")
    assert toy2d.resolved_modes(lambda x: torch.cos(math.pi * x / 2).pow(2).sum(1), grid, ring=False) == 25
    assert toy2d.resolved_modes(lambda x: -x.norm(dim=1), grid, ring=False) == 1  # a single peak at the centre
