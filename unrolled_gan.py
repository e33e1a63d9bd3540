"""Unrolled GAN: the generator's loss is taken at the discriminator K optimizer steps ahead.

Metz, Poole, Pfau, Sohl-Dickstein, "Unrolled Generative Adversarial Networks", ICLR 2017,
https://arxiv.org/abs/1611.02163; equation numbers are the paper's. D outputs a logit and D(x) = sigmoid(logit);
f is the GAN value function, f(theta_G, theta_D) = E_x[log D(x)] + E_z[log(1 - D(G(z)))] = -L_D  (1)

    theta_D^0 = theta_D                                                                                 (6)
    theta_D^(k+1) = theta_D^k + eta^k df(theta_G, theta_D^k)/dtheta_D^k    here one step of D's own Adam    (7)
    f_K(theta_G, theta_D) = f(theta_G, theta_D^K(theta_G, theta_D))                                     (9)
    theta_G <- theta_G - eta df_K/dtheta_G      (10)        theta_D <- theta_D + eta df/dtheta_D          (11)
    df_K/dtheta_G = df(theta_G, theta_D^K)/dtheta_G
                    + df(theta_G, theta_D^K)/dtheta_D^K * dtheta_D^K(theta_G, theta_D)/dtheta_G          (12)

The unroll (7) starts from D's live parameters AND its live Adam state (m, v, step, lr, betas, eps), runs on the
same real and noise minibatch as D's own step of this iteration, and keeps the graph through every step, so the
generator gets the second term of (12); `--first-order` drops it (an approximation: theta_D^K is then a constant
for G). The unrolled copies are thrown away: D's parameters, BN running statistics and Adam state change only by
its one ordinary step (11). G's step (10) and D's step (11) both start from the same (theta_G, theta_D), as the
authors' notebook (poolio/unrolled_gan) runs them in one session call; `--unroll-steps 0` is the plain GAN
with these simultaneous updates.

--loss picks the G term of f as in gan.py (`mm` is (1) itself, log(1 - D(G(z))); `gan`, the DCGAN default, is the
non-saturating -log D(G(z))); G minimizes f_K = L_G(D(G(z); theta_D^K)) - L_D^real(theta_D^K), which for `mm` is
f(theta_G, theta_D^K) of (9) exactly. The real-data term of f is constant in theta_G at K = 0 and reaches G
only through theta_D^K(theta_G).

Defaults: DCGAN as gan.py (the paper's image experiments use DCGAN; --ndf 32 or 16 shrinks D to 1/2 or 1/4 of
G's width as in its stacked-MNIST study), Adam lr 2e-4 betas (0.5, 0.999), batch 64, K = 5 (the authors'
notebook; the paper's Fig. 2 uses 10). The mode-collapse benchmark is --dataset stacked-mnist (Sec. 3.3).

Usage: python unrolled_gan.py --dataset stacked-mnist --loss mm --unroll-steps 5 --ndf 16
"""
import argparse
import contextlib
import copy
import datetime
import json
import math
import os
import random
import shutil
import signal
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
from torch.func import functional_call
from PIL import Image
from torchvision.utils import make_grid, save_image

import fid

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # tensorboard is optional: metrics.jsonl has everything
    SummaryWriter = None

DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "stl10", "celeba", "stacked-mnist", "folder")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--exp-name", default=Path(__file__).stem, help="name of the experiment (part of the run directory)")
    p.add_argument("--seed", type=int, default=1, help="seed of the experiment")
    p.add_argument("--torch-deterministic", action=argparse.BooleanOptionalAction, default=True,
                   help="set torch.backends.cudnn.deterministic (and disable cudnn.benchmark)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps")
    p.add_argument("--track", action=argparse.BooleanOptionalAction, default=False, help="log to Weights & Biases")
    p.add_argument("--wandb-project-name", default="cleangan", help="wandb project")
    p.add_argument("--wandb-entity", default=None, help="wandb entity (team)")
    p.add_argument("--out-dir", default="runs", help="parent folder of the run directories")
    p.add_argument("--resume", default=None, help="checkpoint.pt to continue from, or 'auto' for the newest run of the same dataset/exp-name/seed")
    p.add_argument("--dataset", default="cifar10", choices=DATASETS, help="training data (folder: an ImageFolder tree at --data-root)")
    p.add_argument("--data-root", default="data", help="dataset folder (downloads go here)")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True, help="download the dataset if missing")
    p.add_argument("--image-size", type=int, default=32, help="side of the square images (a power of 2, >= 16)")
    p.add_argument("--num-workers", type=int, default=2, help="data loader processes (decoding once when the data is held in memory)")
    p.add_argument("--stream-data", action=argparse.BooleanOptionalAction, default=False,
                   help="stream batches from disk even when the dataset fits in memory (IN_MEMORY_LIMIT bytes of uint8 on the device)")
    p.add_argument("--total-steps", type=int, default=100_000, help="generator updates")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch of D and of G")
    p.add_argument("--lr-g", type=float, default=2e-4, help="generator learning rate")
    p.add_argument("--lr-d", type=float, default=2e-4, help="discriminator learning rate")
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta1")
    p.add_argument("--beta2", type=float, default=0.999, help="Adam beta2")
    p.add_argument("--n-critic", type=int, default=1, help="discriminator updates per generator update")
    p.add_argument("--z-dim", type=int, default=100, help="latent dimension")
    p.add_argument("--log-every", type=int, default=100, help="steps between metrics lines")
    p.add_argument("--sample-every", type=int, default=1000, help="steps between sample grids (0 = only at the end)")
    p.add_argument("--eval-every", type=int, default=0, help="steps between FID evaluations (0 = no FID)")
    p.add_argument("--fid-samples", type=int, default=10_000, help="generated (and reference) images per FID")
    p.add_argument("--fid-weights", default=None, help="local pt_inception-2015-12-05-6726825d.pth (default: torch.hub cache/download)")
    p.add_argument("--fid", action=argparse.BooleanOptionalAction, default=True,
                   help="FID and IS at --eval-every / --evaluate (need the Inception weights); --no-fid: the classifier metrics only (mnist family)")
    p.add_argument("--classifier-samples", type=int, default=26_000, help="samples of the MNIST-classifier metrics (mnist family; Metz et al.: 26,000)")
    p.add_argument("--checkpoint-every", type=int, default=1000,
                   help="steps between checkpoints (0: only the one always written at the end)")
    p.add_argument("--ema-decay", type=float, default=0.0, help="EMA of G's weights, used for samples and FID (0 = off; sngan.pytorch: 0.999)")
    p.add_argument("--generate", type=int, nargs="?", const=50_000, default=None, metavar="N",
                   help="with --resume, no training: write N samples (default 50,000) as PNGs to --generate-dir")
    p.add_argument("--generate-dir", default=None, help="new folder for --generate (default: generated_step<S>_n<N> in the run directory)")
    p.add_argument("--evaluate", type=int, nargs="?", const=50_000, default=None, metavar="N",
                   help="with --resume, no training: FID and IS of N samples (default 50,000) against N training images")
    # method-specific arguments
    p.add_argument("--loss", default="gan", choices=("gan", "mm", "lsgan", "hinge"),
                   help="GAN objective (module docstring); the paper and the authors' notebook minimize f: mm. gan: DCGAN's non-saturating G loss")
    p.add_argument("--ngf", type=int, default=64, help="generator width")
    p.add_argument("--ndf", type=int, default=64, help="discriminator width (32 or 16: the paper's D of 1/2 or 1/4 of G)")
    p.add_argument("--unroll-steps", type=int, default=5,
                   help="K, D's Adam steps that G looks ahead (0: the plain GAN with simultaneous updates, not gan.py's alternating ones)")
    p.add_argument("--first-order", action=argparse.BooleanOptionalAction, default=False,
                   help="drop the second-order term of eq. (12): cheaper, an approximation")
    p.error = fail  # one error line instead of argparse's usage dump
    resume = checkpoint_defaults(p, argv)
    args = p.parse_args(argv)
    check_finite(args)

    if args.image_size < 16 or args.image_size & (args.image_size - 1):
        p.error(f"--image-size must be a power of 2 >= 16 for these networks, got {args.image_size}")
    positive = ("batch_size", "total_steps", "n_critic", "z_dim", "log_every", "fid_samples", "classifier_samples", "lr_g", "lr_d")
    for name in positive + ("num_workers", "sample_every", "eval_every", "checkpoint_every"):
        value = getattr(args, name)
        if not (value > 0 if name in positive else value >= 0):  # `not` also rejects NaN
            p.error(f"--{name.replace('_', '-')} must be {'positive' if name in positive else '>= 0'}, got {value}")
    if not (0 <= args.beta1 < 1 and 0 <= args.beta2 < 1):
        p.error(f"Adam betas must be in [0, 1), got {args.beta1}, {args.beta2}")
    if not 0 <= args.ema_decay < 1:
        p.error(f"--ema-decay must be in [0, 1), got {args.ema_decay}")
    for name in ("generate", "evaluate"):
        if getattr(args, name) is not None and (getattr(args, name) <= 0 or not args.resume):
            p.error(f"--{name} N needs N > 0 and --resume CHECKPOINT, got N = {getattr(args, name)}, --resume {args.resume}")
    if args.generate_dir and not args.generate:
        p.error("--generate-dir is only used with --generate N")
    if (args.eval_every or args.evaluate) and not args.fid and args.dataset not in ("mnist", "stacked-mnist"):
        p.error(f"--no-fid leaves nothing to evaluate on {args.dataset} (the classifier metrics are for mnist and stacked-mnist)")
    # method-specific checks
    if args.ngf <= 0 or args.ndf <= 0:
        p.error(f"--ngf and --ndf must be positive, got {args.ngf}, {args.ndf}")
    if args.unroll_steps < 0:
        p.error(f"--unroll-steps must be >= 0, got {args.unroll_steps}")
    check_resume(args, resume)
    return args


def fail(message, code=2):
    """One clear error line and a non-zero exit, never a traceback (2 = bad input, as argparse)."""
    print(f"{Path(__file__).name}: error: {message}", file=sys.stderr)
    sys.exit(code)


def check_finite(args):
    """Every float flag is a finite number: inf and NaN have no use in any of them."""
    for k, v in vars(args).items():
        if isinstance(v, float) and not math.isfinite(v):
            fail(f"--{k.replace('_', '-')} must be a finite number, got {v}")


# ---------------------------------------------------------------------------------------------------- data
class StackedMNIST(torch.utils.data.Dataset):
    """Three independent MNIST digits as the R, G, B channels: 1,000 modes (Metz et al. 2017 Sec. 3.3,
    lens paper Sec. 4.1.2). The digit triples are drawn once from the seed, so the dataset is reproducible."""

    def __init__(self, mnist, seed):
        self.mnist = mnist
        self.triples = torch.randint(len(mnist), (len(mnist), 3), generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.triples)

    def __getitem__(self, i):
        digits = [self.mnist[j] for j in self.triples[i].tolist()]
        mode = 100 * digits[0][1] + 10 * digits[1][1] + digits[2][1]
        return torch.cat([image for image, _ in digits]), mode


