"""Legacy home of ``mtlkit ablate``'s command module (:mod:`.ablate`); every
other command lives in :mod:`mtlkit.commands`."""
