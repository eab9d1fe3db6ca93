"""Subcommands of ``fusion-ros``, one module each (auto-discovered by :mod:`fusion_ros.cli`), and the
argument parsers they share."""

from __future__ import annotations


def parse_size(text: str, low: int, high: int) -> tuple[int, int]:
    """``"640x512"`` → ``(640, 512)``; ``ValueError`` unless it is WIDTHxHEIGHT with both sides in [low, high]."""
    w, sep, h = text.strip().lower().partition("x")
    try:
        width, height = int(w), int(h)
    except ValueError:
        width = height = 0
    if not sep or not (low <= width <= high and low <= height <= high):
        raise ValueError(f"WIDTHxHEIGHT within {low}..{high}, got {text!r}")
    return width, height
