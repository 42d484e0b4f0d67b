"""User errors: each names the file:line of the user's source, shows the line with a caret, and keeps
evtdsl's own frames out of the traceback."""
import traceback

import numpy as np
import pytest

import evtdsl as evt

M, K = evt.dim("M"), evt.dim("K")


def _assert_points_here(err: evt.EvtError, needle: str):
    msg = str(err)
    assert __file__ in msg.splitlines()[0]
    assert needle in msg, msg
    assert "^" in msg.splitlines()[-1]
    frames = [f.filename for f in traceback.extract_tb(err.__traceback__)]
    assert not any("/evtdsl/frontend/" in f or "/evtdsl/ir/" in f for f in frames), frames


def test_unsupported_statement():
    with pytest.raises(evt.UnsupportedSyntaxError, match="`ast.While` is not supported in a task") as e:
        @evt.task(grid=(4,))
        def t(i, x: evt.Tensor[M, evt.f32]):
            while i < 3:
                pass
    _assert_points_here(e.value, "while i < 3:")


def test_unsupported_call():
    with pytest.raises(evt.UnsupportedSyntaxError, match="calling print") as e:
        @evt.task(grid=(4,))
        def t(i, x: evt.Tensor[M, evt.f32]):
            print(i)
    _assert_points_here(e.value, "print(i)")


def test_shape_mismatch_in_body():
    with pytest.raises(evt.TypeMismatchError, match=r"shapes \[16\] and \[8\] do not broadcast") as e:
        @evt.task(grid=(evt.cdiv(M, 16),))
        def t(i, x: evt.Tensor[M, evt.f32], y: evt.Tensor[M, evt.f32]):
            evt.store(y, (i * 16,), evt.load(x, (i * 16,), (16,)) + evt.load(x, (i * 16,), (8,)))
    _assert_points_here(e.value, "evt.store(y")


def test_dot_inner_size_mismatch():
    with pytest.raises(evt.TypeMismatchError, match=r"dot: inner sizes differ.*transpose"):
        @evt.task(grid=(1,))
        def t(i, x: evt.Tensor[M, K, evt.f32], y: evt.Tensor[M, K, evt.f32]):
            a = evt.load(x, (0, 0), (16, 32))
            evt.store(y, (0, 0), evt.dot(a, a))


def test_variable_keeps_its_type():
    with pytest.raises(evt.TypeMismatchError, match=r"acc was f32\[16, 16\] and would become f32\[16\]"):
        @evt.task(grid=(1,))
        def t(i, x: evt.Tensor[M, K, evt.f32]):
            acc = evt.zeros((16, 16), evt.f32)
            acc = evt.sum(acc, axis=1)


def test_block_local_variable_used_after_loop():
    with pytest.raises(evt.TypeMismatchError, match="assigned inside a loop or branch and used after it"):
        @evt.task(grid=(1,))
        def t(i, x: evt.Tensor[M, evt.f32]):
            for k in range(4):
                v = evt.load(x, (k * 16,), (16,))
            evt.store(x, (0,), v)


@evt.task(grid=(evt.cdiv(M, 16),))
def copy16(i, x: evt.Tensor[M, evt.f32], y: evt.Tensor[M, evt.f32]):
    evt.store(y, (i * 16,), evt.load(x, (i * 16,), (16,)))


def test_dtype_mismatch_at_call():
    with pytest.raises(evt.TypeMismatchError, match="argument x of task `copy16`: expected dtype f32, got bf16") as e:
        @evt.megakernel
        def mk(x: evt.Tensor[M, evt.bf16], y: evt.Tensor[M, evt.f32]):
            copy16(x, y)
    _assert_points_here(e.value, "copy16(x, y)")


def test_shape_mismatch_at_call():
    with pytest.raises(evt.TypeMismatchError, match="axis 0 must be M = M, but y has 2 \\* M"):
        @evt.megakernel
        def mk(x: evt.Tensor[M, evt.f32], y: evt.Tensor[2 * M, evt.f32]):
            copy16(x, y)


def test_edge_map_wrong_arity():
    with pytest.raises(evt.EdgeMapError, match=r"'ij->i' names 2 task coordinate\(s\) but task `copy16` has a 1-d grid"):
        @evt.megakernel
        def mk(x: evt.Tensor[M, evt.f32], y: evt.Tensor[M, evt.f32]):
            E = evt.EventTensor((evt.cdiv(M, 16),))
            copy16(x, y, notify=E["ij->i"])


def test_lambda_edge_wrong_arity():
    with pytest.raises(evt.EdgeMapError, match=r"returns 2 index\(es\) but event tensor E is 1-d"):
        @evt.megakernel
        def mk(x: evt.Tensor[M, evt.f32], y: evt.Tensor[M, evt.f32]):
            E = evt.EventTensor((evt.cdiv(M, 16),))
            copy16(x, y, notify=E[lambda i: (i, 0)])


