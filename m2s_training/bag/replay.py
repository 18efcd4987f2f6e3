"""Publish a rosbag2 bag through rclpy with its timing, for machines without ``ros2 bag play``.

Messages go out as the bag's serialised CDR bytes (``Publisher.publish(bytes)``), so nothing is
deserialised and any message type works whose Python package is installed; topics whose package
is missing (e.g. ``tf2_msgs`` on a pip-only machine) are skipped with a warning naming them.
Message ``k`` is published at ``start + (t_k - t_0) / rate`` on the wall clock, ``t`` being the
bag's log time. PointCloud2 topics use sensor-data QoS (best effort, keep last 5), as drivers do, or reliable
(``--reliable``: what RViz subscribes with by default, and lossless on loopback); other topics
use the QoS recorded in the bag (transient_local for ``/tf_static``), else reliable.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosbags.interfaces import Connection, QosDurability, QosReliability

from m2s_training.bag import POINTCLOUD2, BagError, open_bag, require_topics

log = logging.getLogger(__name__)

# Our publisher may see the subscriber a moment before the subscriber has matched our publisher;
# best-effort messages sent in between are lost, so wait a little after the match.
DISCOVERY_SETTLE_S = 0.3


@dataclass(frozen=True)
class ReplayOptions:
    rate: float = 1.0
    loops: int = 1  # passes over the bag; 0 = until interrupted
    clock: bool = False  # publish /clock (rosgraph_msgs/Clock) with the bag time, for use_sim_time nodes
    topics: tuple[str, ...] = ()  # empty: every topic whose message package is installed
    wait_for_subscriber: float = 0.0  # seconds to wait for a subscriber on every PointCloud2 topic first
    reliable_clouds: bool = False  # PointCloud2 topics RELIABLE instead of sensor-data best effort (RViz's default)

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if self.loops < 0:
            raise ValueError(f"loops must be >= 0 (0 = forever), got {self.loops}")


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes


# Called after each publish with the message and the wall-clock time (time.monotonic()) it went out.
# Time spent inside the hook shifts the rest of the schedule, so a hook may block (lock-step mode).
PublishHook = Callable[[BagMessage, float], None]


def message_class(msgtype: str) -> type | None:
    """The rclpy class of ``pkg/msg/Name``, or None when its Python package is not installed."""
    package, _, name = msgtype.replace("/msg/", "/").partition("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        return None


def publisher_qos(connection: Connection, reliable_clouds: bool = False) -> QoSProfile:
    if connection.msgtype == POINTCLOUD2:
        if reliable_clouds:
            return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
        return qos_profile_sensor_data
    recorded = connection.ext.offered_qos_profiles if connection.ext else []
    profile = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
    if recorded:
        qos = recorded[0]
        profile.depth = max(1, int(qos.depth))
        if qos.reliability == QosReliability.BEST_EFFORT:
            profile.reliability = ReliabilityPolicy.BEST_EFFORT
        if qos.durability == QosDurability.TRANSIENT_LOCAL:
            profile.durability = DurabilityPolicy.TRANSIENT_LOCAL
    return profile


class BagPlayer:
    """Publishers for a bag's topics on ``node``, and the timed loop that feeds them."""

    def __init__(self, node: Node, bag: str | Path, options: ReplayOptions = ReplayOptions()):
        self.bag = Path(bag)
        self.options = options
        self._node = node
        self._reader = open_bag(self.bag)
        if options.topics:
            require_topics(self._reader, self.bag, list(options.topics))
        wanted = set(options.topics) or set(self._reader.topics)
        self.connections: list[Connection] = []
        self.skipped: dict[str, str] = {}
        self.published = 0  # messages sent so far, over all passes
        self._publishers = {}
        for connection in self._reader.connections:
            if connection.topic not in wanted or connection.topic in self._publishers:
                continue
            cls = message_class(connection.msgtype)
            if cls is None:
                self.skipped[connection.topic] = connection.msgtype
                continue
            self._publishers[connection.topic] = node.create_publisher(
                cls, connection.topic, publisher_qos(connection, options.reliable_clouds)
            )
            self.connections.append(connection)
        for topic, msgtype in self.skipped.items():
            log.warning("%s: skipping %s: Python package for %s is not installed", self.bag, topic, msgtype)
        if not self.connections:
            raise BagError(f"{self.bag}: none of the selected topics can be published from this Python environment")
        self._clock = None
        if options.clock:
            from rosgraph_msgs.msg import Clock

            self._clock = node.create_publisher(Clock, "/clock", 10)

    @property
    def topics(self) -> list[str]:
        return [c.topic for c in self.connections]

    def close(self) -> None:
        self._reader.close()

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until reliable subscribers acknowledged everything, so exiting right after
        the last message does not take it down with the process (best-effort ones return at once)."""
        from rclpy.duration import Duration

        wait = Duration(nanoseconds=int(timeout * 1e9))
        return all(publisher.wait_for_all_acked(wait) for publisher in self._publishers.values())

    def messages(self) -> Iterator[BagMessage]:
        for connection, log_time, data in self._reader.messages(connections=self.connections):
            yield BagMessage(connection.topic, connection.msgtype, log_time, bytes(data))

    def wait_for_subscribers(self, timeout: float) -> bool:
        """Wait until every PointCloud2 topic has a subscriber (True) or ``timeout`` seconds pass (False)."""
        clouds = [self._publishers[c.topic] for c in self.connections if c.msgtype == POINTCLOUD2]
        deadline = time.monotonic() + timeout
        while not all(p.get_subscription_count() > 0 for p in clouds):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        time.sleep(DISCOVERY_SETTLE_S)
        return True

    def play(self, on_published: PublishHook | None = None) -> int:
        """Publish the bag ``options.loops`` times (0: until interrupted); returns messages published."""
        if self.options.wait_for_subscriber > 0 and not self.wait_for_subscribers(self.options.wait_for_subscriber):
            log.warning("%s: no subscriber after %.1f s; publishing anyway", self.bag, self.options.wait_for_subscriber)
        passes = 0
        while self.options.loops == 0 or passes < self.options.loops:
            self._play_once(on_published)
            passes += 1
        return self.published

    def _play_once(self, on_published: PublishHook | None) -> None:
        wall_start = bag_start = None
        for message in self.messages():
            if wall_start is None:
                wall_start, bag_start = time.monotonic(), message.log_time_ns
            due = wall_start + (message.log_time_ns - bag_start) * 1e-9 / self.options.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if self._clock is not None:
                self._publish_clock(message.log_time_ns)
            self._publishers[message.topic].publish(message.data)
            sent = time.monotonic()
            self.published += 1
            if on_published is not None:
                on_published(message, sent)
                wall_start += time.monotonic() - sent  # a blocking hook pauses the bag's timeline

    def _publish_clock(self, stamp_ns: int) -> None:
        from rosgraph_msgs.msg import Clock

        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(stamp_ns, 10**9)
        self._clock.publish(msg)


def replay(bag: str | Path, options: ReplayOptions, node_name: str = "m2s_bag_replay") -> int:
    """Play ``bag`` in a fresh rclpy context; returns the number of messages published.

    Ctrl-C ends playback cleanly (the count so far is returned).
    """
    import rclpy

    rclpy.init()
    node = rclpy.create_node(node_name)
    player = None
    try:
        player = BagPlayer(node, bag, options)
        log.info("replaying %s (%s) at rate %g", bag, ", ".join(player.topics), options.rate)
        player.play()
        player.flush()
    except KeyboardInterrupt:
        log.info("interrupted")
    finally:
        if player is not None:
            player.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0 if player is None else player.published
