"""WGAN-GP: a Wasserstein GAN whose critic is kept 1-Lipschitz by a gradient penalty, trained as the authors did.

Gulrajani et al., "Improved Training of Wasserstein GANs" (NeurIPS 2017) https://arxiv.org/abs/1704.00028.
The critic D has no sigmoid and no BatchNorm (Sec. 4: batch statistics would make D(x_i) depend on the other samples,
and the penalty is per sample). Equation and line numbers are the paper's:

    critic    L_D = D(G(z)) - D(x) + lambda * E_x^[(||grad_x^ D(x^)||_2 - 1)^2]          (3), Algorithm 1 line 7
              x^ = eps * x + (1 - eps) * G(z),  eps ~ U[0, 1] per sample                   Algorithm 1 lines 4-6
    generator L_G = -D(G(z))                                                                Algorithm 1 line 12
    logged    E[D(x)] - E[D(G(z))], the critic's estimate of the Wasserstein distance    (2)

Defaults are the authors' CIFAR-10 code (github.com/igul222/improved_wgan_training; Algorithm 1 states beta1 = 0):
--arch dcgan (gan_cifar.py, MODE wgan-gp): lambda 10, n_critic 5, Adam lr 1e-4 betas (0.5, 0.9), batch 64, z-dim 128,
DIM (--ngf/--ndf) 128, 5x5 kernels, BN in G only, linear critic output, 200k generator iterations.
--arch resnet (gan_cifar_resnet.py, unconditional): lr 2e-4 decayed linearly to 0 over 100k generator iterations,
betas (0, 0.9), n_critic 5, generator batch 2 x 64, pre-activation residual blocks with 3x3 convs.
Both use the authors' uniform "he"/Glorot initialisation. --total-steps counts generator updates. The networks are
the authors' at --image-size 32; other powers of 2 add or drop up/downsampling stages (see the classes).

Usage: python wgan_gp.py --dataset cifar10 --data-root data --eval-every 10000
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
import torchvision
import torchvision.transforms as T
from torchvision.utils import make_grid, save_image

import fid

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # tensorboard is optional: metrics.jsonl has everything
    SummaryWriter = None

# ====================================================================================== the method: its flags
# dcgan: the authors' gan_cifar.py; resnet: their gan_cifar_resnet.py (ITERS, LR, DECAY, GEN_BS_MULTIPLE);
# lr_decay_steps None: --total-steps
ARCH_DEFAULTS = {
    "dcgan": {"total_steps": 200_000, "lr_g": 1e-4, "lr_d": 1e-4, "beta1": 0.5, "lr_decay_steps": 0,
              "g_batch_multiple": 1},
    "resnet": {"total_steps": 100_000, "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.0, "lr_decay_steps": None,
               "g_batch_multiple": 2}}
# the method's own defaults, help or choices of the skeleton's shared flags ({dest: {...}}, applied in parse_args);
# None: from ARCH_DEFAULTS
SHARED_FLAG_CHANGES = {"total_steps": {"default": None}, "lr_g": {"default": None}, "beta1": {"default": None},
                       "lr_d": {"default": None, "help": "critic learning rate"}, "beta2": {"default": 0.9},
                       "n_critic": {"default": 5, "help": "critic updates per generator update"},
                       "z_dim": {"default": 128}}


def add_method_flags(p, argv):
    """The method's own flags, after the shared ones (parse_args, in the skeleton)."""
    p.add_argument("--arch", default="dcgan", choices=tuple(ARCH_DEFAULTS), help="the authors' CIFAR-10 networks; "
                   "sets the defaults of --total-steps --lr-g --lr-d --beta1 --lr-decay-steps --g-batch-multiple")
    p.add_argument("--ngf", type=natural, default=128, help="generator width (the authors' DIM / DIM_G)")
    p.add_argument("--ndf", type=natural, default=128, help="critic width (the authors' DIM / DIM_D)")
    p.add_argument("--gp-lambda", type=number(float, 0), default=10.0,
                   help="lambda of eq. (3), the gradient penalty weight")
    p.add_argument("--lr-decay-steps", type=whole, help="decay both learning rates linearly to 0 at this generator "
                   "step (0 = constant; resnet: --total-steps, fixed when the run starts, as the authors' lr decays "
                   "over ITERS)")
    p.add_argument("--g-batch-multiple", type=natural, help="generator batch = this x --batch-size")
    pre = argparse.ArgumentParser(add_help=False)  # the arch first: its defaults show in --help and apply below
    pre.add_argument("--arch", nargs="?")
    p.set_defaults(**ARCH_DEFAULTS.get(pre.parse_known_args(argv)[0].arch or "dcgan", {}))


def check_method_flags(p, args):
    """The method's own checks of its flags, before a resume is checked."""
    if args.lr_decay_steps is None:  # resolved here so that it is saved with the run: extending a run keeps its decay
        args.lr_decay_steps = args.total_steps
    if args.arch == "dcgan" and args.batch_size < 2:  # BatchNorm1d needs two samples to normalise over
        p.error(f"--arch dcgan needs --batch-size >= 2 (its generator's first layer is batch-normalised), got "
                f"{args.batch_size}")


