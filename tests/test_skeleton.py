"""The shared skeleton is one text: below its marker line every image script is gan.py, character for character, so
that a fix made in one copy cannot silently miss the others, and `diff gan.py X.py` shows the method alone; above
the marker each script holds its method and nothing of the skeleton. Then the skeleton's behaviour, on gan.py."""

import ast
import difflib
import importlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

import fid
import gan
from conftest import ROOT, SHARED_DATA, TINY, check_bad_input, check_resume_exact, read_metrics, run_script, states

METHOD_SCRIPTS = ("lens_gan.py", "aw_gan.py", "reg_gan.py", "unrolled_gan.py", "wgan_gp.py")
MARKER = "# ===== everything below this line is the same in every cleangan script"
HOOKS = {"SHARED_FLAG_CHANGES", "add_method_flags", "check_method_flags", "main"}  # what the skeleton calls


def parts(script):
    """(the method's part, the skeleton) of a script: its text above its one marker line, and from that line on."""
    text = (ROOT / script).read_text()
    assert text.count(MARKER) == 1, f"{script}: the marker line must occur exactly once"
    at = text.index(MARKER)
    return text[:at], text[at:]


def names(text):
    """The top-level functions, classes and assigned names that a module text defines."""
    found = set()
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, ast.Assign):
            found |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            found |= {e.id for t in node.targets if isinstance(t, ast.Tuple) for e in t.elts}
    return found


def test_the_skeleton_is_not_empty():
    """Guards the test itself: gan.py's skeleton holds what the scripts share, and the method part holds none of it."""
    method, skeleton = parts("gan.py")
    assert {
        "parse_args",
        "make_dataset",
        "infinite_batches",
        "check_resume",
        "save_checkpoint",
        "rng_state",
        "pick_device",
        "new_run_dir",
        "sample_grid",
        "fail",
        "ema_update",
        "Run",
        "RESUMABLE",
        "number",
        "checkpoint_defaults",
    } <= names(skeleton)
    assert len(skeleton.splitlines()) > 300 and "def main(" in method


@pytest.mark.parametrize("script", METHOD_SCRIPTS)
def test_the_skeleton_is_one_text_in_every_script(script):
    """Below the marker every script is gan.py, character for character: a fix made in one copy cannot silently miss
    the others, and `diff gan.py X.py` shows the method alone."""
    ours, theirs = parts("gan.py")[1], parts(script)[1]
    differ = [
        line for line in difflib.unified_diff(ours.splitlines(), theirs.splitlines(), "gan.py", script, lineterm="")
    ]
    assert not differ, "\n".join(differ[:20])


@pytest.mark.parametrize("script", ("gan.py",) + METHOD_SCRIPTS)
def test_the_method_part_comes_first_and_redefines_nothing_of_the_skeleton(script):
    """Above the marker: the hooks the skeleton calls, and no copy of anything the skeleton defines (which would
    shadow it, or duplicate it within the file)."""
    method, skeleton = parts(script)
    assert HOOKS <= names(method) and not HOOKS & names(skeleton)
    assert not names(method) & names(skeleton), names(method) & names(skeleton)


# ------------------------------------------------------------------ behaviour of the shared skeleton (on gan.py)
SMALL = TINY + ["--ngf", "8", "--ndf", "8"]


def batches_both_ways(args, n=3):
    """The first n training batches gathered in memory and streamed by DataLoader workers."""
    dataset = gan.make_dataset(args)
    images = gan.load_images(dataset, args)
    memory = gan.infinite_batches(dataset, images, args, torch.device("cpu"))
    args.stream_data, args.num_workers = True, 1
    assert gan.load_images(dataset, args) is None
    stream = gan.infinite_batches(dataset, None, args, torch.device("cpu"))
    return dataset, [next(memory) for _ in range(n)], [next(stream) for _ in range(n)]


