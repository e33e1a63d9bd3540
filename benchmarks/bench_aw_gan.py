"""Cost of the aw-loss per discriminator update on CPU: aw_gan.aw_d_step with adaptive weights and with --no-aw,
against the plain SN-GAN D step (one backward pass of L_r + L_f, as gan.py and sngan.pytorch do it).

The three variants run on copies of the same spectral-norm D with the same batches; the timed steps are interleaved
(the order rotates every round) so that load from other processes hits them alike. Prints a markdown table of the
median milliseconds per D step and the ratio to the plain step: compare ratios, not absolute numbers.

    python benchmarks/bench_aw_gan.py          # SN-GAN ResNet D (width 128) and standard CNN D, 32x32, batch 64
    python benchmarks/bench_aw_gan.py --arch resnet --ndf 32 --repeats 21
"""

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import aw_gan  # noqa: E402


def plain_d_step(D, optimizer, real, fake, loss):
    """The unweighted step every GAN codebase runs: one backward pass of L_r + L_f."""
    optimizer.zero_grad(set_to_none=True)
    sum(aw_gan.d_loss_parts(D(real), D(fake), loss)).backward()
    optimizer.step()


def aw_arithmetic(params, grads_real, grads_fake):
    """What aw_d_step adds to the two backward passes: flatten, the dot products of Algorithm 1 and of the logged
    angle, the weighted sum (eq. 2) and its split back into .grad (the paper counts ~9k operations for k weights)."""
    grad_real, grad_fake = torch.cat([g.flatten() for g in grads_real]), torch.cat([g.flatten() for g in grads_fake])
    w_r, w_f, _ = aw_gan.aw_weights(grad_real, grad_fake, 0.6, 0.2)
    aw_gan.gradient_angle(grad_real, grad_fake)
    for p, g in zip(params, (w_r * grad_real + w_f * grad_fake).split([p.numel() for p in params])):
        p.grad = g.view_as(p)


def measure(arch, ndf, args):
    """Median seconds per D step of each variant, and D's parameter count."""
    torch.manual_seed(0)
    D = {"resnet": aw_gan.ResNetDiscriminator, "cnn": aw_gan.CNNDiscriminator}[arch](3, args.image_size, ndf)
    D.apply(aw_gan.sngan_init if arch == "resnet" else aw_gan.dcgan_init)
    aw_gan.spectral_norm_all(D)
    steps = {
        "plain (L_r + L_f).backward()": plain_d_step,
        "aw_d_step --no-aw": lambda *a: aw_gan.aw_d_step(*a, aw=False),
        "aw_d_step (aw)": lambda *a: aw_gan.aw_d_step(*a, aw=True),
    }
    variants = {}
    for name, step in steps.items():
        net = copy.deepcopy(D)
        variants[name] = (step, net, torch.optim.Adam(net.parameters(), 2e-4, betas=(0.0, 0.9)), [])
    batches = [
        (
            torch.rand(args.batch_size, 3, args.image_size, args.image_size) * 2 - 1,
            torch.tanh(torch.randn(args.batch_size, 3, args.image_size, args.image_size)),
        )
        for _ in range(2)
    ]
    names = list(variants)
    for r in range(args.warmup + args.repeats):
        for name in names[r % 3 :] + names[: r % 3]:  # rotate the order every round
            step, net, optimizer, times = variants[name]
            real, fake = batches[r % 2]
            start = time.perf_counter()
            step(net, optimizer, real, fake, args.loss)
            if r >= args.warmup:
                times.append(time.perf_counter() - start)
    seconds = {name: statistics.median(v[3]) for name, v in variants.items()}
    params = list(D.parameters())  # the aw arithmetic alone is fast and steady: time it on its own, many times
    grads = [[torch.randn_like(p) for p in params] for _ in range(2)]
    times = []
    for _ in range(10 * args.repeats):
        start = time.perf_counter()
        aw_arithmetic(params, *grads)
        times.append(time.perf_counter() - start)
    seconds["aw arithmetic alone"] = statistics.median(times[len(times) // 10 :])
    return seconds, sum(p.numel() for p in params)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", nargs="+", default=["resnet", "cnn"], choices=("resnet", "cnn"))
    p.add_argument("--ndf", type=int, default=None, help="D width (default: the script's, 128 resnet / 64 cnn)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64, help="D batch (the paper's 64)")
    p.add_argument("--loss", default="hinge", choices=("hinge", "gan"))
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads (1: a second thread on a shared 2-core machine mostly spins)",
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds")
    p.add_argument("--repeats", type=int, default=9, help="timed rounds (median)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"CPU, {args.threads} threads, batch {args.batch_size}, {args.image_size}x{args.image_size}, "
        f"--loss {args.loss}, "
        f"median of {args.repeats} interleaved steps after {args.warmup} warm-up rounds, torch {torch.__version__}\n"
    )
    print("| D | parameters | variant | ms / D step | ratio to plain |")
    print("|---|---:|---|---:|---:|")
    for arch in args.arch:
        ndf = args.ndf or {"resnet": 128, "cnn": 64}[arch]
        seconds, n_params = measure(arch, ndf, args)
        plain = next(iter(seconds.values()))
        for name, s in seconds.items():
            print(f"| {arch} ndf {ndf} | {n_params:,} | {name} | {1000 * s:.1f} | {s / plain:.4f} |")


if __name__ == "__main__":
    main()
