"""The shared skeleton is one text: every top-level function, class and constant of gan.py that is not the
method's own is identical, character for character, in the five method scripts, so that a fix made in one copy
cannot silently miss the others (and `diff gan.py X.py` shows the method and little else)."""
import ast

import pytest

from conftest import ROOT

METHOD_SCRIPTS = ("lens_gan.py", "aw_gan.py", "reg_gan.py", "unrolled_gan.py", "wgan_gp.py")
# gan.py's method: its flags, networks, losses and training loop; every other definition is the shared skeleton
METHOD_SPECIFIC = {"parse_args", "main", "dcgan_init", "Generator", "Discriminator", "d_loss", "g_loss", "d_score"}


def definitions(path):
    """{name: source text} of the module's top-level functions, classes and assignments."""
    text = path.read_text()
    found = {}
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            found[node.name] = ast.get_source_segment(text, node)
        elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            for target in node.targets:
                found[target.id] = ast.get_source_segment(text, node)
    return found


SHARED = sorted(definitions(ROOT / "gan.py").keys() - METHOD_SPECIFIC)


def test_the_skeleton_is_not_empty():
    """Guards the test itself: the skeleton has the functions the scripts share."""
    assert {"make_dataset", "infinite_batches", "load_checkpoint", "save_checkpoint", "rng_state", "pick_device",
            "new_run_dir", "sample_grid", "fail", "ema_update", "use_checkpoint", "RESUMABLE"} <= set(SHARED)


@pytest.mark.parametrize("script", METHOD_SCRIPTS)
def test_shared_functions_are_identical_to_gan_py(script):
    ours, theirs = definitions(ROOT / "gan.py"), definitions(ROOT / script)
    missing = [name for name in SHARED if name not in theirs]
    differ = [name for name in SHARED if name in theirs and theirs[name] != ours[name]]
    assert not missing and not differ, f"{script}: missing {missing}, differs from gan.py: {differ}"


@pytest.mark.parametrize("script", METHOD_SCRIPTS)
def test_shared_flags_are_declared_alike(script):
    """The shared flags' add_argument lines are gan.py's (defaults may differ: each script has its paper's)."""
    def flags(path):
        lines = path.read_text().split("    # method-specific arguments")[0].splitlines()
        return {line.split('"')[1] for line in lines if line.strip().startswith('p.add_argument("--')}
    assert flags(ROOT / script) == flags(ROOT / "gan.py")
