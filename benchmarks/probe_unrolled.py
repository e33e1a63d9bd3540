"""What unrolling does in the paper's stacked-MNIST networks (issue 31, item 4): probes of unrolled_gan.py checkpoints.

For each checkpoint (a run's checkpoint.pt, the state at its step):
  modes    the modes of its G over the evaluation's 25,600 samples counted twice: with BN's running statistics (eval
           mode: what cleangan's evaluation uses, the number in metrics.jsonl) and with the statistics of each
           128-sample batch (train mode: what PacGAN's sampler does, DCGAN-tensorflow's batch_norm(train=True) in
           model.py sampler(), whose counts are the K = 0 numbers a reader compares with)
  grad     G's full unrolled gradient df_K/dtheta_G (eq. 12) against its first term alone (--first-order), on
           --batches minibatches at that state: their cosine, and the size of the second term relative to the first
           (|full - first| / |first|). --unroll-steps probes another K than the run's (e.g. K = 5 at a K = 0 state).

A trajectory comes from resuming a run in segments (resume is exact, so each segment's end is the state of the
uninterrupted run): --every N trains the run named by --exp-name/--seed/--flags to each multiple of N, probing at
each (a fresh run folder under --out-dir).

Usage:
    python benchmarks/probe_unrolled.py runs/results/stacked-mnist__unrolled-metz-K*__*/checkpoint.pt
    python benchmarks/probe_unrolled.py --every 500 --total-steps 4000 --seed 3 --unroll-steps 5
"""

import argparse
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import fid  # noqa: E402
import unrolled_gan as ug  # noqa: E402


def load(path, data_root):
    """G (train mode, as in training), D and D's Adam of a checkpoint, its args, and its training set."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    args = argparse.Namespace(**(ckpt["args"] | {"data_root": data_root, "download": False}))
    if args.arch != "metz":
        raise SystemExit(f"{path}: --arch {args.arch}; this probe is for --arch metz runs")
    G, D = ug.MetzGenerator(args.z_dim, 3), ug.MetzDiscriminator(3, ug.METZ_D_WIDTH[args.d_size])
    opt_D = torch.optim.Adam(D.parameters(), lr=args.lr_d, betas=(args.beta1, args.beta2))
    G.load_state_dict(ckpt["G"])
    D.load_state_dict(ckpt["D"])
    opt_D.load_state_dict(ckpt["opt_D"])
    return ckpt["step"], args, G, D, opt_D, ug.make_dataset(args)


@torch.no_grad()
def modes(G, args, classifier, batch_stats):
    """fid.Evaluator's stacked-MNIST count of G's samples (the same noise), BN in eval mode or with batch statistics
    (of 128-sample batches, on a copy: G's running statistics untouched)."""
    net = copy.deepcopy(G).train(batch_stats)
    noise = torch.Generator().manual_seed(args.seed)
    batch = 128 if batch_stats else 500
    images = torch.cat([fid.to_uint8(fid.as_32px_digits(net(torch.randn(min(batch, n), args.z_dim, generator=noise))))
                        for n in range(args.classifier_samples, 0, -batch)])
    return fid.stacked_mnist_modes(classifier, images)


def gradients(G, D, opt_D, args, dataset, unroll_steps, batches, seed=0):
    """Per minibatch: (cosine of the full and first-order G gradients, |full - first| / |first|)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        index = torch.randint(len(dataset), (args.batch_size,), generator=gen).tolist()
        real = ug.to_model_range(torch.stack([dataset[i][0] for i in index]))
        z = torch.randn(args.batch_size, args.z_dim, generator=gen)
        grads = []
        for first_order in (False, True):
            f_k = ug.unrolled_generator_loss(D, opt_D, real, G(z), args.loss, unroll_steps, first_order)
            grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(f_k, list(G.parameters()))]))
        full, first = grads
        cosine = full @ first / (full.norm() * first.norm())
        out.append((cosine.item(), ((full - first).norm() / first.norm()).item()))
    return out


def probe(path, opts, classifier):
    step, args, G, D, opt_D, dataset = load(path, opts.data_root)
    k = args.unroll_steps if opts.unroll_steps is None else opts.unroll_steps
    row = {"run": f"{args.exp_name} seed {args.seed}", "step": step, "K_run": args.unroll_steps, "K_probe": k}
    for name, batch_stats in (("eval_bn", False), ("batch_bn", True)):
        row |= {f"{key}_{name}": value for key, value in modes(G, args, classifier, batch_stats).items()}
    if opts.batches and k:
        cos, ratio = map(torch.tensor, zip(*gradients(G, D, opt_D, args, dataset, k, opts.batches)))
        row |= {"cos_mean": cos.mean().item(), "cos_min": cos.min().item(), "second_over_first": ratio.mean().item()}
    return row


def print_row(row):
    grad = (f" | cos(full, first) {row['cos_mean']:.3f} (min {row['cos_min']:.3f}) | |second|/|first| "
            f"{row['second_over_first']:.3f}" if "cos_mean" in row else "")
    print(f"{row['run']} step {row['step']} (K {row['K_probe']}): modes eval-BN {row['modes_eval_bn']} "
          f"(KL {row['modes_kl_eval_bn']:.2f}) | batch-BN {row['modes_batch_bn']} (KL {row['modes_kl_batch_bn']:.2f})"
          + grad, flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoints", nargs="*", help="checkpoint.pt files of unrolled_gan.py --arch metz runs")
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--cache-dir", default="runs/results/fid_stats", help="where the MNIST classifier is cached")
    p.add_argument("--unroll-steps", type=int, default=None, help="K of the probe (default: each run's own)")
    p.add_argument("--batches", type=int, default=8, help="minibatches of the gradient probe (0: none)")
    p.add_argument("--every", type=int, default=0, help="trajectory: train in segments of this many steps")
    p.add_argument("--total-steps", type=int, default=4000, help="trajectory: the last step")
    p.add_argument("--seed", type=int, default=1, help="trajectory: the run's seed")
    p.add_argument("--exp-name", default="probe-metz", help="trajectory: the run's name")
    p.add_argument("--out-dir", default="runs/probe", help="trajectory: its run folder's parent")
    p.add_argument("--flags", default="--arch metz --d-size quarter --unroll-steps 5",
                   help="trajectory: unrolled_gan.py's method flags")
    p.add_argument("--jsonl", default=None, help="append each row as JSON to this file")
    opts = p.parse_args()
    torch.set_num_threads(1)
    classifier, _ = fid.mnist_classifier(opts.data_root, opts.cache_dir)

    def report(path):
        row = probe(path, opts, classifier)
        print_row(row)
        if opts.jsonl:
            with open(opts.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")

    for path in opts.checkpoints:
        report(path)
    for step in range(opts.every, opts.total_steps + 1, opts.every) if opts.every else ():
        cmd = [sys.executable, "unrolled_gan.py", "--dataset", "stacked-mnist", "--image-size", "28",
               *opts.flags.split(), "--seed", str(opts.seed), "--exp-name", opts.exp_name, "--out-dir", opts.out_dir,
               "--data-root", opts.data_root, "--no-download", "--num-workers", "0", "--total-steps", str(step),
               "--eval-every", "0", "--sample-every", "0", "--log-every", "100", "--checkpoint-every", str(opts.every),
               "--resume", "auto"]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))
        run = max(Path(ROOT, opts.out_dir).glob(f"stacked-mnist__{opts.exp_name}__{opts.seed}__*"),
                  key=lambda d: d.stat().st_mtime)
        report(run / "checkpoint.pt")


if __name__ == "__main__":
    main()