# what each dataset needs under --data-root (torchvision's layout), named when it is missing
DATA_FILES = {"mnist": "MNIST/raw/train-images-idx3-ubyte", "stacked-mnist": "MNIST/raw/train-images-idx3-ubyte",
              "fashion-mnist": "FashionMNIST/raw/train-images-idx3-ubyte",
              "cifar10": "cifar-10-batches-py/data_batch_1", "cifar100": "cifar-100-python/train",
              "stl10": "stl10_binary/unlabeled_X.bin", "celeba": "celeba/img_align_celeba/",
              "folder": "<class>/<image>"}


def make_dataset(args):
    """The training set as uint8 images of shape (C, S, S) (`to_model_range` makes them [-1, 1] on the device);
    one clear error when it is missing, naming the files expected and where (a failed download leaves no folder)."""
    size, root, name = args.image_size, args.data_root, args.dataset
    resize = [T.Resize(size), T.CenterCrop(size)]
    mnist_tf = T.Compose([T.Pad(2)] + ([] if size == 32 else [T.Resize(size)]) + [T.PILToTensor()])  # 28 -> 32 as the lens paper
    made = [Path(root, *Path(DATA_FILES[name]).parts[:i]) for i in range(len(Path(DATA_FILES[name]).parts) - 1, -1, -1)]
    made = [d for d in made if not d.exists()]  # the folders a download may create, deepest first
    try:
        if name in ("mnist", "stacked-mnist"):
            mnist = torchvision.datasets.MNIST(root, train=True, download=args.download, transform=mnist_tf)
            return mnist if name == "mnist" else StackedMNIST(mnist, args.seed)
        if name == "fashion-mnist":
            return torchvision.datasets.FashionMNIST(root, train=True, download=args.download, transform=mnist_tf)
        if name in ("cifar10", "cifar100"):
            cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
            return cls(root, train=True, download=args.download, transform=T.Compose(resize + [T.PILToTensor()]))
        if name == "stl10":
            return torchvision.datasets.STL10(root, split="train+unlabeled", download=args.download, transform=T.Compose(resize + [T.PILToTensor()]))
        if name == "celeba":  # center crop 108 (the DCGAN-tensorflow convention), then resize
            tf = T.Compose([T.CenterCrop(108)] + resize + [T.PILToTensor()])
            return torchvision.datasets.CelebA(root, split="train", download=args.download, transform=tf)
        return torchvision.datasets.ImageFolder(root, transform=T.Compose([T.Lambda(lambda im: im.convert("RGB"))] + resize + [T.PILToTensor()]))
    except Exception:  # torchvision raises RuntimeError, OSError, URLError, ... for missing or undownloadable data
        for folder in made:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        where = os.path.join(os.path.abspath(root), DATA_FILES[name])
        how = ("" if name == "folder" else " (the download failed: no internet?)" if args.download
               else " (or --download on a machine with internet)")
        fail(f"no {name} data at {where}: put the files there{how}, or point --data-root at the folder that holds them")


def to_model_range(images):
    """uint8 [0, 255] -> float [-1, 1] with the operations of ToTensor + Normalize(0.5, 0.5): the same bits."""
    return images.float().div(255).sub(0.5).div(0.5)


def _ignore_sigint(_):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the main process only


# uint8 bytes up to which the training set is decoded once and held on the training device (CIFAR-10: 150 MB,
# STL-10 at 64 px: 1.3 GB); larger sets (CelebA at 64 px: 2.0 GB, big folders) stream from disk
IN_MEMORY_LIMIT = 3 * 2 ** 29


def image_at(dataset, i, args):
    """The image dataset[i]; a file that cannot be decoded stops with its name (from a DataLoader worker, the
    original error is the last line of the one raised)."""
    try:
        return dataset[i][0]
    except Exception as e:  # not an image, truncated, unreadable
        fail(f"cannot read an image of --dataset {args.dataset}: {str(e).strip().splitlines()[-1]}")


def load_images(dataset, args):
    """Every image of `dataset` decoded once, in order, into one uint8 tensor (N, C, S, S); stacked MNIST is
    gathered from MNIST's tensor, not decoded per triple. None when it is larger than IN_MEMORY_LIMIT or with
    --stream-data. A file that cannot be decoded stops here, with its name, before a run directory exists."""
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
        pin_memory=device.type == "cuda", worker_init_fn=_ignore_sigint, generator=torch.Generator())  # no global RNG draw
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


class Generator(nn.Module):
    """DCGAN generator (lens paper Fig. 3): z -> 4x4 -> ... -> S x S by 4x4 stride-2 transposed convs,
    BN + ReLU, tanh output. The width halves at each upsampling and ends at ngf."""

    def __init__(self, z_dim, channels, image_size, ngf=64, batch_norm=True):
        super().__init__()
        norm = nn.BatchNorm2d if batch_norm else nn.Identity
        n_up = int(math.log2(image_size)) - 2
        width = ngf * 2 ** (n_up - 1)
        layers = [nn.ConvTranspose2d(z_dim, width, 4, 1, 0, bias=not batch_norm), norm(width), nn.ReLU(True)]
        for _ in range(n_up - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=not batch_norm), norm(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z.view(len(z), -1, 1, 1))


