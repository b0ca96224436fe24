"""The FLAME head model as DECA evaluates it: shape, expression and pose blendshapes, linear
blend skinning over 5 joints (global, neck, jaw, left eye, right eye), and the 68 landmarks
(2D: 17 yaw-dependent contour points + 51 static ones; 3D: 68 fixed points)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

N_SHAPE, N_EXP = 100, 50
#: DECA's expression components start after FLAME's 300 shape components
EXP_OFFSET = 300
NECK = 1
#: the contour look-up table has one row per degree of yaw: 0..39, then -1..-39 as 40..78
MAX_CONTOUR_YAW = 39


def rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """(N, 3) axis-angle -> (N, 3, 3) rotation matrices. The norm is taken of v + 1e-8, as
    in DECA, so that zero rotations have a defined axis."""
    angle = torch.linalg.vector_norm(axis_angle + 1e-8, dim=1, keepdim=True)
    x, y, z = (axis_angle / angle).unbind(1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], 1).view(-1, 3, 3)
    sin, cos = torch.sin(angle)[:, :, None], torch.cos(angle)[:, :, None]
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + sin * k + (1 - cos) * (k @ k)


def yaw_of(rotation: torch.Tensor) -> torch.Tensor:
    """Rotation about y (radians) of (B, 3, 3) matrices, in the x-y-z Euler convention."""
    return torch.atan2(-rotation[:, 2, 0], torch.hypot(rotation[:, 0, 0], rotation[:, 1, 0]))


def barycentric_points(vertices: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor,
                       bary: torch.Tensor) -> torch.Tensor:
    """Points on a mesh: vertices (B, V, 3), faces (F, 3), per-batch face indices (B, L) and
    barycentric coordinates (B, L, 3) -> (B, L, 3)."""
    corners = faces[face_idx]  # (B, L, 3) vertex ids
    batch = torch.arange(vertices.shape[0], device=vertices.device)[:, None, None]
    return torch.einsum("blci,blc->bli", vertices[batch, corners], bary)


def project_orthographic(points: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """DECA's camera: x' = s (x + tx), y' = -s (y + ty), z' = -s z, with cam = (s, tx, ty) per
    batch item; x', y' in [-1, 1] span the 224x224 crop (y down)."""
    s, t = cam[:, None, :1], cam[:, None, 1:]
    xy = s * (points[..., :2] + t)
    z = s * points[..., 2:]
    return torch.cat([xy[..., :1], -xy[..., 1:], -z], dim=-1)


class FLAME(nn.Module):
    """FLAME from the arrays of `files.load_flame_model` and `files.load_landmark_embedding`.

    forward(shape (B, 100), expression (B, 50), pose (B, 6) = global + jaw axis-angle) ->
    vertices (B, V, 3), landmarks2d (B, 68, 3), landmarks3d (B, 68, 3). Neck and eyes stay
    at rest, as in DECA.
    """

    def __init__(self, model: dict[str, np.ndarray], landmarks: dict[str, np.ndarray]) -> None:
        super().__init__()

        def f32(a) -> torch.Tensor:
            return torch.tensor(np.asarray(a, dtype=np.float32))

        def i64(a) -> torch.Tensor:
            return torch.tensor(np.asarray(a).astype(np.int64))

        self.register_buffer("faces", i64(model["f"]))
        self.register_buffer("v_template", f32(model["v_template"]))
        dirs = np.asarray(model["shapedirs"])
        self.register_buffer("shapedirs", f32(np.concatenate(
            [dirs[:, :, :N_SHAPE], dirs[:, :, EXP_OFFSET:EXP_OFFSET + N_EXP]], axis=2)))
        n_pose_basis = model["posedirs"].shape[-1]
        # (V, 3, P) -> (P, V * 3): one row per rotation-matrix entry of the non-root joints
        self.register_buffer("posedirs", f32(np.reshape(model["posedirs"], (-1, n_pose_basis)).T))
        self.register_buffer("J_regressor", f32(model["J_regressor"]))
        self.register_buffer("lbs_weights", f32(model["weights"]))
        # the root's parent is stored as uint32 -1 (4294967295); it is never read
        parents = [int(p) for p in np.asarray(model["kintree_table"])[0].astype(np.int64)]
        parents[0] = -1
        self.parents = parents
        chain, joint = [], NECK
        while joint != -1:
            chain.append(joint)
            joint = parents[joint]
        self.neck_chain = chain  # neck, then its ancestors up to the root
        self.register_buffer("static_faces", i64(landmarks["static_lmk_faces_idx"]))
        self.register_buffer("static_bary", f32(landmarks["static_lmk_bary_coords"]))
        self.register_buffer("contour_faces", i64(landmarks["dynamic_lmk_faces_idx"]))
        self.register_buffer("contour_bary", f32(landmarks["dynamic_lmk_bary_coords"]))
        self.register_buffer("full_faces", i64(landmarks["full_lmk_faces_idx"]))
        self.register_buffer("full_bary", f32(landmarks["full_lmk_bary_coords"]))

    def full_pose(self, pose: torch.Tensor) -> torch.Tensor:
        """(B, 6) global + jaw -> (B, 15): global, neck (rest), jaw, eyes (rest)."""
        rest = torch.zeros(pose.shape[0], 3, dtype=pose.dtype, device=pose.device)
        return torch.cat([pose[:, :3], rest, pose[:, 3:], rest, rest], dim=1)

    def skin(self, betas: torch.Tensor, full_pose: torch.Tensor) -> torch.Tensor:
        """Linear blend skinning of the template with blendshapes: (B, 150), (B, 15) -> (B, V, 3)."""
        b = betas.shape[0]
        shaped = self.v_template + torch.einsum("bl,vkl->bvk", betas, self.shapedirs)
        joints = torch.einsum("jv,bvk->bjk", self.J_regressor, shaped)
        rot = rodrigues(full_pose.reshape(-1, 3)).view(b, -1, 3, 3)
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        pose_feature = (rot[:, 1:] - eye).reshape(b, -1)
        posed = shaped + (pose_feature @ self.posedirs).view(b, -1, 3)

        # world transform of every joint along the kinematic tree
        local = torch.zeros(b, len(self.parents), 4, 4, dtype=rot.dtype, device=rot.device)
        local[:, :, :3, :3] = rot
        local[:, :, 3, 3] = 1
        offsets = joints.clone()
        offsets[:, 1:] = joints[:, 1:] - joints[:, self.parents[1:]]
        local[:, :, :3, 3] = offsets
        world = [local[:, 0]]
        for j in range(1, len(self.parents)):
            world.append(world[self.parents[j]] @ local[:, j])
        world = torch.stack(world, 1)  # (B, J, 4, 4)
        # skinning matrices move rest-pose points: subtract the transformed rest joint
        skinning = world.clone()
        skinning[:, :, :3, 3] = world[:, :, :3, 3] - (world[:, :, :3, :3] @ joints[..., None])[..., 0]
        per_vertex = torch.einsum("vj,bjmn->bvmn", self.lbs_weights, skinning)
        return (per_vertex[..., :3, :3] @ posed[..., None])[..., 0] + per_vertex[..., :3, 3]

    def contour_rows(self, full_pose: torch.Tensor) -> torch.Tensor:
        """Row of the contour look-up table for each item: the neck's yaw relative to the
        world, in whole degrees (clamped to 39; negative yaws -1..-39 are rows 40..78)."""
        b = full_pose.shape[0]
        aa = full_pose.view(b, -1, 3)[:, self.neck_chain]
        rot = rodrigues(aa.reshape(-1, 3)).view(b, -1, 3, 3)
        rel = torch.eye(3, dtype=rot.dtype, device=rot.device).expand(b, 3, 3)
        for k in range(len(self.neck_chain)):
            rel = rot[:, k] @ rel
        deg = torch.round(torch.clamp(yaw_of(rel) * 180.0 / np.pi, max=MAX_CONTOUR_YAW)).long()
        return torch.where(deg < 0, torch.where(deg < -MAX_CONTOUR_YAW, 2 * MAX_CONTOUR_YAW, MAX_CONTOUR_YAW - deg), deg)

    def landmarks(self, vertices: torch.Tensor, full_pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(68 2D-fitting landmarks: contour for the current yaw + static, 68 fixed 3D landmarks)."""
        b = vertices.shape[0]
        rows = self.contour_rows(full_pose)
        faces = torch.cat([self.contour_faces[rows], self.static_faces.expand(b, -1)], 1)
        bary = torch.cat([self.contour_bary[rows], self.static_bary.expand(b, -1, -1)], 1)
        lmk2d = barycentric_points(vertices, self.faces, faces, bary)
        lmk3d = barycentric_points(vertices, self.faces, self.full_faces.expand(b, -1),
                                   self.full_bary.expand(b, -1, -1))
        return lmk2d, lmk3d

    def forward(self, shape: torch.Tensor, expression: torch.Tensor,
                pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        full_pose = self.full_pose(pose)
        vertices = self.skin(torch.cat([shape, expression], 1), full_pose)
        lmk2d, lmk3d = self.landmarks(vertices, full_pose)
        return vertices, lmk2d, lmk3d
