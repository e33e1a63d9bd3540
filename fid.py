"""FID and Inception Score, identical to pytorch-fid 0.3.0, usable offline, with a fast Frechet distance.

The Frechet Inception Distance (Heusel et al., NeurIPS 2017, https://arxiv.org/abs/1706.08500) fits a Gaussian
to the 2048-d pool3 features of the FID Inception v3 network for two image sets and measures

    FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2))                                   (Heusel eq. 6)

The Inception Score (Salimans et al., NeurIPS 2016, https://arxiv.org/abs/1606.03498) uses the 1008 logits of
the same forward pass: IS = exp(E_x KL(p(y|x) || p(y))), averaged over 10 splits.

Everything below reproduces pytorch-fid 0.3.0 (mseitzer/pytorch-fid): the network of its FID Inception
(TensorFlow's 2015-12-05 graph, weights pt_inception-2015-12-05-6726825d.pth), bilinear resize to 299x299,
[0, 1] -> [-1, 1], float64 statistics (np.cov, ddof=1). Only tr(sqrt(S1 S2)) is computed differently: from
symmetric eigenvalue problems instead of scipy's sqrtm (same value, several times faster, see frechet_distance).

Weights: `weights` argument / `--fid-weights PATH`, else $CLEANGAN_FID_WEIGHTS, else the torch.hub cache
$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth (downloaded once, SHA-256 checked).
Offline without the file, loading raises FIDWeightsError saying where to put it.

API (images for the network are float NCHW in [0, 1], 1 or 3 channels; training scripts' images are in [-1, 1]):
    model = load_inception(weights=None, device="cpu")        # InceptionFeatures in eval mode
    pool3, logits = model(images)                               # [N, 2048], [N, 1008]
    pool3, logits = activations(source, model, batch_size=50)  # source: tensor, Dataset, loader or fn(b)
    mu, sigma = statistics(pool3)                               # float64, == np.mean, np.cov(rowvar=False)
    frechet_distance(mu1, sigma1, mu2, sigma2) -> float;  inception_score(logits, splits=10) -> (mean, std)
    fid_from_generator(generator_fn, n, ref_stats, model) -> {"fid", "is_mean", "is_std"}   # fn(b) in [-1, 1]
    reference_statistics(dataset, name, split, image_size, model, cache_dir, n=None) -> (mu, sigma)
        # dataset yields images (or (image, label)) in [-1, 1]; cached as
        # {cache_dir}/{name}_{split}_{image_size}px_n{n}.npz (mu, sigma + a fingerprint of the weights).
    Evaluator(dataset, name, data_root, ...)(G, z_dim, seed): the scripts' metrics; samples, save_pngs: their export

Usage: python fid.py runs/samples_folder cifar10:train --data-root data   (folders, .npz stats or DATASET:SPLIT)
"""
import argparse
import datetime
import hashlib
import math
import os
import sys
import time
import warnings
import zlib
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.special import logsumexp

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"  # torch.hub checks 6726825d against its SHA-256
WEIGHTS_ENV = "CLEANGAN_FID_WEIGHTS"
IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")  # pytorch-fid's list
IMAG_ATOL = 1e-3  # pytorch-fid's tolerance on the imaginary part of sqrtm(S1 S2); see _clamp_eigenvalues


class FIDWeightsError(RuntimeError):
    """The FID Inception weights cannot be found or loaded (scripts turn this into one error line, exit 2)."""


# ---- The FID Inception v3: torchvision's Inception3 layout (so the state_dict keys are the weight file's),
# ---- with the four blocks that pytorch-fid patches to follow TensorFlow's graph.
class BasicConv2d(nn.Module):
    """Conv without bias + BatchNorm(eps=0.001) + ReLU, as in torchvision (TensorFlow's epsilon)."""

    def __init__(self, in_channels, out_channels, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


def tf_avg_pool(x):
    """3x3 stride-1 average pool that leaves the zero padding out of the mean, as TensorFlow's does.
    torchvision counts the padding (count_include_pad=True), which changes every border pixel."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """torchvision's InceptionA (Mixed_5b-d) with TensorFlow's average pool in the pool branch."""

    def __init__(self, in_channels, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x):
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, self.branch_pool(tf_avg_pool(x))], 1)


class InceptionB(nn.Module):
    """torchvision's InceptionB (Mixed_6a), unchanged: its max pool has no padding, so nothing differs."""

    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), branch3x3dbl, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionC(nn.Module):
    """torchvision's InceptionC (Mixed_6b-e, factorized 7x7) with TensorFlow's average pool."""

    def __init__(self, in_channels, channels_7x7):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x):
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = conv(branch7x7dbl)
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, self.branch_pool(tf_avg_pool(x))], 1)


