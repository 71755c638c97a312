"""The benchmark face: the paper's evaluation protocol against baselines (``sccr benchmark``), and the demo.

``runner`` runs the grid through the engine's entry; ``report`` writes the
summary tables, ``figures`` the PNGs; ``baselines`` are the other methods;
``grid`` names what can run; ``demo`` is ``sccr demo``.
"""

from .runner import benchmark

__all__ = ["benchmark"]
