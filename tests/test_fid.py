"""fid.py against pytorch-fid 0.3.0 (the reference), closed forms and hand-made cases. No real weights needed:
a random but well-scaled state dict stands in for pt_inception-2015-12-05-6726825d.pth, and the network
never touches the internet (the download is monkeypatched to fail)."""

import os
import subprocess
import sys
import urllib.error
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fid  # tests/conftest.py puts the repo root on sys.path and sets one torch thread
from conftest import ROOT, check_bad_input
from pytorch_fid import fid_score as pfid_score  # test-only dependency (requirements-dev.txt)
from pytorch_fid import inception as pfid_inception


def sane_state_dict(seed=0):
    """Random FID-Inception weights that keep activations O(1) through all 94 conv layers: He-scaled convs,
    BatchNorm scales and running variances near 1, and a non-zero fc bias (which the logits must drop)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in fid.InceptionFeatures(weights=False).state_dict().items():
        if key.endswith("conv.weight"):
            state[key] = torch.randn(value.shape, generator=g) * (2.0 / value[0].numel()) ** 0.5
        elif key.endswith(("bn.weight", "running_var")):
            state[key] = 0.5 + torch.rand(value.shape, generator=g)
        elif key.endswith(("bn.bias", "running_mean")):
            state[key] = 0.1 * torch.randn(value.shape, generator=g)
        elif key == "fc.weight":
            state[key] = torch.randn(value.shape, generator=g) / 2048**0.5
        elif key == "fc.bias":
            state[key] = torch.randn(value.shape, generator=g)
        else:  # num_batches_tracked
            state[key] = value.clone()
    return state


@pytest.fixture(scope="module")
def state():
    return sane_state_dict()


@pytest.fixture(scope="module")
def ours(state):
    return fid.load_inception(state)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """TORCH_HOME in an empty folder, no env var, and every download fails like it does without internet."""
    calls = []

    def no_internet(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        raise urllib.error.URLError("no internet (test)")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(fid.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_internet)
    return calls


def pytorch_fid_network(monkeypatch, state, full=False):
    monkeypatch.setattr(pfid_inception, "load_state_dict_from_url", lambda *args, **kwargs: state)
    net = pfid_inception.fid_inception_v3() if full else pfid_inception.InceptionV3([3])
    return net.eval()


class Stub(torch.nn.Module):
    """A cheap stand-in for the Inception network (linear maps of the pixels) to test the plumbing."""

    def __init__(self, dims=6, classes=12, pixels=3 * 8 * 8, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(pixels, dims + classes, generator=g))
        self.dims = dims

    def forward(self, images):
        out = images.flatten(1) @ self.w
        return out[:, : self.dims], out[:, self.dims :]


# ----------------------------------------------------------------------------------- the network
def test_state_dict_keys_and_shapes_match_pytorch_fid(monkeypatch, state):
    reference = pytorch_fid_network(monkeypatch, state, full=True).state_dict()
    mine = fid.InceptionFeatures(weights=False).state_dict()
    assert len(mine) == len(reference) == 566
    assert {k: tuple(v.shape) for k, v in mine.items()} == {k: tuple(v.shape) for k, v in reference.items()}


def test_loads_a_file_without_num_batches_tracked(ours, state):
    trimmed = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(trimmed) == 566 - 94
    model = fid.load_inception(trimmed)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("size,n", [(32, 4), (320, 2)])  # 320 > 299: the resize also downsamples
def test_pool3_equals_pytorch_fid(monkeypatch, state, ours, size, n):
    reference = pytorch_fid_network(monkeypatch, state)
    images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        pool3, logits = ours(images)
        expected = reference(images)[0].flatten(1)
    assert pool3.shape == (n, 2048) and logits.shape == (n, 1008)
    assert (pool3 - expected).abs().max() <= 1e-5
    assert pool3.std(0).mean() > 1e-2  # features differ between images by far more than the tolerance


def test_logits_are_the_fc_layer_without_bias(monkeypatch, state, ours):
    """torchvision's full forward (pytorch-fid's fid_inception_v3 incl. fc) on pytorch-fid's preprocessing."""
    network = pytorch_fid_network(monkeypatch, state, full=True)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, logits = ours(images)
        x = 2 * F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False) - 1
        with_bias = network(x)
    assert (logits - (with_bias - state["fc.bias"])).abs().max() <= 1e-4
    assert (logits - with_bias).abs().max() > 0.5  # the bias matters, so dropping it is tested


