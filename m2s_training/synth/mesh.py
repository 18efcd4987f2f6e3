"""Triangle meshes that carry a SemanticKITTI label per triangle, built from Open3D primitives.

A ray cast returns the id of the triangle it hit; indexing the per-triangle arrays with it gives
the point's raw semantic id, instance id and surface reflectivity without any per-point Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np

from m2s_perception.labels import load_label_map
from m2s_training.synth.o3d import open3d as o3d

# Classes that are countable objects and get an instance id; the rest (road, building, ...) get 0.
THING_CLASSES = frozenset(
    {"car", "bicycle", "motorcycle", "truck", "other-vehicle", "bus", "person", "bicyclist", "motorcyclist"}
    | {"trunk", "pole", "traffic-sign"}
)

# Diffuse reflectivity in 0..1 per class; remission also falls with the incidence angle.
REFLECTIVITY = {
    "road": 0.15,
    "lane-marking": 0.75,
    "parking": 0.2,
    "sidewalk": 0.3,
    "other-ground": 0.25,
    "terrain": 0.4,
    "building": 0.35,
    "fence": 0.3,
    "vegetation": 0.5,
    "trunk": 0.35,
    "pole": 0.4,
    "traffic-sign": 0.95,
    "car": 0.3,
    "truck": 0.35,
    "other-vehicle": 0.35,
    "person": 0.3,
    "bicyclist": 0.3,
    "motorcyclist": 0.3,
    "bicycle": 0.3,
    "motorcycle": 0.3,
}


@lru_cache(maxsize=1)
def raw_ids() -> dict[str, int]:
    """Raw SemanticKITTI id per class name, from the project's label map."""
    return {name: raw for raw, name in load_label_map().raw_names.items()}


@cache
def _unit_shape(shape: str) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles of a unit primitive centred at the origin (built once per process)."""
    if shape == "box":
        mesh = o3d.geometry.TriangleMesh.create_box(1.0, 1.0, 1.0)
        mesh.translate((-0.5, -0.5, -0.5))
    elif shape == "cylinder":
        mesh = o3d.geometry.TriangleMesh.create_cylinder(radius=0.5, height=1.0, resolution=12, split=1)
    elif shape == "sphere":
        mesh = o3d.geometry.TriangleMesh.create_sphere(radius=0.5, resolution=6)
    else:
        raise ValueError(f"unknown primitive {shape!r}; known: box, cylinder, sphere")
    return np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.triangles, dtype=np.uint32)


@dataclass(frozen=True)
class Part:
    """One primitive of an object, in the object's frame (x forward, z up, ground at z = 0).

    ``size`` scales the unit primitive (diameters for cylinders and spheres); ``axis`` "y" or "x"
    lays a cylinder on its side (wheels). ``semantic`` is a class name of the label map.
    """

    shape: str
    size: tuple[float, float, float]
    centre: tuple[float, float, float]
    semantic: str
    axis: str = "z"


_AXIS_PERMUTATION = {"z": [0, 1, 2], "y": [0, 2, 1], "x": [2, 1, 0]}


@dataclass(frozen=True)
class LabelledMesh:
    vertices: np.ndarray  # (V, 3) float32
    triangles: np.ndarray  # (T, 3) uint32
    semantic: np.ndarray  # (T,) uint16 raw ids
    instance: np.ndarray  # (T,) uint16
    reflectivity: np.ndarray  # (T,) float32

    @property
    def num_triangles(self) -> int:
        return len(self.triangles)

    @staticmethod
    def from_parts(parts: list[Part], instance: int, reflectivity_scale: float = 1.0) -> LabelledMesh:
        """Assemble an object; thing parts get ``instance``, stuff parts (e.g. a crown) get 0."""
        meshes = []
        ids = raw_ids()
        for part in parts:
            vertices, triangles = _unit_shape(part.shape)
            vertices = vertices[:, _AXIS_PERMUTATION[part.axis]] * np.asarray(part.size, np.float32)
            vertices = vertices + np.asarray(part.centre, np.float32)
            n = len(triangles)
            static_name = part.semantic.removeprefix("moving-")
            part_instance = instance if static_name in THING_CLASSES else 0
            meshes.append(
                LabelledMesh(
                    vertices,
                    triangles,
                    np.full(n, ids[part.semantic], np.uint16),
                    np.full(n, part_instance, np.uint16),
                    np.full(n, REFLECTIVITY[static_name] * reflectivity_scale, np.float32),
                )
            )
        return LabelledMesh.concatenate(meshes)

    @staticmethod
    def concatenate(meshes: list[LabelledMesh]) -> LabelledMesh:
        if not meshes:
            raise ValueError("cannot concatenate an empty list of meshes")
        offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]]).astype(np.uint32)
        return LabelledMesh(
            np.concatenate([m.vertices for m in meshes]),
            np.concatenate([m.triangles + o for m, o in zip(meshes, offsets, strict=True)]),
            np.concatenate([m.semantic for m in meshes]),
            np.concatenate([m.instance for m in meshes]),
            np.concatenate([m.reflectivity for m in meshes]),
        )

    def placed(self, position: np.ndarray, heading: float) -> LabelledMesh:
        """This mesh turned by ``heading`` (radians, about z) and moved to ``position``."""
        c, s = np.cos(heading), np.sin(heading)
        rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], np.float32)
        vertices = self.vertices @ rotation.T + np.asarray(position, np.float32)
        return LabelledMesh(vertices, self.triangles, self.semantic, self.instance, self.reflectivity)
