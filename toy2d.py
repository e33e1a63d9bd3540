"""toy2d: every cleangan method on low-dimensional Gaussian mixtures, with mode metrics and figures.

The toy experiments of the papers in one CPU-friendly script. Each `--method` is the algorithm of its image script
(the functions marked "as X.py" are that script's text), on small MLPs (SPEC §4):

    gan       L_D = -log D(x) - log(1 - D(G(z)))   lens paper eq. (6);  L_G = -log D(G(z))  eq. (5)
    mm        L_G = log(1 - D(G(z)))  (Goodfellow's saturating minimax, lens paper eq. 1)
    lens      D sees L(x): L_D eq. (7);  L_L = lambda L_L^A + L_L^R  eq. (3), L_L^A = -log(1 - D(L(x))) eq. (8),
              L_L^R = ||x - L(x)||^2 eq. (2), lambda = 1 - sin(t pi / 2K) for t <= K else 0  eq. (4)
              Sajjadi et al. 2018, https://arxiv.org/abs/1802.04374
    aw        L_D = w_r L_r + w_f L_f  eq. (2), weights from the gradients by Algorithm 1 (BCE base loss, as the
              aw paper's toy study Sec. 5.3)  Zadorozhnyy et al. 2021, https://arxiv.org/abs/2012.03149
    reg       L_D = BCE + gamma/2 Omega,  Omega = E_P[(1 - D(x))^2 |grad phi(x)|^2] + E_Q[D(x)^2 |grad phi(x)|^2]
              eqs. (18), (22); G: -log D(G(z)) (--reg-g-loss ns, paired with gan) or the authors' toy code's
              saturating log(1 - D(G(z))) (--reg-g-loss mm, the roth preset)  Roth et al. 2017, arXiv 1705.09367
    unrolled  as unrolled_gan.py: G minimizes f at theta_D^K(theta_G), K differentiable steps of D's own Adam from
              its live state on this iteration's minibatch, eqs. (7), (9), (10), with f's fake term non-saturating;
              D takes its ordinary step (11) on the same minibatch, from the same (theta_G, theta_D): simultaneous
              updates  Metz et al. 2017, https://arxiv.org/abs/1611.02163
    wgan-gp   L_D = D(G(z)) - D(x) + lambda E[(|grad D(x^)| - 1)^2], L_G = -D(G(z)), 5 critic steps  Gulrajani et
              al. 2017 eq. (3), https://arxiv.org/abs/1704.00028

Default setting (--setting collapse), one for every method so that they are paired runs from the same weights that
differ only in the method (SETTINGS): G z -> 128 -> 128 -> d and D d -> 128 -> 128 -> 1 with ReLU, PyTorch's default
init, z-dim 256, batch 512, Adam lr 1e-3 (G) and 1e-4 (D), betas (0.5, 0.999), constant, 3,000 generator steps: the
networks and learning rates of Metz et al.'s notebook, where with ReLU the plain GAN collapses onto one mode and
hops between modes. --setting tuned: 3 tanh layers, orthogonal init, lr 2e-3 decayed over the second half, 2,000
steps, where every method is sharp on ring8. --preset NAME runs a paper's own toy experiment instead, with that
paper's settings (PRESETS; docs/toy2d.md lists their sources).
Metrics (VEEGAN / PacGAN protocol) on 2,500 samples: modes captured, % high-quality samples (within 3 std of the
nearest mean), reverse KL of the nearest-mode histogram to the uniform one.

Usage: python toy2d.py                                   # every method on ring8, one seed (~4 min on 2 cores)
       python toy2d.py --dataset ring8 grid25 --seeds 1 2 3 4 5   # the benchmark
       python toy2d.py --preset metz                     # Metz et al. Fig. 2: gan vs unrolled K = 5, 10
       python toy2d.py --preset gulrajani                # Gulrajani et al. Fig. 1: clipped vs penalized critics
"""
import argparse
import concurrent.futures
import io
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections import namedtuple
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image
from torch.func import functional_call

METHODS = ("gan", "mm", "lens", "aw", "reg", "unrolled", "wgan-gp")
EVAL_SAMPLES = 2500  # VEEGAN / PacGAN protocol
PLOT_SAMPLES = 1000
SNAPSHOTS = 5  # columns of generated samples per method in the figure
SCORE_SAMPLES = 100  # real points per mode for the mean D score (the aw paper's Fig. 6, second row)

# --setting: one setting shared by every method, so that runs are paired (the numbers behind them: docs/toy2d.md).
# collapse (the default): Metz et al.'s notebook networks and learning rates with ReLU hidden units; the plain GAN
# collapses onto one mode and hops between modes (ReLU is the cause: with tanh it does not collapse, with either
# init and either lr ratio it does), so the figure shows what each method does about it.
# tuned: 3 tanh layers, orthogonal init, lr 2e-3 decayed over the second half: every method sharp on ring8.
# n_critic is the method's: WGAN-GP's Algorithm 1 takes 5 critic steps, the others 1.
METHOD_DEFAULTS = dict(gamma=0.1, reg_g_loss="ns", unroll_steps=5, gp_lambda=0.1, lens_k=0, eval_every=0)
SETTINGS = {
    "collapse": dict(layers=2, width=128, activation="relu", init="default", z_dim=256, batch_size=512, steps=3000,
                     lr_g=1e-3, lr_d=1e-4, beta1=0.5, beta2=0.999, lr_decay_start=1.0, **METHOD_DEFAULTS),
    "tuned": dict(layers=3, width=128, activation="tanh", init="orthogonal", z_dim=256, batch_size=512, steps=2000,
                  lr_g=2e-3, lr_d=2e-3, beta1=0.5, beta2=0.999, lr_decay_start=0.5, **METHOD_DEFAULTS),
}
N_CRITIC = {"wgan-gp": 5}

