"""The experiment pipeline (``scripts.reproduce``) and the benchmarks of SplitSeq.

Not part of the installed distribution: ``splitseq reproduce`` imports it from a source checkout.
"""
