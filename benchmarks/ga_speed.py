"""Genetic-algorithm speed on the bundled surrogate: XOR with corrsig fitness, 320 points, one DNPU.

Command (from the repository root; prints markdown tables)::

    python benchmarks/ga_speed.py --install-peers --populations 26 64 256 1024 --generations 50 --repeats 3

Setting: one DNPU node of
the bundled surrogate (5x90 ReLU MLP, 7 activation electrodes), data on
electrodes e3 and e4 with data range [0, 1], the 5 other electrodes are the
genes. The input is brains-py's XOR waveform of 320 points: the 4 input pairs
(0,0), (0,1), (1,0), (1,1), each held for 80 samples; targets 0, 1, 1, 0.
Fitness is ``-corrsig(output, target)`` and the whole population is
evaluated in one batched call per generation, under :func:`torch.inference_mode`. The GA is
:class:`~inmaterio.training.ga.GeneticAlgorithm` with its default operators
(6 elites, linear ranking, BLX-alpha-beta, Gaussian mutation), no progress bar
and no checkpoint.

Every population gets one untimed warm-up run (3 generations; the surrogate
is loaded before any timing), then ``--repeats`` timed runs of
``--generations`` generations; the table shows the fastest. The time spent in
the fitness function is measured inside it, so the rest of ``evolve`` is the
GA's own bookkeeping (sorting, selection, crossover, mutation, history).

The peer runs in the same process (``--install-peers`` pip-installs
brains-py 1.0.2 with ``--no-deps`` and nidaqmx, which brains-py imports;
``--peer-populations`` chooses where): brains-py's own GA
(``brainspy.algorithms.ga.train`` with its ``GeneticOptimizer``, 6 elites,
fitness ``brainspy.utils.signal.corrsig_fit``) on a brains-py ``DNPU`` whose
surrogate holds the SAME weights (our input and output normalisation folded
into its first and last layer; the two outputs are checked to agree within
1e-3 nA before timing), inputs on e3 and e4 at the voltages our layer applies,
no noise, no clipping. "vs brains-py" is its seconds over ours for the same
population and generations, best of ``--repeats`` on both sides.

Two ways of evaluating a generation are timed in the same run:

* ``layer``: what inmaterio does, ``layer(x, genomes)``. The DNPU layer finds
  the distinct rows of ``x`` (4 of the 320) and the surrogate evaluates
  ``population x 4`` operating points, expanding them to the 320 samples
  (output noise, when on, is still drawn per sample; see
  :meth:`~inmaterio.processors.Processor.forward_repeated`). Same fitness:
  the test suite checks the outputs against the per-sample evaluation.
* ``every sample``: ``processor(layer.voltages(x, genomes))``, all
  ``population x 320`` rows through the MLP, as brains-py does. The processor
  cuts calls without gradients into chunks of
  :data:`~inmaterio.processors.CHUNK_ROWS` rows (cache-sized activations:
  one call on 327,680 rows ran at 0.5e6 rows/s, chunks of 8,192 at 1.9e6).

``--samples-per-point`` changes how long each XOR input is held (80: 320 points).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import time
from collections import OrderedDict

import torch

from inmaterio.nn.dnpu import DNPU
from inmaterio.processors import SurrogateProcessor
from inmaterio.surrogate import SurrogateModel, load_default_surrogate
from inmaterio.tasks.gates import gate_data
from inmaterio.training.ga import GAConfig, GeneticAlgorithm
from inmaterio.training.losses import corrsig

PEERS = ("brainspy==1.0.2",)


class TimedFitness:
    """``-corrsig`` of every genome in one batched evaluation; accumulates its own wall time.

    ``every_sample=False``: ``layer(x, genomes)`` (distinct points once, expanded);
    ``every_sample=True``: the processor on all ``population x points`` voltages.
    """

    def __init__(self, layer: DNPU, x: torch.Tensor, y: torch.Tensor, every_sample: bool) -> None:
        self.layer, self.x, self.y = layer, x, y
        self.every_sample = every_sample
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, genomes: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        with torch.inference_mode():
            if self.every_sample:
                out = self.layer.processor(self.layer.voltages(self.x, genomes[:, None, :]))[..., 0]
            else:
                out = self.layer(self.x, genomes[:, None, :])[..., 0]  # (population, points) nA
            fitness = -corrsig(out, self.y)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return fitness


def run_once(
    layer: DNPU, x: torch.Tensor, y: torch.Tensor, population: int, generations: int, seed: int, every_sample: bool
) -> tuple[float, float]:
    """Wall seconds of one ``evolve`` and the seconds spent inside the fitness function."""
    config = GAConfig(population_size=population, generations=generations, seed=seed)
    ga = GeneticAlgorithm(config, layer.control_bounds())
    fitness = TimedFitness(layer, x, y, every_sample)
    start = time.perf_counter()
    result = ga.evolve(fitness)
    total = time.perf_counter() - start
    assert result.generations_run == generations == fitness.calls, "the run stopped early"
    return total, fitness.seconds


def install_peers() -> None:
    """pip-install brains-py without its pinned dependencies (torch 1.x), and nidaqmx, which it imports."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *PEERS], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "nidaqmx", "tqdm"], check=True)


