"""Speed (and, on a GPU, peak memory) of kdplug's losses and of a distillation step, as a table.

    python tools/benchmark.py losses [--device cuda] [--repeat 50]
    python tools/benchmark.py step [--device cuda] [--batch-size 64] [--repeat 20]

``losses``: forward + backward of every registered loss on random logits of typical shapes (CIFAR-100 batch,
ImageNet batch, Faster R-CNN RoIs: 2 images x 512 RoIs x 81 classes). ``step``: one training step (forward, backward,
SGD) of a CIFAR student (resnet8x4) alone, and distilled from resnet32x4 with KD / NormKD / DKD, through the
distiller's train_step; the teacher forward alone is timed too, so the distillation overhead can be compared with
its floor (student step + teacher forward). Median of ``--repeat`` runs after warm-up.
"""
import argparse
import statistics
import time
from typing import Callable

import torch


def timed(fn: Callable[[], object], device: str, repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if device == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def peak_mb(device: str) -> str:
    return f'{torch.cuda.max_memory_allocated() / 2**20:.0f}' if device == 'cuda' else '-'


def bench_losses(device: str, repeat: int) -> None:
    from kdplug.plugins import plugin_infos
    from kdplug.registry import MODELS
    names = [n for info in plugin_infos() for n in info.contributions.get('kdplug_losses', [])]
    shapes = [(64, 100), (256, 1000), (1024, 81)]
    print('| loss | ' + ' | '.join(f'N={n}, C={c} (ms)' for n, c in shapes) + ' |')
    print('|---|' + '---|' * len(shapes))
    for name in names:
        try:
            loss = MODELS.build(dict(type=name)).to(device)
        except TypeError:  # a loss that needs more than its defaults (e.g. a student module): not a logit loss
            continue
        cells = []
        for n, c in shapes:
            s = torch.randn(n, c, device=device, requires_grad=True)
            t = torch.randn(n, c, device=device)
            y = torch.randint(0, c, (n,), device=device)
            cells.append(f'{timed(lambda: loss(s, t, y).backward(), device, repeat):.2f}')
        print(f'| {name} | ' + ' | '.join(cells) + ' |')


def bench_step(device: str, batch_size: int, repeat: int) -> None:
    from mmengine.optim import OptimWrapper
    from mmpretrain.structures import DataSample
    from kdplug.adapters.mmpretrain import build_classifier
    from kdplug.registry import MODELS

    def classifier(backbone):
        return dict(type='ImageClassifier', backbone=dict(type=f'kdplug.{backbone}'),
                    neck=dict(type='GlobalAveragePooling'),
                    head=dict(type='LinearClsHead', num_classes=100, in_channels=256,
                              loss=dict(type='CrossEntropyLoss')))

    teacher_path = '/tmp/kdplug_benchmark_teacher.pth'
    torch.save(build_classifier(classifier('ResNet32x4')).state_dict(), teacher_path)
    data = dict(inputs=[torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8) for _ in range(batch_size)],
                data_samples=[DataSample().set_gt_label(i % 100) for i in range(batch_size)])
    rows = []
    student = MODELS.build(dict(type='LogitDistiller', student=classifier('ResNet8x4'),
                                teacher=classifier('ResNet32x4'), teacher_ckpt=teacher_path,
                                losses=dict(kd=dict(type='KDLoss')))).to(device)
    alone = student.student
    alone_wrapper = OptimWrapper(torch.optim.SGD(alone.parameters(), lr=0.01))
    rows.append(('student alone (resnet8x4)', timed(lambda: alone.train_step(data, alone_wrapper), device, repeat)))
    teacher_inputs = student.data_preprocessor(data, False)['inputs']

    def teacher_forward():
        with torch.no_grad():
            student.teacher.head(student.teacher.extract_feat(teacher_inputs))
    rows.append(('teacher forward (resnet32x4)', timed(teacher_forward, device, repeat)))
    for name, loss in (('KD', dict(type='KDLoss', temperature=4.0)), ('NormKD', dict(type='NormKDLoss')),
                       ('DKD', dict(type='DKDLoss'))):
        model = MODELS.build(dict(type='LogitDistiller', student=classifier('ResNet8x4'),
                                  teacher=classifier('ResNet32x4'), teacher_ckpt=teacher_path,
                                  losses=dict(loss=loss))).to(device)
        wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
        rows.append((f'distillation step, {name}', timed(lambda: model.train_step(data, wrapper), device, repeat)))
    floor = rows[0][1] + rows[1][1]
    print(f'batch {batch_size}, 32x32, {device}; floor = student step + teacher forward = {floor:.1f} ms')
    print('| what | ms (median) | vs student step | vs floor |')
    print('|---|---|---|---|')
    for what, ms in rows:
        ratio = '' if what.startswith('teacher') else f'{ms / rows[0][1] - 1:+.0%}'
        over = f'{ms / floor - 1:+.0%}' if what.startswith('distillation') else ''
        print(f'| {what} | {ms:.1f} | {ratio} | {over} |')
    print(f'peak memory (MiB): {peak_mb(device)}')


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('what', choices=['losses', 'step'])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--repeat', type=int, default=20)
    parser.add_argument('--batch-size', type=int, default=64)
    args = parser.parse_args(argv)
    if args.what == 'losses':
        bench_losses(args.device, args.repeat)
    else:
        bench_step(args.device, args.batch_size, args.repeat)


if __name__ == '__main__':
    main()