@pytest.mark.parametrize("dataset", ["mnist", "stacked-mnist", "folder"])
def test_in_memory_batches_equal_streamed_ones_and_the_old_float_pipeline(dataset, data_root, tmp_path):
    root = data_root if dataset != "folder" else str(SHARED_DATA / "cifar10-test-jpg")
    args = gan.parse_args(["--dataset", dataset, "--data-root", root, "--batch-size", "16", "--seed", "3"])[0]
    data, memory, stream = batches_both_ways(args)
    assert all(torch.equal(a, b) for a, b in zip(memory, stream))
    assert memory[0].dtype == torch.float32 and memory[0].shape[1:] == (3 if dataset != "mnist" else 1, 32, 32)
    # epoch 0's order, and each image as ToTensor + Normalize(0.5, 0.5) made it before the uint8 pipeline
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(3 * 1_000_003))[:16]
    as_float = T.Normalize(0.5, 0.5)
    expected = torch.stack([as_float(data[i][0].float().div(255)) for i in order.tolist()])
    assert torch.equal(memory[0], expected)


def test_epochs_roll_over_identically_both_ways(data_root):
    """Two epochs of a small folder dataset: the persistent loader re-reads its plan for every epoch."""
    args = gan.parse_args(
        ["--dataset", "folder", "--data-root", str(SHARED_DATA / "cifar10-test-jpg"), "--batch-size", "512"]
    )[0]
    _, memory, stream = batches_both_ways(args, n=5)  # 3 batches per epoch: epochs 0 and 1
    assert all(torch.equal(a, b) for a, b in zip(memory, stream)) and not torch.equal(memory[0], memory[3])


def test_resume_is_exact_when_streaming(data_root, tmp_path):
    check_resume_exact(
        gan.main, SMALL + ["--data-root", data_root, "--stream-data", "--num-workers", "1"], tmp_path, total=6, first=3
    )


def spy_on_optimizers(monkeypatch):
    """Every Adam built from now on, and at each of their steps the gradients of every parameter of all of them."""
    created, steps = [], []
    init, step = torch.optim.Adam.__init__, torch.optim.Adam.step

    def spy_init(self, *a, **k):
        init(self, *a, **k)
        created.append(self)

    def spy_step(self, *a, **k):
        grads = [
            [None if p.grad is None else p.grad.clone() for g in o.param_groups for p in g["params"]] for o in created
        ]
        steps.append((created.index(self), grads))
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "__init__", spy_init)
    monkeypatch.setattr(torch.optim.Adam, "step", spy_step)
    return steps


@pytest.mark.parametrize(
    "script, extra",
    [
        ("gan", []),
        ("lens_gan", ["--lens-channels", "4"]),
        ("aw_gan", ["--g-batch-size", "8"]),
        ("reg_gan", []),
        ("unrolled_gan", ["--unroll-steps", "1"]),
        ("wgan_gp", ["--n-critic", "2"]),
    ],
)
def test_generator_step_leaves_d_grads_untouched(script, extra, data_root, tmp_path, monkeypatch):
    """G's backward computes G's gradients only: at G's step, D's .grad is what D's own last step left."""
    module = importlib.import_module(script)
    steps = spy_on_optimizers(monkeypatch)
    module.main(SMALL + extra + ["--data-root", data_root, "--total-steps", "2", "--out-dir", str(tmp_path)])
    g_steps = [i for i, (which, _) in enumerate(steps) if which == 0]  # optimizers: G first, then D
    assert len(g_steps) == 2
    for i in g_steps:
        last_d = max(j for j, (which, _) in enumerate(steps[:i]) if which == 1)
        assert all(torch.equal(a, b) for a, b in zip(steps[i][1][1], steps[last_d][1][1]))


def test_non_finite_loss_between_log_steps_stops_with_the_last_checkpoint_finite(
    data_root, tmp_path, capsys, monkeypatch
):
    real_d_loss, calls = gan.d_loss, []

    def d_loss_nan_at_step_3(*a):
        calls.append(1)
        return real_d_loss(*a) * (float("nan") if len(calls) == 3 else 1)

    monkeypatch.setattr(gan, "d_loss", d_loss_nan_at_step_3)
    with pytest.raises(SystemExit) as exc:
        gan.main(
            SMALL + ["--data-root", data_root, "--total-steps", "8", "--log-every", "4", "--out-dir", str(tmp_path)]
        )
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "non-finite loss at step 3 " in err[0] and "d_loss nan" in err[0] and "(step 2)" in err[0]
    ), err
    ckpt = torch.load(next(tmp_path.glob("*/checkpoint.pt")), weights_only=True)
    assert ckpt["step"] == 2 and all(
        t.isfinite().all() for m in ("G", "D") for t in ckpt[m].values() if t.is_floating_point()
    )


