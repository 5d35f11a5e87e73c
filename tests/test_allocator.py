"""kdplug.engine.allocator: freed memory stays in the process for the next iteration (glibc), and the user's own
allocator choices win."""
import platform

import pytest

from conftest import run_python

# Allocate, fill and free a 36 MiB tensor (over glibc's largest dynamic mmap threshold, 32 MiB, so by default it is
# mapped and unmapped every time, as activations of a big batch are) and count the page faults of the later rounds.
REFILL = '''
import resource, torch
{setup}
faults = []
for _ in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(9 * 2 ** 20)
    del block
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(status, sum(faults[-4:]))  # the steady state: glibc first fits the block among its free chunks
'''
PAGES_PER_ROUND = 36 * 2 ** 20 // 4096


def refill_faults(setup: str, env: dict = None):
    result = run_python(REFILL.format(setup=setup), env=env)
    assert result.returncode == 0, result.stderr
    *status, faults = result.stdout.split()
    return ' '.join(status), int(faults)


glibc = pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc',
                           reason='the settings are glibc mallopt ones')


@glibc
def test_a_freed_block_is_reused_without_faulting_its_pages_in_again():
    status, faults = refill_faults('from kdplug.engine.allocator import keep_freed_memory\n'
                                   'status = keep_freed_memory()')
    assert status.startswith('malloc keeps freed memory'), status
    assert faults < 0.05 * 4 * PAGES_PER_ROUND, faults
    _, default_faults = refill_faults("status = 'default'")
    assert default_faults > 0.9 * 4 * PAGES_PER_ROUND, 'glibc by default faults the block in every round'


@glibc
def test_the_user_s_allocator_settings_are_left_alone():
    status, faults = refill_faults('from kdplug.engine.allocator import keep_freed_memory\n'
                                   'status = keep_freed_memory()', env={'MALLOC_ARENA_MAX': '2'})
    assert status == 'malloc left as set by MALLOC_ARENA_MAX'
    assert faults > 0.9 * 4 * PAGES_PER_ROUND


def test_which_environment_settings_count_as_the_user_s_choice():
    from kdplug.engine.allocator import user_allocator_setting
    assert user_allocator_setting({}) is None
    assert user_allocator_setting({'LD_PRELOAD': '/usr/lib/libjemalloc.so.2'}) == 'LD_PRELOAD'
    assert user_allocator_setting({'LD_PRELOAD': '/opt/libfoo.so'}) is None
    assert user_allocator_setting({'GLIBC_TUNABLES': 'glibc.malloc.trim_threshold=0'}) == 'GLIBC_TUNABLES'
    assert user_allocator_setting({'GLIBC_TUNABLES': 'glibc.rtld.nns=2'}) is None
    assert user_allocator_setting({'MALLOC_TRIM_THRESHOLD_': '0'}) == 'MALLOC_TRIM_THRESHOLD_'


def test_the_train_tool_applies_it_unless_told_not_to(monkeypatch):
    from kdplug.tools import train as tool
    assert tool.parse_args(['x.py']).default_malloc is False
    assert tool.parse_args(['x.py', '--default-malloc']).default_malloc is True
    called = []
    monkeypatch.setattr(tool, 'keep_freed_memory', lambda: called.append(True) or 'applied')
    monkeypatch.setattr(tool, 'Runner', FakeRunner)
    monkeypatch.setattr(tool, 'check_data', lambda cfg: None)  # no data here: nothing is trained
    tool.main(['configs/demo/student_resnet8_4e_cifar10-10k.py', '--default-malloc'])
    assert called == [] and FakeRunner.messages == ['malloc left as it is (--default-malloc)']
    tool.main(['configs/demo/student_resnet8_4e_cifar10-10k.py'])
    assert called == [True] and FakeRunner.messages[-1] == 'applied'


class FakeRunner:
    """Records what the tool logs; trains nothing."""
    messages = []

    def __init__(self):
        self.logger = type('Logger', (), {'info': staticmethod(FakeRunner.messages.append)})()

    @classmethod
    def from_cfg(cls, cfg):
        return cls()

    def load_checkpoint(self, filename, **options):  # the tool wraps it (load_from with a student's weights)
        pass

    def train(self):
        pass
