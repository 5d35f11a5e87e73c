"""Compute a teacher's logits over a training set once, for every view of every image, into a teacher cache.

    python tools/cache_teacher.py CONFIG [--out DIR] [--dtype float16|float32] [--batch-size 256] [--device cpu]

The code is kdplug.tools.cache_teacher (also ``python -m kdplug.tools.cache_teacher`` from an installed kdplug).
"""
from kdplug.tools.cache_teacher import main

if __name__ == '__main__':
    main()
