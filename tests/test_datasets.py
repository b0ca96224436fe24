"""Dataset loaders on small trees in the real BIWI / LFW / folder layouts."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from frontal_exp.data.biwi import BiwiDataset, angles_from_rotation
from frontal_exp.data.folder import FolderDataset, LfwDataset
from frontal_exp.errors import ConfigError, DatasetError


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Inverse of angles_from_rotation: the head rotation R = Rz(-roll) Ry(yaw) Rx(pitch)."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, -roll))
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


@pytest.mark.parametrize("angles", [(0, 0, 0), (30, 0, 0), (-45, 10, 5), (20, -30, -10)])
def test_angles_from_rotation_round_trip(angles):
    got = angles_from_rotation(rotation_from_angles(*angles))
    assert got == pytest.approx(angles, abs=1e-6)


def test_yaw_sign_follows_the_project_convention():
    """BIWI yaw is the literature's reading with the sign flipped (project: nose to the image's
    right is positive)."""
    r = rotation_from_angles(30, 0, 0)
    # the literature's reading of this matrix (Hopenet / FSA-Net) gives the opposite sign
    lit_yaw = -math.degrees(math.atan2(-r[2, 0], math.hypot(r[2, 1], r[2, 2])))
    assert angles_from_rotation(r)[0] == pytest.approx(-lit_yaw)


def write_biwi(root: Path, frames: dict[str, list[tuple[int, float, float]]], rgb_cal: bool = False) -> None:
    img = np.full((48, 64, 3), 128, np.uint8)
    for seq, poses in frames.items():
        d = root / seq
        d.mkdir(parents=True)
        for number, yaw, pitch in poses:
            cv2.imwrite(str(d / f"frame_{number:05d}_rgb.png"), img)
            rot = rotation_from_angles(yaw, pitch, 0).T  # BIWI writes the matrix transposed
            text = "\n".join(" ".join(f"{v:.6f}" for v in row) for row in rot) + "\n\n12.0 -30.5 950.1\n"
            (d / f"frame_{number:05d}_pose.txt").write_text(text)
        if rgb_cal:
            (d / "rgb.cal").write_text(
                "517.679 0 320\n0 517.679 240.5\n0 0 1\n\n0 0 0 0\n\n1 0 0\n0 1 0\n0 0 1\n\n-24 5.8 -13.3\n\n640 480\n"
            )


def test_biwi_layout_gt_and_thresholds(tmp_path):
    # frame numbers have gaps, as in BIWI; sequence 03 is the same person as 01
    write_biwi(tmp_path, {
        "01": [(3, 2.0, 1.0), (4, 30.0, 0.0), (7, -5.0, 3.0), (9, 0.0, -40.0)],
        "02": [(3, 25.0, 0.0), (5, 40.0, 5.0)],  # no frontal frame: no GT
        "03": [(1, -60.0, 0.0), (2, 0.5, 0.5)],
    }, rgb_cal=True)
    (tmp_path / "01" / "frame_00008_rgb.png").write_bytes(b"")  # frame without a pose file
    data = BiwiDataset(root=str(tmp_path), same_person={"3": "1"}).load()
    by_id = {it.item_id: it for it in data.items}
    assert set(by_id) == {"01/frame_00004_rgb", "01/frame_00009_rgb", "03/frame_00001_rgb"}
    # the GT of the merged person is its most frontal frame, across both sequences
    assert {it.gt_path.name for it in data.items} == {"frame_00002_rgb.png"}
    assert by_id["01/frame_00004_rgb"].yaw == pytest.approx(30.0, abs=1e-4)
    assert by_id["01/frame_00009_rgb"].pitch == pytest.approx(-40.0, abs=1e-4)
    reasons = sorted(s.reason for s in data.skipped)
    assert reasons == ["no_gt", "no_pose_file"]
    assert data.extra_frontals["01"]  # other near-frontal frames, for GT-vs-GT protocols


def test_biwi_stride_limit_seed(tmp_path):
    write_biwi(tmp_path, {"01": [(i, 0.0 if i == 0 else 20.0 + i, 0.0) for i in range(20)]})
    full = BiwiDataset(root=str(tmp_path)).load()
    assert len(full.items) == 19
    strided = BiwiDataset(root=str(tmp_path), frame_stride=4).load()
    assert len(strided.items) == 4  # frames 4, 8, 12, 16 (frame 0 is the GT)
    a = BiwiDataset(root=str(tmp_path), limit=5, seed=1).load().items
    b = BiwiDataset(root=str(tmp_path), limit=5, seed=1).load().items
    c = BiwiDataset(root=str(tmp_path), limit=5, seed=2).load().items
    assert a == b and len(a) == 5 and a != c


def test_missing_and_empty_roots_name_the_path_and_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"(?s)does not exist.*frame_00003_rgb\.png"):
        BiwiDataset(root=str(tmp_path / "nope")).load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"(?s)is empty.*_0001\.jpg"):
        LfwDataset(root=str(tmp_path / "empty")).load()
    with pytest.raises(DatasetError, match="no dataset root"):
        FolderDataset(root=None).load()


def write_people(root: Path, people: dict[str, list[str]]) -> None:
    img = np.full((32, 32, 3), 90, np.uint8)
    for person, files in people.items():
        (root / person).mkdir(parents=True)
        for f in files:
            cv2.imwrite(str(root / person / f), img)


def test_lfw_layout_first_gt(tmp_path):
    write_people(tmp_path, {
        "Aaron_Peirsol": ["Aaron_Peirsol_0001.jpg", "Aaron_Peirsol_0002.jpg", "Aaron_Peirsol_0003.jpg"],
        "Abel_Pacheco": ["Abel_Pacheco_0001.jpg"],  # one photo: skipped
    })
    data = LfwDataset(root=str(tmp_path), gt="first").load()
    assert [it.angle_path.name for it in data.items] == ["Aaron_Peirsol_0002.jpg", "Aaron_Peirsol_0003.jpg"]
    assert {it.gt_path.name for it in data.items} == {"Aaron_Peirsol_0001.jpg"}
    assert [s.reason for s in data.skipped] == ["fewer_than_2_images"]


def test_folder_gt_by_pattern_counts_identities_without_gt(tmp_path):
    write_people(tmp_path, {"ann": ["a.jpg", "ann_frontal.png", "b.JPG"], "bob": ["x.jpg", "y.jpg"]})
    (tmp_path / "ann" / "notes.txt").write_text("not an image")
    data = FolderDataset(root=str(tmp_path), gt="pattern", gt_pattern="*frontal*").load()
    assert sorted(it.item_id for it in data.items) == ["ann/a.jpg", "ann/b.JPG"]
    assert [(s.what, s.reason) for s in data.skipped] == [("bob", "no_gt")]
    with pytest.raises(ConfigError, match="pattern, first, pose"):
        FolderDataset(root=str(tmp_path), gt="best")


def test_folder_gt_by_pose_picks_the_frontal_photo(real_faces, tmp_path):
    """Among his portrait (about 10 deg of yaw) and three-quarter stage frames (about 25 deg),
    the estimated-pose GT of Lin-Manuel Miranda is the portrait."""
    person = real_faces / "lin_manuel_miranda"
    root = tmp_path / "tree"
    (root / "lmm").mkdir(parents=True)
    for name in ["lin-manuel-miranda.jpg", "hamilton_0115.jpg", "hamilton_0130.jpg", "hamilton_0205.jpg"]:
        (root / "lmm" / name).write_bytes((person / name).read_bytes())
    data = FolderDataset(root=str(root), gt="pose", cache_dir=str(tmp_path / "cache")).load()
    assert data.items[0].gt_path.name == "lin-manuel-miranda.jpg"
    assert all(it.yaw is not None for it in data.items)
    assert len(list((tmp_path / "cache" / "poses").rglob("*.json"))) == 4


def test_rgb_calibration_rotates_the_pose_into_the_rgb_camera(tmp_path):
    write_biwi(tmp_path / "plain", {"01": [(0, 0.0, 0.0), (1, 30.0, 20.0)]})
    write_biwi(tmp_path / "cal", {"01": [(0, 0.0, 0.0), (1, 30.0, 20.0)]})
    delta = rotation_from_angles(5.0, 0, 0)  # the RGB camera turned 5 deg from the depth camera
    rows = "\n".join(" ".join(f"{v:.8f}" for v in row) for row in delta)
    (tmp_path / "cal" / "01" / "rgb.cal").write_text(
        f"517.679 0 320\n0 517.679 240.5\n0 0 1\n\n0 0 0 0\n\n{rows}\n\n-24 5.8 -13.3\n\n640 480\n")
    plain = BiwiDataset(root=str(tmp_path / "plain"), min_yaw=1).load().items[0]
    cal = BiwiDataset(root=str(tmp_path / "cal"), min_yaw=1).load().items[0]
    assert (plain.yaw, plain.pitch) == pytest.approx((30.0, 20.0), abs=1e-4)
    # the head rotation is expressed in the RGB camera: R_rgb = R_cal @ R_head (order matters)
    expected = angles_from_rotation(delta @ rotation_from_angles(30.0, 20.0, 0.0))
    assert (cal.yaw, cal.pitch, cal.roll) == pytest.approx(expected, abs=1e-4)
    assert (cal.yaw, cal.pitch) != pytest.approx(angles_from_rotation(rotation_from_angles(30, 20, 0) @ delta)[:2], abs=1e-2)


def test_folder_limit_estimates_poses_only_for_the_people_drawn(real_faces, tmp_path):
    """`limit` with gt=pose draws items at random without estimating every photo's pose first;
    what it draws are items of the full dataset, with the same GT and pose."""
    cache = tmp_path / "cache"
    small = FolderDataset(root=str(real_faces), gt="pose", cache_dir=str(cache), limit=4, seed=3).load()
    assert len(small.items) == 4
    n_photos = sum(1 for p in real_faces.rglob("*.jpg"))
    n_estimated = len(list((cache / "poses").rglob("*.json")))
    drawn_people = {it.identity for it in small.items}
    assert n_estimated == sum(len(list((real_faces / p).glob("*.jpg"))) for p in drawn_people) < n_photos
    again = FolderDataset(root=str(real_faces), gt="pose", cache_dir=str(cache), limit=4, seed=3).load()
    assert again.items == small.items
    other = FolderDataset(root=str(real_faces), gt="pose", cache_dir=str(cache), limit=4, seed=4).load()
    assert other.items != small.items
    full = FolderDataset(root=str(real_faces), gt="pose", cache_dir=str(cache)).load()
    assert set(small.items) <= set(full.items) and len(full.items) > 40