def test_gray_images_are_repeated_to_rgb(ours):
    gray = torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(ours(gray)[0], ours(gray.repeat(1, 3, 1, 1))[0])


def test_mixed_sizes_are_resized_per_image():
    """A 299 -> 299 bilinear resize is the identity, so resizing in _collate changes no number."""
    x = torch.rand(3, 299, 299)
    assert torch.equal(F.interpolate(x[None], size=(299, 299), mode="bilinear", align_corners=False)[0], x)
    small = torch.rand(3, 20, 20)
    batch = fid._collate([(small, 0), (x, 1)])
    expected = F.interpolate(small[None], size=(299, 299), mode="bilinear", align_corners=False)[0]
    assert batch.shape == (2, 3, 299, 299) and torch.equal(batch[0], expected) and torch.equal(batch[1], x)


# ----------------------------------------------------------------------------------- weights, offline
def test_offline_without_weights_is_one_clear_error(offline, tmp_path):
    with pytest.raises(fid.FIDWeightsError) as err:
        fid.load_inception()
    message = str(err.value)
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / fid.FID_WEIGHTS_FILE) in message
    assert "--fid-weights" in message and fid.WEIGHTS_ENV in message and fid.FID_WEIGHTS_URL in message
    assert offline == [(fid.FID_WEIGHTS_URL, "6726825d")]  # one try, with the hash check on


def test_torch_hub_cache_is_used(offline, tmp_path, state):
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / fid.FID_WEIGHTS_FILE)
    model = fid.load_inception()
    assert offline == []  # no download attempted
    assert torch.equal(model.fc.weight, state["fc.weight"])
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_explicit_path_and_env_var(offline, monkeypatch, tmp_path, state):
    path = tmp_path / "w.pth"
    torch.save(state, path)
    assert torch.equal(fid.load_inception(str(path)).fc.weight, state["fc.weight"])
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(path))
    assert torch.equal(fid.load_inception().fc.weight, state["fc.weight"])
    with pytest.raises(fid.FIDWeightsError, match="not found at"):
        fid.load_inception(str(tmp_path / "missing.pth"))
    torch.save({"fc.weight": state["fc.weight"]}, tmp_path / "wrong.pth")
    with pytest.raises(fid.FIDWeightsError, match="not FID Inception weights"):
        fid.load_inception(str(tmp_path / "wrong.pth"))
    assert offline == []


# ----------------------------------------------------------------------------------- statistics, distance, IS
def test_statistics_equal_numpy():
    acts = np.random.default_rng(0).normal(2.0, 3.0, size=(103, 16)).astype(np.float32)
    mu, sigma = fid.statistics(acts, chunk=7)  # several chunks and a ragged last one
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, np.mean(acts.astype(np.float64), axis=0), rtol=1e-13, atol=0)
    np.testing.assert_allclose(sigma, np.cov(acts, rowvar=False), rtol=1e-12, atol=1e-13)
    with pytest.raises(ValueError):
        fid.statistics(acts[:1])


def random_stats(rng, n=500, d=64, shift=0.0):
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + shift
    return np.mean(x, axis=0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("seed", range(3))
def test_frechet_distance_equals_pytorch_fid(seed):
    rng = np.random.default_rng(seed)
    stats1, stats2 = random_stats(rng), random_stats(rng, shift=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy 1.17 warns about sqrtm's disp argument
        expected = pfid_score.calculate_frechet_distance(*stats1, *stats2)
    assert abs(fid.frechet_distance(*stats1, *stats2) - expected) <= 1e-10 * abs(expected)


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(3)
    mu, sigma = random_stats(rng)
    mu2 = mu + rng.normal(size=mu.shape)
    assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) <= 1e-12 * np.trace(sigma)
    dmu2 = np.sum((mu - mu2) ** 2)
    assert fid.frechet_distance(mu, sigma, mu2, sigma) == pytest.approx(dmu2, rel=1e-10)
    # 1-d: (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s1, s2
    assert fid.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0, rel=1e-14)
    # diagonal: sum_i (sqrt(a_i) - sqrt(b_i))^2
    a, b = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    closed = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid.frechet_distance(np.zeros(5), np.diag(a), np.zeros(5), np.diag(b)) == pytest.approx(closed, rel=1e-12)


