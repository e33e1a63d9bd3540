"""Adaptive Weighted Discriminator: the aw-loss (Algorithm 1) on the SN-GAN.

Zadorozhnyy, Cheng, Ye, "Adaptive Weighted Discriminator for Training Generative Adversarial Networks", CVPR 2021,
https://arxiv.org/abs/2012.03149. D's loss is a sum of a real part L_r and a fake part L_f. A step along the gradient
of the equal sum can lower one part while it raises the other (their gradients are mostly at an obtuse angle, the
paper's Fig. 4), so the aw-loss weights the two parts anew at every D step from their gradients and D's mean scores:

    L_D = w_r * L_r + w_f * L_f                                                            (2)
    --loss hinge  L_r = E relu(1 - D(x)),   L_f = E relu(1 + D(G(z)))     L_G = -E D(G(z))          (7)  [default]
    --loss gan    L_r = -E log D(x),        L_f = -E log(1 - D(G(z)))     L_G = -E log D(G(z))      (1)

g_r, g_f: gradients of L_r, L_f w.r.t. all of D's parameters; s_r, s_f: mean sigmoid(D(.)) of the real and fake batch
(sigmoid of the raw output, also under hinge); rr = |g_r|^2 + 1e-4, ff = |g_f|^2 + 1e-4, rf = <g_r, g_f>,
|g_r| = sqrt(rr), |g_f| = sqrt(ff). Algorithm 1 (aw_weights), then eps is added to both weights:

    s_r < alpha1 or s_r < s_f - delta  favour real  rf <= 0: w_r = 1/|g_r|, w_f = -rf/(ff |g_r|)  case 1 (Thm. 2 case 2)
                                                    rf > 0:  w_r = 1/|g_r|, w_f = 0               case 2
    s_r > alpha2 and s_r > s_f - delta favour fake  rf <= 0: w_r = -rf/(rr |g_f|), w_f = 1/|g_f|  case 3 (Thm. 2 case 3)
                                                    rf > 0:  w_r = 0, w_f = 1/|g_f|               case 4
    otherwise                          bisector     w_r = 1/|g_r|, w_f = 1/|g_f|                  case 5 (Thm. 2 case 1)

--no-normalize is Algorithm 2: 1/|g| -> 1 (projection weights -rf/ff, -rf/rr). The weights are numbers, not
differentiated: D's gradient is set to w_r g_r + w_f g_f. The paper maximizes L_r, L_f by gradient ascent; we minimize
their negatives, which flips both gradients and leaves rr, ff, rf and so the weights unchanged. --no-aw trains the
unweighted loss L_r + L_f from the same initial weights (the SN-GAN baseline; the angle between g_r and g_f is still
logged, the paper's Fig. 4 top).

Defaults: the paper's aw-SN-GAN, i.e. the public sngan.pytorch CIFAR-10 configuration the authors built on
(exps/sngan_cifar10.sh): ResNet G (width 256) + spectral-norm ResNet D (width 128) [--arch resnet], xavier-uniform
conv init, z-dim 128, Adam lr 2e-4 betas (0.0, 0.9), n_critic 5, D batch 64, G batch 128, 50,000 G steps (= the paper's
320 epochs), lr decaying linearly to 0 (the aw paper's Sec. 3; sngan.pytorch's script keeps it constant:
--lr-decay-steps 0), G's weights averaged for samples and FID (--ema-decay 0.999, sngan.pytorch); alpha1 0.5,
alpha2 0.75, delta 0.05, eps 0.05 (Sec. 3). --arch cnn is the SN-GAN paper's "standard CNN" (Miyato et al. 2018,
Table 3: lReLU 0.1; widths 64/512) with N(0, 0.02) init, not Radford et al.'s DCGAN.

Usage: python aw_gan.py --dataset cifar10 --data-root data
"""
import argparse
import copy
import datetime
import importlib.util
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
from torchvision.utils import make_grid, save_image

import fid

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # tensorboard is optional: metrics.jsonl has everything
    SummaryWriter = None


# ====================================================================================== the method: its flags
# the method's own defaults, help or choices of the skeleton's shared flags ({dest: {...}}, applied in parse_args)
SHARED_FLAG_CHANGES = {"total_steps": {"default": 50_000},
                       "batch_size": {"help": "D's batch (the G step's is --g-batch-size)"},
                       "beta1": {"default": 0.0}, "beta2": {"default": 0.9}, "n_critic": {"default": 5},
                       "z_dim": {"default": 128},
                       "ema_decay": {"default": 0.999, "help": "EMA of G's weights, for samples and FID (0 = off; "
                                                               "0.999: sngan.pytorch's functions.py)"}}


def add_method_flags(p, argv):
    """The method's own flags, after the shared ones (parse_args, in the skeleton)."""
    p.add_argument("--loss", default="hinge", choices=("hinge", "gan"),
                   help="base loss, a sum of a real and a fake part (module docstring)")
    p.add_argument("--arch", default="resnet", choices=("resnet", "cnn"), help="resnet: SN-GAN's ResNets; cnn: "
                   "SN-GAN's standard CNN (Miyato et al. 2018, Table 3; not Radford's DCGAN)")
    p.add_argument("--ngf", type=natural, default=None, help="generator width (None: 256 for resnet, 64 for cnn)")
    p.add_argument("--ndf", type=natural, default=None, help="discriminator width (None: 128 for resnet, 64 for cnn)")
    p.add_argument("--g-batch-size", type=natural, default=128,
                   help="batch of the generator update (--batch-size is D's)")
    p.add_argument("--lr-decay-steps", type=whole, default=None, help="G steps of the aw paper's linear lr decay to 0 "
                   "(None: --total-steps, fixed when the run starts; 0: constant, as sngan.pytorch)")
    p.add_argument("--aw", action=flag, default=True, help="adaptive weights; --no-aw: the unweighted loss L_r + L_f")
    p.add_argument("--normalize", action=flag, default=True, help="Algorithm 1; --no-normalize: Algorithm 2")
    p.add_argument("--alpha1", type=number(float, 0), default=0.5, help="favour the real loss while s_r < alpha1")
    p.add_argument("--alpha2", type=number(float, 0), default=0.75, help="favour the fake loss once s_r > alpha2")
    p.add_argument("--delta", type=number(float, 0), default=0.05, help="favour the real loss while s_r < s_f - delta")
    p.add_argument("--eps", type=number(float, 0), default=0.05, help="added to both weights")


