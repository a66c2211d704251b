"""Genetic-algorithm speed on the bundled surrogate: XOR with corrsig fitness, 320 points, one DNPU.

Command (from the repository root; prints markdown tables)::

    python benchmarks/ga_speed.py --populations 26 64 256 1024 --generations 50 --repeats 3

Setting (the one brains-py's figure below was taken with): one DNPU node of
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

Reference: brains-py takes 1.42 s for 50 generations of 26 genomes (XOR,
corrsig, 5x90 surrogate, 320 points) on this kind of 2-core machine, i.e.
26 * 50 / 1.42 = 915 genome evaluations per second. "vs brains-py" is our
genome evaluations per second over that (for population 26: 1.42 s over our
time for the same 50 generations).

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
import os
import time

import torch

from inmaterio.nn.dnpu import DNPU
from inmaterio.processors import SurrogateProcessor
from inmaterio.surrogate import load_default_surrogate
from inmaterio.tasks.gates import gate_data
from inmaterio.training.ga import GAConfig, GeneticAlgorithm
from inmaterio.training.losses import corrsig

BRAINSPY_SECONDS = 1.42  # 50 generations of 26 genomes, 320 points, 5x90 surrogate
BRAINSPY_GENOMES_PER_S = 26 * 50 / BRAINSPY_SECONDS


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--populations", type=int, nargs="+", default=[26, 64, 256, 1024], help="population sizes")
    parser.add_argument("--generations", type=int, default=50, help="generations per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per population (the fastest is shown)")
    parser.add_argument("--samples-per-point", type=int, default=80, help="samples each XOR input is held (80: 320 points)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads (default: all cores)")
    args = parser.parse_args()
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

    print(
        f"GA on the bundled 5x90 surrogate: XOR, corrsig, {n_points} points, 1 DNPU (inputs e3, e4), "
        f"{gens} generations, best of {args.repeats}, {torch.get_num_threads()} threads, torch {torch.__version__}\n"
    )
    print(
        f"| evaluation | population | s per {gens} generations | generations/s | genomes x points /s "
        f"| time vs the smallest population (population ratio) | vs brains-py (genomes/s) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mode, rows in results.items():
        base_pop, base, _ = rows[0]
        for population, total, _ in rows:
            genomes_per_s = population * gens / total
            print(
                f"| {mode} | {population} | {total:.3f} | {gens / total:,.1f} | {genomes_per_s * n_points:.3g} "
                f"| {total / base:.2f}x ({population / base_pop:.1f}x) | {genomes_per_s / BRAINSPY_GENOMES_PER_S:.1f}x |"
            )
    for mode, rows in results.items():
        for population, total, _ in rows:
            if population == 26 and gens == 50:
                print(
                    f"\n{mode}: population 26, 50 generations: {total:.3f} s vs brains-py's {BRAINSPY_SECONDS} s = "
                    f"{BRAINSPY_SECONDS / total:.1f}x faster."
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