# --preset NAME: a paper's toy experiment with that paper's settings; runs are (row label, method, overrides); each
# deviation from the paper is named here and measured in docs/toy2d.md. Three seeds each (Roth's NUM_RUNS).
COLLAPSE = dict(SETTINGS["collapse"], eval_every=300)  # Metz's notebook nets with ReLU: the GAN collapses and hops
PRESETS = {
    "metz": dict(settings=COLLAPSE, datasets=["ring8"],
                 runs=[("gan", "gan", {}), ("unrolled K=5", "unrolled", {"unroll_steps": 5}),
                       ("unrolled K=10", "unrolled", {"unroll_steps": 10})],
                 about="Metz et al. Fig. 2 setting (ReLU): the GAN and unrolled GANs (K = 5, 10) over training"),
    # 3DGAN.py's Adam beta1 0.5 lets the plain GAN succeed; the paper's appendix text says 0.9, with which it fails
    "roth": dict(settings=dict(layers=2, width=128, activation="tanh", init="normal0.1", z_dim=2, batch_size=512,
                               lr_g=1e-3, lr_d=1e-3, beta1=0.9, beta2=0.999, lr_decay_start=1.0, reg_g_loss="mm",
                               steps=20000, eval_every=2000),
                 datasets=["ring7-3d"],
                 runs=[("gamma 0 (GAN)", "reg", {"gamma": 0.0}), ("gamma 0.01", "reg", {"gamma": 0.01}),
                       ("gamma 0.1", "reg", {"gamma": 0.1})],
                 about="Roth et al. Fig. 1 setting: 7 Gaussians on a plane in 3-D, z-dim 2, Adam beta1 0.9"),
    "aw": dict(settings=COLLAPSE, datasets=["ring8"], scores=True, runs=[("gan", "gan", {}), ("aw", "aw", {})],
               about="the aw paper's Fig. 6 layout in the collapse setting: samples and D's mean logit per mode"),
    "gulrajani": dict(settings=dict(layers=3, width=512, activation="relu", init="default", batch_size=256, lr_d=1e-4,
                                    beta1=0.5, beta2=0.9, gp_lambda=0.1, steps=2000),
                      datasets=["ring8", "grid25", "swissroll"], critic_only=True,
                      about="Gulrajani et al. Fig. 1: WGAN critics against a fixed generator (data + N(0, 1))"),
    "gulrajani-train": dict(settings=dict(layers=3, width=512, activation="relu", init="default", z_dim=2,
                                          batch_size=256, lr_g=1e-4, lr_d=1e-4, beta1=0.5, beta2=0.9,
                                          lr_decay_start=1.0, gp_lambda=0.1, steps=1000),
                            datasets=["ring8", "grid25"], runs=[("wgan-gp", "wgan-gp", {})], seeds=[1],
                            about="Gulrajani et al.'s gan_toy.py training run: WGAN-GP on 8 and 25 Gaussians"),
    "lens": dict(settings=COLLAPSE, datasets=["ring8"], runs=[("gan (no lens)", "gan", {}), ("lens", "lens", {})],
                 about="the lens (no toy in its paper) in the collapse setting, with and without it"),
}

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default=None, choices=tuple(PRESETS),
                   help="a paper's toy experiment with its own settings (PRESETS)")
    p.add_argument("--setting", default="collapse", choices=tuple(SETTINGS),
                   help="the setting every method shares (SETTINGS): collapse, where the plain GAN collapses; tuned")
    p.add_argument("--method", default="all", choices=METHODS + ("all",),
                   help="training method (all: every one, paired runs)")
    p.add_argument("--dataset", nargs="+", default=["ring8"], choices=(*MIXTURES, "swissroll"),
                   help="Gaussian mixture(s) (SPEC §4); swissroll: --preset gulrajani only")
    p.add_argument("--seeds", type=int, nargs="+", default=[1],
                   help="one run per seed; mean and std over them (presets: 1 2 3)")
    p.add_argument("--steps", type=int, help="generator updates per run")
    p.add_argument("--layers", type=int, help="hidden layers of G and of D")
    p.add_argument("--width", type=int, help="units per hidden layer")
    p.add_argument("--activation", choices=("tanh", "relu"), help="hidden activation")
    p.add_argument("--init", choices=("orthogonal", "normal0.1", "default"),
                   help="orthogonal gain 1.4 (Metz's notebook); normal0.1: N(0, 0.1) truncated at 2 std (Roth's "
                   "3DGAN.py); default: PyTorch's")
    p.add_argument("--batch-size", type=int, help="samples per batch of D and of G")
    p.add_argument("--z-dim", type=int, help="latent dimension")
    p.add_argument("--lr-g", type=float, help="G's Adam learning rate")
    p.add_argument("--lr-d", type=float, help="D's (and the lens's) Adam learning rate")
    p.add_argument("--beta1", type=float, help="Adam beta1")
    p.add_argument("--beta2", type=float, help="Adam beta2")
    p.add_argument("--lr-decay-start", type=float,
                   help="fraction of the run after which every lr decays linearly to 0 (1: constant)")
    p.add_argument("--n-critic", type=int, default=None, help="D steps per G step (default: 5 for wgan-gp, else 1)")
    p.add_argument("--eval-every", type=int, help="steps between mode metrics (0: --steps / 5)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="runs in parallel, one process and one thread each")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | mps (these MLPs are fastest on a CPU)")
    p.add_argument("--out-dir", default="runs", help="parent folder of the run directory")
    # method-specific arguments
    p.add_argument("--lens-k", type=int, help="lens: K of the lambda schedule eq. (4) (0: --steps / 2)")
    p.add_argument("--gamma", type=float, help="reg: gamma, constant (Roth et al.'s toy setting 0.1)")
    p.add_argument("--reg-g-loss", choices=("ns", "mm"),
                   help="reg: G's loss, non-saturating (as gan) or saturating (the authors' 3DGAN.py)")
    p.add_argument("--unroll-steps", type=int, help="unrolled: K (Metz et al.'s notebook 5; paper Fig. 2 10)")
    p.add_argument("--gp-lambda", type=float, help="wgan-gp: gradient penalty weight (gan_toy.py's 0.1)")
    p.error = fail  # one error line instead of argparse's usage dump
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset")
    pre.add_argument("--setting", default="collapse")
    known = pre.parse_known_args(argv)[0]
    preset = PRESETS.get(known.preset)
    if preset and "--setting" in " ".join(argv or sys.argv[1:]):
        fail(f"--setting would be ignored: --preset {known.preset} has its own settings")
    settings = {**SETTINGS.get(known.setting, {}), **(preset["settings"] if preset else {})}
    p.set_defaults(**settings)  # explicit flags still win
    if preset:
        p.set_defaults(dataset=preset["datasets"], seeds=preset.get("seeds", [1, 2, 3]))
    args = p.parse_args(argv)
    for k, v in vars(args).items():  # inf and NaN have no use in any float flag
        if isinstance(v, float) and not math.isfinite(v):
            fail(f"--{k.replace('_', '-')} must be a finite number, got {v}")
    if preset and args.method != "all":
        fail(f"--method would be ignored: --preset {args.preset} runs {', '.join(r[0] for r in preset['runs'])}")
    positives = ("steps", "batch_size", "z_dim", "layers", "width", "jobs", "n_critic", "lr_g", "lr_d")
    for name in positives + ("eval_every", "lens_k", "unroll_steps", "gamma", "gp_lambda"):
        value, positive = getattr(args, name), name in positives
        if value is not None and not (value > 0 if positive else value >= 0):  # `not` also rejects NaN
            fail(f"--{name.replace('_', '-')} must be {'positive' if positive else '>= 0'}, got {value}")
    if not all(0 <= b < 1 for b in (args.beta1, args.beta2)):
        fail(f"Adam betas must be in [0, 1), got {args.beta1}, {args.beta2}")
    if not 0 <= args.lr_decay_start <= 1:
        fail(f"--lr-decay-start must be in [0, 1], got {args.lr_decay_start}")
    if "swissroll" in args.dataset and not (preset and preset.get("critic_only")):
        fail("--dataset swissroll is for the critics of --preset gulrajani (it has no modes to count)")
    if len(set(args.seeds)) != len(args.seeds) or len(set(args.dataset)) != len(args.dataset):
        fail(f"--seeds and --dataset must be distinct, got {args.seeds}, {args.dataset}")
    args.eval_every = args.eval_every or max(args.steps // SNAPSHOTS, 1)
    args.lens_k = args.lens_k or max(args.steps // 2, 1)
    return args


def runs_of(args):
    """(row label, method, overrides) of every run per seed: the preset's, or one per --method."""
    if args.preset:
        return PRESETS[args.preset]["runs"]
    return [(m, m, {}) for m in (METHODS if args.method == "all" else (args.method,))]


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


def mode_points(name, n, generator=None):
    """n samples of each component in turn (component-major): the real points of the mean D score per mode."""
    means, std = MIXTURES[name]
    xy = means.repeat_interleave(n, 0) + std * torch.randn(len(means) * n, 2, generator=generator)
    return embed_3d(xy) if name == "ring7-3d" else xy


COLLAPSE_NATS = 0.5  # collapsed: reverse KL within 0.5 nats of log(modes), the mass on about one or two modes


def collapsed(reverse_kl, n_modes):
    """Whether a run's samples have collapsed: reverse KL >= log(n_modes) - COLLAPSE_NATS (log 8 - 0.5 = 1.58 on
    ring8: all mass on one mode gives log 8 = 2.08, uniform on two 1.39, on eight 0)."""
    return reverse_kl >= math.log(n_modes) - COLLAPSE_NATS


def mode_metrics(samples, name):
    """VEEGAN / PacGAN metrics. A sample is high quality (HQ) within 3 std of its nearest mean; a mode is captured
    when it is the nearest mean of at least one HQ sample; reverse KL = KL(p_gen || uniform) over the histogram
    of nearest means of all samples; top_mode / top_share: the mode with the most samples and its share of them.
    Non-finite samples are never HQ and fall in no histogram bin."""
    means, std = mixture_means(name).double(), MIXTURES[name][1]
    samples = samples.detach().cpu().double()
    finite = samples[torch.isfinite(samples).all(1)]
    distance, nearest = torch.cdist(finite, means).min(1)
    hq = distance <= 3 * std
    histogram = torch.bincount(nearest, minlength=len(means)).double() / max(len(finite), 1)
    p = histogram[histogram > 0]  # 0 log 0 = 0
    reverse_kl = (p * (p * len(means)).log()).sum().item() if len(finite) else math.log(len(means))
    return {"modes": len(nearest[hq].unique()), "hq": 100.0 * hq.sum().item() / len(samples), "reverse_kl": reverse_kl,
            "top_mode": int(histogram.argmax()), "top_share": histogram.max().item()}  # Metz Fig. 2: where, how much


# ------------------------------------------------------------------------------------------------ networks
def mlp(*widths, activation="tanh", final=()):
    """Linear layers of the given widths with the activation between them."""
    act = nn.Tanh if activation == "tanh" else nn.ReLU
    layers = [m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), act())][:-1]
    return nn.Sequential(*layers, *final)


