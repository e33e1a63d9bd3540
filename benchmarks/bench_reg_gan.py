"""Cost of Roth et al.'s JS regularizer: time of one D step and of one training iteration (D step + G step) with
the regularizer (gamma > 0: a double backward through D), without it (gamma = 0) and with the noise null model,
on the DCGAN of reg_gan.py. The paper reports roughly 1.4x the computation time (Sec. 4.2).

Variants are interleaved (each repeat times every variant once, in turn) so that machine load affects them alike;
the table gives medians over repeats and ratios to gamma = 0. Random tensors stand in for data (timing depends on
shapes only).

    python benchmarks/bench_reg_gan.py                       # CPU, 1 thread, CIFAR-10 shapes (3x32x32), batch 64
    python benchmarks/bench_reg_gan.py --device cuda --repeats 50
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import reg_gan as reg  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (CPU)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--z-dim", type=int, default=100)
    p.add_argument(
        "--gamma", type=float, default=2.0, help="regularized variant's gamma (the cost does not depend on it)"
    )
    p.add_argument("--noise-std", type=float, default=0.1, help="noise variant's std")
    p.add_argument("--steps", type=int, default=3, help="iterations per timing")
    p.add_argument("--repeats", type=int, default=15, help="timings per variant (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations per variant first")
    return p.parse_args()


class Trainer:
    """reg_gan.main's iteration (n_critic = 1) on fixed random "data", timed as a D step and a G step."""

    def __init__(self, args, gamma, noise_std, device):
        torch.manual_seed(0)  # every variant starts from the same weights
        self.G = reg.Generator(args.z_dim, args.channels, args.image_size, args.ngf).to(device)
        self.D = reg.Discriminator(args.channels, args.image_size, args.ndf).to(device)
        self.G.apply(reg.dcgan_init)
        self.D.apply(reg.dcgan_init)
        betas = (0.5, 0.999)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=2e-4, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=2e-4, betas=betas)
        self.real = torch.rand(args.batch_size, args.channels, args.image_size, args.image_size, device=device) * 2 - 1
        self.gamma, self.noise_std, self.args, self.device = gamma, noise_std, args, device

    def d_step(self):
        with torch.no_grad():
            fake = self.G(torch.randn(self.args.batch_size, self.args.z_dim, device=self.device))
        real, fake = reg.add_noise(self.real, self.noise_std), reg.add_noise(fake, self.noise_std)
        if self.gamma:
            out = reg.js_regularizer(self.D, real, fake)
            loss_d = reg.d_loss(out.real_logits, out.fake_logits, "gan") + self.gamma / 2 * out.omega
        else:
            loss_d = reg.d_loss(self.D(real), self.D(fake), "gan")
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

    def g_step(self):
        fake = self.G(torch.randn(self.args.batch_size, self.args.z_dim, device=self.device))
        loss_g = reg.g_loss(self.D(reg.add_noise(fake, self.noise_std)), "gan")
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()


def timed(fn, steps, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def main():
    args = parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    variants = {
        "gamma = 0 (baseline)": Trainer(args, 0.0, 0.0, device),
        f"gamma = {args.gamma} (regularized)": Trainer(args, args.gamma, 0.0, device),
        f"noise std {args.noise_std} (null model)": Trainer(args, 0.0, args.noise_std, device),
    }
    for trainer in variants.values():
        for _ in range(args.warmup):
            trainer.d_step()
            trainer.g_step()
    d_times = {name: [] for name in variants}
    g_times = {name: [] for name in variants}
    for _ in range(args.repeats):  # interleaved
        for name, trainer in variants.items():
            d_times[name].append(timed(trainer.d_step, args.steps, device))
            g_times[name].append(timed(trainer.g_step, args.steps, device))

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    print(
        f"{where}; torch {torch.__version__}; D/G of reg_gan.py at "
        f"{args.channels}x{args.image_size}x{args.image_size}, "
        f"ngf {args.ngf}, ndf {args.ndf}, batch {args.batch_size}; median of {args.repeats} x {args.steps} iterations\n"
    )
    print("| variant | D step (ms) | vs gamma = 0 | iteration: D + G step (ms) | vs gamma = 0 |")
    print("|---|---|---|---|---|")
    base = next(iter(variants))
    base_d = statistics.median(d_times[base])
    base_it = statistics.median(d + g for d, g in zip(d_times[base], g_times[base]))
    for name in variants:
        d = statistics.median(d_times[name])
        it = statistics.median(a + b for a, b in zip(d_times[name], g_times[name]))
        print(f"| {name} | {1e3 * d:.1f} | {d / base_d:.2f}x | {1e3 * it:.1f} | {it / base_it:.2f}x |")


if __name__ == "__main__":
    main()
