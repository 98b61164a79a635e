"""The neuron browser: each selected neuron's top activating contexts and a static HTML page.

``contexts``: a second pass over (a bounded number of) the selection split's sentences after scoring,
keeping per selected neuron its ``top_k`` largest activations (input of ``down_proj``) on counted
tokens, vectorised (``torch.topk`` over a running buffer per layer); written as
``browser/contexts.parquet``.  ``page``: one self-contained ``browser/index.html`` (the data inlined
as JSON, no server, nothing fetched): per neuron its layer, the methods that selected it, its
per-language activation probability (the count tables' count / tokens) and its top contexts.
"""
