"""From a run folder to its :class:`~inmaterio.costs.report.CostReport`: which runs are understood and how.

Run folders keep configs and metrics, not always weights, so a cost is
rebuilt from what the folder records; each report's notes say what was
taken from the folder and what was assumed. Supported kinds:

- ``inmaterio.task.crossbar_inference`` with an ``mlp`` model: the MLP's dense
  layers on PCM tiles (analog cells on differential pairs, the run's DAC and
  ADC bits) under the ``pcm_analog`` macro preset, 128x128 subarrays; the
  digital baseline runs the same layers in int8. Its ``cnn`` model: likewise,
  each convolution unrolled by im2col (``k*k*c_in`` rows, ``c_out`` columns) and
  applied once per output position (the output sizes traced through the study's
  own network on a 28x28 image), the linear read-out as a dense layer. Its
  ``dnpu_mnist`` model: as ``mnist_10dnpu`` below, with the run's DAC and ADC bits.
- ``inmaterio.task.pulsed_mnist``: inference of its MLP on the
  ``lu2021_rram40`` macro at the midpoint of the trained devices' conductance
  range (from the run's metrics); the pulsed training is not costed.
- ``inmaterio.task.mnist_10dnpu`` with the ``dnpu`` model: the linear layer
  ``784 x 10 m`` on PCM tiles (8-bit inputs) and 10 DNPU evaluations per image;
  ``inmaterio.task.rings_study``: the 2-2-1 network (2 DNPUs, then 1; the
  single-DNPU architecture is its output row). The trained control voltages
  are not stored: a DNPU's power is the mean over operating points drawn
  uniformly in the electrodes' ranges (seeded), on the run's surrogate (the
  bundled one by default). The digital baseline runs the linear layer and a
  surrogate MLP per DNPU evaluation in int8 (a digital emulator of the nodes).
- ``inmaterio.task.gates``: one DNPU per gate at its trained control voltages
  (``controls.json``) and the four input pairs (0 / 1 at the low / high end of
  the input electrodes' ranges); rows are alternatives (the total is their mean).
- ``inmaterio.task.ep_learning``: the study's diode network (its dataset's
  sizes, ``diode_bias_v``, ``gain``), solved on the first test samples of
  seed 0. The trained conductances are not stored in the folder: the circuit
  is costed at seed 0's *initial* conductances (within the same bounds).
  The digital baseline runs the two crossbars as dense int8 layers.
- ``inmaterio.task.ep_mnist``: the study's 784x2-H-10 circuit, solved on the
  first 64 MNIST test images, at the trained conductances of
  ``training/checkpoint.pt`` when the folder holds it (else the seed's initial
  ones, said in the notes); the nudged phases at the free phase's power.
- ``inmaterio.task.drn_mnist``: the deep resistive network (ideal diodes) of
  the EP training of seed 0 (``ep/seed_0/checkpoint.pt``; else seed 0's initial
  conductances, said in the notes) on the first 64 MNIST test images, solved to
  convergence, the nudged phases solved towards the images' labels. The DRN is
  normalised: its largest conductance is taken as 10 µS and a white pixel's
  source (``input_gain``) as 0.5 V, the bounds of the ``ep_mnist`` circuit.
  The MNIST images come from the run's ``data.dir`` (``config.yaml``) or
  ``$INMATERIO_MNIST_DIR``.

Anything else raises :class:`~inmaterio.errors.RunFolderError` naming the kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from inmaterio.costs.circuits import CircuitCost, SettlingAssumption, drn_circuit_cost, ep_circuit_cost
from inmaterio.costs.digital import HOROWITZ_45NM, digital_cost
from inmaterio.costs.dnpu import DEFAULT_DNPU, DnpuCost, dnpu_evaluation_cost, surrogate_ops
from inmaterio.costs.mapping import ArrayGeometry, LayerShape
from inmaterio.costs.neurosim import MACRO_PRESETS, MacroConfig
from inmaterio.costs.report import CostLine, CostReport, crossbar_lines
from inmaterio.errors import InmaterioError, RunFolderError
from inmaterio.fileio import read_json
from inmaterio.runs import read_run

__all__ = ["COST_FILES", "SUPPORTED_KINDS", "cnn_layers", "cost_of_run", "write_cost_files"]

SUPPORTED_KINDS = (
    "inmaterio.task.crossbar_inference",
    "inmaterio.task.ep_learning",
    "inmaterio.task.ep_mnist",
    "inmaterio.task.drn_mnist",
    "inmaterio.task.mnist_10dnpu",
    "inmaterio.task.rings_study",
    "inmaterio.task.pulsed_mnist",
    "inmaterio.task.gates",
)


def _get(data: Any, *keys: str, where: str) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            raise RunFolderError(f"{where} has no '{'.'.join(keys)}'; the run folder is incomplete or of another version")
        data = data[key]
    return data


def _digital_line(layers: list[LayerShape]) -> CostLine:
    d = digital_cost(layers, "int8")
    return CostLine(
        "digital baseline", "digital int8, 45 nm", d.energy_j, None, None, d.ops,
        f"compute {d.compute_j:.3g} J + memory {d.memory_j:.3g} J ({d.memory})",
    )  # fmt: skip


def _digital_assumptions() -> dict[str, Any]:
    return {f"digital.{k}": v for k, v in HOROWITZ_45NM.model_dump().items()} | {"digital.precision": "int8"}


def _pcm_macro(input_bits: int, adc_bits: int | None = None) -> tuple[MacroConfig, ArrayGeometry]:
    """The ``pcm_analog`` macro with the run's DAC (input) and ADC bits, and its analog differential-pair geometry."""
    preset = MACRO_PRESETS["pcm_analog"]
    update: dict[str, Any] = {"input_bits": int(input_bits)}
    if adc_bits is not None:
        update["adc"] = preset.adc.model_copy(update={"bits": int(adc_bits)})
    macro = preset.model_copy(update=update)
    return macro, ArrayGeometry(rows=macro.rows, cols=macro.cols, cell_bits=None, differential=True)


