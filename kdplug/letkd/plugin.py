"""letKD's plugin (Görgün, Gürbüz and Alatan, "Knowledge Distillation Layer that Lets the Student Decide", BMVC 2023,
arXiv:2309.02843): its layer, inserted into the student, and the losses that train it against the teacher's codewords,
contributed through ``kdplug_student_modules`` (a builtin plugin of :data:`kdplug.plugins.BUILTIN_PLUGINS`)."""
from typing import List

from kdplug import hookimpl


@hookimpl
def kdplug_student_modules() -> List[type]:
    from kdplug.letkd.layer import LetKDLayer
    from kdplug.letkd.loss import LetKDIntermediateLoss, LetKDPenultimateLoss
    return [LetKDLayer, LetKDPenultimateLoss, LetKDIntermediateLoss]