class Discriminator(nn.Module):
    """DCGAN discriminator (lens paper Fig. 3): 4x4 stride-2 convs with LeakyReLU(0.2), BN except on the
    first layer, down to 4x4, then a 4x4 conv to one logit per image."""

    def __init__(self, channels, image_size, ndf=64, batch_norm=True):
        super().__init__()
        norm = nn.BatchNorm2d if batch_norm else nn.Identity
        layers, width = [nn.Conv2d(channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)], ndf
        for _ in range(int(math.log2(image_size)) - 3):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=not batch_norm), norm(width * 2), nn.LeakyReLU(0.2, True)]
            width *= 2
        layers += [nn.Conv2d(width, 1, 4, 1, 0)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).flatten()


# ------------------------------------------------------------------------------------------------- losses
def d_loss_real(real_logits, loss):
    """The real-data half of L_D: the part of f that G reaches only through theta_D^K(theta_G) (eq. 12)."""
    if loss in ("gan", "mm"):  # -log D(x)
        return F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    if loss == "lsgan":
        return ((real_logits - 1) ** 2).mean()
    if loss == "hinge":
        return F.relu(1 - real_logits).mean()
    raise ValueError(f"unknown loss {loss!r}")


def d_loss(real_logits, fake_logits, loss):
    """Discriminator loss L_D = -f (eq. 1 for gan/mm), a mean over the batch of each half."""
    if loss in ("gan", "mm"):  # -log(1 - D(G(z)))
        fake_half = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    elif loss == "lsgan":
        fake_half = (fake_logits ** 2).mean()
    elif loss == "hinge":
        fake_half = F.relu(1 + fake_logits).mean()
    else:
        raise ValueError(f"unknown loss {loss!r}")
    return d_loss_real(real_logits, loss) + fake_half


def g_loss(fake_logits, loss):
    """Generator loss, a mean over the batch."""
    if loss == "gan":  # eq. (5), non-saturating: -log D(G(z))
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if loss == "mm":  # saturating minimax: log(1 - D(G(z))) = -softplus(phi)
        return -F.softplus(fake_logits).mean()
    if loss == "lsgan":  # eq. (9)
        return ((fake_logits - 1) ** 2).mean()
    if loss == "hinge":
        return -fake_logits.mean()
    raise ValueError(f"unknown loss {loss!r}")


def d_score(logits, loss):
    """What to log as D(x): the mean probability for the log-losses, the mean raw output otherwise."""
    return torch.sigmoid(logits).mean() if loss in ("gan", "mm") else logits.mean()


def adam_state(optimizer, params):
    """An optimizer's live Adam state per parameter name, as adam_step takes it (zeros before its first step).
    These are the live tensors, read and never written; .get() so that not even an empty entry is added."""
    unsupported = [k for k in ("weight_decay", "amsgrad", "maximize") if optimizer.param_groups[0].get(k)]
    if len(optimizer.param_groups) != 1 or unsupported or not isinstance(optimizer, torch.optim.Adam):
        raise ValueError(f"adam_step is plain Adam with one parameter group; this optimizer has {len(optimizer.param_groups)} "
                         f"group(s){', ' + ', '.join(unsupported) if unsupported else ''}")
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


def unrolled_generator_loss(D, optimizer, real, fake, loss, unroll_steps, first_order=False):
    """f_K (eq. 9) as G minimizes it, differentiable w.r.t. fake = G(z): D is unrolled `unroll_steps` steps of its
    own Adam (eqs. 6-7) from its live parameters and optimizer state, on this minibatch, and G's loss is taken at
    theta_D^K. The graph runs through every unrolled step (both terms of eq. 12); with first_order, theta_D^K is a
    constant for G (only the first term). BatchNorm uses batch statistics as in D's own step; the running
    statistics it updates are those of a copy, so D's live buffers are never written."""
    params = dict(D.named_parameters())
    buffers = {name: b.clone() for name, b in D.named_buffers()}
    state, group = adam_state(optimizer, params), optimizer.param_groups[0]
    unroll_fake = fake.detach() if first_order else fake
    for _ in range(unroll_steps):
        real_logits, fake_logits = (functional_call(D, (params, buffers), (x,)) for x in (real, unroll_fake))
        grads = torch.autograd.grad(d_loss(real_logits, fake_logits, loss), list(params.values()), create_graph=not first_order)
        params, state = adam_step(params, dict(zip(params, grads)), state, group["lr"], group["betas"], group["eps"])  # eq. (7)
    if first_order:
        params = {name: p.detach() for name, p in params.items()}
    real_logits, fake_logits = (functional_call(D, (params, buffers), (x,)) for x in (real, fake))
    return g_loss(fake_logits, loss) - d_loss_real(real_logits, loss)  # eq. (9); for --loss mm exactly f of eq. (1)


