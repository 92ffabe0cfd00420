"""Training dynamics: how each predicted token changes across the logged steps.

- :mod:`.tracks`: :class:`Dynamics`, the per-token series and learned-when state of a run;
- :mod:`.compare`: :func:`compare`, two steps position by position;
- :mod:`.cache`: :func:`dynamics_for`, one up-to-date :class:`Dynamics` per reader;
- :mod:`.runs_compare`: :func:`compare_runs_json`, two runs token by token;
- :mod:`.routes`: the JSON shapes (``*_json``) and the data routes built on them.

Pure Python and NumPy.
"""

from .cache import dynamics_for
from .compare import DIVERGENCE, compare, js_topk_other
from .runs_compare import compare_runs_json
from .routes import diff_json, learned_json, previous_step, sequences_json, series_json
from .tracks import Dynamics, evenly_spaced

__all__ = ["Dynamics", "compare", "js_topk_other", "dynamics_for", "DIVERGENCE", "series_json", "learned_json",
           "sequences_json", "diff_json", "previous_step", "evenly_spaced", "compare_runs_json"]
