"""The per-pixel z-buffer renderer (face3d.render.rasterize_zbuffer, UV rasterization) on
analytic meshes: a sphere, a rotated cube, interpenetrating triangles, a textured quad."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from frontal_exp.face3d.pose import rotation_from_euler
from frontal_exp.face3d.render import (
    ndc_to_pixels,
    rasterize,
    rasterize_uv,
    rasterize_zbuffer,
    uv_to_pixels,
)


def uv_sphere(radius: float, n_lat: int = 32, n_lon: int = 64) -> tuple[np.ndarray, np.ndarray]:
    lat = np.linspace(0, np.pi, n_lat + 1)
    lon = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    th, ph = np.meshgrid(lat, lon, indexing="ij")
    verts = radius * np.stack([np.sin(th) * np.cos(ph), np.cos(th), np.sin(th) * np.sin(ph)], -1).reshape(-1, 3)
    tris = []
    for i in range(n_lat):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            tris += [[a, c, b], [b, c, d]]
    return verts, np.array(tris)


def cube(half: float) -> tuple[np.ndarray, np.ndarray]:
    verts = half * np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    return verts, np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])


def test_sphere_coverage_and_front_surface_depth():
    r, centre, size = 40.0, 64.0, 128
    verts, tris = uv_sphere(r)
    zb = rasterize_zbuffer(verts[:, :2] + centre, verts[:, 2], tris, (size, size))
    assert abs(zb.mask.sum() - np.pi * r**2) < 0.02 * np.pi * r**2
    ys, xs = np.nonzero(zb.mask)
    d2 = (xs - centre) ** 2 + (ys - centre) ** 2
    inner = d2 < (0.9 * r) ** 2
    # the near hemisphere (z < 0) is what is seen; the far one would give +sqrt
    want = -np.sqrt(r**2 - d2[inner])
    assert np.abs(zb.depth[ys, xs][inner] - want).max() < 0.5
    assert np.isinf(zb.depth[~zb.mask]).all()


def _cube_ray_depth(rotation: np.ndarray, half: float, x: np.ndarray, y: np.ndarray):
    """Analytic depth of the first hit of rays along +z through (x, y) on the rotated cube."""
    far = 1000.0
    origin = np.stack([x, y, np.full_like(x, -far)], -1) @ rotation  # into the cube's frame
    direction = np.array([0.0, 0.0, 1.0]) @ rotation
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-half - origin) / direction, (half - origin) / direction
    t_enter = np.minimum(t1, t2).max(-1)
    t_exit = np.maximum(t1, t2).min(-1)
    return t_enter <= t_exit, t_enter - far


def test_rotated_cube_depth_is_the_nearest_face_at_every_pixel():
    half, centre, size = 25.0, 48.0, 96
    rotation = rotation_from_euler(25.0, 35.0, 10.0)
    verts, tris = cube(half)
    world = verts @ rotation.T
    zb = rasterize_zbuffer(world[:, :2] + centre, world[:, 2], tris, (size, size))
    ys, xs = np.mgrid[0:size, 0:size]
    hit, depth = _cube_ray_depth(rotation, half, xs.ravel() - centre, ys.ravel() - centre)
    hit, depth = hit.reshape(size, size), depth.reshape(size, size)
    # coverage: the same pixels except where the silhouette passes through a pixel centre
    assert (hit != zb.mask).sum() <= 4
    both = hit & zb.mask
    assert np.abs(zb.depth[both] - depth[both]).max() < 1e-3
    assert both.sum() > 0.5 * hit.sum()


def test_interpenetrating_triangles_split_at_their_crossing():
    """Per-pixel depth: each triangle is nearer on its own side of the crossing line, in
    either drawing order (painter's algorithm gives one triangle everywhere)."""
    xy = np.array([[0, 0], [40, 0], [0, 40], [0, 0], [40, 0], [0, 40]], dtype=float)
    depth = np.array([-10, 10, -10, 0, 0, 0], dtype=float)  # A tilts through B at x = 20
    for tris in (np.array([[0, 1, 2], [3, 4, 5]]), np.array([[3, 4, 5], [0, 1, 2]])):
        a = int(np.nonzero((tris == [0, 1, 2]).all(1))[0][0])
        zb = rasterize_zbuffer(xy, depth, tris, (41, 41))
        assert zb.face[5, 5] == a and zb.face[5, 30] == 1 - a
        assert zb.depth[5, 5] == pytest.approx(-10 + 20 * 5 / 40) and zb.depth[5, 30] == 0
    painter = rasterize(xy, depth, np.array([[0, 2, 1], [3, 5, 4]]), (41, 41), cull_backfaces=False)
    assert painter.tri_map[5, 5] == painter.tri_map[5, 30]


def test_back_face_culling_keeps_screen_clockwise_triangles():
    xy = np.array([[2, 2], [30, 2], [2, 30]], dtype=float)
    front = rasterize_zbuffer(xy, np.zeros(3), np.array([[0, 2, 1]]), (32, 32), cull_backfaces=True)
    back = rasterize_zbuffer(xy, np.zeros(3), np.array([[0, 1, 2]]), (32, 32), cull_backfaces=True)
    assert front.mask.sum() > 300 and not back.mask.any()


def test_uv_rasterization_draws_vertex_attributes_at_their_texels():
    """A quad whose UV layout is an affine image of its positions: every texel must receive
    the position that the affine map gives for its centre (v up, first row v = 1)."""
    uv = np.array([[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]])
    positions = uv @ np.array([[2.0, 0.5, 0.0], [-1.0, 3.0, 1.0]]) + [0.3, -0.2, 5.0]
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    size = 64
    zb = rasterize_uv(uv, faces, size)
    drawn = zb.interpolate(positions[faces])
    ys, xs = np.nonzero(zb.mask)
    texel_uv = np.stack([(xs + 0.5) / size, 1 - (ys + 0.5) / size], 1)
    want = texel_uv @ np.array([[2.0, 0.5, 0.0], [-1.0, 3.0, 1.0]]) + [0.3, -0.2, 5.0]
    assert np.abs(drawn[ys, xs] - want).max() < 1e-4
    assert abs(zb.mask.sum() - (0.8 * size) ** 2) <= 4 * 0.8 * size
    assert uv_to_pixels(np.array([[0.0, 1.0]]), size).tolist() == [[-0.5, -0.5]]


def test_texture_lookup_through_rendered_uv_coordinates():
    """Render a quad in image space with its texture coordinates, look the texture up at
    them: each pixel shows the texel its position maps to."""
    rng = np.random.default_rng(0)
    size = 32
    texture = rng.random((size, size)).astype(np.float32)
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    # screen = a 2x magnification of the UV map, flipped so that v = 1 is on top
    screen = uv_to_pixels(uv, size) * 2 + 10.5
    faces = np.array([[0, 2, 1], [0, 3, 2]])
    zb = rasterize_zbuffer(screen, np.zeros(4), faces, (90, 90))
    px = uv_to_pixels(zb.interpolate(uv[faces]).reshape(-1, 2), size).reshape(90, 90, 2)
    ys, xs = np.nonzero(zb.mask)
    want = np.stack([(xs - 10.5) / 2, (ys - 10.5) / 2], 1)
    assert np.abs(px[ys, xs] - want).max() < 1e-4
    assert zb.mask.sum() >= (2 * size - 2) ** 2
    texel = np.clip(np.rint(px[ys, xs]).astype(int), 0, size - 1)
    want_texel = np.clip(np.rint(want).astype(int), 0, size - 1)
    np.testing.assert_array_equal(texture[texel[:, 1], texel[:, 0]], texture[want_texel[:, 1], want_texel[:, 0]])


def test_ndc_pixels_follow_grid_sample_without_aligned_corners():
    rng = np.random.default_rng(1)
    image = rng.random((1, 1, 12, 16)).astype(np.float32)
    rows, cols = np.array([0, 5, 11]), np.array([0, 7, 15])
    ndc = np.stack([(2 * cols + 1) / 16 - 1, (2 * rows + 1) / 12 - 1], 1)
    grid = torch.from_numpy(ndc[None, None].astype(np.float32))
    sampled = torch.nn.functional.grid_sample(torch.from_numpy(image), grid, align_corners=False)
    np.testing.assert_allclose(sampled[0, 0, 0].numpy(), image[0, 0, rows, cols], atol=1e-6)
    px = ndc_to_pixels(np.stack([ndc[:, 0], ndc[:, 0]], 1), 16)
    np.testing.assert_allclose(px[:, 0], cols, atol=1e-9)
