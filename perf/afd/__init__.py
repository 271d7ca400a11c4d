"""AFD performance model for Step-3: stage times, the micro-batch pipeline, the batch search.

Derivations and the input format for measured layer times: ``docs/afd-model.md``.
Command line: ``python perf/afd_model.py --help``.
"""
