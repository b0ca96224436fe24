"""CPU timing of the mesh3d frontalizer on photos shipped inside installed packages.

    python benchmarks/bench_mesh3d.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import time
from importlib import resources

import cv2
import numpy as np

from frontal_exp.face3d import get_face_mesh
from frontal_exp.frontalizers.mesh3d import Mesh3DFrontalizer


def packaged_photos() -> dict[str, np.ndarray]:
    import skimage.data

    def pkg(package: str, *parts: str) -> np.ndarray:
        return cv2.imread(str(resources.files(package).joinpath(*parts)))

    hanks = pkg("insightface", "data", "images", "Tom_Hanks_54745.png")
    return {
        "astronaut 512x512": cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR),
        "grace_hopper 512x600": pkg("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"),
        # a tight 112 px face crop: upscaled and padded so the face has surroundings
        "tom_hanks 448x448": cv2.copyMakeBorder(
            cv2.resize(hanks, (336, 336), interpolation=cv2.INTER_CUBIC), 56, 56, 56, 56,
            cv2.BORDER_REPLICATE,
        ),
    }


def ms(fn, repeat: int) -> float:
    fn()  # warm-up (model load, caches)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    cv2.setNumThreads(cv2.getNumThreads())
    frontalizer = Mesh3DFrontalizer()
    mesh = get_face_mesh()
    print(f"{'photo':24s} {'facemesh':>9s} {'render_pose':>12s} {'frontalize':>11s}  (ms per face)")
    for name, image in packaged_photos().items():
        turned = frontalizer.render_pose(image, 30)
        t_mesh = ms(lambda im=turned: mesh.landmarks(im), args.repeat)
        t_pose = ms(lambda im=image: frontalizer.render_pose(im, 30), args.repeat)
        t_front = ms(lambda im=turned: frontalizer(im), args.repeat)
        print(f"{name:24s} {t_mesh:9.1f} {t_pose:12.1f} {t_front:11.1f}")
    print("render_pose and frontalize include the face mesh; frontalize input: a 30 deg view")


if __name__ == "__main__":
    main()
