"""What unrolling does in the paper's stacked-MNIST networks (issue 31, item 4): probes of unrolled_gan.py checkpoints.

For each checkpoint (a run's checkpoint.pt, the state at its step):
  modes    the modes of its G over the evaluation's 25,600 samples counted twice: with BN's running statistics (eval
           mode: what cleangan's evaluation uses, the number in metrics.jsonl) and with the statistics of each
           128-sample batch (what PacGAN's sampler does, DCGAN-tensorflow's batch_norm(train=True) in
           model.py sampler(), whose counts are the K = 0 numbers a reader compares with)
  grad     G's full unrolled gradient df_K/dtheta_G (eq. 12) against its first term alone (--first-order), on
           --batches minibatches at that state: their cosine, and the size of the second term relative to the first
           (|full - first| / |first|). --unroll-steps probes another K than the run's (e.g. K = 5 at a K = 0 state).

Usage:
    python benchmarks/probe_unrolled.py runs/results/stacked-mnist__unrolled-metz-K*__*/checkpoint.pt
    python benchmarks/probe_unrolled.py --unroll-steps 5 --batches 8 --jsonl out.jsonl RUN/checkpoint.pt
"""

import argparse
import copy
import json
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


def modes(G, args, classifier, batch_stats):
    """fid.Evaluator's stacked-MNIST count of G's samples (fid.samples: the same noise), BN with its running statistics
    or with those of each 128-sample batch: a copy of G whose BN layers have no running statistics, which PyTorch's
    BN then takes from the batch even in eval mode (G's own untouched)."""
    net = copy.deepcopy(G)
    for m in net.modules() if batch_stats else ():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean = m.running_var = None
    batches = fid.samples(net, args.classifier_samples, args.z_dim, args.seed, "cpu", 128 if batch_stats else 500)
    return fid.stacked_mnist_modes(classifier, torch.cat([fid.to_uint8(fid.as_32px_digits(x)) for x in batches]))


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
    p.add_argument("checkpoints", nargs="+", help="checkpoint.pt files of unrolled_gan.py --arch metz runs")
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--cache-dir", default="runs/results/fid_stats", help="where the MNIST classifier is cached")
    p.add_argument("--unroll-steps", type=int, default=None, help="K of the probe (default: each run's own)")
    p.add_argument("--batches", type=int, default=8, help="minibatches of the gradient probe (0: none)")
    p.add_argument("--jsonl", default=None, help="append each row as JSON to this file")
    opts = p.parse_args()
    torch.set_num_threads(1)
    classifier, _ = fid.mnist_classifier(opts.data_root, opts.cache_dir)

    for path in opts.checkpoints:
        row = probe(path, opts, classifier)
        print_row(row)
        if opts.jsonl:
            with open(opts.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
