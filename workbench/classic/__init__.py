"""The classic path: a multi-scale filter bank and a Random Forest pixel classifier (the baseline)."""

from workbench.classic._forest import (
    FEATURE_PRESETS,
    FEATURES,
    INSTANCE_CLASSES,
    ClassicInputError,
    ClassicTypeError,
    FeatureBank,
    FeatureCache,
    FeatureSettings,
    ForestModel,
    ForestSettings,
    LivePreview,
    PercentileNormalizer,
    available_features,
    make_feature_bank,
    predict_image,
)

__all__ = [
    "FEATURE_PRESETS",
    "FEATURES",
    "INSTANCE_CLASSES",
    "ClassicInputError",
    "ClassicTypeError",
    "FeatureBank",
    "FeatureCache",
    "FeatureSettings",
    "ForestModel",
    "ForestSettings",
    "LivePreview",
    "PercentileNormalizer",
    "available_features",
    "make_feature_bank",
    "predict_image",
]
