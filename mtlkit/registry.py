"""The plugin manager: finds plugins and holds every registered component.

Plugins are modules exposing hook implementations (see
:mod:`mtlkit.hookspecs`) and are found through entry points of group
``mtlkit``. The built-in plugins (package ``mtlkit_plugins``) are found the
same way, through the ``mtlkit`` distribution's own entry points.

Environment:

* ``MTLKIT_DISABLE_PLUGIN_AUTOLOAD=1`` (or ``true``, ``yes``, ``on``) loads
  the built-ins only; ``0``, ``false``, ``no``, ``off`` or empty load every
  plugin; any other value is an error naming the variable.
* ``MTLKIT_PLUGIN_IMPORT_WARN`` (seconds, default 10): a plugin still
  importing after this long is named on stderr (a plugin that blocks at
  import blocks every command; ``mtlkit plugins`` shows each plugin's
  import time).

A plugin is imported and registered with its prints sent to stderr (stdout
stays the command's: ``mtlkit plugins --json``, ``detect --json``). Its
registration is all or nothing: a hook failing midway removes the names the
plugin had added. A plugin that fails to import (or calls ``sys.exit`` while
importing) is reported and skipped; one that registers wrongly (a duplicate
name, an object of the wrong kind, a component class without ``forward``, a
misspelt hook name) stops the host with a :class:`PluginError` naming it.

Usage::

    from mtlkit.registry import get_registry
    reg = get_registry()
    TaskClass = reg.get("task", "depth")        # did-you-mean error if unknown
    reg.names("fusion")                          # ['concat', 'gated', ...]
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Dict, List, Optional, Tuple

import pluggy
from torch import nn
from torch.utils.data import Dataset

from mtlkit import hookspecs
from mtlkit.backbone import Backbone
from mtlkit.errors import MtlkitError, did_you_mean  # noqa: F401 - did_you_mean also imported from here
from mtlkit.fusion import Fusion
from mtlkit.task import Task
from mtlkit.version import __version__
from mtlkit.weighting import LossWeighting

#: kind -> name of the hook that registers components of that kind
KINDS: Dict[str, str] = {
    "backbone": "mtlkit_register_backbones",
    "task": "mtlkit_register_tasks",
    "fusion": "mtlkit_register_fusions",
    "dataset": "mtlkit_register_datasets",
    "weighting": "mtlkit_register_weightings",
}



def _subclass_of(base: type) -> Callable[[Any], bool]:
    return lambda obj: isinstance(obj, type) and issubclass(obj, base)


def _dataset_factory(obj: Any) -> bool:
    # a Dataset subclass, or a function returning a Dataset (the return is not
    # known before it is called); any other class is not a dataset
    return _subclass_of(Dataset)(obj) or (callable(obj) and not isinstance(obj, type))


#: kind -> the base class whose ``forward`` a registered module class must
#: override (a fusion, backbone or weighting without one cannot run)
FORWARD_BASES: Dict[str, type] = {"backbone": nn.Module, "fusion": Fusion, "weighting": LossWeighting}

#: kind -> (what a registered object must be, in words; the check), applied at
#: ``add()`` (the rules of :mod:`mtlkit.hookspecs`)
KIND_RULES: Dict[str, Tuple[str, Callable[[Any], bool]]] = {
    "backbone": ("a subclass of mtlkit.backbone.Backbone", _subclass_of(Backbone)),
    "task": ("a subclass of mtlkit.task.Task", _subclass_of(Task)),
    "fusion": ("a subclass of mtlkit.fusion.Fusion", _subclass_of(Fusion)),
    "dataset": ("a subclass of torch.utils.data.Dataset or a function returning a dataset",
                _dataset_factory),
    "weighting": ("a subclass of mtlkit.weighting.LossWeighting", _subclass_of(LossWeighting)),
}

BUILTIN_DISTRIBUTION = "mtlkit"
BUILTIN_MODULES = (
    "mtlkit_plugins.backbones",
    "mtlkit_plugins.detection",
    "mtlkit_plugins.auxiliary_tasks",
    "mtlkit_plugins.fusions",
    "mtlkit_plugins.datasets",
    "mtlkit_plugins.weightings",
    "mtlkit_plugins.gradient_weightings",
)


class RegistryError(MtlkitError):
    """A lookup that finds nothing: an unknown name or kind."""


class PluginError(MtlkitError):
    """A plugin registered wrongly (a duplicate name, an object of the wrong
    kind, a component without ``forward``, a misspelt hook, nothing to
    register): the message names the plugin and its distribution. Not a
    :class:`RegistryError`, so a config lookup that triggers loading the
    plugins does not blame its own key for it."""


@dataclass(frozen=True)
class Origin:
    """Where a registered component comes from."""

    distribution: str
    version: str
    plugin: str  # entry-point (or plugin) name

    def __str__(self) -> str:
        return f"{self.distribution} {self.version} (plugin '{self.plugin}')"


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    obj: Any
    origin: Origin


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded, and why."""

    plugin: str
    distribution: str
    error: str


