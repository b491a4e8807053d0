"""CPython's own pool tests, run against ``caiclust.Pool``.

The cases are those of ``Lib/test/_test_multiprocessing.py`` as shipped
with the interpreter running these tests (imported, never copied): the
classes ``_TestPool``, ``_TestPoolWorkerErrors`` and
``_TestPoolWorkerLifetime``. Each is combined with CPython's own
``ProcessesMixin``, as CPython's ``install_tests_in_module_dict`` does, with
``caiclust.Pool`` in place of ``multiprocessing.Pool`` (``self.Pool`` and,
for the cases that call it by name, ``multiprocessing.Pool`` itself).

Every case found in those classes is either run here or listed in
``NOT_APPLICABLE`` with its reason; such cases show as skipped with that
reason (``pytest -rs``), never as passes. A few of the same cases also run
against the real ``multiprocessing.Pool``, to show the harness is right.
"""

import faulthandler
import multiprocessing
import unittest

import pytest

# The interpreter's own test suite: CPython ships it (Debian and Ubuntu
# in libpython3.X-testsuite). Missing, this module fails: no silent skip.
import test._test_multiprocessing as mp_tests

import caiclust

# The pool test classes of CPython's suite.
SOURCES = ("_TestPool", "_TestPoolWorkerErrors", "_TestPoolWorkerLifetime")

# Cases that cannot apply to caiclust.Pool, each with the reason.
NOT_APPLICABLE = {
    "_TestPoolWorkerLifetime.test_pool_worker_lifetime": (
        "reads each worker's pid from multiprocessing.Pool's Process objects "
        "(p._pool[i].pid, is_alive()) before any task ran, and calls its private "
        "p._repopulate_pool(); caiclust's workers are the core's processes, which "
        "the Python package does not see"),
    "_TestPoolWorkerLifetime.test_worker_finalization_via_atexit_handler_of_multiprocessing": (
        "runs a fresh interpreter whose script imports multiprocessing.Pool by "
        "name: it tests multiprocessing's own atexit finalizer, never caiclust"),
}

# A case that runs longer than this hangs: the run stops, with every
# thread's traceback (CPython's slowest case here takes about a second).
CASE_TIMEOUT = 120

# The cases also run against multiprocessing.Pool: the harness's control.
CONTROL = (
    "_TestPool.test_map_async_callbacks",
    "_TestPool.test_async_timeout",
    "_TestPool.test_imap_handle_iterable_exception",
    "_TestPool.test_traceback",
    "_TestPool.test_enter",
    "_TestPool.test_resource_warning",
    "_TestPoolWorkerErrors.test_unpickleable_result",
)


def _concrete(source, pool, label):
    """CPython's mixin ``source`` as a TestCase of processes whose pool is
    ``pool``, as ``install_tests_in_module_dict`` builds it. It lives in
    this module, so that its methods (which some cases send to the
    workers) pickle by reference; pytest leaves it to this module's own
    tests (``__test__``)."""
    base = getattr(mp_tests, source)
    name = f"{source.lstrip('_')}With{label}"
    cls = type(name, (base, mp_tests.ProcessesMixin, unittest.TestCase),
               {"Pool": staticmethod(pool), "__module__": __name__, "__qualname__": name,
                "__test__": False})
    globals()[name] = cls
    return cls


MP_POOL = multiprocessing.Pool
CAICLUST = {source: _concrete(source, caiclust.Pool, "Caiclust") for source in SOURCES}
CPYTHON = {source: _concrete(source, MP_POOL, "Multiprocessing") for source in SOURCES}


def _cases():
    """Every test method of the pool classes, as ``Class.method``."""
    loader = unittest.TestLoader()
    return [f"{source}.{method}" for source in SOURCES
            for method in loader.getTestCaseNames(CAICLUST[source])]


ALL_CASES = _cases()


def _param(case):
    """A case to run, or one shown as not applicable, with its reason."""
    reason = NOT_APPLICABLE.get(case)
    marks = [pytest.mark.skip(reason=f"not applicable: {reason}")] if reason else []
    return pytest.param(case, marks=marks, id=case)


class _ClassSetUp:
    """setUpClass once per class, tearDownClass at the end of the module,
    as unittest's suite does."""

    def __init__(self):
        self.ready = []

    def get(self, cls):
        if cls not in self.ready:
            cls.setUpClass()
            self.ready.append(cls)
        return cls

    def close(self):
        for cls in reversed(self.ready):
            cls.tearDownClass()


@pytest.fixture(scope="module")
def classes():
    setups = _ClassSetUp()
    yield setups
    setups.close()


def _run(cls, method, pool, monkeypatch):
    """One case; ``multiprocessing.Pool`` is ``pool`` while it runs. Fails
    with the case's own report on a failure, error or skip."""
    monkeypatch.setattr(multiprocessing, "Pool", pool)
    result = unittest.TestResult()
    faulthandler.dump_traceback_later(CASE_TIMEOUT, exit=True)
    try:
        cls(method).run(result)
    finally:
        faulthandler.cancel_dump_traceback_later()
    problems = result.failures + result.errors + result.unexpectedSuccesses
    if problems:
        pytest.fail("\n".join(text for _, text in problems), pytrace=False)
    if result.skipped:
        # A skip inside CPython's case is no pass.
        pytest.fail(f"skipped by the case itself: {result.skipped[0][1]}", pytrace=False)
    assert result.testsRun == 1