def init_weights(m, kind):
    """orthogonal: Metz et al.'s notebook (gain 1.4); normal0.1: Roth et al.'s 3DGAN.py (truncated normal, std
    0.1); default: PyTorch's (gan_toy.py's tflib init is not reproduced). Biases 0 for the first two."""
    if isinstance(m, nn.Linear) and kind != "default":
        if kind == "orthogonal":
            nn.init.orthogonal_(m.weight, gain=1.4)
        else:
            nn.init.trunc_normal_(m.weight, std=0.1, a=-0.2, b=0.2)
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


def bce_g_loss(fake_logits, saturating=False):
    """-log D(G(z)) (eq. 5, non-saturating) or, saturating, log(1 - D(G(z))) = -softplus(phi)."""
    if saturating:
        return -F.softplus(fake_logits).mean()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


# The image scripts' own functions, text for text (tests/test_toy2d.py compares them): adam_state, adam_step
# (unrolled_gan.py), gradient_products, aw_weights (aw_gan.py), gradient_penalty (wgan_gp.py), lens_lambda
# (lens_gan.py), JSRegularizer, js_regularizer (reg_gan.py).
def adam_state(optimizer, params):
    """An optimizer's live Adam state per parameter name, as adam_step takes it (zeros before its first step).
    These are the live tensors, read and never written; .get() so that not even an empty entry is added."""
    unsupported = [k for k in ("weight_decay", "amsgrad", "maximize") if optimizer.param_groups[0].get(k)]
    if len(optimizer.param_groups) != 1 or unsupported or not isinstance(optimizer, torch.optim.Adam):
        extra = ", " + ", ".join(unsupported) if unsupported else ""
        raise ValueError(f"adam_step is plain Adam with one parameter group; this optimizer has "
                         f"{len(optimizer.param_groups)} group(s){extra}")
    state = {}
    for name, p in params.items():
        live = optimizer.state.get(p) or {"step": 0, "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
        state[name] = {"step": float(live["step"]), "exp_avg": live["exp_avg"], "exp_avg_sq": live["exp_avg_sq"]}
    return state


def adam_step(params, grads, state, lr, betas, eps):
    """One step of torch.optim.Adam (Kingma & Ba 2015, Alg. 1 with bias correction; no weight decay, no amsgrad)
    as a pure function on dicts of tensors keyed by parameter name: returns (new_params, new_state), writes nothing,
    and is differentiable w.r.t. params, grads and state. The operations are those of torch's single-tensor Adam."""
    beta1, beta2 = betas
    new_params, new_state = {}, {}
    for name, p in params.items():
        g, step = grads[name], state[name]["step"] + 1
        m = state[name]["exp_avg"].lerp(g, 1 - beta1)
        v = torch.addcmul(state[name]["exp_avg_sq"] * beta2, g, g, value=1 - beta2)
        # sqrt'(0) is infinite: clamping at the smallest normal number keeps G's gradient finite where D's gradient
        # has been exactly 0 so far, and changes no value that survives the "+ eps"
        denom = v.clamp_min(torch.finfo(v.dtype).tiny).sqrt() / (1 - beta2 ** step) ** 0.5 + eps
        new_params[name] = torch.addcdiv(p, m, denom, value=-lr / (1 - beta1 ** step))
        new_state[name] = {"step": step, "exp_avg": m, "exp_avg_sq": v}
    return new_params, new_state


def gradient_products(grad_real, grad_fake):
    """(g_r.g_r, g_f.g_f, g_r.g_f) of the flattened gradients, on their device: all that aw_weights and
    gradient_angle need of them."""
    return torch.stack([grad_real @ grad_real, grad_fake @ grad_fake, grad_real @ grad_fake])


def aw_weights(products, s_r, s_f, alpha1=0.5, alpha2=0.75, delta=0.05, eps=0.05, normalized=True):
    """Algorithm 1 (normalized) or Algorithm 2 (not): the weights (w_r, w_f) of eq. (2) as plain numbers, and the
    case taken (1-5, numbered as in the module docstring and the authors' aw_loss.py). products: the numbers
    (g_r.g_r, g_f.g_f, g_r.g_f) of gradient_products; s_r, s_f: D's mean scores (probabilities) on the real and fake
    batch. The tests are strict as in Algorithm 1: s_r exactly at alpha1, alpha2 or s_f - delta takes the bisector
    (case 5)."""
    rr, ff, rf = products
    rr, ff = rr + 1e-4, ff + 1e-4  # as the authors: no division by zero when a gradient vanishes
    norm_r, norm_f = (math.sqrt(rr), math.sqrt(ff)) if normalized else (1.0, 1.0)
    if s_r < alpha1 or s_r < s_f - delta:  # favour real: w_r g_r + w_f g_f orthogonal to g_f (1) or along g_r (2)
        case, w_r, w_f = (1, 1 / norm_r, -rf / (ff * norm_r)) if rf <= 0 else (2, 1 / norm_r, 0.0)
    elif s_r > alpha2 and s_r > s_f - delta:  # favour fake: orthogonal to g_r (3) or along g_f (4)
        case, w_r, w_f = (3, -rf / (rr * norm_f), 1 / norm_f) if rf <= 0 else (4, 0.0, 1 / norm_f)
    else:  # both: the angle bisector of g_r and g_f (Theorem 2, case 1)
        case, w_r, w_f = 5, 1 / norm_r, 1 / norm_f
    return w_r + eps, w_f + eps, case


def gradient_penalty(critic, real, fake, return_norms=False):
    """E_x^[(||grad_x^ D(x^)||_2 - 1)^2], the penalty of eq. (3) without its lambda, on x^ = eps x + (1 - eps) x~ with
    eps ~ U[0, 1] drawn per sample from the global torch RNG (Algorithm 1 lines 4-6). Norms are per sample over all
    input dimensions; create_graph=True makes the penalty differentiable w.r.t. the critic's weights. grad_x^ of
    sum_i D(x^_i) is each sample's own gradient because the critic has no batch statistics. return_norms=True also
    returns the per-sample gradient norms (detached) for logging."""
    real, fake = real.detach(), fake.detach()
    eps = torch.rand(len(real), *[1] * (real.dim() - 1), device=real.device, dtype=real.dtype)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)  # Algorithm 1 line 6
    grad, = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True, materialize_grads=True)
    norms = grad.flatten(1).norm(dim=1)
    penalty = ((norms - 1) ** 2).mean()  # eq. (3), second term
    return (penalty, norms.detach()) if return_norms else penalty