def check_method_flags(p, args):
    """The method's own checks of its flags, before a resume is checked."""
    widths = {"resnet": (256, 128), "cnn": (64, 64)}[args.arch]  # sngan.pytorch gf_dim, df_dim; SN-GAN Table 3
    args.ngf = widths[0] if args.ngf is None else args.ngf
    args.ndf = widths[1] if args.ndf is None else args.ndf
    if args.lr_decay_steps is None:  # resolved here so that it is saved with the run: a resume keeps the schedule
        args.lr_decay_steps = args.total_steps
    ignored = [k for k in ("normalize", "alpha1", "alpha2", "delta", "eps") if getattr(args, k) != p.get_default(k)]
    if not args.aw and ignored:
        p.error(f"{', '.join('--' + k for k in ignored)} would be ignored: --no-aw trains the unweighted loss")
    if not 0 <= args.alpha1 < args.alpha2 <= 1:
        p.error(f"need 0 <= --alpha1 < --alpha2 <= 1 (thresholds on a probability), got {args.alpha1}, {args.alpha2}")


# ------------------------------------------------------------------------------------------------ networks
def dcgan_init(m):
    """DCGAN initialisation (Radford et al. 2016, Sec. 4): weights N(0, 0.02), BN scales N(1, 0.02)."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def sngan_init(m):
    """sngan.pytorch's --init_type xavier_uniform: conv weights xavier-uniform (gain 1), BN scales N(1, 0.02);
    linear layers and conv biases keep PyTorch's defaults."""
    if isinstance(m, nn.Conv2d):
        nn.init.xavier_uniform_(m.weight)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def spectral_norm_all(net):
    """Spectral normalization (Miyato et al. 2018) of every conv and linear layer: W / sigma(W), sigma estimated by
    one power iteration per forward pass in train mode. Call it after the init: the parametrization's first 15
    power iterations then start from the initialized weights."""
    for m in list(net.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            torch.nn.utils.parametrizations.spectral_norm(m)
    return net


class GenBlock(nn.Module):
    """SN-GAN ResNet generator block (sngan.pytorch GenBlock): BN-ReLU-upsample-conv3x3-BN-ReLU-conv3x3, plus a
    shortcut upsample-conv1x1 (nearest-neighbour upsampling by 2)."""

    def __init__(self, width):
        super().__init__()
        self.residual = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Upsample(scale_factor=2),
                                      nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, 1, 1))
        self.shortcut = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 1))

    def forward(self, x):
        return self.residual(x) + self.shortcut(x)


class DisBlock(nn.Module):
    """SN-GAN ResNet discriminator block (sngan.pytorch DisBlock, OptimizedDisBlock when first): ReLU-conv3x3-ReLU-
    conv3x3[-avgpool2], plus a shortcut conv1x1[-avgpool2] (the identity when the block keeps the shape). The first
    block reads the image: no leading ReLU, and its shortcut pools before the conv1x1."""

    def __init__(self, c_in, c_out, downsample, first=False):
        super().__init__()
        pool = [nn.AvgPool2d(2)] if downsample else []  # stateless: one module serves both paths
        self.residual = nn.Sequential(*([] if first else [nn.ReLU()]), nn.Conv2d(c_in, c_out, 3, 1, 1), nn.ReLU(),
                                      nn.Conv2d(c_out, c_out, 3, 1, 1), *pool)
        conv = [nn.Conv2d(c_in, c_out, 1)] if downsample or c_in != c_out else []
        self.shortcut = nn.Sequential(*(pool + conv if first else conv + pool))

    def forward(self, x):
        return self.residual(x) + self.shortcut(x)


class ResNetGenerator(nn.Module):
    """SN-GAN ResNet generator (sngan.pytorch models/sngan_cifar10.py): z -> linear -> 4x4 x ngf, one upsampling
    GenBlock per doubling up to S x S (3 at 32x32), BN-ReLU-conv3x3-tanh. The width stays ngf."""

    def __init__(self, z_dim, channels, image_size, ngf=256):
        super().__init__()
        self.l1 = nn.Linear(z_dim, 4 * 4 * ngf)
        self.net = nn.Sequential(*[GenBlock(ngf) for _ in range(int(math.log2(image_size)) - 2)],
                                 nn.BatchNorm2d(ngf), nn.ReLU(), nn.Conv2d(ngf, channels, 3, 1, 1), nn.Tanh())

    def forward(self, z):
        return self.net(self.l1(z).view(len(z), -1, 4, 4))


class ResNetDiscriminator(nn.Module):
    """SN-GAN ResNet discriminator (sngan.pytorch models/sngan_cifar10.py): downsampling blocks from S x S to 8x8
    (two at 32x32, the first an OptimizedDisBlock), two blocks at 8x8, ReLU, sum over space, linear without bias to
    the logit. The width stays ndf. spectral_norm_all(D) adds the spectral norm."""

    def __init__(self, channels, image_size, ndf=128):
        super().__init__()
        downs = [DisBlock(ndf, ndf, True) for _ in range(int(math.log2(image_size)) - 4)]
        self.net = nn.Sequential(DisBlock(channels, ndf, True, first=True), *downs, DisBlock(ndf, ndf, False),
                                 DisBlock(ndf, ndf, False), nn.ReLU())
        self.l5 = nn.Linear(ndf, 1, bias=False)

    def forward(self, x):
        return self.l5(self.net(x).sum((2, 3))).flatten()


class CNNGenerator(nn.Module):
    """The SN-GAN paper's standard CNN generator (Miyato et al. 2018, Table 3a): z -> linear -> 4x4 x 8 ngf (at 32x32),
    BN-ReLU, 4x4 stride-2 transposed convs halving the width down to ngf at S x S (BN-ReLU), conv3x3, tanh."""

    def __init__(self, z_dim, channels, image_size, ngf=64):
        super().__init__()
        n_up = int(math.log2(image_size)) - 2
        width = ngf * 2 ** n_up
        self.l0 = nn.Linear(z_dim, 4 * 4 * width)
        layers = [nn.BatchNorm2d(width), nn.ReLU()]
        for _ in range(n_up):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1), nn.BatchNorm2d(width // 2), nn.ReLU()]
            width //= 2
        self.net = nn.Sequential(*layers, nn.Conv2d(width, channels, 3, 1, 1), nn.Tanh())

    def forward(self, z):
        return self.net(self.l0(z).view(len(z), -1, 4, 4))


class CNNDiscriminator(nn.Module):
    """The SN-GAN paper's standard CNN discriminator (Table 3b): conv3x3 to ndf, then per halving a 4x4 stride-2 conv
    and a conv3x3 that doubles the width (64, 64, 128, 128, 256, 256, 512 at 32x32), LeakyReLU(0.1) after each, a
    linear layer from 4x4 to the logit. spectral_norm_all(D) adds the spectral norm."""

    def __init__(self, channels, image_size, ndf=64):
        super().__init__()
        layers, width = [nn.Conv2d(channels, ndf, 3, 1, 1), nn.LeakyReLU(0.1)], ndf
        for _ in range(int(math.log2(image_size)) - 2):
            layers += [nn.Conv2d(width, width, 4, 2, 1), nn.LeakyReLU(0.1),
                       nn.Conv2d(width, 2 * width, 3, 1, 1), nn.LeakyReLU(0.1)]
            width *= 2
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(4 * 4 * width, 1))

    def forward(self, x):
        return self.net(x).flatten()


