"""The data stage: pair tables (id, src_lang, tgt_lang, src, tgt) from EC40, the demo corpus, a Hugging
Face dataset or local files (``pairs`` picks the source; ``corpus``, ``ec40`` and ``demo`` read them)."""
