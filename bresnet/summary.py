"""Print BResNet162Plus1DD's layer table (shapes, parameters) and GFLOPs per clip.

    python -m bresnet.summary --input-shape 32,256,256,3 [--num-classes K] [--units 256]
"""
from __future__ import annotations

import argparse
import sys

from bresnet.flops import count_flops, summary_rows
from bresnet.model import bresnet162plus1dd


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input-shape must be T,H,W,C integers, got {text!r}") from None
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"--input-shape must be 4 positive integers T,H,W,C, got {text!r}")
    return shape


def format_table(rows, flops: int) -> str:
    header = f"{'Layer':<10} {'Output shape':<26} {'Conv/dense params':>18} {'True params':>12}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row.name:<10} {str(row.output_shape):<26} {row.params:>18,} {row.true_params:>12,}")
    lines.append("-" * len(header))
    lines.append(f"{'Total':<37} {sum(r.params for r in rows):>18,} {sum(r.true_params for r in rows):>12,}")
    lines.append(f"GFLOPs per clip: {flops / 1e9:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bresnet.summary", description=__doc__.splitlines()[0])
    parser.add_argument("--input-shape", type=_shape, default=(32, 256, 256, 3), help="T,H,W,C of one clip")
    parser.add_argument("--num-classes", type=int, default=None, help="classification head size (default: embedding)")
    parser.add_argument("--units", type=int, default=256, help="embedding size when no --num-classes")
    args = parser.parse_args(argv)
    try:
        model = bresnet162plus1dd(num_classes=args.num_classes, units=args.units, input_shape=args.input_shape)
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    rows = summary_rows(model, args.input_shape)
    print(format_table(rows, count_flops(model, args.input_shape)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
