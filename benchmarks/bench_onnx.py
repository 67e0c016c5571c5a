"""CPU prediction throughput: torch versus ONNX Runtime, same model, same tiles.

The default U-Net preset ('fast', weights from seed 0: speed does not depend on the values),
with the percentile normalisation fitted on the real nuclei image, predicts the nuclei image
tiled 2 x 2 (1024 x 1024) through `workbench.predict.predict_tiled` (256-pixel tiles, 25 %
overlap, batches of 8). Only the predictor callable differs: `workbench.deep.TorchPredictor`
or `workbench.exchange.OnnxPredictor` on the ONNX file `workbench.exchange.export_onnx` wrote.
Each backend runs once to warm up, then the best of ``--repeats`` runs is reported, with the
largest probability difference between the two.

Run alone, not niced (niceness distorts the timing): ``python -m benchmarks.bench_onnx``.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import NUCLEI_DIR

NUCLEI = NUCLEI_DIR / "image.tif"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024, help="image edge in pixels (the nuclei image tiled)")
    args = parser.parse_args(argv)

    import onnxruntime
    import tifffile
    import torch

    from workbench.deep import ModelCard, build_unet, configure_cpu_threads, make_predictor
    from workbench.normalize import fit_normalizer
    from workbench.exchange import OnnxPredictor, export_onnx
    from workbench.predict import predict_tiled

    threads = configure_cpu_threads()
    nuclei = tifffile.imread(NUCLEI)
    reps = -(-args.size // nuclei.shape[0])
    image = np.tile(nuclei, (reps, reps))[None, : args.size, : args.size]
    torch.manual_seed(0)
    model = build_unet(1, 3).eval()
    card = ModelCard(in_channels=1, n_classes=3, normalisation=fit_normalizer([image]).to_dict())
    backends = {"torch": make_predictor(model, card, device="cpu", batch_size=8)}
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = export_onnx(model, card, Path(scratch) / "model.onnx")
        backends["onnxruntime"] = OnnxPredictor(onnx_path, card, batch_size=8, n_threads=threads)
        results, outputs = {}, {}
        for name, predictor in backends.items():
            predict_tiled(image, predictor, 3, tile_size=256, overlap=0.25)  # warm-up
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                outputs[name] = predict_tiled(image, predictor, 3, tile_size=256, overlap=0.25)
                times.append(time.perf_counter() - start)
            results[name] = min(times)
    megapixels = image.shape[-1] * image.shape[-2] / 1e6
    diff = float(np.abs(outputs["torch"] - outputs["onnxruntime"]).max())
    print(f"image {image.shape[-2]} x {image.shape[-1]} ({megapixels:.2f} MP), tiles 256, overlap 0.25, batch 8, "
          f"{threads} threads; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"{platform.processor() or platform.machine()}")
    print("| backend | best seconds | MP/s | speed ÷ torch |")
    print("|---|---|---|---|")
    for name, seconds in results.items():
        print(f"| {name} | {seconds:.2f} | {megapixels / seconds:.2f} | {results['torch'] / seconds:.2f} |")
    print(f"largest probability difference torch vs onnxruntime: {diff:.2e}")


if __name__ == "__main__":
    main()
