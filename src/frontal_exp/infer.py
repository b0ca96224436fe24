"""Batch inference over a folder (the original study's `inference.py` interface).

    python -m frontal_exp.infer --source_dir DIR --source_pattern "*.png" -o OUT --frontalize \
        [model=liveportrait] [enhancer=sharp] [any other config override]

Writes every output under the same relative name in OUT, and OUT/skipped.csv listing every
input that produced no output, with the reason. Existing outputs are kept (a re-run resumes)
unless --overwrite is given. Files under OUT are never read as inputs (OUT may be a folder
inside the source folder), and no input is ever overwritten: OUT must not be the source
folder, and no output may land on an input or elsewhere in the source folder.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from frontal_exp.app import CONFIG_DIR, check_config_dir
from frontal_exp.config import instantiate_checked, register_configs
from frontal_exp.errors import ConfigError, FrontalExpError, ModelFileError
from frontal_exp.images import read_image, write_image
from frontal_exp.quiet import configure_from, progress_bar


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m frontal_exp.infer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source_dir", required=True, type=Path)
    p.add_argument("--source_pattern", default="*.png", help="glob, e.g. '*.jpg' or '**/*.png'")
    p.add_argument("-o", "--output_dir", required=True, type=Path)
    p.add_argument("--frontalize", action="store_true", help="run the configured model (else only the enhancer)")
    p.add_argument("--overwrite", action="store_true", help="redo files whose output exists")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. model=liveportrait enhancer=sharp")
    return p.parse_args(argv)


def plan(source_dir: Path, pattern: str, output_dir: Path) -> tuple[list[tuple[Path, Path]], int]:
    """(input, output path) of every file the pattern matches, and how many matches lie in the
    output folder (outputs of an earlier run, never inputs). `ConfigError` when an output
    would replace an input or land in the source folder outside the output folder."""
    src_root, out_root = source_dir.resolve(), output_dir.resolve()
    if out_root == src_root:
        raise ConfigError(f"-o {output_dir} is the source folder: the outputs would replace the input photos. "
                          "Write them to another folder (a subfolder of the source is fine).")
    # an output folder that holds the source folder holds every input: nothing to exclude then
    exclude = not src_root.is_relative_to(out_root)
    inputs, in_output = [], 0
    for path in sorted(p for p in source_dir.glob(pattern) if p.is_file()):
        where = {path.resolve(), path.parent.resolve() / path.name}  # the file, and its folder entry
        if exclude and any(w.is_relative_to(out_root) for w in where):
            in_output += 1
        else:
            inputs.append((path, where))
    taken = set().union(*(where for _, where in inputs))
    pairs = []
    for path, _ in inputs:
        dst = output_dir / path.relative_to(source_dir)
        target = dst.resolve()
        if target in taken:
            raise ConfigError(f"the output for {path} would be written onto the input {target}; nothing was "
                              "written. Choose an output folder outside the inputs.")
        if target.is_relative_to(src_root) and not (exclude and target.is_relative_to(out_root)):
            raise ConfigError(f"the output for {path} would be written into the source folder ({target}), "
                              "where a later run would read it as an input; nothing was written. Choose an "
                              "output folder that does not lead back into the source folder.")
        pairs.append((path, dst))
    return pairs, in_output


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def no_match_message(source_dir: Path, pattern: str, output_dir: Path) -> str:
    """What a pattern that matched nothing missed: the image files that are there (outside the
    output folder), by type, and the pattern that would take the most common type."""
    out_root = output_dir.resolve()
    counts: dict[str, int] = {}
    for path in source_dir.rglob("*"):
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES and path.is_file() and not path.resolve().is_relative_to(out_root):
            counts[suffix] = counts.get(suffix, 0) + 1
    head = f"0 files match {pattern!r} under {source_dir}"
    if not counts:
        return f"{head}, and it holds no image files ({', '.join(IMAGE_SUFFIXES)})"
    found = ", ".join(f"{n} {suffix} file{'s' if n > 1 else ''}" for suffix, n in
                      sorted(counts.items(), key=lambda kv: -kv[1]))
    best = max(counts, key=counts.get)
    return f"{head}; {found} there (subfolders included): use --source_pattern '**/*{best}'"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.source_dir.is_dir():
        print(f"error: --source_dir {args.source_dir} is not a directory", file=sys.stderr)
        return 2
    check_config_dir()
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=args.overrides)
    configure_from(cfg)  # quiet unless verbose=true; a progress bar when stderr is a terminal (eval.progress)
    try:
        sources, in_output = plan(args.source_dir, args.source_pattern, args.output_dir)
        model = instantiate_checked(cfg.model, "model") if args.frontalize else None
        enhancer = instantiate_checked(cfg.enhancer, "enhancer")
    except FrontalExpError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if not sources:
        print(f"error: {no_match_message(args.source_dir, args.source_pattern, args.output_dir)}", file=sys.stderr)
        return 1
    args.output_dir.mkdir(parents=True, exist_ok=True)
    skipped: list[tuple[str, str]] = []
    done = kept = 0
    for src, dst in progress_bar(sources, "infer", unit="image", enabled=cfg.eval.progress):
        rel = src.relative_to(args.source_dir)
        if dst.exists() and not args.overwrite:
            kept += 1
            continue
        try:
            image = read_image(src)
            out = model(image) if model is not None else image
            out = enhancer(out, image)
            write_image(dst, out)
            done += 1
        except ModelFileError as exc:  # models load on first use; without them nothing can run
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            skipped.append((str(rel), f"{type(exc).__name__}: {exc}"))
    with open(args.output_dir / "skipped.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "reason"])
        writer.writerows(skipped)
    in_out = f" ({in_output} more in the output folder, not inputs)" if in_output else ""
    print(f"{len(sources)} matched{in_out}, {done} written, {kept} kept from an earlier run, "
          f"{len(skipped)} skipped (see {args.output_dir / 'skipped.csv'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