class InceptionD(nn.Module):
    """torchvision's InceptionD (Mixed_7a), unchanged (unpadded max pool)."""

    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([branch3x3, branch7x7x3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    """torchvision's InceptionE. Mixed_7b (pytorch-fid's FIDInceptionE_1) uses TensorFlow's average pool;
    Mixed_7c (FIDInceptionE_2) uses a 3x3 stride-1 MAX pool where torchvision averages: so does the 2015
    TensorFlow graph that defines FID (likely an error in that graph, kept for identical numbers)."""

    def __init__(self, in_channels, max_pool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl), self.branch_pool(pooled)], 1)


class InceptionFeatures(nn.Module):
    """The FID Inception v3: images in [0, 1] (N, 1 or 3, H, W) -> (pool3 [N, 2048], logits [N, 1008]).
    Same preprocessing and layers as pytorch-fid's InceptionV3([3]); on CPU its pool3 equals ours bit for bit.

    weights: a path, a state dict, None (the default file: $CLEANGAN_FID_WEIGHTS or the torch.hub cache,
    downloading it when missing), or False (leave the layers randomly initialised, e.g. for tests)."""

    def __init__(self, weights=None):
        super().__init__()
        # Registration order is the forward order (forward runs the children up to fc in turn).
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2048, 1008)  # 1008 classes of the 2015 graph; the bias is in the file, unused
        if weights is not False:
            state_dict = dict(_load_state_dict(weights))
            for key in self.state_dict():  # files without BatchNorm's num_batches_tracked (unused in eval)
                if key.endswith("num_batches_tracked"):
                    state_dict.setdefault(key, torch.tensor(0))
            try:
                self.load_state_dict(state_dict)
            except RuntimeError as err:  # missing/unexpected keys, wrong shapes
                raise FIDWeightsError(f"not FID Inception weights: {str(err).splitlines()[0]}") from err

    def forward(self, images):
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images  # gray -> RGB like PIL
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)  # no antialias
        x = 2 * x - 1  # the 2015 graph's input range [-1, 1]
        for block in list(self.children())[:-1]:
            x = block(x)
        pool3 = torch.flatten(x, 1)
        # The improved-GAN IS code multiplies pool3 by softmax/logits/MatMul's weight: no bias.
        return pool3, F.linear(pool3, self.fc.weight)


def _load_state_dict(weights):
    if isinstance(weights, Mapping):
        return weights
    path = weights or os.environ.get(WEIGHTS_ENV)
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", FID_WEIGHTS_FILE)
    hint = (f"put {FID_WEIGHTS_FILE} (from {FID_WEIGHTS_URL}) at {cached}, "
            f"or pass --fid-weights PATH / set {WEIGHTS_ENV}")
    if path:
        if not os.path.isfile(path):
            raise FIDWeightsError(f"FID Inception weights not found at {path}; {hint}")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated download, not a state dict, ...
            raise FIDWeightsError(f"cannot read FID Inception weights {path} ({err}); {hint}") from err
    try:
        return torch.hub.load_state_dict_from_url(FID_WEIGHTS_URL, map_location="cpu", check_hash=True,
                                                  weights_only=True)
    except Exception as err:  # offline (URLError), HTTP error, hash mismatch
        raise FIDWeightsError(f"cannot download the FID Inception weights ({err}); {hint}") from err


def load_inception(weights=None, device="cpu"):
    """The FID Inception with its weights, in eval mode, without gradients, on `device`."""
    return InceptionFeatures(weights).to(device).eval().requires_grad_(False)


