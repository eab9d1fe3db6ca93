"""Subcommands of ``fusion-ros``, one module each (auto-discovered by :mod:`fusion_ros.cli`)."""
