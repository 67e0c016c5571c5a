"""The deep path: scaled-down U-Nets, the shipped starter model, augmentation, the trainer and its
callbacks, device choice.

`PercentileNormalizer` and `fit_normalizer` are re-exported from `workbench.normalize`, the one
normaliser both paths share.
"""

from workbench.deep._models import (
    PRESETS,
    DEFAULT_PRESET,
    MODEL_CLASSES,
    ModelCard,
    build_unet,
    unet_architecture,
    save_model,
    load_model,
    check_model_fits,
    make_predictor,
    output_probabilities,
    TorchPredictor,
    WEIGHTS_FILENAME,
    CARD_FILENAME,
)
from workbench.deep._train import (
    TrainSettings,
    TrainResult,
    Trainer,
    train,
    masked_loss,
    INSTANCE_CLASSES,
)
from workbench.deep._augment import (
    Augmenter,
    build_pipeline,
    IntensityJitter,
    GaussianNoiseAnyRange,
    GaussianBlurAnyChannels,
)
from workbench.deep._callbacks import (
    Callback,
    CallbackList,
    HistoryCallback,
    TqdmProgress,
    ProgressFunctionCallback,
)
from workbench.deep._device import (
    pick_device,
    configure_cpu_threads,
    available_devices,
)
from workbench.deep._validation import (
    InstanceCalibration,
    calibrate_instances,
    calibrate_on_objects,
)
from workbench.deep._starter import (
    STARTER_DIR,
    STARTER_INFO_FILENAME,
    starter_dir,
    starter_info,
    starter_input,
    starter_fits,
    init_from_model,
    sha256_file,
)
from workbench.normalize import (
    PercentileNormalizer,
    fit_normalizer,
)

__all__ = [
    "PRESETS",
    "DEFAULT_PRESET",
    "MODEL_CLASSES",
    "ModelCard",
    "build_unet",
    "unet_architecture",
    "save_model",
    "load_model",
    "check_model_fits",
    "make_predictor",
    "output_probabilities",
    "TorchPredictor",
    "WEIGHTS_FILENAME",
    "CARD_FILENAME",
    "TrainSettings",
    "TrainResult",
    "Trainer",
    "train",
    "masked_loss",
    "INSTANCE_CLASSES",
    "Augmenter",
    "build_pipeline",
    "IntensityJitter",
    "GaussianNoiseAnyRange",
    "GaussianBlurAnyChannels",
    "Callback",
    "CallbackList",
    "HistoryCallback",
    "TqdmProgress",
    "ProgressFunctionCallback",
    "pick_device",
    "configure_cpu_threads",
    "available_devices",
    "PercentileNormalizer",
    "fit_normalizer",
    "InstanceCalibration",
    "calibrate_instances",
    "calibrate_on_objects",
    "STARTER_DIR",
    "STARTER_INFO_FILENAME",
    "starter_dir",
    "starter_info",
    "starter_input",
    "starter_fits",
    "init_from_model",
    "sha256_file",
]
