"""Multi-teacher distillation into the VER model: teachers, shards, translators, losses, trainer."""

from ver_core.distill.dense_teachers import SimDepthTeacher, SimSegmentationTeacher
from ver_core.distill.losses import distillation_objective, feature_loss, mutual_information_loss
from ver_core.distill.shards import ShardDataset, ShardError, read_manifest
from ver_core.distill.teachers import (
    TEACHERS,
    EfficientNetLite0Teacher,
    HFTeacher,
    Teacher,
    TeacherError,
    build_teacher,
    register_teacher,
)
from ver_core.distill.translators import FeatureTranslator, build_translators

__all__ = [
    "TEACHERS",
    "EfficientNetLite0Teacher",
    "FeatureTranslator",
    "HFTeacher",
    "ShardDataset",
    "ShardError",
    "SimDepthTeacher",
    "SimSegmentationTeacher",
    "Teacher",
    "TeacherError",
    "build_teacher",
    "build_translators",
    "distillation_objective",
    "feature_loss",
    "mutual_information_loss",
    "read_manifest",
    "register_teacher",
]
