"""The built-in plugins of mtlkit, installed as the package ``mtlkit_plugins``.

They are registered through the ``mtlkit`` distribution's entry points
(group ``mtlkit``), exactly like a third-party plugin package.
"""
