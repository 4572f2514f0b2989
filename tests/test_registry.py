"""The plugin system: built-ins via entry points, third-party plugins, broken
plugins skipped, duplicate names refused, autoload switch, `mtlkit plugins`."""

import json
import os
import subprocess
import sys
import warnings

import pytest

import mtlkit
from mtlkit.registry import BUILTIN_MODULES, KINDS, PluginError, Registry, RegistryError, get_registry

from _tasks import InertTask

TOY_PLUGIN = """
    from mtlkit import hookimpl
    from mtlkit.fusion import Fusion

    class ToyFusion(Fusion):
        defaults = {"alpha": 0.5}

        def forward(self, x, decoded):
            return x

    @hookimpl
    def mtlkit_register_fusions(registry):
        registry.add("toy_fusion", ToyFusion)
"""

BROKEN_PLUGIN = """
    import a_module_that_does_not_exist  # noqa: F401
"""

CLASHING_PLUGIN = """
    from mtlkit import hookimpl
    from mtlkit.fusion import Fusion

    class OtherToyFusion(Fusion):
        def forward(self, x, decoded):
            return x

    @hookimpl
    def mtlkit_register_fusions(registry):
        registry.add("toy_fusion", OtherToyFusion)
"""


def _run_cli(*args, env_extra=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "mtlkit", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_builtins_load_through_entry_points_of_the_mtlkit_distribution(fresh_registry):
    registry = fresh_registry()
    assert registry.failures == []
    names = dict(registry.pm.list_name_plugin())
    for module_name in BUILTIN_MODULES:
        short = module_name.rsplit(".", 1)[1]
        assert names[short].__name__ == module_name
    for entry in registry.entries():
        if entry.origin.plugin in names and entry.origin.distribution == "mtlkit":
            assert entry.origin.version == mtlkit.__version__
    # the built-ins are loaded from the mtlkit_plugins package, never from a
    # generic top-level "plugins" package
    builtin = [plugin for name, plugin in registry.pm.list_name_plugin()
               if registry._origins[name].distribution == "mtlkit"]
    assert builtin and all(p.__name__.startswith("mtlkit_plugins.") for p in builtin)
    assert all(not p.__name__.startswith("plugins.") for _, p in registry.pm.list_name_plugin())


def test_third_party_plugin_appears_with_its_distribution(plugin_site):
    plugin_site("mtlkit-toy", "1.2.3", {"toy": "toy_plugin"}, {"toy_plugin.py": TOY_PLUGIN})
    registry = get_registry()
    entry = registry.entry("fusion", "toy_fusion")
    assert (entry.origin.distribution, entry.origin.version) == ("mtlkit-toy", "1.2.3")
    assert entry.obj.defaults == {"alpha": 0.5}
    result = _run_cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)["plugins"]
    assert {"kind": "fusion", "name": "toy_fusion", "distribution": "mtlkit-toy",
            "version": "1.2.3", "plugin": "mtlkit-toy:toy"} in listed


def test_broken_plugin_is_reported_and_skipped(plugin_site):
    plugin_site("mtlkit-toy", "1.2.3", {"toy": "toy_plugin"}, {"toy_plugin.py": TOY_PLUGIN})
    plugin_site("mtlkit-broken", "0.1", {"broken": "broken_plugin"},
                {"broken_plugin.py": BROKEN_PLUGIN})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = get_registry()
    assert [f.plugin for f in registry.failures] == ["mtlkit-broken:broken"]
    assert "a_module_that_does_not_exist" in registry.failures[0].error
    assert any("mtlkit-broken:broken" in str(w.message) for w in caught)
    assert ("fusion", "toy_fusion") in registry  # the healthy plugin still loaded
    result = _run_cli("plugins")
    assert result.returncode == 0
    assert "toy_fusion" in result.stdout
    assert "failed: plugin 'mtlkit-broken:broken' from mtlkit-broken" in result.stdout


def test_duplicate_name_is_refused_naming_both_distributions(plugin_site):
    plugin_site("mtlkit-toy", "1.2.3", {"toy": "toy_plugin"}, {"toy_plugin.py": TOY_PLUGIN})
    plugin_site("mtlkit-clash", "9.9", {"clash": "clash_plugin"},
                {"clash_plugin.py": CLASHING_PLUGIN})
    with pytest.raises(PluginError) as info:
        get_registry()
    message = str(info.value)
    assert "fusion 'toy_fusion' is registered twice" in message
    assert "mtlkit-toy 1.2.3" in message and "mtlkit-clash 9.9" in message
    result = _run_cli("plugins")
    assert result.returncode == 2
    assert result.stderr.startswith("error: fusion 'toy_fusion' is registered twice")
    assert "Traceback" not in result.stderr


