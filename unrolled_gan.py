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

Usage: python unrolled_gan.py --dataset stacked-mnist --unroll-steps 5 --ndf 16
"""
import argparse
import datetime
import json
import math
import os
import random
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
    p.add_argument("--num-workers", type=int, default=2, help="data loader processes")
    p.add_argument("--total-steps", type=int, default=100_000, help="generator updates")
    p.add_argument("--batch-size", type=int, default=64)
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
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints (one is always written at the end)")
    # method-specific arguments
    p.add_argument("--loss", default="gan", choices=("gan", "mm", "lsgan", "hinge"), help="GAN objective (see the module docstring)")
    p.add_argument("--ngf", type=int, default=64, help="generator width")
    p.add_argument("--ndf", type=int, default=64, help="discriminator width (32 or 16: the paper's D of 1/2 or 1/4 of G)")
    p.add_argument("--unroll-steps", type=int, default=5, help="K, D's Adam steps that G looks ahead (0 = the plain GAN)")
    p.add_argument("--first-order", action=argparse.BooleanOptionalAction, default=False,
                   help="drop the second-order term of eq. (12): cheaper, an approximation")
    p.error = fail  # one error line instead of argparse's usage dump
    args = p.parse_args(argv)

    if args.image_size < 16 or args.image_size & (args.image_size - 1):
        p.error(f"--image-size must be a power of 2 >= 16 for these networks, got {args.image_size}")
    positive = ("batch_size", "total_steps", "n_critic", "z_dim", "log_every", "fid_samples", "lr_g", "lr_d")
    for name in positive + ("num_workers", "sample_every", "eval_every", "checkpoint_every"):
        value = getattr(args, name)
        if not (value > 0 if name in positive else value >= 0):  # `not` also rejects NaN
            p.error(f"--{name.replace('_', '-')} must be {'positive' if name in positive else '>= 0'}, got {value}")
    if not (0 <= args.beta1 < 1 and 0 <= args.beta2 < 1):
        p.error(f"Adam betas must be in [0, 1), got {args.beta1}, {args.beta2}")
    # method-specific checks
    if args.ngf <= 0 or args.ndf <= 0:
        p.error(f"--ngf and --ndf must be positive, got {args.ngf}, {args.ndf}")
    if args.unroll_steps < 0:
        p.error(f"--unroll-steps must be >= 0, got {args.unroll_steps}")
    return args


def fail(message, code=2):
    """One clear error line and a non-zero exit, never a traceback (2 = bad input, as argparse)."""
    print(f"{Path(__file__).name}: error: {message}", file=sys.stderr)
    sys.exit(code)


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


def make_dataset(args):
    """The training set as images in [-1, 1] of shape (C, S, S); one clear error when it is missing."""
    size, root, name = args.image_size, args.data_root, args.dataset
    normalize = [T.ToTensor(), T.Normalize(0.5, 0.5)]
    resize = [T.Resize(size), T.CenterCrop(size)]
    mnist_tf = T.Compose([T.Pad(2)] + ([] if size == 32 else [T.Resize(size)]) + normalize)  # 28 -> 32 as the lens paper
    try:
        if name in ("mnist", "stacked-mnist"):
            mnist = torchvision.datasets.MNIST(root, train=True, download=args.download, transform=mnist_tf)
            return mnist if name == "mnist" else StackedMNIST(mnist, args.seed)
        if name == "fashion-mnist":
            return torchvision.datasets.FashionMNIST(root, train=True, download=args.download, transform=mnist_tf)
        if name in ("cifar10", "cifar100"):
            cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
            return cls(root, train=True, download=args.download, transform=T.Compose(resize + normalize))
        if name == "stl10":
            return torchvision.datasets.STL10(root, split="train+unlabeled", download=args.download, transform=T.Compose(resize + normalize))
        if name == "celeba":  # center crop 108 (the DCGAN-tensorflow convention), then resize
            tf = T.Compose([T.CenterCrop(108)] + resize + normalize)
            return torchvision.datasets.CelebA(root, split="train", download=args.download, transform=tf)
        return torchvision.datasets.ImageFolder(root, transform=T.Compose([T.Lambda(lambda im: im.convert("RGB"))] + resize + normalize))
    except Exception as e:  # torchvision raises RuntimeError, OSError, URLError, ... for missing or undownloadable data
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        hint = "" if name == "folder" else " (the download failed: no internet?)" if args.download else ", or use --download"
        fail(f"cannot load dataset {name!r} from {os.path.abspath(root)}: {why}. Put the files there{hint}.")


def _ignore_sigint(_):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the main process only


def infinite_batches(dataset, args, start=0):
    """Yield image batches forever. Epoch e is shuffled by (seed, e) alone, so a run resumed after `start`
    batches continues with exactly the batches the uninterrupted run would have seen."""
    per_epoch = len(dataset) // args.batch_size
    epoch, skip = divmod(start, per_epoch)
    while True:
        epoch_rng = torch.Generator().manual_seed(args.seed * 1_000_003 + epoch)
        order = torch.randperm(len(dataset), generator=epoch_rng)[skip * args.batch_size: per_epoch * args.batch_size]
        loader = torch.utils.data.DataLoader(  # its own generator: making a loader never draws from the global RNG
            dataset, args.batch_size, sampler=order.tolist(), num_workers=args.num_workers, drop_last=True,
            pin_memory=torch.cuda.is_available(), worker_init_fn=_ignore_sigint, generator=epoch_rng)
        for images, _ in loader:
            yield images
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
def d_loss(real_logits, fake_logits, loss):
    """Discriminator loss, a mean over the batch of each term."""
    if loss in ("gan", "mm"):  # eq. (6): -log D(x) - log(1 - D(G(z)))
        return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    if loss == "lsgan":  # eq. (10)
        return ((real_logits - 1) ** 2).mean() + (fake_logits ** 2).mean()
    if loss == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    raise ValueError(f"unknown loss {loss!r}")


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


def d_loss_real(real_logits, loss):
    """The real-data half of d_loss: the part of f that G reaches only through theta_D^K(theta_G) (eq. 12)."""
    if loss in ("gan", "mm"):
        return F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    return ((real_logits - 1) ** 2).mean() if loss == "lsgan" else F.relu(1 - real_logits).mean()


def adam_state(optimizer, params):
    """An optimizer's live Adam state per parameter name, as adam_step takes it (zeros before its first step).
    These are the live tensors, read and never written; .get() so that not even an empty entry is added."""
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


def wall_clock(device):
    """time.perf_counter() once the device has run its queued work (CUDA and MPS run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
    return time.perf_counter()


def rng_state():
    return {"python": random.getstate(), "numpy": np.random.get_state()[1].tolist(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), 624, 0, 0.0))  # np.random is reseeded state-wise only
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path, state):
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill during the save never leaves a half-written checkpoint


