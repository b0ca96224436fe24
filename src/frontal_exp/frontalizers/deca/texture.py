"""The photo's texture in FLAME's UV space: sampled through the fitted mesh where the face is
visible, the hidden side filled from its mirror texel (by the template's left-right
symmetry, whatever the UV layout), the rest with the mean visible colour."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from frontal_exp.face3d.render import ZBuffer, rasterize_uv, rasterize_zbuffer

#: a texel is visible when it lies at most this far (pixels of depth) behind the z-buffer
DEPTH_SLACK = 1.0
#: and its surface faces the camera at least this much (cosine; smaller z = nearer)
MIN_FACING = 0.1


@dataclass
class UVLayout:
    """FLAME's UV map at one resolution: which triangle covers each texel, and the texel
    that mirrors it across the template's x = 0 plane (-1 where none)."""

    raster: ZBuffer
    faces: np.ndarray  # (F, 3) vertex ids of each triangle
    mirror: np.ndarray  # (U, U) int64 flat texel index

    @property
    def size(self) -> int:
        return self.raster.shape[0]

    def draw(self, vertex_values: np.ndarray) -> np.ndarray:
        """Per-vertex values (V, K) -> (U, U, K) map."""
        return self.raster.interpolate(np.asarray(vertex_values)[self.faces])


def uv_layout(uv: np.ndarray, uv_faces: np.ndarray, faces: np.ndarray, template: np.ndarray,
              size: int) -> UVLayout:
    """Rasterize the UV layout and pair every texel with its mirror image on the template."""
    from scipy.spatial import cKDTree

    raster = rasterize_uv(uv, uv_faces, size)
    layout = UVLayout(raster, np.asarray(faces), np.full((size, size), -1, np.int64))
    covered = np.flatnonzero(raster.mask)
    if len(covered):
        points = layout.draw(template).reshape(-1, 3)[covered]
        _, nearest = cKDTree(points).query(points * [-1.0, 1.0, 1.0])
        layout.mirror.reshape(-1)[covered] = covered[nearest]
    return layout


def vertex_normals(vertices: np.ndarray, faces: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Area-weighted unit normals (V, 3) of a mesh, oriented by its winding; sums shorter
    than `eps` are divided by `eps` (0 for vertices in no face)."""
    v = np.asarray(vertices, np.float64)
    faces = np.asarray(faces)
    tri = v[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    corners = faces.reshape(-1)
    out = np.stack([np.bincount(corners, np.repeat(n[:, c], 3), minlength=len(v)) for c in range(3)], 1)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), eps)


def extract_texture(image: np.ndarray, screen: np.ndarray, faces: np.ndarray,
                    layout: UVLayout) -> tuple[np.ndarray, np.ndarray]:
    """Sample `image` (HxWx3) into UV space through the mesh `screen` (V, 3: pixel x, y and
    depth, smaller = nearer). Returns the (U, U, 3) float32 texture and the (U, U) bool
    mask of texels seen in the photo (z-buffer test and facing the camera)."""
    h, w = image.shape[:2]
    zbuf = rasterize_zbuffer(screen[:, :2], screen[:, 2], faces, (h, w))
    normals = vertex_normals(screen, faces)
    drawn = layout.draw(np.concatenate([screen, normals], 1))
    pos, depth, facing = drawn[..., :2], drawn[..., 2], -drawn[..., 5]
    texture = cv2.remap(image.astype(np.float32), pos[..., 0], pos[..., 1], cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    px = np.clip(np.rint(pos[..., 0]).astype(np.int64), 0, w - 1)
    py = np.clip(np.rint(pos[..., 1]).astype(np.int64), 0, h - 1)
    inside = (pos[..., 0] >= 0) & (pos[..., 0] <= w - 1) & (pos[..., 1] >= 0) & (pos[..., 1] <= h - 1)
    visible = layout.raster.mask & inside & (facing > MIN_FACING)
    visible &= depth <= zbuf.depth[py, px] + DEPTH_SLACK
    return texture, visible


def fill_hidden(texture: np.ndarray, visible: np.ndarray, layout: UVLayout) -> np.ndarray:
    """Hidden texels take their mirror texel's colour when that one was seen, else the mean
    colour of the seen texels (grey when none was seen)."""
    flat = texture.reshape(-1, texture.shape[-1]).copy()
    seen = visible.reshape(-1)
    mean = flat[seen].mean(0) if seen.any() else np.full(flat.shape[1], 128.0, np.float32)
    mirror = layout.mirror.reshape(-1)
    from_mirror = ~seen & (mirror >= 0)
    from_mirror[from_mirror] &= seen[mirror[from_mirror]]
    flat[from_mirror] = flat[mirror[from_mirror]]
    flat[~seen & ~from_mirror] = mean
    return flat.reshape(texture.shape)
