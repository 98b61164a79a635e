"""neurospec: which MLP neurons of a multilingual LLM specialize in which language or direction.

The package holds all of the workflow's logic; the Snakemake rule scripts in ``workflow/scripts``
only unpack the ``snakemake`` object and call into it.  Base modules (``errors``, ``languages``,
``tables``, ``prompts``, ``models``) are imported by the stage modules (``ec40``, ``demo``,
``collect``, ``scoring``, ``figures``, ``bench``), which never import each other sideways.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``neurospec.load_run`` and ``neurospec.intervene`` (``neurospec.api``), imported on first use so
    that importing the package stays light for the rule scripts."""
    if name in ("load_run", "intervene", "Run"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'neurospec' has no attribute {name!r}")