# args that may change on resume; every other one defines the run and must match the checkpoint
RESUMABLE = {"resume", "total_steps", "device", "num_workers", "out_dir", "data_root", "download", "track",
             "wandb_project_name", "wandb_entity", "log_every", "sample_every", "eval_every", "fid_samples",
             "fid_weights", "checkpoint_every"}


def load_checkpoint(args, models, optimizers):
    """Restore models and optimizers in place from --resume; returns (checkpoint, run directory) or (None, None)."""
    path = Path(args.resume)
    if args.resume == "auto":
        found = sorted(Path(args.out_dir).glob(f"{args.dataset}__{args.exp_name}__{args.seed}__*/checkpoint.pt"),
                       key=lambda f: f.stat().st_mtime)
        if not found:
            print(f"--resume auto: no checkpoint of this dataset/exp-name/seed under {args.out_dir}/, starting fresh")
            return None, None
        path = found[-1]
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        for k in vars(args).keys() - RESUMABLE:
            if ckpt["args"].get(k) != getattr(args, k):
                raise ValueError(f"it was trained with --{k.replace('_', '-')} {ckpt['args'].get(k)}, not {getattr(args, k)}")
        for group, modules in (("models", models), ("optimizers", optimizers)):
            for name, module in modules.items():
                module.load_state_dict(ckpt[group][name])
    except Exception as e:
        fail(f"cannot resume from {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    metrics = path.parent / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.exists() else []
    metrics.write_text("".join(f"{line}\n" for line in lines if json.loads(line)["step"] <= ckpt["counters"][0]))  # drop later steps
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
    fail(f"cannot create a run directory under {args.out_dir}")


@torch.no_grad()
def sample_grid(G, z):
    G.eval()  # BN running statistics, not the grid's own batch statistics
    images = G(z)
    G.train()
    return make_grid(images, nrow=8, normalize=True, value_range=(-1, 1))


def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.backends.cudnn.benchmark = not args.torch_deterministic
    dataset = make_dataset(args)
    if len(dataset) < args.batch_size:
        fail(f"--batch-size {args.batch_size} is larger than the dataset ({len(dataset)} images)")
    channels = dataset[0][0].shape[0]

    # ALGO LOGIC: networks and optimizers (G first, then D: the same seed gives the same initial weights)
    batch_norm = args.loss != "lsgan"  # the lens paper trains LSGAN without BN (Sec. 2.4)
    G = Generator(args.z_dim, channels, args.image_size, args.ngf, batch_norm).to(device)
    D = Discriminator(channels, args.image_size, args.ndf, batch_norm).to(device)
    G.apply(dcgan_init)
    D.apply(dcgan_init)
    models = {"G": G, "D": D}
    optimizers = {"G": torch.optim.Adam(G.parameters(), lr=args.lr_g, betas=(args.beta1, args.beta2)),
                  "D": torch.optim.Adam(D.parameters(), lr=args.lr_d, betas=(args.beta1, args.beta2))}

    # TRY NOT TO MODIFY: resume or start a run, logging, FID setup
    ckpt, run_dir = load_checkpoint(args, models, optimizers) if args.resume else (None, None)
    step, batches_used, best_fid, last_fid = (ckpt or {}).get("counters", (0, 0, None, None))
    start_rng = ckpt["rng"] if ckpt else rng_state()
    run_dir = run_dir or new_run_dir(args)
    (run_dir / "samples").mkdir(exist_ok=True)
    (run_dir / "args.json").write_text(json.dumps(vars(args), indent=2))
    if args.eval_every:
        try:
            inception = fid.load_inception(args.fid_weights, device)
            ref_name = args.dataset if args.dataset != "folder" else f"folder-{zlib.crc32(os.path.abspath(args.data_root).encode()):08x}"
            ref_stats = fid.reference_statistics(dataset, ref_name, "train", args.image_size, inception, Path(args.out_dir) / "fid_stats",
                                                 n=args.fid_samples, device=device, num_workers=args.num_workers)
        except fid.FIDWeightsError as e:
            fail(str(e))
    if args.track:
        try:
            import wandb
        except ImportError:
            fail("--track needs wandb: pip install wandb")
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, config=vars(args), name=run_dir.name,
                   dir=str(run_dir), sync_tensorboard=True)
    writer = SummaryWriter(str(run_dir)) if SummaryWriter else None
    metrics_file = open(run_dir / "metrics.jsonl", "a")
    fixed_z = torch.randn(64, args.z_dim, generator=torch.Generator().manual_seed(args.seed)).to(device)
    saved_step, interrupted, values = (step if ckpt else None), [], {}

    def checkpoint():
        nonlocal saved_step
        save_checkpoint(run_dir / "checkpoint.pt", {
            "counters": (step, batches_used, best_fid, last_fid), "args": vars(args), "rng": rng_state(),
            "models": {k: m.state_dict() for k, m in models.items()},
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()}})
        saved_step = step

    def on_sigint(*_):
        if interrupted:
            raise KeyboardInterrupt  # second Ctrl-C: abort at once
        interrupted.append(True)
        print("Ctrl-C: saving a checkpoint after this step (press again to abort)", file=sys.stderr, flush=True)

    previous_handler = signal.signal(signal.SIGINT, on_sigint)
    batches = infinite_batches(dataset, args, start=batches_used)
    set_rng_state(start_rng)  # whatever the setup drew (Inception init, ...), training noise starts here
    start_time = last_log_time = time.time()
    last_log_step = step
    print(f"training {args.exp_name} on {args.dataset} ({len(dataset)} images) on {device}; run directory {run_dir}")
    try:
        while step < args.total_steps and not interrupted:
            # ALGO LOGIC: n_critic discriminator updates on fresh real batches; on the last one G's unrolled step
            # (eq. 10) and D's ordinary step (eq. 11) share the minibatch and both start from this (theta_G, theta_D)
            for i in range(args.n_critic):
                real = next(batches).to(device, non_blocking=True)
                batches_used += 1
                last = i == args.n_critic - 1
                with torch.set_grad_enabled(last):
                    fake = G(torch.randn(args.batch_size, args.z_dim, device=device))
                if last:  # before D's step: the unroll starts from D's live parameters and Adam state
                    unroll_start = wall_clock(device)
                    loss_g_unrolled = unrolled_generator_loss(D, optimizers["D"], real, fake, args.loss, args.unroll_steps,
                                                              args.first_order)
                    optimizers["G"].zero_grad(set_to_none=True)
                    loss_g_unrolled.backward(inputs=list(G.parameters()))  # eq. (12); D's .grad is left alone
                    unroll_ms = 1000 * (wall_clock(device) - unroll_start) / max(args.unroll_steps, 1)
                real_logits, fake_logits = D(real), D(fake.detach())
                loss_d = d_loss(real_logits, fake_logits, args.loss)
                optimizers["D"].zero_grad(set_to_none=True)
                loss_d.backward()
                optimizers["D"].step()  # eq. (11)
            optimizers["G"].step()  # eq. (10)
            step += 1
            stats = {"d_loss": loss_d, "g_loss": g_loss(fake_logits, args.loss), "g_unrolled_loss": loss_g_unrolled,
                     "d_real": d_score(real_logits, args.loss), "d_fake": d_score(fake_logits, args.loss),
                     "unroll_ms": torch.tensor(unroll_ms, device=device)}

            # TRY NOT TO MODIFY: non-finite check, logging, samples, FID, checkpoints
            values = dict(zip(stats, torch.stack([v.detach().float() for v in stats.values()]).tolist()))
            if not all(map(math.isfinite, values.values())):
                kept = f"last good checkpoint: {run_dir / 'checkpoint.pt'} (step {saved_step})" if saved_step else "no checkpoint yet"
                fail(f"non-finite loss at step {step} ({', '.join(f'{k} {v}' for k, v in values.items())}); stopped, {kept}", code=1)
            record = {"step": step}
            if step % args.log_every == 0 or step == args.total_steps:
                sps = (step - last_log_step) / max(time.time() - last_log_time, 1e-9)
                last_log_step, last_log_time = step, time.time()
                record.update(values, sps=sps)
                print(f"step {step}/{args.total_steps} | " + " | ".join(f"{k} {v:.4f}" for k, v in values.items())
                      + f" | {sps:.2f} steps/s | ETA {datetime.timedelta(seconds=round((args.total_steps - step) / sps))}", flush=True)
            if (args.sample_every and step % args.sample_every == 0) or step == args.total_steps:
                grid = sample_grid(G, fixed_z)
                save_image(grid, run_dir / "samples" / f"step_{step:07d}.png")
                if writer:
                    writer.add_image("samples", grid, step)
            if args.eval_every and (step % args.eval_every == 0 or step == args.total_steps):
                noise = torch.Generator().manual_seed(args.seed + step)  # own RNG: evaluating never shifts training noise
                G.eval()
                with torch.no_grad():
                    scores = fid.fid_from_generator(lambda n: G(torch.randn(n, args.z_dim, generator=noise).to(device)),
                                                    args.fid_samples, ref_stats, inception, device=device)
                G.train()
                last_fid, best_fid = scores["fid"], min(scores["fid"], best_fid or math.inf)
                record.update(fid=last_fid, inception_score=scores["is_mean"])
                print(f"step {step}: FID {last_fid:.2f} (best {best_fid:.2f}), IS {scores['is_mean']:.2f}", flush=True)
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
               "wall_time": time.time() - start_time}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if interrupted:
        print(f"interrupted at step {step}; checkpoint saved, continue with --resume {run_dir / 'checkpoint.pt'}", file=sys.stderr)
        sys.exit(130)
    return summary


if __name__ == "__main__":
    main()
