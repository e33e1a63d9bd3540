"""fid.py vs pytorch-fid 0.3.0: Inception features/s (same random weights) and Frechet-distance time at d=2048.

Usage: python benchmarks/bench_fid.py [--threads 1] [--repeats 5] [--device cpu]
Prints medians over --repeats runs, taken in alternation (the machine may be shared), and the agreement
of the two implementations. Needs pytorch-fid (requirements-dev.txt); no real weights, no internet.
"""

import argparse
import os
import sys
import time
import warnings


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch/BLAS threads (1: stable on a shared machine)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each measurement (median reported)")
    p.add_argument("--batch-size", type=int, default=50, help="images per batch (32x32, resized to 299)")
    p.add_argument("--device", default="cpu", help="device of the Inception forward passes")
    p.add_argument(
        "--fd-samples",
        type=int,
        nargs="+",
        default=[4096, 500],
        help="samples behind the d=2048 statistics (fewer than 2048: singular covariances)",
    )
    return p.parse_args()


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_time(fn, repeats):
    return sorted(timed(fn) for _ in range(repeats))[repeats // 2]


def random_fid_weights(fid, torch):
    """He-scaled random weights (activations stay O(1), no denormals): speed does not depend on values."""
    g = torch.Generator().manual_seed(0)
    state = fid.InceptionFeatures(weights=False).state_dict()
    for key, value in state.items():
        if key.endswith("conv.weight"):
            value.copy_(torch.randn(value.shape, generator=g) * (2.0 / value[0].numel()) ** 0.5)
        elif key.endswith(("bn.weight", "running_var")):
            value.copy_(0.5 + torch.rand(value.shape, generator=g))
        elif key == "fc.weight":
            value.copy_(torch.randn(value.shape, generator=g) / 2048**0.5)
    return state


def main():
    args = parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy/torch load their thread pools
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import numpy as np
    import torch
    from pytorch_fid import fid_score, inception
    import fid

    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, numpy {np.__version__}, threads {args.threads}, device {args.device}, "
        f"repeats {args.repeats}"
    )

    state = random_fid_weights(fid, torch)
    ours = fid.load_inception(state, args.device)
    inception.load_state_dict_from_url = lambda *a, **k: state  # pytorch-fid, same weights, no download
    theirs = inception.InceptionV3([3]).to(args.device).eval()
    x = torch.rand(args.batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def pytorch_fid_batch():  # the body of pytorch-fid's get_activations loop
        with torch.no_grad():
            return theirs(x.to(args.device))[0].squeeze(3).squeeze(2).cpu().numpy()

    def fid_py_batch():
        return fid.activations(x, ours, batch_size=args.batch_size)[0]

    print("max |pool3 difference|:", float(np.abs(fid_py_batch() - pytorch_fid_batch()).max()))
    t_ours, t_theirs = [], []
    for _ in range(args.repeats):  # alternate, so that load from other users hits both alike
        t_theirs.append(timed(pytorch_fid_batch))
        t_ours.append(timed(fid_py_batch))
    rate_ours = args.batch_size / float(np.median(t_ours))
    rate_theirs = args.batch_size / float(np.median(t_theirs))
    print(
        f"features/s (batch {args.batch_size}, 32x32): fid.py {rate_ours:.2f}  pytorch-fid {rate_theirs:.2f}  "
        f"ratio {rate_ours / rate_theirs:.3f}"
    )

    rng = np.random.default_rng(0)
    for n in args.fd_samples:
        features = [np.maximum(rng.normal(size=(n, 2048)) + shift, 0) for shift in (1.0, 1.1)]  # ReLU-like
        stats = [*fid.statistics(features[0]), *fid.statistics(features[1])]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sqrtm's deprecated disp argument, singular products
            reference = fid_score.calculate_frechet_distance(*stats)
            t_ref = median_time(lambda: fid_score.calculate_frechet_distance(*stats), (args.repeats + 1) // 2)
        value = fid.frechet_distance(*stats)
        t_fd = median_time(lambda: fid.frechet_distance(*stats), args.repeats)
        line = (
            f"frechet_distance d=2048, n={n}: fid.py {t_fd:.2f} s  pytorch-fid {t_ref:.2f} s  "
            f"speed-up {t_ref / t_fd:.1f}x  values {value:.12g} vs {float(reference):.12g}  "
            f"relative difference {abs(value - reference) / abs(reference):.1e}"
        )
        if n < 2048:  # singular covariances: the exact value from the samples, tr sqrt(S1 S2) = ||C1 C2^T||_*
            c1, c2 = [(f - f.mean(0)) / np.sqrt(n - 1) for f in features]
            exact = (
                np.sum((stats[0] - stats[2]) ** 2)
                + np.trace(stats[1])
                + np.trace(stats[3])
                - 2 * np.linalg.svd(c1 @ c2.T, compute_uv=False).sum()
            )
            line += (
                f"; error to the exact {exact:.12g}: fid.py {abs(value - exact) / exact:.1e}, "
                f"pytorch-fid {abs(reference - exact) / exact:.1e}"
            )
        print(line)


if __name__ == "__main__":
    main()
