"""ngspice back end: export a :class:`~inmaterio.circuits.netlist.Circuit` as a SPICE deck and solve it with ngspice.

Three ways to run ngspice, all giving a :class:`~inmaterio.circuits.solve.native.DCSolution`:

* ``mode="shared"`` (default, fastest): the shared library ``libngspice``
  through :mod:`ctypes` keeps one circuit loaded; each sample changes the
  values that differ from the previous sample with ``alter`` and runs ``op``.
  The results of each ``op`` are taken from ngspice's data callback (one call
  per operating point, instead of one ``ngGet_Vec_Info`` look-up per vector),
  and its result set (plot) is destroyed as soon as it is read: ngspice keeps
  every plot until it is destroyed, and the kept ones make each later ``alter``
  and ``op`` slower (``benchmarks/ep/speed.py`` measures by how much).
* ``mode="reload"``: the shared library, but the deck of every sample is
  loaded afresh (``remcirc`` + ``ngSpice_Circ``), as EBANA does.
* ``mode="batch"``: one ``ngspice -b`` subprocess for the whole batch (a
  ``.control`` block alters, runs ``op`` and writes an ASCII raw file per
  sample); the fallback when the shared library cannot be loaded.

How the circuit maps to SPICE (:func:`to_netlist`):

* nodes ``i`` become ``n{i}_{name}`` (lower case, ``[a-z0-9_]``; ground is ``0``);
* resistors ``r{k}`` of resistance ``1 / g`` (left out where ``g = 0``);
* grounded voltage sources ``vs{k}``; ngspice's branch current flows *into*
  the source's + terminal, so the current delivered into the node is its negative;
* diode ``k`` of group ``g``: a bias source ``vb_g{g}k{k} anode x_g{g}k{k}``
  (so the element sees ``V(anode) - V(cathode) - bias_v``) in series with the
  element's own SPICE lines (:meth:`TwoTerminal.spice`) from ``x_g{g}k{k}``
  to the cathode;
* amplifier ``k``: ``e{k} ea{k} 0 in 0 gain`` holds the output, a 0 V
  source ``vamp{k} ea{k} out`` senses the current ``I`` it delivers into the
  output node, and ``f{k} in 0 vamp{k} current_gain`` draws
  ``current_gain * I`` out of the input node (as :func:`kcl_currents`);
* current sources ``is{k} 0 node`` inject ``current_a`` into their node.

Parity with the native solver, and what is *not* identical:

* ngspice-39 computes ``V_T = k T / q`` with the CODATA 2014 constants
  (``k = 1.38064852e-23``, ``q = 1.6021766208e-19``, its ``const.h``) while
  :class:`~inmaterio.circuits.elements.ShockleyDiode` uses CODATA 2018: at
  the same temperature their ``V_T`` differ by 1.4e-7 relative (0.1 uV at
  0.6 V). The deck therefore runs ngspice at the temperature
  ``T * (k18/q18) / (k14/q14)`` (``.options temp = tnom =``, so ``I_s`` is
  not rescaled), which makes ngspice's ``V_T`` equal ours to rounding.
* ngspice adds its ``gmin`` across every junction; ``.options gmin`` is set
  to the smallest ``gmin_s`` of the Shockley diodes and a resistor adds the
  rest where a diode's ``gmin_s`` is larger.
* ngspice's diode leaves the Shockley law in deep reverse bias
  (``v < -3 n V_T``: ``i = -I_s (1 + (3 n V_T / (e v))^3)``): at most
  ``0.05 I_s`` (5e-14 A for ``I_s = 1e-12``) away from ours, which moves a
  node behind a 1e-7 S resistor by at most ~0.5 uV.
* The Shockley exponential is continued linearly above ``80 n V_T`` by our
  model only; circuits whose diodes see more than ~2 V forward differ.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from inmaterio.circuits.elements import BOLTZMANN_J_PER_K, ELEMENTARY_CHARGE_C, ShockleyDiode
from inmaterio.circuits.netlist import DTYPE, GROUND, Circuit
from inmaterio.circuits.solve.native import DCSolution, kcl_currents
from inmaterio.errors import ConfigError, SimulationError

__all__ = [
    "NGSPICE_K_OVER_Q",
    "NgspiceShared",
    "ngspice_available",
    "solve_ngspice",
    "to_netlist",
]

#: ``k / q`` (V/K) that ngspice-39 uses (CODATA 2014, ``src/include/ngspice/const.h``).
NGSPICE_K_OVER_Q = 1.38064852e-23 / 1.6021766208e-19
_OUR_K_OVER_Q = BOLTZMANN_J_PER_K / ELEMENTARY_CHARGE_C
_C_TO_K = 273.15  # ngspice's CONSTCtoK
_DEFAULT_TEMPERATURE_K = 300.15
_DEFAULT_GMIN_S = 1e-12
#: Resistance standing in for a resistor whose conductance is 0 in some samples only (shared mode).
_OPEN_OHM = 1e30
#: Convergence options, far tighter than SPICE's defaults (reltol 1e-3, abstol 1e-12, vntol 1e-6). Newton's
#: last step leaves an error far below the step it tests, so the answer is exact to ~1e-12 V. ``reltol`` below
#: ~1e-9 makes ngspice's direct Newton fail its own convergence test on rounding noise, and its fallbacks
#: (gmin and source stepping, then a "transient op" with shunts) return a perturbed answer.
OPTIONS = "reltol=1e-6 abstol=1e-15 vntol=1e-10 itl1=1000"

_MISSING = "ngspice not found: install it with `apt-get install ngspice libngspice0`"
_LIB_NAMES = ("libngspice.so.0", "libngspice.so", "/usr/lib/x86_64-linux-gnu/libngspice.so.0")


# ----------------------------------------------------------------------------------------------- deck
def _num(x) -> str:
    return repr(float(x))


def _value(t: torch.Tensor, sample: int) -> torch.Tensor:
    return t[sample] if t.dim() == 2 else t


def spice_node_names(circuit: Circuit) -> list[str]:
    """SPICE-safe, unique node names: ``n{i}_{name}`` lower-cased, other characters as ``_`` (at most 40 long)."""
    out = []
    for i, name in enumerate(circuit.node_names):
        clean = re.sub(r"[^a-z0-9_]", "_", name.lower())[:32]
        out.append(f"n{i}_{clean}" if clean else f"n{i}")
    return out


def _check_sample(circuit: Circuit, sample: int) -> int:
    b = circuit.batch_size or 1
    if not 0 <= sample < b:
        raise ConfigError(f"sample {sample} outside the circuit's batch [0, {b - 1}]")
    return b


def _spice_temperature(circuit: Circuit) -> tuple[float, float]:
    """The temperature (K) of the Shockley diodes (one for the circuit), and the smallest gmin_s."""
    shockley = [g.model for g in circuit.diodes if isinstance(g.model, ShockleyDiode)]
    temps = {m.temperature_k for m in shockley}
    if len(temps) > 1:
        raise ConfigError(f"ngspice export: Shockley diodes at different temperatures {sorted(temps)} K are not supported")
    temperature = temps.pop() if temps else _DEFAULT_TEMPERATURE_K
    gmin = min((m.gmin_s for m in shockley), default=_DEFAULT_GMIN_S)
    return temperature, gmin


def _deck_lines(circuit: Circuit, sample: int, *, title: str, keep_resistors: torch.Tensor | None = None) -> list[str]:
    _check_sample(circuit, sample)
    nodes = spice_node_names(circuit)
    node = lambda i: "0" if int(i) == GROUND else nodes[int(i)]  # noqa: E731
    lines = [title.replace("\n", " ")]
    temperature_k, gmin = _spice_temperature(circuit)
    ng_temperature_k = temperature_k * _OUR_K_OVER_Q / NGSPICE_K_OVER_Q
    celsius = _num(ng_temperature_k - _C_TO_K)
    lines.append(f".options temp={celsius} tnom={celsius} gmin={_num(gmin)} {OPTIONS}")
    lines.append(f"* temperature {temperature_k} K in ngspice's CODATA-2014 units (V_T equal to inmaterio's CODATA-2018 V_T)")
    g = _value(circuit.conductance_s, sample)
    for k, (a, c) in enumerate(circuit.resistor_nodes.tolist()):
        gk = float(g[k])
        keep = bool(keep_resistors[k]) if keep_resistors is not None else gk > 0
        if keep:
            lines.append(f"r{k} {node(a)} {node(c)} {_num(1.0 / gk) if gk > 0 else _num(_OPEN_OHM)}")
    sv = _value(circuit.source_v, sample)
    for k, n in enumerate(circuit.source_nodes.tolist()):
        lines.append(f"vs{k} {node(n)} 0 dc {_num(sv[k])}")
    for gi, group in enumerate(circuit.diodes):
        model = group.model
        extra_gmin = model.gmin_s - gmin if isinstance(model, ShockleyDiode) else 0.0
        for k, (a, c) in enumerate(zip(group.anode.tolist(), group.cathode.tolist())):
            name = f"g{gi}k{k}"
            internal = f"x_{name}"
            lines.append(f"vb_{name} {node(a)} {internal} dc {_num(group.bias_v[k])}")
            lines.extend(model.spice(name, internal, node(c)))
            if extra_gmin > 0:
                lines.append(f"rgmin_{name} {internal} {node(c)} {_num(1.0 / extra_gmin)}")
    gain, cg = _value(circuit.gain, sample), _value(circuit.current_gain, sample)
    for k, (i, o) in enumerate(circuit.amplifier_nodes.tolist()):
        lines.append(f"e{k} ea{k} 0 {node(i)} 0 {_num(gain[k])}")
        lines.append(f"vamp{k} ea{k} {node(o)} dc 0")
        if int(i) != GROUND:
            lines.append(f"f{k} {node(i)} 0 vamp{k} {_num(cg[k])}")
    ia = _value(circuit.current_a, sample)
    for k, n in enumerate(circuit.current_nodes.tolist()):
        lines.append(f"is{k} 0 {node(n)} dc {_num(ia[k])}")
    return lines


def to_netlist(circuit: Circuit, sample: int = 0, *, title: str = "inmaterio circuit") -> str:
    """A complete SPICE deck (``.op``) for circuit ``sample`` of the batch.

    Values of shape ``(k,)`` are shared by the batch, ``(batch, k)`` taken at
    row ``sample``. See the module docstring for the element mapping and the
    temperature / ``gmin`` options that make ngspice's diodes equal ours.

    Raises:
        ConfigError: ``sample`` outside the batch, or Shockley diodes at different temperatures.
    """
    lines = _deck_lines(circuit, sample, title=title)
    return "\n".join(lines + [".op", ".end"]) + "\n"


def _alter_commands(circuit: Circuit, sample: int, previous: int | None, kept: torch.Tensor) -> list[str]:
    """``alter`` commands that turn the loaded values of sample ``previous`` into those of ``sample``."""
    cmds: list[str] = []

    def changed(t: torch.Tensor) -> list[int]:
        if t.dim() != 2 or previous == sample:
            return []
        if previous is None:
            return list(range(t.shape[1]))
        return (t[sample] != t[previous]).nonzero().flatten().tolist()

    g = circuit.conductance_s
    for k in changed(g):
        if bool(kept[k]):
            gk = float(g[sample, k])
            cmds.append(f"alter r{k} = {_num(1.0 / gk) if gk > 0 else _num(_OPEN_OHM)}")
    for k in changed(circuit.source_v):
        cmds.append(f"alter vs{k} dc = {_num(circuit.source_v[sample, k])}")
    for k in changed(circuit.current_a):
        cmds.append(f"alter is{k} dc = {_num(circuit.current_a[sample, k])}")
    for k in changed(circuit.gain):
        cmds.append(f"alter e{k} gain = {_num(circuit.gain[sample, k])}")
    for k in changed(circuit.current_gain):
        if int(circuit.amplifier_nodes[k, 0]) != GROUND:
            cmds.append(f"alter f{k} gain = {_num(circuit.current_gain[sample, k])}")
    return cmds


def _kept_resistors(circuit: Circuit) -> torch.Tensor:
    g = circuit.conductance_s
    return (g > 0).any(0) if g.dim() == 2 else g > 0


def _vector_names(circuit: Circuit) -> tuple[list[str], list[str], list[str]]:
    """Names of the ngspice vectors holding node voltages, source branch currents and amplifier currents."""
    return (
        spice_node_names(circuit),
        [f"vs{k}#branch" for k in range(len(circuit.source_nodes))],
        [f"vamp{k}#branch" for k in range(len(circuit.amplifier_nodes))],
    )


# ----------------------------------------------------------------------------------- availability
def _find_library() -> str | None:
    found = ctypes.util.find_library("ngspice")
    candidates = ([found] if found else []) + list(_LIB_NAMES)
    for name in candidates:
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            continue
    return None


def _find_executable() -> str | None:
    return shutil.which("ngspice")


def ngspice_available(mode: str = "any") -> bool:
    """Whether ngspice can run: ``"shared"`` (the library), ``"batch"`` (the executable) or ``"any"``."""
    if mode == "shared":
        return _find_library() is not None
    if mode == "batch":
        return _find_executable() is not None
    return _find_library() is not None or _find_executable() is not None


# ------------------------------------------------------------------------------------- shared lib
_SendChar = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p)
_SendStat = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p)
_ControlledExit = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_bool, ctypes.c_bool, ctypes.c_int, ctypes.c_void_p)
_SendData = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_SendInitData = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)
_BGThreadRunning = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_bool, ctypes.c_int, ctypes.c_void_p)


class _VecValues(ctypes.Structure):
    """ngspice's ``vecvalues``: one vector's value at the current point."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("creal", ctypes.c_double),
        ("cimag", ctypes.c_double),
        ("is_scale", ctypes.c_bool),
        ("is_complex", ctypes.c_bool),
    ]


