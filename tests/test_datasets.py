"""Dataset loaders on small trees in the real BIWI / LFW / folder layouts."""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from frontal_exp.data.biwi import BiwiDataset, angles_from_rotation
from frontal_exp.data.folder import FolderDataset, LfwDataset
from frontal_exp.errors import ConfigError, DatasetError
from frontal_exp.face3d.pose import rotation_from_euler


def biwi_pose_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The matrix a BIWI `frame_XXXXX_pose.txt` holds (row by row) for a pose in this project's
    convention (face3d.pose: yaw > 0 nose to the image's right, pitch > 0 nose up, roll > 0
    clockwise on screen), built with scipy, not with the loader's formula.

    It maps head to camera coordinates (x to the image's right, y down, z away from the
    camera; at all zero the head looks into the camera): roll about the camera's z axis
    first, then yaw about y, then pitch about x. Its transpose is the matrix Hopenet and
    FSA-Net decompose, whose yaw is the opposite of ours.
    """
    return Rotation.from_euler("zyx", [roll, -yaw, -pitch], degrees=True).as_matrix()


def pose_file_text(matrix: np.ndarray, translation=(12.0, -30.5, 950.1)) -> str:
    """A pose file as BIWI writes it: the 3x3 matrix row by row, a blank line, the head centre."""
    rows = "\n".join(" ".join(repr(float(v)) for v in row) for row in matrix)
    return rows + "\n\n" + " ".join(str(v) for v in translation) + "\n"


@pytest.mark.parametrize("pose", [(30, 0, 0), (0, 20, 0), (0, 0, 12), (30, 10, -5), (-45, 25, 8)])
def test_biwi_matrix_construction_means_what_the_convention_says(pose):
    """The test's matrices, checked on geometry: where the nose and the top of the head point."""
    yaw, pitch, roll = pose
    m = biwi_pose_matrix(*pose)
    nose, top = m @ [0.0, 0.0, -1.0], m @ [0.0, -1.0, 0.0]
    assert math.degrees(math.asin(nose[0])) == pytest.approx(yaw)  # > 0: to the image's right
    assert np.sign(-nose[1]) == np.sign(pitch)  # y grows downward: > 0 is up
    if yaw == pitch == 0:
        assert math.degrees(math.atan2(top[0], -top[1])) == pytest.approx(roll)  # > 0: clockwise
        # single-axis poses are the project's HeadPose rotations exactly (the Euler orders differ)
        assert np.allclose(m, rotation_from_euler(yaw, pitch, roll), atol=1e-12)


@pytest.mark.parametrize("pose", [(30, 0, 0), (-30, 0, 0), (0, 20, 0), (0, 0, 12), (30, 10, -5), (-45, 25, 8)])
def test_biwi_loader_reads_known_poses(tmp_path, pose):
    """A pose file holding a known rotation reads back as that pose; yaw and pitch both set,
    so a transposed matrix or swapped axes cannot pass."""
    seq = tmp_path / "01"
    seq.mkdir()
    img = np.full((48, 64, 3), 128, np.uint8)
    for number, angles in ((0, (0.0, 0.0, 0.0)), (1, pose)):
        cv2.imwrite(str(seq / f"frame_{number:05d}_rgb.png"), img)
        (seq / f"frame_{number:05d}_pose.txt").write_text(pose_file_text(biwi_pose_matrix(*angles)))
    item, = BiwiDataset(root=str(tmp_path), min_yaw=0, min_pitch=0, frame_stride=1).load().items
    assert item.item_id == "01/frame_00001_rgb"
    assert (item.yaw, item.pitch, item.roll) == pytest.approx(pose, abs=1e-6)


def write_biwi(root: Path, frames: dict[str, list[tuple[int, float, float]]], rgb_cal: bool = False) -> None:
    img = np.full((48, 64, 3), 128, np.uint8)
    for seq, poses in frames.items():
        d = root / seq
        d.mkdir(parents=True)
        for number, yaw, pitch in poses:
            cv2.imwrite(str(d / f"frame_{number:05d}_rgb.png"), img)
            (d / f"frame_{number:05d}_pose.txt").write_text(pose_file_text(biwi_pose_matrix(yaw, pitch, 0)))
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
    with pytest.raises(DatasetError, match=r"no dataset root given; set dataset.root=/path/to/data\."):
        FolderDataset(root=None).load()
    # options whose config reads an environment variable name it
    with pytest.raises(DatasetError, match=r"no dataset root given; set BIWI_ROOT=/path/to/data or dataset.root="):
        BiwiDataset(root=None).load()
    with pytest.raises(DatasetError, match=r"set LFW_ROOT=/path/to/data or dataset.root="):
        LfwDataset(root=None).load()


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
    delta = biwi_pose_matrix(5.0, 0, 0).T  # the RGB camera turned 5 deg from the depth camera
    head = biwi_pose_matrix(30.0, 20.0, 0.0).T  # as the loader reads the file (transposed)
    rows = "\n".join(" ".join(f"{v:.8f}" for v in row) for row in delta)
    (tmp_path / "cal" / "01" / "rgb.cal").write_text(
        f"517.679 0 320\n0 517.679 240.5\n0 0 1\n\n0 0 0 0\n\n{rows}\n\n-24 5.8 -13.3\n\n640 480\n")
    plain = BiwiDataset(root=str(tmp_path / "plain"), min_yaw=1).load().items[0]
    cal = BiwiDataset(root=str(tmp_path / "cal"), min_yaw=1).load().items[0]
    assert (plain.yaw, plain.pitch) == pytest.approx((30.0, 20.0), abs=1e-4)
    # the head rotation is expressed in the RGB camera: R_rgb = R_cal @ R_head (order matters)
    expected = angles_from_rotation(delta @ head)
    assert (cal.yaw, cal.pitch, cal.roll) == pytest.approx(expected, abs=1e-4)
    assert (cal.yaw, cal.pitch) != pytest.approx(angles_from_rotation(head @ delta)[:2], abs=1e-2)


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


def test_folder_records_entries_named_like_images_that_are_not_files(tmp_path):
    """Dangling symlinks, symlink loops, folders and FIFOs named *.jpg are skipped WITH a reason."""
    write_people(tmp_path, {"ann": ["ann_frontal.jpg", "a.jpg"]})
    ann = tmp_path / "ann"
    (ann / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    (ann / "loop.jpg").symlink_to(ann / "loop.jpg")
    (ann / "album.jpg").mkdir()
    os.mkfifo(ann / "pipe.jpg")
    data = FolderDataset(root=str(tmp_path), gt="pattern").load()
    assert [it.item_id for it in data.items] == ["ann/a.jpg"]
    assert {(s.what, s.reason) for s in data.skipped} == {
        ("ann/gone.jpg", "not_a_file: dangling symlink"),
        ("ann/loop.jpg", "not_a_file: symlink loop"),
        ("ann/album.jpg", "not_a_file: directory"),
        ("ann/pipe.jpg", "not_a_file: fifo"),
    }
