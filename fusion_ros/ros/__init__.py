"""The ROS 2 layer of fusion_ros: ``fusion_node`` and the tools that talk DDS — the rclpy boundary.

Everything that needs no rclpy lives in the core (:mod:`fusion_ros`): the parameter table and the
validated configuration (:mod:`fusion_ros.config`), image message payloads ↔ numpy
(:mod:`fusion_ros.image_msgs`), bag files (:mod:`fusion_ros.bag`). The core never imports this
package (``test/test_boundary.py`` imports every core module with rclpy made unimportable).
"""