class _VecValuesAll(ctypes.Structure):
    """ngspice's ``vecvaluesall``: every vector of the running analysis at one point."""

    _fields_ = [
        ("veccount", ctypes.c_int),
        ("vecindex", ctypes.c_int),
        ("vecsa", ctypes.POINTER(ctypes.POINTER(_VecValues))),
    ]


_FALLBACK = "Transient op started"
_ERROR_PATTERN = re.compile(r"error|singular|iteration limit|no convergence|not converge|timestep too small|fatal", re.I)


class NgspiceShared:
    """The process's one ``libngspice`` instance, guarded by a lock (ngspice keeps global state).

    Obtain it with :meth:`get`. :meth:`solve` runs a batch in ``"shared"``
    (load once, ``alter`` per sample) or ``"reload"`` mode (a fresh deck per
    sample). ngspice's messages on stderr, an ``op`` that produced no new
    plot or no data, and non-finite results raise :class:`SimulationError`
    naming the sample.

    The instance runs ngspice single-threaded (``set num_threads=1``: its
    OpenMP loops serve only BSIM transistor models, which these decks do not
    contain, and its default of 2 threads would also change the OpenMP thread
    count torch shares). The values of an ``op`` arrive through the
    ``SendData`` callback while ``op`` runs; the index of each wanted vector
    in ngspice's list is looked up by name on the first ``op`` after a load.
    """

    _instance: NgspiceShared | None = None
    _lock = threading.RLock()

    def __init__(self, library: str) -> None:
        self._lib = ctypes.CDLL(library)
        lib = self._lib
        lib.ngSpice_Init.argtypes = [
            _SendChar,
            _SendStat,
            _ControlledExit,
            _SendData,
            _SendInitData,
            _BGThreadRunning,
            ctypes.c_void_p,
        ]
        lib.ngSpice_Init.restype = ctypes.c_int
        lib.ngSpice_Command.argtypes = [ctypes.c_char_p]
        lib.ngSpice_Command.restype = ctypes.c_int
        lib.ngSpice_Circ.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.ngSpice_Circ.restype = ctypes.c_int
        lib.ngSpice_CurPlot.argtypes = []
        lib.ngSpice_CurPlot.restype = ctypes.c_char_p
        lib.ngSpice_AllPlots.argtypes = []
        lib.ngSpice_AllPlots.restype = ctypes.POINTER(ctypes.c_char_p)
        self._messages: list[str] = []
        self._exited: str | None = None
        # keep the callbacks referenced for the lifetime of the library
        self._callbacks = (
            _SendChar(self._on_char),
            _SendStat(lambda msg, ident, user: 0),
            _ControlledExit(self._on_exit),
            _SendData(self._on_data),
            _SendInitData(lambda info, ident, user: 0),  # ngspice sends no data unless both are set
            _BGThreadRunning(lambda running, ident, user: 0),
        )
        rc = lib.ngSpice_Init(*self._callbacks, None)
        if rc != 0:
            raise SimulationError(f"ngSpice_Init failed with code {rc}")
        self._plots_since_destroy = 0
        # the vectors wanted from the next op, their positions in ngspice's list (found by name on the first op
        # after a load), and the values the data callback read
        self._wanted: list[bytes] | None = None
        self._index: list[int] | None = None
        self._index_max = -1
        self._values: list[float] | None = None
        self._missing: str | None = None
        self.command("set noaskquit")
        self.command("set num_threads=1")

    # callbacks ------------------------------------------------------------------------------------
    def _on_char(self, msg: bytes, ident: int, user) -> int:
        self._messages.append(msg.decode(errors="replace"))
        return 0

    def _on_exit(self, status: int, unload: bool, quit_: bool, ident: int, user) -> int:
        self._exited = f"ngspice asked to exit with status {status}"
        return 0

    def _on_data(self, data, count: int, ident: int, user) -> int:
        """ngspice's ``SendData``: keep the values of the wanted vectors (an op sends one point)."""
        if self._wanted is None:
            return 0
        point = ctypes.cast(data, ctypes.POINTER(_VecValuesAll)).contents
        vectors = point.vecsa
        index = self._index
        # the positions are fixed while one circuit stays loaded; the first and last wanted names are checked on
        # every point, and a mismatch (or the first point after a load) looks them all up again
        if (
            index is None
            or self._index_max >= point.veccount
            or (index and vectors[index[0]].contents.name != self._wanted[0])
            or (index and vectors[index[-1]].contents.name != self._wanted[-1])
        ):
            position = {vectors[i].contents.name: i for i in range(point.veccount)}
            missing = [name.decode() for name in self._wanted if name not in position]
            if missing:
                self._missing = ", ".join(missing[:5])
                return 0
            index = self._index = [position[name] for name in self._wanted]
            self._index_max = max(index, default=-1)
        self._values = [vectors[i].contents.creal for i in index]
        return 0

    # public ---------------------------------------------------------------------------------------
    @classmethod
    def get(cls) -> NgspiceShared:
        """The process-wide instance (the library is loaded and initialised on first use)."""
        with cls._lock:
            if cls._instance is None:
                lib = _find_library()
                if lib is None:
                    raise SimulationError(_MISSING + " (libngspice0 provides the shared library)")
                cls._instance = cls(lib)
            return cls._instance

    def command(self, cmd: str) -> list[str]:
        """Run one ngspice command; returns the messages it printed, raises on an error message."""
        with self._lock:
            self._messages.clear()
            rc = self._lib.ngSpice_Command(cmd.encode())
            messages = list(self._messages)
            stderr = [m.removeprefix("stderr ").strip() for m in messages if m.startswith("stderr")]
            if rc != 0 or any(_ERROR_PATTERN.search(m) for m in stderr) or self._exited:
                errors = [m for m in stderr if m and not m.startswith(("Note:", "Warning:", "Trying gmin", "Supplies reduced"))]
                detail = "; ".join(errors)[:1000] or self._exited or f"return code {rc}"
                self._exited = None
                raise SimulationError(f"ngspice command {cmd!r} failed: {detail}")
            return messages

    def load(self, deck: str) -> None:
        """Load a deck (replacing the circuit loaded before)."""
        with self._lock:
            self._messages.clear()
            self._lib.ngSpice_Command(b"remcirc")  # nothing loaded is fine
            self._lib.ngSpice_Command(b"destroy all")
            self._plots_since_destroy = 0
            self._index = None
            self._messages.clear()
            lines = [line.encode() for line in deck.splitlines() if line.strip()]
            array = (ctypes.c_char_p * (len(lines) + 1))(*lines, None)
            rc = self._lib.ngSpice_Circ(array)
            stderr = [m.removeprefix("stderr ").strip() for m in self._messages if m.startswith("stderr")]
            if rc != 0 or any(_ERROR_PATTERN.search(m) for m in stderr):
                detail = "; ".join(m for m in stderr if m)[:1000] or f"return code {rc}"
                raise SimulationError(f"ngspice could not load the circuit: {detail}")

    def _operating_point(self, sample: int) -> list[float]:
        """Run ``op``; the values of the wanted vectors (``self._wanted``), in that order."""
        before = self._lib.ngSpice_CurPlot()
        self._values = self._missing = None
        try:
            messages = self.command("op")
        except SimulationError as err:
            raise SimulationError(f"ngspice: no DC operating point for sample {sample}: {err}") from None
        finally:
            self._plots_since_destroy += 1
        if any(_FALLBACK in m for m in messages):
            raise SimulationError(
                f"ngspice: no DC operating point for sample {sample}: Newton's method, gmin and source stepping "
                f"failed, and ngspice's transient-op fallback (shunted nodes) is not an exact operating point"
            )
        after = self._lib.ngSpice_CurPlot()
        if after == before or not (after or b"").startswith(b"op"):
            raise SimulationError(f"ngspice: no DC operating point for sample {sample} (no new plot after op)")
        if self._missing is not None:
            raise SimulationError(f"ngspice: sample {sample}: the operating point has no vector(s) {self._missing}")
        if self._values is None:
            raise SimulationError(f"ngspice: sample {sample}: op sent no data (libngspice without the SendData callback?)")
        return self._values

    def _destroy_results(self) -> None:
        """Destroy every result set (plot) but ngspice's constants."""
        self._lib.ngSpice_Command(b"destroy all")
        self._plots_since_destroy = 0

    def plots(self) -> list[str]:
        """Names of the result sets (plots) ngspice holds now, as ngspice lists them (``const`` is always there)."""
        with self._lock:
            names = self._lib.ngSpice_AllPlots()
            out = []
            while names and names[len(out)] is not None:
                out.append(names[len(out)].decode())
            return out

    def solve(
        self, circuit: Circuit, *, batch_size: int | None = None, mode: str = "shared", destroy_every: int = 1
    ) -> DCSolution:
        """Operating points of every circuit of the batch, one ngspice ``op`` per sample.

        Args:
            circuit: the circuits (values ``(k,)`` shared, ``(batch, k)`` per circuit).
            batch_size: number of circuits when every value is shared (default 1).
            mode: ``"shared"`` (circuit kept loaded, ``alter`` per sample) or
                ``"reload"`` (deck reloaded per sample).
            destroy_every: ngspice's result sets (plots) are destroyed after
                every ``destroy_every`` operating points and at the end of the
                batch. 1 (the default, fastest) destroys each as soon as it is
                read; larger values keep up to that many, which slows every
                later ``alter`` and ``op`` (inmaterio's driver before 2026-12
                kept up to 200): they exist to measure the difference
                (``benchmarks/ep/speed.py``). The answers do not depend on it.

        Returns:
            a :class:`DCSolution` (see :func:`solve_ngspice`).
        """
        if mode not in ("shared", "reload"):
            raise ConfigError(f"NgspiceShared mode must be 'shared' or 'reload', got {mode!r}")
        if destroy_every < 1:
            raise ConfigError(f"destroy_every must be at least 1 operating point, got {destroy_every}")
        b = _batch_size(circuit, batch_size)
        node_vecs, src_vecs, amp_vecs = _vector_names(circuit)
        n_nodes, n_src = len(node_vecs), len(src_vecs)
        kept = _kept_resistors(circuit)
        rows: list[list[float]] = []
        with self._lock:
            self._wanted = [name.encode() for name in node_vecs + src_vecs + amp_vecs]
            previous: int | None = None
            try:
                for s in range(b):
                    try:
                        if mode == "reload":
                            self.load(to_netlist(circuit, s))
                        elif s == 0:
                            deck = _deck_lines(circuit, 0, title="inmaterio circuit", keep_resistors=kept) + [".end"]
                            self.load("\n".join(deck))
                            previous = 0
                        else:
                            for cmd in _alter_commands(circuit, s, previous, kept):
                                self.command(cmd)
                            previous = s
                    except SimulationError as err:
                        raise SimulationError(f"sample {s}: {err}") from None
                    rows.append(self._operating_point(s))
                    if self._plots_since_destroy >= destroy_every:
                        self._destroy_results()
            finally:
                self._wanted = self._values = None
                self._destroy_results()
        values = torch.tensor(rows, dtype=DTYPE).reshape(b, len(node_vecs) + n_src + len(amp_vecs))
        return _solution(circuit, values[:, :n_nodes], -values[:, n_nodes : n_nodes + n_src], values[:, n_nodes + n_src :])


