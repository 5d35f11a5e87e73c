"""kdplug's main command-line tools, inside the package so that an installed kdplug has them too:
``kdplug-train`` / ``python -m kdplug.tools.train``, ``kdplug-test``, ``kdplug-export-student``,
``kdplug-cache-teacher``, ``kdplug-fit-codewords``. The repository's ``tools/train.py``, ``tools/test.py``,
``tools/export_student.py``, ``tools/cache_teacher.py`` and ``tools/fit_codewords.py`` run the same code (OpenMMLab's
habit)."""
