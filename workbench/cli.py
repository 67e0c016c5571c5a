"""The `workbench` command: everything the widgets do, from a terminal or a script.

User mistakes (a missing file, a wrong option, bad labels, a damaged project) print one line
starting with ``error:`` and exit with code 2; no traceback (``--debug`` shows it). A failure
that is the workbench's own fault also prints one line, and exits with code 1. SIGTERM stops a
command as Ctrl-C does, so its temporary files are removed. Long steps show a progress bar on stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import traceback
from pathlib import Path

from workbench.conventions import METHODS, MODES, OUTPUT_SUFFIXES
from workbench.errors import WorkbenchError

__all__ = ["main", "build_parser"]

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
EXIT_INTERRUPTED = 130


def _classes(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if len(names) < 2:
        raise argparse.ArgumentTypeError(f"give at least two comma-separated classes, e.g. background,nucleus; got {text!r}")
    return names


def _boundary_width(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        width = int(text)
    except ValueError:
        width = 0
    if width < 1:
        raise argparse.ArgumentTypeError(f"give a whole number of pixels (at least 1) or 'auto'; got {text!r}")
    return width


def _weights(text: str) -> str:
    # "none" stays a string so that "not given" (the preset's default) differs from "no weights".
    return "none" if text.lower() == "none" else text


def _model_version(text: str | None) -> int | str | None:
    """--model: a version number or "starter" (checked in the command, so a mistake is one error line)."""
    if text is None or text.strip().lower() == "starter":
        return None if text is None else "starter"
    try:
        return int(text)
    except ValueError:
        raise WorkbenchError(f"--model takes a model version number (see `workbench info`) or 'starter'; "
                             f"got {text!r}") from None


def _pixel_size(text: str) -> tuple[float, float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"pixel size must be numbers in µm, e.g. 0.65 or 0.65,0.65; got {text!r}")
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"pixel size must be one or two positive numbers (y,x); got {text!r}")
    return tuple(values)


def _voxel_size(text: str) -> tuple[float, float, float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"voxel size must be numbers in µm, e.g. 2,0.5,0.5 (z,y,x); got {text!r}")
    if len(values) != 3 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"voxel size must be three positive numbers z,y,x in µm; got {text!r}")
    return tuple(values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="Microscopy segmentation workbench: projects, partial labels, U-Net or Random Forest "
                    "training, tiled prediction, instances and measurements.",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("new", help="create a project folder")
    p.add_argument("dir", type=Path, help="project folder to create")
    p.add_argument("--mode", choices=MODES, default="semantic",
                   help="semantic: one class per pixel; instance: separate touching objects (default: semantic)")
    p.add_argument("--classes", type=_classes, default=["background", "foreground"],
                   help="comma-separated class names, background first (default: background,foreground)")
    p.add_argument("--boundary-width", type=_boundary_width, default="auto",
                   help="width in pixels of the automatic boundary class in instance mode, or 'auto': "
                        "from the size of the painted objects, 1 to 4 px (default: auto)")
    p.add_argument("--boundaries", choices=["3d", "per-plane"], default="3d",
                   help="z-stacks: objects as volumes with boundaries derived in 3-D (default), or each "
                        "plane on its own (for stacks of separate sections)")
    p.add_argument("--voxel-size", type=_voxel_size,
                   help="voxel size z,y,x in µm for z-stacks whose files do not say (e.g. 2,0.5,0.5)")

    p = sub.add_parser("add", help="add images to a project (TIFF/OME-TIFF, PNG/JPEG, Zarr/OME-Zarr, .npy, .czi, .nd2, .lif)")
    p.add_argument("dir", type=Path, help="project folder")
    p.add_argument("images", type=Path, nargs="+", help="image files or Zarr folders")
    p.add_argument("--axes", help="axis letters of the files when they do not say, e.g. ZCYX or YXC")
    p.add_argument("--pixel-size", type=_pixel_size, help="pixel size in µm (y,x or one number)")
    p.add_argument("--voxel-size", type=_voxel_size,
                   help="voxel size of z-stacks, z,y,x in µm (overrides the file's metadata)")

    p = sub.add_parser("labels", help="import labels for an image of the project")
    p.add_argument("dir", type=Path, help="project folder")
    p.add_argument("image", help="image name in the project (see `workbench info`)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="from_file", type=Path,
                        help="label image: 0 = not annotated, 1 = background, 2.. = classes")
    source.add_argument("--instances", type=Path, help="instance mask: 0 = background, 1.. = objects")
    p.add_argument("--z", type=int, help="z-slice of a z-stack the labels belong to")

    p = sub.add_parser("train", help="train a model on the project's labels")
    p.add_argument("dir", type=Path, help="project folder")
    p.add_argument("--method", choices=METHODS, default="unet",
                   help="unet: deep learning (default); forest: filter features + Random Forest")
    p.add_argument("--minutes", type=float, help="training time budget in minutes (U-Net)")
    p.add_argument("--epochs", type=int, help="number of epochs (U-Net; with --minutes, whichever ends first)")
    p.add_argument("--encoder", help="U-Net encoder / preset name (default: the fast CPU preset)")
    p.add_argument("--weights", type=_weights,
                   help="where a new U-Net starts: 'starter' (the model shipped with the workbench, pretrained "
                        "on generated images; the default for instance projects), 'imagenet' (encoder, "
                        "downloads), a local encoder weights file or saved model folder, or 'none' (random)")
    p.add_argument("--resume", action="store_true", help="continue from the project's last model of this method")
    p.add_argument("--augment", type=float, help="augmentation strength 0 (none) .. 1 (strong)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", help="cpu, cuda or mps (default: the fastest available)")

    p = sub.add_parser("predict", help="segment project images or image files of any size, tile by tile",
                       description="Segment project images (into the project), one image file (--out FILE), "
                                   "or many images / huge images block by block into a folder of OME-Zarr "
                                   "images and measurement tables (--out DIR), on dask when asked.")
    p.add_argument("dir", type=Path, help="project folder")
    p.add_argument("images", nargs="*", metavar="INPUT",
                   help="image names in the project or image files / Zarr paths "
                        "(default: every image of the project, into the project)")
    p.add_argument("--out", type=Path, help="output label image (.tif or .zarr) for one input, or NAME.ome.zarr: "
                                            "the image with its labels (2-D or z-stack, with the pixel or voxel "
                                            "size); or a folder: NAME.ome.zarr (image, labels, probabilities) and "
                                            "NAME.csv per input")
    p.add_argument("--probabilities", type=Path, nargs="?", const=True, metavar="FILE",
                   help="also write class probabilities, and a U-Net's distance map after them (.tif or .zarr; "
                        "one input); with no FILE, into the "
                        "--out NAME.ome.zarr container")
    p.add_argument("--model",
                   help="model version (default: the latest), or 'starter': the model shipped with the workbench, "
                        "no labels needed (instance projects)")
    p.add_argument("--tile-size", type=int, default=256, help="tile edge in pixels (default: 256)")
    p.add_argument("--overlap", type=float, default=0.25, help="tile overlap fraction (default: 0.25)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time augmentation: average the 8 flips and rotations (default: on for U-Nets, off for forests)")
    p.add_argument("--device", help="cpu, cuda or mps (default: the fastest available)")
    p.add_argument("--scheduler", help="folder output: sync (this process), local:N (N worker processes here) "
                                       "or tcp://HOST:PORT (a running dask cluster); default: this process for "
                                       "small jobs, one worker per core for big ones")
    p.add_argument("--block-size", type=int, default=1024,
                   help="folder output: block edge in pixels, the unit of work and of resuming (default: 1024)")
    p.add_argument("--halo", type=int, help="folder output: context around a block in pixels, at least the "
                                            "largest object (default: from the painted objects)")
    p.add_argument("--table-format", choices=["csv", "parquet"], default="csv",
                   help="folder output: measurements table format (default: csv)")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="U-Net runtime: torch (any device, default) or onnx (ONNX Runtime on the CPU, faster there)")

    p = sub.add_parser("export-model", help="export a U-Net as a bioimage.io package, ONNX or TorchScript file")
    p.add_argument("dir", type=Path, help="project folder")
    p.add_argument("--out", type=Path, required=True,
                   help="file to write: model.zip (bioimage.io), model.onnx or model.pt (TorchScript)")
    p.add_argument("--version", type=int, help="model version (default: the latest U-Net)")
    p.add_argument("--format", choices=["bioimageio", "onnx", "torchscript"],
                   help="export format (default: from the --out suffix)")
    p.add_argument("--author", action="append", help="author name for the bioimage.io package (repeatable)")
    p.add_argument("--license", help="SPDX licence of the bioimage.io package (default: CC-BY-4.0)")
    p.add_argument("--name", help="model name in the bioimage.io package")

    p = sub.add_parser("measure", help="per-object measurements of the predicted instances")
    p.add_argument("dir", type=Path, help="project folder")
    p.add_argument("--out", type=Path, required=True, help="table file (.csv or .parquet)")
    p.add_argument("--image", action="append", help="only these project images (repeatable)")

    p = sub.add_parser("info", help="show a project's images, labels and models")
    p.add_argument("dir", type=Path, help="project folder")

    p = sub.add_parser("remove", help="remove an image (with its labels and predictions) from a project")
    p.add_argument("dir", type=Path, help="project folder")
    p.add_argument("image", nargs="+", help="image name(s) in the project (see `workbench info`)")

    p = sub.add_parser("pretrain", help="pretrain a starter U-Net on generated images (the model --weights starter uses)",
                       description="Pretrain a U-Net on a stream of generated images of many kinds (fluorescence "
                                   "nuclei, cytoplasm and membrane stains, brightfield, phase contrast, H&E-like "
                                   "tissue) and write a model folder with its starter card (starter.json). "
                                   "Deterministic under --seed with --steps and no --minutes on the CPU (same WORKBENCH_THREADS).")
    p.add_argument("out", type=Path, help="model folder to write (new or empty; --force replaces a model)")
    p.add_argument("--minutes", type=float, help="time budget in minutes (default: 60, unless --steps is given)")
    p.add_argument("--steps", type=int, help="optimiser steps in all (with --minutes, whichever ends first)")
    p.add_argument("--preset", default="fast", help="U-Net preset (default: fast, the preset the app trains)")
    p.add_argument("--device", default="auto", help="cpu, cuda or mps (default: the fastest available)")
    p.add_argument("--seed", type=int, default=0, help="random seed of images, weights and sampling (default: 0)")
    p.add_argument("--pool-size", type=int, default=24, help="generated images per pool (default: 24)")
    p.add_argument("--pool-steps", type=int, default=200,
                   help="optimiser steps on one pool before fresh images are drawn (default: 200)")
    p.add_argument("--image-size", type=int, default=256, help="side of the generated images (default: 256)")
    p.add_argument("--distance", action="store_true",
                   help="also learn the distance-to-edge output fine-tuned U-Nets learn (the shipped starter has none)")
    p.add_argument("--force", action="store_true", help="replace the model already in OUT")

    p = sub.add_parser("demo", help="build the sample project, train, predict, write an overlay and a table")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder (default: demo-output)")
    p.add_argument("--minutes", type=float, default=2.0, help="training time in minutes (default: 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--force", action="store_true",
                   help="replace the demo's own outputs in a non-empty --out folder (nothing else is touched)")
    return parser


def _progress_bar(desc: str):
    """A progress(fraction, message) callable drawing a bar on stderr (see `workbench.progress`)."""
    from workbench.progress import ProgressBar

    return ProgressBar(desc)


def _cmd_new(args) -> None:
    from workbench.store import Project

    project = Project.create(args.dir, mode=args.mode, classes=args.classes, boundary_width=args.boundary_width)
    settings = {"boundaries": args.boundaries}
    if args.voxel_size:
        settings["voxel_size"] = list(args.voxel_size)
    project.update_settings(**settings)
    print(f"created {args.mode} project {project.path} with classes {', '.join(project.class_names)}")


def _cmd_add(args) -> None:
    from workbench.store import Project

    project = Project.open(args.dir)
    for image in args.images:
        bar = _progress_bar(f"adding {image.name}")
        try:
            pixel_size = args.voxel_size[1:] if args.voxel_size else args.pixel_size
            z_spacing = args.voxel_size[0] if args.voxel_size else None
            name = project.add_image(image, axes=args.axes, pixel_size=pixel_size, z_spacing=z_spacing,
                                     progress=bar)
        finally:
            bar.close()
        info = project.image_info(name)
        print(f"added {name}: axes {info.axes}, shape {tuple(info.shape)}, {info.dtype}")


def _cmd_labels(args) -> None:
    from workbench.store import Project

    project = Project.open(args.dir)
    path = args.instances or args.from_file
    project.import_labels(args.image, path, instances=args.instances is not None, z=args.z)
    stats = project.label_stats(args.image)
    pixels = ", ".join(f"{k}: {v}" for k, v in stats["pixels"].items())
    objects = f", {stats['objects']} objects" if "objects" in stats else ""
    print(f"labels of {args.image}: {pixels}{objects} ({100 * stats['annotated_fraction']:.1f}% annotated)")


UNET_ONLY = ("minutes", "epochs", "encoder", "weights", "augment", "device")


def _cmd_train(args) -> None:
    from workbench import pipeline
    from workbench.store import Project

    project = Project.open(args.dir)
    if args.minutes is not None and not args.minutes > 0:
        raise WorkbenchError(f"--minutes must be a positive number of minutes, got {args.minutes}")
    if args.epochs is not None and args.epochs < 1:
        raise WorkbenchError(f"--epochs must be at least 1, got {args.epochs}")
    if args.method == "forest":
        given = [f"--{name}" for name in UNET_ONLY if getattr(args, name) is not None]
        if given:
            raise WorkbenchError(
                f"{', '.join(given)} only apply to --method unet; a Random Forest trains until it is done "
                "(in seconds): leave them out"
            )
        settings = {"seed": args.seed}
    else:
        settings = {k: v for k, v in {
            "minutes": args.minutes, "epochs": args.epochs, "encoder": args.encoder, "weights": args.weights,
            "augment": args.augment, "seed": args.seed, "device": args.device,
        }.items() if v is not None}
        if args.encoder is not None:
            from workbench.deep import PRESETS

            if args.encoder in PRESETS:  # a preset name chooses the whole recipe, not just the encoder
                settings["preset"] = settings.pop("encoder")
    record = pipeline.train_model(project, method=args.method, resume=args.resume, settings=settings,
                                  progress=True)
    summary = record.metrics.get("summary")
    metrics = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in record.metrics.items()
                        if not isinstance(v, (list, dict)) and k not in ("summary", "hint"))
    print(f"model version {record.version} ({record.method}) saved in {project.path / record.path}: {metrics}")
    if summary:
        print(summary)


def _is_batch(args) -> bool:
    """A folder --out, several inputs or a dask option: the blockwise batch engine."""
    if len(args.images) > 1 or args.scheduler or args.halo is not None or args.block_size != 1024:
        return True
    if args.out is None or args.out.name.lower().endswith(OUTPUT_SUFFIXES):
        return False
    # A name with another suffix (x.jpg) is a mistaken file name, which the single-output path
    # refuses with the list of suffixes; a folder has no suffix or already exists as one.
    return args.out.suffix == "" or (args.out.is_dir() and not args.out.name.lower().endswith(".zarr"))


def _cmd_predict_batch(args, project) -> None:
    from workbench.batch import BatchSettings, predict_batch

    if args.out is None:
        raise WorkbenchError("give --out DIR: the folder that receives NAME.ome.zarr and NAME.csv per input")
    if args.probabilities:
        raise WorkbenchError("--probabilities is for one output file; a folder output holds the probabilities "
                             "inside each NAME.ome.zarr")
    if args.out.name.lower().endswith(OUTPUT_SUFFIXES):
        raise WorkbenchError(f"--out {args.out} names a file, but this run writes a folder (several inputs or "
                             "dask options); give a folder such as --out results/")
    from dataclasses import replace

    from workbench import pipeline

    settings = BatchSettings(block_size=args.block_size, halo=args.halo, tile_size=args.tile_size,
                             overlap=args.overlap, tta=args.tta, device=args.device, backend=args.backend,
                             table_format=args.table_format)
    # Options checked first: "--model starter" registers the starter in the project only then.
    settings = replace(settings, model_version=pipeline.resolve_model_version(project, args.model))
    bar = _progress_bar("predicting")
    try:
        results = predict_batch(project, args.images or project.image_names, args.out, settings=settings,
                                scheduler=args.scheduler, progress=bar)
    finally:
        bar.close()
    for result in results:
        print(result.line())


def _cmd_predict(args) -> None:
    from workbench import pipeline
    from workbench.store import Project

    args.model = _model_version(args.model)
    project = Project.open(args.dir)
    if _is_batch(args):
        _cmd_predict_batch(args, project)
        return
    image = args.images[0] if args.images else None
    options = dict(model_version=args.model, tile_size=args.tile_size, overlap=args.overlap, tta=args.tta,
                   device=args.device, backend=args.backend)
    pipeline._check_tile_size(args.tile_size)
    if not 0 <= args.overlap < 1:
        raise WorkbenchError(f"--overlap is a fraction of the tile from 0 to below 1 (e.g. 0.25), got {args.overlap}")
    label_dtype = "int32" if project.mode == "instance" else "uint8"
    if args.probabilities and not args.out:
        raise WorkbenchError("--probabilities goes with --out; give the label output file too")
    if args.out:  # before any work, so a wrong name never costs a prediction (or the stored one)
        pipeline._check_outputs(args.out, args.probabilities, label_dtype=label_dtype)
    if image is None or image in project.image_names:
        names = [image] if image else project.image_names
        if args.out and len(names) != 1:
            raise WorkbenchError("--out writes one image: name the project image to export")
        if not names:
            raise WorkbenchError(f"project {project.path} has no images yet; add some with `workbench add`")
        bar = _progress_bar("predicting")
        try:
            summary = pipeline.predict_project(project, names=names, progress=bar, **options)
        finally:
            bar.close()
        for name, info in summary.items():
            notes = info.pop("warnings", [])
            print(f"{name}: {info}")
            for note in notes:
                print(f"warning: {name}: {note}")
        if args.out:
            pipeline.export_prediction(project, names[0], args.out, probabilities=args.probabilities)
            print(f"wrote {args.out}")
        return
    if args.out is None:
        raise WorkbenchError(f"{image!r} is not an image of the project; to segment a file give --out FILE")
    bar = _progress_bar(f"predicting {Path(image).name}")
    try:
        info = pipeline.predict_file(project, image, args.out, probabilities=args.probabilities,
                                     progress=bar, **options)
    finally:
        bar.close()
    notes = info.pop("warnings", [])
    print(f"wrote {args.out}: {info}")
    for note in notes:
        print(f"warning: {Path(image).name}: {note}")


def _cmd_export_model(args) -> None:
    from workbench.exchange import export_model
    from workbench.store import Project

    project = Project.open(args.dir)
    result = export_model(project, args.out, version=args.version, format=args.format,
                          authors=args.author or ("workbench user",), license=args.license, name=args.name)
    print(f"wrote {result.path}: model version {result.model_version} as {result.format}")


def _cmd_measure(args) -> None:
    from workbench import pipeline
    from workbench.store import Project

    project = Project.open(args.dir)
    table = pipeline.measure_project(project, args.out, names=args.image)
    print(f"wrote {args.out}: {len(table)} objects from {table['image'].nunique() if len(table) else 0} image(s)")


def _cmd_info(args) -> None:
    from workbench.store import Project

    project = Project.open(args.dir)
    print(f"project {project.path} ({project.mode}; classes {', '.join(project.class_names)}; "
          f"boundary width {project.boundary_width}"
          f"{' (auto)' if project.boundary_width_setting == 'auto' else ''}; z-stacks: boundaries {project.boundaries})")
    for name in project.image_names:
        info = project.image_info(name)
        stats = project.label_stats(name, objects=False)  # from the chunks on disk: no whole image in memory
        predicted = "predicted" if project.prediction(name, "probabilities") is not None else "not predicted"
        voxel = ""
        if "Z" in info.axes:
            size = project.voxel_size(name)
            voxel = (f", voxel {' × '.join(f'{v:g}' for v in size)} µm (z × y × x)" if size
                     else ", voxel size unknown (taken as isotropic)")
        print(f"  image {name}: {info.axes} {tuple(info.shape)} {info.dtype}{voxel}, "
              f"{100 * stats['annotated_fraction']:.1f}% annotated, {predicted}")
    from workbench import pipeline

    for m in pipeline.model_records(project):
        print(f"  model v{m.version} {m.method} ({m.created}): "
              + ", ".join(f"{k} {v:.4g}" for k, v in m.metrics.to_dict().items() if isinstance(v, (int, float))))


def _cmd_remove(args) -> None:
    from workbench.store import Project

    project = Project.open(args.dir)
    for name in args.image:
        project.image_info(name)  # every name checked before anything is removed
    for name in args.image:
        project.remove_image(name)
        print(f"removed {name} (image, labels and predictions) from {project.path}")


def _cmd_pretrain(args) -> None:
    import shlex

    from workbench.pretrain import PretrainSettings, pretrain

    if args.minutes is not None and not args.minutes > 0:
        raise WorkbenchError(f"--minutes must be a positive number of minutes, got {args.minutes:g}")
    if args.steps is not None and args.steps < 1:
        raise WorkbenchError(f"--steps must be at least 1, got {args.steps}")
    minutes = args.minutes if args.minutes is not None or args.steps is not None else 60.0
    settings = PretrainSettings(minutes=minutes, steps=args.steps, preset=args.preset, device=args.device,
                                seed=args.seed, pool_size=args.pool_size, pool_steps=args.pool_steps,
                                image_size=args.image_size, distance=args.distance)
    command = shlex.join(["workbench", *getattr(args, "argv", ["pretrain", str(args.out)])])
    bar = _progress_bar("pretraining")
    try:
        result = pretrain(args.out, settings, command=command, force=args.force, progress=bar)
    finally:
        bar.close()
    info = result.info
    print(f"wrote {result.directory}: {result.steps} steps on {result.pools} pools of generated images in "
          f"{result.seconds / 60:.1f} min on {info['training']['device']} ({result.stop_reason}); "
          f"weights sha256 {info['weights_sha256']}")


def _cmd_demo(args) -> None:
    from workbench import pipeline

    pipeline.check_demo_target(args.out, minutes=args.minutes, force=args.force)
    result = pipeline.run_demo(args.out, minutes=args.minutes, seed=args.seed, force=args.force)
    print("demo finished:")
    for key, value in result.items():
        print(f"  {key}: {value}")


COMMANDS = {"new": _cmd_new, "add": _cmd_add, "labels": _cmd_labels, "train": _cmd_train,
            "predict": _cmd_predict, "export-model": _cmd_export_model, "measure": _cmd_measure, "info": _cmd_info,
            "remove": _cmd_remove, "pretrain": _cmd_pretrain, "demo": _cmd_demo}


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C: finally blocks remove temporary files


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    args.argv = [a for a in argv if a != "--debug"]  # the command as typed (pretrain records it in its card)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        COMMANDS[args.command](args)
    except WorkbenchError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; the project keeps its last saved state", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        if args.debug:
            traceback.print_exc()
        print("error: not enough memory for this step; use smaller images or tiles (--tile-size), "
              "or a machine with more memory", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # a bug of ours: still one line, the traceback on request
        if args.debug:
            traceback.print_exc()
        print(f"error: unexpected {type(exc).__name__}: {_one_line(exc)} (a workbench bug: rerun with --debug "
              "and report the traceback)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    return 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