def lens_lambda(t, k):
    """Weight of the lens's adversarial term at step t: 1 at t = 0, 0 from t = K on."""
    return 1 - math.sin(t * math.pi / (2 * k)) if t <= k else 0.0  # eq. (4)


JSRegularizer = namedtuple("JSRegularizer", "omega omega_real omega_fake real_logits fake_logits")


def js_regularizer(discriminator, real, fake):
    """Omega_JS of eqs. (22) / (30) on the GAN loss's own real and fake minibatches, differentiable w.r.t. D's
    parameters: squared norms per sample over all input dimensions, a mean over each batch. Ambiguity: with batch-
    statistics BatchNorm, phi(x_i) depends on the whole batch; like the authors' tf.gradients we take grad_x of
    sum_i phi(x_i), which is the per-sample gradient exactly when D has no such coupling."""
    real, fake = real.detach().requires_grad_(True), fake.detach().requires_grad_(True)
    real_logits, fake_logits = discriminator(real), discriminator(fake)  # two passes: BN statistics as in the GAN loss
    grad_real, grad_fake = torch.autograd.grad(real_logits.sum() + fake_logits.sum(), (real, fake), create_graph=True,
                                               materialize_grads=True)  # a constant phi has zero gradient, not None
    # eq. (30); sigmoid(-phi) is 1 - D(x) without underflow
    omega_real = (torch.sigmoid(-real_logits) ** 2 * grad_real.flatten(1).pow(2).sum(1)).mean()
    omega_fake = (torch.sigmoid(fake_logits) ** 2 * grad_fake.flatten(1).pow(2).sum(1)).mean()  # eq. (30)
    return JSRegularizer(omega_real + omega_fake, omega_real, omega_fake, real_logits, fake_logits)  # eq. (22)

def unrolled_discriminator(D, optimizer, real, fake, unroll_steps):
    """theta_D^K of unrolled_gan.py's unroll: K steps of D's own Adam (eqs. 6-7) from its live parameters and state,
    on this iteration's minibatch (real, fake), keeping the graph through every step (both terms of eq. 12)."""
    params = dict(D.named_parameters())
    state, group = adam_state(optimizer, params), optimizer.param_groups[0]
    for _ in range(unroll_steps):
        real_logits, fake_logits = (functional_call(D, params, (x,)) for x in (real, fake))
        grads = torch.autograd.grad(bce_d_loss(real_logits, fake_logits), list(params.values()), create_graph=True)
        params, state = adam_step(params, dict(zip(params, grads)), state, group["lr"], group["betas"],
                                  group["eps"])  # eq. (7)
    return params


def unrolled_generator_loss(D, optimizer, real, fake, unroll_steps):
    """f_K (eq. 9) as G minimizes it, as unrolled_gan.py --loss gan: -log D_K(G(z)) + log D_K(x) at theta_D^K."""
    params = unrolled_discriminator(D, optimizer, real, fake, unroll_steps)
    real_logits, fake_logits = (functional_call(D, params, (x,)) for x in (real, fake))
    return bce_g_loss(fake_logits) - F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))


def lr_factor(done, steps, decay_start):
    """1 until a fraction decay_start of the run is done, then linearly down to 0 at its end."""
    start = decay_start * steps
    return 1.0 if done <= start or start >= steps else (steps - done) / (steps - start)