def test_autoload_switch_loads_builtins_only(plugin_site, monkeypatch):
    plugin_site("mtlkit-toy", "1.2.3", {"toy": "toy_plugin"}, {"toy_plugin.py": TOY_PLUGIN})
    monkeypatch.setenv("MTLKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = get_registry()
    assert ("fusion", "toy_fusion") not in registry
    assert {name for name, _ in registry.pm.list_name_plugin()} == {
        m.rsplit(".", 1)[1] for m in BUILTIN_MODULES}


def test_in_place_plugin_and_lookup_errors():
    registry = Registry()

    class Plugin:
        @mtlkit.hookimpl
        def mtlkit_register_tasks(self, registry):
            registry.add("centres", InertTask)

    registry.register_plugin(Plugin(), "local-plugin")
    assert registry.get("task", "centres") is InertTask
    assert registry.names("task") == ["centres"]
    with pytest.raises(RegistryError, match=r"unknown task 'centre' \(did you mean 'centres'\?\)"):
        registry.get("task", "centre")
    with pytest.raises(RegistryError, match="unknown component kind 'tsk'"):
        registry.get("tsk", "centres")
    with pytest.raises(PluginError, match="registered twice"):
        registry.register_plugin(Plugin(), "another-name")
    assert set(KINDS) == {"backbone", "task", "fusion", "dataset", "weighting"}


@pytest.mark.parametrize("kind, hook, expected", [
    ("task", "mtlkit_register_tasks", "mtlkit.task.Task"),
    ("fusion", "mtlkit_register_fusions", "mtlkit.fusion.Fusion"),
    ("backbone", "mtlkit_register_backbones", "mtlkit.backbone.Backbone"),
    ("weighting", "mtlkit_register_weightings", "mtlkit.weighting.LossWeighting"),
    ("dataset", "mtlkit_register_datasets", "torch.utils.data.Dataset"),
])
def test_add_refuses_an_object_of_the_wrong_kind_naming_name_kind_and_distribution(kind, hook, expected):
    class NotAComponent:
        defaults = {}

    plugin = type("Plugin", (), {hook: staticmethod(mtlkit.hookimpl(
        lambda registry: registry.add("odd", NotAComponent)))})()
    registry = Registry()
    with pytest.raises(PluginError) as info:
        registry.register_plugin(plugin, "odd-plugin", "mtlkit-odd", "0.3")
    message = str(info.value)
    assert message.startswith(f"{kind} 'odd' registered by mtlkit-odd 0.3 (plugin 'odd-plugin')")
    assert f"expected a subclass of {expected}" in message
    assert ("NotAComponent") in message
    assert (kind, "odd") not in registry


def test_add_accepts_the_documented_kinds():
    import torch

    from mtlkit.fusion import Fusion
    from mtlkit.models.backbones import Backbone
    from mtlkit.weighting import LossWeighting

    class B(Backbone):
        out_channels, strides = [4], [8]

        def forward(self, images):
            return [images]

    class D(torch.utils.data.Dataset):
        pass

    def make_dataset(**options):  # a dataset factory function
        return D()

    class Plugin:
        @mtlkit.hookimpl
        def mtlkit_register_backbones(self, registry):
            registry.add("b", B)

        @mtlkit.hookimpl
        def mtlkit_register_fusions(self, registry):
            registry.add("f", type("F", (Fusion,), {"forward": lambda self, x, decoded: x}))

        @mtlkit.hookimpl
        def mtlkit_register_weightings(self, registry):
            registry.add("w", type("W", (LossWeighting,), {"forward": lambda self, losses: (sum(losses.values()), {})}))

        @mtlkit.hookimpl
        def mtlkit_register_datasets(self, registry):
            registry.add("d", D)
            registry.add("d_fn", make_dataset)

    registry = Registry()
    registry.register_plugin(Plugin(), "kinds")
    assert registry.get("backbone", "b") is B and registry.get("dataset", "d") is D
    assert registry.get("dataset", "d_fn") is make_dataset
    assert B().train().frozen_stages == 0  # a plugin backbone has no stage to freeze


def test_hooks_are_called_through_pluggy_once_per_plugin():
    calls = []
    registry = Registry()
    registry.pm.add_hookcall_monitoring(
        lambda hook_name, impls, kwargs: calls.append((hook_name, [i.plugin_name for i in impls])),
        lambda outcome, hook_name, impls, kwargs: None)

    class First:
        @mtlkit.hookimpl
        def mtlkit_register_tasks(self, registry):
            registry.add("centres", InertTask)

    class Second:
        @mtlkit.hookimpl
        def mtlkit_register_tasks(self, registry):
            registry.add("centres_too", InertTask)

    registry.register_plugin(First(), "first")
    registry.register_plugin(Second(), "second")  # "first" is not called again: no duplicate
    assert [c for c in calls if c[1]] == [("mtlkit_register_tasks", ["first"]),
                                          ("mtlkit_register_tasks", ["second"])]
    assert registry.names("task") == ["centres", "centres_too"]


@pytest.mark.parametrize("make_plugin", ["namespace", "dataclass"])
def test_an_unhashable_plugin_object_registers_and_later_plugins_still_do(make_plugin):
    """pluggy >= 1.7 keeps plugin objects in sets: a SimpleNamespace or a
    dataclass instance (both unhashable) must still register, and must not
    break the registration of the plugins that come after it."""
    import dataclasses
    import types

    def register_tasks(registry):
        registry.add("centres", InertTask)

    if make_plugin == "namespace":
        plugin = types.SimpleNamespace(mtlkit_register_tasks=mtlkit.hookimpl(register_tasks))
    else:
        @dataclasses.dataclass
        class DataPlugin:
            label: str = "x"

            @mtlkit.hookimpl
            def mtlkit_register_tasks(self, registry):
                register_tasks(registry)

        plugin = DataPlugin()
    with pytest.raises(TypeError):
        hash(plugin)  # the case this test is about
    registry = Registry()
    registry.register_plugin(plugin, "unhashable")

    class Later:
        @mtlkit.hookimpl
        def mtlkit_register_tasks(self, registry):
            registry.add("centres_too", InertTask)

    registry.register_plugin(Later(), "later")
    assert registry.names("task") == ["centres", "centres_too"]
    assert registry.get("task", "centres") is InertTask
    assert registry.pm.has_plugin("unhashable")
