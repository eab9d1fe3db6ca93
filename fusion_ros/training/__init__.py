"""Training recipes, one module per target (``fusion-ros train <TARGET>``).

Each module defines ``TARGET``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
"""
