"""kdplug's main command-line tools, inside the package so that an installed kdplug has them too:
``kdplug-train`` / ``python -m kdplug.tools.train``, ``kdplug-test``, ``kdplug-export-student``. The repository's
``tools/train.py``, ``tools/test.py`` and ``tools/export_student.py`` run the same code (OpenMMLab's habit)."""
