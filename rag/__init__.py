"""Offline question answering over a folder of documents, with line-precise citations."""