@pytest.mark.parametrize("case", [_param(c) for c in ALL_CASES])
def test_caiclust_pool(case, classes, monkeypatch):
    source, method = case.split(".")
    _run(classes.get(CAICLUST[source]), method, caiclust.Pool, monkeypatch)


@pytest.mark.parametrize("case", CONTROL)
def test_multiprocessing_pool(case, classes, monkeypatch):
    """The same cases pass against multiprocessing.Pool: the harness
    asks what CPython's suite asks."""
    source, method = case.split(".")
    _run(classes.get(CPYTHON[source]), method, MP_POOL, monkeypatch)


def test_every_case_is_accounted_for():
    """Each case named here exists in this interpreter's suite (a renamed or
    removed case shows), and the count of what runs is shown (``-s``)."""
    assert set(NOT_APPLICABLE) <= set(ALL_CASES)
    assert set(CONTROL) <= set(ALL_CASES)
    for source in SOURCES:
        assert any(case.startswith(f"{source}.") for case in ALL_CASES), source
    print(f"\nCPython's pool cases: {len(ALL_CASES)}; run against caiclust.Pool: "
          f"{len(ALL_CASES) - len(NOT_APPLICABLE)}; not applicable: {len(NOT_APPLICABLE)}; "
          f"also run against multiprocessing.Pool: {len(CONTROL)}")


# -- Beyond CPython's cases ------------------------------------------------
# multiprocessing's behaviour that its suite does not pin, asked of both
# pools alike.

BOTH = [pytest.param(MP_POOL, id="multiprocessing"), pytest.param(caiclust.Pool, id="caiclust")]


def _fails_at_5(x):
    if x == 5:
        raise ValueError("five")
    return x * x


def _drain(it):
    """The items of an imap iterator, with each exception's repr in its
    place."""
    out = []
    while True:
        try:
            out.append(next(it))
        except StopIteration:
            return out
        except ValueError as exc:
            out.append(repr(exc))


def _slow_items(n):
    for i in range(n):
        mp_tests.time.sleep(0.02)
        yield i


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


@pytest.mark.parametrize("Pool", BOTH)
def test_imap_after_a_task_raised(Pool):
    """Chunks of 1 go on after a task's exception; larger chunks end there
    (multiprocessing hands out a generator over its chunks)."""
    with Pool(2) as p:
        assert _drain(p.imap(_fails_at_5, range(8))) == [
            0, 1, 4, 9, 16, "ValueError('five')", 36, 49]
        assert _drain(p.imap(_fails_at_5, range(12), 3)) == [0, 1, 4, "ValueError('five')"]


@pytest.mark.parametrize("Pool", BOTH)
def test_unpicklable_call_fails_its_result(Pool):
    """The pickling error is the result's (and the error callback's), not
    the caller's at submission."""
    with Pool(2) as p:
        for submit in (lambda cb: p.apply_async(_fails_at_5, (_Unpicklable(),),
                                                error_callback=cb),
                       lambda cb: p.map_async(_fails_at_5, [_Unpicklable()],
                                              error_callback=cb)):
            errors = []
            result = submit(errors.append)
            with pytest.raises(RuntimeError, match="cannot pickle"):
                result.get(timeout=10)
            assert [type(e) for e in errors] == [RuntimeError]


@pytest.mark.parametrize("Pool", BOTH)
def test_map_async_of_a_sized_iterable_that_raises(Pool):
    """An iterable with a length is read after map_async returned: its
    exception is the result's."""
    class Sized:
        def __len__(self):
            return 1

        def __iter__(self):
            raise mp_tests.SayWhenError("when")

    with Pool(2) as p:
        errors = []
        result = p.map_async(_fails_at_5, Sized(), 1, error_callback=errors.append)
        with pytest.raises(mp_tests.SayWhenError):
            result.get(timeout=10)
        assert [type(e) for e in errors] == [mp_tests.SayWhenError]


@pytest.mark.parametrize("Pool", BOTH)
def test_imap_goes_on_after_close(Pool):
    """close() stops new calls, not an imap already under way; join()
    waits for it."""
    p = Pool(2)
    it = p.imap(_fails_at_5, _slow_items(5))
    p.close()
    assert list(it) == [0, 1, 4, 9, 16]
    p.join()


def test_a_raising_callback_does_not_stop_the_results(capfd):
    """caiclust only: multiprocessing's result handler thread dies there,
    and every later result waits forever. Here the exception is printed."""
    with caiclust.Pool(1) as p:
        first = p.apply_async(_fails_at_5, (2,), callback=lambda value: 1 / 0)
        assert first.get(timeout=10) == 4
        assert p.apply(_fails_at_5, (3,)) == 9
    assert "ZeroDivisionError" in capfd.readouterr().err
