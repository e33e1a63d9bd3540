"""The offline MNIST-family evaluator of fid.py (issue: image results on a CPU): a classifier trained from the data
itself, stacked-MNIST modes and KL, the classifier Frechet distance, and their use during training and from a
checkpoint. Training the real classifier takes minutes, so these tests use one trained on 2,000 digits (a stated
accuracy bound); the numbers of the real one are in docs/fid.md."""

import math
from pathlib import Path

import pytest
import torch

import fid
import gan
from conftest import SHARED_DATA, TINY, check_bad_input, read_metrics


@pytest.fixture(scope="module")
def small_classifier():
    """A classifier trained on the first 2,000 training digits for 300 steps (~10 s)."""
    if not (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip(f"offline test data not found at {SHARED_DATA}")
    torch.set_num_threads(1)
    images, labels = fid.mnist_digits(str(SHARED_DATA), train=True)
    return fid.train_mnist_classifier(images[:2000], labels[:2000], steps=300)


def test_reduced_training_reaches_its_accuracy_bound(small_classifier):
    test_images, test_labels = fid.mnist_digits(str(SHARED_DATA), train=False)
    accuracy = (fid.classify(small_classifier, test_images)[1].argmax(1) == test_labels).double().mean().item()
    assert accuracy >= 0.90  # 2,000 digits, 300 steps; the real settings reach far more (docs/fid.md)


def test_training_is_seeded_and_leaves_the_global_rng_alone():
    images = torch.randint(0, 256, (64, 1, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (64,))
    state = torch.get_rng_state()
    a = fid.train_mnist_classifier(images, labels, steps=3)
    assert torch.equal(torch.get_rng_state(), state)
    b = fid.train_mnist_classifier(images, labels, steps=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_stacked_modes_of_constructed_inputs(small_classifier):
    """Real stacked triples cover ~all 1,000 modes with a small KL; one triple repeated is 1 mode, KL = log 1000."""
    images, _ = fid.mnist_digits(str(SHARED_DATA), train=False)
    triples = torch.randint(len(images), (10_000, 3), generator=torch.Generator().manual_seed(0))
    stacked = images[triples].flatten(1, 2)
    real = fid.stacked_mnist_modes(small_classifier, stacked)
    assert real["modes"] >= 990 and real["modes_kl"] < 0.15
    one = fid.stacked_mnist_modes(small_classifier, stacked[:1].repeat(500, 1, 1, 1))
    assert one["modes"] == 1 and one["modes_kl"] == pytest.approx(math.log(1000))


def test_classifier_fd_is_small_for_real_digits_and_large_for_noise(small_classifier):
    train, _ = fid.mnist_digits(str(SHARED_DATA), train=True)
    test, _ = fid.mnist_digits(str(SHARED_DATA), train=False)
    reference = fid.statistics(fid.classify(small_classifier, train)[0])
    real = fid.mnist_quality(small_classifier, test, reference)
    noise = fid.mnist_quality(small_classifier, torch.randint(0, 256, (2000, 1, 32, 32), dtype=torch.uint8), reference)
    assert real["classifier_fd"] * 20 < noise["classifier_fd"] and real["class_kl"] < 0.01 < noise["class_kl"]
    one_digit = fid.mnist_quality(small_classifier, test[:1].repeat(100, 1, 1, 1), reference)
    assert one_digit["class_kl"] > 1.5  # all mass on (about) one class: KL near log 10 = 2.30


@pytest.mark.parametrize(
    "dataset, keys", [("mnist", {"classifier_fd", "class_kl"}), ("stacked-mnist", {"modes", "modes_kl"})]
)
def test_evaluation_during_training_needs_no_inception_weights(
    dataset, keys, small_classifier, data_root, tmp_path, monkeypatch
):
    monkeypatch.setattr(fid, "mnist_classifier", lambda *a, **k: (small_classifier, 0.9))
    monkeypatch.setattr(
        fid, "load_inception", lambda *a, **k: pytest.fail("--no-fid must not load the Inception weights")
    )
    args = TINY + [
        "--ngf",
        "8",
        "--ndf",
        "8",
        "--dataset",
        dataset,
        "--data-root",
        data_root,
        "--total-steps",
        "2",
        "--eval-every",
        "2",
        "--no-fid",
        "--classifier-samples",
        "300",
        "--ema-decay",
        "0.5",
        "--out-dir",
        str(tmp_path),
    ]
    summary = gan.main(args)
    metrics = read_metrics(summary["run_dir"])
    assert not keys & set(metrics[0]) and {k + "_ema" for k in keys} <= set(metrics[1])
    evaluated = gan.main(["--resume", str(Path(summary["run_dir"]) / "checkpoint.pt"), "--evaluate", "300", "--no-fid"])
    assert keys <= set(evaluated)


def test_missing_mnist_for_the_classifier_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(ValueError, match="put it there"):
        fid.mnist_digits(str(tmp_path), train=True)  # what fid.mnist_classifier reads first
    check_bad_input(
        gan.main, ["--dataset", "cifar10", "--eval-every", "10", "--no-fid"], capsys, "--no-fid", "nothing to evaluate"
    )
