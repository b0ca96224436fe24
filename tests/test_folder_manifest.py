"""`dataset=folder` with `gt=manifest`: GT, identities and poses read from a manifest CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from frontal_exp.data.folder import FolderDataset, read_manifest
from frontal_exp.errors import DatasetError

REPO = Path(__file__).resolve().parents[1]
LARGEYAW = REPO.parent / "shared/data/largeyaw"


def write_tree(root: Path, rows: list[dict], files: list[str], name: str = "manifest.csv") -> Path:
    """Image files (tiny, any content) and a manifest with the given rows."""
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes(b"\xff\xd8 not decoded by the loader")
    columns = sorted({k for r in rows for k in r}, key=["identity", "file", "source", "yaw", "pitch", "roll",
                                                         "role", "is_gt"].index)
    path = root / name
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_manifest_gives_gt_identity_and_pose(tmp_path):
    rows = [
        {"identity": "ann", "file": "ann/f1.jpg", "source": "a, b", "yaw": "-0.5", "pitch": "2", "role": "gt"},
        {"identity": "ann", "file": "ann/f2.jpg", "source": "x", "yaw": "-41.5", "pitch": "-3.25", "role": "angled"},
        {"identity": "ann", "file": "ann/f3.jpg", "source": "x", "yaw": "22", "pitch": "", "role": "angled"},
        # a file that is not there, a person without GT, a person with only a GT
        {"identity": "ann", "file": "ann/gone.jpg", "source": "", "yaw": "30", "pitch": "0", "role": "angled"},
        {"identity": "bob", "file": "bob/b1.jpg", "source": "", "yaw": "10", "pitch": "0", "role": "angled"},
        {"identity": "bob", "file": "bob/b2.jpg", "source": "", "yaw": "50", "pitch": "0", "role": "angled"},
        {"identity": "cy", "file": "cy/c1.jpg", "source": "", "yaw": "0", "pitch": "0", "role": "gt"},
    ]
    files = ["ann/f1.jpg", "ann/f2.jpg", "ann/f3.jpg", "ann/extra.jpg", "bob/b1.jpg", "bob/b2.jpg", "cy/c1.jpg"]
    write_tree(tmp_path, rows, files)
    data = FolderDataset(root=str(tmp_path), gt="manifest", estimate_pose=False).load()
    assert [(it.item_id, it.identity, it.gt_path.name, it.yaw, it.pitch) for it in data.items] == [
        ("ann/f2.jpg", "ann", "f1.jpg", -41.5, -3.25),
        ("ann/f3.jpg", "ann", "f1.jpg", 22.0, None),
    ]
    assert all(it.angle_path == tmp_path / it.item_id for it in data.items)
    assert sorted((s.what, s.reason.split(":")[0]) for s in data.skipped) == [
        ("ann/extra.jpg", "not_in_manifest"),
        ("ann/gone.jpg", "manifest_file_missing"),
        ("bob", "no_gt"),
        ("cy", "fewer_than_2_images"),
    ]


def test_manifest_option_path_and_is_gt_column(tmp_path):
    """`manifest=` points anywhere (files stay relative to the root); `is_gt` works as the flag."""
    rows = [{"identity": "p", "file": "p/a.jpg", "is_gt": "1"}, {"identity": "p", "file": "p/b.jpg", "is_gt": "0"},
            {"identity": "p", "file": "p/c.jpg", "is_gt": "true"}]
    root = tmp_path / "root"
    write_tree(root, rows, ["p/a.jpg", "p/b.jpg", "p/c.jpg"], name="../elsewhere.csv")
    data = FolderDataset(root=str(root), gt="manifest", manifest=str(tmp_path / "elsewhere.csv"),
                         estimate_pose=False).load()
    assert [(it.item_id, it.gt_path.name, it.yaw) for it in data.items] == [("p/b.jpg", "a.jpg", None)]
    # the second GT row is an extra frontal photo of the person, not an item
    assert data.extra_frontals == {"p": [root / "p/c.jpg"]}
    assert [r.is_gt for r in read_manifest(tmp_path / "elsewhere.csv")] == [True, False, True]


def test_manifest_errors_say_what_to_do(tmp_path):
    write_tree(tmp_path, [{"identity": "p", "file": "p/a.jpg", "role": "gt"}], ["p/a.jpg"], name="other.csv")
    with pytest.raises(DatasetError, match="dataset.manifest="):
        FolderDataset(root=str(tmp_path), gt="manifest").load()
    bad = tmp_path / "bad.csv"
    bad.write_text("who,file\np,p/a.jpg\n")
    with pytest.raises(DatasetError, match="needs columns identity, file and role"):
        FolderDataset(root=str(tmp_path), gt="manifest", manifest=str(bad)).load()
    bad.write_text("identity,file,role,yaw\np,p/a.jpg,gt,left\n")
    with pytest.raises(DatasetError, match="line 2: column yaw must be a number"):
        FolderDataset(root=str(tmp_path), gt="manifest", manifest=str(bad)).load()


def test_manifest_config_option(make_cfg):
    from frontal_exp.config import instantiate_checked

    cfg = make_cfg("dataset=folder", "dataset.root=/x", "dataset.gt=manifest", "dataset.manifest=/m.csv")
    ds = instantiate_checked(cfg.dataset, "dataset")
    assert (ds.gt, ds.manifest) == ("manifest", "/m.csv")


@pytest.mark.skipif(not LARGEYAW.is_dir(), reason="../shared/data/largeyaw is not present")
def test_largeyaw_loads_with_every_persons_gt():
    with open(LARGEYAW / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    gt_of = {r["identity"]: r["file"] for r in rows if r["role"] == "gt"}
    data = FolderDataset(root=str(LARGEYAW), gt="manifest", estimate_pose=False).load()
    assert data.skipped == []
    assert set(data.identities) == set(gt_of) and len(gt_of) == 6
    assert len(data.items) == len(rows) - len(gt_of)
    for it in data.items:
        assert it.gt_path == LARGEYAW / gt_of[it.identity]
    by_file = {r["file"]: r for r in rows}
    yaws = np.array([it.yaw for it in data.items])
    assert np.allclose(yaws, [float(by_file[it.item_id]["yaw"]) for it in data.items])
    assert np.abs(yaws).max() > 45