def exact_frechet_distance(x1, x2):
    """From the samples: tr sqrt(S1 S2) is the nuclear norm of C1 C2^T (C = centred samples / sqrt(n - 1)),
    a small n x n SVD that stays exact when the covariances are singular (n <= d)."""
    (mu1, sigma1), (mu2, sigma2) = [(x.mean(0), np.cov(x, rowvar=False)) for x in (x1, x2)]
    c1, c2 = [(x - x.mean(0)) / np.sqrt(len(x) - 1) for x in (x1, x2)]
    trace_sqrt = np.linalg.svd(c1 @ c2.T, compute_uv=False).sum()
    return np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt


def test_frechet_distance_rank_deficient_and_invalid():
    rng = np.random.default_rng(4)
    x1, x2 = rng.normal(size=(20, 64)), rng.normal(0.1, 1.2, size=(20, 64))  # rank 19 in 64 dims
    stats1, stats2 = [(x.mean(0), np.cov(x, rowvar=False)) for x in (x1, x2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = pfid_score.calculate_frechet_distance(*stats1, *stats2)
    value = fid.frechet_distance(*stats1, *stats2)
    assert value == pytest.approx(exact_frechet_distance(x1, x2), rel=1e-12)
    assert value == pytest.approx(expected, rel=1e-6)  # sqrtm is less exact for singular products
    not_psd = np.diag([1.0, -0.01, 1.0])
    with pytest.raises(ValueError, match="imaginary component"):
        fid.frechet_distance(np.zeros(3), not_psd, np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="do not match"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_frechet_distance_eps_fallback(monkeypatch):
    """Like pytorch-fid: when tr(sqrt(S1 S2)) is not finite, retry with eps added to both diagonals."""
    seen = []
    real = fid._trace_sqrt_product

    def first_call_fails(s1, s2):
        seen.append((s1.copy(), s2.copy()))
        return np.nan if len(seen) == 1 else real(s1, s2)

    monkeypatch.setattr(fid, "_trace_sqrt_product", first_call_fails)
    sigma = np.diag([1.0, 2.0])
    with pytest.warns(UserWarning, match="singular product"):
        value = fid.frechet_distance(np.zeros(2), sigma, np.ones(2), sigma, eps=1e-3)
    assert np.array_equal(seen[1][0], sigma + 1e-3 * np.eye(2))
    expected = 2 + 2 * np.trace(sigma) - 2 * np.trace(sigma + 1e-3 * np.eye(2))
    assert value == pytest.approx(expected, rel=1e-12)


def improved_gan_inception_score(logits, splits=10):
    """openai/improved-gan inception_score.py, with the softmax done in numpy."""
    preds = np.exp(logits - logits.max(1, keepdims=True))
    preds /= preds.sum(1, keepdims=True)
    scores = []
    for i in range(splits):
        part = preds[(i * preds.shape[0] // splits) : ((i + 1) * preds.shape[0] // splits), :]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return np.mean(scores), np.std(scores)


def test_inception_score():
    logits = np.random.default_rng(5).normal(0, 3, size=(105, 1008))  # 105: splits of 10 and 11 rows
    mean, std = fid.inception_score(logits)
    ref_mean, ref_std = improved_gan_inception_score(logits)
    assert mean == pytest.approx(ref_mean, rel=1e-12) and std == pytest.approx(ref_std, rel=1e-9)
    # closed forms: confident and spread over k classes per split -> k; all alike -> 1
    confident = np.full((40, 1008), -1e3)
    confident[np.arange(40), np.arange(40) % 8] = 0.0
    assert fid.inception_score(confident, splits=5) == pytest.approx((8.0, 0.0), abs=1e-12)
    assert fid.inception_score(np.zeros((20, 1008)), splits=2) == pytest.approx((1.0, 0.0), abs=1e-12)
    with pytest.raises(ValueError):
        fid.inception_score(logits[:9])


# ----------------------------------------------------------------------------------- plumbing
def test_to_unit_interval_equals_a_saved_png(tmp_path):
    from PIL import Image
    from torchvision.transforms.functional import to_tensor
    from torchvision.utils import save_image

    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(6)) * 2.2 - 1.1  # a little out of range
    save_image(x, tmp_path / "x.png", normalize=True, value_range=(-1, 1))
    with Image.open(tmp_path / "x.png") as image:
        assert torch.equal(fid.to_unit_interval(x), to_tensor(image.convert("RGB")))


def test_fid_from_generator(monkeypatch):
    images = torch.rand(23, 3, 8, 8, generator=torch.Generator().manual_seed(7)) * 2 - 1
    sizes = []

    def generator_fn(b):
        sizes.append(b)
        start = sum(sizes[:-1])
        return images[start : start + b]

    model, ref_stats = Stub(), (np.zeros(6), np.eye(6))
    result = fid.fid_from_generator(generator_fn, 23, ref_stats, model, batch_size=10)
    assert sizes == [10, 10, 3]
    with torch.no_grad():
        pool3, logits = model(fid.to_unit_interval(images))
    assert result["fid"] == pytest.approx(fid.frechet_distance(*fid.statistics(pool3.numpy()), *ref_stats))
    assert (result["is_mean"], result["is_std"]) == pytest.approx(fid.inception_score(logits.numpy()))


def test_activations_sources_agree():
    images = torch.rand(7, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    model = Stub()
    pool3, logits = fid.activations(images, model, batch_size=3)
    assert pool3.dtype == np.float32 and pool3.shape == (7, 6) and logits.shape == (7, 12)
    dataset = torch.utils.data.TensorDataset(images, torch.arange(7))
    stream = iter(images)
    sources = [
        images.numpy(),
        dataset,
        torch.utils.data.DataLoader(dataset, batch_size=4),
        lambda b: torch.stack([next(stream) for _ in range(b)]),
    ]
    for source in sources:
        totals = []
        got = fid.activations(source, model, batch_size=3, n=5, progress=lambda done, total: totals.append(total))
        np.testing.assert_allclose(got[0], pool3[:5], rtol=1e-5, atol=1e-5)  # BLAS differs by batch size
        np.testing.assert_allclose(got[1], logits[:5], rtol=1e-5, atol=1e-5)
        assert totals == [5, 5]
    with pytest.raises(ValueError, match="needs n"):
        fid.activations(lambda b: images[:b], model)


def test_reference_statistics_cache(tmp_path):
    images = torch.rand(9, 3, 8, 8, generator=torch.Generator().manual_seed(9)) * 2 - 1
    reads = []

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 9

        def __getitem__(self, i):
            reads.append(i)
            return images[i], 0

    model = Stub()
    mu, sigma = fid.reference_statistics(Data(), "toy", "train", 8, model, tmp_path, n=6)
    path = tmp_path / "toy_train_8px_n6.npz"
    subset = torch.randperm(9, generator=torch.Generator().manual_seed(0))[:6]  # a fixed random subset, not the first 6
    assert path.is_file() and sorted(reads) == sorted(subset.tolist()) != list(range(6))
    expected = fid.statistics(model(fid.to_unit_interval(images[subset]))[0].detach().numpy())
    np.testing.assert_allclose(mu, expected[0], rtol=1e-12)
    np.testing.assert_allclose(sigma, expected[1], rtol=1e-12)
    reads.clear()
    cached = fid.reference_statistics(Data(), "toy", "train", 8, model, tmp_path, n=6)
    assert reads == [] and np.array_equal(cached[1], sigma)  # read from the cache
    fid.reference_statistics(Data(), "toy", "train", 8, Stub(seed=1), tmp_path, n=6)
    assert sorted(reads) == sorted(subset.tolist())  # other weights: recomputed
    fid.reference_statistics(Data(), "toy", "train", 8, model, tmp_path)  # n=None: all 9
    assert (tmp_path / "toy_train_8px_n9.npz").is_file()
    with np.load(path) as f:  # readable by pytorch-fid
        assert set(f.files) >= {"mu", "sigma"}


# ----------------------------------------------------------------------------------- command line
def write_images(folder, n, seed, size=16):
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def run_cli(*args, env=None):
    """fid.py in a subprocess with one OpenMP thread (on 2 busy cores, more make the forward ~40x slower)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "fid.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=300,
    )


def test_cli_end_to_end_equals_pytorch_fid(monkeypatch, tmp_path, state):
    a, b = write_images(tmp_path / "a", 10, 0), write_images(tmp_path / "b", 5, 1)
    weights = tmp_path / "random_weights.pth"
    torch.save(state, weights)
    out = run_cli(
        a,
        b,
        "--fid-weights",
        weights,
        "--num-workers",
        0,
        "--batch-size",
        4,
        "--device",
        "cpu",
        env={"TORCH_HOME": str(tmp_path / "empty")},
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    value = float(next(line for line in lines if line.startswith("FID: "))[5:])
    assert any(line.startswith(f"IS {a}: ") for line in lines) and f"{a}: 10/10 images" in out.stderr
    model = pytorch_fid_network(monkeypatch, state)
    acts = [pfid_score.get_activations(sorted(f.glob("*.png")), model, 4, 2048, "cpu", 0) for f in (a, b)]
    # pytorch-fid's features through the exact distance (its sqrtm at d=2048 would take ~1 min here, and
    # frechet_distance is compared with it above); 15 images in 2048-d: singular covariances
    assert value == pytest.approx(exact_frechet_distance(*acts), rel=1e-10)


def test_cli_stats_files_and_save_stats(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(fid, "load_inception", lambda weights, device: Stub(pixels=3 * 8 * 8))
    a = write_images(tmp_path / "a", 12, 2, size=8)
    (tmp_path / "nested" / "cat").mkdir(parents=True)  # ImageFolder layout: found recursively
    write_images(tmp_path / "nested" / "cat" / "x", 3, 3, size=8)
    result = fid.main([str(a), str(tmp_path / "s.npz"), "--save-stats", "--num-workers", "0"])
    assert (tmp_path / "s.npz").is_file() and "is " + str(a) in result
    assert fid.main([str(tmp_path / "s.npz"), str(tmp_path / "s.npz")])["fid"] == pytest.approx(0, abs=1e-6)
    result = fid.main([str(a), str(tmp_path / "nested"), "--num-workers", "0"])
    assert np.isfinite(result["fid"]) and "FID: " in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        fid.main([str(a), str(tmp_path / "s.npz"), "--save-stats"])  # never overwrites
    assert exit_.value.code == 2


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    out = run_cli(tmp_path / "nope", tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("fid.py: error: ") and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("case", ["bad_dataset", "dataset_offline", "missing_weights", "bad_npz", "not_images"])
def test_cli_bad_input_messages(tmp_path, capsys, monkeypatch, case):
    monkeypatch.delenv(fid.WEIGHTS_ENV, raising=False)
    images = write_images(tmp_path / "a", 2, 4)
    (tmp_path / "empty").mkdir()
    np.savez(tmp_path / "bad.npz", mean=np.zeros(3))
    args, message = {
        "bad_dataset": (["imagenet:val", images], "neither a folder"),
        "dataset_offline": (
            ["cifar10:train", images, "--data-root", tmp_path / "empty", "--no-download"],
            "put the dataset there",
        ),
        "missing_weights": ([images, images, "--fid-weights", tmp_path / "none.pth"], "not found at"),
        "bad_npz": ([tmp_path / "bad.npz", images], "no 'mu' and 'sigma'"),
        "not_images": ([tmp_path / "empty", images], "no images"),
    }[case]
    assert check_bad_input(fid.main, [str(arg) for arg in args], capsys, message).startswith("fid.py: error: ")


def test_cli_dataset_spec_reads_torchvision_mnist(data_root):
    args = fid.parse_args(["mnist:test", "x.npz", "--data-root", data_root, "--no-download"])
    kind, dataset = fid.open_input("mnist:test", args)
    image, _ = dataset[0]
    assert kind == "images" and len(dataset) == 10000 and image.shape == (1, 28, 28)
    assert 0 <= image.min() and image.max() <= 1
