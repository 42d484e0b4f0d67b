"""The CPU backend finds graph bugs and names the tasks and events involved."""
import numpy as np
import pytest

import evtdsl as evt

M = evt.dim("M")
B = 8


@evt.task(grid=(evt.cdiv(M, B),))
def produce(i, x: evt.Tensor[M, evt.f32], a: evt.Tensor[M, evt.f32]):
    evt.store(a, (i * B,), evt.load(x, (i * B,), (B,)) * 2.0)


@evt.task(grid=(evt.cdiv(M, B),))
def consume(i, a: evt.Tensor[M, evt.f32], y: evt.Tensor[M, evt.f32]):
    evt.store(y, (i * B,), evt.load(a, (i * B,), (B,)) + 1.0)


@evt.task(grid=(evt.cdiv(M, B),))
def consume_inout(i, a: evt.InOut[M, evt.f32], y: evt.Tensor[M, evt.f32]):
    evt.store(y, (i * B,), evt.load(a, (i * B,), (B,)) + 1.0)


@evt.task(grid=(evt.cdiv(M, B),))
def produce_inout(i, x: evt.Tensor[M, evt.f32], a: evt.InOut[M, evt.f32]):
    evt.store(a, (i * B,), evt.load(x, (i * B,), (B,)) * 2.0)


def _arrays(m=40):
    return np.random.rand(m).astype(np.float32), np.empty(m, np.float32), np.empty(m, np.float32)


@pytest.mark.parametrize("schedule", ["static", "dynamic"])
def test_correct_graph_passes(schedule):
    @evt.megakernel
    def ok(x: evt.Tensor[M, evt.f32], a: evt.Tensor[M, evt.f32], y: evt.Tensor[M, evt.f32]):
        E = evt.EventTensor((evt.cdiv(M, B),))
        produce(x, a, notify=E["i->i"])
        consume(a, y, wait=E["i->i"])

    x, a, y = _arrays()
    ok.run(x, a, y, schedule=schedule, workers=3)
    np.testing.assert_allclose(y, x * 2 + 1)


def test_deadlock_cycle_named():
    @evt.megakernel
    def cyc(x: evt.Tensor[M, evt.f32], a: evt.Tensor[M, evt.f32], y: evt.Tensor[M, evt.f32]):
        E = evt.EventTensor((evt.cdiv(M, B),))
        F = evt.EventTensor((evt.cdiv(M, B),))
        produce(x, a, wait=F["i->i"], notify=E["i->i"])
        consume(a, y, wait=E["i->i"], notify=F["i->i"])

    with pytest.raises(evt.DeadlockError, match=r"cycle: produce\(i=0\) waits on F\[0\], notified by consume\(i=0\); "
                                                r"consume\(i=0\) waits on E\[0\], notified by produce\(i=0\)"):
        cyc(*_arrays())


@pytest.mark.parametrize("schedule", ["static", "dynamic"])
def test_deadlock_missing_notify_found_by_simulation(schedule):
    @evt.megakernel
    def missing(x: evt.Tensor[M, evt.f32], a: evt.Tensor[M, evt.f32], y: evt.Tensor[M, evt.f32],
                counts: evt.Tensor[M, evt.i32]):
        E = evt.EventTensor((evt.cdiv(M, B),), wait_count=lambda i: counts[i])
        produce(x, a, notify=E["i->i"])
        consume(a, y, wait=E["i->i"])

    counts = np.full(40, 2, np.int32)

    # the launch-time count check catches it first ...
    with pytest.raises(evt.EventCountError, match=r"E\[0\] waits for 2 notification\(s\) but receives 1 "
                                                  r"\(from produce\(i=0\)\): it would never fire"):
        missing.run(*_arrays(), counts, schedule=schedule)
    # ... and without it the simulated workers deadlock, and say where
    with pytest.raises(evt.DeadlockError, match=r"deadlock: 5 task\(s\) can never start; .*consume\(i=0\) waits on "
                                                r"E\[0\] with 1 notification\(s\) outstanding \(no task that has not "
                                                r"run yet will notify it\)"):
        missing.run(*_arrays(), counts, schedule=schedule, verify_counts=False)


@pytest.mark.parametrize("seed", range(4))
def test_race_read_before_write_unordered(seed):
    @evt.megakernel
    def racy(x: evt.Tensor[M, evt.f32], a: evt.InOut[M, evt.f32], y: evt.Tensor[M, evt.f32]):
        produce_inout(x, a)
        consume_inout(a, y)  # forgot to wait on produce

    x, a, y = _arrays()
    with pytest.raises(evt.RaceError, match=r"race on a\[0:8\]: task produce_inout\(i=0\) writes it .* and task "
                                            r"consume_inout\(i=0\) reads it .* no event orders them"):
        racy.run(x, a, y, seed=seed, schedule="dynamic", workers=4)


def test_race_two_unordered_writers():
    @evt.task(grid=(1,))
    def overwrite(i, x: evt.Tensor[M, evt.f32], a: evt.Tensor[M, evt.f32]):
        evt.store(a, (4,), evt.load(x, (0,), (B,)))

    @evt.megakernel
    def waw(x: evt.Tensor[M, evt.f32], a: evt.Tensor[M, evt.f32]):
        produce(x, a)
        overwrite(x, a)

    x, a, _ = _arrays(16)
    with pytest.raises(evt.RaceError, match=r"race on a\[4:8\]: task produce\(i=0\) writes it .* task "
                                            r"overwrite\(i=0\) writes it"):
        waw(x, a)


def test_uninitialised_read_named():
    @evt.task(grid=(evt.cdiv(M, B),))
    def consume_next(i, a: evt.Tensor[M, evt.f32], y: evt.Tensor[M, evt.f32]):
        evt.store(y, (i * B,), evt.load(a, (i * B + 1,), (B,)))

    @evt.task(grid=(evt.cdiv(M, B) - 1,))
    def produce_some(i, x: evt.Tensor[M, evt.f32], a: evt.Tensor[M, evt.f32]):
        evt.store(a, (i * B,), evt.load(x, (i * B,), (B,)))

    @evt.megakernel
    def uninit(x: evt.Tensor[M, evt.f32], a: evt.Tensor[M, evt.f32], y: evt.Tensor[M, evt.f32]):
        E = evt.EventTensor((), wait_count=evt.cdiv(M, B) - 1)
        produce_some(x, a, notify=E["i->"])
        consume_next(a, y, wait=E["i->"])

    with pytest.raises(evt.UninitializedReadError, match=r"consume_next\(i=3\) reads a\[25:33\], but a\[32\] has not "
                                                         r"been written.*written by `produce_some`"):
        uninit(*_arrays())


def test_outputs_are_poisoned_not_zeroed():
    @evt.megakernel
    def half(x: evt.Tensor[M, evt.f32], a: evt.Tensor[M, evt.f32]):
        produce(x, a)

    x = np.random.rand(20).astype(np.float32)
    a = np.zeros(20, np.float32)
    half(x, a)
    np.testing.assert_allclose(a, 2 * x)
