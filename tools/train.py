"""Train a model (a student with kdplug's distillers, or a plain mmpretrain / mmdet teacher) from a config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]

The code is kdplug.tools.train (also ``kdplug-train`` and ``python -m kdplug.tools.train`` from an installed kdplug).
"""
from kdplug.tools.train import (checkpoint_folder, main, merge_args, parse_args, resumable_checkpoint,  # noqa: F401
                                set_dataloader_defaults)

if __name__ == '__main__':
    main()
