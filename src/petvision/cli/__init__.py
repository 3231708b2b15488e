"""How a module becomes a command: :mod:`.stage` turns ``run_<stage>(cfg)`` into a Hydra
application with one-line errors."""
