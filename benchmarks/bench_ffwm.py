"""Milliseconds per face of the FFWM frontalizer with random-init weights in the official
format (the architecture, not the weights, sets the cost): per network and end to end.

    python benchmarks/bench_ffwm.py [--device cpu|cuda|auto] [--batch-size 8] [--fp16] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile

import cv2
import skimage.data
import torch
from _common import timed

from frontal_exp.frontalizers.ffwm import FFWMFrontalizer, checkpoints
from frontal_exp.frontalizers.ffwm.networks import build_networks, settle_spectral_norm_


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
        settle_spectral_norm_(nets.generator)
        checkpoints.save_networks(nets, models_dir)
        fr = FFWMFrontalizer(models_dir=models_dir, device=args.device, fp16=args.fp16,
                             batch_size=args.batch_size)
        dev = fr.device
        n = fr.networks
        print(f"device {dev}, fp16 {fr.fp16}, batch {args.batch_size}, "
              f"torch threads {torch.get_num_threads()}")

        b = args.batch_size
        x = torch.rand(b, 3, 128, 128, device=dev)
        with torch.no_grad(), fr._autocast():
            flows = n.flow_net(x)
            coarse_to_fine = (flows[2], flows[1], flows[0])
            stages = {
                "flowNetF": lambda: n.flow_net(x),
                "netG": lambda: n.generator(x, coarse_to_fine),
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
        print(f"end to end (crop, networks, paste back): {e2e * 1000:.1f} ms/face")


if __name__ == "__main__":
    main()