# ------------------------------------------------------------------------------------------------ networks
def tflib_init(layer, he=True):
    """The authors' initialisation (tflib/ops in their repo), applied in place; returns the layer. Weights uniform
    with std sqrt(4 / (fan_in + fan_out)) ("he", their default for convolutions) or sqrt(2 / (fan_in + fan_out))
    (Glorot: linear layers, 1x1 shortcuts, the ResNet generator's last conv); fan = channels x kernel area, with a
    stride-s conv's fan_out and a transposed conv's fan_in divided by s^2. Biases 0; BN keeps scale 1, shift 0."""
    transposed = isinstance(layer, nn.ConvTranspose2d)
    conv = hasattr(layer, "in_channels")
    n_in, n_out = (layer.in_channels, layer.out_channels) if conv else (layer.in_features, layer.out_features)
    area, s2 = layer.weight[0, 0].numel(), getattr(layer, "stride", (1,))[0] ** 2
    fan_in, fan_out = n_in * area / (s2 if transposed else 1), n_out * area / (1 if transposed else s2)
    bound = math.sqrt(3 * (4 if he else 2) / (fan_in + fan_out))  # uniform(-b, b) has std b / sqrt(3)
    nn.init.uniform_(layer.weight, -bound, bound)
    nn.init.zeros_(layer.bias)
    return layer


