"""Export a checkpoint as one ONNX file: raw table columns in, the price in target units out, preprocessing included.

    house-price export best.ckpt --output model.onnx
    house-price export best.ckpt --output model.onnx --verify      # onnxruntime vs predict on the test split

Inputs are named exactly as the table's columns, shape [N, 1]: float32 for numbers (NaN = missing), strings for
categories ("" = missing); the output `<target>_prediction` is float32 [N]. See house_price/onnx.py. `--verify` prices
the checkpoint's own test split with onnxruntime and with the checkpoint, and fails if they differ by more than
1e-4 relative.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from house_price.errors import HousePriceError, stop_on_sigterm
from house_price.files import check_output, write_atomic
from house_price.models.checkpoint import model_from_checkpoint, read_checkpoint, training_split
from house_price.onnx import export_onnx, verify_onnx

TOLERANCE = 1e-4  # relative: float32 graph arithmetic against the checkpoint's float64 preprocessing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by house-price train")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument(
        "--verify", action="store_true", help="compare onnxruntime with the checkpoint on its test split"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    arguments = parser.parse_args(argv)
    stop_on_sigterm()

    output = check_output(arguments.output, arguments.overwrite)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise HousePriceError("ONNX export needs onnx and onnxruntime: pip install 'house-price[export]'") from None
    checkpoint = read_checkpoint(arguments.checkpoint)
    model = model_from_checkpoint(checkpoint)
    test = (
        training_split(checkpoint, "test") if arguments.verify else None
    )  # a split that cannot be rebuilt stops before any writing
    check = {}

    def export_and_verify(temporary: str) -> None:
        """Written beside the output and checked there: the .onnx appears only once it passed, never on failure."""
        export_onnx(model, temporary)
        if test is not None:
            check.update(verify_onnx(temporary, model, test))
            if not check["max_relative_difference"] <= TOLERANCE:  # NaN fails too: it compares false with everything
                raise HousePriceError(
                    f"the ONNX graph differs from the checkpoint by {check['max_relative_difference']:.3g} relative "
                    f"(more than {TOLERANCE}) on {check['rows']} test rows, so no file was written; please report it"
                )

    write_atomic(output, export_and_verify)
    inputs = ", ".join(
        model.preprocessor.numeric_read + [f"{column} (string)" for column in model.preprocessor.categorical]
    )
    print(f"Wrote {output}: inputs {inputs}; output {model.target}_prediction ({model.preprocessor.state.target_unit})")
    if check:
        print(
            f"onnxruntime vs the checkpoint on {check['rows']} test rows: largest difference {check['max_abs_difference']:.3g} "
            f"(relative {check['max_relative_difference']:.3g})"
        )