# ------------------------------------------------------------------------------------------------- losses
def d_loss_parts(real_logits, fake_logits, loss):
    """The real and fake parts (L_r, L_f) of D's loss, each a mean over its batch (minimized here; the paper
    maximizes their negatives, which changes no weight of Algorithm 1)."""
    if loss == "hinge":  # eq. (7)
        return F.relu(1 - real_logits).mean(), F.relu(1 + fake_logits).mean()
    if loss == "gan":  # eq. (1): -log D(x), -log(1 - D(G(z))), from the logits
        return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)),
                F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    raise ValueError(f"unknown loss {loss!r}")


def g_loss(fake_logits, loss):
    """Generator loss, a mean over the batch."""
    if loss == "gan":  # non-saturating: -log D(G(z))
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if loss == "hinge":
        return -fake_logits.mean()
    raise ValueError(f"unknown loss {loss!r}")


# ----------------------------------------------------------- adaptive weights (Algorithms 1, 2), the lr decay


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


def gradient_angle(products):
    """The angle between g_r and g_f in degrees (the paper's Fig. 4), from gradient_products. Undefined when a
    gradient vanishes: it then reads 90, and aw_d_step flags the update in `grad_vanished`."""
    rr, ff, rf = products
    cos = rf / (rr * ff).sqrt().clamp_min(1e-30)
    return torch.rad2deg(torch.acos(cos.clamp(-1, 1)))


def aw_d_step(D, optimizer, real, fake, loss="hinge", aw=True, **aw_args):
    """One update of D with the aw-loss (2). L_r and L_f are differentiated separately, two backward passes and no
    third one: D's gradient is set to w_r g_r + w_f g_f, the gradient of (2) with the weights held constant.
    aw=False: w_r = w_f = 1, the gradient of L_r + L_f. Returns the update's statistics as 0-d tensors."""
    params = list(D.parameters())
    real_logits, fake_logits = D(real), D(fake)  # two passes as in sngan.pytorch: each runs one SN power iteration
    loss_real, loss_fake = d_loss_parts(real_logits, fake_logits, loss)
    grad_real, grad_fake = (torch.cat([g.flatten() for g in torch.autograd.grad(part, params)])
                            for part in (loss_real, loss_fake))
    s_r, s_f = torch.sigmoid(real_logits.detach()).mean(), torch.sigmoid(fake_logits.detach()).mean()  # hinge too
    products = gradient_products(grad_real, grad_fake)
    stats = {"d_loss": (loss_real + loss_fake).detach(), "s_r": s_r, "s_f": s_f, "angle": gradient_angle(products),
             "grad_vanished": (products[:2] == 0).any().float()}
    w_r, w_f = 1.0, 1.0
    if aw:
        rr, ff, rf, s_r_, s_f_ = torch.cat([products, torch.stack([s_r, s_f])]).tolist()  # this D step's one transfer
        w_r, w_f, case = aw_weights((rr, ff, rf), s_r_, s_f_, **aw_args)
        stats |= {"w_r": s_r.new_full((), w_r), "w_f": s_r.new_full((), w_f)}  # fills, not host-to-device copies
        stats |= {f"case{c}": s_r.new_full((), float(c == case)) for c in range(1, 6)}
    grad = w_r * grad_real + w_f * grad_fake  # eq. (2)
    for p, g in zip(params, grad.split([p.numel() for p in params])):
        p.grad = g.view_as(p)
    optimizer.step()
    return stats


def lr_factor(step, decay_steps):
    """The aw paper's linear decay to 0 (Sec. 3: "we implement a linear learning rate decay") after `step` generator
    updates; decay_steps 0: constant, as sngan.pytorch's own CIFAR-10 script (exps/sngan_cifar10.sh at 947737d does
    not pass --lr_decay; its LinearLrDecay, when on, counts D updates: the same line)."""
    return max(0.0, 1 - step / decay_steps) if decay_steps else 1.0


# ========================================================================================== the training loop
def main(argv=None):
    args, ckpt = parse_args(argv)
    device = pick_device(args.device)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.backends.cudnn.benchmark = not args.torch_deterministic
    dataset, channels = training_data(args)

    # networks and optimizers (G first, then D: the same seed gives the same initial weights)
    Generator, Discriminator, init = {"resnet": (ResNetGenerator, ResNetDiscriminator, sngan_init),
                                      "cnn": (CNNGenerator, CNNDiscriminator, dcgan_init)}[args.arch]
    G = Generator(args.z_dim, channels, args.image_size, args.ngf).to(device)
    D = Discriminator(channels, args.image_size, args.ndf).to(device)
    G.apply(init)
    D.apply(init)
    spectral_norm_all(D)
    models = {"G": G, "D": D}
    optimizers = {"G": torch.optim.Adam(G.parameters(), lr=args.lr_g, betas=(args.beta1, args.beta2)),
                  "D": torch.optim.Adam(D.parameters(), lr=args.lr_d, betas=(args.beta1, args.beta2))}
    aw_args = dict(alpha1=args.alpha1, alpha2=args.alpha2, delta=args.delta, eps=args.eps, normalized=args.normalize)

    run = Run(args, ckpt, dataset, device, models, optimizers)  # EMA, resume, evaluator (the skeleton's class Run)
    if args.generate or args.evaluate:
        return run.use_checkpoint()
    with run:  # the run directory and its files, Ctrl-C; the last checkpoint, and every file closed at the end
        for step in run.steps():
            # lrs of this step, n_critic aw discriminator updates on fresh real batches, one G update
            for name, lr in (("G", args.lr_g), ("D", args.lr_d)):
                for group in optimizers[name].param_groups:
                    group["lr"] = lr * lr_factor(step, args.lr_decay_steps)
            d_updates = []
            for _ in range(args.n_critic):
                real = next(run.batches)
                with torch.no_grad():
                    fake = G(torch.randn(args.batch_size, args.z_dim, device=device))
                d_updates.append(aw_d_step(D, optimizers["D"], real, fake, args.loss, args.aw, **aw_args))
            loss_g = g_loss(D(G(torch.randn(args.g_batch_size, args.z_dim, device=device))), args.loss)
            optimizers["G"].zero_grad(set_to_none=True)
            loss_g.backward(inputs=list(G.parameters()))  # G's gradients only: D's would be thrown away
            optimizers["G"].step()
            # D's statistics: means over this step's n_critic updates; case<k>, grad_vanished: how many of them took
            # case k, had a zero gradient
            d_stats = {k: torch.stack([u[k] for u in d_updates]) for k in d_updates[0]}
            counted = lambda k: k.startswith("case") or k == "grad_vanished"  # noqa: E731
            losses = {"g_loss": loss_g, **{k: v.sum() if counted(k) else v.mean() for k, v in d_stats.items()}}
            run.log_step(losses)  # then EMA, logs, samples, evaluation, checkpoints
    return run.summary()


