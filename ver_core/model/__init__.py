"""VER model: a ViT with a Vision Expert Library in its last blocks."""

from ver_core.model.config import RouterSpec, VERConfig
from ver_core.model.experts import ExpertLibraryLayer, Router, RouterSet, RoutingInfo, top_k_gating
from ver_core.model.info import ParameterReport, parameter_report
from ver_core.model.io import load_library, read_library_config, save_library
from ver_core.model.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess_images
from ver_core.model.registry import MODEL_SIZES, build_model, model_config
from ver_core.model.vit import LibraryOutput, VisionExpertTransformer

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODEL_SIZES",
    "ExpertLibraryLayer",
    "LibraryOutput",
    "ParameterReport",
    "Router",
    "RouterSet",
    "RouterSpec",
    "RoutingInfo",
    "VERConfig",
    "VisionExpertTransformer",
    "build_model",
    "load_library",
    "model_config",
    "parameter_report",
    "preprocess_images",
    "read_library_config",
    "save_library",
    "top_k_gating",
]