# ------------------------------------------------------------------------------------------------ training
def train(args, label, method, overrides, seed, dataset):
    """One training run. Returns (final metrics, sample snapshots for the figure, metric records)."""
    a = argparse.Namespace(**{**vars(args), **overrides})
    n_critic = a.n_critic or N_CRITIC.get(method, 1)
    d, device = mixture_means(dataset).shape[1], torch.device(a.device)
    torch.manual_seed(seed)  # G, then D: every method starts from the same weights for a given seed
    G = mlp(a.z_dim, *[a.width] * a.layers, d, activation=a.activation).to(device)
    D = mlp(d, *[a.width] * a.layers, 1, activation=a.activation, final=[nn.Flatten(0)]).to(device)
    G.apply(lambda m: init_weights(m, a.init)), D.apply(lambda m: init_weights(m, a.init))
    opt_g = torch.optim.Adam(G.parameters(), lr=a.lr_g, betas=(a.beta1, a.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=a.lr_d, betas=(a.beta1, a.beta2))
    optimizers, lens = [opt_g, opt_d], None
    if method == "lens":  # one lr for G, D and the lens, as Sajjadi et al. Sec. 2.4
        lens = Lens(d).to(device)
        optimizers.append(torch.optim.Adam(lens.parameters(), lr=a.lr_d, betas=(a.beta1, a.beta2)))
    base_lrs = [o.param_groups[0]["lr"] for o in optimizers]
    eval_z = torch.randn(EVAL_SAMPLES, a.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    score_x = mode_points(dataset, SCORE_SAMPLES, torch.Generator().manual_seed(seed)).to(device)
    data, snapshots, records, start = torch.Generator().manual_seed(seed), [], [], time.time()

    def batch():
        return sample_mixture(dataset, a.batch_size, data).to(device)

    def noise():  # the global RNG, seeded above
        return torch.randn(a.batch_size, a.z_dim, device=device)

    for step in range(1, a.steps + 1):
        for o, lr in zip(optimizers, base_lrs):
            o.param_groups[0]["lr"] = lr * lr_factor(step - 1, a.steps, a.lr_decay_start)
        stats = {}
        # ALGO LOGIC: n_critic discriminator updates on fresh samples; for unrolled, G's unrolled step (eq. 10) and
        # D's ordinary step (eq. 11) share the last minibatch and both start from this (theta_G, theta_D)
        for i in range(n_critic):
            real, last = batch(), i == n_critic - 1
            with torch.set_grad_enabled(last and method == "unrolled"):
                fake = G(noise())
            if last and method == "unrolled":  # before D's step: the unroll starts from D's live state
                loss_g = unrolled_generator_loss(D, opt_d, real, fake, a.unroll_steps)
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward(inputs=list(G.parameters()))  # eq. (12); D's .grad is left alone
                loss_g, fake = loss_g.detach(), fake.detach()
            with torch.set_grad_enabled(last and lens is not None):  # only the last L(x) trains the lens
                lensed = lens(real) if lens else real  # eq. (7): D sees L(x)
            opt_d.zero_grad(set_to_none=True)
            if method == "aw":  # as aw_gan.py's aw_d_step: D's gradient is w_r g_r + w_f g_f, eq. (2)
                real_logits, fake_logits = D(real), D(fake)
                loss_r, loss_f = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)),
                                  F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
                g_r, g_f = (torch.cat([g.flatten() for g in torch.autograd.grad(part, list(D.parameters()))])
                            for part in (loss_r, loss_f))
                products = gradient_products(g_r, g_f)
                scores = torch.stack([torch.sigmoid(real_logits).mean(), torch.sigmoid(fake_logits).mean()])
                rr, ff, rf, s_r, s_f = torch.cat([products, scores]).tolist()
                w_r, w_f, case = aw_weights((rr, ff, rf), s_r, s_f)
                for p, g in zip(D.parameters(), (w_r * g_r + w_f * g_f).split([p.numel() for p in D.parameters()])):
                    p.grad = g.view_as(p)
                loss_d = (loss_r + loss_f).detach()
                stats.update(w_r=w_r, w_f=w_f, aw_case=case)
            elif method == "reg" and a.gamma:  # as reg_gan.py: the regularizer's forward gives the loss's logits
                reg = js_regularizer(D, real, fake)
                loss_d = bce_d_loss(reg.real_logits, reg.fake_logits)
                (loss_d + a.gamma / 2 * reg.omega).backward(inputs=list(D.parameters()))  # eq. (18): F - gamma/2 Omega
            else:
                real_logits, fake_logits = D(lensed.detach()), D(fake)  # detached: D's loss never trains the lens
                if method == "wgan-gp":
                    loss_d = fake_logits.mean() - real_logits.mean() + a.gp_lambda * gradient_penalty(D, real, fake)
                else:
                    loss_d = bce_d_loss(real_logits, fake_logits)  # eqs. (6), (7)
                loss_d.backward()
            opt_d.step()  # eq. (11) for unrolled
        if lens is not None:  # as lens_gan.py: once per iteration, on the last batch, whose L(x) has its graph
            lam = lens_lambda(step - 1, a.lens_k)
            adv_term = lam * F.softplus(D(lensed)).mean() if lam else real.new_zeros(())  # eq. (8); lambda 0: skip D
            loss_lens = adv_term + (real - lensed).pow(2).mean()  # eq. (3), L^R a per-element mean
            optimizers[2].zero_grad(set_to_none=True)
            loss_lens.backward(inputs=list(lens.parameters()))
            optimizers[2].step()
            stats.update(lens_loss=loss_lens.item(), lens_lambda=lam)
        # ALGO LOGIC: one generator update
        if method != "unrolled":
            fake_logits = D(G(noise()))
            saturating = method == "mm" or (method == "reg" and a.reg_g_loss == "mm")
            loss_g = -fake_logits.mean() if method == "wgan-gp" else bce_g_loss(fake_logits, saturating)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward(inputs=list(G.parameters()))
        opt_g.step()  # eq. (10) for unrolled
        stats.update(d_loss=loss_d.item(), g_loss=loss_g.item())

        # TRY NOT TO MODIFY: non-finite check, evaluation, snapshots
        finite = all(map(math.isfinite, stats.values()))
        if step % a.eval_every == 0 or step == a.steps or not finite:
            with torch.no_grad():
                samples, scores = G(eval_z).cpu(), D(score_x).view(-1, SCORE_SAMPLES).mean(1).cpu()
            metrics = mode_metrics(samples, dataset)
            record = {"dataset": dataset, "run": label, "method": method, "seed": seed, "step": step, **stats,
                      **metrics, "mode_logits": scores.tolist(), "time": time.time() - start}  # D's mean per mode
            records.append(record)
            print(f"{dataset} {label} seed {seed} step {step}/{a.steps} | d_loss {stats['d_loss']:.4f} | g_loss "
                  f"{stats['g_loss']:.4f} | modes {metrics['modes']} | HQ {metrics['hq']:.1f}% | reverse KL "
                  f"{metrics['reverse_kl']:.3f} | {record['time']:.0f}s", flush=True)
            snapshots.append((step, metrics, samples[:PLOT_SAMPLES], scores))
            if not finite:
                print(f"{label} seed {seed}: non-finite loss at step {step} ({stats}); run stopped", file=sys.stderr)
                break
    visited = [r["top_mode"] for r in records if r["top_share"] >= 0.5]  # evaluations with most samples on one mode
    final = {"seed": seed, **metrics, **stats, "steps_done": step, "diverged": not finite,
             "single_mode_evals": len(visited), "modes_visited": len(set(visited)), "wall_time": time.time() - start}
    return final, snapshots, records