# ===== everything below this line is the same in every cleangan script: the shared skeleton =============
# (its text is one, character for character, in gan.py, lens_gan.py, aw_gan.py, reg_gan.py, unrolled_gan.py and
# wgan_gp.py: tests/test_skeleton.py; a fix made here is made in all six)


# ------------------------------------------------------------------------------------------ flags and errors
def parse_args(argv=None):
    """The shared flags (with this method's SHARED_FLAG_CHANGES), then the method's own (add_method_flags), checked
    (check_method_flags); with --resume the checkpoint, whose flags are the defaults. Returns (args, checkpoint)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.error = fail  # one error line instead of argparse's usage dump

    def add(option, **spec):  # a shared flag, with this method's own default, help or choices where it has them
        p.add_argument(option, **spec | SHARED_FLAG_CHANGES.get(option[2:].replace("-", "_"), {}))

    add("--exp-name", default=Path(__file__).stem, help="name of the experiment (part of the run directory)")
    add("--seed", type=int, default=1, help="seed of the experiment")
    add("--torch-deterministic", action=flag, default=True,
        help="set torch.backends.cudnn.deterministic (and disable cudnn.benchmark)")
    add("--device", default="auto", help="auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps")
    add("--track", action=flag, default=False, help="log to Weights & Biases")
    add("--wandb-project-name", default="cleangan", help="wandb project")
    add("--wandb-entity", default=None, help="wandb entity (team)")
    add("--out-dir", default="runs", help="parent folder of the run directories")
    add("--resume", default=None,
        help="checkpoint.pt to continue from; auto: the newest run of the same dataset/exp-name/seed")
    add("--dataset", default="cifar10", choices=tuple(DATA_FILES),
        help="training data (folder: an ImageFolder tree at --data-root)")
    add("--data-root", default="data", help="dataset folder (downloads go here)")
    add("--download", action=flag, default=True, help="download the dataset if missing")
    add("--image-size", type=int, default=32, choices=(16, 32, 64, 128, 256), help="image side")
    add("--num-workers", type=whole, default=2, help="data loader processes (decoding once when in memory)")
    add("--stream-data", action=flag, default=False,
        help="stream batches from disk even when the data fits in memory (IN_MEMORY_LIMIT)")
    add("--total-steps", type=natural, default=100_000, help="generator updates")
    add("--batch-size", type=natural, default=64, help="images per batch of D and of G")
    add("--lr-g", type=number(float, 0, strict=True), default=2e-4, help="generator learning rate")
    add("--lr-d", type=number(float, 0, strict=True), default=2e-4, help="discriminator learning rate")
    add("--beta1", type=number(float, 0, 1), default=0.5, help="Adam beta1")
    add("--beta2", type=number(float, 0, 1), default=0.999, help="Adam beta2")
    add("--n-critic", type=natural, default=1, help="discriminator updates per generator update")
    add("--z-dim", type=natural, default=100, help="latent dimension")
    add("--log-every", type=natural, default=100, help="steps between metrics lines")
    add("--sample-every", type=whole, default=1000, help="steps between sample grids (0: at the end)")
    add("--eval-every", type=whole, default=0, help="steps between evaluations (0 = none)")
    add("--fid-samples", type=natural, default=10_000, help="generated (and reference) images per FID")
    add("--fid-weights", default=None,
        help="local pt_inception-2015-12-05-6726825d.pth (default: torch.hub)")
    add("--fid", action=flag, default=True, help="FID and IS at --eval-every / --evaluate (need the "
        "Inception weights); --no-fid: the classifier metrics only (mnist family)")
    add("--classifier-samples", type=natural, default=26_000,
        help="samples of the MNIST-classifier metrics (mnist family; Metz et al.: 26,000)")
    add("--checkpoint-every", type=whole, default=1000,
        help="steps between checkpoints (0: only the one always written at the end)")
    add("--ema-decay", type=number(float, 0, 1), default=0.0,
        help="EMA of G's weights, used for samples and FID (0 = off; sngan.pytorch: 0.999)")
    add("--generate", type=natural, nargs="?", const=50_000, default=None, metavar="N",
        help="with --resume, no training: write N samples (default 50,000) as PNGs to --generate-dir")
    add("--generate-dir", default=None, help="new folder for --generate (default: in the run directory)")
    add("--evaluate", type=natural, nargs="?", const=50_000, default=None, metavar="N",
        help="with --resume, no training: FID and IS of N samples (default 50,000) against N real images")
    add_method_flags(p, argv)
    ckpt = checkpoint_defaults(p, argv)
    args = p.parse_args(argv)
    if (args.generate or args.evaluate) and not args.resume:
        p.error(f"--{'generate' if args.generate else 'evaluate'} N needs --resume CHECKPOINT")
    if args.generate_dir and not args.generate:
        p.error("--generate-dir is only used with --generate N")
    if (args.eval_every or args.evaluate) and not args.fid and args.dataset not in ("mnist", "stacked-mnist"):
        p.error(f"--no-fid leaves nothing to evaluate on {args.dataset} (classifier metrics: mnist, stacked-mnist)")
    if args.track and not importlib.util.find_spec("wandb"):
        p.error("--track needs wandb: pip install wandb")
    check_method_flags(p, args)
    check_resume(args, ckpt)
    return args, ckpt


def fail(message, code=2):
    """One clear error line and a non-zero exit, never a traceback (2 = bad input, as argparse)."""
    print(f"{Path(__file__).name}: error: {message}", file=sys.stderr)
    sys.exit(code)


def number(cast, low, high=math.inf, strict=False):
    """An argparse type: a finite number (int or float) in [low, high), or in (low, high) when strict."""
    def parse(text):
        value = cast(text)
        if not (math.isfinite(value) and (low < value if strict else low <= value) and value < high):
            bound = (f"in {'(' if strict else '['}{low}, {high})" if high < math.inf
                     else f"{'>' if strict else '>='} {low}")
            raise argparse.ArgumentTypeError(f"must be {'a finite number ' * (cast is float)}{bound}, got {text}")
        return value
    parse.__name__ = cast.__name__  # argparse's "invalid int value"
    return parse


# argparse types of the flags: --x / --no-x, an int > 0, an int >= 0
flag, natural, whole = argparse.BooleanOptionalAction, number(int, 0, strict=True), number(int, 0)


def reason(e, last=False):
    """An exception in one line: an OS error's reason, else its message's first (or last) line, else its type."""
    lines = str(e).strip().splitlines()
    return getattr(e, "strerror", None) or (lines[-1 if last else 0] if lines else type(e).__name__)


# ---------------------------------------------------------------------------------------------------- data
class StackedMNIST(torch.utils.data.Dataset):
    """Three independent MNIST digits as the R, G, B channels: 1,000 modes (Metz et al. 2017 Sec. 3.3, lens paper
    Sec. 4.1.2), the digit triples drawn once from the seed."""

    def __init__(self, mnist, seed):
        self.mnist = mnist
        self.triples = torch.randint(len(mnist), (len(mnist), 3), generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.triples)

    def __getitem__(self, i):
        digits = [self.mnist[j] for j in self.triples[i].tolist()]
        return torch.cat([image for image, _ in digits]), 100 * digits[0][1] + 10 * digits[1][1] + digits[2][1]


# the datasets, and what each needs under --data-root (torchvision's layout), named when it is missing
DATA_FILES = {"mnist": "MNIST/raw/train-images-idx3-ubyte", "fashion-mnist": "FashionMNIST/raw/train-images-idx3-ubyte",
              "cifar10": "cifar-10-batches-py/data_batch_1", "cifar100": "cifar-100-python/train",
              "stl10": "stl10_binary/unlabeled_X.bin", "celeba": "celeba/img_align_celeba/",
              "stacked-mnist": "MNIST/raw/train-images-idx3-ubyte", "folder": "<class>/<image>"}


def make_dataset(args):
    """The training set as uint8 images (C, S, S) (`to_model_range` makes them [-1, 1] on the device); one error
    line naming the files expected and where when it is missing (a failed download leaves no folder behind)."""
    size, root, download, sets = args.image_size, args.data_root, args.download, torchvision.datasets
    resize = T.Compose([T.Resize(size), T.CenterCrop(size), T.PILToTensor()])
    digits = T.Compose(([] if size == 28 else [T.Pad(2)])  # 28 -> 32 (28: MNIST's own size, unrolled's --arch metz)
                       + ([] if size in (28, 32) else [T.Resize(size)]) + [T.PILToTensor()])
    make = {"mnist": lambda: sets.MNIST(root, True, digits, download=download),
            "fashion-mnist": lambda: sets.FashionMNIST(root, True, digits, download=download),
            "cifar10": lambda: sets.CIFAR10(root, True, resize, download=download),
            "cifar100": lambda: sets.CIFAR100(root, True, resize, download=download),
            "stl10": lambda: sets.STL10(root, "train+unlabeled", transform=resize, download=download),
            "celeba": lambda: sets.CelebA(root, "train", transform=T.Compose([T.CenterCrop(108), resize]),
                                          download=download),  # crop 108, DCGAN-tensorflow's convention
            "stacked-mnist": lambda: StackedMNIST(sets.MNIST(root, True, digits, download=download), args.seed),
            "folder": lambda: sets.ImageFolder(root, T.Compose([lambda image: image.convert("RGB"), resize]))}
    parts = Path(DATA_FILES[args.dataset]).parts
    made = [d for d in (Path(root, *parts[:i]) for i in range(len(parts) - 1, -1, -1)) if not d.exists()]
    try:
        return make[args.dataset]()
    except Exception:  # torchvision raises RuntimeError, OSError, URLError, ... for missing or undownloadable data
        for folder in made:  # the folders a failed download created, deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        how = ("" if args.dataset == "folder" else " (the download failed: no internet?)" if download
               else " (or --download on a machine with internet)")
        fail(f"no {args.dataset} data at {os.path.join(os.path.abspath(root), DATA_FILES[args.dataset])}: put the "
             f"files there{how}, or point --data-root at the folder that holds them")


def to_model_range(images):
    """uint8 [0, 255] -> float [-1, 1] with the operations of ToTensor + Normalize(0.5, 0.5): the same bits."""
    return images.float().div(255).sub(0.5).div(0.5)


def _ignore_sigint(_):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the main process only


# uint8 bytes up to which the training set is decoded once and held on the training device (CIFAR-10: 150 MB,
# STL-10 at 64 px: 1.3 GB); larger sets (CelebA at 64 px: 2.0 GB, big folders) stream from disk
IN_MEMORY_LIMIT = 3 * 2 ** 29


def image_at(dataset, i, args):
    """dataset[i]'s image; one that cannot be decoded stops with its file's name."""
    try:
        return dataset[i][0]
    except Exception as e:  # not an image, truncated, unreadable (from a worker: the original error's last line)
        fail(f"cannot read an image of --dataset {args.dataset}: {reason(e, last=True)}")


def load_images(dataset, args):
    """Every image of `dataset` decoded once, in order, into one uint8 tensor (N, C, S, S) (stacked MNIST gathered
    from MNIST's); None when larger than IN_MEMORY_LIMIT or with --stream-data."""
    if args.stream_data or len(dataset) * image_at(dataset, 0, args).numel() > IN_MEMORY_LIMIT:
        return None
    if isinstance(dataset, StackedMNIST):
        return load_images(dataset.mnist, args)[dataset.triples].flatten(1, 2)
    loader = torch.utils.data.DataLoader(dataset, 500, num_workers=args.num_workers, worker_init_fn=_ignore_sigint,
                                         generator=torch.Generator())
    try:
        return torch.cat([images for images, _ in loader])
    except Exception:  # not an image, truncated, unreadable: find which one, in this process
        for i in range(len(dataset)):
            image_at(dataset, i, args)
        raise


def infinite_batches(dataset, images, args, device, start=0):
    """Yield batches in [-1, 1] on `device` forever: gathered by index from `images` (load_images) on the device,
    or streamed from `dataset` by one DataLoader whose workers persist across epochs. Epoch e is shuffled by
    (seed, e) alone, so both paths give the same batches, and a run resumed after `start` batches continues with
    exactly the batches the uninterrupted run would have seen."""
    per_epoch = len(dataset) // args.batch_size
    epoch, skip = divmod(start, per_epoch)
    plan = []  # this epoch's index batches: the loader reads the list anew at each iter()
    loader = None if images is not None else torch.utils.data.DataLoader(
        dataset, batch_sampler=plan, num_workers=args.num_workers, persistent_workers=args.num_workers > 0,
        pin_memory=device.type == "cuda", worker_init_fn=_ignore_sigint, generator=torch.Generator())  # no RNG draw
    while True:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed * 1_000_003 + epoch))
        order = order[skip * args.batch_size: per_epoch * args.batch_size].view(-1, args.batch_size)
        if loader is None:
            for index in order.to(device):  # one transfer per epoch
                yield to_model_range(images[index])
        else:
            plan[:] = order.tolist()
            for batch, _ in loader:
                yield to_model_range(batch.to(device, non_blocking=True))
        epoch, skip = epoch + 1, 0


