"""Corpus mode: head statistics, their spread and head similarity over many texts (``headmap corpus``).

``reader`` reads the input, ``compute`` runs shards and merges them, ``measures`` says what is measured
(and where head detectors plug in), ``store`` keeps the output folder resumable, ``run`` drives one run
here, in processes or on Ray (``ray_backend``), and ``jobs`` runs small corpora for ``POST /api/corpus``.
"""
