"""The reader: a small trained judge that picks the answering sentence and decides abstention.

``features.py`` (what it sees), ``model.py`` (the classifier and its shipped weights),
``answerer.py`` (the Answerer built on it), ``dataset.py`` and ``train.py`` (`rag train-reader`).
"""