@dataclass
class PluginTiming:
    """How long a plugin took to import and to register (seconds)."""

    plugin: str
    distribution: str
    import_seconds: float = 0.0
    register_seconds: float = 0.0
    names: List[str] = field(default_factory=list)


class Registrar:
    """What a registration hook receives: adds names of one kind for one plugin."""

    def __init__(self, registry: "Registry", kind: str, origin: Origin):
        self._registry = registry
        self.kind = kind
        self.origin = origin

    def add(self, name: str, obj: Any) -> None:
        """Register ``obj`` under ``name`` for this registrar's kind."""
        self._registry._add(self.kind, name, obj, self.origin)


class _HashableView:
    """An unhashable plugin object (a ``SimpleNamespace``, a dataclass
    instance) as pluggy can hold it: pluggy >= 1.7 keeps plugin objects in
    sets. The view hashes by identity and carries the object's ``mtlkit_*``
    attributes as its own (pluggy >= 1.7 finds hooks with
    ``inspect.getattr_static``, which no ``__getattr__`` forwarding reaches);
    any other attribute is read from the object."""

    def __init__(self, plugin: Any) -> None:
        self.__dict__["_plugin"] = plugin
        for attr in dir(plugin):
            if attr.startswith(f"{hookspecs.PROJECT}_"):
                self.__dict__[attr] = getattr(plugin, attr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_plugin"], name)

    def __repr__(self) -> str:
        return repr(self.__dict__["_plugin"])


class Registry:
    """Holds the components of every kind, by name, with their origin."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._entries: Dict[str, Dict[str, Entry]] = {kind: {} for kind in KINDS}
        self._origins: Dict[str, Origin] = {}  # plugin name -> origin
        self.failures: List[PluginFailure] = []
        #: plugin name -> its import and registration times (``mtlkit plugins`` shows them)
        self.timings: Dict[str, PluginTiming] = {}

    # -- registration ---------------------------------------------------------
    def _add(self, kind: str, name: str, obj: Any, origin: Origin) -> None:
        if kind not in self._entries:
            raise PluginError(f"{origin} registered a component of unknown kind '{kind}'"
                              f"{did_you_mean(kind, KINDS)}")
        if not isinstance(name, str) or not name:
            raise PluginError(f"{origin} registered a {kind} with an invalid name {name!r}")
        expected, is_kind = KIND_RULES[kind]
        if not is_kind(obj):
            raise PluginError(
                f"{kind} '{name}' registered by {origin} is {_describe(obj)}, expected {expected}"
            )
        base = FORWARD_BASES.get(kind)
        if base is not None and getattr(obj, "forward", None) is getattr(base, "forward", None):
            raise PluginError(
                f"{kind} '{name}' registered by {origin}: the class {obj.__module__}.{obj.__qualname__} "
                f"defines no forward(); a {kind} must implement it (see mtlkit.hookspecs)"
            )
        previous = self._entries[kind].get(name)
        if previous is not None:
            raise PluginError(
                f"{kind} '{name}' is registered twice: by {previous.origin} and by {origin}; "
                f"uninstall one of the two distributions or rename the {kind}"
            )
        self._entries[kind][name] = Entry(kind, name, obj, origin)

    def register_plugin(self, plugin: Any, name: str, distribution: str = "local",
                        version: str = "") -> None:
        """Register a plugin object (a module or any object with hook functions)
        and run its registration hooks. Used for entry points, and directly by
        code or tests that define a plugin in place.

        All or nothing: when a hook raises, the names the plugin added are
        removed and the plugin is unregistered before the error propagates.
        Refused with a :class:`PluginError`: ``None`` or an object with no
        ``mtlkit_*`` hook, a function named like a hook that is none (a
        misspelling: it would register nothing, silently)."""
        origin = Origin(distribution, version, name)
        _check_plugin_object(plugin, origin)
        if getattr(type(plugin), "__hash__", None) is None:
            plugin = _HashableView(plugin)
        before = {kind: set(entries) for kind, entries in self._entries.items()}
        started = time.perf_counter()
        self.pm.register(plugin, name=name)
        self._origins[name] = origin
        try:
            # The hooks run through pluggy's hook callers, on this plugin alone:
            # the plugins registered before it have added their names already.
            others = [p for n, p in self.pm.list_name_plugin() if n != name]
            with contextlib.redirect_stdout(sys.stderr):  # a print must not corrupt the command's output
                for kind, hook_name in KINDS.items():
                    caller = self.pm.subset_hook_caller(hook_name, remove_plugins=others)
                    caller(registry=Registrar(self, kind, origin))
        except BaseException:
            for kind, entries in self._entries.items():
                for added in set(entries) - before[kind]:
                    del entries[added]
            if self.pm.has_plugin(name):
                self.pm.unregister(name=name)
            self._origins.pop(name, None)
            raise
        timing = self.timings.setdefault(name, PluginTiming(name, distribution))
        timing.register_seconds = time.perf_counter() - started
        timing.names = [f"{kind}:{n}" for kind, entries in self._entries.items()
                        for n in sorted(set(entries) - before[kind])]

    def load_entry_points(self, builtins_only: bool = False) -> None:
        """Load every plugin of entry-point group ``mtlkit``.

        A plugin that fails to import (or whose hooks raise anything but a
        :class:`RegistryError`) is recorded in :attr:`failures`, warned about
        by name and skipped; the others load.
        """
        eps = sorted(
            metadata.entry_points(group="mtlkit"),
            key=lambda ep: (_dist_name(ep) != BUILTIN_DISTRIBUTION, _dist_name(ep), ep.name),
        )
        seen_dists = set()
        loaded_builtin = False
        for ep in eps:
            dist, version = _dist_name(ep), _dist_version(ep)
            is_builtin = dist == BUILTIN_DISTRIBUTION
            if builtins_only and not is_builtin:
                continue
            key = (dist, ep.name)
            if key in seen_dists:  # the same distribution seen twice on sys.path
                continue
            seen_dists.add(key)
            plugin_name = ep.name if is_builtin else f"{dist}:{ep.name}"
            try:
                module = self._import(plugin_name, dist, ep.load)
                self.register_plugin(module, plugin_name, dist, version)
            except PluginError:
                raise
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - a broken plugin must not break the host
                self._fail(plugin_name, dist, exc)
                continue
            loaded_builtin |= is_builtin
        if not loaded_builtin:
            # Running from a source tree that was never installed: the
            # built-ins have no entry points, import them directly.
            for module_name in BUILTIN_MODULES:
                short = module_name.rsplit(".", 1)[1]
                try:
                    module = self._import(short, BUILTIN_DISTRIBUTION,
                                          lambda name=module_name: importlib.import_module(name))
                    self.register_plugin(module, short, BUILTIN_DISTRIBUTION, __version__)
                except PluginError:
                    raise
                except (Exception, SystemExit) as exc:  # noqa: BLE001
                    self._fail(short, BUILTIN_DISTRIBUTION, exc)

    def _import(self, plugin: str, dist: str, load: Callable[[], Any]) -> Any:
        """``load()`` (a plugin's import), timed, its prints sent to stderr, and
        the plugin named on stderr when it takes longer than
        ``MTLKIT_PLUGIN_IMPORT_WARN`` seconds (a blocking import would
        otherwise hang every command without a word)."""
        done = threading.Event()

        def warn() -> None:
            if not done.is_set():
                print(f"mtlkit: still importing plugin '{plugin}' from distribution '{dist}' after "
                      f"{_import_warn_seconds():g} s (MTLKIT_DISABLE_PLUGIN_AUTOLOAD=1 skips third-party "
                      f"plugins)", file=sys.stderr, flush=True)

        timer = threading.Timer(_import_warn_seconds(), warn)
        timer.daemon = True
        timer.start()
        started = time.perf_counter()
        try:
            with contextlib.redirect_stdout(sys.stderr):
                return load()
        finally:
            done.set()
            timer.cancel()
            self.timings[plugin] = PluginTiming(plugin, dist, time.perf_counter() - started)

    def _fail(self, plugin: str, dist: str, exc: BaseException) -> None:
        if isinstance(exc, SystemExit):
            message = f"it called sys.exit({exc.code!r}) while being imported or registered"
        else:
            message = f"{type(exc).__name__}: {exc}"
        self.failures.append(PluginFailure(plugin, dist, message))
        # The plugin may have been half-registered with pluggy before failing.
        if self.pm.has_plugin(plugin):
            self.pm.unregister(name=plugin)
        warnings.warn(
            f"mtlkit: plugin '{plugin}' from distribution '{dist}' failed to load and is "
            f"skipped: {message}",
            RuntimeWarning,
            stacklevel=3,
        )

    # -- lookup ---------------------------------------------------------------
    def get(self, kind: str, name: str) -> Any:
        """The object registered as ``name`` of ``kind``; a clear error if none."""
        return self.entry(kind, name).obj

    def entry(self, kind: str, name: str) -> Entry:
        if kind not in self._entries:
            raise RegistryError(f"unknown component kind '{kind}'{did_you_mean(kind, KINDS)}")
        try:
            return self._entries[kind][name]
        except (KeyError, TypeError):
            known = sorted(self._entries[kind])
            raise RegistryError(
                f"unknown {kind} '{name}'{did_you_mean(name, known)}; "
                f"registered: {', '.join(known) or 'none'}"
            ) from None

    def names(self, kind: str) -> List[str]:
        return sorted(self._entries[kind])

    def entries(self) -> List[Entry]:
        return [e for kind in KINDS for e in sorted(self._entries[kind].values(),
                                                     key=lambda e: e.name)]

    def __contains__(self, kind_name: Tuple[str, str]) -> bool:
        kind, name = kind_name
        return name in self._entries.get(kind, {})


def _describe(obj: Any) -> str:
    if isinstance(obj, type):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    return f"{type(obj).__name__} {obj!r}"[:200]


def _dist_name(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else "unknown"


def _dist_version(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.version if dist is not None else ""


_REGISTRY: Optional[Registry] = None


#: values of the boolean environment variables, case-insensitive
_TRUE = ("1", "true", "yes", "on", "y")
_FALSE = ("0", "false", "no", "off", "n", "")


def env_flag(name: str) -> bool:
    """A boolean environment variable: ``1``/``true``/``yes``/``on`` or
    ``0``/``false``/``no``/``off``/unset; anything else is an error naming it
    (a value that is silently ignored is worse)."""
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise MtlkitError(f"{name}={os.environ[name]!r}: expected 1, true, yes or on (or 0, false, no, off)")


def autoload_disabled() -> bool:
    """``MTLKIT_DISABLE_PLUGIN_AUTOLOAD`` (see the module docstring)."""
    return env_flag("MTLKIT_DISABLE_PLUGIN_AUTOLOAD")


def _import_warn_seconds() -> float:
    value = os.environ.get("MTLKIT_PLUGIN_IMPORT_WARN", "").strip()
    try:
        seconds = float(value) if value else 10.0
    except ValueError:
        seconds = 10.0
    return seconds if seconds > 0 else 10.0


def _check_plugin_object(plugin: Any, origin: Origin) -> None:
    """A plugin must implement at least one hook, and hold no function named
    like a hook that pluggy would ignore: a misspelt hook
    (``mtlkit_register_task``) or a hook without the ``@mtlkit.hookimpl``
    marker would register nothing, silently."""
    known = sorted(KINDS.values())
    if plugin is None or isinstance(plugin, (str, bytes, int, float, bool)):
        raise PluginError(f"{origin}: register_plugin expects a module or an object with mtlkit_* hook "
                          f"functions, got {_describe(plugin)}")
    marker = f"{hookspecs.PROJECT}_impl"
    implemented = []
    for attr in dir(plugin):
        if not attr.startswith(f"{hookspecs.PROJECT}_"):
            continue
        value = getattr(plugin, attr, None)
        if not callable(value) or isinstance(value, type):
            continue
        marked = isinstance(getattr(value, marker, None), dict)
        if attr in known:
            if not marked:
                raise PluginError(f"{origin}: {attr}() is not marked with @mtlkit.hookimpl, so it is never "
                                  f"called and registers nothing")
            implemented.append(attr)
        elif marked or did_you_mean(attr, known):
            raise PluginError(f"{origin} defines {attr}(), which is not an mtlkit hook"
                              f"{did_you_mean(attr, known)}: it would register nothing (the hooks: "
                              f"{', '.join(known)})")
    if not implemented:
        raise PluginError(f"{origin} implements none of the mtlkit hooks ({', '.join(known)}): it would "
                          f"register nothing")



def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        registry = Registry()
        registry.load_entry_points(builtins_only=autoload_disabled())
        _REGISTRY = registry
    return _REGISTRY


def reset_registry() -> None:
    """Forget the loaded registry (the next :func:`get_registry` reloads)."""
    global _REGISTRY
    _REGISTRY = None
