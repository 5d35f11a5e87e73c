"""Print every kdplug plugin (builtin and third-party), its distribution and version, and what it contributed.

    python tools/list_plugins.py
"""
from kdplug.plugins import main

if __name__ == '__main__':
    main()
