r"""A genetic algorithm for *evolution in materio*: control voltages found on the device.

The genome of an individual is one vector of control voltages (one *gene* per
control electrode, each inside its own ``[low, high]`` range). The fitness of a
genome is a number measured with those voltages applied (on the device, or on
its surrogate model) and is **maximised**. The whole population is evaluated
with **one** call of the fitness function, ``fitness_fn(population)`` with
``population: (population_size, n_genes) -> fitness: (population_size,)``, so
that a surrogate or a device evaluates all genomes as one batch.

One generation
--------------
Let :math:`N` be the population size, :math:`E` the number of elites and
:math:`G` the number of generations.

1. **Evaluate** the population (one batched call). A NaN fitness is treated as
   :math:`-\infty` (the worst possible) and counted in the history.
2. **Sort** best first (a stable sort, so ties keep their order).
3. **Elitism.** The :math:`E` best genomes pass to the next generation
   unchanged: they are neither crossed nor mutated. Every generation evaluates
   the whole population again, elites included, so that on a noisy device an
   elite that was measured lucky once does not stay forever.
4. **Selection** of :math:`2\lceil (N-E)/2 \rceil` parents by *linear ranking*:
   with rank :math:`r = 0` for the worst and :math:`r = N-1` for the best
   genome, and selection pressure :math:`s \in [1, 2]`,

   .. math:: p_r = \frac{2 - s}{N} + \frac{2 r (s - 1)}{N (N - 1)},

   which sums to one; the best genome is expected :math:`s` times, the
   worst :math:`2 - s` times per :math:`N` draws, and :math:`s = 1` is
   uniform. The parents are drawn by *stochastic universal sampling*: one
   uniform offset :math:`u \in [0, 1)` and :math:`M` equally spaced pointers
   :math:`(u + k)/M`, :math:`k = 0 \dots M-1`, over the cumulative
   probabilities; genome :math:`i` is picked once per pointer falling in its
   interval, i.e. :math:`\lfloor M p_i \rfloor` or :math:`\lceil M p_i \rceil`
   times (no sampling noise beyond that). The picks are shuffled and paired.
5. **Crossover, BLX-alpha-beta.** For a pair with better parent :math:`x`
   and worse parent :math:`y`, per gene :math:`d = |x - y|`; two children are
   drawn uniformly from

   .. math::
      [x - \alpha d,\; y + \beta d] \quad\text{if } x \le y, \qquad
      [y - \beta d,\; x + \alpha d] \quad\text{otherwise},

   so the interval reaches :math:`\alpha d` beyond the better parent and
   :math:`\beta d` beyond the worse one: :math:`\alpha > \beta` biases the
   children towards the better parent, :math:`\alpha = \beta = 0` keeps them
   between the parents. (With an odd number of children the last pair gives one.)
6. **Mutation.** Each gene of each child is, with probability
   :math:`\mathrm{rate}(g)`, shifted by :math:`\mathcal N(0, (\sigma\,
   (\mathrm{high} - \mathrm{low}))^2)` with :math:`\sigma` = ``mutation_scale``.
   The rate decays geometrically over the run,

   .. math:: \mathrm{rate}(g) = \mathrm{start}\,
             (\mathrm{end}/\mathrm{start})^{g / (G - 1)},

   from ``mutation_rate_start`` at :math:`g = 0` to ``mutation_rate_end`` at
   :math:`g = G - 1` (see :func:`mutation_rate`). :math:`\mathrm{rate}(g)` is
   the rate used for the children bred *from* generation :math:`g`; the last
   generation breeds none. A geometric decay cannot reach or leave zero, so
   when either end is 0 the rate decays (or grows) *linearly* instead; it is
   constant when start equals end or :math:`G = 1`.
7. **Clip** the children to the bounds. The next population is the elites
   followed by the children.

The run stops when the best fitness reaches ``target_fitness`` (if given) or
after ``generations`` generations. The result keeps the best genome ever
evaluated and its fitness.

Reproducibility, run folders and resume
---------------------------------------
All randomness of the algorithm (initial population, selection, pairing,
crossover, mutation) comes from one :class:`torch.Generator` seeded with
``config.seed``: the same config, bounds and (deterministic) fitness function
give the same result run to run. The fitness function's own randomness is
keyed by the generation it evaluates, never by call order: each evaluation
runs with the global torch RNG seeded from ``(seed, "ga.fitness",
generation)`` (inside :func:`torch.random.fork_rng`, e.g. the output noise of
a :class:`~inmaterio.processors.SurrogateProcessor`), and inside
``random_streams("ga", generation)`` when ``evolve`` is given one, e.g. a
device's :meth:`~inmaterio.devices.base.Device.random_streams`, so each
generation is measured with its own noise on the (virtual) device.

With ``directory``, :meth:`GeneticAlgorithm.evolve` keeps a run folder
(:mod:`inmaterio.runs`, kind ``"inmaterio.training.ga"``): after every
generation a checkpoint (the evaluated population, its fitness, the
generation index, the history, the best genome so far and the generator
state) and the history (JSON and CSV). Calling ``evolve`` again with the same
folder resumes from it, and the resumed run gives *exactly* the result of an
uninterrupted one; a finished run is returned without evaluating anything. A
folder made with another config, other bounds or another caller ``identity``
is refused, naming the differing fields.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, model_validator
from torch import Tensor

from inmaterio.checkpoints import CheckpointWriter, history_of
from inmaterio.config import StrictModel
from inmaterio.errors import ConfigError, ModelFileError
from inmaterio.progress import progress_bar
from inmaterio.random_streams import stream_seed
from inmaterio.runs import CHECKPOINT_FILE, open_run

__all__ = [
    "KIND",
    "GAConfig",
    "GAResult",
    "GeneticAlgorithm",
    "rank_probabilities",
    "stochastic_universal_sampling",
    "blx_alpha_beta_crossover",
    "gaussian_mutation",
    "mutation_rate",
]

KIND = "inmaterio.training.ga"
"""The kind of run folder :meth:`GeneticAlgorithm.evolve` writes."""


class GAConfig(StrictModel):
    """Parameters of :class:`GeneticAlgorithm` (see the module docstring for the maths)."""

    population_size: int = Field(26, ge=4, description="genomes per generation")
    generations: int = Field(200, ge=1, description="generations at most (the initial population is generation 0)")
    n_elite: int = Field(6, ge=1, description="best genomes copied unchanged to the next generation")
    selection_pressure: float = Field(
        1.8, ge=1.0, le=2.0, description="s of linear ranking: picks of the best genome per N draws (1: uniform)"
    )
    crossover_alpha: float = Field(0.5, ge=0.0, description="BLX: reach beyond the better parent, fraction of |x - y|")
    crossover_beta: float = Field(0.1, ge=0.0, description="BLX: reach beyond the worse parent, fraction of |x - y|")
    mutation_rate_start: float = Field(0.1, ge=0.0, le=1.0, description="per-gene mutation probability, generation 0")
    mutation_rate_end: float = Field(0.01, ge=0.0, le=1.0, description="per-gene mutation probability, last generation")
    mutation_scale: float = Field(
        0.1, gt=0.0, description="std of the Gaussian mutation step, as a fraction of each gene's range"
    )
    target_fitness: float | None = Field(
        None, description="stop as soon as the best fitness is >= this (None: run all generations)"
    )
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seeds every random draw of the algorithm")

    @model_validator(mode="after")
    def _check(self) -> GAConfig:
        if self.n_elite >= self.population_size:
            raise ValueError(
                f"n_elite {self.n_elite} must be < population_size {self.population_size}, "
                "else no children are bred and the population never changes"
            )
        return self


@dataclass
class GAResult:
    """Outcome of :meth:`GeneticAlgorithm.evolve`.

    Attributes
    ----------
    best_genome:
        ``(n_genes,)`` the best genome ever evaluated.
    best_fitness:
        Its fitness (``-inf`` if every fitness was NaN).
    history:
        One dict per evaluated generation: ``generation``, ``best_fitness`` (of
        that generation), ``mean_fitness`` (over genomes with a non-NaN
        fitness; NaN if none), ``mutation_rate`` (applied to the children bred
        from that generation), ``n_nan`` (genomes whose fitness was NaN) and
        ``time_s`` (wall-clock seconds spent on that generation: breeding and
        evaluation; the only entry that differs between identical runs).
    generations_run:
        Number of generations evaluated (``len(history)``).
    stopped_because:
        ``"target_fitness"`` or ``"generations"``; ``"running"`` in the
        snapshots passed to a callback.
    """

    best_genome: Tensor
    best_fitness: float
    history: list[dict[str, Any]] = field(default_factory=list)
    generations_run: int = 0
    stopped_because: str = "running"


# ----------------------------------------------------------------------------- operators


def rank_probabilities(n: int, selection_pressure: float) -> Tensor:
    """Linear-ranking selection probabilities, worst genome first.

    ``p_r = (2 - s)/n + 2 r (s - 1) / (n (n - 1))`` for rank ``r = 0`` (worst)
    to ``n - 1`` (best).

    Returns
    -------
    Tensor
        ``(n,)`` float64, summing to 1.
    """
    if n < 1:
        raise ConfigError(f"rank selection needs at least 1 genome, got n = {n}")
    s = float(selection_pressure)
    if not 1.0 <= s <= 2.0:
        raise ConfigError(f"selection_pressure {s} outside [1, 2]")
    if n == 1:
        return torch.ones(1, dtype=torch.float64)
    r = torch.arange(n, dtype=torch.float64)
    return (2.0 - s) / n + 2.0 * r * (s - 1.0) / (n * (n - 1))


def stochastic_universal_sampling(probabilities: Tensor, n_select: int, generator: torch.Generator) -> Tensor:
    """Pick ``n_select`` indices with stochastic universal sampling.

    One uniform offset ``u`` in ``[0, 1)``; pointers ``(u + k) / n_select``
    for ``k = 0 .. n_select - 1``; each pointer picks the index whose interval
    of the cumulative (normalised) probabilities contains it. Index ``i`` is
    picked ``floor(n_select p_i)`` or ``ceil(n_select p_i)`` times; an index
    of probability 0 never.

    Parameters
    ----------
    probabilities:
        ``(n,)`` non-negative weights (normalised here).
    n_select:
        Number of picks, >= 1.
    generator:
        Source of the one uniform offset.

    Returns
    -------
    Tensor
        ``(n_select,)`` int64 indices in ascending order.
    """
    p = torch.as_tensor(probabilities, dtype=torch.float64)
    if p.ndim != 1 or p.numel() == 0:
        raise ConfigError(f"probabilities must have shape (n,) with n >= 1, got {tuple(p.shape)}")
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or float(p.sum()) <= 0:
        raise ConfigError(f"probabilities must be finite, non-negative and not all 0, got {p.tolist()}")
    if n_select < 1:
        raise ConfigError(f"n_select must be >= 1, got {n_select}")
    cumulative = torch.cumsum(p, 0)
    cumulative = cumulative / cumulative[-1]
    offset = torch.rand((), generator=generator, dtype=torch.float64)
    pointers = (offset + torch.arange(n_select, dtype=torch.float64)) / n_select
    return torch.searchsorted(cumulative, pointers, right=True).clamp_(max=p.numel() - 1)


def blx_alpha_beta_crossover(better: Tensor, worse: Tensor, alpha: float, beta: float, generator: torch.Generator) -> Tensor:
    """One child per pair of parents by BLX-alpha-beta crossover.

    Per gene, with ``x`` the better and ``y`` the worse parent and
    ``d = |x - y|``, the child is uniform in ``[x - alpha d, y + beta d]`` if
    ``x <= y``, else in ``[y - beta d, x + alpha d]``.

    Parameters
    ----------
    better, worse:
        ``(pairs, n_genes)`` the better and the worse parent of each pair.

    Returns
    -------
    Tensor
        ``(pairs, n_genes)`` children (not clipped to any bounds).
    """
    if better.shape != worse.shape:
        raise ConfigError(f"parents must have the same shape, got {tuple(better.shape)} and {tuple(worse.shape)}")
    d = (better - worse).abs()
    better_below = better <= worse
    low = torch.where(better_below, better - alpha * d, worse - beta * d)
    high = torch.where(better_below, worse + beta * d, better + alpha * d)
    u = torch.rand(better.shape, generator=generator, dtype=better.dtype)
    return low + u * (high - low)


def gaussian_mutation(genomes: Tensor, rate: float, step_std: Tensor, generator: torch.Generator) -> Tensor:
    """Add ``N(0, step_std^2)`` to each gene with probability ``rate``.

    The random draws do not depend on ``rate`` (a mask and a step are drawn
    for every gene), so the stream of random numbers is the same for any rate.

    Parameters
    ----------
    genomes:
        ``(n, n_genes)``.
    rate:
        Per-gene mutation probability in ``[0, 1]``.
    step_std:
        ``(n_genes,)`` standard deviation of the step of each gene.

    Returns
    -------
    Tensor
        ``(n, n_genes)`` mutated copy (not clipped).
    """
    mask = torch.rand(genomes.shape, generator=generator, dtype=genomes.dtype) < rate
    step = torch.randn(genomes.shape, generator=generator, dtype=genomes.dtype) * step_std
    return torch.where(mask, genomes + step, genomes)


def mutation_rate(config: GAConfig, generation: int) -> float:
    """Per-gene mutation probability used to breed children from ``generation``.

    ``start * (end / start) ** (g / (G - 1))``: exactly ``start`` at ``g = 0``
    and ``end`` at ``g = G - 1``. Constant if ``start == end`` or ``G == 1``;
    linear from start to end if either of them is 0 (a geometric decay cannot
    reach or leave 0).
    """
    start, end, last = config.mutation_rate_start, config.mutation_rate_end, config.generations - 1
    if generation < 0:
        raise ConfigError(f"generation must be >= 0, got {generation}")
    if start == end or last == 0 or generation == 0:
        return start
    if generation >= last:
        return end
    fraction = generation / last
    if start == 0.0 or end == 0.0:
        return start + (end - start) * fraction
    return start * (end / start) ** fraction


# ----------------------------------------------------------------------------- algorithm


class GeneticAlgorithm:
    """Maximise a batched fitness function over genomes inside per-gene bounds.

    Parameters
    ----------
    config:
        :class:`GAConfig`.
    bounds:
        ``(n_genes, 2)``: ``[low, high]`` of each gene (e.g. volts of each
        control electrode), finite with ``low < high``. Genomes have the
        dtype of ``bounds`` (the default float dtype if it is not floating)
        and live on the CPU; a fitness function on another device moves them.

    Example
    -------
    >>> ga = GeneticAlgorithm(GAConfig(generations=50), torch.tensor([[-1.2, 0.6]] * 5))
    >>> result = ga.evolve(lambda pop: -(pop**2).sum(dim=1))
    """

    def __init__(self, config: GAConfig, bounds: Tensor) -> None:
        if not isinstance(config, GAConfig):
            raise ConfigError(f"config must be a GAConfig, got {type(config).__name__}")
        self.config = config
        self.bounds = _validate_bounds(bounds)
        self.n_genes = self.bounds.shape[0]

    # -- public

    def evolve(
        self,
        fitness_fn: Callable[[Tensor], Tensor],
        progress: bool = False,
        callback: Callable[[int, GAResult], None] | None = None,
        *,
        random_streams: Callable[..., AbstractContextManager[Any]] | None = None,
        directory: str | Path | None = None,
        overwrite: bool = False,
        identity: Mapping[str, Any] | None = None,
        checkpoint_interval_s: float = 1.0,
    ) -> GAResult:
        """Run the algorithm (or resume it from ``directory``) and return the best genome.

        Parameters
        ----------
        fitness_fn:
            ``(population_size, n_genes) -> (population_size,)``, called once
            per generation on the whole population (under ``torch.no_grad``,
            with the global torch RNG seeded for that generation).
            Higher is better; NaN counts as the worst.
        progress:
            Show a progress bar (unit "gen") with the best fitness, on a terminal.
        callback:
            ``callback(generation, result_so_far)`` after every generation. An
            exception raised here (e.g. ``KeyboardInterrupt``) stops the run; the
            state after that generation is written first, so the run resumes there.
        random_streams:
            A context-manager factory entered as ``random_streams("ga", generation)``
            around every evaluation, e.g. ``device.random_streams`` of the device the
            fitness is measured on: its noise is then keyed by the generation.
        directory:
            The run folder (see the module docstring); None: nothing is saved.
        overwrite:
            Replace a run of another identity in ``directory`` (an unfinished one is moved aside).
        identity:
            Anything else that defines the result (e.g. the device's description,
            the task), JSON-able; resuming with another is refused.
        checkpoint_interval_s:
            Write the checkpoint and the history at most this often, s (0: after every
            generation); always at the end and when the run stops with an exception
            (:class:`~inmaterio.checkpoints.CheckpointWriter`).

        Raises
        ------
        ConfigError
            If ``fitness_fn`` returns a wrong shape, or ``directory`` holds a run
            made with another config, other bounds or another ``identity``.
        ModelFileError
            If the checkpoint in ``directory`` cannot be read or does not fit.
        RunFolderError
            If ``directory`` is a file, a foreign folder, a run of another kind, busy or not writable.
        """
        writer = CheckpointWriter(None, checkpoint_interval_s)  # refuses a bad interval before any work
        if directory is None:
            return self._evolve(fitness_fn, progress, callback, random_streams, writer)
        run_identity = {
            "config": self.config.model_dump(mode="json"),
            "n_genes": self.n_genes,
            "bounds": {f"gene {i}": pair for i, pair in enumerate(self.bounds.tolist())},
            "bounds_dtype": str(self.bounds.dtype),
            "extra": dict(identity or {}),
        }
        with open_run(directory, KIND, identity=run_identity, config=self.config, overwrite=overwrite) as run:
            return self._evolve(fitness_fn, progress, callback, random_streams, CheckpointWriter(run, checkpoint_interval_s))

    def _evolve(
        self,
        fitness_fn: Callable[[Tensor], Tensor],
        progress: bool,
        callback: Callable[[int, GAResult], None] | None,
        random_streams: Callable[..., AbstractContextManager[Any]] | None,
        writer: CheckpointWriter,
    ) -> GAResult:
        cfg = self.config
        run = writer.run
        generator = torch.Generator()
        generator.manual_seed(cfg.seed)
        state = None if run is None else run.load_checkpoint()
        if state is None:
            if run is not None and run.finished:
                raise ModelFileError(
                    f"the finished run in '{run.path}' has no checkpoint; replace it with overwrite=True (--overwrite)"
                )
            population = self._initial_population(generator)
            fitness: Tensor | None = None
            generation = -1  # the last evaluated generation
            history: list[dict[str, Any]] = []
            best_genome, best_fitness = population[0].clone(), -math.inf
        else:
            try:
                generator.set_state(state["generator_state"])
                population, fitness = state["population"], state["fitness"]
                generation, history = int(state["generation"]), history_of(state)
                best_genome, best_fitness = state["best_genome"], float(state["best_fitness"])
                if population.shape != (cfg.population_size, self.n_genes) or fitness.shape != (cfg.population_size,):
                    raise ValueError(f"population {tuple(population.shape)}, fitness {tuple(fitness.shape)}")
            except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
                raise ModelFileError(
                    f"checkpoint '{run.file(CHECKPOINT_FILE)}' does not fit this run ({type(err).__name__}: {err}); "
                    "replace the run with overwrite=True (--overwrite)"
                ) from None

        stopped = self._stop_reason(best_fitness, generation)
        with (
            writer.flushing_on_exit(),
            progress_bar(
                total=cfg.generations,
                description=_describe(best_fitness),
                unit="gen",
                completed=generation + 1,
                enabled=progress,
            ) as bar,
        ):
            while stopped is None:
                started = time.perf_counter()
                if fitness is not None:
                    population = self._breed(population, fitness, mutation_rate(cfg, generation), generator)
                generation += 1
                fitness, n_nan, mean = self._evaluate(fitness_fn, population, generation, random_streams)
                best_index = int(torch.argmax(fitness))
                generation_best = float(fitness[best_index])
                if generation == 0 or generation_best > best_fitness:
                    best_genome, best_fitness = population[best_index].clone(), generation_best
                history.append(
                    {
                        "generation": generation,
                        "best_fitness": generation_best,
                        "mean_fitness": mean,
                        "mutation_rate": mutation_rate(cfg, generation),
                        "n_nan": n_nan,
                        "time_s": time.perf_counter() - started,
                    }
                )
                stopped = self._stop_reason(best_fitness, generation)
                state = {  # a snapshot: these tensors are replaced, never changed in place
                    "generation": generation,
                    "population": population,
                    "fitness": fitness,
                    "best_genome": best_genome,
                    "best_fitness": best_fitness,
                    "generator_state": generator.get_state(),
                }
                writer.offer(state, history, final=stopped is not None)
                bar.advance(1)
                bar.set_description(_describe(best_fitness))
                if callback is not None:
                    callback(generation, _result(best_genome, best_fitness, history, "running"))
        result = _result(best_genome, best_fitness, history, stopped)
        if run is not None and not run.finished:  # the last state is written (final=True); the history files may lag
            run.write_history(history)
            run.finish(
                {
                    "best_fitness": best_fitness,
                    "best_genome": best_genome.tolist(),
                    "generations_run": len(history),
                    "stopped_because": stopped,
                }
            )
        return result

    # -- steps

    def _initial_population(self, generator: torch.Generator) -> Tensor:
        """``(population_size, n_genes)`` uniform inside the bounds."""
        low, high = self.bounds[:, 0], self.bounds[:, 1]
        u = torch.rand((self.config.population_size, self.n_genes), generator=generator, dtype=self.bounds.dtype)
        return low + u * (high - low)

    def _evaluate(
        self,
        fitness_fn: Callable[[Tensor], Tensor],
        population: Tensor,
        generation: int,
        random_streams: Callable[..., AbstractContextManager[Any]] | None,
    ) -> tuple[Tensor, int, float]:
        """Fitness ``(population_size,)`` float64 with NaN -> -inf, the NaN count, the mean of the others.

        The fitness function runs with its randomness keyed by ``generation`` (see the module docstring).
        """
        n = population.shape[0]
        streams = random_streams("ga", generation) if random_streams is not None else contextlib.nullcontext()
        with torch.no_grad(), torch.random.fork_rng(devices=[]), streams:
            torch.default_generator.manual_seed(stream_seed(self.config.seed, "ga.fitness", generation))
            raw = fitness_fn(population.clone())
        try:
            raw = torch.as_tensor(raw)
        except (TypeError, ValueError, RuntimeError):
            raise ConfigError(
                f"fitness_fn returned a {type(raw).__name__}, expected a tensor of shape ({n},) "
                f"for a population of shape {tuple(population.shape)}"
            ) from None
        if raw.shape != (n,):
            raise ConfigError(
                f"fitness_fn returned shape {tuple(raw.shape)} for a population of shape "
                f"{tuple(population.shape)}; expected ({n},), one fitness per genome"
            )
        fitness = raw.detach().to(device="cpu", dtype=torch.float64)
        nan = torch.isnan(fitness)
        n_nan = int(nan.sum())
        mean = float(fitness[~nan].mean()) if n_nan < n else math.nan
        return fitness.masked_fill(nan, -math.inf), n_nan, mean

    def _breed(self, population: Tensor, fitness: Tensor, rate: float, generator: torch.Generator) -> Tensor:
        """The next population: the elites unchanged, then the children (see the module docstring)."""
        cfg = self.config
        n = population.shape[0]
        ranked = population[torch.sort(fitness, descending=True, stable=True).indices]  # best first
        n_children = n - cfg.n_elite
        n_pairs = (n_children + 1) // 2
        # rank probabilities are worst first; positions in `ranked` are best first
        probabilities = rank_probabilities(n, cfg.selection_pressure).flip(0)
        picks = stochastic_universal_sampling(probabilities, 2 * n_pairs, generator)
        picks = picks[torch.randperm(2 * n_pairs, generator=generator)]
        first, second = picks[:n_pairs], picks[n_pairs:]
        better = ranked[torch.minimum(first, second)].repeat(2, 1)
        worse = ranked[torch.maximum(first, second)].repeat(2, 1)
        children = blx_alpha_beta_crossover(better, worse, cfg.crossover_alpha, cfg.crossover_beta, generator)
        low, high = self.bounds[:, 0], self.bounds[:, 1]
        children = gaussian_mutation(children[:n_children], rate, cfg.mutation_scale * (high - low), generator)
        children = torch.clamp(children, min=low, max=high)
        return torch.cat([ranked[: cfg.n_elite], children])

    def _stop_reason(self, best_fitness: float, generation: int) -> str | None:
        """Why to stop after evaluating ``generation`` (-1: none yet), or None to go on."""
        if generation < 0:
            return None
        if self.config.target_fitness is not None and best_fitness >= self.config.target_fitness:
            return "target_fitness"
        if generation + 1 >= self.config.generations:
            return "generations"
        return None


# ----------------------------------------------------------------------------- helpers


def _validate_bounds(bounds: Tensor) -> Tensor:
    """``(n_genes, 2)`` finite CPU floating tensor with low < high per gene, or ConfigError."""
    try:
        b = torch.as_tensor(bounds)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ConfigError(f"bounds must be a (n_genes, 2) tensor of [low, high], got {bounds!r}: {err}") from None
    b = b.detach().cpu()
    if not b.is_floating_point():
        b = b.to(torch.get_default_dtype())
    if b.ndim != 2 or b.shape[1] != 2 or b.shape[0] < 1:
        raise ConfigError(f"bounds must have shape (n_genes, 2) with n_genes >= 1 ([low, high] per gene), got {tuple(b.shape)}")
    for i in range(b.shape[0]):
        low, high = float(b[i, 0]), float(b[i, 1])
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ConfigError(f"gene {i} bounds [{low:.6g}, {high:.6g}] are not finite")
        if not low < high:
            raise ConfigError(f"gene {i} bounds [{low:.6g}, {high:.6g}] must have low < high")
    return b.clone()


def _result(best_genome: Tensor, best_fitness: float, history: list[dict[str, Any]], stopped: str) -> GAResult:
    return GAResult(
        best_genome=best_genome.clone(),
        best_fitness=best_fitness,
        history=[dict(row) for row in history],
        generations_run=len(history),
        stopped_because=stopped,
    )


def _describe(best_fitness: float) -> str:
    return "GA best fitness: none yet" if best_fitness == -math.inf else f"GA best fitness: {best_fitness:.4g}"
