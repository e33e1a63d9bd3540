"""Cost of a WGAN-GP critic step relative to a gan.py discriminator step, on CPU.

Each step is what the scripts' training loops do once per critic/discriminator update: a fake batch from G under
no_grad, the loss on a real and the fake batch (plus, for WGAN-GP, the gradient penalty on the interpolates, a
double backprop), backward, Adam. Same batch, width (ngf = ndf), image size, channels and z-dim for all variants:

  gan.py D step          DCGAN D of gan.py (4x4 kernels, BN), non-saturating loss
  critic, no penalty     wgan_gp.py's DCGAN critic (5x5 kernels, no BN), L_D = D(G(z)) - D(x): the architecture's share
  critic step            the same with lambda * gradient_penalty: what wgan_gp.py runs
  resnet critic step     --arch resnet's critic with the penalty
  (and each script's generator step, for the cost per generator update with n_critic critic steps;
   the resnet's generator batch is twice the critic's, its default)

Variants are interleaved within each repeat so that machine load affects them alike; the table gives medians.
Usage: python benchmarks/bench_wgan_gp.py --threads 1 --batch-size 64 --width 64
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gan  # noqa: E402
import wgan_gp  # noqa: E402


def adam(module):
    return torch.optim.Adam(module.parameters(), lr=1e-4, betas=(0.5, 0.9))


def update(optimizer, loss):
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def make_variants(args):
    """name -> a function doing one update; networks built as the scripts build them."""
    real = torch.rand(args.batch_size, args.channels, args.image_size, args.image_size) * 2 - 1
    noise = lambda multiple=1: torch.randn(multiple * args.batch_size, args.z_dim)  # noqa: E731

    def fake(G):
        with torch.no_grad():
            return G(noise())

    G, D = (
        gan.Generator(args.z_dim, args.channels, args.image_size, args.width),
        gan.Discriminator(args.channels, args.image_size, args.width),
    )
    G.apply(gan.dcgan_init)
    D.apply(gan.dcgan_init)
    gan_opt = {"G": adam(G), "D": adam(D)}
    nets = {
        arch: (g(args.z_dim, args.channels, args.image_size, args.width), c(args.channels, args.image_size, args.width))
        for arch, (g, c) in wgan_gp.NETWORKS.items()
    }
    opts = {arch: (adam(g), adam(c)) for arch, (g, c) in nets.items()}

    def critic_step(arch, gp_lambda):
        g, c = nets[arch]
        x_fake = fake(g)
        loss = c(x_fake).mean() - c(real).mean()
        if gp_lambda:
            loss = loss + gp_lambda * wgan_gp.gradient_penalty(c, real, x_fake)
        update(opts[arch][1], loss)

    def wgan_g_step(arch):  # the resnet's generator batch is 2 x the critic's, as in gan_cifar_resnet.py
        g, c = nets[arch]
        update(opts[arch][0], -c(g(noise(wgan_gp.ARCH_DEFAULTS[arch]["g_batch_multiple"]))).mean())

    return {
        "gan.py D step": lambda: update(gan_opt["D"], gan.d_loss(D(real), D(fake(G)), "gan")),
        "wgan_gp critic, no penalty": lambda: critic_step("dcgan", 0.0),
        "wgan_gp critic step": lambda: critic_step("dcgan", 10.0),
        "wgan_gp resnet critic step": lambda: critic_step("resnet", 10.0),
        "gan.py G step": lambda: update(gan_opt["G"], gan.g_loss(D(G(noise())), "gan")),
        "wgan_gp G step": lambda: wgan_g_step("dcgan"),
        "wgan_gp resnet G step": lambda: wgan_g_step("resnet"),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--width", type=int, default=64, help="ngf = ndf of every network (gan.py's default 64; wgan_gp's 128)"
    )
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--z-dim", type=int, default=128)
    p.add_argument("--n-critic", type=int, default=5, help="critic steps per generator step, for the per-update row")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds; each runs every variant --inner times")
    p.add_argument("--inner", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    variants = make_variants(args)
    for fn in variants.values():
        for _ in range(args.warmup):
            fn()
    times = {name: [] for name in variants}
    for r in range(args.repeats):
        names = list(variants)[r % len(variants) :] + list(variants)[: r % len(variants)]  # rotate the order too
        for name in names:
            start = time.perf_counter()
            for _ in range(args.inner):
                variants[name]()
            times[name].append((time.perf_counter() - start) / args.inner)
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    base = ms["gan.py D step"]
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch_size}, width {args.width}, "
        f"{args.channels}x{args.image_size}x{args.image_size}, median of {args.repeats} x {args.inner}\n"
    )
    print("| step | ms | x gan.py D step |\n|---|---:|---:|")
    for name, t in ms.items():
        print(f"| {name} | {t:.1f} | {t / base:.2f} |")
    gan_update = ms["gan.py D step"] + ms["gan.py G step"]
    for arch, prefix in (("dcgan", "wgan_gp"), ("resnet", "wgan_gp resnet")):
        update_ms = args.n_critic * ms[f"{prefix} critic step"] + ms[f"{prefix} G step"]
        print(
            f"| {arch}: one generator update with {args.n_critic} critic steps | {update_ms:.1f} | "
            f"{update_ms / gan_update:.2f} x gan.py's D + G |"
        )


if __name__ == "__main__":
    main()
