"""Training recipes, one module per target (``fusion-ros train <TARGET>``).

Each public module defines ``TARGET``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``;
modules whose names start with ``_`` (``_common``: what the recipes share) are not targets.
"""
