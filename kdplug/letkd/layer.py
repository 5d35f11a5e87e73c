"""The KD layer of letKD (Görgün, Gürbüz and Alatan, "Knowledge Distillation Layer that Lets the Student Decide",
BMVC 2023, arXiv:2309.02843; Fig. 2 of the paper, section 2.2 of its supplement), torch only.

The **student-side module**: inserted into the student at a stage (``kdplug.BackboneWithModules``), it stays there
at inference::

    a     = s1 * cos(x, w1_k)                 normalised 1x1 conv (input and kernels l2-normalised), K outputs,
                                              learnable scale s1: the student's assignment logits
    p_hat = ReLU(BN(a))                       BN-ReLU, the "soft maximiser" of the appendix
    x_hat = x + alpha * s2 * conv(p_hat, w2)  normalised 1x1 conv back to the C channels of x (kernels
                                              l2-normalised), learnable scale s2, added to the student feature

The student's prediction of the teacher's assignment is ``p_S = softmax(a)`` over the K channels, at every spatial
position (Alg. 3 returns ``x_hat, p_S = KDLayer(x)``). ``a`` is kept (training mode only) as
``layer.assignment_logits`` for :class:`kdplug.letkd.loss.LetKDLoss`.

Choices where the supplement is silent (docs/letkd.md lists each with the supplement's words; the authors' code is
adagorgun/letKD-framework, commit 4fb2289):

* ``p_S`` is the softmax of the scaled cosine similarities ``a`` (before BN); BN-ReLU shapes only the feature that
  is added back.
* s1 starts at 10 (a softmax over thousands of cosines needs a range of ~10 to be peaked). The authors' configs start
  it at 3 (``'scale_cls': 3.0``, e.g. ``CIFAR100/resnetv1/RN56_RN20/letKD-2.py`` lines 94 and 105;
  ``init_scale=3.0`` reproduces it); s2 starts at 1, as theirs
  (``distillation/architectures/miscellaneous/valueLayer.py`` line 55).
* "The kernels are l2 normalised": for both convs each output kernel (one filter, over the input channels) has
  unit norm; the first conv also l2-normalises its input at every position (cosine similarity). The authors' second
  conv also l2-normalises its input (``Conv2dCos``, ``distillation/architectures/tools.py`` line 177); kdplug's
  does not, and has no option for it.
* ``alpha`` (the paper's alpha_inter / alpha_penult, Fig. 2) is a fixed factor of the layer's output.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdplug.losses.functional import check_hyperparameter


class NormConv1x1(nn.Module):
    """1x1 convolution with l2-normalised kernels (each output filter has unit norm) and a learnable scalar scale;
    with ``normalize_input`` the input is l2-normalised over channels at every position, so that the output is
    ``scale * cosine(input, kernel)``."""

    def __init__(self, in_channels: int, out_channels: int, normalize_input: bool, init_scale: float = 1.0,
                 eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1) / math.sqrt(in_channels))
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))
        self.normalize_input, self.eps = normalize_input, eps

    def forward(self, x: Tensor) -> Tensor:
        if self.normalize_input:
            x = F.normalize(x, dim=1, eps=self.eps)
        weight = F.normalize(self.weight, dim=1, eps=self.eps)  # dim 1 = the input channels of each filter
        return self.scale * F.conv2d(x, weight)

    def extra_repr(self) -> str:
        return (f'{self.weight.shape[1]}, {self.weight.shape[0]}, normalize_input={self.normalize_input}')


class LetKDLayer(nn.Module):
    """The KD layer of letKD: ``x -> x + alpha * NormConv(ReLU(BN(NormConv_cos(x))))``, same shape as ``x``.

    Args:
        in_channels: channels C of the student feature it is inserted on.
        num_codewords: K, the size of the assignment it predicts: the number of k-means codewords at the
            penultimate level (4096 in the paper), C_classes * K_inter (e.g. 100 * 8) at the intermediate level.
        alpha: the paper's alpha_penult / alpha_inter, the factor of the layer's output (1 in the paper;
            0 removes the feature transform, Table 5).
        init_scale: initial learnable scale of the first (cosine) conv, i.e. of the assignment logits.

    ``assignment_logits`` (N, K, H, W): the logits of the student's assignment from the last forward in training
    mode (None in eval mode); :class:`kdplug.letkd.loss.LetKDLoss` consumes it. Works on any (N, C, H, W) feature.
    """

    def __init__(self, in_channels: int, num_codewords: int, alpha: float = 1.0, init_scale: float = 10.0) -> None:
        super().__init__()
        counts = {'in_channels': in_channels, 'num_codewords': num_codewords}
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in counts.values()):
            raise ValueError(f'LetKDLayer: in_channels and num_codewords must be whole numbers >= 1, got {counts}')
        alpha = check_hyperparameter('LetKDLayer: alpha', alpha)
        init_scale = check_hyperparameter('LetKDLayer: init_scale', init_scale, strict=True)
        self.in_channels, self.num_codewords, self.alpha = in_channels, num_codewords, alpha
        self.assign = NormConv1x1(in_channels, num_codewords, normalize_input=True, init_scale=init_scale)
        self.bn = nn.BatchNorm2d(num_codewords)
        self.embed = NormConv1x1(num_codewords, in_channels, normalize_input=False, init_scale=1.0)
        self.assignment_logits: Optional[Tensor] = None

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'LetKDLayer(in_channels={self.in_channels}) got a feature of shape {tuple(x.shape)}: '
                             'set in_channels to the channels of the stage it is inserted on')
        logits = self.assign(x)
        self.assignment_logits = logits if self.training else None
        return x + self.alpha * self.embed(F.relu(self.bn(logits)))

    def __getstate__(self):
        # the cached logits are part of an autograd graph: copies and pickles of the layer (EMA models, deepcopy)
        # start without them
        state = super().__getstate__()
        return {**state, 'assignment_logits': None}

    def extra_repr(self) -> str:
        return f'alpha={self.alpha}'