def brainspy_dnpu(model: SurrogateModel, input_indices: list[int]) -> torch.nn.Module:
    """A brains-py DNPU whose surrogate computes ``model`` on raw volts (nA): same weights, normalisations folded in."""
    from brainspy.processors.dnpu import DNPU as BrainspyDNPU
    from brainspy.processors.processor import Processor

    linears = [m for m in model.mlp if isinstance(m, torch.nn.Linear)]
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    with torch.no_grad():
        scale, offset = model.input_scale.double(), model.input_offset.double()
        for k, linear in enumerate(linears):
            w, b = linear.weight.double(), linear.bias.double()
            if k == 0:  # x = (v - offset) * scale
                w, b = w * scale[None, :], b - w @ (offset * scale)
            if k == len(linears) - 1:  # I = out * output_scale + output_offset
                w = w * model.output_scale.double()
                b = b * model.output_scale.double() + model.output_offset.double()
            state[f"raw_model.{2 * k}.weight"], state[f"raw_model.{2 * k}.bias"] = w.float(), b.float()
    n = model.info.n_activation
    info = {
        "model_structure": {"hidden_sizes": list(model.hidden_sizes), "D_in": n, "D_out": 1, "activation": model.activation},
        "electrode_info": {
            "electrode_no": n + 1,
            "activation_electrodes": {"electrode_no": n, "voltage_ranges": model.info.ranges_array().tolist()},
            "output_electrodes": {"electrode_no": 1, "amplification": [1.0], "clipping_value": [-1e9, 1e9]},
        },
    }
    configs = {
        "processor_type": "simulation",
        "waveform": {"plateau_length": 1, "slope_length": 0},
        "electrode_effects": {"noise": None},
    }
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        processor = Processor(configs, info, state, average_plateaus=False)
    return BrainspyDNPU(processor, data_input_indices=[input_indices])


