"""The one QoS shape of this package's publishers and subscriptions: the node's, the player's and the recorder's."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

__all__ = ["qos_profile"]


def qos_profile(reliable: bool, depth: int) -> QoSProfile:
    """Keep-last, volatile QoS, reliable or best-effort (best-effort subscriptions also match reliable publishers)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )
