"""benchmarks/probe_unrolled.py: its mode count reproduces the evaluation's, batch statistics leave G's running
statistics alone, and its full gradient is the one the training step takes (eq. 12), its first-order part the
--first-order one."""

import argparse
import json
import sys

import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import fid  # noqa: E402
import probe_unrolled as probe  # noqa: E402
import unrolled_gan as ug  # noqa: E402


def test_probe_of_a_metz_checkpoint(data_root, tmp_path):
    flags = ["--dataset", "stacked-mnist", "--image-size", "28", "--arch", "metz", "--data-root", data_root,
             "--no-download", "--num-workers", "0", "--batch-size", "16", "--unroll-steps", "2", "--total-steps",
             "2", "--checkpoint-every", "2", "--eval-every", "2", "--no-fid", "--classifier-samples", "64",
             "--sample-every", "0", "--out-dir", str(tmp_path)]
    run_dir = ug.main(flags)["run_dir"]
    evaluated = [json.loads(line) for line in open(f"{run_dir}/metrics.jsonl")][-1]
    step, args, G, D, opt_D, dataset = probe.load(f"{run_dir}/checkpoint.pt", data_root)
    assert step == 2 and args.unroll_steps == 2 and len(opt_D.state) == len(list(D.parameters()))
    classifier, _ = fid.mnist_classifier(data_root, None)

    eval_bn = probe.modes(G, args, classifier, batch_stats=False)
    assert eval_bn == {"modes": evaluated["modes"], "modes_kl": evaluated["modes_kl"]}  # the evaluation's count
    before = {k: v.clone() for k, v in G.state_dict().items()}
    batch_bn = probe.modes(G, args, classifier, batch_stats=True)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())  # the count ran on a copy of G
    assert 1 <= batch_bn["modes"] <= 64 and G.training and G.project.weight.requires_grad

    # the probe's two gradients against the training step's own: eq. (12) and its first term
    (cos, ratio), = probe.gradients(G, D, opt_D, args, dataset, 2, batches=1)
    gen = torch.Generator().manual_seed(0)
    index = torch.randint(len(dataset), (args.batch_size,), generator=gen).tolist()
    real = ug.to_model_range(torch.stack([dataset[i][0] for i in index]))
    z = torch.randn(args.batch_size, args.z_dim, generator=gen)
    full, first = (torch.cat([g.flatten() for g in torch.autograd.grad(
        ug.unrolled_generator_loss(D, opt_D, real, G(z), args.loss, 2, first_order), list(G.parameters()))])
        for first_order in (False, True))
    assert ratio > 0 and abs((full - first).norm() / first.norm() - ratio) < 1e-6
    assert abs(full @ first / (full.norm() * first.norm()) - cos) < 1e-6 and cos < 1 - 1e-7

    opts = argparse.Namespace(data_root=data_root, unroll_steps=0, batches=1)
    row = probe.probe(f"{run_dir}/checkpoint.pt", opts, classifier)  # K = 0: no second term to probe
    assert row["K_probe"] == 0 and "cos_mean" not in row and row["modes_eval_bn"] == evaluated["modes"]