def run_job(fn, args, job):
    """fn(args, *job) on one thread (in a worker process, or in this one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(args, *job)
    finally:
        torch.set_num_threads(threads)


def run_jobs(fn, args, jobs, cost):
    """fn(args, *job) of every job, in order: in --jobs processes of one thread each (these small MLPs gain little
    from threads), the costliest first, or in this process."""
    if args.jobs == 1 or len(jobs) == 1:
        return [run_job(fn, args, job) for job in jobs]
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {i: pool.submit(run_job, fn, args, jobs[i]) for i in sorted(range(len(jobs)), key=lambda i: -cost[i])}
        return [futures[i].result() for i in range(len(jobs))]


# ------------------------------------------------------------ Gulrajani et al. Fig. 1: critics, generator held fixed
# gan_toy.py's data scales: its 8 Gaussians are Metz's ring (radius 2, std 0.02) / 1.414, its 25 the grid / 2.828;
# their size against the fixed generator's unit noise is what the value surfaces show, so this preset keeps them
GAN_TOY_SCALE = {"ring8": 2 / 1.414, "grid25": 1 / 2.828}
FIG1A_CLIP = 0.01  # WGAN's c, gan_toy.py's clip range
FIG1B_CLIPS = (0.1, 0.01, 0.001)  # Fig. 1b's thresholds
FIG1B_LAYERS, FIG1B_WIDTH = 12, 128  # the depth read off Fig. 1b's x-axis (the text gives none); 128 wide for a CPU
GRID_POINTS, GRID_RANGE = 128, 3.0  # gan_toy.py's N_POINTS and RANGE of the value-surface plots
PANELS = {f"clip {FIG1A_CLIP}": f"weight clipping c = {FIG1A_CLIP}", "gp": "gradient penalty"}  # figure rows, titles


def swiss_roll(n, noise=0.25, generator=None):
    """gan_toy.py's Swiss roll without scikit-learn: make_swiss_roll(n, noise=0.25)'s (t cos t, t sin t) with
    t = 1.5 pi (1 + 2u), u ~ U[0, 1], plus N(0, noise^2) per coordinate (its coordinates 0 and 2), divided by 7.5."""
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
    return (torch.stack([t * t.cos(), t * t.sin()], 1) + noise * torch.randn(n, 2, generator=generator)) / 7.5


def gan_toy_data(name, n, generator=None):
    """A batch of gan_toy.py's 8gaussians, 25gaussians or swissroll."""
    if name == "swissroll":
        return swiss_roll(n, generator=generator)
    return GAN_TOY_SCALE[name] * sample_mixture(name, n, generator)


def fixed_generator(real, generator=None):
    """gan_toy.py's FIXED_GENERATOR, "real data plus Gaussian noise, as in the plots in the paper": the same batch
    plus N(0, I). It has no parameters: training the critic cannot move it."""
    return real + torch.randn(real.shape, generator=generator)


def clip_weights(critic, c):
    """WGAN's Lipschitz constraint (Arjovsky et al. 2017, Algorithm 1 line 7): every critic parameter, biases
    included (gan_toy.py clips all of them), clipped to [-c, c] after each critic step."""
    with torch.no_grad():
        for p in critic.parameters():
            p.clamp_(-c, c)


def layer_gradient_norms(critic):
    """||dL/dW_l|| of each linear layer's weight matrix, input side first: our reading of Fig. 1b's "gradient norm"
    per discriminator layer."""
    return torch.stack([m.weight.grad.norm() for m in critic if isinstance(m, nn.Linear)]).tolist()  # one read


def resolved_modes(critic, means, ring):
    """How many modes are peaks of the critic's value surface: above the point between it and every adjacent mode
    (at the smallest distance between means), on the circle for a ring (else a ring-shaped ridge would count),
    on the segment for a grid. A critic that sees only the data's mean and spread resolves none."""
    distance = torch.cdist(means, means)
    adjacent = (distance - distance[distance > 0].min()).abs() < 1e-4
    with torch.no_grad():
        at_mode, count = critic(means), 0
        for i in range(len(means)):
            between = (means[i] + means[adjacent[i]]) / 2
            if ring:
                between = between * means[i].norm() / between.norm(dim=1, keepdim=True)
            count += bool((at_mode[i] > critic(between) + 1e-6 * (1 + at_mode[i].abs())).all())  # above rounding
        return count


