"""ver-extract-teachers: run teachers once over an image folder and write feature shards."""

from __future__ import annotations

import argparse
import sys

from ver_core.distill.extract import extract_teachers
from ver_core.distill.teachers import parse_teacher_list


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ver-extract-teachers",
        description="Extract teacher features (efficientnet_lite0, hf:<id-or-dir>, sim_depth, "
        "sim_segmentation[:classes]) for every png/jpg under --images into safetensors shards.",
    )
    p.add_argument("--images", required=True, help="image folder (searched recursively)")
    p.add_argument("--teachers", required=True, help="comma-separated teacher names")
    p.add_argument("--out", required=True, help="output shard directory")
    p.add_argument(
        "--image-size", type=int, default=224, help="student resolution stored in shards"
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--shard-size", type=int, default=256, help="images per shard file")
    p.add_argument("--dtype", choices=("bfloat16", "float16"), default="bfloat16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        manifest = extract_teachers(
            args.images,
            parse_teacher_list(args.teachers),
            args.out,
            image_size=args.image_size,
            batch_size=args.batch_size,
            dtype=args.dtype,
            shard_size=args.shard_size,
            device=args.device,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (ValueError, KeyError, FileNotFoundError, FileExistsError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"ver-extract-teachers: error: {msg}", file=sys.stderr)
        return 2
    teachers = ", ".join(
        f"{t['key']} ({t['channels']}ch {t['grid'][0]}x{t['grid'][1]})"
        for t in manifest["teachers"]
    )
    print(
        f"wrote {manifest['num_images']} images in {len(manifest['shards'])} shard(s) to {args.out}: {teachers}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