def _crossbar_assumptions(macro: MacroConfig, geometry: ArrayGeometry) -> dict[str, Any]:
    """The macro's and the mapping's assumptions, prefixed ``macro.`` and ``mapping.``."""
    mapping = {f"mapping.{k}": v for k, v in geometry.model_dump().items()}
    return {f"macro.{k}": v for k, v in macro.assumptions().items()} | mapping


def _dense_layers(sizes: list[int]) -> list[LayerShape]:
    """The fully connected layers ``sizes[0] -> sizes[1] -> ...``, named ``dense<i> <in>x<out>``."""
    return [LayerShape(name=f"dense{i + 1} {a}x{b}", inputs=a, outputs=b) for i, (a, b) in enumerate(zip(sizes, sizes[1:]))]


def _crossbar_report(folder: Path, record: dict[str, Any]) -> CostReport:
    config = _get(record, "identity", "config", where=f"'{folder}/run.json'")
    model = _get(config, "task", "model", where=f"'{folder}/run.json'")
    metrics = read_json(folder / "metrics.json", RunFolderError)
    periphery = _get(metrics, "periphery", where=f"'{folder}/metrics.json'")
    base = metrics.get("baselines", {}).get("plain", {}).get("periphery", {})
    percent = 100 * float(base["mean"]) if "mean" in base else None
    accuracy = None if percent is None else f"{percent:.2f} % (plain training, with periphery, mean of {base['n']} seeds)"
    if model.get("kind") == "dnpu_mnist":
        return _dnpu_mnist(folder, config, int(model["inputs_per_node"]), periphery["dac_bits"], periphery["adc_bits"],
                           accuracy, percent)  # fmt: skip
    if model.get("kind") == "cnn":
        layers = cnn_layers(model)
    elif model.get("kind") == "mlp":
        layers = _dense_layers([784, *_get(model, "hidden", where=f"'{folder}/run.json' task.model"), 10])
    else:
        raise RunFolderError(
            f"'{folder}' is a crossbar_inference run of model kind {model.get('kind')!r}; "
            "inmaterio cost supports its 'mlp', 'cnn' and 'dnpu_mnist' models"
        )
    macro, geometry = _pcm_macro(periphery["dac_bits"], periphery["adc_bits"])
    lines = crossbar_lines(layers, geometry, macro, technology="PCM crossbar")
    assumptions = _crossbar_assumptions(macro, geometry) | _digital_assumptions()
    notes = (
        "layers from the run's config; DAC and ADC bits from its metrics; every other macro number is the pcm_analog preset",
        "inputs applied bit-serially (one read cycle per DAC bit), as NeuroSim does",
        "weights are not stored in the run folder: the array energy uses the preset's mean conductance",
    )
    if model.get("kind") == "cnn":
        assumptions["cnn.image"] = "28 x 28 pixels, 1 channel (MNIST)"
        notes += (
            "convolutions unrolled by im2col (k*k*c_in rows, c_out columns): one mat-vec per output position, the "
            "positions one after the other on one copy of the kernel; max pooling and ReLU are not costed",
            "a partly filled subarray costs a full one's mat-vec (every column converted): "
            + ", ".join(f"{line.name.split()[0]} {line.note.split('utilisation ')[-1]}" for line in lines)
            + " of their subarrays are used; copies of a small kernel working on several positions at once "
            "(NeuroSim's duplication) are not modelled",
        )
    return CostReport(f"{metrics.get('network', 'MLP')}: cost per inference", tuple(lines), assumptions,
                      _digital_line(layers), accuracy, notes, accuracy_percent=percent)  # fmt: skip


