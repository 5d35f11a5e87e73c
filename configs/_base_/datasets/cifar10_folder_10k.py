# A class-balanced 10k-image subset of CIFAR-10's training split and 2k of its test split (lists written by
# tools/prepare_data.py cifar10), for the README's CPU demo and other short runs.
_base_ = ['./cifar10_folder.py']

train_dataloader = dict(dataset=dict(ann_file='meta/train_10000.txt'))
val_dataloader = dict(dataset=dict(ann_file='meta/test_2000.txt'))
test_dataloader = val_dataloader
