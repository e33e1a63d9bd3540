"""Cost of one unrolled_gan.py iteration against the number of unrolled steps K (issue 7).

One iteration is the body of the script's training loop: G(z), the unrolled generator loss f_K and its backward
pass (eq. 12, second order, or --first-order), D's ordinary step (eq. 11) and G's step (eq. 10); K = 0 is the plain
GAN iteration. Times are also given in units of one plain D step (forward on a given real and fake batch, backward,
Adam step), the unit of "about K + 1 D steps", and so is the extra cost of each unrolled step, (t_K - t_0) / K.
Every variant trains its own copy of the same G and D; the variants are interleaved within each repeat so that the
load of a shared machine hits them alike, and the median over the repeats is reported. Absolute numbers depend on
the machine: compare the ratios.

--arch metz times the paper's stacked-MNIST networks (batch 128, 28x28, z 256, --d-size); --profile then lists
where a K = 5 iteration's time goes (torch.profiler, by operator).

Usage: python benchmarks/bench_unrolled_gan.py --threads 2 --repeats 5
       python benchmarks/bench_unrolled_gan.py --arch metz --threads 1 --ks 0 5 10 --repeats 20 --profile
"""

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import unrolled_gan as ug  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--ks", type=int, nargs="+", default=[0, 1, 2, 5, 10], help="numbers of unrolled steps K")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--repeats", type=int, default=5, help="timed iterations per variant (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations per variant first")
    p.add_argument("--device", default="cpu", help="cpu | cuda | ...")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3, help="3 as stacked-mnist and cifar10")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--z-dim", type=int, default=100)
    p.add_argument("--loss", default="gan", choices=("gan", "mm", "lsgan", "hinge"))
    p.add_argument("--arch", default="dcgan", choices=("dcgan", "metz"), help="metz: Metz et al.'s networks")
    p.add_argument("--d-size", default="quarter", choices=tuple(ug.METZ_D_WIDTH), help="--arch metz: D's size")
    p.add_argument("--profile", action="store_true", help="where a K = 5 iteration's time goes, by operator")
    if p.parse_known_args()[0].arch == "metz":
        p.set_defaults(batch_size=128, image_size=28, z_dim=256)
    return p.parse_args()


def d_step(D, opt_d, real, fake, args):
    """One plain D step on a given minibatch, the unit of the table (an unrolled step makes no new fakes either)."""
    opt_d.zero_grad(set_to_none=True)
    ug.d_loss(D(real), D(fake), args.loss).backward()
    opt_d.step()


def iteration(G, D, opt_g, opt_d, real, args, K, first_order):
    """One training iteration of unrolled_gan.py (n_critic 1)."""
    fake = G(torch.randn(len(real), args.z_dim, device=real.device))
    loss_g = ug.unrolled_generator_loss(D, opt_d, real, fake, args.loss, K, first_order)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward(inputs=list(G.parameters()))
    opt_d.zero_grad(set_to_none=True)
    ug.d_loss(D(real), D(fake.detach()), args.loss).backward()
    opt_d.step()
    opt_g.step()


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.arch == "metz":
        G = ug.MetzGenerator(args.z_dim, args.channels).to(device).apply(ug.metz_init)
        D = ug.MetzDiscriminator(args.channels, ug.METZ_D_WIDTH[args.d_size]).to(device).apply(ug.metz_init)
    else:
        batch_norm = args.loss != "lsgan"
        G = ug.Generator(args.z_dim, args.channels, args.image_size, args.ngf, batch_norm).to(device)
        D = ug.Discriminator(args.channels, args.image_size, args.ndf, batch_norm).to(device)
        G.apply(ug.dcgan_init), D.apply(ug.dcgan_init)
    real = torch.rand(args.batch_size, args.channels, args.image_size, args.image_size, device=device) * 2 - 1

    variants = {"d_step": None} | {(K, first_order): None for K in args.ks for first_order in (False, True)}
    for name in variants:
        g, d = copy.deepcopy(G), copy.deepcopy(D)
        opt_g, opt_d = (torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999)) for m in (g, d))
        if name == "d_step":
            with torch.no_grad():
                fake = g(torch.randn(args.batch_size, args.z_dim, device=device))
            variants[name] = lambda d=d, opt_d=opt_d, fake=fake: d_step(d, opt_d, real, fake, args)
        else:
            variants[name] = lambda g=g, d=d, opt_g=opt_g, opt_d=opt_d, K=name[0], fo=name[1]: iteration(
                g, d, opt_g, opt_d, real, args, K, fo
            )
    for run in variants.values():
        for _ in range(args.warmup):
            run()
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():  # interleaved: load drifts hit every variant alike
            start = ug.wall_clock(device)
            run()
            times[name].append(1000 * (ug.wall_clock(device) - start))
    ms = {name: statistics.median(t) for name, t in times.items()}

    unit = ms["d_step"]
    nets = f"metz, D {args.d_size}" if args.arch == "metz" else f"ngf {args.ngf}, ndf {args.ndf}"
    print(
        f"device {device}, threads {args.threads}, batch {args.batch_size}, "
        f"{args.channels}x{args.image_size}x{args.image_size}, {nets}, z {args.z_dim}, "
        f"loss {args.loss}; median of {args.repeats}; "
        f"one plain D step = {unit:.1f} ms\n"
    )
    print(
        "| K | second order: ms / iteration | in D steps | per unrolled step, in D steps "
        "| first order: ms / iteration | in D steps | per unrolled step, in D steps |"
    )
    print("|---|---|---|---|---|---|---|")
    for K in args.ks:
        cells = []
        for first_order in (False, True):
            t = ms[(K, first_order)]
            extra = f"{(t - ms[(0, first_order)]) / K / unit:.2f}" if K and 0 in args.ks else "-"
            cells += [f"{t:.1f}", f"{t / unit:.1f}", extra]
        print(f"| {K} | " + " | ".join(cells) + " |")
    if args.profile:
        g, d = copy.deepcopy(G), copy.deepcopy(D)
        opt_g, opt_d = (torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999)) for m in (g, d))
        iteration(g, d, opt_g, opt_d, real, args, 5, False)  # warm-up
        with torch.profiler.profile() as prof:
            for _ in range(args.repeats):
                iteration(g, d, opt_g, opt_d, real, args, 5, False)
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        print(f"\nK = 5, {args.repeats} iterations: share of self CPU time by operator (top 8)\n")
        print("| operator | calls / iteration | ms / iteration | share |\n|---|---|---|---|")
        for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]:
            print(
                f"| {e.key} | {e.count / args.repeats:.0f} | {e.self_cpu_time_total / 1000 / args.repeats:.1f} "
                f"| {100 * e.self_cpu_time_total / total:.0f} % |"
            )


if __name__ == "__main__":
    main()