def wall_clock(device):
    """time.perf_counter() once the device has run its queued work (CUDA and MPS run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
    return time.perf_counter()


# ------------------------------------------------------------------------------------------ infrastructure
def pick_device(name):
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        fail(f"unknown device {name!r}")
    if (device.type == "cuda" and not torch.cuda.is_available()) or (device.type == "mps" and not torch.backends.mps.is_available()):
        fail(f"device {name!r} is not available on this machine")
    return device


def rng_state():
    return {"python": random.getstate(), "numpy": np.random.get_state()[1].tolist(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), 624, 0, 0.0))  # np.random is reseeded state-wise only
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


CHECKPOINT_FORMAT = 2  # 2: uint8 data pipeline, EMA generator, script name; 1 (before): refused with one line


def save_checkpoint(path, state):
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save({"format": CHECKPOINT_FORMAT, "script": Path(__file__).name, **state}, tmp)
        os.replace(tmp, path)  # atomic: a kill during the save never leaves a half-written checkpoint
    except BaseException:  # a full disk, no permission, a second Ctrl-C: no stray .tmp left behind
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


# args that may change on resume; every other one defines the run and must match the checkpoint
RESUMABLE = {"resume", "total_steps", "device", "num_workers", "out_dir", "data_root", "download", "track",
             "wandb_project_name", "wandb_entity", "log_every", "sample_every", "eval_every", "fid_samples",
             "fid_weights", "checkpoint_every", "stream_data", "generate", "generate_dir", "evaluate", "fid", "classifier_samples"}


def read_checkpoint(path, mmap=False):
    """A checkpoint of this script (on the CPU, whatever device wrote it); ValueError naming what is wrong. mmap: read
    only what is used (checkpoint_defaults needs the args, not the tensors)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except OSError as e:  # missing, a folder, no permission
        raise ValueError(e.strerror or str(e)) from e
    except Exception as e:  # empty, truncated, random bytes, a pickle that is not plain data
        raise ValueError("not a readable checkpoint (truncated or not a torch file)") from e
    if not isinstance(ckpt, dict) or not {"args", "counters", "models"} <= ckpt.keys():
        raise ValueError("not a cleangan checkpoint")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not a checkpoint of this version of {Path(__file__).name} (format {ckpt.get('format', 1)}, "
                         f"expected {CHECKPOINT_FORMAT}); train anew or use the version that wrote it")
    if ckpt["script"] != Path(__file__).name:
        raise ValueError(f"it was written by {ckpt['script']}, not {Path(__file__).name}")
    return ckpt


def newest_checkpoint(args):
    """--resume auto: the newest checkpoint of this dataset, exp-name and seed under --out-dir, or None."""
    found = sorted(Path(args.out_dir).glob(f"{args.dataset}__{args.exp_name}__{args.seed}__*/checkpoint.pt"), key=lambda f: f.stat().st_mtime)
    return found[-1] if found else None