def training_data(args):
    """The training set (make_dataset) and its images' channels; one error line when a batch does not fit in it."""
    dataset = make_dataset(args)
    if len(dataset) < args.batch_size:
        fail(f"--batch-size {args.batch_size} is larger than the dataset ({len(dataset)} images)")
    return dataset, image_at(dataset, 0, args).shape[0]


# ------------------------------------------------------------------------- device, random state, checkpoints
def pick_device(name):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    try:
        return torch.empty(0, device=name).device  # an unknown or absent device fails here
    except (RuntimeError, AssertionError) as e:
        fail(f"device {name!r} is not available on this machine ({reason(e)})")


def rng_state():
    return {"python": random.getstate(), "numpy": np.random.get_state()[1].tolist(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), 624, 0, 0.0))  # reseeded state-wise
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# 3: one flat dict (step, batches_used, fids, wall_time, args, rng, G, D, ..., opt_G, opt_D); 1 and 2: refused
CHECKPOINT_FORMAT = 3
# args that may change on resume; every other one defines the run and must match the checkpoint
RESUMABLE = {"resume", "total_steps", "device", "num_workers", "out_dir", "data_root", "download", "track",
             "wandb_project_name", "wandb_entity", "log_every", "sample_every", "eval_every", "fid_samples",
             "fid_weights", "checkpoint_every", "stream_data", "generate", "generate_dir", "evaluate", "fid",
             "classifier_samples"}