def cnn_layers(model: dict[str, Any], side: int = 28) -> list[LayerShape]:
    """The ``cnn`` model of a crossbar_inference run as layers: its convolutions (``kind="conv"``, ``positions`` the
    output pixels per image) and its linear read-out, for a ``side x side`` one-channel image.

    The sizes are traced through the study's own network (:func:`inmaterio.studies.crossbar_inference.build_digital`)
    on one image, so its kernel, stride, padding and pooling decide them.

    Raises:
        RunFolderError: a model the study does not accept, or a non-square kernel.
    """
    from inmaterio.studies.crossbar_inference import CnnModel, build_digital

    try:
        net = build_digital(CnnModel.model_validate(model), None, side * side, seed=0)
    except (InmaterioError, ValueError) as err:
        raise RunFolderError(f"the cnn model {model!r} cannot be built: {err}") from None
    shapes: dict[torch.nn.Module, tuple[int, ...]] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out: shapes.__setitem__(mod, tuple(out.shape))) for m in net.modules()
             if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]  # fmt: skip
    try:
        with torch.no_grad():
            net(torch.zeros(1, side * side))
    finally:
        for hook in hooks:
            hook.remove()
    layers, n_conv, n_dense = [], 0, 0
    for m, shape in shapes.items():
        if isinstance(m, torch.nn.Conv2d):
            k = m.kernel_size
            if k[0] != k[1]:
                raise RunFolderError(f"the cnn's kernel {k} is not square")
            n_conv += 1
            h, w = shape[2], shape[3]
            layers.append(LayerShape(name=f"conv{n_conv} {k[0]}x{k[0]} {m.in_channels}->{m.out_channels}, {h}x{w} positions",
                                     kind="conv", inputs=m.in_channels, outputs=m.out_channels, kernel=k[0], positions=h * w))  # fmt: skip
        else:
            n_dense += 1
            layers.append(LayerShape(name=f"dense{n_dense} {m.in_features}x{m.out_features}", inputs=m.in_features,
                                     outputs=m.out_features))  # fmt: skip
    return layers


def _pulsed_report(folder: Path, record: dict[str, Any]) -> CostReport:
    config = _get(record, "identity", "config", where=f"'{folder}/run.json'")
    task = _get(config, "task", where=f"'{folder}/run.json'")
    metrics = read_json(folder / "metrics.json", RunFolderError)
    device = _get(metrics, "device", where=f"'{folder}/metrics.json'")
    crop = int(_get(task, "crop", where=f"'{folder}/run.json' task"))
    sizes = [crop * crop, *_get(task, "hidden", where=f"'{folder}/run.json' task"), 10]
    layers = _dense_layers(sizes)
    g_min, g_max = float(device["g_min_ns"]), float(device["g_max_ns"])
    macro = MACRO_PRESETS["lu2021_rram40"].model_copy(update={"mean_conductance_s": 0.5 * (g_min + g_max) * 1e-9})
    geometry = ArrayGeometry(rows=macro.rows, cols=macro.cols, cell_bits=None, differential=True)
    lines = crossbar_lines(layers, geometry, macro, technology="RRAM crossbar")
    analog = [r for r in metrics.get("results", []) if r.get("run", {}).get("rule") != "digital" and "test_accuracy" in r]
    best = max(analog, key=lambda r: r["test_accuracy"]["mean"], default=None)
    percent = None if best is None else 100 * float(best["test_accuracy"]["mean"])
    accuracy = None if best is None else f"{percent:.2f} % (test, best pulsed training: {best.get('describe', best['name'])})"
    assumptions = _crossbar_assumptions(macro, geometry) | _digital_assumptions()
    notes = (
        f"inference on the trained devices ({metrics.get('device_name')}, {g_min}-{g_max} nS: the mean conductance is their "
        "midpoint); the lu2021_rram40 macro preset otherwise",
        "the energy of the pulsed training updates is not included",
    )
    return CostReport(f"MNIST {metrics.get('network', '')} on pulsed devices: cost per inference", tuple(lines), assumptions,
                      _digital_line(layers), accuracy, notes, accuracy_percent=percent)  # fmt: skip


def _circuit_lines(cost: CircuitCost, technology: str, names: dict[str, str]) -> tuple[CostLine, ...]:
    """One line per part of an EP circuit (free phase): its power times the settling time; ``names`` renames parts."""
    return tuple(
        CostLine(
            names.get(part, part),
            technology,
            power * cost.settling_s,
            cost.settling_s,
            None,
            cost.part_ops.get(part, 0),
            f"free-phase power {power:.3g} W",
        )
        for part, power in cost.parts_w.items()
    )


def _training_step_line(cost: CircuitCost, technology: str, note: str) -> CostLine:
    """One EP training step: the free and nudged phases, each settling for ``cost.settling_s``."""
    return CostLine(f"training step ({cost.phases} phases)", technology, cost.training_step_j,
                    cost.phases * cost.settling_s, None, cost.phases * cost.ops, note)  # fmt: skip


def _tellegen_note(cost: CircuitCost) -> str:
    return f"the sources deliver {cost.delivered_w:.4g} W, the parts dissipate {cost.power_w:.4g} W (Tellegen)"


