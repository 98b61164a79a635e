"""How jobs run their tasks: persistent workers of a Snakemake run (``workers``) and the run's record
and stale-lock handling in its working directory (``runs``). The only package that knows about workers."""
