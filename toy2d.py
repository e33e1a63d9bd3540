"""toy2d: every cleangan method on low-dimensional Gaussian mixtures, with mode metrics and figures.

The toy experiments of the papers in one CPU-friendly script: Metz et al. Fig. 2 (unrolled GAN, 8 Gaussians on
a ring), the aw paper's Fig. 6, Roth et al. Fig. 1 (7 Gaussians on a tilted plane in 3-D), the WGAN-GP toy runs.
Each `--method` is the same algorithm as its image script, on small tanh MLPs (SPEC §4):

    gan       L_D = -log D(x) - log(1 - D(G(z)))   lens paper eq. (6);  L_G = -log D(G(z))  eq. (5)
    mm        L_G = log(1 - D(G(z)))  (Goodfellow's saturating minimax, lens paper eq. 1)
    lens      D sees L(x): L_D eq. (7);  L_L = lambda L_L^A + L_L^R  eq. (3), L_L^A = -log(1 - D(L(x))) eq. (8),
              L_L^R = ||x - L(x)||^2 eq. (2), lambda = 1 - sin(t pi / 2K) for t <= K else 0  eq. (4)
              Sajjadi et al. 2018, https://arxiv.org/abs/1802.04374
    aw        L_D = w_r L_r + w_f L_f  eq. (2), weights from the gradients by Algorithm 1 (BCE base loss, as the
              aw paper's toy study Sec. 5.3)  Zadorozhnyy et al. 2021, https://arxiv.org/abs/2012.03149
    reg       L_D = BCE + gamma/2 Omega,  Omega = E_P[(1 - D(x))^2 |grad phi(x)|^2] + E_Q[D(x)^2 |grad phi(x)|^2]
              eqs. (18), (22)  Roth et al. 2017, https://arxiv.org/abs/1705.09367
    unrolled  G minimizes f at theta_D^K(theta_G), K differentiable Adam steps of D from its live state, eqs. (7),
              (10), with f's fake term non-saturating: -log D_K(G(z)) + log D_K(x) (as unrolled_gan.py); D takes
              one ordinary step, eq. (11)  Metz et al. 2017, https://arxiv.org/abs/1611.02163
    wgan-gp   L_D = D(G(z)) - D(x) + lambda E[(|grad D(x^)| - 1)^2], L_G = -D(G(z))  Gulrajani et al. 2017 eq. (3),
              https://arxiv.org/abs/1704.00028

Networks (Metz et al.'s toy notebook): G z -> 128 -> 128 -> d, D d -> 128 -> 128 -> 1, tanh, orthogonal init
(gain 1.4), z-dim 256, batch 512, fresh samples every step. Optimizers, the papers' toy settings (HPARAMS):
BCE methods Adam 1e-3 betas (0.9, 0.999) (Roth et al.), wgan-gp Adam 1e-4 betas (0.5, 0.9), 5 critic steps.
Metrics (VEEGAN / PacGAN protocol) on 2,500 samples: modes captured, % high-quality
samples (within 3 std of the nearest mean), reverse KL of the nearest-mode histogram to the uniform one.

Usage: python toy2d.py                      # every method on ring8, one seed, 1500 steps (the demo, ~4 min)
       python toy2d.py --method unrolled --dataset grid25 --seeds 1 2 3 4 5 --steps 20000
"""
import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch.func import functional_call

METHODS = ("gan", "mm", "lens", "aw", "reg", "unrolled", "wgan-gp")
EVAL_SAMPLES = 2500  # VEEGAN / PacGAN protocol
PLOT_SAMPLES = 1000
SNAPSHOTS = 5  # columns of generated samples per method in toy2d.png

