"""Photo -> animatable avatar.

Modules of the ``fit`` method (no downloaded weights): :mod:`.image` (safe photo reading),
:mod:`.person` (landmarks, mask, 5:3 crop), :mod:`.silhouette` (normal offsets to the mask),
:mod:`.colour` (seen colours, plausible fill), :mod:`.fit` (the pipeline), :mod:`.metrics` and
:mod:`.evaluate` (``streamer eval recon`` / ``eval animate``). :mod:`.lhm` is the LHM network.
"""
