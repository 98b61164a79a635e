"""Development tools, run by hand (``python -m neurospec.tools.<name>``), never imported by the workflow:
``bench`` and ``bench_e2e`` (timings), ``ksweep`` (selection size), ``summary`` (a results folder in a
page), ``translation_bench`` (translation throughput)."""
