"""Fit letKD's codewords: the trained teacher over the training set, k-means (penultimate level) and LDA + per-class
sub-classes (intermediate level), saved to the file the config names.

    python tools/fit_codewords.py CONFIG [--out FILE] [--device cpu|cuda] [--max-images N] [--max-vectors N]
                                  [--batch-size N] [--workers N] [--iters 30] [--seed 0] [--augment]
                                  [--cfg-options k=v ...]

The code is kdplug.tools.fit_codewords (also ``kdplug-fit-codewords`` and ``python -m kdplug.tools.fit_codewords``
from an installed kdplug); the fitting itself is kdplug.letkd.fitting.
"""
from kdplug.tools.fit_codewords import main

if __name__ == '__main__':
    main()
