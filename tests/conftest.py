"""Shared pytest fixtures."""

import os
import sys
import textwrap

import pytest
import torch

import mtlkit.registry as registry_module

# One intra-op thread by default: the suite's models are tiny, and on a 2-core
# box shared with other work an oversubscribed OpenMP pool makes them an order
# of magnitude slower. Tests of parallel code set the count they need
# themselves; MTLKIT_TEST_THREADS=N runs the whole suite with N threads.
torch.set_num_threads(int(os.environ.get("MTLKIT_TEST_THREADS", "1")))


def pytest_report_header(config):
    import pluggy

    from mtlkit import ops

    error = ops.native_error()
    active = ops.backend() if error is None or error.startswith("MTLKIT_OPS") else f"torch ({error})"
    return (f"mtlkit ops: {active}; MTLKIT_OPS={os.environ.get('MTLKIT_OPS', '')!r}; "
            f"torch {torch.__version__}; pluggy {pluggy.__version__}")


def pytest_sessionstart(session):
    """``MTLKIT_OPS=native`` (CI's native run) requires the extension: a build
    that does not load stops the session here, instead of the native-only
    tests quietly skipping or each failing with the same import error."""
    from mtlkit import ops

    if os.environ.get("MTLKIT_OPS", "").strip().lower() == "native" and ops.native_error():
        pytest.exit(f"MTLKIT_OPS=native but the native extension does not load: "
                    f"{ops.native_error()}", returncode=3)


@pytest.fixture
def fresh_registry(monkeypatch):
    """A registry loaded from the current environment, discarded after the test."""
    registry_module.reset_registry()
    yield registry_module.get_registry
    registry_module.reset_registry()


def write_distribution(root, dist_name, version, entry_points, modules):
    """Install a tiny distribution into folder ``root`` the way pip lays out a
    wheel: the modules plus a ``<name>-<version>.dist-info`` with METADATA and
    entry_points.txt. Putting ``root`` on sys.path makes it discoverable by
    importlib.metadata, exactly like site-packages.

    entry_points: dict entry-point name -> "module" (group ``mtlkit``)
    modules: dict module file name (e.g. "toy_plugin.py") -> source
    """
    root = str(root)
    for filename, source in modules.items():
        with open(os.path.join(root, filename), "w", encoding="utf-8") as handle:
            handle.write(textwrap.dedent(source))
    info = os.path.join(root, f"{dist_name.replace('-', '_')}-{version}.dist-info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w", encoding="utf-8") as handle:
        handle.write(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
    with open(os.path.join(info, "entry_points.txt"), "w", encoding="utf-8") as handle:
        handle.write("[mtlkit]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    return root


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    """A temporary site folder on sys.path; call it to install a distribution there."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def install(dist_name, version, entry_points, modules):
        write_distribution(site, dist_name, version, entry_points, modules)
        for name in list(sys.modules):
            if name.split(".")[0] in {m[:-3] for m in modules}:
                del sys.modules[name]
        registry_module.reset_registry()
        return site

    yield install
    registry_module.reset_registry()