# -------------------------------------------------------------------------------------- batch mode
def _parse_raw(path: Path) -> dict[str, float]:
    """The variables of an ASCII raw file of one point: ``{name: value}``."""
    text = path.read_text()
    head, _, values = text.partition("Values:")
    names = []
    in_vars = False
    for line in head.splitlines():
        if line.startswith("Variables:"):
            in_vars = True
            continue
        if in_vars and line.strip():
            names.append(line.split()[1].lower())
    numbers = values.split()
    data = [float(x) for x in numbers[1 : 1 + len(names)]]  # the first token is the point index
    if len(data) != len(names):
        raise SimulationError(f"ngspice raw file {path} is truncated: {len(data)} values for {len(names)} variables")
    out = {}
    for name, value in zip(names, data):
        out[name] = value
        match = re.fullmatch(r"v\((.*)\)", name)
        if match:
            out[match.group(1)] = value
        match = re.fullmatch(r"i\((.*)\)", name)
        if match:
            out[f"{match.group(1)}#branch"] = value
    return out


def _one_sample(circuit: Circuit, s: int) -> Circuit:
    """The circuit of sample ``s`` alone (per-circuit values sliced to one row)."""
    fields = ("conductance_s", "source_v", "gain", "current_gain", "current_a")
    return circuit.with_values(**{f: getattr(circuit, f)[s] for f in fields if getattr(circuit, f).dim() == 2})


