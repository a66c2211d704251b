"""The conformance suite every device passes: :func:`check_device`.

Like scikit-learn's ``check_estimator``, :func:`check_device` runs a list of
checks (:data:`DEVICE_CHECKS`) on one device object and raises
:class:`DeviceConformanceError` naming the first check that fails and the
rule it broke. Every device class (the analytic test device, the kinetic
Monte Carlo virtual DNPU, future instruments) is run through it in
``tests/test_device_conformance.py``; give a new device a fast configuration
there. Use it in your own tests::

    from inmaterio.devices.conformance import check_device
    check_device(MyDevice(...))

or one test per check (readable failures)::

    @pytest.mark.parametrize("check", DEVICE_CHECKS, ids=lambda c: c.__name__)
    def test_my_device(check):
        check(MyDevice(...))

The rules, one check each:

- names and ranges: activation electrodes with distinct names, finite ranges
  ``low < high``, a readout that is not an activation electrode;
- measurements: ``(batch,)`` float64 currents and standard errors in nA,
  finite, standard errors >= 0; ``measure(v)`` equals
  ``measure_with_error(v).current_na``; a 1-D input is a batch of one; an
  empty batch measures nothing;
- inputs: integer voltages, lists and torch tensors are numbers of volts like
  float64 arrays; NaN, inf, out-of-range values, wrong shapes, complex numbers,
  booleans, strings, None and object arrays raise
  :class:`~inmaterio.errors.VoltageError` naming the electrode, the value and
  the allowed range, and nothing is measured (no call reaches the device, no
  random stream is used up);
- provenance: ``describe()`` is JSON (no NaN), names a registered type, and
  rebuilds through :func:`~inmaterio.devices.registry.device_from_description`
  a device with the same description that measures the same numbers, bit for
  bit, under the same random-stream keys;
- randomness: the same stream keys give the same numbers bit for bit;
  different keys give different noise on a noisy device (one that reports a
  standard error > 0) and the same numbers on an exact one (standard error 0);
- physics: where the device declares :attr:`Device.zero_bias_current_na` and
  0 V lies in every range, the mean current at 0 V equals it within
  5 standard errors (exactly, to 1e-9 nA, on an exact device);
- batches: a point's current does not depend on the other points of its
  batch. On an exact device the current of a point measured in a batch equals
  the one measured alone (to float64 rounding). On a noisy device the noise of
  a point depends on its position in the call (a batch that repeats one point
  gets independent noise for every copy, so averaging plateau samples
  reduces it), so the two agree within 5 combined standard errors, not bit
  for bit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from inmaterio.devices.base import Device, Electrode, Measurement
from inmaterio.errors import VoltageError

__all__ = ["DEVICE_CHECKS", "DeviceConformanceError", "check_device"]

_SIGMAS = 5.0  # statistical checks: agreement within this many standard errors


class DeviceConformanceError(AssertionError):
    """A device broke a rule of the :class:`~inmaterio.devices.base.Device` interface (the message names it)."""


def _points(device: Device, n: int, seed: int) -> np.ndarray:
    """``(n, n_activation)`` operating points drawn inside the ranges (10% away from their ends), V."""
    r = device.voltage_ranges
    low, high = r[:, 0] + 0.1 * (r[:, 1] - r[:, 0]), r[:, 1] - 0.1 * (r[:, 1] - r[:, 0])
    return low + (high - low) * np.random.default_rng(seed).random((n, device.n_activation))


def _measure(device: Device, voltages: Any, *keys: Any) -> Measurement:
    with device.random_streams("check_device", *keys):
        return device.measure_with_error(voltages)


@contextmanager
def _counting_calls(device: Device) -> Iterator[list[int]]:
    """Count the calls that reach ``device._measure`` inside the block."""
    calls = [0]
    original = device._measure
    own = "_measure" in vars(device)

    def counted(voltages: np.ndarray) -> Measurement:
        calls[0] += 1
        return original(voltages)

    device._measure = counted  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        if own:
            device._measure = original  # type: ignore[method-assign]
        else:
            del device._measure


def _noisy(measured: Measurement) -> bool:
    return bool(np.any(measured.stderr_na > 0))


# ------------------------------------------------------------------------------------------------ checks


def check_names_and_ranges(device: Device) -> None:
    """Activation electrodes: distinct non-empty names, finite ranges with low < high; the readout is another electrode."""
    electrodes = device.electrodes
    assert isinstance(electrodes, tuple) and electrodes, f"electrodes must be a non-empty tuple, got {electrodes!r}"
    assert all(isinstance(e, Electrode) for e in electrodes), "every activation electrode must be an Electrode"
    names = device.activation_names
    assert all(isinstance(n, str) and n for n in names), f"electrode names must be non-empty strings, got {names}"
    assert len(set(names)) == len(names), f"electrode names repeat: {names}"
    assert names == [e.name for e in electrodes] and device.n_activation == len(electrodes)
    assert isinstance(device.readout_name, str) and device.readout_name, "readout_name must be a non-empty string"
    assert device.readout_name not in names, f"the readout '{device.readout_name}' is also an activation electrode"
    ranges = device.voltage_ranges
    assert ranges.shape == (len(electrodes), 2) and ranges.dtype == np.float64, f"voltage_ranges has shape {ranges.shape}"
    assert np.all(np.isfinite(ranges)) and np.all(ranges[:, 0] < ranges[:, 1]), f"ranges must be finite with low < high: {ranges}"
    assert np.array_equal(ranges, [[e.low_v, e.high_v] for e in electrodes])


def check_measurement_shapes(device: Device) -> None:
    """``(batch,)`` float64 finite currents (nA), standard errors >= 0; ``measure`` equals ``measure_with_error``."""
    v = _points(device, 3, 1)
    m = _measure(device, v, "shapes")
    for name, a in (("current_na", m.current_na), ("stderr_na", m.stderr_na)):
        assert isinstance(a, np.ndarray) and a.shape == (3,) and a.dtype == np.float64, (
            f"{name} must be a (batch,) float64 array, got {type(a).__name__} {getattr(a, 'shape', None)} {getattr(a, 'dtype', None)}"
        )
        assert np.all(np.isfinite(a)), f"{name} is not finite: {a}"
    assert np.all(m.stderr_na >= 0), f"negative standard errors: {m.stderr_na}"
    with device.random_streams("check_device", "shapes"):
        plain = device.measure(v)
    assert isinstance(plain, np.ndarray) and plain.dtype == np.float64 and plain.shape == (3,)
    assert np.array_equal(plain, m.current_na), (
        "measure(v) differs from measure_with_error(v).current_na under the same stream keys"
    )


def check_one_dimensional_input(device: Device) -> None:
    """A 1-D input of length n_activation is a batch of one: the same numbers as its ``(1, n)`` form."""
    v = _points(device, 1, 2)
    one = _measure(device, v[0], "1d")
    two = _measure(device, v, "1d")
    assert one.current_na.shape == (1,), f"a 1-D input must give shape (1,), got {one.current_na.shape}"
    assert np.array_equal(one.current_na, two.current_na) and np.array_equal(one.stderr_na, two.stderr_na)


def check_empty_batch(device: Device) -> None:
    """An empty batch ``(0, n)`` gives empty ``(0,)`` float64 results and reaches nothing."""
    with _counting_calls(device) as calls:
        m = device.measure_with_error(np.zeros((0, device.n_activation)))
    assert m.current_na.shape == (0,) and m.stderr_na.shape == (0,) and m.current_na.dtype == np.float64
    assert calls[0] == 0, "an empty batch reached the device"


def check_number_types(device: Device) -> None:
    """Integer arrays, lists and torch tensors are volts like float64 arrays (float currents, the same numbers)."""
    import torch

    v = _points(device, 2, 3)
    reference = _measure(device, v, "types").current_na
    as_list = _measure(device, v.tolist(), "types").current_na
    assert np.array_equal(as_list, reference), "a list of floats measures differently from the same float64 array"
    as_tensor = _measure(device, torch.tensor(v), "types").current_na
    assert np.array_equal(as_tensor, reference), "a float64 tensor measures differently from the same float64 array"
    r = device.voltage_ranges
    integers = np.clip(np.round(r.mean(1)), np.ceil(r[:, 0]), np.floor(r[:, 1]))
    if np.all((integers >= r[:, 0]) & (integers <= r[:, 1])):  # some integer voltage lies in every range
        for given in (integers.astype(np.int64)[None, :], integers.astype(np.int32)[None, :],
                      [[int(x) for x in integers]], torch.tensor(integers.astype(np.int64))[None, :]):  # fmt: skip
            got = _measure(device, given, "ints")
            want = _measure(device, integers.astype(np.int64).astype(np.float64)[None, :], "ints")
            assert got.current_na.dtype == np.float64, f"integer voltages gave {got.current_na.dtype} currents"
            assert np.array_equal(got.current_na, want.current_na), f"integer voltages {type(given).__name__} measure differently"


def _bad_inputs(device: Device) -> list[tuple[str, Any, list[str]]]:
    """(what, voltages, pieces the message must contain)."""
    n = device.n_activation
    first, last = device.electrodes[0], device.electrodes[-1]
    good = _points(device, 2, 4)
    rng = lambda e: f"[{e.low_v}, {e.high_v}]"  # noqa: E731
    rows: list[tuple[str, Any, list[str]]] = []

    def with_value(col: int, value: Any, row: int = 1) -> np.ndarray:
        v = good.astype(np.result_type(good, np.asarray(value))).copy()
        v[row, col] = value
        return v

    above, below = last.high_v + 0.25 * (last.high_v - last.low_v), first.low_v - 0.25 * (first.high_v - first.low_v)
    rows += [
        ("NaN", with_value(0, np.nan), [first.name, "nan", rng(first)]),
        ("+inf", with_value(n - 1, np.inf), [last.name, "inf", rng(last)]),
        ("-inf", with_value(0, -np.inf), [first.name, "-inf", rng(first)]),
        ("above the range", with_value(n - 1, above), [last.name, f"{above:.6g}", rng(last)]),
        ("below the range", with_value(0, below), [first.name, f"{below:.6g}", rng(first)]),
        ("one column too many", np.zeros((2, n + 1)), [f"({n},)", first.name, last.name, str((2, n + 1))]),
        ("a 3-D array", np.zeros((2, 1, n)), [f"(batch, {n})", str((2, 1, n))]),
        ("a scalar", 0.0, [f"(batch, {n})", "()"]),
        ("complex numbers", good.astype(complex) + 0.1j, [first.name, "complex", rng(first)]),
        ("a list with a complex number", [[*good[0, :-1], complex(good[0, -1], 0.1)]], [last.name, "complex", rng(last)]),
        ("booleans", np.ones((1, n), dtype=bool), [first.name, "bool", rng(first)]),
        ("strings", np.array([[str(x) for x in good[0]]]), [first.name, repr(str(good[0, 0])), rng(first)]),
        ("a list with a string", [[*good[0, :-1], "0.1"]], [last.name, "'0.1'", "str", rng(last)]),
        ("a list with None", [[None, *good[0, 1:]]], [first.name, "None", rng(first)]),
        ("an object array", np.array([[object(), *good[0, 1:]]], dtype=object), [first.name, "object", rng(first)]),
        ("a text", ",".join(str(x) for x in good[0]), ["text", first.name]),
        ("a ragged list", [list(good[0]), list(good[0, :-1])], ["rectangular", f"(batch, {n})"]),
    ]
    if n > 1:
        rows.append(("one column too few", np.zeros((2, n - 1)), [f"({n},)", str((2, n - 1))]))
    return rows


def check_refuses_bad_voltages(device: Device) -> None:
    """NaN, inf, out of range, wrong shapes, complex, bool, strings, None, objects: VoltageError naming the
    electrode, value and range; nothing reaches the device and no random stream is used up."""
    good = _points(device, 2, 4)
    with _counting_calls(device) as calls, device.random_streams("check_device", "refusals"):
        for what, voltages, pieces in _bad_inputs(device):
            try:
                device.measure_with_error(voltages)
            except VoltageError as err:
                message = " ".join(str(err).split())
                missing = [p for p in pieces if p not in message]
                assert not missing, f"{what}: the message {message!r} does not name {missing}"
            except Exception as err:  # noqa: BLE001 - any other error is a failure of this rule
                raise AssertionError(f"{what}: raised {type(err).__name__}: {err} instead of a VoltageError") from None
            else:
                raise AssertionError(f"{what}: {voltages!r:.120} was measured instead of refused")
            assert calls[0] == 0, f"{what}: the device was called before the voltages were refused"
        after = device.measure_with_error(good)  # the first good call of the block: stream (..., 0)
    fresh = _measure(device, good, "refusals")
    assert np.array_equal(after.current_na, fresh.current_na), "a refused call used up a random stream"


def check_description(device: Device) -> None:
    """``describe()`` is JSON without NaN, names a registered type and does not change when measuring."""
    from inmaterio.devices.registry import DEVICE_TYPES

    d = device.describe()
    assert isinstance(d, dict), f"describe() must return a dict, got {type(d).__name__}"
    try:
        text = json.dumps(d, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise AssertionError(f"describe() is not plain JSON: {err}") from None
    assert json.loads(text) == d, "describe() changes in a JSON round trip (tuples? non-string keys?)"
    assert d.get("type") in DEVICE_TYPES, (
        f"describe()['type'] = {d.get('type')!r} is not a registered type {sorted(DEVICE_TYPES)}"
    )
    assert "package_version" in d, "describe() must record the package_version"
    _measure(device, _points(device, 1, 5), "describe")
    assert device.describe() == d, "describe() changed after a measurement"


def check_rebuild_from_description(device: Device) -> None:
    """The JSON description rebuilds, through the registry, a device of the same class, description and
    electrodes that measures the same numbers bit for bit under the same stream keys."""
    from inmaterio.devices.registry import device_from_description

    d = device.describe()
    rebuilt = device_from_description(json.loads(json.dumps(d)))
    assert type(rebuilt) is type(device), f"rebuilt a {type(rebuilt).__name__}, not a {type(device).__name__}"
    assert rebuilt.describe() == d, f"the rebuilt device describes itself differently: {rebuilt.describe()} vs {d}"
    assert rebuilt.electrodes == device.electrodes and rebuilt.readout_name == device.readout_name
    v = _points(device, 3, 6)
    a, b = _measure(device, v, "rebuild"), _measure(rebuilt, v, "rebuild")
    assert np.array_equal(a.current_na, b.current_na) and np.array_equal(a.stderr_na, b.stderr_na), (
        f"the rebuilt device measures differently: {b.current_na} vs {a.current_na} nA"
    )


def check_random_streams(device: Device) -> None:
    """Same stream keys: the same numbers bit for bit. Different keys: other noise (noisy device), the same
    numbers (exact device, standard error 0)."""
    v = _points(device, 3, 7)
    a, b = _measure(device, v, "streams", 1), _measure(device, v, "streams", 1)
    assert np.array_equal(a.current_na, b.current_na) and np.array_equal(a.stderr_na, b.stderr_na), (
        "the same stream keys gave different numbers"
    )
    c = _measure(device, v, "streams", 2)
    if _noisy(a):
        assert not np.any(a.current_na == c.current_na), "different stream keys gave the same noise"
    else:
        assert np.array_equal(a.current_na, c.current_na), "an exact device (standard error 0) changed with the stream keys"
    with device.random_streams("check_device", "streams", 3):
        first, second = device.measure(v), device.measure(v)  # calls 0 and 1 of one block
    if _noisy(a):
        assert not np.any(first == second), "two calls in one random_streams block gave the same noise"


def check_zero_bias(device: Device) -> None:
    """Where the device declares ``zero_bias_current_na`` and 0 V is in every range: the mean current at 0 V
    equals it within 5 standard errors (to 1e-9 nA on an exact device)."""
    expected = device.zero_bias_current_na
    r = device.voltage_ranges
    if expected is None or not np.all((r[:, 0] <= 0) & (r[:, 1] >= 0)):
        return
    m = _measure(device, np.zeros((8, device.n_activation)), "zero bias")
    if _noisy(m):
        mean, err = m.current_na.mean(), np.sqrt(np.sum(m.stderr_na**2)) / len(m.current_na)
        assert abs(mean - expected) <= _SIGMAS * err, (
            f"mean current at 0 V {mean:.4g} nA is {abs(mean - expected) / err:.1f} standard errors ({err:.3g} nA) "
            f"from the declared {expected} nA"
        )
    else:
        assert np.all(np.abs(m.current_na - expected) <= 1e-9), f"current at 0 V {m.current_na} nA, declared {expected} nA"


def check_batch_independence(device: Device) -> None:
    """A point's current does not depend on the other points of its batch (see the module docstring)."""
    v = _points(device, 4, 8)
    batch = _measure(device, v, "batch")
    alone = [_measure(device, v[i], "alone", i) for i in range(len(v))]
    single = np.array([m.current_na[0] for m in alone])
    single_err = np.array([m.stderr_na[0] for m in alone])
    repeated = _measure(device, np.repeat(v[:1], 4, axis=0), "repeated")
    if _noisy(batch):
        err = np.hypot(batch.stderr_na, single_err)
        worst = int(np.argmax(np.abs(batch.current_na - single) / err))
        assert np.all(np.abs(batch.current_na - single) <= _SIGMAS * err), (
            f"point {worst}: {batch.current_na[worst]:.4g} nA in a batch, {single[worst]:.4g} nA alone "
            f"({abs(batch.current_na[worst] - single[worst]) / err[worst]:.1f} standard errors apart)"
        )
        assert len(np.unique(repeated.current_na)) == 4, "copies of one point in one batch got the same noise"
    else:
        scale = max(1.0, float(np.abs(single).max()))
        assert np.allclose(batch.current_na, single, rtol=1e-12, atol=1e-12 * scale), (
            f"an exact device measures a point differently in a batch ({batch.current_na}) and alone ({single})"
        )
        assert np.allclose(repeated.current_na, repeated.current_na[0], rtol=1e-12, atol=1e-12 * scale)


#: Every check, in the order :func:`check_device` runs them.
DEVICE_CHECKS: tuple[Callable[[Device], None], ...] = (
    check_names_and_ranges,
    check_measurement_shapes,
    check_one_dimensional_input,
    check_empty_batch,
    check_number_types,
    check_refuses_bad_voltages,
    check_description,
    check_rebuild_from_description,
    check_random_streams,
    check_zero_bias,
    check_batch_independence,
)


def check_device(device: Device, checks: Sequence[Callable[[Device], None]] = DEVICE_CHECKS) -> None:
    """Run the conformance checks on ``device`` (see the module docstring).

    Raises
    ------
    DeviceConformanceError
        Naming the device, the first check that failed, its rule and what was seen.
    """
    for check in checks:
        try:
            check(device)
        except Exception as err:  # noqa: BLE001 - an unexpected error is a failure of the check too
            what = str(err) if isinstance(err, AssertionError) else f"raised {type(err).__name__}: {err}"
            rule = (check.__doc__ or "").split("\n\n")[0]
            raise DeviceConformanceError(
                f"{type(device).__name__} fails {check.__name__} ({' '.join(rule.split())}): {what or 'assertion failed'}"
            ) from err
