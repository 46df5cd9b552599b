"""Model components, one per module: teacher, fusion, attention, bottleneck, memory, decoder."""

from dhkd.models.attention import CoordinateAttention
from dhkd.models.bottleneck import OneClassBottleneck
from dhkd.models.decoder import Decoder, DecoderBottleneck
from dhkd.models.dhkd import DHKD, Student, build_model
from dhkd.models.fusion import MutualMappingFusion
from dhkd.models.memory import MemoryBank
from dhkd.models.teacher import TEACHER_CHANNELS, Teacher

__all__ = ["DHKD", "build_model", "Student", "Teacher", "TEACHER_CHANNELS", "MutualMappingFusion", "CoordinateAttention",
           "OneClassBottleneck", "MemoryBank", "Decoder", "DecoderBottleneck"]