def checkpoint_defaults(parser, argv):
    """With --resume PATH, every flag defaults to the checkpoint's value (all but where to run and what to do
    now), so that only what changes needs to be given. An unreadable checkpoint stops here, before any data is
    loaded. Returns (path, the checkpoint's args, its step) for check_resume, or None."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--resume")
    path = pre.parse_known_args(argv)[0].resume
    path = newest_checkpoint(parser.parse_known_args(argv)[0]) if path == "auto" else path
    if not path:
        return None
    try:
        ckpt = read_checkpoint(path, mmap=True)
    except Exception as e:
        fail(f"cannot resume from {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    now = ("resume", "device", "generate", "generate_dir", "evaluate")  # where to run and what to do now
    parser.set_defaults(**{k: v for k, v in ckpt["args"].items() if k not in now})
    return path, ckpt["args"], ckpt["counters"][0]


def check_resume(args, resume):
    """Before any data is loaded: a run-defining flag (all but RESUMABLE) with another value than the checkpoint's is
    refused, and so is a --total-steps below its step."""
    if resume is None:
        return
    path, saved, step = resume
    for k in sorted(vars(args).keys() - RESUMABLE):
        if saved.get(k) != getattr(args, k):
            flag = f"--{k.replace('_', '-')}"
            fail(f"cannot resume from {path}: it was trained with {flag} {saved.get(k)}, not {getattr(args, k)}")
    if args.total_steps < step and not (args.generate or args.evaluate):
        fail(f"cannot resume from {path}: --total-steps {args.total_steps} is below its step {step}")


def exit_if_finished(args):
    """Resuming a run already at --total-steps has nothing to train: one line, exit 0, no file of the run changed."""
    path = newest_checkpoint(args) if args.resume == "auto" else args.resume
    if path and not (args.generate or args.evaluate):
        step = read_checkpoint(path, mmap=True)["counters"][0]
        if step == args.total_steps:
            print(f"{path} is already at step {step} of {step}: nothing to train "
                  f"(--total-steps N > {step} continues it)")
            sys.exit(0)


def load_checkpoint(args, models, optimizers):
    """Restore models and optimizers in place from --resume; returns (checkpoint, run directory) or (None, None)."""
    path = Path(args.resume) if args.resume != "auto" else newest_checkpoint(args)
    if path is None:
        print(f"--resume auto: no checkpoint of this dataset/exp-name/seed under {args.out_dir}/, starting fresh")
        return None, None
    try:
        ckpt = read_checkpoint(path)
        for group, modules in (("models", models), ("optimizers", optimizers)):
            for name, module in modules.items():
                module.load_state_dict(ckpt[group][name])
    except Exception as e:
        fail(f"cannot resume from {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if not (args.generate or args.evaluate):
        print(f"resuming {path} at step {ckpt['counters'][0]}")
    return ckpt, path.parent


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
            fail(f"cannot create a run directory under {args.out_dir}: {e.strerror or e}")
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
        kept = f"last good checkpoint: {run_dir / 'checkpoint.pt'} (step {saved_step})" if saved_step else "no checkpoint yet"
        fail(f"non-finite loss at step {int(first)} ({', '.join(f'{k} {v}' for k, v in zip(names, values))}); stopped, {kept}", code=1)


@torch.no_grad()
def generate(G, n, args, device, batch_size=500):
    """n samples of G in eval mode, batch by batch, from noise seeded by --seed alone: the same images each call (the
    same for --generate, --evaluate and the classifier metrics: the noise depends on the batch size, so it is one)."""
    noise = torch.Generator().manual_seed(args.seed)
    G.eval()
    for start in range(0, n, batch_size):
        yield G(torch.randn(min(batch_size, n - start), args.z_dim, generator=noise).to(device))


def progress(label, n):
    """A callback (done, total) printing a line with images/s and the ETA at each tenth."""
    start, printed = time.time(), set()

    def show(done, total=n):
        if 10 * done // total not in printed:
            printed.add(10 * done // total)
            rate = done / max(time.time() - start, 1e-9)
            print(f"{label}: {done}/{total} images | {rate:.0f} images/s | ETA {datetime.timedelta(seconds=round((total - done) / rate))}", flush=True)
    return show


def use_checkpoint(args, G, dataset, ckpt, run_dir, device):
    """--generate N: N samples as 8-bit PNGs (rounded as fid.to_uint8) in a new folder; --evaluate N: FID and IS of
    N samples against N training images, and on mnist / stacked-mnist the classifier metrics of the same N samples,
    written to evaluate_step<S>.json in the run directory. No training; returns what it measured."""
    step = ckpt["counters"][0]
    result = {"checkpoint": str(run_dir / "checkpoint.pt"), "step": step}
    if args.generate:
        out = Path(args.generate_dir or run_dir / f"generated_step{step:07d}_n{args.generate}")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            fail(f"{out} exists and is not an empty folder; not overwriting it (choose --generate-dir)")
        try:
            out.mkdir(parents=True, exist_ok=True)
            shown, done = progress(f"generating into {out}", args.generate), 0
            for images in generate(G, args.generate, args, device):
                for image in fid.to_uint8(images).permute(0, 2, 3, 1).cpu().numpy():
                    Image.fromarray(image.squeeze(2) if image.shape[2] == 1 else image).save(out / f"{done:06d}.png")
                    done += 1
                shown(done)
        except OSError as e:
            fail(f"cannot write samples to {out}: {e.strerror or e}")
        result["generated"] = str(out)
    if args.evaluate and args.fid:
        try:
            inception = fid.load_inception(args.fid_weights, device)
        except fid.FIDWeightsError as e:
            fail(str(e))
        ref_stats = fid.reference_statistics(dataset, reference_name(args), "train", args.image_size, inception,
                                             Path(args.out_dir) / "fid_stats", n=args.evaluate, device=device,
                                             num_workers=args.num_workers)
        samples = (chunk for images in generate(G, args.evaluate, args, device) for chunk in images.split(50))
        scores = fid.fid_from_generator(samples, args.evaluate, ref_stats, inception, device=device,
                                        progress=progress("evaluating", args.evaluate))
        result |= scores
        print(f"FID {scores['fid']:.4f} | IS {scores['is_mean']:.4f} +/- {scores['is_std']:.4f} "
              f"({args.evaluate} samples, step {step})")
    classifier = classifier_setup(args, device) if args.evaluate else None
    if classifier:
        result |= classifier_metrics(classifier, G, args, device, args.evaluate)
        print(" | ".join(f"{k} {v:.4f}" for k, v in result.items() if k in ("modes", "modes_kl", "classifier_fd", "class_kl"))
              + f" ({args.evaluate} samples, step {step})")
    if args.evaluate:
        path = run_dir / f"evaluate_step{step:07d}_n{args.evaluate}.json"
        try:
            path.write_text(json.dumps(result | {"samples": args.evaluate}, indent=2))
        except OSError as e:
            fail(f"cannot write {path}: {e.strerror or e}", code=1)
        print(f"written to {path}")
    return result


def classifier_setup(args, device):
    """On mnist and stacked-mnist: the MNIST classifier of fid.py (trained from the training set on first use, then
    cached) and, for mnist, the statistics of its features on the training digits; None on other datasets."""
    if args.dataset not in ("mnist", "stacked-mnist"):
        return None
    try:
        model, accuracy = fid.mnist_classifier(args.data_root, Path(args.out_dir) / "fid_stats", device, args.download)
        reference = fid.statistics(fid.classify(model, fid.mnist_digits(args.data_root, True)[0])[0]) if args.dataset == "mnist" else None
    except ValueError as e:
        fail(str(e))
    print(f"MNIST classifier: {100 * accuracy:.2f} % accuracy on the official test set")
    return model, reference


def classifier_metrics(classifier, G, args, device, n=None):
    """Stacked MNIST: modes covered and their KL to uniform; MNIST: classifier FD and class KL (fid.py), of n samples
    of G (default --classifier-samples), rounded to 8 bits as saved images and seen at the classifier's 32x32."""
    model, reference = classifier
    images = torch.cat([fid.to_uint8(nn.functional.interpolate(x, size=32, mode="bilinear", antialias=True) if x.shape[-1] != 32 else x).cpu()
                        for x in generate(G, n or args.classifier_samples, args, device)])
    G.train()
    return fid.stacked_mnist_modes(model, images) if args.dataset == "stacked-mnist" else fid.mnist_quality(model, images, reference)


def reference_name(args):
    """The FID statistics cache's name of the training set (a folder is named by its path's hash)."""
    return args.dataset if args.dataset != "folder" else f"folder-{zlib.crc32(os.path.abspath(args.data_root).encode()):08x}"


