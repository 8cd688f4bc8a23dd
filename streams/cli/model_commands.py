"""`thunderhelm predict` and `thunderhelm export`: use a run's model artifact.

`predict` reads raw feature rows from a CSV (numbers, optionally a header and
a last label column) or an .npz (`x`, optionally `y`), and prints one
prediction per row as CSV, or everything as one JSON object with `--json`.
When the input carries labels it also reports the accuracy. For a text model,
`--text` scores the next character after a context and `--generate N`
samples N characters after it. `export --onnx` writes the model as ONNX.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parsers", "main"]


def add_parsers(sub: Any) -> None:
    """Add the `predict` and `export` subcommands to the CLI's subparsers."""
    p = sub.add_parser("predict", help="predict with a run's model artifact")
    p.add_argument("artifact", help="the artifact: its folder, model.json or model.npz")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="raw feature rows: FILE.csv or FILE.npz")
    source.add_argument("--text", help="text model: the context to score (or to continue)")
    p.add_argument("--generate", type=int, metavar="N", help="with --text: sample N characters")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--top", type=int, default=5, help="with --text: most likely characters shown")
    p.add_argument("--json", action="store_true", help="one JSON object instead of CSV")
    p = sub.add_parser("export", help="export a run's model artifact (ONNX)")
    p.add_argument("artifact", help="the artifact: its folder, model.json or model.npz")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="where to write the file")


def main(args: argparse.Namespace) -> int:
    from thunderhelm.ga.training.artifact import ArtifactError, load_model

    try:
        model = load_model(args.artifact)
        if args.command == "export":
            from thunderhelm.ga.training.onnx_export import export_onnx

            print(export_onnx(model, Path(args.onnx)))
            return 0
        if args.text is not None:
            return _text(model, args)
        if args.generate is not None:
            raise ValueError("--generate needs --text")
        x, y = read_inputs(Path(args.input), model.n_features, model.labels)
        _rows(model, x, y, args.json)
        return 0
    except (ArtifactError, ValueError, OSError) as exc:
        print(f"thunderhelm {args.command}: {exc}", file=sys.stderr)
        return 2


def read_inputs(path: Path, n_features: int, labels: tuple[str, ...]) -> tuple[Any, Any]:
    """Raw rows `x` and, when the file has them, class indices `y` (else None)."""
    import numpy as np

    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive:
                raise ValueError(f"{path.name}: the archive needs an array 'x'")
            x = np.asarray(archive["x"], dtype=np.float64)
            y = np.asarray(archive["y"], dtype=np.int64) if "y" in archive else None
        if x.ndim == 1:
            x = x[None, :]
        if y is not None and (y.shape != (len(x),) or y.min() < 0 or y.max() >= len(labels)):
            raise ValueError(f"{path.name}: 'y' must hold one class index per row")
        return x, y
    if path.suffix.lower() != ".csv":
        raise ValueError(f"{path.name}: --input must be a .csv or .npz file")
    from thunderhelm.ga.training.datasets import numeric_cells

    with path.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if rows and not numeric_cells(rows[0][:n_features]):
        rows = rows[1:]  # a header row
    if not rows:
        raise ValueError(f"{path.name}: no rows")
    width = len(rows[0])
    if width not in (n_features, n_features + 1) or any(len(r) != width for r in rows):
        raise ValueError(
            f"{path.name}: every row needs {n_features} features (and optionally a label)"
        )
    x = np.array([[float(c) for c in r[:n_features]] for r in rows], dtype=np.float64)
    if width == n_features:
        return x, None
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({r[-1].strip() for r in rows} - set(index))
    if unknown:
        raise ValueError(f"{path.name}: labels the model does not know: {unknown[:5]}")
    return x, np.array([index[r[-1].strip()] for r in rows], dtype=np.int64)


def _rows(model: Any, x: Any, y: Any, as_json: bool) -> None:
    proba = model.predict_proba(x)
    predicted = proba.argmax(axis=1)
    accuracy = None if y is None else float((predicted == y).mean())
    if as_json:
        out: dict[str, Any] = {
            "rows": len(predicted),
            "labels": list(model.labels),
            "predictions": [model.labels[i] for i in predicted],
            "probabilities": [[round(float(p), 7) for p in row] for row in proba],
        }
        if accuracy is not None:
            out["accuracy"] = accuracy
        print(json.dumps(out))
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "prediction", "probability"])
    for row, (i, p) in enumerate(zip(predicted, proba, strict=True)):
        writer.writerow([row, model.labels[i], f"{float(p[i]):.6f}"])
    sys.stdout.write(buffer.getvalue())
    if accuracy is not None:
        print(f"accuracy {accuracy:.6f} on {len(predicted)} labelled rows", file=sys.stderr)


def _text(model: Any, args: argparse.Namespace) -> int:
    if args.generate is not None:
        if args.generate < 0:
            raise ValueError("--generate must be >= 0")
        text = model.generate(
            args.text, args.generate, seed=args.seed, temperature=args.temperature
        )
        print(json.dumps({"context": args.text, "generated": text}) if args.json else text)
        return 0
    proba = model.next_char_proba(args.text)
    top = sorted(proba.items(), key=lambda kv: -kv[1])[: max(1, args.top)]
    if args.json:
        print(json.dumps({"context": args.text, "next": proba, "top": [c for c, _ in top]}))
    else:
        for char, p in top:
            print(f"{char!r}\t{p:.6f}")
    return 0