def weights_fingerprint(model):
    """Short SHA-256 of the network's parameters: keys the statistics cache to the weights in use."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        if not key.endswith("num_batches_tracked"):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# ---- activations -> statistics -> distance, and the Inception Score
def to_uint8(images):
    """[-1, 1] -> 8 bits, rounded exactly as torchvision.utils.save_image writes a PNG (x * 255 + 0.5, floored)."""
    return ((images.clamp(-1, 1) + 1) / 2).mul(255).add(0.5).clamp(0, 255).to(torch.uint8)  # truncation = floor: x >= 0


def to_unit_interval(images):
    """[-1, 1] (or uint8 images, already 8-bit) -> [0, 1] in 8-bit steps, so that the numbers equal those of
    pytorch-fid run on saved samples (the protocol behind published FIDs)."""
    return (images if images.dtype == torch.uint8 else to_uint8(images)).float().div(255)


def _batches(source, batch_size, n, num_workers):
    """Yield image batches from a tensor/array, a callable fn(b), a Dataset, or an iterable of batches."""
    if isinstance(source, (torch.Tensor, np.ndarray)):
        source = torch.as_tensor(source)[:n]
        yield from source.split(batch_size)
    elif callable(source):
        for start in range(0, n, batch_size):
            yield source(min(batch_size, n - start))
    else:
        if hasattr(source, "__getitem__") and hasattr(source, "__len__"):  # a map-style Dataset
            if n is not None and n < len(source):
                source = torch.utils.data.Subset(source, range(n))
            source = torch.utils.data.DataLoader(source, batch_size=batch_size, num_workers=num_workers,
                                                 collate_fn=_collate)
        seen = 0
        for batch in source:
            batch = batch[0] if isinstance(batch, (tuple, list)) else batch  # (images, labels)
            batch = batch if n is None else batch[:n - seen]
            seen += len(batch)
            if len(batch):
                yield batch
            if n is not None and seen >= n:
                break


def _collate(items):
    """Stack images; when their sizes differ, resize each to 299 first (what forward does anyway, per
    image, and 299 -> 299 is the identity), where pytorch-fid would stop with a stacking error."""
    images = [item[0] if isinstance(item, (tuple, list)) else item for item in items]
    if len({tuple(image.shape) for image in images}) > 1:
        images = [F.interpolate(image[None], size=(299, 299), mode="bilinear", align_corners=False)[0]
                  for image in images]
    return torch.stack(images)


def activations(source, model, batch_size=50, device=None, n=None, num_workers=0, transform=None,
                progress=None):
    """pool3 features and logits (float32 numpy, [N, 2048] and [N, 1008]) of images in [0, 1].

    source: a tensor/array (N, C, H, W); a Dataset yielding images or (image, label); an iterable of batches
    (e.g. a DataLoader); or a callable fn(b) returning b images (then n is required). n: use the first n.
    transform: applied to each batch on the device (e.g. to_unit_interval). progress: fn(done, total)."""
    if callable(source) and not isinstance(source, (torch.Tensor, np.ndarray)) and n is None:
        raise ValueError("activations: a generator function needs n, the number of images")
    device = device or next(model.parameters()).device
    sized = hasattr(source, "__getitem__") and hasattr(source, "__len__")  # tensor, array, Dataset
    total = (len(source) if n is None else min(n, len(source))) if sized else n
    pool3, logits, done = [], [], 0
    with torch.no_grad():
        for batch in _batches(source, batch_size, n, num_workers):
            batch = batch.to(device)
            features, scores = model((transform(batch) if transform else batch).float())
            pool3.append(features.cpu().numpy())
            logits.append(scores.cpu().numpy())
            done += len(batch)
            if progress:
                progress(done, total)
    if not pool3:
        raise ValueError("activations: no images")
    return np.concatenate(pool3), np.concatenate(logits)


def statistics(acts, chunk=4096):
    """Mean and covariance (ddof=1) in float64, equal to np.mean(acts, 0) and np.cov(acts, rowvar=False).
    Accumulated over chunks so that 50k x 2048 float32 features need no float64 copy."""
    acts = np.asarray(acts)
    if acts.ndim != 2 or len(acts) < 2:
        raise ValueError(f"statistics need at least 2 feature vectors, got shape {acts.shape}")
    mu = acts.mean(axis=0, dtype=np.float64)
    sigma = np.zeros((acts.shape[1], acts.shape[1]))
    for start in range(0, len(acts), chunk):
        centred = acts[start:start + chunk].astype(np.float64) - mu
        sigma += centred.T @ centred
    return mu, sigma / (len(acts) - 1)


def _clamp_eigenvalues(eigenvalues, what):
    """S1, S2 and S1 S2 have real eigenvalues >= 0, known only to about d * eps * max(lam) (numpy's
    matrix_rank tolerance). Values below that are round-off: set to 0, as their square roots would add
    noise (with singular covariances, e.g. fewer than 2048 samples, that noise puts pytorch-fid's sqrtm
    ~1e-7 relative off the exact value; this stays within ~1e-15). sqrtm turns lam < 0 into an imaginary
    sqrt(-lam), which pytorch-fid drops below 1e-3 and reports as an error above: we raise in that case."""
    noise = len(eigenvalues) * np.finfo(np.float64).eps * eigenvalues.max(initial=0.0)
    if eigenvalues.min(initial=0.0) < -max(IMAG_ATOL ** 2, noise):
        raise ValueError(f"{what} is not positive semi-definite: imaginary component "
                         f"{np.sqrt(-eigenvalues.min()):.3g} (eigenvalue {eigenvalues.min():.3g})")
    return np.where(eigenvalues > noise, eigenvalues, 0.0)


def _trace_sqrt_product(sigma1, sigma2):
    """tr(sqrt(S1 S2)) = sum_i sqrt(lam_i), lam_i the eigenvalues of S1 S2, which are those of the symmetric
    PSD matrix B S2 B^T with B = sqrt(W) V^T from S1 = V W V^T. Two symmetric eigensolvers (LAPACK syevd)
    replace sqrtm's complex Schur form: 5-8x faster at d=2048 and exact up to round-off."""
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    b = np.sqrt(_clamp_eigenvalues(w, "sigma1"))[:, None] * v.T
    m = b @ sigma2 @ b.T
    lam = np.linalg.eigvalsh((m + m.T) / 2)
    return np.sqrt(_clamp_eigenvalues(lam, "sigma1 @ sigma2")).sum()


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2)) in float64 (Heusel et al. eq. 6)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, sigma1, sigma2)):
        raise ValueError("statistics contain NaN or inf")
    diff = mu1 - mu2
    tr_covmean = _trace_sqrt_product(sigma1, sigma2)
    if not np.isfinite(tr_covmean):  # pytorch-fid's fallback for a singular product
        warnings.warn(f"fid calculation produces singular product; adding {eps} to diagonal of cov estimates")
        offset = np.eye(len(sigma1)) * eps
        tr_covmean = _trace_sqrt_product(sigma1 + offset, sigma2 + offset)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def inception_score(logits, splits=10):
    """IS = exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016) as in the improved-GAN code: softmax over
    all 1008 logits, p(y) the mean within each of `splits` consecutive parts, returns the mean and
    (population) std over parts. Computed from log-softmax in float64, where the original takes log(p)
    of a float32 softmax (equal unless p underflows to 0, where the original gives NaN)."""
    log_p = np.asarray(logits, np.float64)
    if log_p.ndim != 2 or len(log_p) < splits:
        raise ValueError(f"inception_score needs at least {splits} logit rows, got shape {log_p.shape}")
    log_p = log_p - logsumexp(log_p, axis=1, keepdims=True)
    scores = []
    for i in range(splits):
        part = log_p[i * len(log_p) // splits:(i + 1) * len(log_p) // splits]
        log_py = logsumexp(part, axis=0) - np.log(len(part))
        scores.append(np.exp(np.mean(np.sum(np.exp(part) * (part - log_py), axis=1))))
    return float(np.mean(scores)), float(np.std(scores))


def fid_from_generator(generator_fn, n, ref_stats, model, batch_size=50, device=None, progress=None):
    """FID against ref_stats = (mu, sigma) and IS (10 splits, fewer when n < 10) of n images from
    generator_fn(b) -> b images in [-1, 1] (run under no_grad; put the generator in eval mode first)."""
    pool3, logits = activations(generator_fn, model, batch_size, device, n=n, transform=to_unit_interval,
                                progress=progress)
    is_mean, is_std = inception_score(logits, splits=min(10, n))
    return {"fid": frechet_distance(*statistics(pool3), *ref_stats), "is_mean": is_mean, "is_std": is_std}


def reference_statistics(dataset, name, split, image_size, model, cache_dir, n=None, batch_size=50,
                         device=None, num_workers=0, progress=None):
    """(mu, sigma) of n images (all when None; else a fixed random subset, since datasets such as ImageFolder
    are sorted by class) of `dataset` (images or (image, label) in [-1, 1], converted like fid_from_generator's
    samples), cached in {cache_dir}/{name}_{split}_{image_size}px_n{n}.npz.
    The file also holds the weights' fingerprint, so statistics made with other weights are recomputed."""
    n = len(dataset) if n is None else min(n, len(dataset))
    path = os.path.join(cache_dir, f"{name}_{split}_{image_size}px_n{n}.npz")
    fingerprint = weights_fingerprint(model)
    if os.path.isfile(path):
        with np.load(path) as f:
            if "weights" in f and str(f["weights"]) == fingerprint:
                return f["mu"], f["sigma"]
    print(f"fid: computing reference statistics of {n} {name}:{split} images -> {path}", flush=True)
    if n < len(dataset):
        subset = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n]
        dataset = torch.utils.data.Subset(dataset, subset.tolist())
    pool3, _ = activations(dataset, model, batch_size, device, n=n, num_workers=num_workers,
                           transform=to_unit_interval, progress=progress)
    mu, sigma = statistics(pool3)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, mu=mu, sigma=sigma, weights=fingerprint)
    os.replace(tmp, path)  # atomic: an interrupted run never leaves a truncated cache
    return mu, sigma