def brainspy_ga_seconds(
    peer: torch.nn.Module, v_in: torch.Tensor, y: torch.Tensor, population: int, generations: int
) -> tuple[float, float]:
    """Wall seconds of brains-py's GA for ``generations`` generations, and the best correlation it reached."""
    from brainspy.algorithms.ga import GeneticOptimizer, train
    from brainspy.utils.signal import corrsig_fit

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(v_in, y[:, None]), batch_size=len(v_in))
    optimizer = GeneticOptimizer(gene_ranges=peer.get_control_ranges()[0], partition=[6, population - 6], epochs=generations)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        _, data = train(peer, [loader], corrsig_fit, optimizer, {"epochs": generations, "stop_threshold": 2.0})
    seconds = time.perf_counter() - start
    return seconds, float(max(data["correlation_history"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--populations", type=int, nargs="+", default=[26, 64, 256, 1024], help="population sizes")
    parser.add_argument("--generations", type=int, default=50, help="generations per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per population (the fastest is shown)")
    parser.add_argument("--samples-per-point", type=int, default=80, help="samples each XOR input is held (80: 320 points)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads (default: all cores)")
    parser.add_argument("--peer-populations", type=int, nargs="*", default=[26, 64], help="populations brains-py's GA runs at")
    parser.add_argument("--install-peers", action="store_true", help="pip install --no-deps brainspy==1.0.2 (and nidaqmx) first")
    args = parser.parse_args()
    if args.install_peers:
        install_peers()
    if args.peer_populations:
        try:
            import brainspy.algorithms.ga  # noqa: F401
        except ImportError as err:
            sys.exit(f"brains-py cannot be imported ({err}): run with --install-peers, or --peer-populations with no value")
    torch.set_num_threads(args.threads)

    processor = SurrogateProcessor(load_default_surrogate())  # loading is not timed
    layer = DNPU(processor, 1, input_electrodes=("e3", "e4"), data_range=(0.0, 1.0))
    x, y = gate_data("XOR", repeats=args.samples_per_point)  # each input pair held for that many samples
    n_points = len(x)
    gens = args.generations

    results = {}
    for every_sample in (False, True):
        rows = []
        for population in args.populations:
            run_once(layer, x, y, population, min(3, gens), 0, every_sample)  # warm-up, not timed
            runs = [run_once(layer, x, y, population, gens, r, every_sample) for r in range(args.repeats)]
            total, in_fitness = min(runs)
            rows.append((population, total, in_fitness))
        results["every sample" if every_sample else "layer"] = rows

    peer_seconds: dict[int, float] = {}
    if args.peer_populations:
        peer = brainspy_dnpu(processor.model, [3, 4])
        probe = torch.tensor([[0.1, -0.2, 0.3, -0.1, 0.05]])
        full = layer.voltages(x, probe[:, None, :])[0, :, 0, :]  # (points, 7) V
        v_in = full[:, 3:5].contiguous()
        peer.set_control_voltages(probe)
        with torch.no_grad():
            gap = (peer(v_in)[:, 0] - processor.model(full)).abs().max().item()
        assert gap < 1e-3, f"brains-py's surrogate differs from ours by {gap} nA"
        print(f"brains-py surrogate vs ours on the XOR points: max difference {gap:.2g} nA")
        for population in args.peer_populations:
            brainspy_ga_seconds(peer, v_in, y, population, min(3, gens))  # warm-up, not timed
            runs = [brainspy_ga_seconds(peer, v_in, y, population, gens) for _ in range(args.repeats)]
            peer_seconds[population] = min(r[0] for r in runs)
            print(
                f"brains-py GA, population {population}: {peer_seconds[population]:.3f} s, best correlation {max(r[1] for r in runs):.4f}"
            )

    print(
        f"GA on the bundled 5x90 surrogate: XOR, corrsig, {n_points} points, 1 DNPU (inputs e3, e4), "
        f"{gens} generations, best of {args.repeats}, {torch.get_num_threads()} threads, torch {torch.__version__}\n"
    )
    print(
        f"| evaluation | population | s per {gens} generations | generations/s | genomes x points /s "
        f"| time vs the smallest population (population ratio) | brains-py s (same run) | vs brains-py |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for mode, rows in results.items():
        base_pop, base, _ = rows[0]
        for population, total, _ in rows:
            genomes_per_s = population * gens / total
            peer_s = peer_seconds.get(population)
            versus = f"| {peer_s:.3f} | {peer_s / total:.1f}x |" if peer_s is not None else "| not run | |"
            print(
                f"| {mode} | {population} | {total:.3f} | {gens / total:,.1f} | {genomes_per_s * n_points:.3g} "
                f"| {total / base:.2f}x ({population / base_pop:.1f}x) {versus}"
            )

    print("\nWhere the time goes (same runs):\n")
    print("| evaluation | population | ms/generation | fitness call ms | GA bookkeeping ms | bookkeeping share |")
    print("| --- | --- | --- | --- | --- | --- |")
    for mode, rows in results.items():
        for population, total, in_fitness in rows:
            book = total - in_fitness
            print(
                f"| {mode} | {population} | {1e3 * total / gens:.2f} | {1e3 * in_fitness / gens:.2f} "
                f"| {1e3 * book / gens:.3f} | {book / total:.1%} |"
            )


if __name__ == "__main__":
    main()