def _solve_batch_mode(circuit: Circuit, b: int, *, timeout_s: float = 600.0, first_sample: int | None = None) -> DCSolution:
    exe = _find_executable()
    if exe is None:
        raise SimulationError(_MISSING)
    node_vecs, src_vecs, amp_vecs = _vector_names(circuit)
    kept = _kept_resistors(circuit)
    with tempfile.TemporaryDirectory(prefix="inmaterio_ngspice_") as tmp:
        tmpdir = Path(tmp)
        control = [".control", "set filetype=ascii", "set noaskquit"]
        previous = 0
        for s in range(b):
            if s > 0:
                control.extend(_alter_commands(circuit, s, previous, kept))
                previous = s
            control += ["op", f"write {tmpdir / f's{s}.raw'}", "destroy all"]
        control += ["quit", ".endc"]
        deck = _deck_lines(circuit, 0, title="inmaterio circuit", keep_resistors=kept) + control + [".end"]
        path = tmpdir / "deck.cir"
        path.write_text("\n".join(deck) + "\n")
        try:
            proc = subprocess.run([exe, "-b", str(path)], capture_output=True, text=True, timeout=timeout_s, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise SimulationError(f"ngspice -b did not finish within {timeout_s} s ({circuit.describe()})") from None
        if _FALLBACK in proc.stdout + proc.stderr:
            # ngspice's messages do not say which sample: find it by solving the samples one by one
            failing = 0
            if b > 1 and first_sample is None:
                for s in range(b):
                    try:
                        _solve_batch_mode(_one_sample(circuit, s), 1, timeout_s=timeout_s, first_sample=s)
                    except SimulationError:
                        failing = s
                        break
            raise SimulationError(
                f"ngspice -b: no DC operating point for sample {failing if first_sample is None else first_sample}: "
                "Newton's method, gmin and source stepping failed, and ngspice's transient-op fallback (shunted "
                "nodes) is not an exact operating point"
            )
        volts = torch.empty(b, circuit.n_nodes, dtype=DTYPE)
        src = torch.empty(b, len(src_vecs), dtype=DTYPE)
        amp = torch.empty(b, len(amp_vecs), dtype=DTYPE)
        for s in range(b):
            raw = tmpdir / f"s{s}.raw"
            if not raw.exists():
                errors = [line for line in (proc.stderr + proc.stdout).splitlines() if _ERROR_PATTERN.search(line)]
                raise SimulationError(
                    f"ngspice -b: no DC operating point for sample {s if first_sample is None else first_sample} (exit code {proc.returncode}): "
                    + ("; ".join(errors[:5]) or proc.stderr.strip()[-500:])
                )
            values = _parse_raw(raw)
            try:
                volts[s] = torch.tensor([values[v] for v in node_vecs], dtype=DTYPE)
                src[s] = torch.tensor([-values[v] for v in src_vecs], dtype=DTYPE)
                amp[s] = torch.tensor([values[v] for v in amp_vecs], dtype=DTYPE)
            except KeyError as err:
                raise SimulationError(f"ngspice -b: sample {s} has no vector {err}") from None
    return _solution(circuit, volts, src, amp)


# ------------------------------------------------------------------------------------------- common
def _batch_size(circuit: Circuit, batch_size: int | None) -> int:
    if circuit.batch_size is not None and batch_size is not None and batch_size != circuit.batch_size:
        raise SimulationError(f"batch_size {batch_size} disagrees with the circuit's per-circuit values ({circuit.batch_size})")
    return circuit.batch_size or batch_size or 1


def _solution(circuit: Circuit, volts: torch.Tensor, src: torch.Tensor, amp: torch.Tensor) -> DCSolution:
    bad = ~torch.isfinite(volts).all(1)
    if bad.any():
        raise SimulationError(f"ngspice returned non-finite voltages for sample(s) {bad.nonzero().flatten()[:5].tolist()}")
    b, n = volts.shape
    net, _ = kcl_currents(circuit, volts)
    free = torch.ones(n, dtype=torch.bool)
    free[circuit.source_nodes] = False
    free[circuit.amplifier_nodes[:, 1]] = False
    residual = net[:, :n][:, free].abs().amax(1) if free.any() else torch.zeros(b, dtype=DTYPE)
    return DCSolution(volts, src, amp, torch.zeros(b, dtype=torch.long), residual)


def solve_ngspice(circuit: Circuit, *, batch_size: int | None = None, mode: str = "shared") -> DCSolution:
    """DC operating points of a batch of circuits computed by ngspice, one ``op`` per sample.

    Args:
        circuit: the circuits (values ``(k,)`` shared, ``(batch, k)`` per circuit).
        batch_size: number of circuits when every value is shared (default 1).
        mode: ``"shared"`` (libngspice, circuit kept loaded, ``alter`` per
            sample), ``"reload"`` (libngspice, deck reloaded per sample) or
            ``"batch"`` (an ``ngspice -b`` subprocess).

    Returns:
        a :class:`DCSolution` with ``voltages_v (B, n)``,
        ``source_current_a (B, S)`` (delivered into the source's node),
        ``amplifier_current_a (B, A)`` (delivered into the output node),
        ``iterations`` 0 (not reported by ngspice) and ``kcl_residual_a``
        (the largest KCL residual at the free nodes from :func:`kcl_currents`).

    Raises:
        SimulationError: ngspice missing (how to install it), an ngspice
            error or a sample without an operating point (names the sample).
    """
    b = _batch_size(circuit, batch_size)
    if mode in ("shared", "reload"):
        if _find_library() is None:
            raise SimulationError(_MISSING + " (libngspice0 provides the shared library; mode='batch' needs only the executable)")
        threads = torch.get_num_threads()
        try:
            return NgspiceShared.get().solve(circuit, batch_size=b, mode=mode)
        finally:
            # libngspice's OpenMP start-up resets the process's OpenMP thread count to the number of cores,
            # which torch shares: restore it (2 threads on a busy 2-core machine made our solves 30x slower)
            torch.set_num_threads(threads)
    if mode == "batch":
        return _solve_batch_mode(circuit, b)
    raise ConfigError(f"solve_ngspice mode must be 'shared', 'reload' or 'batch', got {mode!r}")
