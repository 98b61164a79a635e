"""The scoring stage: specialization scores and selections per method (``scoring``) and their
split-half stability (``stability``)."""
