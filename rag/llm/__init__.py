"""Answers written by the user's own LLM, every claim checked against the index before it is shown.

``client.py`` speaks the OpenAI-compatible HTTP API (Ollama, llama.cpp's server, vLLM, LM Studio);
``prompt.py`` numbers the top passages and reads the reply; ``verify.py`` checks each cited claim
against the sentences of the passage it names; ``answerer.py`` puts them behind the ``Answerer``
seam, falling back on the offline reader when the server fails or no claim holds;
``local.py`` serves a GGUF file with ``xllamacpp`` for the tests and the benchmark.
"""