def save_checkpoint(path, state):
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save({"format": CHECKPOINT_FORMAT, "script": Path(__file__).name, **state}, tmp)
        os.replace(tmp, path)  # atomic: a kill during the save never leaves a half-written checkpoint
    except BaseException:  # a full disk, no permission, a second Ctrl-C: no stray .tmp left behind
        tmp.unlink(missing_ok=True)
        raise


def checkpoint_defaults(parser, argv):
    """The checkpoint of --resume PATH (auto: the newest run of this dataset, exp-name and seed), with its path,
    read before any data is loaded; its flags become the defaults (all but where to run and what to do now)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--resume")
    path = pre.parse_known_args(argv)[0].resume
    if path == "auto":
        args = parser.parse_known_args(argv)[0]
        found = Path(args.out_dir).glob(f"{args.dataset}__{args.exp_name}__{args.seed}__*/checkpoint.pt")
        path = max(found, key=lambda f: f.stat().st_mtime, default=None)
    if not path:
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:  # missing, a folder, no permission
        fail(f"cannot resume from {path}: {reason(e)}")
    except Exception:  # empty, truncated, random bytes, a pickle that is not plain data
        fail(f"cannot resume from {path}: not a readable checkpoint (truncated or not a torch file)")
    name = Path(__file__).name
    if not isinstance(ckpt, dict) or not {"args", "G"} <= ckpt.keys():
        fail(f"cannot resume from {path}: not a cleangan checkpoint")
    if ckpt.get("format") != CHECKPOINT_FORMAT or ckpt["script"] != name:
        fail(f"cannot resume from {path}: " + (f"it was written by {ckpt['script']}, not {name}" if ckpt.get("format")
             == CHECKPOINT_FORMAT else f"not a checkpoint of this version of {name} (format {ckpt.get('format', 1)}, "
             f"expected {CHECKPOINT_FORMAT}); train anew or use the version that wrote it"))
    now = ("resume", "device", "generate", "generate_dir", "evaluate")  # where to run and what to do now
    parser.set_defaults(**{k: v for k, v in ckpt["args"].items() if k not in now})
    return ckpt | {"path": Path(path)}


def check_resume(args, ckpt):
    """A run-defining flag (all but RESUMABLE) with another value than the checkpoint's is refused, and so is a
    --total-steps below its step; a run already at --total-steps has nothing to train: one line, exit 0."""
    using = args.generate or args.evaluate
    if args.resume and not ckpt:  # --resume auto found nothing
        if using:
            fail(f"no checkpoint to use under {args.out_dir}/ (--resume auto)")
        print(f"--resume auto: no checkpoint of this dataset/exp-name/seed under {args.out_dir}/, starting fresh")
        return
    for k in sorted(vars(args).keys() - RESUMABLE) if ckpt else ():
        if ckpt["args"].get(k) != getattr(args, k):
            fail(f"cannot resume from {ckpt['path']}: it was trained with --{k.replace('_', '-')} "
                 f"{ckpt['args'].get(k)}, not {getattr(args, k)}")
    if ckpt and not using and args.total_steps <= ckpt["step"]:
        if args.total_steps < ckpt["step"]:
            fail(f"cannot resume from {ckpt['path']}: --total-steps {args.total_steps} is below its step "
                 f"{ckpt['step']}")
        print(f"{ckpt['path']} is already at step {ckpt['step']}: nothing to train (--total-steps N > {ckpt['step']} "
              "continues it)")
        sys.exit(0)


# --------------------------------------------------------------------------------------------------- the run
def new_run_dir(args):
    name = f"{args.dataset}__{args.exp_name}__{args.seed}__{int(time.time())}"
    for n in range(1000):  # runs started in the same second get _1, _2, ...
        run_dir = Path(args.out_dir) / (f"{name}_{n}" if n else name)
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue
        except OSError as e:  # --out-dir is a file, not writable, ...
            fail(f"cannot create a run directory under {args.out_dir}: {reason(e)}")
    fail(f"cannot create a run directory under {args.out_dir}")


@torch.no_grad()
def sample_grid(G, z):
    G.eval()  # BN running statistics, not the grid's own batch statistics
    images = G(z)
    G.train()
    return make_grid(images, nrow=8, normalize=True, value_range=(-1, 1))


@torch.no_grad()
def ema_update(G_ema, G, decay):
    """theta_ema <- decay theta_ema + (1 - decay) theta after each G step, as sngan.pytorch (functions.py, train():
    avg_p.mul_(0.999).add_(0.001, p.data)). Parameters only: BatchNorm running statistics are copied from G, which
    is what sngan.pytorch evaluates too (it loads the averaged parameters into the live G, buffers untouched)."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.mul_(decay).add_(p, alpha=1 - decay)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def first_non_finite(bad, step, values):
    """(step, values) of the first step whose logged values were not all finite, zeros while none (bad None: no
    step yet). Kept on the device, so the loop never waits for it: it is read at log and checkpoint steps."""
    now = torch.cat([values.new_full((1,), step), values])
    bad = torch.zeros_like(now) if bad is None else bad
    return torch.where((bad[0] == 0) & ~values.isfinite().all(), now, bad)


