"""Checks an ONNX model exported by fedistil against burn's own outputs.

Usage: onnx_check.py MODEL.onnx INPUTS.f32 EXPECTED.f32 INPUT_DIM CLASSES

INPUTS.f32 and EXPECTED.f32 are little-endian float32, row-major: rows x INPUT_DIM inputs and
rows x CLASSES logits computed by burn. The model must pass onnx.checker (full check, with shape
inference), declare a dynamic batch axis, and reproduce burn's logits with onnxruntime at several
batch sizes. Prints one JSON object on stdout; exits non-zero if a check fails.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main() -> int:
    model_path, inputs_path, expected_path = sys.argv[1:4]
    dim, classes = int(sys.argv[4]), int(sys.argv[5])
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    # Rows for an MLP ([batch, dim]); NCHW images for a CNN ([batch, 1, side, side]).
    item_shape = [int(d) for d in inp.shape[1:]]
    x = np.fromfile(inputs_path, dtype="<f4").reshape([-1] + item_shape)
    expected = np.fromfile(expected_path, dtype="<f4").reshape(-1, classes)
    rows = x.shape[0]

    batch_axis = inp.shape[0]
    report = {
        "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "input": inp.name,
        "input_shape": [str(d) for d in inp.shape],
        "output_shape": [str(d) for d in out.shape],
        "nodes": sorted({n.op_type for n in model.graph.node}),
        "batches": {},
    }
    ok = isinstance(batch_axis, str) and int(np.prod(item_shape)) == dim
    max_abs = 0.0
    for batch in sorted({1, 7, rows}):
        got = np.concatenate(
            [session.run([out.name], {inp.name: x[i : i + batch]})[0] for i in range(0, rows, batch)]
        )
        if got.shape != expected.shape:
            ok = False
            report["batches"][batch] = f"shape {got.shape}, expected {expected.shape}"
            continue
        diff = float(np.max(np.abs(got - expected)))
        same_argmax = bool(np.array_equal(got.argmax(1), expected.argmax(1)))
        report["batches"][batch] = {"max_abs_diff": diff, "same_argmax": same_argmax}
        max_abs = max(max_abs, diff)
        ok = ok and same_argmax
    report["max_abs_diff"] = max_abs
    report["ok"] = ok
    print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