def test_ema_update_closed_form():
    """After k updates from theta_ema = theta_0 with G's weights w_1..w_k:
    beta^k theta_0 + sum (1 - beta) beta^(k-i) w_i;
    BN buffers are G's."""
    torch.manual_seed(0)
    G = gan.Generator(4, 1, 16, ngf=2)
    G_ema = gan.copy.deepcopy(G)
    theta_0, beta, ws = [p.detach().clone() for p in G.parameters()], 0.75, []
    for _ in range(3):
        with torch.no_grad():
            for p in G.parameters():
                p.add_(torch.randn_like(p))
            G.net[1].running_mean.add_(1.0)
        ws.append([p.detach().clone() for p in G.parameters()])
        gan.ema_update(G_ema, G, beta)
    for n, p_ema in enumerate(G_ema.parameters()):
        expected = beta**3 * theta_0[n] + sum((1 - beta) * beta ** (3 - i) * ws[i - 1][n] for i in (1, 2, 3))
        torch.testing.assert_close(p_ema, expected, rtol=1e-6, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(G_ema.buffers(), G.buffers()))


def test_ema_changes_samples_but_not_training(data_root, tmp_path):
    """EMA on: the same losses and live weights as EMA off (it never feeds back); grids and the EMA differ."""
    args = SMALL + ["--data-root", data_root, "--total-steps", "3"]
    off = gan.main(args + ["--out-dir", str(tmp_path / "off")])
    on = gan.main(args + ["--out-dir", str(tmp_path / "on"), "--ema-decay", "0.5"])
    assert read_metrics(off["run_dir"]) == read_metrics(on["run_dir"])
    a, b = (torch.load(Path(s["run_dir"]) / "checkpoint.pt", weights_only=True) for s in (off, on))
    assert states(b) - states(a) == {"G_ema"}
    assert all(torch.equal(a["G"][k], b["G"][k]) for k in a["G"]) and not torch.equal(
        b["G_ema"]["net.0.weight"], b["G"]["net.0.weight"]
    )
    grid = lambda s: np.asarray(Image.open(Path(s["run_dir"]) / "samples" / "step_0000003.png"))  # noqa: E731
    assert not np.array_equal(grid(off), grid(on)) and on["fid_of"] == "G_ema"