def stop_if_non_finite(bad, names, run_dir, saved_step):
    first, *values = bad.tolist() if bad is not None else [0]
    if first:
        kept = f"last good checkpoint: {run_dir / 'checkpoint.pt'} (step {saved_step})" if saved_step else "none yet"
        fail(f"non-finite loss at step {int(first)} ({', '.join(f'{k} {v}' for k, v in zip(names, values))}); "
             f"stopped, {kept}", code=1)


class Run:
    """Everything around a script's training loop that is the same in every script: the EMA generator, the states a
    checkpoint holds, resume, the evaluator (built before any file is written), --generate / --evaluate, a new or
    continued run directory with its files (metrics.jsonl, args.json, samples, TensorBoard, wandb), Ctrl-C (a
    checkpoint after the step), logging, samples, evaluation, checkpoints and the summary. main() uses it as

        run = Run(args, ckpt, dataset, device, models, optimizers)
        with run:                             # the run directory is set up; closed however the loop ends
            for step in run.steps():          # from the checkpoint's step on resume, to --total-steps or Ctrl-C
                real = next(run.batches)      # the training batches, in [-1, 1] on the device
                ...                           # the method's updates
                run.log_step(losses)          # {name: 0-d tensor}: EMA, logs, samples, evaluation, checkpoints
        return run.summary()
    """

    def __init__(self, args, ckpt, dataset, device, models, optimizers, grids=None):
        self.args, self.ckpt, self.dataset, self.device, self.models = args, ckpt, dataset, device, models
        self.grids = grids or {}  # {name: (network, fixed input)}: sample grids beside G's (the lens's L(x))
        if args.ema_decay:  # samples and FID come from the average of G's weights
            models["G_ema"] = copy.deepcopy(models["G"]).requires_grad_(False)
        self.G_sample = models.get("G_ema", models["G"])
        self.states = models | {f"opt_{k}": o for k, o in optimizers.items()}  # what a checkpoint holds
        try:
            for k, state in self.states.items() if ckpt else ():
                state.load_state_dict(ckpt[k])
        except Exception as e:
            fail(f"cannot resume from {ckpt['path']}: {reason(e)}")
        self.start = ckpt or {"step": 0, "batches_used": 0, "fids": [], "wall_time": 0.0, "rng": rng_state()}
        self.step, self.batches_used, self.fids = self.start["step"], self.start["batches_used"], self.start["fids"]
        self.evaluator = None
        if args.eval_every or args.evaluate:  # Inception, reference statistics, MNIST classifier: before any file
            try:
                self.evaluator = fid.Evaluator(dataset, args.dataset, args.data_root, args.image_size, device,
                                               Path(args.out_dir) / "fid_stats",
                                               args.fid * (args.evaluate or args.fid_samples),
                                               args.evaluate or args.classifier_samples, args.fid_weights,
                                               args.download, args.num_workers)
            except (fid.FIDWeightsError, ValueError) as e:
                fail(str(e))

    def use_checkpoint(self):
        """--generate N: N samples of G as 8-bit PNGs in a new folder; --evaluate N: FID and IS of N samples against N
        training images, and on mnist / stacked-mnist the classifier metrics of the same N samples, written to
        evaluate_step<S>_n<N>.json in the run directory. No training; returns what it measured."""
        args, G, ckpt = self.args, self.G_sample, self.ckpt
        step, run_dir = ckpt["step"], ckpt["path"].parent
        result = {"checkpoint": str(ckpt["path"]), "step": step}
        if args.generate:
            out = Path(args.generate_dir or run_dir / f"generated_step{step:07d}_n{args.generate}")
            try:
                fid.save_pngs(fid.samples(G, args.generate, args.z_dim, args.seed, self.device), out, args.generate)
            except ValueError as e:  # not an empty folder
                fail(f"{e} (choose --generate-dir)")
            except OSError as e:
                fail(f"cannot write samples to {out}: {reason(e)}")
            result["generated"] = str(out)
        if args.evaluate:
            scores = self.evaluator(G, args.z_dim, args.seed)
            print(" | ".join(f"{k} {v:.4f}" for k, v in scores.items()) + f" ({args.evaluate} samples, step {step})")
            result |= scores | {"samples": args.evaluate}
            path = run_dir / f"evaluate_step{step:07d}_n{args.evaluate}.json"
            try:
                path.write_text(json.dumps({k: v for k, v in result.items() if k != "generated"}, indent=2))
            except OSError as e:
                fail(f"cannot write {path}: {reason(e)}", code=1)
            print(f"written to {path}")
        return result

    def __enter__(self):
        """The data on the device (when it fits), a new or the continued run directory and its files, Ctrl-C, the
        batches from where the checkpoint left them, and the training noise from the checkpoint's random state."""
        args, ckpt = self.args, self.ckpt
        images = load_images(self.dataset, args)
        images = images if images is None else images.to(self.device)
        self.run_dir = run_dir = ckpt["path"].parent if ckpt else new_run_dir(args)
        try:
            metrics = run_dir / "metrics.jsonl"  # on resume, lines after the checkpoint's step are logged again
            lines = metrics.read_text().splitlines() if metrics.exists() else []
            metrics.write_text("".join(f"{line}\n" for line in lines if json.loads(line)["step"] <= self.step))
            self.metrics_file = open(metrics, "a")
            (run_dir / "samples").mkdir(exist_ok=True)
            (run_dir / "args.json").write_text(json.dumps(vars(args), indent=2))
        except OSError as e:
            if not ckpt:
                shutil.rmtree(run_dir, ignore_errors=True)
            fail(f"cannot write to {run_dir}: {reason(e)}")
        if args.track:
            import wandb
            wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, config=vars(args), name=run_dir.name,
                       dir=str(run_dir), sync_tensorboard=True)
        self.writer = SummaryWriter(str(run_dir)) if SummaryWriter else None
        self.fixed_z = torch.randn(64, args.z_dim, generator=torch.Generator().manual_seed(args.seed)).to(self.device)
        self.ema = "_ema" if args.ema_decay else ""  # metrics of the EMA generator say so in their names
        self.saved_step, self.interrupted, self.losses, self.logged, self.bad = (
            self.step if ckpt else None), False, {}, {}, None
        self.previous_handler = signal.signal(signal.SIGINT, self.on_sigint)
        self.batches = self.counted(infinite_batches(self.dataset, images, args, self.device, self.batches_used))
        set_rng_state(self.start["rng"])  # whatever the setup drew (Inception's init, ...), training noise starts here
        self.start_time = self.last_log_time = time.time()
        self.last_log_step = self.step
        print(f"training {args.exp_name} on {args.dataset} ({len(self.dataset)} images, "
              f"{'streamed' if images is None else 'in memory'}) on {self.device}; run directory {run_dir}")
        return self

    def counted(self, batches):
        for batch in batches:
            self.batches_used += 1  # saved with each checkpoint: a resumed run continues with the next batch
            yield batch

    def steps(self):
        """The generator steps still to do: 0-based, from the checkpoint's on resume, to --total-steps or Ctrl-C."""
        while self.step < self.args.total_steps and not self.interrupted:
            yield self.step

    def log_step(self, losses):
        """After a generator update: the step count, EMA, the non-finite check (read only at log steps), logging,
        samples, evaluation, checkpoints. losses: {name: 0-d tensor} of the step, logged in this order."""
        args = self.args
        self.step = step = self.step + 1
        self.losses = losses
        if args.ema_decay:
            ema_update(self.models["G_ema"], self.models["G"], args.ema_decay)
        values = torch.stack([v.detach().float() for v in losses.values()])  # one device read per log step
        self.bad = first_non_finite(self.bad, step, values)
        record = {"step": step}
        if step % args.log_every == 0 or step == args.total_steps:
            stop_if_non_finite(self.bad, losses, self.run_dir, self.saved_step)
            self.logged = dict(zip(losses, values.tolist()))
            sps = (step - self.last_log_step) / max(time.time() - self.last_log_time, 1e-9)
            self.last_log_step, self.last_log_time = step, time.time()
            record |= self.logged | {"sps": sps}
            eta = datetime.timedelta(seconds=round((args.total_steps - step) / sps))
            print(f"step {step}/{args.total_steps} | " + " | ".join(f"{k} {v:.4f}" for k, v in self.logged.items())
                  + f" | {sps:.2f} steps/s | ETA {eta}", flush=True)
        if (args.sample_every and step % args.sample_every == 0) or step == args.total_steps:
            for name, (net, inputs) in ({"samples": (self.G_sample, self.fixed_z)} | self.grids).items():
                grid = sample_grid(net, inputs)
                prefix = "" if name == "samples" else f"{name}_"  # samples/step_*.png, samples/lens_step_*.png, ...
                save_image(grid, self.run_dir / "samples" / f"{prefix}step_{step:07d}.png")
                if self.writer:
                    self.writer.add_image(name, grid, step)
        if args.eval_every and (step % args.eval_every == 0 or step == args.total_steps):
            scores = self.evaluator(self.G_sample, args.z_dim, args.seed, step)
            if "fid" in scores:
                self.fids.append(scores["fid"])
                scores = {"fid": self.fids[-1], "inception_score": scores.pop("is_mean")} | scores
                scores.pop("is_std", None)
            record |= {f"{k}{self.ema}": v for k, v in scores.items()}
            print(f"step {step}: " + " | ".join(f"{k}{self.ema} {v:.4f}" for k, v in scores.items()), flush=True)
        if len(record) > 1:
            self.metrics_file.write(json.dumps(record) + "\n")
            self.metrics_file.flush()
            for k, v in record.items():
                if self.writer and k != "step":
                    self.writer.add_scalar(("losses/" if k.endswith("loss") else "charts/") + k, v, step)
        if args.checkpoint_every and step % args.checkpoint_every == 0:
            self.checkpoint()

    def checkpoint(self):
        stop_if_non_finite(self.bad, self.losses, self.run_dir, self.saved_step)  # never save what a NaN touched
        try:
            save_checkpoint(self.run_dir / "checkpoint.pt", {
                "step": self.step, "batches_used": self.batches_used, "fids": self.fids, "args": vars(self.args),
                "rng": rng_state(), "wall_time": self.start["wall_time"] + time.time() - self.start_time}
                | {k: s.state_dict() for k, s in self.states.items()})
        except OSError as e:
            kept = f"the last one is of step {self.saved_step}" if self.saved_step else "none was written"
            fail(f"cannot write {self.run_dir / 'checkpoint.pt'}: {reason(e)}; {kept}", code=1)
        self.saved_step = self.step

    def on_sigint(self, *_):
        if self.interrupted:
            raise KeyboardInterrupt  # second Ctrl-C: abort at once
        self.interrupted = True
        print("Ctrl-C: saving a checkpoint after this step (press again to abort)", file=sys.stderr, flush=True)

    def __exit__(self, error, *_):
        """The last checkpoint when the loop ended (--total-steps or Ctrl-C); Ctrl-C's handler back and every file
        closed however it ended."""
        try:
            if error is None:
                self.checkpoint()
        finally:
            signal.signal(signal.SIGINT, self.previous_handler)
            self.metrics_file.close()
            if self.writer:
                self.writer.close()
            if self.args.track:
                import wandb
                wandb.finish()

    def summary(self):
        """summary.json, which main returns; after Ctrl-C, how to continue, and exit code 130."""
        summary = {"run_dir": str(self.run_dir), "step": self.step, **self.logged,
                   "fid": self.fids[-1] if self.fids else None, "best_fid": min(self.fids, default=None),
                   "fid_of": "G_ema" if self.ema else "G",
                   "wall_time": self.start["wall_time"] + time.time() - self.start_time}  # all parts
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if self.interrupted:
            print(f"interrupted at step {self.step}; checkpoint saved, continue with --resume "
                  f"{self.run_dir / 'checkpoint.pt'}", file=sys.stderr)
            sys.exit(130)
        return summary


if __name__ == "__main__":
    main()