def train_critic(args, dataset, constraint, seed, layers, width):
    """A WGAN critic trained alone against gan_toy.py's FIXED_GENERATOR (real data plus N(0, I) noise), as for the
    paper's Fig. 1: L_D = D(x~) - D(x) + the constraint, ("clip", c): RMSProp 5e-5 and weight clipping (gan_toy.py's
    wgan mode; PyTorch's RMSprop, as the WGAN authors' PyTorch code), or ("gp", lambda): eq. (3) with Adam."""
    kind, value = constraint
    torch.manual_seed(seed)
    D = mlp(2, *[width] * layers, 1, activation="relu", final=[nn.Flatten(0)])
    if kind == "clip":
        optimizer = torch.optim.RMSprop(D.parameters(), lr=5e-5)
    else:
        optimizer = torch.optim.Adam(D.parameters(), lr=args.lr_d, betas=(args.beta1, args.beta2))
    data, start, norms = torch.Generator().manual_seed(seed), time.time(), []
    for step in range(1, args.steps + 1):
        real = gan_toy_data(dataset, args.batch_size, data)
        fake = fixed_generator(real, data)
        loss = D(fake).mean() - D(real).mean()
        if kind == "gp":
            loss = loss + value * gradient_penalty(D, real, fake)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step > args.steps * 0.9:  # Fig. 1b: the norms over the last tenth of training, averaged in log space
            norms.append(layer_gradient_norms(D))
        optimizer.step()
        if kind == "clip":
            clip_weights(D, value)
    real = gan_toy_data(dataset, 10000, torch.Generator().manual_seed(seed + 10**6))
    fake = fixed_generator(real, torch.Generator().manual_seed(seed + 2 * 10**6))
    axis = torch.linspace(-GRID_RANGE, GRID_RANGE, GRID_POINTS)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        result = {"dataset": dataset, "constraint": f"{kind} {value}", "seed": seed, "layers": layers,
                  "width": width, "steps": args.steps, "w_estimate": (D(real).mean() - D(fake).mean()).item(),
                  "surface": D(grid).view(GRID_POINTS, GRID_POINTS).T.tolist()}
    x = real[:1000].requires_grad_(True)
    result["input_grad_norm"] = torch.autograd.grad(D(x).sum(), x)[0].norm(dim=1).mean().item()
    log_norms = torch.tensor(norms).clamp_min(1e-30).log10().mean(0)
    weights = torch.cat([m.weight.detach().flatten() for m in D if isinstance(m, nn.Linear)])
    result |= {"log10_grad_norms": log_norms.tolist(), "weights": weights[:: max(len(weights) // 20000, 1)].tolist(),
               "wall_time": time.time() - start}
    if dataset != "swissroll":
        means = GAN_TOY_SCALE[dataset] * mixture_means(dataset)
        result["resolved_modes"] = resolved_modes(D, means, ring=dataset == "ring8")
    return result


def critic_jobs(args):
    """Fig. 1a: per dataset, clipping (c = 0.01) and the penalty, gan_toy.py's critic; Fig. 1b: on the Swiss roll, a
    deep critic with each clipping threshold and with the penalty."""
    constraints = (("clip", FIG1A_CLIP), ("gp", args.gp_lambda))
    fig1a = [(ds, c, s, args.layers, args.width) for ds in args.dataset for c in constraints for s in args.seeds]
    fig1b = [("swissroll", c, s, FIG1B_LAYERS, FIG1B_WIDTH)
             for c in [("clip", c) for c in FIG1B_CLIPS] + [("gp", args.gp_lambda)] for s in args.seeds]
    return fig1a + fig1b


def at_extremes(weights):
    """Share of the weights within 1 % of the largest |w|: all clipped weights when clipping binds (Fig. 1b right)."""
    w = torch.tensor(weights).abs()
    return (w >= 0.99 * w.max()).double().mean().item()


def plot_critics(run_dir, results, datasets):
    """Fig. 1a: value surfaces (first seed), clipping above the penalty, one column per dataset, real points orange,
    fixed-generator points green; Fig. 1b: per-layer gradient norms of the deep critic on the Swiss roll (mean over
    seeds, min to max shaded) and its weight histograms under clipping (c = 0.01) and the penalty."""
    fig = Figure(figsize=(3.2 * len(datasets), 6.6), layout="constrained")
    axes = fig.subplots(2, len(datasets), squeeze=False)
    for c, ds in enumerate(datasets):
        real = gan_toy_data(ds, 400, torch.Generator().manual_seed(0))
        fake = fixed_generator(real, torch.Generator().manual_seed(1))
        for r, (name, title) in enumerate(PANELS.items()):
            res = next(x for x in results if x["dataset"] == ds and x["constraint"].startswith(name)
                       and x["layers"] != FIG1B_LAYERS)
            ax, axis = axes[r][c], torch.linspace(-GRID_RANGE, GRID_RANGE, GRID_POINTS)
            ax.contour(axis.numpy(), axis.numpy(), res["surface"], levels=20, linewidths=0.6)
            ax.scatter(*fake.T.numpy(), s=1, c="tab:green"), ax.scatter(*real.T.numpy(), s=1, c="tab:orange")
            ax.set_aspect("equal"), ax.tick_params(labelsize=6)
            peaks = f", {res['resolved_modes']} modes resolved" if "resolved_modes" in res else ""
            ax.set_title(f"{ds}: {title}{peaks}", fontsize=8)
    fig.suptitle("Critic value surfaces, generator fixed at data + N(0, 1) (orange: data, green: it)", fontsize=10)
    save_figure(fig, run_dir / "fig1a_value_surfaces.png")
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1.3, 1])
    ax = left.subplots()
    deep = [x for x in results if x["layers"] == FIG1B_LAYERS]
    for name in dict.fromkeys(x["constraint"] for x in deep):
        norms = torch.tensor([x["log10_grad_norms"] for x in deep if x["constraint"] == name])
        layer = range(1, norms.shape[1] + 1)
        ax.plot(layer, norms.mean(0), marker="o", markersize=3, label=name.replace("gp", "gradient penalty, lambda"))
        ax.fill_between(layer, norms.min(0).values, norms.max(0).values, alpha=0.2)
    ax.set_xlabel("critic layer (input side first)"), ax.set_ylabel("log10 ||dL/dW||"), ax.legend(fontsize=7)
    ax.set_title(f"Swiss roll, {FIG1B_LAYERS} hidden layers of {FIG1B_WIDTH}: gradient norm per layer", fontsize=9)
    for ax, (name, title) in zip(right.subplots(2, 1), PANELS.items()):
        weights = next(x["weights"] for x in deep if x["constraint"].startswith(name))
        ax.hist(weights, bins=100, color="tab:blue"), ax.tick_params(labelsize=6)
        ax.set_title(f"weights, {title}", fontsize=8)
    save_figure(fig, run_dir / "fig1b_gradient_norms.png")


def critic_summary(results):
    """Per (figure, dataset, constraint): mean and std over seeds of the numbers behind Fig. 1."""
    rows = {}
    for x in results:
        key = f"{'fig1b' if x['layers'] == FIG1B_LAYERS else 'fig1a'} {x['dataset']} {x['constraint']}"
        rows.setdefault(key, []).append(x)
    summary = {}
    for key, runs in rows.items():
        entry = {"seeds": [x["seed"] for x in runs], "wall_time": sum(x["wall_time"] for x in runs)}
        values = {"w_estimate": [x["w_estimate"] for x in runs],
                  "input_grad_norm": [x["input_grad_norm"] for x in runs],
                  "weights_at_extremes": [at_extremes(x["weights"]) for x in runs],
                  "log10_grad_norm_first": [x["log10_grad_norms"][0] for x in runs],
                  "log10_grad_norm_last": [x["log10_grad_norms"][-1] for x in runs]}
        if "resolved_modes" in runs[0]:
            values["resolved_modes"] = [x["resolved_modes"] for x in runs]
        for name, v in values.items():
            entry |= {name: statistics.fmean(v), name + "_std": statistics.stdev(v) if len(v) > 1 else 0.0,
                      name + "_per_seed": v}
        summary[key] = entry
    return summary


# ----------------------------------------------------------------------------------------------- reporting
def plane_coordinates(points):
    """ring7-3d samples in the coordinates of the mixture's plane (undo the translation and the rotation)."""
    return ((points - TRANSLATION_3D) @ ROTATION_3D)[:, :2]