@evt.task(grid=(evt.cdiv(M, 16), K // 64))
def partial64(i, k, x: evt.Tensor[M, K, evt.f32], part: evt.Tensor[M, K, evt.f32]):
    evt.store(part, (i * 16, k), evt.sum(evt.load(x, (i * 16, k * 64), (16, 64)), axis=1, keepdims=True))


@evt.task(grid=(evt.cdiv(M, 16),))
def final4(i, part: evt.Tensor[M, K, evt.f32], y: evt.Tensor[M, evt.f32]):
    evt.store(y, (i * 16,), evt.sum(evt.load(part, (i * 16, 0), (16, 4)), axis=1))


def test_wait_count_checked_symbolically():
    with pytest.raises(evt.EventCountError, match=r"expects 8 notification\(s\) per element but its notifiers send "
                                                  r"K // 64.*wait_count should be K // 64") as e:
        @evt.megakernel
        def mk(x: evt.Tensor[M, K, evt.f32], part: evt.Tensor[M, K, evt.f32], y: evt.Tensor[M, evt.f32]):
            E = evt.EventTensor((evt.cdiv(M, 16),), wait_count=8)
            partial64(x, part, notify=E["ik->i"])
            final4(part, y, wait=E["i->i"])
    _assert_points_here(e.value, "wait_count=8")


def test_wait_count_checked_at_run_time():
    n = evt.dim("n")

    @evt.megakernel
    def mk(x: evt.Tensor[M, K, evt.f32], part: evt.Tensor[M, K, evt.f32], y: evt.Tensor[M, evt.f32],
           counts: evt.Tensor[n, evt.i32]):
        E = evt.EventTensor((evt.cdiv(M, 16),), wait_count=lambda i: counts[i])
        partial64(x, part, notify=E["ik->i"])
        final4(part, y, wait=E["i->i"])

    x = np.random.rand(32, 256).astype(np.float32)
    part, y = np.empty((32, 256), np.float32), np.empty(32, np.float32)
    with pytest.raises(evt.EventCountError, match=r"event E\[1\] waits for 3 notification\(s\) but receives 4.*"
                                                  r"fire before all of them arrive"):
        mk(x, part, y, np.array([4, 3], np.int32))


def test_argument_errors():
    @evt.megakernel
    def mk(x: evt.Tensor[M, evt.f32], y: evt.Tensor[M, evt.f32]):
        copy16(x, y)

    x = np.random.rand(20).astype(np.float32)
    with pytest.raises(evt.ArgumentError, match="argument y: expected dtype f32, got f16"):
        mk(x, np.empty(20, np.float16))
    with pytest.raises(evt.ArgumentError, match=r"argument y: axis 0 must be M = 20 \(M=20 from x.shape\[0\]\), got 21"):
        mk(x, np.empty(21, np.float32))
    with pytest.raises(evt.ArgumentError, match="argument y: expected a 1-d tensor"):
        mk(x, np.empty((20, 1), np.float32))
    with pytest.raises(evt.ArgumentError, match="takes 2 arguments"):
        mk(x)
    with pytest.raises(evt.ArgumentError, match="expected a NumPy array or a torch tensor, got list"):
        mk(x, [0.0] * 20)


@pytest.mark.parametrize("options,match", [
    (dict(trace=1), r"trace \(record each task's times and CTA for CudaRun.timeline\) must be a bool, got 1"),
    (dict(stream="yes"), r"stream \(a code-generation switch; None takes the knob\) must be a bool or None, got 'yes'"),
    (dict(inline_tasks=0), r"inline_tasks \(a code-generation switch; .*\) must be a bool or None, got 0"),
    (dict(min_blocks=0), r"min_blocks \(CTAs per SM .*\) must be an int in 1..32, got 0"),
    (dict(schedule="fifo"), r"schedule must be 'static' or 'dynamic', got 'fifo'"),
    (dict(workers=0), r"workers must be a positive int or None, got 0"),
    (dict(seed=3), r"unknown option\(s\) seed for the CUDA backend; it takes workers, .*, trace"),
])
def test_cuda_launch_options_checked_before_any_gpu_work(options, match):
    """The CUDA backend's launch options get their errors on any machine, before a GPU or an argument is
    looked at."""
    from evtdsl.backends.cuda import launch
    from evtdsl.examples import rowsum

    with pytest.raises(evt.ArgumentError, match=match):
        launch.run_cuda(rowsum.rowsum, [], **options)


def test_cpu_launch_options_are_checked():
    from evtdsl.examples import rowsum

    x = np.random.rand(37, 300).astype(np.float32)
    args = (x, np.empty((37, 5), np.float32), np.empty(37, np.float32))
    with pytest.raises(evt.ArgumentError, match=r"unknown option\(s\) min_blocks for the CPU backend; it takes "
                                                r"workers, schedule, seed, check, verify_counts$"):
        rowsum.rowsum.run(*args, backend="cpu", min_blocks=1)
    with pytest.raises(evt.ArgumentError, match=r"unknown option\(s\) trace .*always records its simulated "
                                                r"timeline \(CpuRun.timeline, plot_timeline\)"):
        rowsum.rowsum.run(*args, backend="cpu", trace=True)


def test_task_outside_megakernel():
    with pytest.raises(evt.EvtError, match="called inside an @evt.megakernel"):
        copy16(np.zeros(4), np.zeros(4))