def _ep_report(folder: Path, record: dict[str, Any]) -> CostReport:
    from inmaterio.circuits.examples import EXAMPLES, diode_network
    from inmaterio.studies.ep_learning import DATASETS

    config = _get(record, "identity", "config", where=f"'{folder}/run.json'")
    task = _get(config, "task", where=f"'{folder}/run.json'")
    dataset = task.get("dataset")
    if dataset not in DATASETS:
        raise RunFolderError(f"'{folder}' has dataset {dataset!r}; known: {sorted(DATASETS)}")
    n_in, n_classes, hidden, recipe = DATASETS[dataset]
    hidden = task.get("hidden") or hidden
    variant = (task.get("training") or {}).get("variant", recipe["variant"])
    model = diode_network(n_in, hidden, n_classes, seed=0, diode_bias_v=float(task.get("diode_bias_v", -0.3)),
                          gain=float(task.get("gain", 4.0)))  # fmt: skip
    data = EXAMPLES["xor" if dataset == "gates" else dataset].load(0)
    x = data.x_test[:64]
    settling = SettlingAssumption()
    with torch.no_grad():
        cost = ep_circuit_cost(model, x, variant=variant, settling=settling)
    names = {part: part.removesuffix(".conductance_s") + " (crossbar)" for part in cost.part_ops}
    lines = _circuit_lines(cost, "EP diode circuit", names)
    step = _training_step_line(cost, "EP diode circuit", f"{variant} EP; weight-update pulses not included")
    width_in = 2 * n_in + 2
    layers = [LayerShape(name="crossbar 1", inputs=width_in, outputs=hidden),
              LayerShape(name="crossbar 2", inputs=hidden + 2, outputs=2 * n_classes)]  # fmt: skip
    metrics = read_json(folder / "metrics.json", RunFolderError)
    summary = (metrics.get("summary") or {}).get(dataset) or {}
    percent = 100 * float(summary["test_accuracy_mean"]) if "test_accuracy_mean" in summary else None
    accuracy = None if percent is None else f"{percent:.2f} % (test, mean of {summary.get('seeds')} seeds)"
    assumptions = (
        {f"settling.{k}": v for k, v in settling.model_dump().items()}
        | {
            "circuit": f"diode_network({n_in}, {hidden}, {n_classes}), seed 0 initial conductances",
            "samples": len(x),
            "amplifiers": "ideal (their supply delivers exactly the power they deliver)",
        }
        | _digital_assumptions()
    )
    notes = (
        "trained conductances are not stored in the run folder: the circuit is costed at seed 0's initial conductances",
        "the training step (free + nudged phases, one sample) is listed apart from the inference total",
        _tellegen_note(cost),
    )
    return CostReport(f"EP diode circuit on {dataset}: cost per sample", lines, assumptions,
                      _digital_line(layers), accuracy, notes, step, percent, combine="concurrent")  # fmt: skip


#: MNIST test images an EP circuit is solved on (the first ones of the test set); the cost is their mean.
MNIST_COST_SAMPLES = 64
#: The DRN's normalised units mapped to physical ones: its largest conductance, and a white pixel's input source
#: (``input_gain`` normalised volts); the bounds of the ep_mnist circuit (conductances <= 10 µS, pixels <= 0.5 V).
DRN_MAX_CONDUCTANCE_S = 1e-5
DRN_FULL_SCALE_V = 0.5


