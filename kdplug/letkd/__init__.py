"""letKD: Görgün, Gürbüz and Alatan, "Knowledge Distillation Layer that Lets the Student Decide" (BMVC 2023,
arXiv:2309.02843), from its supplementary material (the "supplement"); docs/letkd.md is the user's guide.

One concept per module:

* :mod:`kdplug.letkd.layer`: :class:`~kdplug.letkd.layer.LetKDLayer`, the KD layer inserted into the student
  (``kdplug.BackboneWithModules``), which stays there at inference;
* :mod:`kdplug.letkd.loss`: :class:`~kdplug.letkd.loss.LetKDLoss`, the teacher's soft assignment ``p_T`` of its
  features to the codewords and the KL that trains the layer (a student-module loss of ``kdplug.Distiller``);
* :mod:`kdplug.letkd.codewords`: the codeword geometry (nearest codewords, k-means, LDA, sub-class prototypes and
  their scores), torch only;
* :mod:`kdplug.letkd.fitting`: the teacher's features over a training set, through the distiller's task, and the fit
  of every letKD loss's codewords (``tools/fit_codewords.py`` / ``kdplug-fit-codewords`` is its command line);
* :mod:`kdplug.letkd.io`: the codewords file, written with ``torch.save`` and read with ``weights_only=True``;
* :mod:`kdplug.letkd.plugin`: the ``kdplug_student_modules`` hook that contributes the layer and the loss.

Nothing is imported or registered when this package is imported: the registry loads :mod:`kdplug.letkd.plugin`.
"""