# Optimizer settings per method, the papers' toy configurations. The BCE methods share Roth et al.'s (appendix
# 6.2: Adam 1e-3, betas (0.9, 0.999), G and D), so that gan, lens, aw, reg and unrolled are paired runs from the
# same weights and differ only in the method. Metz et al.'s notebook (D 1e-4, G 1e-3, beta1 0.5) needs ~25k steps
# on this toy: `--lr-d 1e-4 --beta1 0.5`. WGAN-GP: Gulrajani et al.'s gan_toy.py.
BCE = dict(lr_g=1e-3, lr_d=1e-3, beta1=0.9, beta2=0.999, n_critic=1)
HPARAMS = {**{m: BCE for m in METHODS}, "wgan-gp": dict(lr_g=1e-4, lr_d=1e-4, beta1=0.5, beta2=0.9, n_critic=5)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--method", default="all", choices=METHODS + ("all",), help="training method (all: one after the other, same seeds)")
    p.add_argument("--dataset", default="ring8", choices=tuple(MIXTURES), help="Gaussian mixture (SPEC §4)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1], help="one training run per seed; mean and std over them")
    p.add_argument("--steps", type=int, default=1500, help="generator updates per run (default: the demo, ~4 min on 2 CPU cores)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--z-dim", type=int, default=256, help="latent dimension (256 as Metz et al.; Roth et al. used 2)")
    p.add_argument("--eval-every", type=int, default=0, help="steps between mode metrics (0: --steps / 5)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | mps (these MLPs are fastest on a CPU)")
    p.add_argument("--out-dir", default="runs", help="parent folder of the run directory")
    for name in ("lr_g", "lr_d", "beta1", "beta2", "n_critic"):  # default: the method's own, see HPARAMS
        p.add_argument(f"--{name.replace('_', '-')}", type=int if name == "n_critic" else float, default=None,
                       help=f"{name.replace('_', ' ')} for every method (default: each method's paper setting, HPARAMS)")
    # method-specific arguments
    p.add_argument("--lens-k", type=int, default=0, help="lens: K of the lambda schedule eq. (4) (0: --steps / 2)")
    p.add_argument("--gamma", type=float, default=0.1, help="reg: gamma, constant (Roth et al.'s toy setting)")
    p.add_argument("--unroll-steps", type=int, default=5, help="unrolled: K (Metz et al. notebook 5; paper Fig. 2 10)")
    p.add_argument("--gp-lambda", type=float, default=0.1, help="wgan-gp: gradient penalty weight (Gulrajani et al.'s toy setting)")
    p.error = fail  # one error line instead of argparse's usage dump
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "z_dim", "n_critic", "eval_every", "lens_k", "unroll_steps", "gamma", "gp_lambda", "lr_g", "lr_d"):
        value, positive = getattr(args, name), name in ("steps", "batch_size", "z_dim", "n_critic")
        if value is not None and not (value > 0 if positive else value >= 0):  # `not` also rejects NaN
            fail(f"--{name.replace('_', '-')} must be {'positive' if positive else '>= 0'}, got {value}")
    if not all(b is None or 0 <= b < 1 for b in (args.beta1, args.beta2)):
        fail(f"Adam betas must be in [0, 1), got {args.beta1}, {args.beta2}")
    if len(set(args.seeds)) != len(args.seeds):
        fail(f"--seeds must be distinct, got {args.seeds}")
    args.eval_every = args.eval_every or max(args.steps // SNAPSHOTS, 1)
    args.lens_k = args.lens_k or max(args.steps // 2, 1)
    return args


def fail(message, code=2):
    """One clear error line and a non-zero exit, never a traceback (2 = bad input, as argparse)."""
    print(f"{Path(__file__).name}: error: {message}", file=sys.stderr)
    sys.exit(code)


# ---------------------------------------------------------------------------------------------------- data
def _ring(k):  # k means on the unit circle at angles 2 pi j / k (= linspace(0, 2 pi, k + 1)[:-1])
    return torch.stack([(torch.arange(k) * 2 * math.pi / k).cos(), (torch.arange(k) * 2 * math.pi / k).sin()], 1)


# name -> (2-D component means, per-axis std); ring8: PacGAN/VEEGAN (Metz's radius 2, std 0.02, scaled by 1/2)
MIXTURES = {"ring8": (_ring(8), 0.01), "grid25": (torch.cartesian_prod(*[torch.arange(-4.0, 5.0, 2.0)] * 2), 0.05),
            "ring7-3d": (_ring(7), 0.01)}  # Roth et al. appendix 6.2 (the 2-D ring before the 3-D embedding)


def rodrigues(axis, angle):
    """Rotation matrix by `angle` about the unit vector `axis` (Rodrigues' formula)."""
    k = torch.as_tensor(axis, dtype=torch.float32) / torch.as_tensor(axis, dtype=torch.float32).norm()
    K = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return torch.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


# Roth et al. appendix 6.2: the 2-D mixture as (x, y, 0), rotated by pi/4 about (1, -1, 0)/sqrt(2), then
# translated by (1, 1, 1)/sqrt(3) (SPEC §4's order; the paper's sentence names the translation first).
ROTATION_3D = rodrigues((1.0, -1.0, 0.0), math.pi / 4)
TRANSLATION_3D = torch.ones(3) / math.sqrt(3)


def embed_3d(xy):
    return torch.cat([xy, torch.zeros(len(xy), 1)], 1) @ ROTATION_3D.T + TRANSLATION_3D


def mixture_means(name):
    means = MIXTURES[name][0]
    return embed_3d(means) if name == "ring7-3d" else means


def sample_mixture(name, n, generator=None):
    """n samples of the mixture `name`: a uniformly chosen component, plus isotropic Gaussian noise in its plane."""
    means, std = MIXTURES[name]
    component = torch.randint(len(means), (n,), generator=generator)
    xy = means[component] + std * torch.randn(n, 2, generator=generator)
    return embed_3d(xy) if name == "ring7-3d" else xy


def mode_metrics(samples, name):
    """VEEGAN / PacGAN metrics. A sample is high quality (HQ) within 3 std of its nearest mean; a mode is captured
    when it is the nearest mean of at least one HQ sample; reverse KL = KL(p_gen || uniform) over the histogram
    of nearest means of all samples. Non-finite samples are never HQ and fall in no histogram bin."""
    means, std = mixture_means(name).double(), MIXTURES[name][1]
    samples = samples.detach().cpu().double()
    finite = samples[torch.isfinite(samples).all(1)]
    distance, nearest = torch.cdist(finite, means).min(1)
    hq = distance <= 3 * std
    p = torch.bincount(nearest, minlength=len(means)).double() / max(len(finite), 1)
    p = p[p > 0]  # 0 log 0 = 0
    reverse_kl = (p * (p * len(means)).log()).sum().item() if len(finite) else math.log(len(means))
    return {"modes": len(nearest[hq].unique()), "hq": 100.0 * hq.sum().item() / len(samples), "reverse_kl": reverse_kl}


# ------------------------------------------------------------------------------------------------ networks
def mlp(*widths, final=()):
    """Linear layers of the given widths with tanh between them."""
    layers = [m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), nn.Tanh())][:-1]
    return nn.Sequential(*layers, *final)


def orthogonal_init(m):
    """Metz et al.'s notebook: orthogonal weights with gain 1.4, zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight, gain=1.4)
        nn.init.zeros_(m.bias)


class Lens(nn.Module):
    """The lens of Sajjadi et al. (Fig. 4) as a residual MLP: residual blocks plus a skip from input to output,
    L(x) = x + f(x), so the lens can become the identity. The paper's 8 conv blocks are 2 tanh MLP blocks here
    (the data are 2-D); Xavier init as the paper's Sec. 2.4."""

    def __init__(self, d, width=128, blocks=2):
        super().__init__()
        self.inp, self.out = nn.Linear(d, width), nn.Linear(width, d)
        self.blocks = nn.ModuleList(mlp(width, width, width) for _ in range(blocks))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(torch.tanh(h))
        return x + self.out(torch.tanh(h))


# ----------------------------------------------------------------------------------------------- the methods
def bce_d_loss(real_logits, fake_logits):
    """Discriminator loss eq. (6), from logits: -log D(x) - log(1 - D(G(z)))."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def lens_lambda(t, K):
    """Weight of the lens' adversarial term at step t, eq. (4): 1 - sin(t pi / 2K) for t <= K, else 0."""
    return 1 - math.sin(t * math.pi / (2 * K)) if t <= K else 0.0  # eq. (4)


def aw_weights(grad_real, grad_fake, s_r, s_f, alpha1=0.5, alpha2=0.75, delta=0.05, eps=0.05, normalized=True):
    """Algorithm 1 of Zadorozhnyy et al. (normalized=False: Algorithm 2). grad_real / grad_fake: the flattened
    gradients of L_r and L_f w.r.t. all D parameters; s_r, s_f: mean sigmoid scores on the real and fake batch.
    Returns (w_r, w_f, case) with the case numbered as in Algorithm 1 (1-2 favour real, 3-4 fake, 5 bisector)."""
    rr = grad_real.dot(grad_real).item() + 1e-4  # the authors' offset against division by zero
    ff = grad_fake.dot(grad_fake).item() + 1e-4
    rf = grad_real.dot(grad_fake).item()
    norm_r, norm_f = (math.sqrt(rr), math.sqrt(ff)) if normalized else (1.0, 1.0)
    if s_r < alpha1 or s_r < s_f - delta:  # favour the real loss
        case, w_r, w_f = (1, 1 / norm_r, -rf / (ff * norm_r)) if rf <= 0 else (2, 1 / norm_r, 0.0)  # 1: orthogonal to g_f (Thm. 2)
    elif s_r > alpha2 and s_r > s_f - delta:  # favour the fake loss
        case, w_r, w_f = (3, -rf / (rr * norm_f), 1 / norm_f) if rf <= 0 else (4, 0.0, 1 / norm_f)  # 3: orthogonal to g_r
    else:
        case, w_r, w_f = 5, 1 / norm_r, 1 / norm_f  # angle bisector (Thm. 2)
    return w_r + eps, w_f + eps, case


def js_regularizer(discriminator, real, fake):
    """Roth et al.'s JS regularizer in logit form, eq. (22) / appendix eq. (30), phi = D's logit:
    Omega = E_P[(1 - sigmoid(phi(x)))^2 |grad_x phi(x)|^2] + E_Q[sigmoid(phi(x~))^2 |grad_x~ phi(x~)|^2],
    on the same real and fake minibatches as the GAN loss, differentiable w.r.t. D's parameters."""
    x = torch.cat([real, fake]).detach().requires_grad_(True)
    logits = discriminator(x)
    grad_norm2 = torch.autograd.grad(logits.sum(), x, create_graph=True)[0].flatten(1).pow(2).sum(1)
    weight = torch.cat([1 - torch.sigmoid(logits[:len(real)]), torch.sigmoid(logits[len(real):])])
    return (weight.pow(2) * grad_norm2)[:len(real)].mean() + (weight.pow(2) * grad_norm2)[len(real):].mean()  # eq. (22)


def gradient_penalty(critic, real, fake):
    """WGAN-GP penalty E[(|grad D(x^)|_2 - 1)^2] at x^ = eps x + (1 - eps) G(z), eps ~ U[0, 1] per sample."""
    eps = torch.rand(len(real), *[1] * (real.dim() - 1), device=real.device)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    grad = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)[0]
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()  # Gulrajani et al. eq. (3)


