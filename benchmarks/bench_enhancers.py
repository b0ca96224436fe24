"""Per-face CPU time of each enhancer option (GFPGAN with random-init weights of the real network).

    python benchmarks/bench_enhancers.py [--faces 4] [--device cpu] [--only gfpgan,sharp]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from frontal_exp.enhancers.base import Enhancer


def random_models_dir(root: Path) -> Path:
    """GFPGAN / RetinaFace / ParseNet files of the official formats, randomly initialised
    (speed depends on the architecture, not on the weights)."""
    import torch
    from facexlib.detection.retinaface import RetinaFace
    from facexlib.parsing.parsenet import ParseNet

    from frontal_exp.enhancers.gfpgan import build_gfpgan_net

    (root / "gfpgan").mkdir(parents=True, exist_ok=True)
    (root / "facexlib").mkdir(exist_ok=True)
    torch.save({"params_ema": build_gfpgan_net().state_dict()}, root / "gfpgan/GFPGANv1.4.pth")
    torch.save(RetinaFace(network_name="resnet50", half=False, phase="test", device="cpu").state_dict(),
               root / "facexlib/detection_Resnet50_Final.pth")
    torch.save(ParseNet(in_size=512, out_size=512, parsing_ch=19).state_dict(),
               root / "facexlib/parsing_parsenet.pth")
    return root


def enhancers(models_dir: str, device: str) -> dict[str, Callable[[], Enhancer]]:
    from frontal_exp.enhancers.chain import EnhancerChain
    from frontal_exp.enhancers.corrections import LightCorrections
    from frontal_exp.enhancers.gfpgan import GFPGANEnhancer
    from frontal_exp.enhancers.match_crop import MatchCrop
    from frontal_exp.enhancers.omit_bg import OmitBackground, OmitBackgroundCrop
    from frontal_exp.enhancers.simple import NoEnhancer, Sharpen

    # SCRFD finds the real face for sure; random RetinaFace weights would find noise
    def gfpgan() -> GFPGANEnhancer:
        return GFPGANEnhancer(face_detector="scrfd500m", models_dir=models_dir, device=device)

    return {
        "none": NoEnhancer,
        "sharp": Sharpen,
        "sharp_strong": lambda: Sharpen(amount=2.0, sigma=2.0),
        "omit_bg": OmitBackground,
        "omit_bg_crop": OmitBackgroundCrop,
        "corrections": LightCorrections,
        "match_crop": MatchCrop,
        "gfpgan": gfpgan,
        "gfpgan_face": lambda: GFPGANEnhancer(face_detector="scrfd500m", models_dir=models_dir,
                                              device=device, paste_back=False),
        "gfpgan_corrections": lambda: EnhancerChain([gfpgan(), LightCorrections()]),
    }


def time_one(enh: Enhancer, images: list[np.ndarray], refs: list[np.ndarray]) -> tuple[float, float]:
    """(ms per face one by one, ms per face through enhance_batch); after one warm-up call."""
    enh(images[0], refs[0])
    t = time.perf_counter()
    for img, ref in zip(images, refs, strict=True):
        enh(img, ref)
    single = (time.perf_counter() - t) / len(images) * 1000
    t = time.perf_counter()
    enh.enhance_batch(images, refs)
    batched = (time.perf_counter() - t) / len(images) * 1000
    return single, batched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", default="", help="comma-separated enhancer names")
    args = parser.parse_args()
    import skimage.data
    import torch

    from frontal_exp.data.demo import package_photos
    from frontal_exp.images import read_image

    photos = [np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])]
    photos.append(read_image(package_photos()["t1"]))
    images = [photos[i % len(photos)] for i in range(args.faces)]
    refs = [np.ascontiguousarray(img[:, ::-1]) for img in images]
    only = {s for s in args.only.split(",") if s}
    print(f"torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}, "
          f"device: {args.device}, faces: {args.faces} (astronaut 512x512, t1 group photo)")
    with tempfile.TemporaryDirectory() as tmp:
        factories = enhancers(str(random_models_dir(Path(tmp))), args.device)
        print(f"{'enhancer':22s} {'ms/face':>10s} {'ms/face batched':>16s}")
        for name, make in factories.items():
            if only and name not in only:
                continue
            single, batched = time_one(make(), images, refs)
            print(f"{name:22s} {single:10.1f} {batched:16.1f}", flush=True)


if __name__ == "__main__":
    main()
