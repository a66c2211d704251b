"""The paper reproductions, each a typed task of ``inmaterio run CONFIG.yaml`` with its report.

Ruiz Euler et al., *Dopant network processing units: towards efficient
neural-network emulators with high-capacity nanoelectronic nodes*,
Neuromorph. Comput. Eng. 1, 024002 (2021):

===================  ===========================================  ==================================
task type            module                                       example config
===================  ===========================================  ==================================
``capacity_study``   :mod:`~inmaterio.studies.capacity`           ``examples/capacity_study.yaml``
``rings_study``      :mod:`~inmaterio.studies.rings`              ``examples/rings_study.yaml``
``ring_electrodes``  :mod:`~inmaterio.studies.ring_electrodes`    ``examples/ring_electrodes.yaml``
``mnist_10dnpu``     :mod:`~inmaterio.studies.mnist`              ``examples/mnist_10dnpu.yaml``
===================  ===========================================  ==================================

Each study runs in one run folder (:mod:`inmaterio.runs`): rerunning the
same command resumes it, and ``inmaterio report FOLDER ...`` rebuilds its
result table, with the paper's numbers beside ours, from finished folders.
Shared pieces: :mod:`~inmaterio.studies.common` (surrogate and device
choices, finished pieces kept in the checkpoint); the trials the executor
ships to workers, each with a frozen spec: :mod:`~inmaterio.studies.capacity_trial`
(with :mod:`~inmaterio.studies.capacity_search`) and
:mod:`~inmaterio.studies.ring_trials`.
"""