def adam_step(params, grads, state, lr, betas, eps):
    """One torch.optim.Adam step (no weight decay, no amsgrad) as a pure function of tensors, differentiable
    w.r.t. params and grads: returns the new parameter dict and the new state (step, m, v)."""
    step, (beta1, beta2) = state["step"] + 1, betas
    m = {k: beta1 * state["m"][k] + (1 - beta1) * grads[k] for k in params}
    v = {k: beta2 * state["v"][k] + (1 - beta2) * grads[k] * grads[k] for k in params}
    step_size, bias_correction2_sqrt = lr / (1 - beta1 ** step), math.sqrt(1 - beta2 ** step)
    # sqrt'(0) is infinite: the clamp keeps G's gradient finite where a D gradient has been exactly 0 so far, and
    # changes no value that survives the "+ eps" (as unrolled_gan.py)
    new = {k: params[k] - step_size * m[k] / (v[k].clamp_min(torch.finfo(v[k].dtype).tiny).sqrt() / bias_correction2_sqrt + eps)
           for k in params}
    return new, {"step": step, "m": m, "v": v}


def unrolled_discriminator(D, optimizer, real, fake, K):
    """theta_D^K: K Adam steps of D's loss on one minibatch, from D's live parameters and Adam state (m, v, step),
    keeping the graph (create_graph=True) so that G's gradient includes the second-order term, eq. (7)."""
    params = dict(D.named_parameters())
    live = [optimizer.state[p] for p in params.values()]
    state = {"step": float(live[0]["step"]) if live[0] else 0.0,
             "m": {k: s["exp_avg"] if s else torch.zeros_like(p) for (k, p), s in zip(params.items(), live)},
             "v": {k: s["exp_avg_sq"] if s else torch.zeros_like(p) for (k, p), s in zip(params.items(), live)}}
    group = optimizer.param_groups[0]
    for _ in range(K):
        logits = functional_call(D, params, (torch.cat([real, fake]),))
        loss = bce_d_loss(logits[:len(real)], logits[len(real):])
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), create_graph=True)))
        params, state = adam_step(params, grads, state, group["lr"], group["betas"], group["eps"])  # eq. (7)
    return params


