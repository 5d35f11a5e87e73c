# A class-balanced 10k-image subset of CIFAR-10's training split and 2k of its test split (lists written by
# tools/prepare_data.py cifar10), for the README's CPU demo and other short runs.
_base_ = ['./cifar10_folder.py']

# The pipeline in the main process: on a CPU the model's threads already use every core, and dataloader workers
# would take cores from them (the demo's student alone: 770-790 img/s with 2 workers, 850-900 without, on the
# 2-core machine of docs/benchmarks.md). On a GPU, give the workers back: train_dataloader.num_workers=2 or more.
train_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(ann_file='meta/train_10000.txt'))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(ann_file='meta/test_2000.txt'))
test_dataloader = val_dataloader