def test_resume_is_exact_with_ema(data_root, tmp_path):
    full, resumed = check_resume_exact(gan.main, SMALL + ["--data-root", data_root, "--ema-decay", "0.9"], tmp_path)
    a, b = (torch.load(Path(s["run_dir"]) / "checkpoint.pt", weights_only=True)["G_ema"] for s in (full, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_takes_the_runs_flags_from_the_checkpoint(data_root, tmp_path):
    """Only what changes needs to be given: --resume PATH --total-steps N continues the run as it was defined."""
    first = gan.main(
        SMALL + ["--data-root", data_root, "--total-steps", "2", "--loss", "hinge", "--out-dir", str(tmp_path)]
    )
    ckpt = str(Path(first["run_dir"]) / "checkpoint.pt")
    resumed = gan.main(["--resume", ckpt, "--total-steps", "3"])
    assert resumed["run_dir"] == first["run_dir"] and resumed["step"] == 3
    assert json.loads((Path(first["run_dir"]) / "args.json").read_text())["loss"] == "hinge"


@pytest.fixture
def trained(data_root, tmp_path):
    """A 2-step run with an EMA generator, and random Inception weights for FID (the real ones are not here)."""
    torch.manual_seed(0)
    torch.save(fid.InceptionFeatures(weights=False).state_dict(), tmp_path / "random_inception.pth")
    summary = gan.main(
        SMALL
        + ["--data-root", data_root, "--total-steps", "2", "--ema-decay", "0.5", "--out-dir", str(tmp_path / "runs")]
    )
    return Path(summary["run_dir"]) / "checkpoint.pt", tmp_path / "random_inception.pth"


def test_generate_writes_the_ema_generators_images_as_8bit_pngs(trained, tmp_path, capsys):
    ckpt, _ = trained
    result = gan.main(
        ["--resume", str(ckpt), "--generate", "7", "--generate-dir", str(tmp_path / "png"), "--device", "cpu"]
    )
    files = sorted((tmp_path / "png").iterdir())
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(7)] and result["generated"] == str(
        tmp_path / "png"
    )
    assert "images/s" in capsys.readouterr().out
    args = gan.parse_args(["--resume", str(ckpt), "--generate", "7"])[0]
    G = gan.Generator(args.z_dim, 1, args.image_size, args.ngf)
    G.load_state_dict(torch.load(ckpt, weights_only=True)["G_ema"])
    expected = torch.cat(list(fid.samples(G, 7, args.z_dim, args.seed, torch.device("cpu"))))
    decoded = torch.stack([torch.from_numpy(np.array(Image.open(f))) for f in files])[:, None]
    assert torch.equal(decoded, fid.to_uint8(expected))


def test_fid_of_exported_pngs_equals_fid_in_memory(trained, tmp_path):
    """`python fid.py FOLDER STATS.npz` on the exported PNGs gives the number --evaluate computes in memory."""
    ckpt, weights = trained
    common = ["--resume", str(ckpt), "--fid-weights", str(weights), "--device", "cpu"]
    in_memory = gan.main(common + ["--evaluate", "20"])
    stats = next((ckpt.parent.parent / "fid_stats").glob("mnist_train_16px_n20.npz"))
    gan.main(common + ["--generate", "20", "--generate-dir", str(tmp_path / "png")])
    out = run_script(
        "fid.py", tmp_path / "png", stats, "--fid-weights", weights, "--device", "cpu", "--num-workers", "0"
    )
    assert out.returncode == 0, out.stderr
    from_files = float(out.stdout.split("FID: ")[1])
    assert math.isfinite(in_memory["fid"]) and from_files == pytest.approx(in_memory["fid"], rel=1e-6)


def test_checkpoint_use_bad_input(trained, tmp_path, capsys, monkeypatch):
    ckpt, weights = trained
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.png").write_bytes(b"x")
    check_bad_input(gan.main, ["--resume", str(ckpt), "--generate", "0"], capsys, "--generate", "> 0")
    check_bad_input(gan.main, ["--generate", "5"], capsys, "--resume")
    check_bad_input(
        gan.main, ["--resume", str(ckpt), "--generate", "2", "--generate-dir", str(full)], capsys, "not overwriting"
    )
    assert (full / "keep.png").read_bytes() == b"x"
    (tmp_path / "locked").mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere
        check_bad_input(
            gan.main,
            ["--resume", str(ckpt), "--generate", "2", "--generate-dir", str(tmp_path / "locked" / "x")],
            capsys,
            "cannot write",
        )
    check_bad_input(
        gan.main,
        ["--resume", str(ckpt), "--generate", "2", "--generate-dir", str(full / "keep.png" / "x")],
        capsys,
        "cannot write",
    )
    import lens_gan

    check_bad_input(
        lens_gan.main, ["--resume", str(ckpt), "--generate", "2"], capsys, "written by gan.py, not lens_gan.py"
    )
    old = torch.load(ckpt, weights_only=True)
    del old["format"], old["script"]
    torch.save(old, tmp_path / "old.pt")
    check_bad_input(gan.main, ["--resume", str(tmp_path / "old.pt"), "--generate", "2"], capsys, "format 1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("CLEANGAN_FID_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    check_bad_input(gan.main, ["--resume", str(ckpt), "--evaluate", "4"], capsys, "--fid-weights")