# ------------------------------------------------------------------------------------------------ training
def method_hparams(args, method):  # HPARAMS with the command line's overrides
    return {k: v if getattr(args, k) is None else getattr(args, k) for k, v in HPARAMS[method].items()}


def train(args, method, seed, device, log):
    """One training run. Returns the final metrics, losses and a few sample snapshots for the figure."""
    hp = method_hparams(args, method)
    d = mixture_means(args.dataset).shape[1]
    torch.manual_seed(seed)  # G, then D: every method starts from the same weights for a given seed
    G, D = mlp(args.z_dim, 128, 128, d).to(device), mlp(d, 128, 128, 1, final=[nn.Flatten(0)]).to(device)
    G.apply(orthogonal_init), D.apply(orthogonal_init)
    opt_g = torch.optim.Adam(G.parameters(), lr=hp["lr_g"], betas=(hp["beta1"], hp["beta2"]))
    opt_d = torch.optim.Adam(D.parameters(), lr=hp["lr_d"], betas=(hp["beta1"], hp["beta2"]))
    if method == "lens":
        lens = Lens(d).to(device)
        opt_lens = torch.optim.Adam(lens.parameters(), lr=1e-4, betas=(hp["beta1"], hp["beta2"]))  # lens lr: Sajjadi et al. Sec. 2.4
    eval_z = torch.randn(EVAL_SAMPLES, args.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    data, snapshots, start = torch.Generator().manual_seed(seed), [], time.time()

    def batch():
        return sample_mixture(args.dataset, args.batch_size, data).to(device)

    def noise():  # the global RNG, seeded above
        return torch.randn(args.batch_size, args.z_dim, device=device)

    for step in range(1, args.steps + 1):
        # ALGO LOGIC: n_critic discriminator updates on fresh samples
        for _ in range(hp["n_critic"]):
            real, fake = batch(), G(noise()).detach()
            d_in = lens(real).detach() if method == "lens" else real  # eq. (7): D sees L(x); D's loss never trains L
            real_logits, fake_logits = D(d_in), D(fake)
            opt_d.zero_grad(set_to_none=True)
            if method == "wgan-gp":
                loss_d = fake_logits.mean() - real_logits.mean() + args.gp_lambda * gradient_penalty(D, real, fake)
            elif method == "aw":  # eq. (2) with Algorithm 1: D's gradient is w_r g_r + w_f g_f
                loss_r, loss_f = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)),
                                  F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
                g_r, g_f = (torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(D.parameters()))])
                            for loss in (loss_r, loss_f))
                w_r, w_f, case = aw_weights(g_r, g_f, torch.sigmoid(real_logits).mean().item(), torch.sigmoid(fake_logits).mean().item())
                for p, g in zip(D.parameters(), (w_r * g_r + w_f * g_f).split([p.numel() for p in D.parameters()])):
                    p.grad = g.view_as(p)
                loss_d = w_r * loss_r + w_f * loss_f  # eq. (2), logged only
            else:
                loss_d = bce_d_loss(real_logits, fake_logits)  # eqs. (6), (7)
                if method == "reg":
                    loss_d = loss_d + args.gamma / 2 * js_regularizer(D, real, fake)  # eq. (18): F - gamma/2 Omega
            if method != "aw":
                loss_d.backward()
            opt_d.step()  # eq. (11) for unrolled
        stats = {"d_loss": loss_d.item()}
        if method == "aw":
            stats.update(w_r=w_r, w_f=w_f, aw_case=case)
        if method == "lens":  # eqs. (2), (3), (8): once per iteration, against the D just updated
            lam, lensed = lens_lambda(step, args.lens_k), lens(real)
            loss_lens = lam * F.softplus(D(lensed)).mean() + (real - lensed).pow(2).mean()  # per-element mean
            opt_lens.zero_grad(set_to_none=True)
            loss_lens.backward(inputs=list(lens.parameters()))
            opt_lens.step()
            stats.update(lens_loss=loss_lens.item(), lens_lambda=lam)

        # ALGO LOGIC: one generator update
        fake = G(noise())
        unrolled = method == "unrolled" and args.unroll_steps > 0
        if unrolled:  # eq. (10): f at theta_D^K(theta_G), on D's last real batch
            theta_k = unrolled_discriminator(D, opt_d, real, fake, args.unroll_steps)
            real_logits_k, fake_logits = functional_call(D, theta_k, (real,)), functional_call(D, theta_k, (fake,))
        else:
            fake_logits = D(fake)
        if method == "wgan-gp":
            loss_g = -fake_logits.mean()
        elif method == "mm":
            loss_g = -F.softplus(fake_logits).mean()  # log(1 - D(G(z))) = -softplus(phi)
        else:
            loss_g = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))  # eq. (5)
        if unrolled:  # f's real term E[log D(x)] reaches G through theta_D^K (as unrolled_gan.py; 0 for K = 0)
            loss_g = loss_g - F.binary_cross_entropy_with_logits(real_logits_k, torch.ones_like(real_logits_k))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward(inputs=list(G.parameters()))
        opt_g.step()
        stats["g_loss"] = loss_g.item()

        # TRY NOT TO MODIFY: non-finite check, evaluation, snapshots
        finite = all(map(math.isfinite, stats.values()))
        if step % args.eval_every == 0 or step == args.steps or not finite:
            with torch.no_grad():
                samples = G(eval_z).cpu()
            metrics = mode_metrics(samples, args.dataset)
            log({"method": method, "seed": seed, "step": step, **stats, **metrics, "time": time.time() - start})
            snapshots.append((step, metrics, samples[:PLOT_SAMPLES]))
            if not finite:
                print(f"{method} seed {seed}: non-finite loss at step {step} ({stats}); run stopped", file=sys.stderr)
                break
    return {"seed": seed, **metrics, **stats, "steps_done": step, "diverged": not finite,
            "wall_time": time.time() - start}, snapshots