def plot_snapshots(path, dataset, rows, scores=False, title=""):
    """Metz et al. Fig. 2 style: per run a row of generated samples at several steps beside the target; with scores,
    under each a row of D's mean logit on each mode's real points (the aw paper's Fig. 6)."""
    project = plane_coordinates if dataset == "ring7-3d" else (lambda x: x)
    target = project(sample_mixture(dataset, PLOT_SAMPLES, torch.Generator().manual_seed(0)))
    means = project(mixture_means(dataset))
    lim = 1.6 if dataset != "grid25" else 6.0
    columns, per_run = SNAPSHOTS + 1, 2 if scores else 1
    fig = Figure(figsize=(2.3 * columns, 2.4 * len(rows) * per_run), layout="constrained")
    axes = fig.subplots(len(rows) * per_run, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (label, snaps) in enumerate(rows):
        if len(snaps) > SNAPSHOTS:
            snaps = [snaps[round(i * (len(snaps) - 1) / (SNAPSHOTS - 1))] for i in range(SNAPSHOTS)]
        cells = [(c, f"step {s}: {m['modes']}/{len(means)} modes\nHQ {m['hq']:.0f}%, reverse KL {m['reverse_kl']:.2f}",
                  project(x), "tab:blue") for c, (s, m, x, _) in enumerate(snaps)]
        cells += [(columns - 1, "target", target, "tab:red")]
        for c, cell_title, points, color in cells:
            ax = axes[r * per_run][c]
            ax.axis("on"), ax.set_xlim(-lim, lim), ax.set_ylim(-lim, lim), ax.set_aspect("equal")
            ax.tick_params(labelsize=6)
            ax.scatter(means[:, 0], means[:, 1], s=14, c="none", edgecolors="gray", linewidths=0.6)
            ax.scatter(points[:, 0], points[:, 1], s=1, c=color, alpha=0.5)
            ax.set_title(cell_title, fontsize=7)
        axes[r * per_run][0].set_ylabel(label, fontsize=10, fontweight="bold")
        if scores:
            low = min(float(v.min()) for *_, v in snaps)
            high = max(float(v.max()) for *_, v in snaps)
            for c, (s, _, _, v) in enumerate(snaps):
                ax = axes[r * per_run + 1][c]
                ax.axis("on"), ax.tick_params(labelsize=6), ax.set_ylim(min(low, 0) - 0.5, max(high, 0) + 0.5)
                ax.bar(range(1, len(v) + 1), v.numpy(), color="tab:green")
                ax.axhline(0, color="gray", linewidth=0.5)
                ax.set_title(f"step {s}: mean D logit per mode", fontsize=7)
            axes[r * per_run + 1][0].set_ylabel(f"{label}: D scores", fontsize=9)
    fig.suptitle(title or f"toy2d on {dataset}" + (" (in-plane coordinates)" if dataset == "ring7-3d" else ""),
                 fontsize=11)
    save_figure(fig, path)


def save_figure(fig, path):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    Image.open(buffer).convert("RGB").quantize(64).save(path, optimize=True)  # a palette: small enough to commit


def pick_device(name):
    try:
        device = torch.device(name)
    except RuntimeError:
        fail(f"unknown device {name!r}")
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, True):
        fail(f"device {name!r} is not available on this machine")
    return device


def new_run_dir(args):
    name = f"{'-'.join(args.dataset)}__toy2d-{args.preset or args.method}__{int(time.time())}"
    for n in range(1000):  # runs started in the same second get _1, _2, ...
        run_dir = Path(args.out_dir) / (f"{name}_{n}" if n else name)
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue
        except OSError as e:  # --out-dir is a file, not writable, ...
            fail(f"cannot create a run directory under {args.out_dir}: {e.strerror or e}")
    fail(f"cannot create a run directory under {args.out_dir}")


COST = {"unrolled": 6, "wgan-gp": 5, "reg": 2, "aw": 2, "lens": 2}  # rough time per step, to start the long runs first


def main(argv=None):
    args = parse_args(argv)
    pick_device(args.device)
    run_dir, start = new_run_dir(args), time.time()
    if args.preset and PRESETS[args.preset].get("critic_only"):
        return critic_study(args, run_dir, start)
    runs = runs_of(args)
    jobs = [(label, method, overrides, seed, dataset)
            for dataset in args.dataset for label, method, overrides in runs for seed in args.seeds]
    print(f"toy2d: {', '.join(label for label, *_ in runs_of(args))} on {', '.join(args.dataset)}, seeds {args.seeds}, "
          f"{args.steps} steps, {min(args.jobs, len(jobs))} job(s) on {args.device}; run directory {run_dir}",
          flush=True)
    cost = [COST.get(m, 1) * (max(o.get("unroll_steps", args.unroll_steps), 1) if m == "unrolled" else 1)
            for _, m, o, _, _ in jobs]
    done = run_jobs(train, args, jobs, cost)
    results, records = {}, []
    for dataset in args.dataset:
        results[dataset], rows = {}, []
        for label, method, overrides in runs:
            seed_runs = [done[jobs.index((label, method, overrides, seed, dataset))] for seed in args.seeds]
            records += [r for _, _, recs in seed_runs for r in recs]
            rows.append((label, seed_runs[0][1]))
            finals = [final for final, _, _ in seed_runs]
            entry = {"method": method, "overrides": overrides, "per_seed": finals,
                     "wall_time": sum(f["wall_time"] for f in finals)}
            for key in ("modes", "hq", "reverse_kl"):  # mean and sample std over the seeds
                values = [f[key] for f in finals]
                entry |= {key: statistics.fmean(values),
                          key + "_std": statistics.stdev(values) if len(values) > 1 else 0.0}
            entry["collapsed"] = sum(collapsed(f["reverse_kl"], len(mixture_means(dataset))) for f in finals)
            results[dataset][label] = entry
        about = PRESETS[args.preset]["about"] if args.preset else ""
        plot_snapshots(run_dir / f"toy2d_{dataset}.png", dataset, rows,
                       scores=bool(args.preset and PRESETS[args.preset].get("scores")),
                       title=f"{about} ({dataset})" if about else "")
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {"run_dir": str(run_dir), "datasets": args.dataset,
               "n_modes": {ds: len(mixture_means(ds)) for ds in args.dataset},
               "settings": vars(args), "results": results, "wall_time": time.time() - start}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return summary


def critic_study(args, run_dir, start):
    """--preset gulrajani: Fig. 1a and 1b (critic_jobs), in parallel processes of one thread each."""
    jobs = critic_jobs(args)
    print(f"toy2d: {len(jobs)} critics (Gulrajani et al. Fig. 1), {args.steps} steps each, {min(args.jobs, len(jobs))} "
          f"job(s); run directory {run_dir}", flush=True)
    cost = [layers * width**2 * (3 if kind == "gp" else 1) for _, (kind, _), _, layers, width in jobs]
    results = run_jobs(train_critic, args, jobs, cost)
    plot_critics(run_dir, results, args.dataset)
    records = [{k: v for k, v in r.items() if k not in ("surface", "weights")} for r in results]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {"run_dir": str(run_dir), "datasets": args.dataset, "settings": vars(args),
               "results": critic_summary(results), "wall_time": time.time() - start}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
