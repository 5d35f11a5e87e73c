"""Print every kdplug plugin (builtin and third-party), its distribution and version, and what it contributed.

    python tools/list_plugins.py
"""
from kdplug.plugins import format_plugins

if __name__ == '__main__':
    print(format_plugins())
