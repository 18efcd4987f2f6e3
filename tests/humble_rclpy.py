"""Run ``m2s-segment`` on Humble's rclpy API surface: what rclpy added after Humble is removed first.

    python -m tests.humble_rclpy --ros-args ...   (the same arguments as m2s-segment)

Humble (rclpy 3.3) has no pre/post set-parameters callbacks (Iron), no ``wait_for_node``,
``count_clients``/``count_services`` (Jazzy), no ``content_filter_options`` for subscriptions
(Jazzy) and no ``enable_logger_service`` node option (Iron). The top-level ``rclpy.try_shutdown``
arrived in rclpy 7.4 (ros2/rclpy#1302, 2024): removed too. The node must run without them.
"""

from __future__ import annotations

import functools
import sys

import rclpy
from rclpy.node import Node

NEWER_THAN_HUMBLE = (
    "add_pre_set_parameters_callback",
    "add_post_set_parameters_callback",
    "remove_pre_set_parameters_callback",
    "remove_post_set_parameters_callback",
    "wait_for_node",
    "count_clients",
    "count_services",
)
NEWER_KEYWORDS = {"create_subscription": ("content_filter_options",), "__init__": ("enable_logger_service",)}


def hide_newer_api() -> list[str]:
    """Delete the post-Humble methods from ``rclpy.node.Node``; refuse post-Humble keyword arguments."""
    hidden = []
    for name in NEWER_THAN_HUMBLE:
        if hasattr(Node, name):
            delattr(Node, name)
            hidden.append(f"Node.{name}")
    if hasattr(rclpy, "try_shutdown"):
        del rclpy.try_shutdown
        hidden.append("rclpy.try_shutdown")
    for method, keywords in NEWER_KEYWORDS.items():
        original = getattr(Node, method)

        @functools.wraps(original)
        def strict(self, *args, _original=original, _keywords=keywords, _method=method, **kwargs):
            used = [k for k in _keywords if k in kwargs]
            if used:
                raise TypeError(f"Node.{_method}() got {used}, which Humble's rclpy does not have")
            return _original(self, *args, **kwargs)

        setattr(Node, method, strict)
    return hidden


if __name__ == "__main__":
    hidden = hide_newer_api()
    print(f"humble surface: removed {', '.join(hidden)}", flush=True)
    from m2s_perception.node import main

    sys.exit(main())
