"""The method: DHKD's components as plain ``torch`` modules and functions, one concept per module.

Nothing here reads a configuration or knows about runs, files or the command line; each module
takes plain arguments (:mod:`dhkd.run.build` turns a configuration into them).

- :mod:`dhkd.method.teacher`       the frozen ImageNet encoder (strides 4, 8, 16)
- :mod:`dhkd.method.fusion`        mutual-mapping fusion of the teacher's scales (addition 1)
- :mod:`dhkd.method.attention`     coordinate attention (addition 2)
- :mod:`dhkd.method.bottleneck`    RD4AD's one-class bottleneck embedding (OCBE)
- :mod:`dhkd.method.memory`        the single-category memory bank (addition 3)
- :mod:`dhkd.method.decoder`       the student: RD4AD's reverse ResNet decoder
- :mod:`dhkd.method.initialisation` RD4AD's weight initialisation of bottleneck and decoder
- :mod:`dhkd.method.model`         the assembled student and DHKD
- :mod:`dhkd.method.loss`          the cosine distillation loss
- :mod:`dhkd.method.masking`       corruptions of the self-supervised masking stage (addition 4)
- :mod:`dhkd.method.anomaly_map`   per-scale 1 - cos maps, their sum, the blur and the image score
"""

from dhkd.method.attention import CoordinateAttention
from dhkd.method.bottleneck import OneClassBottleneck
from dhkd.method.decoder import Decoder, DecoderBottleneck
from dhkd.method.fusion import MutualMappingFusion
from dhkd.method.memory import MemoryBank
from dhkd.method.model import DHKD, Student
from dhkd.method.teacher import TEACHER_CHANNELS, Teacher, TeacherWeightsUnavailable

__all__ = ["DHKD", "Student", "Teacher", "TEACHER_CHANNELS", "TeacherWeightsUnavailable", "MutualMappingFusion",
           "CoordinateAttention", "OneClassBottleneck", "MemoryBank", "Decoder", "DecoderBottleneck"]
