"""The ROS 2 layer of fusion_ros: ``fusion_node`` and the tools that talk DDS.

Modules here may import rclpy, except :mod:`fusion_ros.ros.convert` (image payloads ↔ numpy),
:mod:`fusion_ros.ros.worker` and :mod:`fusion_ros.ros.params`, which are plain Python so the bag
tools and the tests use them without ROS. The fusion core (:mod:`fusion_ros`) never imports this package.
"""