# ---- An offline evaluator for MNIST-family samples, trained from the data itself (no Inception weights needed)
CLASSIFIER_STEPS = 3000  # Adam steps of batch 128 (38 epochs of the 10,000 digits here, 6.4 of the full 60,000)


class MNISTClassifier(nn.Module):
    """A small CNN for 32x32 digits in [0, 1] (MNIST padded by 2, as the training scripts see it): two 5x5 conv +
    ReLU + 2x2 max-pool stages (16, 32 channels), a 256-unit ReLU layer (the features of the classifier Frechet
    distance) and 10 logits. forward returns (features, logits)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                      nn.Linear(32 * 8 * 8, 256), nn.ReLU())
        self.head = nn.Linear(256, 10)

    def forward(self, x):
        h = self.features(x)
        return h, self.head(h)


def train_mnist_classifier(images, labels, steps=CLASSIFIER_STEPS, seed=0, device="cpu", batch_size=128):
    """MNISTClassifier trained on uint8 digits (N, 1, 32, 32) with their labels: `steps` Adam steps (lr 1e-3 decayed
    linearly to 0) of cross-entropy on batches in seeded epoch order, each digit randomly rotated (up to 10 degrees),
    scaled (0.9-1.1) and shifted (up to 2 pixels); the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MNISTClassifier().to(device)
    rng, optimizer, done = torch.Generator().manual_seed(seed), torch.optim.Adam(model.parameters(), lr=1e-3), 0
    while done < steps:
        for index in torch.randperm(len(images), generator=rng).split(batch_size)[:steps - done]:
            n = len(index)
            angle = (torch.rand(n, generator=rng) * 2 - 1) * math.radians(10)
            scale = 1 + (torch.rand(n, generator=rng) * 2 - 1) * 0.1
            shift = (torch.rand(n, 2, generator=rng) * 2 - 1) * 2 / 16
            cos, sin = scale * angle.cos(), scale * angle.sin()
            theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
            theta = theta.to(device)
            x = images[index].to(device).float().div(255)
            x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)
            for group in optimizer.param_groups:
                group["lr"] = 1e-3 * (1 - done / steps)
            loss = F.cross_entropy(model(x)[1], labels[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
    return model.eval()


def mnist_digits(root, train, download=False):
    """MNIST as uint8 (N, 1, 32, 32) padded by 2 pixels, and its labels; ValueError where the files are missing."""
    import torchvision
    try:
        mnist = torchvision.datasets.MNIST(root, train=train, download=download)
    except Exception as err:
        raise ValueError(f"the MNIST classifier needs MNIST in {os.path.abspath(root)} ({str(err).splitlines()[0]}); "
                         "put it there or use --download on a machine with internet") from err
    return F.pad(mnist.data, (2, 2, 2, 2))[:, None], mnist.targets


@torch.no_grad()
def classify(model, images, batch_size=500):
    """(features float64 numpy (N, 256), class probabilities (N, 10)) of uint8 or [0, 1] digits (N, 1, 32, 32)."""
    device = next(model.parameters()).device
    feats, probs = [], []
    for batch in images.split(batch_size):
        batch = batch.to(device)
        h, logits = model(batch.float().div(255) if batch.dtype == torch.uint8 else batch.float())
        feats.append(h.double().cpu())
        probs.append(logits.softmax(1).double().cpu())
    return torch.cat(feats).numpy(), torch.cat(probs)


def mnist_classifier(root, cache_dir, device="cpu", download=False):
    """(classifier, test accuracy): trained on the MNIST training set under root on first use and cached as
    {cache_dir}/mnist_classifier_{key}.pt, key = hash of the training data and of this code, so that other data
    or a changed classifier is never reused silently. The accuracy is on the official test set."""
    import inspect
    images, labels = mnist_digits(root, train=True, download=download)
    code = inspect.getsource(MNISTClassifier) + inspect.getsource(train_mnist_classifier) + str(CLASSIFIER_STEPS)
    key = hashlib.sha256(images.numpy().tobytes() + labels.numpy().tobytes() + code.encode()).hexdigest()[:12]
    path = os.path.join(cache_dir, f"mnist_classifier_{key}.pt")
    model = MNISTClassifier().to(device).eval()
    if os.path.isfile(path):
        cached = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(cached["state_dict"])
        return model, cached["test_accuracy"]
    print(f"fid: training the MNIST classifier on {len(images)} digits -> {path}", flush=True)
    model = train_mnist_classifier(images, labels, device=device)
    test_images, test_labels = mnist_digits(root, train=False, download=download)
    accuracy = (classify(model, test_images)[1].argmax(1) == test_labels).double().mean().item()
    os.makedirs(cache_dir, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "test_accuracy": accuracy}, path + ".tmp")
    os.replace(path + ".tmp", path)  # atomic
    return model, accuracy


def stacked_mnist_modes(model, images):
    """Metz et al. Sec. 3.3 (VEEGAN, PacGAN): each channel of (N, 3, 32, 32) stacked digits classified, mode =
    100 d_R + 10 d_G + d_B; returns the modes covered (of 1,000) and KL(p_modes || uniform) in nats."""
    digits = [classify(model, images[:, c:c + 1])[1].argmax(1) for c in range(3)]
    p = torch.bincount(100 * digits[0] + 10 * digits[1] + digits[2], minlength=1000).double() / len(images)
    covered = p[p > 0]
    return {"modes": len(covered), "modes_kl": (covered * (covered * 1000).log()).sum().item()}


def mnist_quality(model, images, reference):
    """MNIST: the Frechet distance between the classifier's 256-d features of `images` and `reference` (mu, sigma)
    (the "classifier FD"), and KL(mean class distribution || uniform over 10) in nats."""
    feats, probs = classify(model, images)
    mean = probs.mean(0)
    return {"classifier_fd": frechet_distance(*statistics(feats), *reference),
            "class_kl": (mean * (mean * 10).clamp_min(1e-300).log()).sum().item()}


# ---- The training scripts' evaluation: a generator -> samples, PNG files and numbers
def as_32px_digits(x):
    """Samples in [-1, 1] at the classifier's 32 px: 28 px (MNIST's own size) padded by 2 pixels of background, as
    the classifier's digits are; other sizes resized."""
    if x.shape[-1] == 28:
        return F.pad(x, (2, 2, 2, 2), value=-1.0)
    return F.interpolate(x, size=32, mode="bilinear", antialias=True) if x.shape[-1] != 32 else x


@torch.no_grad()
def samples(G, n, z_dim, seed, device, batch_size=500):
    """n samples of G in [-1, 1] (G put in eval mode), batch by batch, from noise seeded by `seed` alone: the same
    images at each call with the same batch size (the noise depends on it)."""
    noise = torch.Generator().manual_seed(seed)
    G.eval()
    for start in range(0, n, batch_size):
        yield G(torch.randn(min(batch_size, n - start), z_dim, generator=noise).to(device))


def progress(label, file=None):
    """A callback fn(done, total) printing a line with images/s and the ETA at each tenth (to stdout by default)."""
    start, printed = time.time(), set()

    def show(done, total):
        if 10 * done // total not in printed:
            printed.add(10 * done // total)
            rate = done / max(time.time() - start, 1e-9)
            eta = datetime.timedelta(seconds=round((total - done) / rate))
            print(f"{label}: {done}/{total} images | {rate:.0f} images/s | ETA {eta}", file=file or sys.stdout,
                  flush=True)
    return show


def save_pngs(batches, out, n):
    """n images in [-1, 1] from `batches` as 8-bit PNGs 000000.png, ... (rounded as to_uint8) in the folder `out`,
    which must be new or empty (else ValueError); OSError when it cannot be written."""
    from PIL import Image
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ValueError(f"{out} exists and is not an empty folder; not overwriting it")
    os.makedirs(out, exist_ok=True)
    show, done = progress(f"generating into {out}"), 0
    for images in batches:
        for image in to_uint8(images).permute(0, 2, 3, 1).cpu().numpy():
            image = Image.fromarray(image.squeeze(2) if image.shape[2] == 1 else image)
            image.save(os.path.join(out, f"{done:06d}.png"))
            done += 1
        show(done, n)


class Evaluator:
    """What the training scripts measure of a generator: FID and IS against the training images, and on MNIST and
    stacked MNIST the classifier metrics; all it needs is loaded when it is built (a missing file stops a run before
    it starts). Params: dataset: the training set (images or (image, label)); name: its --dataset name; data_root:
    its folder (and MNIST's); cache_dir: for reference statistics and the classifier; fid_samples: images per FID
    (0: no FID); classifier_samples. Raises FIDWeightsError without Inception weights, ValueError without MNIST."""

    def __init__(self, dataset, name, data_root, image_size, device, cache_dir, fid_samples=0, classifier_samples=0,
                 fid_weights=None, download=False, num_workers=0):
        self.fid_samples, self.classifier_samples, self.device = fid_samples, classifier_samples, device
        self.inception = self.classifier = None
        if fid_samples:
            self.inception = load_inception(fid_weights, device)
            name = f"folder-{zlib.crc32(os.path.abspath(data_root).encode()):08x}" if name == "folder" else name
            self.reference = reference_statistics(dataset, name, "train", image_size, self.inception, cache_dir,
                                                  n=fid_samples, device=device, num_workers=num_workers)
        if name in ("mnist", "stacked-mnist"):
            model, accuracy = mnist_classifier(data_root, cache_dir, device, download)
            digits = statistics(classify(model, mnist_digits(data_root, True)[0])[0]) if name == "mnist" else None
            self.classifier = model, digits
            print(f"MNIST classifier: {100 * accuracy:.2f} % accuracy on the official test set")

    def __call__(self, G, z_dim, seed, step=None):
        """{"fid", "is_mean", "is_std"} (with FID) and {"modes", "modes_kl"} (stacked MNIST) or {"classifier_fd",
        "class_kl"} (MNIST) of G's samples (noise seeded by `seed`; see samples), G's mode kept. step: during
        training, FID's samples are new at each step (seeded by seed + step); step None: both of the same samples."""
        training, scores = G.training, {}
        if self.fid_samples:
            batches = samples(G, self.fid_samples, z_dim, seed + (step or 0), self.device, 500 if step is None else 50)
            scores = fid_from_generator((chunk for images in batches for chunk in images.split(50)),
                                        self.fid_samples, self.reference, self.inception, device=self.device,
                                        progress=None if step else progress("evaluating"))
        if self.classifier:
            model, digits = self.classifier
            images = torch.cat([to_uint8(as_32px_digits(x)).cpu()
                                for x in samples(G, self.classifier_samples, z_dim, seed, self.device)])
            scores |= stacked_mnist_modes(model, images) if digits is None else mnist_quality(model, images, digits)
        G.train(training)
        return scores


# ---- Command line: python fid.py A B
DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}


class ImageFiles(torch.utils.data.Dataset):
    """Image files read like pytorch-fid: PIL, converted to RGB, ToTensor ([0, 1])."""

    def __init__(self, files):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image
        from torchvision.transforms.functional import to_tensor
        with Image.open(self.files[i]) as image:
            return to_tensor(image.convert("RGB"))


def image_files(folder):
    """pytorch-fid's file list (the folder's own files with its extensions, sorted); for a tree of class
    folders (ImageFolder layout), where pytorch-fid finds nothing, all images below it."""
    names = sorted(os.listdir(folder))
    files = [os.path.join(folder, f) for f in names if f.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS]
    if not files:
        files = sorted(os.path.join(root, f) for root, _, fs in os.walk(folder) for f in fs
                       if f.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return files


def open_input(spec, args):
    """('stats', (mu, sigma)) for an .npz, ('images', Dataset in [0, 1]) for a folder or DATASET:SPLIT."""
    if spec.endswith(".npz"):
        if not os.path.isfile(spec):
            raise ValueError(f"no such statistics file: {spec}")
        with np.load(spec) as f:
            if "mu" not in f or "sigma" not in f:
                raise ValueError(f"{spec} holds no 'mu' and 'sigma' arrays")
            return "stats", (f["mu"], f["sigma"])
    if os.path.isdir(spec):
        return "images", ImageFiles(image_files(spec))
    name, _, split = spec.partition(":")
    if name not in DATASETS or split not in ("train", "test"):
        raise ValueError(f"{spec} is neither a folder, an .npz file nor DATASET:SPLIT with DATASET in "
                         f"{', '.join(DATASETS)} and SPLIT train or test")
    import torchvision
    try:
        return "images", getattr(torchvision.datasets, DATASETS[name])(
            args.data_root, train=split == "train", download=args.download,
            transform=torchvision.transforms.ToTensor())
    except Exception as err:  # missing files (download=False) or no internet
        raise ValueError(f"cannot load {spec} from {args.data_root} ({str(err).splitlines()[0]}); put the "
                         f"dataset there or run with --download on a machine with internet") from err


def mnist_folder_metrics(folder, data_root, cache_dir, download=False):
    """The MNIST-family metrics of a folder of 32x32 (or 28x28, padded as as_32px_digits) 8-bit PNGs (e.g. a
    script's --generate N): gray images get the classifier FD against the MNIST training digits and the class KL, RGB
    images (stacked MNIST) the modes and their KL; the numbers the scripts' --evaluate N --no-fid gives for the same
    samples. Prints and returns them."""
    from PIL import Image
    images = torch.stack([torch.from_numpy(np.array(Image.open(f))) for f in image_files(folder)])
    images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)
    images = F.pad(images, (2, 2, 2, 2)) if images.shape[-2:] == (28, 28) else images  # as as_32px_digits
    if images.shape[-2:] != (32, 32) or images.shape[1] not in (1, 3):
        raise ValueError(f"--mnist needs 32x32 (or 28x28) gray or RGB images, {folder} has {tuple(images.shape[1:])}")
    model, _ = mnist_classifier(data_root, cache_dir, download=download)
    if images.shape[1] == 3:
        result = stacked_mnist_modes(model, images)
    else:
        reference = statistics(classify(model, mnist_digits(data_root, True, download)[0])[0])
        result = mnist_quality(model, images, reference)
    print(" | ".join(f"{k} {v:.4f}" for k, v in result.items()) + f" ({len(images)} images)")
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="FID (and IS) as computed by pytorch-fid 0.3.0.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.error = lambda message: (print(f"fid.py: error: {message}", file=sys.stderr), sys.exit(2))  # one line
    p.add_argument("inputs", nargs="+", metavar="A_B",
                   help="two of: image folder, .npz with mu and sigma, DATASET:SPLIT "
                        f"(DATASET one of {', '.join(DATASETS)}; SPLIT train or test); with --mnist one folder")
    p.add_argument("--mnist", action="store_true",
                   help="the MNIST-family metrics of one folder of 32x32 PNGs instead of FID: classifier FD and class "
                        "KL (gray digits) or modes and their KL (stacked, RGB), as the scripts' --no-fid evaluation")
    p.add_argument("--cache-dir", default="runs/fid_stats", help="where the MNIST classifier is cached (--mnist)")
    p.add_argument("--batch-size", type=int, default=50, help="images per Inception forward pass")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:N")
    p.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="data loading processes (pytorch-fid's default: min(8, CPUs))")
    p.add_argument("--fid-weights", default=None,
                   help=f"path to {FID_WEIGHTS_FILE} (default: ${WEIGHTS_ENV}, else the torch.hub cache)")
    p.add_argument("--save-stats", action="store_true",
                   help="write the statistics of A to the .npz file B instead of printing a FID")
    p.add_argument("--data-root", default="data", help="root folder of the torchvision datasets")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="let torchvision download a missing dataset")
    args = p.parse_args(argv)
    if len(args.inputs) != (1 if args.mnist else 2):
        p.error("--mnist takes one image folder" if args.mnist else "give two inputs, A and B")
    if args.batch_size < 1 or args.num_workers < 0:
        p.error("--batch-size must be >= 1 and --num-workers >= 0")
    if args.save_stats and not args.inputs[1].endswith(".npz"):
        p.error("with --save-stats, B is the .npz file to write")
    return args


def main(argv=None):
    """Print the FID of A and B and the IS of each image input (or save A's statistics); return them."""
    args = parse_args(argv)
    try:
        if args.mnist:
            return mnist_folder_metrics(args.inputs[0], args.data_root, args.cache_dir, args.download)
        if args.save_stats and os.path.exists(args.inputs[1]):
            raise ValueError(f"{args.inputs[1]} exists; not overwriting it")
        specs = args.inputs[:1] if args.save_stats else args.inputs
        inputs = [open_input(spec, args) for spec in specs]  # check both before the slow part
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        model = load_inception(args.fid_weights, device) if any(k == "images" for k, _ in inputs) else None
        stats, result = [], {}
        for spec, (kind, value) in zip(specs, inputs):
            if kind == "stats":
                stats.append(value)
                continue
            pool3, logits = activations(value, model, args.batch_size, device, num_workers=args.num_workers,
                                        progress=progress(f"fid: {spec}", sys.stderr))
            stats.append(statistics(pool3))
            if len(logits) >= 10:
                result[f"is {spec}"] = inception_score(logits)
                print(f"IS {spec}: {result[f'is {spec}'][0]:.4f} +/- {result[f'is {spec}'][1]:.4f}")
        if args.save_stats:
            np.savez_compressed(args.inputs[1], mu=stats[0][0], sigma=stats[0][1])
            print(f"saved statistics of {specs[0]} to {args.inputs[1]}")
        else:
            result["fid"] = frechet_distance(*stats[0], *stats[1])
            print(f"FID: {result['fid']}")
        return result
    except (FIDWeightsError, ValueError, OSError) as err:
        print(f"fid.py: error: {err}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
