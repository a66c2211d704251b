"""The virtual DNPU: variable-range hopping in a boron-doped silicon disc, by kinetic Monte Carlo.

Model (after Chen et al., Nature 577, 2020 and Tertilt et al., Phys. Rev.
Applied 17, 064025, 2022):

Geometry
    A 2-D disc of radius ``radius_nm`` with ``n_electrodes`` electrode arcs of
    arc length ``electrode_width_nm`` on its rim, electrode ``k`` centred at
    angle ``2 pi k / n`` rad. One electrode (``readout_electrode``) is the
    readout and is held at 0 V; the others are the activation electrodes, in
    index order. ``n_acceptors`` acceptor sites (boron) and ``n_donors`` fixed
    donors are placed uniformly from ``seed``: the seed is the chip.

Carriers and charges
    Holes hop between acceptors and between acceptors and electrodes. An
    acceptor holding a hole is neutral, an empty acceptor carries charge
    ``-e``; each donor carries ``+e``. Electrodes are reservoirs of holes
    with chemical potential ``mu_k = e V_k + fermi_level_ev``.

Energies (eV; energy of a hole, charge +e)
    ``E_i = e phi(r_i) + sum_d K / r_id + sum_{j != i} K (n_j - 1) / r_ij + eps_i``
    where ``phi = sum_k V_k phi_k`` is the electrode potential solved from
    Laplace's equation (:mod:`.electrostatics`), ``K = e^2 / (4 pi eps0 eps_r)
    = 1.439964 eV nm / eps_r`` (silicon: ``eps_r = 11.7``), ``n_j`` the
    occupation of site ``j`` and ``eps_i`` a Gaussian disorder of standard
    deviation ``energy_disorder_ev``. With ``coulomb_interactions = False`` the
    two Coulomb sums are dropped.

    Energy changes of a hop: site i -> site j: ``E_j - E_i - K / r_ij``;
    site i -> electrode k: ``mu_k - E_i``; electrode k -> site i: ``E_i - mu_k``.

Rates (Miller-Abrahams, 1/s)
    ``nu0 exp(-2 r / a) min(1, exp(-dE / kT))`` with ``nu0 =
    attempt_frequency_hz``, ``a = localization_length_nm`` and ``r`` the
    hop distance (to an electrode: the shortest distance to its arc). Hops
    longer than ``site_cutoff_nm`` (between sites) or ``electrode_cutoff_nm``
    (to electrodes) are omitted. ``k = 8.617333e-5 eV/K``.

Simulation
    Kinetic Monte Carlo by thinning (:mod:`.kmc`: a possible hop is proposed
    in proportion to its prefactor ``nu0 exp(-2 r / a)`` and made with
    probability ``min(1, exp(-dE / kT))``, which simulates the same process
    as picking hops by their rates at a cost per hop that does not grow with
    the number of pairs): ``equilibration_hops``
    discarded, then the net holes entering each electrode are counted over
    blocks of ``block_hops`` until the standard error of the block means of
    the readout current falls below ``max(abs_tolerance_na, rel_tolerance *
    |I|)`` (at least ``min_blocks``, at most ``max_blocks`` blocks). The
    readout current is either that count (``current_estimator =
    "counting"``) or the time average of the expected Ramo-Shockley flux
    (``"ramo_shockley"``): every possible hop weighted by its rate and by
    the change it makes to the readout's weighting potential (the Laplace
    solution with 1 V on the readout and 0 V on the other electrodes). Both
    have the stationary current as their mean (proof in :mod:`.kmc`); on
    devices of many sites such as the default one the second varies less
    from block to block, so a point meets a tolerance in fewer hops (on a
    device of a few sites it need not), while each hop costs more (it scores
    every ``kmc.RAMO_SHOCKLEY_STRIDE``-th state with a pass over all its pairs).
    Batches of operating points run in parallel threads; a point's chain can
    be paused between blocks, so after every point's first blocks the
    threads advance the points expected to need the most blocks still, and
    long points do not leave a core idle at the end of a batch. Each point
    has its own random stream, seeded from ``(seed, the call's stream key, the
    batch's voltages, the point's index in the batch)``; the stream key names
    what the call serves (:meth:`~inmaterio.devices.base.Device.random_streams`).
    Two devices made with the same seed (or rebuilt from one description)
    return the same numbers under the same keys, and repeated measurements of
    one device differ like repeated measurements of a chip.

Sign convention and units of the output
    Currents are in nA; a positive current is a net flow of holes (positive
    charge) from the device *into* the electrode, so a positive voltage on an
    activation electrode drives a positive readout current.
    ``I = e * (holes per second) * 1e9``, ``e = 1.602176634e-19 C``.
    The attempt frequency sets the current scale (currents are proportional
    to it); the default is chosen so that the default device spans tens to
    hundreds of nA over its voltage ranges, like Si:B DNPUs at 77 K.
"""

from inmaterio.devices.hopping.config import HoppingConfig
from inmaterio.devices.hopping.device import HoppingDevice, HoppingResult

__all__ = ["HoppingConfig", "HoppingDevice", "HoppingResult"]
