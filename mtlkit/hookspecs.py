"""Hook specifications: the documented extension points of mtlkit.

A plugin is a module (or object) with functions marked by
:data:`mtlkit.hookimpl` whose names match the specifications below. It is
found through an entry point of group ``mtlkit`` in its distribution's
metadata, e.g. in ``setup.py``::

    entry_points={"mtlkit": ["contours = my_package.plugin"]}

and ``my_package/plugin.py``::

    from mtlkit import hookimpl

    @hookimpl
    def mtlkit_register_tasks(registry):
        registry.add("contours", ContourTask)

Each hook receives a :class:`mtlkit.registry.Registrar` bound to one kind of
component and to the distribution that provides the plugin, so every name it
adds is recorded with its origin. Registering a name that another
distribution already registered is an error naming both.

The registry checks the kind of every object at ``registry.add()`` and
refuses the wrong kind with a :class:`mtlkit.registry.RegistryError` naming
the name, the kind expected and the distribution (like a duplicate name, the
error stops the host: the plugin must be fixed or uninstalled):

=========  ===============================================================
kind       what ``registry.add(name, obj)`` accepts
=========  ===============================================================
backbone   a subclass of :class:`mtlkit.backbone.Backbone`
task       a subclass of :class:`mtlkit.task.Task`
fusion     a subclass of :class:`mtlkit.fusion.Fusion`
dataset    a subclass of ``torch.utils.data.Dataset``, or a function
           (any non-class callable) returning one
weighting  a subclass of :class:`mtlkit.weighting.LossWeighting` (gradient-level
           ones subclass :class:`mtlkit.gradient_weighting.GradientWeighting`)
=========  ===============================================================

Every registered object may carry a ``defaults`` class attribute: a dict of
option name -> default value. Configuration validation uses it to refuse
unknown options (with a did-you-mean) and values of the wrong type.

The registry calls these hooks through pluggy (``PluginManager`` hook
callers), once per plugin, right after registering it.
"""

import pluggy

#: pluggy's project name: hooks are ``mtlkit_*``, markers ``mtlkit_impl``
PROJECT = "mtlkit"

hookspec = pluggy.HookspecMarker(PROJECT)
#: marks a plugin's hook implementations (re-exported as :data:`mtlkit.hookimpl`)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def mtlkit_register_backbones(registry) -> None:
    """Register backbone factories.

    ``registry.add(name, cls)`` where ``cls`` subclasses
    :class:`mtlkit.backbone.Backbone` and ``cls(**options)`` builds
    the module mapping normalised images (B, 3, H, W) to a list of source
    feature maps, shallowest first, the last one being X (the map the ROCK
    block refines), each (B, C_i, H/s_i, W/s_i). It exposes ``out_channels``
    (list of C_i), ``strides`` (list of s_i) and ``mean``/``std`` (used to
    normalise [0, 1] images).

    :param registry: a :class:`mtlkit.registry.Registrar` for kind ``backbone``.
    """


@hookspec
def mtlkit_register_tasks(registry) -> None:
    """Register tasks (primary or auxiliary).

    ``registry.add(name, cls)`` where ``cls`` subclasses
    :class:`mtlkit.task.Task`: it states its role, the batch keys it needs,
    how to build its head, its loss (masked per sample), its metric and
    optionally a picture of a prediction.

    :param registry: a :class:`mtlkit.registry.Registrar` for kind ``task``.
    """


@hookspec
def mtlkit_register_fusions(registry) -> None:
    """Register fusions: how auxiliary features are merged back into X.

    ``registry.add(name, cls)`` where ``cls`` subclasses
    :class:`mtlkit.fusion.Fusion`.

    :param registry: a :class:`mtlkit.registry.Registrar` for kind ``fusion``.
    """


@hookspec
def mtlkit_register_datasets(registry) -> None:
    """Register datasets.

    ``registry.add(name, factory)`` where ``factory`` is a
    ``torch.utils.data.Dataset`` subclass, or a function, and
    ``factory(**options)`` returns a dataset of samples in the batch contract
    (see ``mtlkit.data``). Selected in a config by ``name: <name>`` like every
    other component; ``type: <name>`` is the same selector under its older
    name (the shipped configs use it).

    :param registry: a :class:`mtlkit.registry.Registrar` for kind ``dataset``.
    """


@hookspec
def mtlkit_register_weightings(registry) -> None:
    """Register weightings: how per-task losses (or gradients) combine into one.

    ``registry.add(name, cls)`` where ``cls`` subclasses
    :class:`mtlkit.weighting.LossWeighting`, or its gradient-level subclass
    :class:`mtlkit.gradient_weighting.GradientWeighting` (``docs/weighting.md``).

    :param registry: a :class:`mtlkit.registry.Registrar` for kind ``weighting``.
    """
