"""The collection stage (GPU): per-pair activation counts of every MLP neuron (``collect``); shard
tables are summed by ``neurospec.tables.merge_shard_files``."""