def _mnist_test_images(folder: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` MNIST test images ``(n, 784)`` as ``pixel / 255`` (float64, [0, 1]) and their labels ``(n,)``,
    from the run's ``data.dir`` (its ``config.yaml``) or ``$INMATERIO_MNIST_DIR``."""
    import yaml

    from inmaterio.data.mnist import load_mnist, scale_pixels

    data_dir = None
    try:
        saved = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
        data_dir = ((saved or {}).get("data") or {}).get("dir")
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
        pass
    try:
        raw = load_mnist(data_dir)
    except InmaterioError as err:
        raise RunFolderError(f"'{folder}': the circuit's power depends on its inputs, so costing it needs the MNIST test "
                             f"images: {err}") from None  # fmt: skip
    return (scale_pixels(raw.test_images[:n]) + 0.5).double(), torch.as_tensor(raw.test_labels[:n].astype("int64"))


def _checkpoint_state(path: Path, kind: str) -> dict[str, Any] | None:
    """The state of an inmaterio checkpoint of a run of ``kind`` (loaded without pickle), or None if there is none."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read is a bad file
        raise RunFolderError(f"checkpoint '{path}' cannot be read ({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("kind") != kind or not isinstance(payload.get("state"), dict):
        raise RunFolderError(f"'{path}' is not a checkpoint of a run of kind '{kind}'")
    return payload["state"]


def _ep_mnist_report(folder: Path, record: dict[str, Any]) -> CostReport:
    from inmaterio.circuits.fit import FIT_KIND
    from inmaterio.studies.ep_mnist import EPMnistTask, network

    config = _get(record, "identity", "config", where=f"'{folder}/run.json'")
    task = EPMnistTask.model_validate(_get(config, "task", where=f"'{folder}/run.json'"))
    seed = int(config.get("seed", 0))
    model = network(task, 784, seed)
    checkpoint = folder / "training" / "checkpoint.pt"
    state = _checkpoint_state(checkpoint, FIT_KIND)
    params = model.normalised_parameters()
    if state is not None:
        saved = state.get("parameters")
        if (
            not isinstance(saved, dict)
            or sorted(saved) != sorted(params)
            or any(not isinstance(saved[k], torch.Tensor) or saved[k].shape != params[k].shape for k in params)
        ):
            raise RunFolderError(f"'{checkpoint}' does not hold the parameters {sorted(params)} of this circuit")
        with torch.no_grad():
            for key, value in saved.items():
                params[key].copy_(value)
    x, _ = _mnist_test_images(folder, MNIST_COST_SAMPLES)
    x = x - 0.5  # the study's pixels: p / 255 - 0.5 V
    variant = task.training.variant
    settling = SettlingAssumption()
    with torch.no_grad():
        cost = ep_circuit_cost(model, x, variant=variant, settling=settling)
    names = {part: part.removesuffix(".conductance_s") + " (crossbar)" for part in cost.part_ops}
    lines = _circuit_lines(cost, "EP diode circuit", names)
    step = _training_step_line(cost, "EP diode circuit", f"{task.training.variant} EP; weight-update pulses not included")
    h = task.hidden
    layers = [LayerShape(name="hidden crossbar", inputs=2 * 784 + 2, outputs=h),
              LayerShape(name="output crossbar", inputs=h + 2, outputs=10)]  # fmt: skip
    metrics = read_json(folder / "metrics.json", RunFolderError)
    percent = 100 * float(metrics["test_accuracy"]) if "test_accuracy" in metrics else None
    accuracy = None if percent is None else f"{percent:.2f} % (test)"
    which = f"the trained conductances of {checkpoint.relative_to(folder)}" if state is not None else (
        f"seed {seed}'s initial conductances")  # fmt: skip
    assumptions = (
        {f"settling.{k}": v for k, v in settling.model_dump().items()}
        | {
            "circuit": f"ep_mnist network 784x2-{h}-10 ({task.diode} diodes, gain {task.gain}), {which}",
            "samples": f"the first {len(x)} MNIST test images",
            "amplifiers": "ideal (their supply delivers exactly the power they deliver)",
        }
        | _digital_assumptions()
    )
    notes = (
        f"costed at {which}"
        + ("" if state is not None else ": the run folder holds no training/checkpoint.pt (a results/ copy)"),
        "the training step (free + nudged phases, one sample) is listed apart from the inference total; its nudged "
        f"phases are taken at the free phase's power (beta = {task.training.beta:g} changes it by O(beta))",
        "the inputs' DACs and the outputs' read-out are not included (ideal sources and voltmeters)",
        _tellegen_note(cost),
    )
    return CostReport(f"EP circuit 784x2-{h}-10 on MNIST: cost per image", lines, assumptions, _digital_line(layers),
                      accuracy, notes, step, percent, combine="concurrent")  # fmt: skip


def _drn_report(folder: Path, record: dict[str, Any]) -> CostReport:
    from inmaterio.circuits.drn import DeepResistiveNetwork
    from inmaterio.circuits.drn_training import DRN_FIT_KIND
    from inmaterio.studies.drn_mnist import DRNMnistTask

    config = _get(record, "identity", "config", where=f"'{folder}/run.json'")
    task = dict(_get(config, "task", where=f"'{folder}/run.json'"))
    # the record lists every training field; the study sets algorithm and seed per run and refuses them in its task
    task["training"] = {k: v for k, v in (task.get("training") or {}).items() if k not in ("algorithm", "seed")}
    task = DRNMnistTask.model_validate(task)
    algorithm = "ep" if "ep" in task.algorithms else task.algorithms[0]
    sizes = (784, *task.hidden, 10)
    model = DeepResistiveNetwork(sizes, task.input_gain, seed=0, init_gain=task.init_gain, dtype=torch.float64)
    checkpoint = folder / algorithm / "seed_0" / "checkpoint.pt"
    state = _checkpoint_state(checkpoint, DRN_FIT_KIND)
    if state is not None:
        try:
            model.load_state_dict(state["model"])
        except (KeyError, TypeError, RuntimeError) as err:
            raise RunFolderError(f"'{checkpoint}' does not hold a {'-'.join(map(str, sizes))} network: "
                                 f"{str(err).splitlines()[0]}") from None  # fmt: skip
    x, labels = _mnist_test_images(folder, MNIST_COST_SAMPLES)
    g_max = max(float(w.detach().max()) for w in model.weights)
    if not g_max > 0:
        raise RunFolderError(f"'{folder}': every conductance of the network is 0")
    unit_s, unit_v = DRN_MAX_CONDUCTANCE_S / g_max, DRN_FULL_SCALE_V / task.input_gain
    settling = SettlingAssumption()
    t = task.training
    with torch.no_grad():
        cost = drn_circuit_cost(model, x, labels, beta=t.beta, variant=t.variant, conductance_unit_s=unit_s,
                                volt_unit_v=unit_v, settling=settling)  # fmt: skip
    widths = [2 * 784, *task.hidden, 10]
    names = {f"W{k}": f"W{k} {a}x{b} (crossbar)" for k, (a, b) in enumerate(zip(widths, widths[1:]), start=1)}
    technology = "DRN, ideal diodes"
    lines = _circuit_lines(cost, technology, names)
    step = _training_step_line(cost, technology, f"{t.variant} EP, beta {t.beta:g}; nudging loads and weight-update "
                                                 "pulses not included")  # fmt: skip
    layers = _dense_layers(widths)
    metrics = read_json(folder / "metrics.json", RunFolderError)
    summary = next((r for r in metrics.get("summary", []) if r.get("algorithm") == algorithm), None)
    percent = None if summary is None else 100 - float(summary["test_error_percent_mean"])
    label = {"ep": f"EP ({t.variant})", "implicit": "exact gradients"}[algorithm]
    accuracy = None if summary is None else f"{percent:.2f} % (test, {label}, mean of {summary['seeds']} seeds)"
    which = f"the trained conductances of {checkpoint.relative_to(folder)}" if state is not None else (
        "seed 0's initial conductances")  # fmt: skip
    assumptions = (
        {f"settling.{k}": v for k, v in settling.model_dump().items()}
        | {
            "circuit": f"deep resistive network {task.architecture()} (ideal diodes), {which}",
            "samples": f"the first {len(x)} MNIST test images, pixels p / 255; steady states solved to 1e-9 (float64)",
            "drn.max_conductance_s": DRN_MAX_CONDUCTANCE_S,
            "drn.conductance_unit_s": unit_s,
            "drn.full_scale_input_v": DRN_FULL_SCALE_V,
            "drn.volt_unit_v": unit_v,
            "diodes": "ideal: no voltage across a conducting diode, no power",
        }
        | _digital_assumptions()
    )
    notes = (
        f"costed at {which}" + ("" if state is not None else ": the run folder holds no checkpoint (a results/ copy)"),
        f"the network is normalised: its largest conductance ({g_max:.3g}) is taken as {DRN_MAX_CONDUCTANCE_S:g} S and "
        f"a white pixel's source ({task.input_gain:g}) as {DRN_FULL_SCALE_V:g} V; power scales with both "
        "(conductance x voltage squared)",
        "the steady state is solved to convergence ("
        + (
            "as the study's test error"
            if t.inference_sweeps is None
            else f"the study's test error used {t.inference_sweeps} sweeps"
        )
        + "); the training step's nudged phases are solved towards the images' labels",
        "the inputs' DACs and the outputs' read-out are not included (ideal sources and voltmeters)",
        _tellegen_note(cost),
    )
    return CostReport(f"Deep resistive network {task.architecture()} on MNIST: cost per image", lines, assumptions,
                      _digital_line(layers), accuracy, notes, step, percent, combine="concurrent")  # fmt: skip


_DNPU_SAMPLES = 2048
_DNPU_SEED = 0xD0E5


def _surrogate(config: dict[str, Any]):
    from inmaterio.surrogate import load_default_surrogate, load_surrogate

    model_dir = (config.get("surrogate") or {}).get("model_dir")
    return load_default_surrogate() if model_dir is None else load_surrogate(model_dir)


def _dnpu_cost(model, input_electrodes: int) -> DnpuCost:
    """One DNPU evaluation, averaged over operating points drawn uniformly in the electrodes' ranges (seeded)."""
    ranges = torch.tensor(model.info.voltage_ranges_v, dtype=torch.float64)  # (electrodes, 2)
    gen = torch.Generator().manual_seed(_DNPU_SEED)
    u = torch.rand(_DNPU_SAMPLES, len(ranges), generator=gen, dtype=torch.float64)
    v = ranges[:, 0] + u * (ranges[:, 1] - ranges[:, 0])
    current = torch.as_tensor(model.predict(v.numpy()), dtype=torch.float64).reshape(-1)
    return dnpu_evaluation_cost(v, current, input_electrodes=input_electrodes, ops=surrogate_ops(model))


def _dnpu_line(name: str, nodes: int, cost: DnpuCost) -> CostLine:
    return CostLine(
        name, "DNPU", nodes * cost.energy_j, cost.latency_s, None, nodes * cost.ops,
        f"device {nodes * cost.device_j:.3g} J + converters {nodes * cost.converters_j:.3g} J; "
        f"device only {cost.device_only_tops_per_w:.3g} TOPS/W",
    )  # fmt: skip


def _surrogate_layers(model, copies: int, prefix: str) -> list[LayerShape]:
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return [
        LayerShape(name=f"{prefix} {i}", inputs=m.in_features, outputs=m.out_features, positions=copies)
        for i, m in enumerate(linear)
    ]


def _dnpu_assumptions(model, cost: DnpuCost) -> dict[str, Any]:
    return {f"dnpu.{k}": v for k, v in DEFAULT_DNPU.model_dump().items()} | {
        "dnpu.operating_points": f"{_DNPU_SAMPLES} drawn uniformly in the electrode ranges (seed {_DNPU_SEED})",
        "dnpu.power": "|I_out| * max_e |V_e| (readout current only; see inmaterio.costs.dnpu)",
        "dnpu.mean_power_w": cost.device_power_w,
        "dnpu.ops_rule": f"surrogate MLP, 2 x MACs = {cost.ops} per evaluation",
        "dnpu.surrogate": str(model.architecture()),
    }


_STUDY_PROJECTION = "the DNPU-network study projects an efficiency in the order of 100 TOPS/W and over 100 MHz"


def _break_even(cost: DnpuCost) -> str:
    return (
        f"an evaluation costs {cost.energy_j:.3g} J with converters ({cost.device_j:.3g} J in the device): 100 TOPS/W "
        f"holds if it counts as >= {cost.energy_j * 1e14:.3g} operations ({cost.device_j * 1e14:.3g} for the device alone)"
    )


def _mnist_dnpu_report(folder: Path, record: dict[str, Any]) -> CostReport:
    config = _get(record, "identity", "config", where=f"'{folder}/run.json'")
    task = _get(config, "task", where=f"'{folder}/run.json'")
    if task.get("model") != "dnpu":
        raise RunFolderError(f"'{folder}' is an mnist_10dnpu run of model {task.get('model')!r}; inmaterio cost supports 'dnpu'")
    m = int(_get(task, "inputs_per_node", where=f"'{folder}/run.json' task"))
    metrics = read_json(folder / "metrics.json", RunFolderError)
    percent = 100 * float(metrics["test_accuracy"]) if "test_accuracy" in metrics else None
    accuracy = None if percent is None else f"{percent:.2f} % (test)"
    return _dnpu_mnist(folder, config, m, 8, None, accuracy, percent)


def _dnpu_mnist(folder: Path, config: dict[str, Any], m: int, dac_bits: int, adc_bits: int | None,
                accuracy: str | None, percent: float | None) -> CostReport:  # fmt: skip
    """The 10-DNPU MNIST network: its linear layer ``784 x 10 m`` on PCM tiles, then 10 DNPU evaluations."""
    surrogate = _surrogate(config)
    dnpu = _dnpu_cost(surrogate, m)
    linear = LayerShape(name=f"linear 784x{10 * m}", inputs=784, outputs=10 * m)
    macro, geometry = _pcm_macro(dac_bits, adc_bits)
    lines = (*crossbar_lines([linear], geometry, macro, "PCM crossbar"), _dnpu_line("10 DNPUs", 10, dnpu))
    assumptions = _crossbar_assumptions(macro, geometry) | _dnpu_assumptions(surrogate, dnpu) | _digital_assumptions()
    notes = (
        f"10 DNPUs: {lines[1].tops_per_w:.3g} TOPS/W with their converters, {dnpu.device_only_tops_per_w:.3g} TOPS/W "
        f"for the device power alone (ops counted as the surrogate's); {_STUDY_PROJECTION}",
        _break_even(dnpu),
        "trained weights and control voltages are not stored: the DNPU power is averaged over the electrode ranges, "
        "the crossbar uses the preset's mean conductance",
    )
    baseline = _digital_line([linear, *_surrogate_layers(surrogate, 10, "surrogate layer")])
    return CostReport(f"MNIST with 10 DNPUs (m = {m}): cost per image", lines, assumptions, baseline, accuracy, notes,
                      accuracy_percent=percent)  # fmt: skip


def _inside_float32(v: torch.Tensor, ranges) -> torch.Tensor:
    """``v (batch, electrodes)`` clamped to the float32 numbers inside each electrode's range: a range end such as
    -1.2 V is not a float32, and the surrogate checks its inputs in float32 (a shift below 1e-7 V)."""
    r = torch.tensor(ranges, dtype=torch.float64)
    r32 = r.to(torch.float32)
    lo = torch.where(r32[:, 0].double() < r[:, 0], torch.nextafter(r32[:, 0], torch.tensor(float("inf"))), r32[:, 0])
    hi = torch.where(r32[:, 1].double() > r[:, 1], torch.nextafter(r32[:, 1], torch.tensor(float("-inf"))), r32[:, 1])
    return torch.minimum(torch.maximum(v, lo.double()), hi.double())


def _gates_report(folder: Path, record: dict[str, Any]) -> CostReport:
    config = _get(record, "identity", "config", where=f"'{folder}/run.json'")
    task = _get(config, "task", where=f"'{folder}/run.json'")
    controls = read_json(folder / "controls.json", RunFolderError)
    if not isinstance(controls, dict) or not controls:
        raise RunFolderError(f"'{folder}/controls.json' holds no control voltages per gate")
    surrogate = _surrogate(config)
    names, ranges = surrogate.info.electrode_names, surrogate.info.voltage_ranges_v
    inputs = [names.index(e) if isinstance(e, str) else int(e) for e in task.get("input_electrodes", (3, 4))]
    ops = surrogate_ops(surrogate)
    lines, costs = [], []
    for gate, table in controls.items():
        v = torch.zeros(4, len(names), dtype=torch.float64)
        for name, volts in table.items():
            v[:, names.index(name)] = float(volts)
        for col, e in enumerate(inputs):  # data 0 / 1 at the low / high end of the electrode's range
            v[:, e] = torch.tensor([ranges[e][0] if bit == 0 else ranges[e][1] for bit in ((0, 0, 1, 1), (0, 1, 0, 1))[col]])
        v = _inside_float32(v, ranges)
        current = torch.as_tensor(surrogate.predict(v.numpy()), dtype=torch.float64).reshape(-1)
        cost = dnpu_evaluation_cost(v, current, input_electrodes=len(inputs), ops=ops)
        costs.append(cost)
        lines.append(_dnpu_line(f"{gate} (1 DNPU)", 1, cost))
    mean = sum(c.device_power_w for c in costs) / len(costs)
    assumptions = _dnpu_assumptions(surrogate, costs[0]) | {
        "dnpu.operating_points": "the four input pairs at the trained control voltages of controls.json",
        "dnpu.mean_power_w": mean,
    }
    notes = (
        "one DNPU per gate, each a separate classifier: the total row is their mean",
        _break_even(costs[0]),
        f"{_STUDY_PROJECTION}",
    )
    baseline = _digital_line(_surrogate_layers(surrogate, 1, "surrogate layer"))
    return CostReport("Boolean gates, one DNPU each: cost per evaluation", tuple(lines), assumptions | _digital_assumptions(),
                      baseline, None, notes, combine="alternatives")  # fmt: skip


def _rings_report(folder: Path, record: dict[str, Any]) -> CostReport:
    config = _get(record, "identity", "config", where=f"'{folder}/run.json'")
    surrogate = _surrogate(config)
    dnpu = _dnpu_cost(surrogate, 2)
    lines = (_dnpu_line("hidden layer (2 DNPUs)", 2, dnpu), _dnpu_line("output DNPU", 1, dnpu))
    notes = (
        "the single-DNPU architecture costs the output row alone",
        f"a DNPU: {dnpu.tops_per_w:.3g} TOPS/W with its converters, {dnpu.device_only_tops_per_w:.3g} TOPS/W for the "
        f"device power alone (ops counted as the surrogate's); {_STUDY_PROJECTION}",
        _break_even(dnpu),
        "trained control voltages are not stored: the DNPU power is averaged over the electrode ranges",
    )
    baseline = _digital_line(_surrogate_layers(surrogate, 3, "surrogate layer"))
    assumptions = _dnpu_assumptions(surrogate, dnpu) | _digital_assumptions()
    return CostReport("Rings, 2-2-1 DNPU network: cost per sample", lines, assumptions, baseline, None, notes)


def cost_of_run(folder: str | Path) -> CostReport:
    """The cost report of the run in ``folder`` (see the module docstring for the kinds and rules).

    Raises:
        RunFolderError: not a run folder, corrupt, incomplete, or a kind this module does not cost.
    """
    folder = Path(folder)
    record = read_run(folder)
    kind = record["kind"]
    builders = {
        "inmaterio.task.crossbar_inference": _crossbar_report,
        "inmaterio.task.ep_learning": _ep_report,
        "inmaterio.task.ep_mnist": _ep_mnist_report,
        "inmaterio.task.drn_mnist": _drn_report,
        "inmaterio.task.mnist_10dnpu": _mnist_dnpu_report,
        "inmaterio.task.rings_study": _rings_report,
        "inmaterio.task.pulsed_mnist": _pulsed_report,
        "inmaterio.task.gates": _gates_report,
    }
    if kind not in builders:
        raise RunFolderError(f"'{folder}' is a run of kind '{kind}'; inmaterio cost supports {', '.join(SUPPORTED_KINDS)}")
    try:
        return builders[kind](folder, record)
    except InmaterioError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise RunFolderError(f"'{folder}' cannot be costed: its record or metrics are incomplete ({err!r})") from None


#: The files :func:`write_cost_files` writes into a run folder (and the only ones it touches).
COST_FILES = ("costs.json", "costs.md")


def write_cost_files(folder: str | Path) -> tuple[CostReport, list[Path]]:
    """Cost the run in ``folder`` and write ``costs.json`` and ``costs.md`` into it (atomically; nothing else changes).

    Raises:
        RunFolderError: as :func:`cost_of_run`, or when the files cannot be written.
    """
    from inmaterio import __version__
    from inmaterio.fileio import atomic_write_json, atomic_write_text

    folder = Path(folder)
    report = cost_of_run(folder)
    paths = [folder / name for name in COST_FILES]
    try:
        atomic_write_json(paths[0], {"package_version": __version__, **report.to_dict()})
        atomic_write_text(paths[1], report.to_markdown())
    except OSError as err:
        raise RunFolderError(f"cannot write the cost files into '{folder}': {err.strerror or err}") from None
    return report, paths
