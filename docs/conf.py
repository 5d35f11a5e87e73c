"""Sphinx configuration of kdplug's documentation: the markdown pages of docs/ (myst-parser) and an API reference
generated from the docstrings (autodoc).

    pip install -e .[docs]
    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""
import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# document the kdplug of this checkout, whatever else is installed
sys.path.insert(0, str(ROOT))

import kdplug  # noqa: E402

project = 'kdplug'
author = 'kdplug contributors'
copyright = 'kdplug contributors'
version = release = kdplug.__version__

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',  # the docstrings' "Args:" / "Returns:" sections (Google style)
    'sphinx.ext.viewcode',
]
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
root_doc = 'index'
exclude_patterns = ['_build', 'Thumbs.db', '.DS_Store']

# myst: "page.md#a-heading" links (get_started.md -> losses.md) need the headings' slugs as anchors
myst_heading_anchors = 3

# Links from a page to a file of the repository outside docs/ ("[configs/detection/](../configs/detection/README.md)"
# in detection.md) have no page on the site: myst renders them as their plain text, and this silences its "Unknown
# source document" warning (myst.xref_missing) for them only. myst matches the target (the file's absolute path, or
# the link as written) against these patterns; a broken link between the pages of docs/, or to a heading, still fails
# the -W build.
REPO_DIRS = 'configs|examples|tools|tests|kdplug|papers'
nitpick_ignore_regex = [('myst', rf'({re.escape(str(ROOT))}/|(\.\./)+)({REPO_DIRS})(/.*)?')]
# losses.md puts its USKD section (###) under the page title (#): a style warning of myst (heading levels that skip
# one), not a broken page or link; it is the only one raised, and the only warning kind silenced here.
suppress_warnings = ['myst.header']

# autodoc: every public member kdplug defines, in source order (not those it inherits from torch / mmengine)
autodoc_default_options = {'members': True, 'undoc-members': True, 'show-inheritance': True}
autodoc_member_order = 'bysource'
# kdplug's own docstrings only: an override without one (PluginRegistry.build) would show mmengine's / torch's text
autodoc_inherit_docstrings = False
autodoc_typehints = 'signature'
# Only kdplug.transforms imports an OpenMMLab package beyond mmengine at import time (mmcv); an environment with the
# docs extra alone (no [classification] / [full]) documents it against a stand-in
autodoc_mock_imports = [name for name in ('mmcv', 'mmpretrain', 'mmdet') if importlib.util.find_spec(name) is None]
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = 'furo' if importlib.util.find_spec('furo') else 'alabaster'
html_title = f'kdplug {release}'