class Generator(nn.Module):
    """The authors' CIFAR-10 DCGAN generator (gan_cifar.py): z -> linear -> BN (per feature) -> ReLU -> 4x4 maps,
    then 5x5 stride-2 transposed convs with BN + ReLU halving the width down to ngf, a last one to the image, tanh.
    At 32x32 this is their network (4, 2, 1 x DIM); other sizes add or drop a stage. PyTorch's symmetric padding
    places the 5x5 grid one pixel off TensorFlow's 'SAME' (which pads 1 before, 2 after): same network otherwise."""

    def __init__(self, z_dim, channels, image_size, ngf=128):
        super().__init__()
        n_up = int(math.log2(image_size)) - 2
        width = ngf * 2 ** (n_up - 1)
        layers = [tflib_init(nn.Linear(z_dim, 16 * width), he=False), nn.BatchNorm1d(16 * width), nn.ReLU(True),
                  nn.Unflatten(1, (width, 4, 4))]
        for _ in range(n_up - 1):
            layers += [tflib_init(nn.ConvTranspose2d(width, width // 2, 5, 2, 2, output_padding=1)),
                       nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [tflib_init(nn.ConvTranspose2d(width, channels, 5, 2, 2, output_padding=1)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z)


class Critic(nn.Module):
    """The authors' CIFAR-10 DCGAN critic (gan_cifar.py, MODE wgan-gp): 5x5 stride-2 convs with LeakyReLU(0.2) and no
    normalisation, doubling the width from ndf down to 4x4, then a linear layer to one unbounded score per image."""

    def __init__(self, channels, image_size, ndf=128):
        super().__init__()
        layers, width = [tflib_init(nn.Conv2d(channels, ndf, 5, 2, 2)), nn.LeakyReLU(0.2)], ndf
        for _ in range(int(math.log2(image_size)) - 3):
            layers += [tflib_init(nn.Conv2d(width, width * 2, 5, 2, 2)), nn.LeakyReLU(0.2)]
            width *= 2
        layers += [nn.Flatten(), tflib_init(nn.Linear(16 * width, 1), he=False)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).flatten()


class ResidualBlock(nn.Module):
    """gan_cifar_resnet.py's ResidualBlock: shortcut(x) + conv(relu(norm(conv(relu(norm(x)))))), 3x3 convs, norm =
    BN in G and none in the critic. resample 'up': nearest x2 before the first conv; 'down': 2x2 mean pool after the
    second, whose input width is then c_in. first: the critic's OptimizedResBlockDisc1 (no norm/ReLU before the first
    conv). The shortcut is the identity, or a 1x1 conv with the block's resampling; a 1x1 conv commutes with mean
    pooling and nearest upsampling, so it runs at the lower resolution (the authors' ConvMeanPool / UpsampleConv)."""

    def __init__(self, c_in, c_out, resample=None, batch_norm=False, first=False):
        super().__init__()
        norm = nn.BatchNorm2d if batch_norm else nn.Identity
        up = (lambda: nn.Upsample(scale_factor=2)) if resample == "up" else nn.Identity
        down = (lambda: nn.AvgPool2d(2)) if resample == "down" else nn.Identity
        c_mid = c_in if resample == "down" and not first else c_out
        pre = [] if first else [norm(c_in), nn.ReLU()]  # not in place: x is also the shortcut's input
        self.residual = nn.Sequential(*pre, up(), tflib_init(nn.Conv2d(c_in, c_mid, 3, 1, 1)), norm(c_mid), nn.ReLU(),
                                      tflib_init(nn.Conv2d(c_mid, c_out, 3, 1, 1)), down())
        self.shortcut = (nn.Identity() if c_in == c_out and resample is None else
                         nn.Sequential(down(), tflib_init(nn.Conv2d(c_in, c_out, 1), he=False), up()))

    def forward(self, x):
        return self.shortcut(x) + self.residual(x)


class ResNetGenerator(nn.Module):
    """gan_cifar_resnet.py's generator: z -> linear -> ngf x 4x4, one 'up' block per doubling (3 at 32x32), BN, ReLU,
    3x3 conv to the image, tanh."""

    def __init__(self, z_dim, channels, image_size, ngf=128):
        super().__init__()
        blocks = [ResidualBlock(ngf, ngf, "up", batch_norm=True) for _ in range(int(math.log2(image_size)) - 2)]
        self.net = nn.Sequential(tflib_init(nn.Linear(z_dim, 16 * ngf), he=False), nn.Unflatten(1, (ngf, 4, 4)),
                                 *blocks, nn.BatchNorm2d(ngf), nn.ReLU(),
                                 tflib_init(nn.Conv2d(ngf, channels, 3, 1, 1), he=False), nn.Tanh())

    def forward(self, z):
        return self.net(z)


class ResNetCritic(nn.Module):
    """gan_cifar_resnet.py's critic: 'down' blocks to 8x8 (the first one optimised; two at 32x32), two blocks
    without resampling, ReLU, global mean pool, linear score. No normalisation (NORMALIZATION_D = False)."""

    def __init__(self, channels, image_size, ndf=128):
        super().__init__()
        blocks = [ResidualBlock(channels, ndf, "down", first=True)]
        blocks += [ResidualBlock(ndf, ndf, "down") for _ in range(int(math.log2(image_size)) - 4)]
        self.net = nn.Sequential(*blocks, ResidualBlock(ndf, ndf), ResidualBlock(ndf, ndf), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), tflib_init(nn.Linear(ndf, 1), he=False))

    def forward(self, x):
        return self.net(x).flatten()


NETWORKS = {"dcgan": (Generator, Critic), "resnet": (ResNetGenerator, ResNetCritic)}


# ------------------------------------------------------------------------------------------------- losses
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


def generate_like_the_authors(G, z, arch):
    """G(z) as gan_cifar_resnet.py computes it: it always runs G on two halves of each batch (its DEVICES list, with
    one GPU duplicated), so G's batch-norm statistics cover 32 critic fakes and 64 samples of the G step at batch 64.
    --arch resnet does the same; gan_cifar.py (dcgan) runs G on the whole batch."""
    return torch.cat([G(half) for half in z.chunk(2)]) if arch == "resnet" else G(z)


def linear_decay(step, decay_steps):
    """gan_cifar_resnet.py's learning-rate factor max(0, 1 - step / decay_steps), step = generator updates done;
    1 when decay_steps is 0. A pure function of the step: resume needs no scheduler state."""
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
    generator, critic = NETWORKS[args.arch]
    G = generator(args.z_dim, channels, args.image_size, args.ngf).to(device)
    D = critic(channels, args.image_size, args.ndf).to(device)
    models = {"G": G, "D": D}
    optimizers = {"G": torch.optim.Adam(G.parameters(), lr=args.lr_g, betas=(args.beta1, args.beta2)),
                  "D": torch.optim.Adam(D.parameters(), lr=args.lr_d, betas=(args.beta1, args.beta2))}

    run = Run(args, ckpt, dataset, device, models, optimizers)  # EMA, resume, evaluator (the skeleton's class Run)
    if args.generate or args.evaluate:
        return run.use_checkpoint()
    with run:  # the run directory and its files, Ctrl-C; the last checkpoint, and every file closed at the end
        for step in run.steps():
            # this step's learning rates, n_critic critic updates on fresh real batches, one G update
            for name, lr in (("G", args.lr_g), ("D", args.lr_d)):
                for group in optimizers[name].param_groups:
                    group["lr"] = lr * linear_decay(step, args.lr_decay_steps)
            for _ in range(args.n_critic):
                real = next(run.batches)
                with torch.no_grad():
                    z = torch.randn(args.batch_size, args.z_dim, device=device)
                    fake = generate_like_the_authors(G, z, args.arch)  # Alg. 1 line 5
                wasserstein = D(real).mean() - D(fake).mean()  # eq. (2)'s estimate, on this batch
                penalty, grad_norms = gradient_penalty(D, real, fake, return_norms=True)
                loss_d = -wasserstein + args.gp_lambda * penalty  # eq. (3), Algorithm 1 line 7
                optimizers["D"].zero_grad(set_to_none=True)
                loss_d.backward()
                optimizers["D"].step()
            z = torch.randn(args.g_batch_multiple * args.batch_size, args.z_dim, device=device)  # Algorithm 1 line 11
            loss_g = -D(generate_like_the_authors(G, z, args.arch)).mean()  # Algorithm 1 line 12
            optimizers["G"].zero_grad(set_to_none=True)
            loss_g.backward(inputs=list(G.parameters()))  # G's gradients only: D's would be thrown away
            optimizers["G"].step()
            losses = {"d_loss": loss_d, "g_loss": loss_g, "wasserstein": wasserstein, "gradient_penalty": penalty,
                      "grad_norm": grad_norms.mean()}
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