def main(argv=None):
    args = parse_args(argv)
    exit_if_finished(args)
    device = pick_device(args.device)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.backends.cudnn.benchmark = not args.torch_deterministic
    dataset = make_dataset(args)
    if len(dataset) < args.batch_size:
        fail(f"--batch-size {args.batch_size} is larger than the dataset ({len(dataset)} images)")
    channels = image_at(dataset, 0, args).shape[0]

    # ALGO LOGIC: networks and optimizers (G first, then D: the same seed gives the same initial weights)
    batch_norm = args.loss != "lsgan"  # the lens paper trains LSGAN without BN (Sec. 2.4)
    G = Generator(args.z_dim, channels, args.image_size, args.ngf, batch_norm).to(device)
    D = Discriminator(channels, args.image_size, args.ndf, batch_norm).to(device)
    G.apply(dcgan_init)
    D.apply(dcgan_init)
    models = {"G": G, "D": D}
    optimizers = {"G": torch.optim.Adam(G.parameters(), lr=args.lr_g, betas=(args.beta1, args.beta2)),
                  "D": torch.optim.Adam(D.parameters(), lr=args.lr_d, betas=(args.beta1, args.beta2))}

    unroll_ms = 0.0  # the unroll's wall time per unrolled step, measured on log steps only

    # TRY NOT TO MODIFY: the EMA generator, resume or use a checkpoint, start a run, logging, FID setup
    if args.ema_decay:  # samples and FID come from the average of G's weights
        models["G_ema"] = copy.deepcopy(G).requires_grad_(False)
    G_sample = models.get("G_ema", G)
    ckpt, run_dir = load_checkpoint(args, models, optimizers) if args.resume else (None, None)
    if args.generate or args.evaluate:
        if not ckpt:
            fail(f"no checkpoint to use under {args.out_dir}/ (--resume auto)")
        return use_checkpoint(args, G_sample, dataset, ckpt, run_dir, device)
    step, batches_used, best_fid, last_fid = (ckpt or {}).get("counters", (0, 0, None, None))
    wall_before = (ckpt or {}).get("wall_time", 0.0)  # seconds of the run's earlier parts
    start_rng = ckpt["rng"] if ckpt else rng_state()
    # everything the run needs is checked before anything is written: a failed start leaves nothing behind
    images = load_images(dataset, args)
    images = images if images is None else images.to(device)
    if args.eval_every and args.fid:
        try:
            inception = fid.load_inception(args.fid_weights, device)
            ref_stats = fid.reference_statistics(dataset, reference_name(args), "train", args.image_size, inception, Path(args.out_dir) / "fid_stats",
                                                 n=args.fid_samples, device=device, num_workers=args.num_workers)
        except fid.FIDWeightsError as e:
            fail(str(e))
    classifier = classifier_setup(args, device) if args.eval_every else None  # after FID: its errors come first
    if args.track:
        try:
            import wandb
        except ImportError:
            fail("--track needs wandb: pip install wandb")
    run_dir, new = (run_dir, False) if run_dir else (new_run_dir(args), True)
    try:
        metrics = run_dir / "metrics.jsonl"  # on resume, lines after the checkpoint's step are logged again
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        metrics.write_text("".join(f"{line}\n" for line in lines if json.loads(line)["step"] <= step))
        metrics_file = open(metrics, "a")
        (run_dir / "samples").mkdir(exist_ok=True)
        (run_dir / "args.json").write_text(json.dumps(vars(args), indent=2))
    except OSError as e:
        if new:
            shutil.rmtree(run_dir, ignore_errors=True)
        fail(f"cannot write to {run_dir}: {e.strerror or e}")
    if args.track:
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, config=vars(args), name=run_dir.name,
                   dir=str(run_dir), sync_tensorboard=True)
    writer = SummaryWriter(str(run_dir)) if SummaryWriter else None
    fixed_z = torch.randn(64, args.z_dim, generator=torch.Generator().manual_seed(args.seed)).to(device)
    ema = "_ema" if args.ema_decay else ""  # metrics of the EMA generator say so in their names
    saved_step, interrupted, values, stats, bad = (step if ckpt else None), [], {}, {}, None

    def checkpoint():
        nonlocal saved_step
        stop_if_non_finite(bad, stats, run_dir, saved_step)  # never save weights that a non-finite step has touched
        try:
            save_checkpoint(run_dir / "checkpoint.pt", {
                "counters": (step, batches_used, best_fid, last_fid), "args": vars(args), "rng": rng_state(),
                "wall_time": wall_before + time.time() - start_time,
                "models": {k: m.state_dict() for k, m in models.items()},
                "optimizers": {k: o.state_dict() for k, o in optimizers.items()}})
        except OSError as e:
            kept = f"the last one is of step {saved_step}" if saved_step else "none was written"
            fail(f"cannot write {run_dir / 'checkpoint.pt'}: {e.strerror or e}; {kept}", code=1)
        saved_step = step

    def on_sigint(*_):
        if interrupted:
            raise KeyboardInterrupt  # second Ctrl-C: abort at once
        interrupted.append(True)
        print("Ctrl-C: saving a checkpoint after this step (press again to abort)", file=sys.stderr, flush=True)

    previous_handler = signal.signal(signal.SIGINT, on_sigint)
    batches = infinite_batches(dataset, images, args, device, start=batches_used)
    set_rng_state(start_rng)  # whatever the setup drew (Inception init, ...), training noise starts here
    start_time = last_log_time = time.time()
    last_log_step = step
    print(f"training {args.exp_name} on {args.dataset} ({len(dataset)} images, {'streamed' if images is None else 'in memory'}) "
          f"on {device}; run directory {run_dir}")
    try:
        while step < args.total_steps and not interrupted:
            # ALGO LOGIC: n_critic discriminator updates on fresh real batches; on the last one G's unrolled step
            # (eq. 10) and D's ordinary step (eq. 11) share the minibatch and both start from this (theta_G, theta_D)
            for i in range(args.n_critic):
                real = next(batches)
                batches_used += 1
                last = i == args.n_critic - 1
                with torch.set_grad_enabled(last):
                    fake = G(torch.randn(args.batch_size, args.z_dim, device=device))
                if last:  # before D's step: the unroll starts from D's live parameters and Adam state
                    timed = (step + 1) % args.log_every == 0 or step + 1 == args.total_steps  # timing waits for the device
                    unroll_start = wall_clock(device) if timed else 0.0
                    loss_g_unrolled = unrolled_generator_loss(D, optimizers["D"], real, fake, args.loss, args.unroll_steps,
                                                              args.first_order)
                    optimizers["G"].zero_grad(set_to_none=True)
                    loss_g_unrolled.backward(inputs=list(G.parameters()))  # eq. (12); D's .grad is left alone
                    loss_g_unrolled, fake = loss_g_unrolled.detach(), fake.detach()  # free the unrolled graph now
                    unroll_ms = 1000 * (wall_clock(device) - unroll_start) / max(args.unroll_steps, 1) if timed else unroll_ms
                real_logits, fake_logits = D(real), D(fake)
                loss_d = d_loss(real_logits, fake_logits, args.loss)
                optimizers["D"].zero_grad(set_to_none=True)
                loss_d.backward()
                optimizers["D"].step()  # eq. (11)
            optimizers["G"].step()  # eq. (10)
            step += 1
            stats = {"d_loss": loss_d, "g_loss": g_loss(fake_logits, args.loss), "g_unrolled_loss": loss_g_unrolled,
                     "d_real": d_score(real_logits, args.loss), "d_fake": d_score(fake_logits, args.loss),
                     "unroll_ms": loss_d.new_full((), unroll_ms)}  # a fill, not a host-to-device copy (which would wait)

            # TRY NOT TO MODIFY: EMA, non-finite check (read only where the host waits anyway), logging, samples, FID, checkpoints
            if args.ema_decay:
                ema_update(models["G_ema"], G, args.ema_decay)
            stats_t = torch.stack([v.detach().float() for v in stats.values()])
            bad = first_non_finite(bad, step, stats_t)
            record = {"step": step}
            if step % args.log_every == 0 or step == args.total_steps:
                stop_if_non_finite(bad, stats, run_dir, saved_step)
                values = dict(zip(stats, stats_t.tolist()))
                sps = (step - last_log_step) / max(time.time() - last_log_time, 1e-9)
                last_log_step, last_log_time = step, time.time()
                record.update(values, sps=sps)
                print(f"step {step}/{args.total_steps} | " + " | ".join(f"{k} {v:.4f}" for k, v in values.items())
                      + f" | {sps:.2f} steps/s | ETA {datetime.timedelta(seconds=round((args.total_steps - step) / sps))}", flush=True)
            if (args.sample_every and step % args.sample_every == 0) or step == args.total_steps:
                grid = sample_grid(G_sample, fixed_z)
                save_image(grid, run_dir / "samples" / f"step_{step:07d}.png")
                if writer:
                    writer.add_image("samples", grid, step)
            if args.eval_every and args.fid and (step % args.eval_every == 0 or step == args.total_steps):
                noise = torch.Generator().manual_seed(args.seed + step)  # own RNG: evaluating never shifts training noise
                G_sample.eval()
                with torch.no_grad():
                    scores = fid.fid_from_generator(lambda n: G_sample(torch.randn(n, args.z_dim, generator=noise).to(device)),
                                                    args.fid_samples, ref_stats, inception, device=device)
                G_sample.train()
                last_fid, best_fid = scores["fid"], min(scores["fid"], best_fid or math.inf)
                record.update({f"fid{ema}": last_fid, f"inception_score{ema}": scores["is_mean"]})
                print(f"step {step}: FID{ema.replace('_', ' ')} {last_fid:.2f} (best {best_fid:.2f}), IS {scores['is_mean']:.2f}", flush=True)
            if classifier and (step % args.eval_every == 0 or step == args.total_steps):  # mnist, stacked-mnist
                scores = classifier_metrics(classifier, G_sample, args, device)
                record.update({f"{k}{ema}": v for k, v in scores.items()})
                print(f"step {step}: " + " | ".join(f"{k}{ema.replace('_', ' ')} {v:.4f}" for k, v in scores.items()), flush=True)
            if len(record) > 1:
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                for k, v in record.items():
                    if writer and k != "step":
                        writer.add_scalar(("losses/" if k.endswith("loss") else "charts/") + k, v, step)
            if args.checkpoint_every and step % args.checkpoint_every == 0:
                checkpoint()
        checkpoint()
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        metrics_file.close()
        if writer:
            writer.close()
        if args.track:
            wandb.finish()

    summary = {"run_dir": str(run_dir), "step": step, **values, "fid": last_fid, "best_fid": best_fid,
               "fid_of": "G_ema" if ema else "G", "wall_time": wall_before + time.time() - start_time}  # all parts
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if interrupted:
        print(f"interrupted at step {step}; checkpoint saved, continue with --resume {run_dir / 'checkpoint.pt'}", file=sys.stderr)
        sys.exit(130)
    return summary


if __name__ == "__main__":
    main()
