"""Seconds per face of the LivePortrait frontalizer with random-init weights (the
architecture, not the weights, sets the cost): per network and end to end.

    python benchmarks/bench_liveportrait.py [--device cpu|cuda|auto] [--batch-size 4] [--fp16]
"""

from __future__ import annotations

import argparse
import tempfile

import cv2
import skimage.data
import torch
from _common import timed

from frontal_exp.frontalizers.liveportrait import LivePortraitFrontalizer, checkpoints
from frontal_exp.frontalizers.liveportrait.modules import build_networks
from frontal_exp.frontalizers.liveportrait.modules.spade import settle_spectral_norm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fp16", action="store_true", help="autocast to float16 (CUDA only)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as models_dir:
        nets = build_networks()
        settle_spectral_norm(nets.spade_generator)
        checkpoints.save_networks(nets, models_dir)
        fr = LivePortraitFrontalizer(models_dir=models_dir, device=args.device, fp16=args.fp16,
                                     batch_size=args.batch_size)
        dev = fr.device
        n = fr.networks
        print(f"device {dev}, fp16 {args.fp16 and dev.type == 'cuda'}, batch {args.batch_size}, "
              f"torch threads {torch.get_num_threads()}")

        b = args.batch_size
        x = torch.rand(b, 3, 256, 256, device=dev)
        with torch.no_grad(), fr._autocast():
            feat = n.appearance_feature_extractor(x).float()
            kp = 0.2 * torch.randn(b, 21, 3, device=dev)
            warped = n.warping_module(feat, kp_driving=kp + 0.02, kp_source=kp)["out"]
            stages = {
                "appearance_feature_extractor": lambda: n.appearance_feature_extractor(x),
                "motion_extractor": lambda: n.motion_extractor(x),
                "warping_module": lambda: n.warping_module(feat, kp_driving=kp + 0.02, kp_source=kp),
                "spade_generator": lambda: n.spade_generator(warped),
            }
            total = 0.0
            for name, fn in stages.items():
                sec = timed(fn, args.repeats, dev) / b
                total += sec
                print(f"  {name:30s} {sec * 1000:9.1f} ms/face")
        print(f"  {'networks total':30s} {total * 1000:9.1f} ms/face")

        image = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
        crop_sec = timed(lambda: fr.crop(image), args.repeats, dev)
        print(f"  {'crop (detect + 106 landmarks)':30s} {crop_sec * 1000:9.1f} ms/face")
        images = [image] * b
        e2e = timed(lambda: fr.frontalize_batch(images), args.repeats, dev) / b
        print(f"end to end (crop, networks, paste back): {e2e:.3f} s/face")


if __name__ == "__main__":
    main()
