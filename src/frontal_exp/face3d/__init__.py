"""3D face geometry: MediaPipe face mesh, head pose, and fast mesh re-rendering."""

from frontal_exp.face3d.facemesh import FaceMeshDetector, get_face_mesh, mesh_triangles
from frontal_exp.face3d.pose import (
    HeadPose,
    PoseFit,
    estimate_head_pose,
    euler_from_rotation,
    pose_from_landmarks,
    rotation_from_euler,
)
from frontal_exp.face3d.render import Raster, rasterize, render_mesh

__all__ = [
    "FaceMeshDetector",
    "HeadPose",
    "PoseFit",
    "Raster",
    "estimate_head_pose",
    "euler_from_rotation",
    "get_face_mesh",
    "mesh_triangles",
    "pose_from_landmarks",
    "rasterize",
    "render_mesh",
    "rotation_from_euler",
]