# ----------------------------------------------------------------------------------------------- reporting
def plane_coordinates(points):
    """ring7-3d samples in the coordinates of the mixture's plane (undo the translation and the rotation)."""
    return ((points - TRANSLATION_3D) @ ROTATION_3D)[:, :2]


def plot_snapshots(path, dataset, rows):
    """Metz et al. Fig. 2 style: per method a row of generated samples at several steps beside the target."""
    project = plane_coordinates if dataset == "ring7-3d" else (lambda x: x)
    target = project(sample_mixture(dataset, PLOT_SAMPLES, torch.Generator().manual_seed(0)))
    means = project(mixture_means(dataset))
    lim = 1.6 if dataset != "grid25" else 6.0
    columns = SNAPSHOTS + 1
    fig = Figure(figsize=(2.3 * columns, 2.5 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, (method, snaps) in enumerate(rows):
        snaps = snaps if len(snaps) <= SNAPSHOTS else [snaps[round(i * (len(snaps) - 1) / (SNAPSHOTS - 1))] for i in range(SNAPSHOTS)]
        cells = [(c, f"step {s}: {m['modes']}/{len(means)} modes\nHQ {m['hq']:.0f}%, reverse KL {m['reverse_kl']:.2f}", project(x), "tab:blue")
                 for c, (s, m, x) in enumerate(snaps)] + [(columns - 1, "target", target, "tab:red")]
        for ax in axes[r]:
            ax.axis("off")
        for c, title, points, color in cells:
            ax = axes[r][c]
            ax.axis("on"), ax.set_xlim(-lim, lim), ax.set_ylim(-lim, lim), ax.set_aspect("equal"), ax.tick_params(labelsize=6)
            ax.scatter(means[:, 0], means[:, 1], s=14, c="none", edgecolors="gray", linewidths=0.6)
            ax.scatter(points[:, 0], points[:, 1], s=1, c=color, alpha=0.5)
            ax.set_title(title, fontsize=7)
        axes[r][0].set_ylabel(method, fontsize=10, fontweight="bold")
    fig.suptitle(f"toy2d on {dataset}" + (" (in-plane coordinates)" if dataset == "ring7-3d" else ""), fontsize=11)
    fig.savefig(path, dpi=110)


def pick_device(name):
    try:
        device = torch.device(name)
    except RuntimeError:
        fail(f"unknown device {name!r}")
    if (device.type == "cuda" and not torch.cuda.is_available()) or (device.type == "mps" and not torch.backends.mps.is_available()):
        fail(f"device {name!r} is not available on this machine")
    return device


def new_run_dir(args):
    name = f"{args.dataset}__toy2d-{args.method}__{int(time.time())}"
    for n in range(1000):  # runs started in the same second get _1, _2, ...
        run_dir = Path(args.out_dir) / (f"{name}_{n}" if n else name)
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue
    fail(f"cannot create a run directory under {args.out_dir}")


def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # these small MLPs gain little from threads, and a shared CPU makes them much slower
    run_dir, start = new_run_dir(args), time.time()
    methods = METHODS if args.method == "all" else (args.method,)
    print(f"toy2d: {', '.join(methods)} on {args.dataset}, seeds {args.seeds}, {args.steps} steps on {device}; run directory {run_dir}")
    results, rows = {}, []
    with open(run_dir / "metrics.jsonl", "w") as metrics_file:
        def log(record):
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            print(f"{record['method']} seed {record['seed']} step {record['step']}/{args.steps} | d_loss {record['d_loss']:.4f} | "
                  f"g_loss {record['g_loss']:.4f} | modes {record['modes']} | HQ {record['hq']:.1f}% | "
                  f"reverse KL {record['reverse_kl']:.3f} | {record['time']:.0f}s", flush=True)

        for method in methods:
            runs = []
            for seed in args.seeds:
                final, snapshots = train(args, method, seed, device, log)
                runs.append(final)
                if seed == args.seeds[0]:
                    rows.append((method, snapshots))
            results[method] = {"hparams": method_hparams(args, method), "per_seed": runs,
                               "wall_time": sum(r["wall_time"] for r in runs)}
            for key in ("modes", "hq", "reverse_kl"):  # mean and sample std over the seeds
                values = [r[key] for r in runs]
                results[method] |= {key: statistics.fmean(values), key + "_std": statistics.stdev(values) if len(values) > 1 else 0.0}
    plot_snapshots(run_dir / "toy2d.png", args.dataset, rows)
    summary = {"run_dir": str(run_dir), "dataset": args.dataset, "n_modes": len(mixture_means(args.dataset)),
               "settings": vars(args), "results": results, "wall_time": time.time() - start}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
